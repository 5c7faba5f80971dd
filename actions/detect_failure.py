import time

from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.detection import detect_failure


class DetectFailureAction(SynthralosAction):
    """Judge an agent execution result: failure type (or none) and the evidence."""

    def run(self, result, agent_id=None, execution_id=None, trace_context=None):
        found = detect_failure(result, self.secrets())
        found.update(agent_id=agent_id, execution_id=execution_id, checked_at=time.time())
        if found["failed"]:
            self.logger.info("[Self-Healing] agent %s execution %s: %s", agent_id, execution_id, found["summary"])
        return found
