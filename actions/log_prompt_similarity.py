from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.builders import EventError, check_similarity, similarity_event
from synthralos_lib.events.forwarding import correlation, forward, refused_or_skipped

CORRELATION_PARAMS = (
    "agent_id", "user_id", "trace_id", "workspace_id", "organization_id", "traceparent", "langfuse_trace_url",
)


class LogPromptSimilarity(SynthralosAction):
    """Forward a prompt_similarity_logged event (honours features.enable_similarity_logging)."""

    def run(self, threshold, method="cosine", score=None, vector_a=None, vector_b=None, action_taken=None,
            prompt=None, flagged_content=None, guardrail=None, source_execution_id=None, trace_tag=None,
            discriminator="", timestamp=None, **params):
        answer = refused_or_skipped(self.settings, "enable_similarity_logging", check_similarity, threshold, score,
                                    vector_a, vector_b)
        if answer is not None:
            return answer
        tracing = self.settings.flag("enable_guardrails_tracing")
        values = {k: params.get(k) for k in CORRELATION_PARAMS}
        if not tracing:
            # Guardrail trace context is attached only when guardrails tracing is on.
            values["traceparent"] = values["langfuse_trace_url"] = None
        try:
            corr = correlation(self.settings, source_execution_id=source_execution_id, st2_trace_tag=trace_tag, **values)
            event = similarity_event(
                corr, threshold, method=method, score=score, vector_a=vector_a, vector_b=vector_b,
                action_taken=action_taken, prompt=prompt, flagged_content=flagged_content, timestamp=timestamp,
                discriminator=discriminator or "", guardrail=guardrail if tracing else None,
            )
        except EventError as exc:
            return False, {"error": str(exc)}
        result = forward(self.settings, self.store, event, service=self.action_service)
        result["similarity"] = {k: event["properties"][k] for k in (
            "score", "percent", "threshold", "method", "action_taken", "above_threshold")}
        return result
