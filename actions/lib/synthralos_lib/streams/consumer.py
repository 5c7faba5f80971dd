"""A Redis Streams consumer-group reader that a sensor can leave running for months.

`StreamConsumer(connect, stream, group, consumer, prepare, dispatch, ...)`:

* reads new entries with `XREADGROUP ... BLOCK block_ms` (bounded, so `stop()`
  takes effect within `block_ms` and the reader never holds a green thread);
* for each entry calls `prepare(entry_id, fields)`, which returns an item to
  dispatch or None (nothing to do); any exception there means the entry is
  malformed: it is copied to the dead-letter stream with the reason and acked;
* calls `dispatch(item)` and acks (`XACK`) only after it returned; an exception
  from dispatch leaves the entry pending, to be retried after `claim_idle_ms`;
* every `claim_idle_ms / 2` reclaims entries pending longer than `claim_idle_ms`
  in the group (`XAUTOCLAIM`, or `XPENDING` + `XCLAIM` where it is missing), so
  the entries of a consumer that died are processed by a live one;
* on start and after every reconnect first re-reads its own pending entries;
* creates the group when missing (`XGROUP CREATE ... 0 MKSTREAM`, also after a
  Redis restart lost it) and reconnects on its own with exponential backoff
  and jitter (st2's sensor container restarts a crashed sensor only twice).

Each entry is delivered to one consumer of the group; two readers on one group
split the stream. An entry this reader dispatched but failed to ack (Redis
dropped in between) is acked without a second dispatch when it comes back.
"""

import json
import random
import threading
import time

try:
    import redis
    from redis import exceptions as redis_errors
except ImportError:  # the sensor reports a missing redis-py as its own error
    redis = None
    redis_errors = None

DEFAULT_PREFIX = "[Self-Healing]"


def _transient_errors():
    if redis_errors is None:
        return (OSError,)
    return (redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError, OSError)


class StreamConsumer(object):
    def __init__(self, connect, stream, group, consumer, prepare, dispatch, dead_letter_stream="",
                 block_ms=1000, claim_idle_ms=60000, batch=100, backoff_initial_s=0.5, backoff_max_s=30.0,
                 dead_letter_maxlen=100000, logger=None, log_prefix=DEFAULT_PREFIX, clock=time.monotonic):
        self._connect = connect
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._prepare = prepare
        self._dispatch = dispatch
        self.dead_letter_stream = dead_letter_stream
        self.block_ms = int(block_ms)
        self.claim_idle_ms = int(claim_idle_ms)
        self.batch = int(batch)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.dead_letter_maxlen = dead_letter_maxlen
        self._logger = logger
        self._prefix = log_prefix
        self._clock = clock
        self._client = None
        self._stopped = threading.Event()
        self._own_backlog = True
        self._next_claim = 0.0
        self._claim_every_s = max(0.05, self.claim_idle_ms / 2000.0)
        self._dispatched_unacked = set()
        self._failures = 0
        self.stats = {"read": 0, "dispatched": 0, "ignored": 0, "dead_lettered": 0, "reclaimed": 0,
                      "dispatch_errors": 0, "reconnects": 0}

    # ---------------------------------------------------------------- control

    def run(self):
        """Read until `stop()`; never raises for Redis trouble (it reconnects instead)."""
        while not self._stopped.is_set():
            try:
                self.poll_once()
                self._failures = 0
            except _transient_errors() as exc:
                self._on_redis_error(exc)
            except Exception as exc:  # a Redis reply we did not expect: log it, back off, go on
                if redis_errors is not None and isinstance(exc, redis_errors.ResponseError) and "NOGROUP" in str(exc):
                    self._log("warning", "%s stream %s: group %s is gone (Redis restarted or the stream was "
                              "deleted); creating it again", self._prefix, self.stream, self.group)
                    self._close()  # the next round reconnects and creates the group
                    continue
                self._on_redis_error(exc)
        self._close()

    def stop(self):
        """Ask `run()` to return; it does within `block_ms` (or at once while backing off)."""
        self._stopped.set()

    @property
    def stopped(self):
        return self._stopped.is_set()

    # ---------------------------------------------------------------- one round

    def poll_once(self):
        """One round: own backlog (after a (re)connect), due reclaims, then one blocking read."""
        client = self._ensure_client()
        if self._own_backlog:
            self._read_own_backlog(client)
        if self._clock() >= self._next_claim:
            self._reclaim(client)
            self._next_claim = self._clock() + self._claim_every_s
        if self._stopped.is_set():
            return 0
        replies = client.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=self.batch,
                                    block=self.block_ms)
        return self._process(client, _entries(replies))

    def _ensure_client(self):
        if self._client is None:
            self._client = self._connect()
            self._create_group(self._client)
            self._own_backlog = True
        return self._client

    def _create_group(self, client):
        try:
            client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
            self._log("info", "%s stream %s: created consumer group %s", self._prefix, self.stream, self.group)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read_own_backlog(self, client):
        start = "0"
        while not self._stopped.is_set():
            replies = client.xreadgroup(self.group, self.consumer, {self.stream: start}, count=self.batch)
            entries = _entries(replies)
            if not entries:
                break
            self._process(client, entries)
            start = entries[-1][0]
        self._own_backlog = False

    def _reclaim(self, client):
        start, rounds = "0-0", 0
        while not self._stopped.is_set() and rounds < 10:
            rounds += 1
            start, entries = self._claim_page(client, start)
            entries = [(entry_id, fields) for entry_id, fields in entries if entry_id is not None]
            if entries:
                self.stats["reclaimed"] += len(entries)
                self._log("info", "%s stream %s: reclaimed %d entries pending over %d ms", self._prefix,
                          self.stream, len(entries), self.claim_idle_ms)
                self._process(client, entries)
            if start in ("0-0", "0", None):
                break

    def _claim_page(self, client, start):
        if hasattr(client, "xautoclaim"):
            try:
                reply = client.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                          start_id=start, count=self.batch)
                return reply[0], reply[1] or []
            except Exception as exc:
                if "unknown command" not in str(exc).lower():
                    raise
        # Redis < 6.2 or redis-py < 4: XPENDING + XCLAIM.
        pending = client.xpending_range(self.stream, self.group, "-", "+", self.batch)
        idle = [p["message_id"] for p in pending if p.get("time_since_delivered", 0) >= self.claim_idle_ms]
        claimed = client.xclaim(self.stream, self.group, self.consumer, self.claim_idle_ms, idle) if idle else []
        return "0-0", claimed or []

    # ---------------------------------------------------------------- entries

    def _process(self, client, entries):
        if not entries:
            return 0
        acks, dead, dispatched = [], [], 0
        for entry_id, fields in entries:
            self.stats["read"] += 1
            if entry_id in self._dispatched_unacked:
                acks.append(entry_id)  # dispatched already; only the ack was lost
                continue
            try:
                item = self._prepare(entry_id, fields or {})
            except Exception as exc:
                dead.append((entry_id, fields, _reason(exc)))
                continue
            if item is None:
                self.stats["ignored"] += 1
                acks.append(entry_id)
                continue
            try:
                self._dispatch(item)
            except Exception as exc:
                self.stats["dispatch_errors"] += 1
                self._log("warning", "%s stream %s: dispatch of entry %s failed (left pending, retried after "
                          "%d ms): %s", self._prefix, self.stream, entry_id, self.claim_idle_ms, _reason(exc))
                continue
            self.stats["dispatched"] += 1
            dispatched += 1
            self._dispatched_unacked.add(entry_id)
            acks.append(entry_id)
        self._ack(client, acks, dead)
        if dispatched:
            self._log("info", "%s stream %s: dispatched %d failures (%d entries read)", self._prefix, self.stream,
                      dispatched, len(entries))
        return len(entries)

    def _ack(self, client, acks, dead):
        if not acks and not dead:
            return
        if not dead:
            client.xack(self.stream, self.group, *acks)
            self._dispatched_unacked.difference_update(acks)
            return
        pipe = client.pipeline(transaction=True)  # the dead letter and its ack together
        for entry_id, fields, reason in dead:
            if self.dead_letter_stream:
                pipe.xadd(self.dead_letter_stream, {
                    "stream": self.stream, "entry_id": entry_id, "group": self.group, "consumer": self.consumer,
                    "reason": reason, "fields": json.dumps(fields or {}, sort_keys=True, default=str),
                    "dead_lettered_at": "%.3f" % time.time(),
                }, maxlen=self.dead_letter_maxlen, approximate=True)
        ids = list(acks) + [entry_id for entry_id, _, _ in dead]
        pipe.xack(self.stream, self.group, *ids)
        pipe.execute()
        self._dispatched_unacked.difference_update(acks)
        for entry_id, _, reason in dead:
            self.stats["dead_lettered"] += 1
            self._log("warning", "%s stream %s: entry %s is malformed, dead-lettered to %s: %s", self._prefix,
                      self.stream, entry_id, self.dead_letter_stream or "(none: dropped)", reason)

    # ---------------------------------------------------------------- errors

    def _on_redis_error(self, exc):
        self._failures += 1
        self.stats["reconnects"] += 1
        self._close()
        delay = min(self.backoff_max_s, self.backoff_initial_s * (2 ** (self._failures - 1)))
        delay = delay * random.uniform(0.5, 1.0)
        self._log("warning", "%s stream %s: Redis error (%s: %s); reconnecting in %.2f s (attempt %d)",
                  self._prefix, self.stream, type(exc).__name__, _reason(exc), delay, self._failures)
        self._stopped.wait(delay)

    def _close(self):
        client, self._client = self._client, None
        if client is not None:
            try:
                client.connection_pool.disconnect()
            except Exception:
                pass

    def _log(self, level, message, *args):
        if self._logger is not None:
            getattr(self._logger, level)(message, *args)


def _entries(replies):
    """[(id, fields)] from an XREADGROUP reply (list of [stream, entries] or, in RESP3, a dict)."""
    if not replies:
        return []
    if isinstance(replies, dict):
        replies = list(replies.items())
    out = []
    for _stream, entries in replies:
        for entry in entries or []:
            out.append((entry[0], entry[1]))
    return out


def _reason(exc):
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def connect_factory(url, block_ms, connect_timeout_s=5.0):
    """A `connect()` for StreamConsumer: a redis-py client on `url` whose socket
    timeout outlasts one BLOCK, with redis-py's own retries off (the consumer
    does its own backoff)."""
    if redis is None:
        raise RuntimeError("redis-py is not installed in the pack's virtualenv (requirements.txt lists it)")

    def connect():
        kwargs = {"decode_responses": True, "socket_timeout": block_ms / 1000.0 + 5.0,
                  "socket_connect_timeout": connect_timeout_s}
        try:
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:  # redis-py 3.x does not retry anyway
            pass
        else:
            kwargs["retry"] = Retry(NoBackoff(), 0)
        return redis.Redis.from_url(url, **kwargs)

    return connect
