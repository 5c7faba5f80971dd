"""A Redis Streams consumer-group reader that a sensor can leave running for months.

`StreamConsumer(connect, stream, group, consumer, prepare, dispatch, ...)`:

* reads new entries with `XREADGROUP ... BLOCK block_ms` (bounded, so `stop()`
  takes effect within `block_ms` and the reader never holds a green thread);
* decodes each entry's field names and values as UTF-8 itself (the client
  should return bytes: `connect_factory(..., decode_responses=False)`), so one
  undecodable byte costs that entry alone, never the batch's reply;
* for each entry calls `prepare(entry_id, fields)`, which returns an item to
  dispatch or None (nothing to do); any exception there means the entry is
  malformed: it is copied to the dead-letter stream with the reason and acked;
* calls `dispatch(item)` and acks (`XACK`) only after it returned; an exception
  from dispatch leaves the entry pending, to be retried after `claim_idle_ms`,
  at most `max_dispatch_attempts` times by this reader: then it is
  dead-lettered with the last error and acked;
* a dead letter is a bounded copy: fields as JSON, scrubbed of the configured
  secrets, then capped (`dead_letter_entry_bytes`); the stream is trimmed to
  `dead_letter_max_bytes // dead_letter_entry_bytes` entries, so it stays
  within that byte budget however large the malformed entries were;
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
import threading
import time

from synthralos_lib import backoff
from synthralos_lib.state import redis_streams
from synthralos_lib.state.redaction import scrub_and_cap
from synthralos_lib.streams.entries import strict_utf8 as _strict

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
                 dead_letter_max_bytes=64 * 1024 * 1024, dead_letter_entry_bytes=8192, max_dispatch_attempts=5,
                 secrets=(), logger=None, log_prefix=DEFAULT_PREFIX, clock=time.monotonic, wall_clock=time.time):
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
        self.dead_letter_entry_bytes = max(1024, int(dead_letter_entry_bytes))
        self.dead_letter_maxlen = max(1, int(dead_letter_max_bytes) // self.dead_letter_entry_bytes)
        self.max_dispatch_attempts = max(1, int(max_dispatch_attempts))
        self._secrets = [s for s in secrets if isinstance(s, str) and s]
        self._wall_clock = wall_clock
        self._attempts = {}  # entry id -> failed dispatches by this reader
        self.on_round = None  # called with the consumer after every round (the sensor's heartbeat)
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
                      "dispatch_errors": 0, "reconnects": 0, "errors": 0, "last_read_at": None,
                      "last_dispatch_at": None}

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
                self.stats["errors"] += 1
                if redis_errors is not None and isinstance(exc, redis_errors.ResponseError) and "NOGROUP" in str(exc):
                    self._log("warning", "%s stream %s: group %s is gone (Redis restarted or the stream was "
                              "deleted); creating it again", self._prefix, self.stream, self.group)
                    self._close()  # the next round reconnects and creates the group
                    continue
                self._on_redis_error(exc)
            self._after_round()
        self._close()

    def _after_round(self):
        if self.on_round is None:
            return
        try:
            self.on_round(self)
        except Exception as exc:  # a heartbeat problem must not stop the reading
            self.stats["errors"] += 1
            self._log("warning", "%s stream %s: after-round hook failed: %s", self._prefix, self.stream, _reason(exc))

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
            start = _text(entries[-1][0])
        self._own_backlog = False

    def _reclaim(self, client):
        start, rounds = "0-0", 0
        while not self._stopped.is_set() and rounds < 10:
            rounds += 1
            start, entries = self._claim_page(client, start)
            start = _text(start) if start is not None else None
            entries = [(entry_id, fields) for entry_id, fields in _claimed(entries) if entry_id is not None]
            if entries:
                self.stats["reclaimed"] += len(entries)
                self._log("info", "%s stream %s: reclaimed %d entries pending over %d ms", self._prefix,
                          self.stream, len(entries), self.claim_idle_ms)
                self._process(client, entries)
            if start in ("0-0", "0", None):
                break

    def _claim_page(self, client, start):
        try:  # redis_streams reads the XAUTOCLAIM reply the same way on every redis-py version
            next_start, entries, _deleted = redis_streams.autoclaim(
                client, self.stream, self.group, self.consumer, self.claim_idle_ms, start, self.batch)
            return next_start, entries
        except Exception as exc:
            if "unknown command" not in str(exc).lower():
                raise
        # Redis < 6.2: XPENDING + XCLAIM.
        pending = redis_streams.pending_range(client, self.stream, self.group, self.batch)
        idle = [_text(p["message_id"]) for p in pending if p.get("time_since_delivered", 0) >= self.claim_idle_ms]
        claimed = client.xclaim(self.stream, self.group, self.consumer, self.claim_idle_ms, idle) if idle else []
        return "0-0", claimed or []

    # ---------------------------------------------------------------- entries

    def _process(self, client, entries):
        if not entries:
            return 0
        acks, dead, dispatched = [], [], 0
        self.stats["last_read_at"] = self._wall_clock()
        for entry_id, fields in entries:
            entry_id = _text(entry_id)
            self.stats["read"] += 1
            if entry_id in self._dispatched_unacked:
                acks.append(entry_id)  # dispatched already; only the ack was lost
                continue
            try:
                decoded = decode_fields(fields)
                item = self._prepare(entry_id, decoded)
            except Exception as exc:  # undecodable, malformed, or refused by st2's payload checks
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
                attempts = self._attempts[entry_id] = self._attempts.get(entry_id, 0) + 1
                if attempts >= self.max_dispatch_attempts:
                    dead.append((entry_id, fields, "dispatch failed %d times, last: %s" % (attempts, _reason(exc))))
                    continue
                self._log("warning", "%s stream %s: dispatch of entry %s failed (attempt %d of %d; left pending, "
                          "retried after %d ms): %s", self._prefix, self.stream, entry_id, attempts,
                          self.max_dispatch_attempts, self.claim_idle_ms, _reason(exc))
                continue
            self._attempts.pop(entry_id, None)
            self.stats["dispatched"] += 1
            self.stats["last_dispatch_at"] = self._wall_clock()
            dispatched += 1
            self._dispatched_unacked.add(entry_id)
            acks.append(entry_id)
        self._ack(client, acks, dead)
        if len(self._attempts) > 10 * self.batch:  # entries another reader finished: forget them
            self._attempts = dict(list(self._attempts.items())[-self.batch:])
        if dispatched:
            self._log("info", "%s stream %s: dispatched %d failures (%d entries read)", self._prefix, self.stream,
                      dispatched, len(entries))
        return len(entries)

    def dead_letter(self, entry_id, fields, reason):
        """The dead-letter copy of one entry (`dead_letter_record`)."""
        return dead_letter_record({"stream": self.stream, "entry_id": entry_id, "group": self.group,
                                   "consumer": self.consumer, "dead_lettered_at": "%.3f" % self._wall_clock()},
                                  fields, reason, self.dead_letter_entry_bytes, self._secrets)

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
                pipe.xadd(self.dead_letter_stream, self.dead_letter(entry_id, fields, reason),
                          maxlen=self.dead_letter_maxlen, approximate=False)  # exact: a byte budget
        ids = list(acks) + [entry_id for entry_id, _, _ in dead]
        pipe.xack(self.stream, self.group, *ids)
        pipe.execute()
        self._dispatched_unacked.difference_update(acks)
        for entry_id, _, reason in dead:
            self._attempts.pop(entry_id, None)
            self.stats["dead_lettered"] += 1
            self._log("warning", "%s stream %s: entry %s dead-lettered to %s: %s", self._prefix,
                      self.stream, entry_id, self.dead_letter_stream or "(none: dropped)",
                      scrub_and_cap(reason, 500, self._secrets))

    def group_state(self):
        """`{"lag", "pending", "oldest_pending_age_s"}` of this reader's group (None where Redis does not say).

        `lag` is XINFO GROUPS' (Redis 7); `oldest_pending_age_s` comes from the oldest pending
        entry's id (its creation time), so it grows while an entry stays unacknowledged.
        """
        client = self._ensure_client()
        state = {"lag": None, "pending": 0, "oldest_pending_age_s": None}
        for group in client.xinfo_groups(self.stream):
            group = {_text(k): v for k, v in group.items()}
            if _text(group.get("name")) == self.group:
                state["pending"] = int(group.get("pending") or 0)
                lag = group.get("lag")
                state["lag"] = int(lag) if lag is not None else None
        if state["pending"]:
            summary = client.xpending(self.stream, self.group)
            oldest = summary.get("min") if isinstance(summary, dict) else None
            if oldest:
                oldest_ms = int(_text(oldest).partition("-")[0])
                state["oldest_pending_age_s"] = max(0.0, self._wall_clock() - oldest_ms / 1000.0)
        return state

    # ---------------------------------------------------------------- errors

    def _on_redis_error(self, exc):
        self._failures += 1
        self.stats["reconnects"] += 1
        self._close()
        delay = backoff.capped_exponential(self._failures, self.backoff_initial_s, self.backoff_max_s,
                                           jitter=backoff.EQUAL)
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


def _text(value):
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _claimed(entries):
    """XAUTOCLAIM / XCLAIM entries as (id, fields), whether the fields come as a dict or a flat list."""
    out = []
    for entry in entries or []:
        entry_id, fields = entry[0], entry[1] if len(entry) > 1 else None
        if isinstance(fields, (list, tuple)):
            fields = dict(zip(fields[::2], fields[1::2]))
        out.append((entry_id, fields))
    return out


def decode_fields(fields):
    """An entry's fields as text; ValueError naming the field when a name or value is not UTF-8."""
    decoded = {}
    for key, value in (fields or {}).items():
        name = _strict(key, "a field name")
        decoded[name] = _strict(value, "field %s" % name)
    return decoded


def dead_letter_record(about, fields, reason, entry_bytes, secrets):
    """`about` (short texts of ours) plus `reason` and the fields as JSON, each scrubbed of `secrets`,
    then capped so the whole record stays within `entry_bytes` (bytes, not characters): a malformed
    entry is never kept verbatim, whatever its size."""
    record = {k: scrub_and_cap(v, 200, secrets) for k, v in about.items()}
    record["reason"] = scrub_and_cap(reason, 500, secrets)
    room = max(64, entry_bytes - sum(len(k) + len(v.encode("utf-8")) for k, v in record.items()) - 16)
    text = scrub_and_cap(_fields_json(fields), room, secrets)
    while len(text.encode("utf-8")) > room:  # a character may take up to 4 bytes
        text = text[: max(0, int(len(text) * 0.8) - 3)] + "..."
    record["fields"] = text
    return record


def _fields_json(fields):
    def text(value):
        return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)

    try:
        return json.dumps({text(k): text(v) for k, v in (fields or {}).items()}, sort_keys=True)
    except Exception as exc:  # fields of an unexpected shape: say so rather than lose the dead letter
        return "<fields not representable: %s>" % type(exc).__name__


def _reason(exc):
    return scrub_and_cap(str(exc) or type(exc).__name__, 500)


def connect_factory(url, block_ms, connect_timeout_s=5.0, decode_responses=True):
    """A `connect()` for StreamConsumer: a redis-py client on `url` whose socket
    timeout outlasts one BLOCK, with redis-py's own retries off (the consumer
    does its own backoff). StreamConsumer wants `decode_responses=False`: it
    decodes each entry itself, so an undecodable byte fails one entry, not the read."""
    if redis is None:
        raise RuntimeError("redis-py is not installed in the pack's virtualenv (requirements.txt lists it)")

    def connect():
        kwargs = {"decode_responses": decode_responses, "socket_timeout": block_ms / 1000.0 + 5.0,
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
