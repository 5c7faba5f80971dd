from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.plans import plan_repair


class GenerateRepairPlanAction(SynthralosAction):
    """Plan the repair of a detected failure: rule-based, or a validated LLM plan when enabled."""

    def run(self, failure, llm_target=None, trace_context=None):
        if not isinstance(failure, dict) or "failure_type" not in failure:
            raise ValueError("failure must be the result of synthralos.detect_failure")
        plan = plan_repair(failure, self.settings, llm_target=llm_target or None)
        self.logger.info(
            "[Self-Healing] %s plan for %s: %s",
            plan["source"],
            plan["failure_type"],
            ", ".join(step["action"] for step in plan["steps"]) or "no steps",
        )
        return plan
