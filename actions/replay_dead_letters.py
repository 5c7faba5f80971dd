from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.forwarding import NO_WRITE_KEY, open_outbox
from synthralos_lib.events.outbox import RedisOutbox, make_client


class ReplayDeadLetters(SynthralosAction):
    """Resend dead-lettered events now (or, with Redis and flush=false, requeue them): the given ids, or all up to limit."""

    def run(self, ids=None, limit=1000, flush=True):
        client = make_client(self.settings.section("rudderstack"))
        if client is None:
            return False, {"error": NO_WRITE_KEY}
        outbox = open_outbox(self.settings, self.store)
        if isinstance(outbox, RedisOutbox):
            result = outbox.replay(ids=ids or None, limit=limit, client=client if flush else None)
            result["mode"] = "outbox"
        else:
            result = outbox.replay(client, ids=ids or None, limit=limit)
            result["mode"] = "direct"
        self.logger.info("[RudderStack] replayed %d dead letter(s)", result["replayed"])
        return self.scrub(result)
