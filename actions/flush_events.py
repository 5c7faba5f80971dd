from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.flusher import flush_now
from synthralos_lib.events.forwarding import NO_WRITE_KEY


class FlushEvents(SynthralosAction):
    """Drain the Redis outbox and the st2 datastore queue to RudderStack; config errors and outages are reported."""

    def run(self, force=True, max_batches=50, reclaim_idle_ms=None):
        report = flush_now(self.settings, self.store, self.action_service, force=force, max_batches=max_batches,
                           reclaim_idle_ms=reclaim_idle_ms)
        if report is None:
            return {"status": "skipped", "mode": "outbox" if self.settings.redis_url else "direct", "delivered": 0,
                    "config_error": None, "alert": False, "reason": NO_WRITE_KEY}
        self.logger.info("[RudderStack] flush: %s delivered, %s dead-lettered, %s to retry (%s)",
                         report["delivered"], report["dead_lettered"], report["retry_later"], report["status"])
        return report
