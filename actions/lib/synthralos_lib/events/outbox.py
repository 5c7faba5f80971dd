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
"""

import json
import logging
import os
import re
import socket
import time
import uuid

from synthralos_lib.events.health import DataPlaneHealth, alert_payload
from synthralos_lib.events.rudderstack import RudderStackClient
from synthralos_lib.state.redaction import scrub_and_cap, scrub_result
from synthralos_lib.state.store import RedisStore
from synthralos_lib.state.redis_streams import autoclaim, pending_range

LOG = logging.getLogger(__name__)

GROUP = "flushers"
CLAIM_PAGES = 5
UNREADABLE = "unreadable_entry"
MAX_UNREADABLE_CHARS = 32768
CONFIG_ALERT_WINDOW_S = 900
DIRECT_DEAD_LETTER_KEY = "events.dead_letters"
DIRECT_DEAD_LETTER_MAX = 1000
# Dead letters are bounded in bytes, not only in count: one letter's event is cut to MAX_DEAD_LETTER_BYTES
# of JSON (`bounded_letter_event`), and the oldest letters go once the dead letters hold more than the
# budget: DEAD_LETTER_BYTES for the Redis stream, DIRECT_DEAD_LETTER_BYTES for the datastore's list (one
# st2 datastore value, which MongoDB keeps under 16 MB).
MAX_DEAD_LETTER_BYTES = 64 * 1024
DEAD_LETTER_BYTES = 64 * 1024 * 1024
DIRECT_DEAD_LETTER_BYTES = 4 * 1024 * 1024
DEAD_LETTER_CUT_CHARS = 2048  # each string of a letter's event that is too big is cut to this
DIRECT_QUEUE_PREFIX = "events.queue."
DIRECT_QUEUE_DEPTH = "events.queue_depth"  # a hint: +1 per enqueue, set to the true depth by each drain
DIRECT_QUEUE_MAX = 10000  # the datastore is no bulk store: its queue holds at most this many
DATASTORE_PAGE = 100  # st2 api.max_page_size default
COUNTERS = (
    "enqueued",
    "delivered",
    "retries",
    "requests",
    "dead_lettered",
    "overflow_rejected",
    "overflow_dropped",
    "reclaimed",
    "replayed",
    "config_errors",
)

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
    attempts = int(rudder.get("max_retries", 3)) + 1
    worst = attempts * float(rudder.get("request_timeout_s", 10)) + attempts * 30.0
    return int(max(30.0, worst) * 1000)


def consumer_name():
    return "%s-%d-%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])


def _ms_from_id(stream_id):
    return int(stream_id.split("-", 1)[0])


_STREAM_ID = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")


def is_stream_id(text):
    """Whether `text` is a full stream id (ms-seq): anything else names no dead letter."""
    return isinstance(text, str) and _STREAM_ID.match(text) is not None


def bounded_letter_event(event):
    """`event` as a dead letter keeps it: whole when its JSON fits MAX_DEAD_LETTER_BYTES, else with every
    string scrubbed and cut (saying so), else only its ids and the start of its JSON."""
    text = json.dumps(event, separators=(",", ":"))
    if len(text.encode("utf-8")) <= MAX_DEAD_LETTER_BYTES:
        return event
    cut = scrub_result(event, (), DEAD_LETTER_CUT_CHARS)
    if len(json.dumps(cut, separators=(",", ":")).encode("utf-8")) <= MAX_DEAD_LETTER_BYTES:
        return cut
    # `text` is ASCII (json.dumps escapes the rest): stored again as JSON, a character takes at most 2 bytes.
    ids = dict((k, scrub_and_cap(event.get(k), 256)) for k in ("messageId", "type", "event")
               if isinstance(event, dict) and isinstance(event.get(k), str))
    return dict(ids, dead_letter_cut=scrub_and_cap(text, MAX_DEAD_LETTER_BYTES // 8, note_cut=True))


class FlushReport(object):
    def __init__(self):
        self.delivered = 0
        self.dead_lettered = 0
        self.retry_later = 0
        self.reclaimed = 0
        self.requests = 0
        self.retries = 0
        self.batches = 0
        self.config_error = None
        self.last_error = None
        self.retry_after_s = None
        self.stopped = None  # why this flush stopped early, if it did
        self.dead = []  # [{"message_id", "event", "reason"}]

    def add(self, delivery):
        self.delivered += len(delivery.delivered)
        self.dead_lettered += len(delivery.dead)
        self.retry_later += len(delivery.retry_later)
        self.requests += delivery.requests
        self.retries += delivery.retries
        self.config_error = self.config_error or delivery.config_error
        self.last_error = delivery.last_error or self.last_error
        if delivery.retry_after_s is not None:
            self.retry_after_s = delivery.retry_after_s
        for event, reason in delivery.dead:
            self.dead.append({"message_id": event.get("messageId"), "event": event.get("event"), "reason": reason})
            LOG.warning("[RudderStack] event %s dead-lettered: %s", event.get("messageId"), reason)
        if delivery.delivered:
            LOG.info("[RudderStack] batch delivered: %d event(s) in %d request(s)", len(delivery.delivered),
                     delivery.requests)

    def as_dict(self):
        if self.config_error:
            status = "config_error"
        elif self.retry_later:
            status = "retrying"
        else:
            status = "ok"
        return {
            "status": status,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "retry_later": self.retry_later,
            "reclaimed": self.reclaimed,
            "batches": self.batches,
            "requests": self.requests,
            "retries": self.retries,
            "config_error": self.config_error,
            "last_error": self.last_error,
            "retry_after_s": self.retry_after_s,
            "stopped": self.stopped,
            "dead_letters": self.dead[:50],
        }


def _safely(what, fn, *args):
    """Health bookkeeping must never break a flush: log and carry on when the store fails."""
    try:
        return fn(*args)
    except Exception as exc:  # StoreError, or anything else a backend raises
        LOG.warning("[RudderStack] %s failed: %s", what, type(exc).__name__)
        return None


def record_outcome(health, report):
    """After a delivery attempt: mark the data plane healthy or unhealthy (honouring Retry-After)."""
    if health is None:
        return
    if report.retry_later and not report.config_error:
        _safely("marking the data plane unhealthy", health.mark_unhealthy, report.last_error, report.retry_after_s)
    elif report.delivered and not report.config_error:
        _safely("clearing the data plane mark", health.mark_healthy)


def alert_result(health, report, claim_alert):
    """`alert` for a flush result: True when this caller took the window's config-error alert slot."""
    if health is None or not claim_alert:
        return False
    pending = _safely("reading the config error", health.pending_config_error)
    if not pending:
        return False
    return bool(_safely("claiming the config-error alert", health.claim_alert))


def note_refused(health, delivery, data_plane_url, dead_lettered=False):
    """Record a 401/404 for the alert; True while refused events may still be kept (inside the fix window).

    `dead_lettered`: the refused events stay dead letters whatever the window (a replay), so they count as such.
    """
    if health is None:
        return True
    keep = _safely("recording the config error", health.note_config_error, delivery.config_error, data_plane_url,
                   len(delivery.refused), dead_lettered)
    return True if keep is None else keep  # store down: keeping is the safe choice


def flush_result(health, report, claim_alert, where):
    """A flush's result (both outboxes): health marked, `pending_retry_in` (`where`), the alert slot if claimed."""
    record_outcome(health, report)
    result = report.as_dict()
    result["pending_retry_in"] = where if report.retry_later else None
    result["alert"] = alert_result(health, report, claim_alert)
    result["alert_payload"] = alert_payload(health.pending_config_error()) if result["alert"] else None
    return result


def split_refused(health, delivery, data_plane_url):
    """Events refused with 401/404: (kept for the fix window, [(event, reason)] to dead-letter now)."""
    if not delivery.refused:
        return [], []
    if note_refused(health, delivery, data_plane_url):
        return [e for e, _ in delivery.refused], []
    return [], [(e, reason + " (still refused after the fix window)") for e, reason in delivery.refused]


def take_delivery(report, health, delivery, data_plane_url):
    """Account one batch's delivery in `report`: (events kept for the fix window, [(event, reason)] to dead-letter)."""
    keep, refused_dead = split_refused(health, delivery, data_plane_url)
    report.add(delivery)
    report.dead_lettered += len(refused_dead)
    report.retry_later += len(keep)
    return keep, list(delivery.dead) + refused_dead


def resend(client, health, data_plane_url, letters):
    """Send dead letters ([{"id", "event", ...}], oldest first) again now, for `replay`.

    Returns (delivery, report, outcome) where `outcome` maps each letter id to "delivered", a new reason
    (refused with 401/404 or rejected with 400/413: it stays dead-lettered with that reason) or None (not
    tried or left to retry later: it stays as it is). A 401/404 is recorded for the alert like a refused flush.
    """
    id_of = {id(d["event"]): d["id"] for d in letters}
    delivery = client.send([d["event"] for d in letters])
    if delivery.refused:
        note_refused(health, delivery, data_plane_url, dead_lettered=True)
    report = FlushReport()
    report.add(delivery)
    record_outcome(health, report)
    outcome = {d["id"]: None for d in letters}
    outcome.update((id_of[id(e)], "delivered") for e in delivery.delivered)
    outcome.update((id_of[id(e)], reason) for e, reason in list(delivery.dead) + list(delivery.refused))
    return delivery, report, outcome


def nothing_to_replay(ids):
    return {"replayed": 0, "replayed_ids": [], "rejected": [], "not_found": sorted(set(ids or []))}


def replay_result(letters, outcome, new_ids, delivery, ids):
    """The replay result, the same on both outboxes; `new_ids`: a rewritten letter's id now (Redis re-adds it)."""
    delivered = sorted(i for i, what in outcome.items() if what == "delivered")
    rejected = []
    for d in letters:
        what = outcome[d["id"]]
        if what == "delivered":
            continue
        reason = what if what is not None else "retry later: %s" % (
            delivery.last_error or "not sent after an earlier refusal in this replay")
        rejected.append({"id": d["id"], "reason": reason, "dead_letter_id": new_ids.get(d["id"], d["id"])})
    return {
        "replayed": len(delivered),
        "replayed_ids": delivered,
        "rejected": rejected,
        "not_found": sorted(set(ids or []) - set(outcome)),
        "config_error": delivery.config_error,
    }


class RedisOutbox(object):
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
        self.max_len = int(rudder.get("max_queue_length", 100000))
        self.policy = rudder.get("overflow_policy", "reject_new")
        self.batch_size = int(rudder.get("batch_size", 20))
        self.flush_interval_ms = int(rudder.get("flush_interval_ms", 10000))
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


class DirectOutbox(object):
    """No Redis: a datastore-backed queue (one key per event) and a datastore dead-letter list."""

    def __init__(self, store, rudder=None, clock=time.time, health=None):
        rudder = rudder or {}
        self.store = store
        self._clock = clock
        self.data_plane_url = rudder.get("data_plane_url") or ""
        self.batch_size = int(rudder.get("batch_size", 20))
        self.max_len = min(int(rudder.get("max_queue_length", 100000)), DIRECT_QUEUE_MAX)
        self.dead_letter_bytes = DIRECT_DEAD_LETTER_BYTES
        self.health = health or DataPlaneHealth.for_settings(store, rudder, clock=clock)

    where = "st2_datastore:synthralos." + DIRECT_QUEUE_PREFIX + "*"

    def _count(self, name, amount):
        if amount:
            _safely("counting " + name, self.store.incr, "events.stats." + name, amount)

    # -- the queue -----------------------------------------------------------

    def enqueue(self, event):
        """Queue one event for the flusher; {"queued", "key", "reason"}. Raises StoreError if the datastore fails."""
        if int(self.store.get(DIRECT_QUEUE_DEPTH, 0) or 0) >= self.max_len:
            self._count("overflow_rejected", 1)
            LOG.warning("[RudderStack] datastore queue full (%d events): event %s rejected", self.max_len,
                        event.get("messageId"))
            return {"queued": False, "key": None,
                    "reason": "datastore queue full (%d events); the event is not kept" % self.max_len}
        key = "%s%013d.%s" % (DIRECT_QUEUE_PREFIX, int(self._clock() * 1000), event.get("messageId") or uuid.uuid4().hex)
        self.store.set(key, {"event": event, "queued_at_ms": int(self._clock() * 1000)})
        _safely("counting the queue depth", self.store.incr, DIRECT_QUEUE_DEPTH, 1)
        self._count("enqueued", 1)
        return {"queued": True, "key": key, "reason": None}

    def waiting(self, limit):
        """[(key, record)] oldest first, up to `limit`."""
        found, offset = {}, 0
        while len(found) < limit:
            page = self.store.items(DIRECT_QUEUE_PREFIX, limit=min(DATASTORE_PAGE, limit - len(found)), offset=offset)
            fresh = [(key, value) for key, value in page if key not in found]
            found.update(fresh)
            if len(page) < DATASTORE_PAGE or not fresh:  # last page (or a service that does not page)
                break
            offset += len(page)
        return sorted(found.items(), key=lambda item: item[0])[:limit]

    def depth(self, cap=DIRECT_QUEUE_MAX):
        """How many events wait (at most `cap`), counted without reading them (`DatastoreStore.count`)."""
        return self.store.count(DIRECT_QUEUE_PREFIX, cap, page_size=DATASTORE_PAGE)

    def _dead_letter(self, items):
        for event, reason in items:
            self._push_letter({"id": uuid.uuid4().hex, "message_id": event.get("messageId"),
                               "reason": scrub_and_cap(reason or "", 1000), "failed_at_ms": int(self._clock() * 1000),
                               "event": bounded_letter_event(event)})
        self._count("dead_lettered", len(items))

    def _push_letter(self, letter):
        """Newest first; at most DIRECT_DEAD_LETTER_MAX letters and dead_letter_bytes bytes (the oldest go)."""
        self.store.list_push(DIRECT_DEAD_LETTER_KEY, letter, max_len=DIRECT_DEAD_LETTER_MAX,
                             max_bytes=self.dead_letter_bytes)

    def _note(self, delivery):
        self._count("delivered", len(delivery.delivered))
        self._count("retries", delivery.retries)
        self._count("requests", delivery.requests)
        self._count("config_errors", 1 if delivery.config_error else 0)
        if delivery.config_error:
            _safely("recording the last config error", self.store.set, "events.stats.last_config_error",
                    delivery.config_error)
        if delivery.last_error:
            _safely("recording the last error", self.store.set, "events.stats.last_error", delivery.last_error)

    def deliver(self, client, event):
        """Try one event now; what cannot go now waits in the queue. Returns the event's outcome:
        {"status": delivered | pending_retry | dead_lettered | rejected, "where"/"reason", "delivery"}.
        Raises StoreError only if the event had to be queued and the datastore failed."""
        report = FlushReport()
        delivery = client.send([event])
        _, dead = take_delivery(report, self.health, delivery, self.data_plane_url)
        report.batches = 1
        self._note(delivery)
        outcome = {"delivery": report.as_dict()}
        if delivery.delivered:
            record_outcome(self.health, report)
            return dict(outcome, status="delivered")
        if dead:
            self._dead_letter(dead)
            return dict(outcome, status="dead_lettered", reason=dead[0][1])
        record_outcome(self.health, report)  # retry_later: the event waits in the queue (or in the fix window)
        return dict(outcome, **self.queue_outcome(event, delivery.last_error or (
            "HTTP %d from the data plane" % delivery.config_error["status"] if delivery.config_error else None)))

    def queue_outcome(self, event, why):
        queued = self.enqueue(event)
        if not queued["queued"]:
            return {"status": "rejected", "reason": queued["reason"]}
        return {"status": "pending_retry", "where": self.where, "queue_key": "synthralos." + queued["key"],
                "reason": why}

    def flush(self, client, max_batches=50, claim_alert=True, deadline=None):
        """Drain the queue in batches (same rules as the Redis outbox); a flush-style report."""
        report = FlushReport()
        for _ in range(max_batches):
            if deadline is not None and self._clock() >= deadline:
                report.stopped = "deadline"
                break
            batch = self.waiting(self.batch_size)
            if not batch:
                break
            report.batches += 1
            good = [(key, r["event"]) for key, r in batch if isinstance(r, dict) and isinstance(r.get("event"), dict)]
            broken = [key for key, r in batch if not (isinstance(r, dict) and isinstance(r.get("event"), dict))]
            if broken:
                self._dead_letter([({"datastore_key": k}, "unreadable queue entry (not an event)") for k in broken])
                report.dead_lettered += len(broken)
                for key in broken:
                    self.store.delete(key)
            if not good:
                continue
            key_of = {id(event): key for key, event in good}
            events = [event for _, event in good]
            delivery = client.send(events)
            keep, dead = take_delivery(report, self.health, delivery, self.data_plane_url)
            self._note(delivery)
            self._dead_letter(dead)
            for event in list(delivery.delivered) + [e for e, _ in dead]:
                self.store.delete(key_of[id(event)])
            if delivery.retry_later or delivery.config_error:
                break
        if report.batches:
            _safely("recording the queue depth", lambda: self.store.set(DIRECT_QUEUE_DEPTH, self.depth()))
        return flush_result(self.health, report, claim_alert, self.where)

    def stats(self):
        waiting = self.waiting(DIRECT_QUEUE_MAX)
        letters = self.store.list_range(DIRECT_DEAD_LETTER_KEY)
        oldest_age_s = None
        if waiting:
            oldest_age_s = round(max(0.0, self._clock() - int(waiting[0][0].split(".")[2]) / 1000.0), 3)
        result = {
            "backend": "st2_datastore",
            "depth": len(waiting),
            "pending": 0,
            "waiting": len(waiting),
            "oldest_age_s": oldest_age_s,
            "dead_letters": len(letters),
            "dead_letter_bytes": sum(len(json.dumps(d).encode("utf-8")) for d in letters),
            "dead_letter_bytes_max": self.dead_letter_bytes,
            "max_queue_length": self.max_len,
            "overflow_policy": "reject_new",
            "consumers": 0,
        }
        for name in COUNTERS:
            result[name] = int(self.store.get("events.stats." + name, 0) or 0)
        result["last_error"] = self.store.get("events.stats.last_error")
        result["last_config_error"] = self.store.get("events.stats.last_config_error")
        return result

    def dead_letters(self, limit=100):
        # Stored newest first; show oldest first like the Redis stream.
        return list(reversed(self.store.list_range(DIRECT_DEAD_LETTER_KEY)))[:limit]

    def replay(self, client, ids=None, limit=1000):
        """Resend dead letters now (the given ids, or all up to `limit`): delivered ones leave the list; refused
        (401/404) or rejected (400/413) ones stay with the new reason; the rest stay as they are."""
        letters = self.dead_letters(DIRECT_DEAD_LETTER_MAX)
        chosen = [d for d in letters if not ids or d["id"] in ids][:limit]
        if not chosen:
            return nothing_to_replay(ids)
        delivery, _, outcome = resend(client, self.health, self.data_plane_url, chosen)
        keep = [d if outcome.get(d["id"]) is None else dict(d, reason=outcome[d["id"]])
                for d in letters if outcome.get(d["id"]) != "delivered"]
        # Rewrite the list (oldest pushed first so the newest stays at the head).
        self.store.delete(DIRECT_DEAD_LETTER_KEY)
        for d in keep:
            self._push_letter(d)
        self._note(delivery)
        self._count("replayed", len(delivery.delivered))
        return replay_result(chosen, outcome, {}, delivery, ids)


def make_client(rudder, **kwargs):
    """A RudderStackClient for the `rudderstack` section, or None when no write key is configured."""
    if not rudder.get("write_key"):
        return None
    return RudderStackClient.from_settings(rudder, **kwargs)
