from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.forwarding import NO_WRITE_KEY, open_outbox
from synthralos_lib.events.outbox import make_client


class ReplayDeadLetters(SynthralosAction):
    """Resend dead-lettered events now (or, with Redis and flush=false, requeue them): the given ids, or all up to limit."""

    def run(self, ids=None, limit=1000, flush=True):
        client = make_client(self.settings.section("rudderstack"))
        if client is None:
            return False, {"error": NO_WRITE_KEY}
        outbox = open_outbox(self.settings, self.store)
        requeue = not flush and outbox.can_requeue  # the datastore outbox always resends
        result = outbox.replay(ids=ids or None, limit=limit, client=None if requeue else client)
        result["mode"] = outbox.mode
        self.logger.info("[RudderStack] replayed %d dead letter(s)", result["replayed"])
        return result
