from synthralos_lib.cron.action import CronBackoffAction
from synthralos_lib.cron.backoff import InvalidJobId
from synthralos_lib.state.store import StoreError


class CronBackoffStatus(CronBackoffAction):
    """Backoff state of one cron job, or of every job in backoff or disabled."""

    def run(self, job_id=""):
        backoff = self.backoff()
        try:
            if job_id:
                return self.scrub(backoff.status(job_id))
            jobs = backoff.status()
        except (InvalidJobId, StoreError) as exc:
            return False, {"job_id": job_id or None, "error": self.scrub(str(exc))}
        return self.scrub({"enabled": backoff.enabled, "count": len(jobs),
                           "disabled": sum(1 for j in jobs if j["disabled"]), "jobs": jobs})
