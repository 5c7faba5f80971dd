from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.builders import EventError, agent_event, custom_event
from synthralos_lib.events.forwarding import correlation, forward
from synthralos_lib.state.validation import check_text

CORRELATION_PARAMS = (
    "agent_id", "user_id", "trace_id", "workspace_id", "organization_id", "traceparent", "langfuse_trace_url",
)


class ForwardEvent(SynthralosAction):
    """Build an agent or custom event and hand it to the outbox (or send it directly)."""

    def run(self, event_type, event_name=None, status=None, start_timestamp=None, end_timestamp=None, result=None,
            properties=None, source_execution_id=None, trace_tag=None, discriminator="", timestamp=None, dry_run=False,
            **params):
        try:
            check_text(params.get("user_id"), "user_id", max_chars=512)
        except ValueError as exc:
            return False, {"error": str(exc)}
        try:
            corr = correlation(
                self.settings, source_execution_id=source_execution_id, st2_trace_tag=trace_tag,
                **{k: params.get(k) for k in CORRELATION_PARAMS}
            )
            extra = dict(properties or {})
            if result is not None:
                extra["result"] = result
            if dry_run:  # analytics must tell a rehearsal from a real run
                extra["dry_run"] = True
            if event_type == "custom":
                if not event_name:
                    raise EventError("event_name is required for event_type custom")
                event = custom_event(event_name, extra, corr, timestamp=timestamp, discriminator=discriminator or "")
            else:
                event = agent_event(event_type, corr, status, started_at=start_timestamp,
                                    ended_at=end_timestamp or timestamp, details=extra,
                                    discriminator=discriminator or "")
        except EventError as exc:
            return False, {"error": str(exc)}
        return forward(self.settings, self.store, event, service=self.action_service)
