from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.failure_trigger import MalformedFailure, accept_post


class NormalizeAgentFailureAction(SynthralosAction):
    """Validate a failure posted to the webhook and build its synthralos.agent_failure payload."""

    def run(self, body, source_id):
        try:
            accepted = accept_post(body, source_id, secrets=self.settings.secrets())
        except MalformedFailure as exc:
            reason = str(exc)
            self.logger.warning("[Self-Healing] malformed agent failure post refused: %s", reason)
            return False, {"malformed": True, "reason": reason}
        if accepted["failed"]:
            payload = accepted["payload"]
            self.logger.info("[Self-Healing] agent %s execution %s posted: %s", payload["agent_id"],
                             payload["execution_id"], accepted["summary"])
        return accepted
