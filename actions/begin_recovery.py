from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.agent_api import AgentApiClient
from synthralos_lib.healing.detection import detect_failure
from synthralos_lib.healing.plans import plan_repair
from synthralos_lib.healing.recovery import EXECUTE_STEP, ESCALATE, start_recovery
from synthralos_lib.healing.recovery_events import FAILED, SUCCEEDED, forward_recovery_end, recovery_output


class BeginRecoveryAction(SynthralosAction):
    """agent_recovery's first task: judge, storm-check, plan, apply the first step, record a final outcome
    and, when that ends the recovery, forward its end events."""

    # The library functions used; a test swaps one to make that stage break.
    detector = staticmethod(detect_failure)
    planner = staticmethod(plan_repair)

    def run(self, agent_id, execution_id, result, detection=None, trace_context=None, dry_run=False, llm_target="",
            wait_s=300, max_history=100, inline_delay_max_s=5, recovery_id=None):
        started = start_recovery(
            agent_id, execution_id, result, self.settings, self.store, AgentApiClient(self.settings.section("agent_api")),
            detected=detection or None, trace_context=trace_context or {}, dry_run=dry_run, llm_target=llm_target,
            wait_s=wait_s, max_history=max_history, inline_delay_max_s=inline_delay_max_s, recovery_id=recovery_id,
            fallback=self.fallback_store(), detector=self.detector, planner=self.planner, secrets=self.secrets(),
        )
        failure = started["failure"]
        self.logger.info(
            "[Self-Healing] agent %s execution %s: %s (%s) -> %s",
            agent_id, execution_id, failure.get("summary"), failure.get("detected_by", "crash"),
            started["outcome"] or "continue with step %d" % (started["next_index"] + 1),
        )
        if recovery_id and started["next"] != EXECUTE_STEP:  # this task ends the recovery: nothing records after it
            started["events"] = forward_recovery_end(
                self.settings, self.store, self.action_service, recovery_id, agent_id,
                FAILED if started["next"] == ESCALATE else SUCCEEDED,
                recovery_output(started["outcome"], failure, started["plan"], started["attempt_log"],
                                started["repaired_by"], started["duration_s"], started["storm"]),
                started["started_at"], trace_context=trace_context, dry_run=dry_run,
            )
        return started
