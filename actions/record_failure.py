import time

from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.history import check_entry_inputs, record_with_fallback
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
        now = time.time()
        entry = check_entry_inputs(
            agent_id=agent_id,
            execution_id=execution_id,
            failure=failure,
            outcome=outcome,
            repaired_by=repaired_by,
            attempts=attempts,
            plan_source=plan_source,
            trace_context=trace_context,
            started_at=started_at,
            now=now,
            secrets=self.secrets(),
        )
        recorded = record_with_fallback(self.store, self.fallback_store(), agent_id.strip(), entry, max_entries=max_entries)
        self.logger.info(
            "[Self-Healing] recorded %s for agent %s (%s) in %s",
            outcome,
            agent_id,
            entry["failure_type"],
            recorded["store"],
        )
        try:  # metrics must never fail the record itself
            recovery_stats.record(self.store, entry["failure_type"], outcome, entry["duration_s"])
        except Exception as exc:
            self.logger.warning("[Observability] recovery metrics not updated: %s", self.scrub(str(exc)))
        return {
            "entry": recorded["entry"],
            "duration_s": entry["duration_s"],
            "store": recorded["store"],
            "fallback_reason": recorded["fallback_reason"],
        }
