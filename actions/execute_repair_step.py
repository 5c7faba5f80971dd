from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.agent_api import AgentApiClient
from synthralos_lib.healing.execution import execute_step


class ExecuteRepairStepAction(SynthralosAction):
    """Apply one repair step through the agent API and report whether the re-run succeeded."""

    def run(self, agent_id, execution_id, step, failure=None, attempt=1, wait_s=300, trace_context=None):
        client = AgentApiClient(self.settings.section("agent_api"))
        outcome = execute_step(
            client, agent_id, execution_id, step, failure=failure, attempt=attempt, wait_s=wait_s, secrets=self.secrets()
        )
        if outcome["repaired"]:
            self.logger.info(
                "[Self-Healing] agent %s repaired by %s (new execution %s)",
                agent_id,
                outcome["action"],
                outcome["new_execution_id"],
            )
        else:
            why = outcome["error"]["message"] if outcome["error"] else (outcome["failure"] or {}).get("summary")
            self.logger.info("[Self-Healing] agent %s: %s did not repair it: %s", agent_id, outcome["action"], why)
        return outcome
