from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.builders import EventError, llm_cost_event
from synthralos_lib.events.forwarding import correlation, forward, refused_or_skipped
from synthralos_lib.events.pricing import PricingError, check_call

CORRELATION_PARAMS = (
    "agent_id", "user_id", "trace_id", "workspace_id", "organization_id", "traceparent", "langfuse_trace_url",
)


class LogLlmCost(SynthralosAction):
    """Forward an llm_cost_logged event (honours features.track_model_costs)."""

    def run(self, provider, model, input_tokens, output_tokens, target=None, input_price_per_1k=None,
            output_price_per_1k=None, workflow_execution_id=None, node_id=None, source_execution_id=None,
            trace_tag=None, discriminator="", timestamp=None, **params):
        answer = refused_or_skipped(self.settings, "track_model_costs", check_call, input_tokens, output_tokens,
                                    input_price_per_1k, output_price_per_1k)
        if answer is not None:
            return answer
        try:
            corr = correlation(
                self.settings, source_execution_id=source_execution_id, st2_trace_tag=trace_tag,
                **{k: params.get(k) for k in CORRELATION_PARAMS}
            )
            prices = {"model_prices": self.settings.section("model_prices"), "llm_targets": self.settings.llm_targets()}
            event = llm_cost_event(
                corr, provider, model, input_tokens, output_tokens, prices, node_id=node_id,
                workflow_execution_id=workflow_execution_id, timestamp=timestamp, discriminator=discriminator or "",
                input_price_per_1k=input_price_per_1k, output_price_per_1k=output_price_per_1k, target=target,
            )
        except (EventError, PricingError) as exc:
            return False, {"error": str(exc)}
        result = forward(self.settings, self.store, event, service=self.action_service)
        result["cost"] = {k: event["properties"][k] for k in (
            "input_tokens", "output_tokens", "total_tokens", "input_price_per_1k", "output_price_per_1k",
            "price_source", "input_cost_usd", "output_cost_usd", "cost_usd", "cost_usd_cents")}
        return result
