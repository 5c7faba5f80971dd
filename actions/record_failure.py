import time

from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.history import record_outcome
from synthralos_lib.healing.recovery_events import FAILED, SUCCEEDED, forward_recovery_end, recovery_output
from synthralos_lib.healing.storm import StormControl
from synthralos_lib.state.shapes import finite_number


class RecordFailureAction(SynthralosAction):
    """Add a failure and its recovery outcome to the agent's failure history (and, when this record
    ends an agent_recovery, forward the recovery's end events)."""

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
        recovery=None,
    ):
        recorded = None
        try:
            recorded = record_outcome(
                self.store, self.fallback_store(), agent_id, max_entries=max_entries, secrets=self.secrets(),
                execution_id=execution_id, failure=failure, outcome=outcome, repaired_by=repaired_by,
                attempts=attempts, plan_source=plan_source, trace_context=trace_context, started_at=started_at,
            )
            if running_marker:  # the recovery ends here: identical failures may start their own again
                try:
                    StormControl(self.store, self.settings.section("storm_control")).release(running_marker)
                except Exception as exc:  # it expires with its TTL
                    self.logger.warning("[Self-Healing] running-recovery marker not released: %s", exc)
        finally:  # the recovery ended even when its history could not be written: its events still go
            if recovery and recovery.get("id"):
                start = finite_number(started_at)
                duration_s = recorded["duration_s"] if recorded else (round(time.time() - start, 3) if start else None)
                events = forward_recovery_end(
                    self.settings, self.store, self.action_service, recovery["id"], agent_id,
                    SUCCEEDED if outcome == "repaired" else FAILED,
                    recovery_output(outcome, failure, recovery.get("plan"), attempts, repaired_by, duration_s,
                                    recovery.get("storm")),
                    started_at, trace_context=trace_context,
                )
                if recorded is not None:
                    recorded["events"] = events
        return recorded
