from synthralos_lib.cron.action import CronBackoffAction
from synthralos_lib.cron.backoff import CorruptState, InvalidJobId
from synthralos_lib.state.store import StoreError


class CronBackoffStatus(CronBackoffAction):
    """Backoff state of one cron job, or of every job in backoff or disabled."""

    def run(self, job_id=""):
        backoff = self.backoff()
        try:
            if job_id:
                return backoff.status(job_id)
            listing = backoff.listing()
        except (InvalidJobId, CorruptState, StoreError) as exc:
            return False, {"job_id": job_id or None, "error": str(exc)}  # scrubbed and capped by the action guard
        jobs = listing["jobs"]
        for corrupt in listing["corrupt"]:
            self.logger.warning("[CronBackoff] skipped in the listing: %s", corrupt["error"])
        return {"enabled": backoff.enabled, "count": len(jobs), "disabled": sum(1 for j in jobs if j["disabled"]),
                "jobs": jobs, "corrupt": listing["corrupt"]}
