"""Where events wait for delivery, and the flusher that drains them.

Two implementations of one small interface (`enqueue`, `flush`, `stats`,
`dead_letters`, `replay`):

`RedisOutbox` (when `redis.url` is configured): a durable Redis Stream with a
consumer group, at-least-once:

* `enqueue` is one Lua script: XADD bounded by `max_queue_length`. When the
  stream is full, `reject_new` refuses the event and `drop_oldest` trims the
  oldest entries; either way a counter says how many, and the caller's result
  says so too. Nothing is dropped silently.
* A flusher takes entries with XREADGROUP (each flush is its own consumer),
  POSTs them, and only after a 2xx does XACK + XDEL. Entries left pending by a
  flusher that died (kill -9, node loss) are reclaimed by the next flusher once
  they have been idle for `reclaim_idle_ms` (XAUTOCLAIM on Redis >= 6.2,
  XPENDING + XCLAIM before). A resend carries the same messageId, so
  RudderStack deduplicates it.
* Entries that the data plane could not take after all retries (429/5xx/
  network) are handed back at once (XCLAIM with a large IDLE), so the next
  flush retries them without waiting for the reclaim timeout; this flush stops.
* Poison events (isolated by splitting on 400/413) move to a dead-letter
  stream in the same MULTI that acks them. Batches refused with 401/404 stay
  queued for the fix window (`events/health.py`), then are dead-lettered.
  `replay` moves dead letters back into the outbox, or, given a client,
  resends them now like `DirectOutbox.replay` (below).

`DirectOutbox` (no Redis, or Redis unreachable): a datastore-backed queue, one
st2 datastore key per waiting event (`synthralos.events.queue.<ms>.<messageId>`,
so concurrent writers never overwrite each other), drained by the flusher
sensor with the same batching, retry, split and fix-window rules. Poison
events and refusals after the fix window go to a bounded dead-letter list in
the datastore so `replay_dead_letters` can resend them. It never raises into
the caller for delivery problems: they are reported.

A replay that resends (`resend`, `replay_result`, the same on both): delivered
letters leave; one refused again with 401/404 or rejected with 400/413 stays
dead-lettered with the new reason (no fix window: the operator asked for it
now), and every letter still dead is in `rejected`. A 401/404 is recorded for
the alert as a refused flush records it, so the flusher sensor dispatches
`synthralos.rudderstack_config_error`.

Both record what they learn about the data plane (unhealthy mark, config
errors, the alert slot) in `events/health.py`.

One module each: `base.py` (the `Outbox` interface both implement), `redis_stream.py` (`RedisOutbox`),
`datastore.py` (`DirectOutbox`), `delivery.py` (the flush report, health bookkeeping, dead-letter bounds,
the replay's resend and result). Import the names from here.
"""

from synthralos_lib.events.health import CONFIG_ALERT_WINDOW_S  # its home; still importable from here
from synthralos_lib.events.outbox.base import Outbox
from synthralos_lib.events.outbox.datastore import (
    DATASTORE_PAGE,
    DIRECT_DEAD_LETTER_KEY,
    DIRECT_DEAD_LETTER_MAX,
    DIRECT_QUEUE_DEPTH,
    DIRECT_QUEUE_MAX,
    DIRECT_QUEUE_PREFIX,
    DirectOutbox,
)
from synthralos_lib.events.outbox.delivery import (
    COUNTERS,
    DEAD_LETTER_BYTES,
    DEAD_LETTER_CUT_CHARS,
    DIRECT_DEAD_LETTER_BYTES,
    MAX_DEAD_LETTER_BYTES,
    FlushReport,
    alert_result,
    bounded_letter_event,
    flush_result,
    make_client,
    note_refused,
    nothing_to_replay,
    record_outcome,
    replay_result,
    resend,
    split_refused,
    take_delivery,
)
from synthralos_lib.events.outbox.redis_stream import (
    CLAIM_PAGES,
    GROUP,
    MAX_UNREADABLE_CHARS,
    UNREADABLE,
    RedisOutbox,
    consumer_name,
    default_reclaim_idle_ms,
    is_stream_id,
)

__all__ = [
    "CLAIM_PAGES", "CONFIG_ALERT_WINDOW_S", "COUNTERS", "DATASTORE_PAGE", "DEAD_LETTER_BYTES", "DEAD_LETTER_CUT_CHARS",
    "DIRECT_DEAD_LETTER_BYTES", "DIRECT_DEAD_LETTER_KEY", "DIRECT_DEAD_LETTER_MAX", "DIRECT_QUEUE_DEPTH",
    "DIRECT_QUEUE_MAX", "DIRECT_QUEUE_PREFIX", "DirectOutbox", "FlushReport", "GROUP", "MAX_DEAD_LETTER_BYTES",
    "MAX_UNREADABLE_CHARS", "Outbox", "RedisOutbox", "UNREADABLE", "alert_result", "bounded_letter_event",
    "consumer_name", "default_reclaim_idle_ms", "flush_result", "is_stream_id", "make_client", "note_refused",
    "nothing_to_replay", "record_outcome", "replay_result", "resend", "split_refused", "take_delivery",
]
