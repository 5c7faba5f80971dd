from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.forwarding import NO_WRITE_KEY, open_outbox
from synthralos_lib.events.outbox import make_client


class FlushEvents(SynthralosAction):
    """Drain the Redis outbox to RudderStack; a config error (401/404) is reported, not raised."""

    def run(self, force=True, max_batches=50, reclaim_idle_ms=None):
        if not self.settings.redis_url:
            return {"status": "ok", "mode": "direct", "delivered": 0, "config_error": None, "alert": False,
                    "reason": "no redis.url: events are sent when they are forwarded; nothing is queued"}
        rudder = self.settings.section("rudderstack")
        client = make_client(rudder)
        if client is None:
            return {"status": "skipped", "mode": "outbox", "delivered": 0, "config_error": None, "alert": False,
                    "reason": NO_WRITE_KEY}
        outbox = open_outbox(self.settings, self.store, reclaim_idle_ms=reclaim_idle_ms)
        report = outbox.flush(client, force=force, max_batches=max_batches)
        report["mode"] = "outbox"
        report["data_plane_url"] = rudder.get("data_plane_url")
        report["queue"] = outbox.stats()
        self.logger.info("[RudderStack] flush: %s delivered, %s dead-lettered, %s to retry (%s)",
                         report["delivered"], report["dead_lettered"], report["retry_later"], report["status"])
        return self.scrub(report)
