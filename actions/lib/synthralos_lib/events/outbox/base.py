"""`Outbox`: what every outbox does, so its callers (forwarding, the flusher, replay_dead_letters) never ask
which one they hold."""

import abc


class Outbox(abc.ABC):
    """Where built events wait for delivery to RudderStack, and where the ones it will not take end up.

    `health` is the DataPlaneHealth the outbox records what it learns in. `mode` names the outbox in
    results ("outbox": the Redis stream, "direct": the st2 datastore). `can_requeue`: whether `replay`
    without a client can put dead letters back for the flusher (else the outbox only resends them).
    """

    mode = None
    can_requeue = False

    @abc.abstractmethod
    def enqueue(self, event):
        """Queue one built event for the flusher; the result's `queued` says whether it was kept and `reason` why not."""

    @abc.abstractmethod
    def flush(self, client, max_batches=50, claim_alert=True, deadline=None):
        """Deliver waiting events in batches with `client` (a RudderStackClient); a flush report dict.

        Pass everything after `client` by keyword: a backend may take more options (RedisOutbox: `force`,
        `consumer`, `forget_consumer`).
        """

    @abc.abstractmethod
    def stats(self):
        """Depth, dead letters, their bytes, the counters (`delivery.COUNTERS`) and the last errors."""

    @abc.abstractmethod
    def dead_letters(self, limit=100):
        """Up to `limit` dead letters, oldest first: [{"id", "message_id", "reason", "failed_at_ms", "event"}]."""

    @abc.abstractmethod
    def replay(self, ids=None, limit=1000, client=None):
        """Dead letters (the given ids, or all up to `limit`) back for delivery.

        With `client`: resent now; delivered ones leave, refused (401/404) or rejected (400/413) ones stay
        dead-lettered with the new reason. Without: put back for the flusher (only where `can_requeue`).
        Returns {"replayed", "replayed_ids", "rejected", "not_found"} (and "config_error" after a resend).
        """
