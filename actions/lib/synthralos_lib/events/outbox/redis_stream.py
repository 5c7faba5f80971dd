"""`RedisOutbox`: the outbox as a Redis Stream with a consumer group (see the package docstring)."""

import json
import os
import re
import socket
import time
import uuid

from synthralos_lib.events.health import DataPlaneHealth
from synthralos_lib.events.outbox.base import Outbox
from synthralos_lib.events.outbox.delivery import (
    COUNTERS,
    DEAD_LETTER_BYTES,
    LOG,
    FlushReport,
    bounded_letter_event,
    flush_result,
    nothing_to_replay,
    replay_result,
    resend,
    take_delivery,
)
from synthralos_lib.state.config import with_defaults
from synthralos_lib.state.redaction import scrub_and_cap
from synthralos_lib.state.store import RedisStore
from synthralos_lib.state.redis_streams import autoclaim, pending_range

GROUP = "flushers"
CLAIM_PAGES = 5
UNREADABLE = "unreadable_entry"
MAX_UNREADABLE_CHARS = 32768

# KEYS: stream, stats. ARGV: max_len, policy, event json, messageId.
# Returns {queued (0/1), stream id, entries dropped}.
_ENQUEUE = """
local len = redis.call('XLEN', KEYS[1])
local maxlen = tonumber(ARGV[1])
if len >= maxlen and ARGV[2] == 'reject_new' then
  redis.call('HINCRBY', KEYS[2], 'overflow_rejected', 1)
  return {0, '', 0}
end
local id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[3], 'm', ARGV[4])
local dropped = 0
if len + 1 > maxlen then
  dropped = redis.call('XTRIM', KEYS[1], 'MAXLEN', maxlen)
  redis.call('HINCRBY', KEYS[2], 'overflow_dropped', dropped)
end
redis.call('HINCRBY', KEYS[2], 'enqueued', 1)
return {1, id, dropped}
"""

# KEYS: dead stream, stats, outbox stream. ARGV: max_len, max_bytes, group, count (1: count the letters
# as dead_lettered), n, then n outbox entry ids to ack and delete, then per letter: event json, reason,
# failed_at, m. In one step: adds the letters (each with its size in "b"), acks the entries, then drops
# the oldest letters while the stream holds more than max_len letters or max_bytes bytes (the running
# total is the stats field dead_bytes). Returns the new letters' ids.
_DEAD_LETTER = """
local maxlen, maxbytes, group, n = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[5])
local ids = {}
for i = 6 + n, #ARGV, 4 do
  local size = string.len(ARGV[i]) + string.len(ARGV[i + 1])
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i], 'reason', ARGV[i + 1], 'failed_at', ARGV[i + 2],
                             'm', ARGV[i + 3], 'b', size)
  redis.call('HINCRBY', KEYS[2], 'dead_bytes', size)
end
if n > 0 then
  local acked = {}
  for i = 6, 5 + n do acked[#acked + 1] = ARGV[i] end
  redis.call('XACK', KEYS[3], group, unpack(acked))
  redis.call('XDEL', KEYS[3], unpack(acked))
end
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[2], 'dead_lettered', #ids) end
while true do
  local len = redis.call('XLEN', KEYS[1])
  local bytes = tonumber(redis.call('HGET', KEYS[2], 'dead_bytes') or '0')
  if len == 0 then
    redis.call('HSET', KEYS[2], 'dead_bytes', 0)
    break
  end
  if len <= maxlen and bytes <= maxbytes then break end
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local size = 0
  for j = 1, #oldest[2], 2 do
    if oldest[2][j] == 'b' then size = tonumber(oldest[2][j + 1]) end
  end
  redis.call('XDEL', KEYS[1], oldest[1])
  redis.call('HINCRBY', KEYS[2], 'dead_bytes', -size)
  redis.call('HINCRBY', KEYS[2], 'dead_letters_dropped', 1)
end
return ids
"""

# KEYS: dead stream, stats. ARGV: ids. Deletes those letters and takes their sizes off dead_bytes.
_FORGET_LETTERS = """
for i = 1, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
  if found then
    for j = 1, #found[2], 2 do
      if found[2][j] == 'b' then redis.call('HINCRBY', KEYS[2], 'dead_bytes', -tonumber(found[2][j + 1])) end
    end
    redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
return #ARGV
"""


def default_reclaim_idle_ms(rudder):
    """How long an entry may sit with a flusher before another flusher takes it.

    Longer than one flush can legitimately hold a batch (every retry timing
    out, plus backoff), so a live flusher is never robbed; at least 30 s.
    """
    rudder = with_defaults("rudderstack", rudder)
    attempts = int(rudder["max_retries"]) + 1
    worst = attempts * float(rudder["request_timeout_s"]) + attempts * 30.0
    return int(max(30.0, worst) * 1000)


def consumer_name():
    return "%s-%d-%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])


def _ms_from_id(stream_id):
    return int(stream_id.split("-", 1)[0])


_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def is_stream_id(text):
    """Whether `text` is a full stream id (ms-seq): anything else names no dead letter."""
    return isinstance(text, str) and _STREAM_ID.match(text) is not None


class RedisOutbox(Outbox):
    """With Redis: a stream with a consumer group, and a dead-letter stream (see the package docstring)."""

    mode = "outbox"
    can_requeue = True

    def __init__(self, client, key_prefix, rudder, reclaim_idle_ms=None, clock=time.time, health=None):
        """`client`: redis-py client (decode_responses=True); `rudder`: the rudderstack config section;
        `health`: a DataPlaneHealth (default: over this Redis, same key prefix)."""
        self.redis = client
        self.data_plane_url = rudder.get("data_plane_url") or ""
        self.health = health or DataPlaneHealth.for_settings(
            RedisStore(None, key_prefix, client=client), rudder, clock=clock
        )
        self.stream = key_prefix + "events:outbox"
        self.dead_stream = key_prefix + "events:dead"
        self.stats_key = key_prefix + "events:stats"
        filled = with_defaults("rudderstack", rudder)
        self.max_len = int(filled["max_queue_length"])
        self.policy = filled["overflow_policy"]
        self.batch_size = int(filled["batch_size"])
        self.flush_interval_ms = int(filled["flush_interval_ms"])
        self.reclaim_idle_ms = int(reclaim_idle_ms if reclaim_idle_ms is not None else default_reclaim_idle_ms(rudder))
        self._clock = clock
        self.dead_letter_bytes = DEAD_LETTER_BYTES
        self._enqueue_script = client.register_script(_ENQUEUE)
        self._dead_letter_script = client.register_script(_DEAD_LETTER)
        self._forget_letters_script = client.register_script(_FORGET_LETTERS)
        self._group_ready = False

    # -- producing ---------------------------------------------------------

    def enqueue(self, event):
        """Append one built event; returns {"queued": bool, "id", "dropped", "reason"}."""
        payload = json.dumps(event, separators=(",", ":"))
        queued, entry_id, dropped = self._enqueue_script(
            keys=[self.stream, self.stats_key], args=[self.max_len, self.policy, payload, event.get("messageId", "")]
        )
        if not queued:
            LOG.warning("[RudderStack] outbox full (%d events): event %s rejected", self.max_len, event.get("messageId"))
            return {"queued": False, "id": None, "dropped": 0, "reason": "outbox full (%d events), overflow_policy reject_new" % self.max_len}
        if dropped:
            LOG.warning("[RudderStack] outbox full: dropped the %d oldest event(s) (overflow_policy drop_oldest)", dropped)
        return {"queued": True, "id": entry_id, "dropped": int(dropped), "reason": None}

    # -- consuming ---------------------------------------------------------

    def ensure_group(self):
        if self._group_ready:
            return
        import redis

        try:
            self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def _parse(self, raw_entries):
        """[(id, event or None)] from XREADGROUP/XCLAIM entries; None when the entry was trimmed away."""
        out = []
        for item in raw_entries or []:
            if item is None:
                continue
            entry_id, fields = item[0], item[1]
            if isinstance(fields, list):  # raw XAUTOCLAIM reply: flat field/value list
                fields = dict(zip(fields[::2], fields[1::2]))
            event = None
            if fields and "e" in fields:
                try:
                    event = json.loads(fields["e"])
                except ValueError:
                    event = {UNREADABLE: scrub_and_cap(fields["e"], MAX_UNREADABLE_CHARS)}  # for the dead letter
            out.append((entry_id, event))
        return out

    def claim_stale(self, consumer, count):
        """Take over up to `count` entries idle for reclaim_idle_ms on other (dead) flushers."""
        import redis

        cursor, entries = "0-0", []
        # XAUTOCLAIM examines a bounded slice of the pending list per call; follow
        # its cursor (a few pages) so stale entries behind live ones are found too.
        for _ in range(CLAIM_PAGES):
            try:
                cursor, raw_entries, gone = autoclaim(
                    self.redis, self.stream, GROUP, consumer, self.reclaim_idle_ms, cursor, count)
            except redis.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                return self._claim_with_xpending(consumer, count)  # Redis < 6.2
            entries = self._parse(raw_entries)
            if gone:  # trimmed while pending (drop_oldest): nothing left to deliver
                self.redis.xack(self.stream, GROUP, *gone)
            if entries or cursor == "0-0":
                break
        return entries

    def _claim_with_xpending(self, consumer, count):
        pending = pending_range(self.redis, self.stream, GROUP, count * 10)
        stale = [p["message_id"] for p in pending if p["time_since_delivered"] >= self.reclaim_idle_ms][:count]
        if not stale:
            return []
        return self._parse(self.redis.xclaim(self.stream, GROUP, consumer, self.reclaim_idle_ms, stale))

    def read_new(self, consumer, count):
        reply = self.redis.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count)
        return self._parse(reply[0][1]) if reply else []

    def ack(self, ids):
        if not ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.stream, GROUP, *ids)
        pipe.xdel(self.stream, *ids)
        pipe.execute()

    def dead_letter(self, items):
        """Move [(entry_id or None, event, reason)] to the dead-letter stream and ack the originals, in one
        atomic step (bounded in count and bytes: `add_letters`)."""
        if items:
            now_ms = int(self._clock() * 1000)
            self.add_letters([(event, reason, now_ms) for _, event, reason in items],
                             acked=[i for i, _, _ in items if i], count=True)

    def add_letters(self, letters, acked=(), count=False):
        """Append [(event, reason, failed_at_ms)] to the dead-letter stream, each event cut to
        MAX_DEAD_LETTER_BYTES, and ack + delete the outbox entries `acked`; the oldest letters go beyond
        max_len letters or dead_letter_bytes bytes. `count`: count them as dead_lettered. Returns the new ids."""
        args = [self.max_len, self.dead_letter_bytes, GROUP, 1 if count else 0, len(acked)] + list(acked)
        for event, reason, failed_at_ms in letters:
            event = bounded_letter_event(event)
            args += [json.dumps(event, separators=(",", ":")), scrub_and_cap(reason or "", 1000), failed_at_ms,
                     (event.get("messageId") or "") if isinstance(event, dict) else ""]
        return list(self._dead_letter_script(keys=[self.dead_stream, self.stats_key, self.stream], args=args))

    def forget_letters(self, ids):
        """Delete dead letters (their bytes leave the budget's running total)."""
        if ids:
            self._forget_letters_script(keys=[self.dead_stream, self.stats_key], args=list(ids))

    def release(self, consumer, ids):
        """Hand entries back for an immediate retry by the next flusher (marks them as idle long enough)."""
        if ids:
            self.redis.xclaim(self.stream, GROUP, consumer, 0, ids, idle=self.reclaim_idle_ms, justid=True)

    def forget_consumer(self, consumer):
        """Each flush is a new consumer: remove ours and other idle ones that hold nothing."""
        try:
            for info in self.redis.xinfo_consumers(self.stream, GROUP):
                mine = info["name"] == consumer
                if int(info["pending"]) == 0 and (mine or int(info["idle"]) >= self.reclaim_idle_ms):
                    self.redis.xgroup_delconsumer(self.stream, GROUP, info["name"])
        except Exception:  # housekeeping only
            pass

    def due(self):
        """A batch should go now: a full batch is waiting, or the oldest waiting event is older than the interval."""
        waiting = self.redis.xlen(self.stream) - self._pending_count()
        if waiting >= self.batch_size:
            return True
        oldest = self.redis.xrange(self.stream, "-", "+", count=1)
        return bool(oldest) and (self._clock() * 1000 - _ms_from_id(oldest[0][0])) >= self.flush_interval_ms

    def _pending_count(self):
        self.ensure_group()
        summary = self.redis.xpending(self.stream, GROUP)
        return int(summary["pending"]) if summary else 0

    def flush(self, client, force=True, max_batches=50, consumer=None, claim_alert=True, deadline=None,
              forget_consumer=True):
        """Deliver waiting events in batches; see the module doc. Returns a report dict.

        `claim_alert`: take the config-error alert slot when a 401/404 is pending (the result's
        `alert` says whether this caller must dispatch the trigger). `deadline`: a clock time after
        which no new batch is started (inline flushes). `consumer`: a long-lived flusher passes its
        own name (and `forget_consumer=False`); by default each flush is a new consumer.
        """
        self.ensure_group()
        consumer = consumer or consumer_name()
        report = FlushReport()
        try:
            claiming = True
            for _ in range(max_batches):
                if deadline is not None and self._clock() >= deadline:
                    report.stopped = "deadline"
                    break
                # Stale entries first; once none is left, skip that round trip for the rest of this flush.
                entries = self.claim_stale(consumer, self.batch_size) if claiming else []
                report.reclaimed += len(entries)
                if not entries:
                    claiming = False
                    if not force and not self.due():
                        break
                    entries = self.read_new(consumer, self.batch_size)
                if not entries:
                    break
                if not self._deliver(client, consumer, entries, report):
                    break
        finally:
            self._record(report)
            if forget_consumer:
                self.forget_consumer(consumer)
        return flush_result(self.health, report, claim_alert, "redis_stream:" + self.stream)

    def _deliver(self, client, consumer, entries, report):
        """Send one batch of entries; returns whether flushing may continue."""
        broken = [
            (entry_id, e if isinstance(e, dict) else {UNREADABLE: None}, "unreadable outbox entry (not event JSON)")
            for entry_id, e in entries
            if not isinstance(e, dict) or UNREADABLE in e
        ]
        entries = [(entry_id, e) for entry_id, e in entries if isinstance(e, dict) and UNREADABLE not in e]
        self.dead_letter(broken)
        report.dead_lettered += len(broken)
        if not entries:
            return True
        report.batches += 1
        ids_by_event = {id(event): entry_id for entry_id, event in entries}
        delivery = client.send([event for _, event in entries])
        keep, dead = take_delivery(report, self.health, delivery, self.data_plane_url)
        self.ack([ids_by_event[id(e)] for e in delivery.delivered])
        self.dead_letter([(ids_by_event[id(e)], e, reason) for e, reason in dead])
        self.release(consumer, [ids_by_event[id(e)] for e in list(delivery.retry_later) + keep])
        return not (delivery.retry_later or delivery.config_error)

    def _record(self, report):
        pipe = self.redis.pipeline(transaction=False)
        for name, value in (
            ("delivered", report.delivered),
            ("retries", report.retries),
            ("requests", report.requests),
            ("reclaimed", report.reclaimed),
            ("config_errors", 1 if report.config_error else 0),
        ):
            if value:
                pipe.hincrby(self.stats_key, name, value)
        pipe.hset(self.stats_key, "last_flush_at", int(self._clock() * 1000))
        if report.last_error:
            pipe.hset(self.stats_key, "last_error", report.last_error)
        if report.config_error:
            pipe.hset(self.stats_key, "last_config_error", json.dumps(report.config_error))
        pipe.execute()

    # -- inspection and replay --------------------------------------------

    def stats(self):
        self.ensure_group()
        counters = self.redis.hgetall(self.stats_key)
        depth = self.redis.xlen(self.stream)
        pending = self._pending_count()
        oldest = self.redis.xrange(self.stream, "-", "+", count=1)
        oldest_age_s = None
        if oldest:
            oldest_age_s = round(max(0.0, self._clock() - _ms_from_id(oldest[0][0]) / 1000.0), 3)
        result = {
            "backend": "redis_stream",
            "depth": depth,
            "pending": pending,
            "waiting": depth - pending,
            "oldest_age_s": oldest_age_s,
            "dead_letters": self.redis.xlen(self.dead_stream),
            "dead_letter_bytes": int(counters.get("dead_bytes", 0)),
            "dead_letter_bytes_max": self.dead_letter_bytes,
            "dead_letters_dropped": int(counters.get("dead_letters_dropped", 0)),
            "max_queue_length": self.max_len,
            "overflow_policy": self.policy,
            "consumers": len(self.redis.xinfo_consumers(self.stream, GROUP)),
        }
        for name in COUNTERS:
            result[name] = int(counters.get(name, 0))
        result["last_error"] = counters.get("last_error")
        last_config_error = counters.get("last_config_error")
        result["last_config_error"] = json.loads(last_config_error) if last_config_error else None
        return result

    def dead_letters(self, limit=100):
        return [self._letter(entry_id, fields)
                for entry_id, fields in self.redis.xrange(self.dead_stream, "-", "+", count=limit)]

    @staticmethod
    def _letter(entry_id, fields):
        return {
            "id": entry_id,
            "message_id": fields.get("m"),
            "reason": fields.get("reason"),
            "failed_at_ms": int(fields.get("failed_at", 0)),
            "event": json.loads(fields["e"]),
        }  # (field "b", the letter's size for the byte budget, stays inside)

    def replay(self, ids=None, limit=1000, client=None):
        """Dead letters (the given stream ids, or all up to `limit`) back for delivery.

        Without `client`: moved back into the outbox, for the flusher. With `client`: sent now, as
        `DirectOutbox.replay` does: delivered letters leave the dead-letter stream; refused (401/404) or
        rejected (400/413) ones stay, re-added with the new reason (so with a new id, `dead_letter_id`);
        the rest stay as they are. Either way `rejected` lists every letter still dead.
        """
        if ids:
            found = []
            for entry_id in dict.fromkeys(ids):  # an id given twice is replayed once
                if is_stream_id(entry_id):  # anything else names no letter: not_found, as on the datastore
                    found.extend(self.redis.xrange(self.dead_stream, entry_id, entry_id))
        else:
            found = self.redis.xrange(self.dead_stream, "-", "+", count=limit)
        if client is not None:
            return self._resend(client, [self._letter(entry_id, fields) for entry_id, fields in found], ids)
        replayed, rejected = [], []
        for entry_id, fields in found:
            event = json.loads(fields["e"])
            outcome = self.enqueue(event)
            if outcome["queued"]:
                self.forget_letters([entry_id])
                replayed.append(entry_id)
            else:
                rejected.append({"id": entry_id, "reason": outcome["reason"]})
        if replayed:
            self.redis.hincrby(self.stats_key, "replayed", len(replayed))
        missing = sorted(set(ids or []) - set(e for e, _ in found))
        return {"replayed": len(replayed), "replayed_ids": replayed, "rejected": rejected, "not_found": missing}

    def _resend(self, client, letters, ids):
        if not letters:
            return nothing_to_replay(ids)
        delivery, report, outcome = resend(client, self.health, self.data_plane_url, letters)
        delivered = [i for i, what in outcome.items() if what == "delivered"]
        rewritten = [d for d in letters if outcome[d["id"]] not in (None, "delivered")]
        # Stream entries cannot change: re-add with the new reason (keeping when it first failed), then
        # delete the old ones (a crash in between keeps a letter twice, never loses one).
        new_ids = self.add_letters([(d["event"], outcome[d["id"]], d["failed_at_ms"]) for d in rewritten])
        self.forget_letters(delivered + [d["id"] for d in rewritten])
        if delivered:
            self.redis.hincrby(self.stats_key, "replayed", len(delivered))
        self._record(report)
        return replay_result(letters, outcome, {d["id"]: n for d, n in zip(rewritten, new_ids)}, delivery, ids)
