from synthralos_lib.cron.action import CronBackoffAction
from synthralos_lib.cron.backoff import InvalidJobId
from synthralos_lib.state.store import StoreError


class CronBackoffCheck(CronBackoffAction):
    """May a cron job run now? (claims the probe of a disabled job whose quiet period is over)"""

    def run(self, job_id):
        try:
            decision = self.backoff().check(job_id)
        except (InvalidJobId, StoreError) as exc:
            return False, {"job_id": job_id, "error": str(exc)}
        verb = "runs" if decision["allowed"] else "skipped"
        self.logger.info("[CronBackoff] %s %s: %s", job_id, verb, decision["message"])
        return decision
