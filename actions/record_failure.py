import time

from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.history import record_failure
from synthralos_lib.ops import recovery_stats


class RecordFailureAction(SynthralosAction):
    """Add a failure and its recovery outcome to the agent's failure history."""

    def run(
        self,
        agent_id,
        execution_id=None,
        failure=None,
        outcome="recorded",
        repaired_by=None,
        attempts=None,
        plan_source=None,
        trace_context=None,
        started_at=None,
        max_entries=100,
    ):
        failure = failure or {}
        now = time.time()
        duration = round(now - started_at, 3) if started_at else None
        entry = {
            "execution_id": execution_id,
            "failure_type": failure.get("failure_type"),
            "summary": failure.get("summary"),
            "evidence": failure.get("evidence") or [],
            "outcome": outcome,
            "repaired_by": repaired_by or None,
            "attempts": attempts or [],
            "plan_source": plan_source or None,
            "trace_context": trace_context or {},
            "duration_s": duration,
        }
        stored = record_failure(self.store, agent_id, self.scrub(entry), max_entries=max_entries)
        self.logger.info("[Self-Healing] recorded %s for agent %s (%s)", outcome, agent_id, failure.get("failure_type"))
        try:  # metrics must never fail the record itself
            recovery_stats.record(self.store, failure.get("failure_type"), outcome, duration)
        except Exception as exc:
            self.logger.warning("[Observability] recovery metrics not updated: %s", self.scrub(str(exc)))
        return {"entry": stored, "duration_s": duration, "store": self.store.name}
