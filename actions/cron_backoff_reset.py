from synthralos_lib.cron.action import CronBackoffAction
from synthralos_lib.cron.backoff import InvalidJobId
from synthralos_lib.cron.events import forward_transitions
from synthralos_lib.state.store import StoreError


class CronBackoffReset(CronBackoffAction):
    """Forget a cron job's failures and re-enable it at once."""

    def run(self, job_id):
        try:
            outcome = self.backoff().reset(job_id)
        except (InvalidJobId, StoreError) as exc:
            return False, {"job_id": job_id, "error": str(exc)}
        self.logger.info("[CronBackoff] %s reset by hand (was %s)", job_id,
                         (outcome["previous"] or {}).get("status", "healthy"))
        outcome["events"] = forward_transitions(self.settings, self.store, outcome["transitions"])
        return outcome
