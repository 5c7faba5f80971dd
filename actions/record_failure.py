from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.history import record_outcome
from synthralos_lib.healing.storm import StormControl


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
        running_marker=None,
    ):
        recorded = record_outcome(
            self.store, self.fallback_store(), agent_id, max_entries=max_entries, secrets=self.secrets(),
            execution_id=execution_id, failure=failure, outcome=outcome, repaired_by=repaired_by, attempts=attempts,
            plan_source=plan_source, trace_context=trace_context, started_at=started_at,
        )
        if running_marker:  # the recovery ends here: identical failures may start their own again
            try:
                StormControl(self.store, self.settings.section("storm_control")).release(running_marker)
            except Exception as exc:  # it expires with its TTL
                self.logger.warning("[Self-Healing] running-recovery marker not released: %s", exc)
        return recorded
