from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.events.flusher import queue_stats


class GetQueueStats(SynthralosAction):
    """Outbox depth, oldest age, in-flight, retries, dead letters, delivery counters and Redis persistence."""

    def run(self, include_dead_letters=False, limit=20):
        return queue_stats(self.settings, self.store, self.action_service, include_dead_letters=include_dead_letters,
                           limit=limit)
