from synthralos_lib.cron.action import CronBackoffAction
from synthralos_lib.cron.backoff import InvalidJobId
from synthralos_lib.cron.events import forward_transitions
from synthralos_lib.state.store import StoreError


class CronBackoffRecord(CronBackoffAction):
    """Record a cron job run's outcome; forward disable / probe / re-enable events."""

    def run(self, job_id, succeeded, result=None, error="", trace_tag=None):
        try:
            outcome = self.backoff().record(
                job_id, succeeded, error=error or result)
        except (InvalidJobId, StoreError) as exc:
            return False, {"job_id": job_id, "error": str(exc)}
        state = outcome["state"] or {}
        if outcome["recorded"] and not succeeded:
            self.logger.info("[CronBackoff] %s failed (%s in a row, %s): next run %s", job_id,
                             state.get("consecutive_failures"), outcome["outcome"], state.get("next_allowed_run"))
        if outcome["disabled_now"]:
            self.logger.warning("[CronBackoff] %s disabled after %s consecutive failures", job_id,
                                state.get("consecutive_failures"))
        if outcome["reenabled_now"]:
            self.logger.info("[CronBackoff] %s re-enabled", job_id)
        outcome["events"] = forward_transitions(self.settings, self.store, outcome["transitions"], trace_tag=trace_tag)
        return outcome
