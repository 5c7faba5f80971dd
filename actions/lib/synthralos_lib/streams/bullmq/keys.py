"""Where a BullMQ queue lives: the `bullmq` config section, the connection, and the key names.

Key layout (BullMQ's, `<prefix>` defaults to "bull"): `<prefix>:<queue>:<jobId>`
is the job hash, `:wait` (list), `:prioritized`, `:delayed`, `:failed`
(sorted sets), `:id` (the id counter), `:pc` (priority counter), `:meta`,
`:marker` and `:events` (a stream, trimmed by BullMQ to about
`meta.opts.maxLenEvents`, 10,000 by default). Verified against bullmq 6.7.0
(tests/bullmq/package.json); see docs/bullmq.md.
"""


class BullMQError(ValueError):
    """Job options BullMQ itself would refuse."""


class QueueKeys(object):
    """The Redis keys of one BullMQ queue."""

    def __init__(self, prefix, queue):
        if not queue or ":" in queue:
            raise BullMQError("a BullMQ queue name must be non-empty and contain no ':' (got %r)" % (queue,))
        self.prefix = prefix
        self.queue = queue
        self.base = "%s:%s:" % (prefix, queue)

    def __getattr__(self, name):
        if name in ("wait", "paused", "meta", "id", "delayed", "prioritized", "pc", "active", "events", "marker",
                    "failed", "completed"):
            return self.base + name
        raise AttributeError(name)

    def job(self, job_id):
        return self.base + str(job_id)


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def bullmq_settings(settings):
    """The `bullmq` config section with its Redis URL resolved (`redis.url` when empty)."""
    section = dict(settings.section("bullmq"))
    section["redis_url"] = section.get("redis_url") or settings.redis_url
    return section


def connect(url, block_ms=1000):
    """A redis-py client for BullMQ's Redis: text replies, a socket timeout above the blocking read, no retries
    (the sensor reconnects with its own backoff)."""
    from synthralos_lib.streams.consumer import connect_factory

    if not url:
        raise BullMQError("no Redis for BullMQ: set bullmq.redis_url (or redis.url) in the pack config")
    return connect_factory(url, block_ms)()
