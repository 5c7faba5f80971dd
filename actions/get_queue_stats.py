from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.forwarding import open_outbox


class GetQueueStats(SynthralosAction):
    """Outbox depth, oldest age, in-flight, retries, dead letters and delivery counters."""

    def run(self, include_dead_letters=False, limit=20):
        outbox = open_outbox(self.settings, self.store)
        stats = outbox.stats()
        if include_dead_letters:
            stats["dead_letter_entries"] = [
                {k: d[k] for k in ("id", "message_id", "reason", "failed_at_ms")} for d in outbox.dead_letters(limit)
            ]
        return self.scrub(stats)
