"""Failures in (`FailureWatcher`): BullMQ's events streams read for failed jobs, one trigger per failure.

Failures in (`FailureWatcher`). For each queue the watcher reads `:events`
from its cursor (a Lua scan returns only the failure entries with their job hash fields;
when nothing is new, an XREAD with a bounded BLOCK waits). A `failed` event, or a
`retries-exhausted` event that does not directly follow the `failed` event of
the same job (BullMQ writes both in one script when a job fails for good),
loads the job hash and becomes one `synthralos.agent_failure` payload
(`failure_payload`). A failure is identified by its fingerprint
`<jobId>|<finishedOn>|<attemptsMade>` (`<jobId>|gone|<event id>` once the job
hash was removed, e.g. removeOnFail), so a job retried by hand that fails
again is a new failure, and an event read twice is not.

Delivery is at least once: dispatch, then record. After each batch one
MULTI stores the fingerprints dispatched (a sorted set bounded to
`dedup_window` entries) and the cursor, in the same Redis as the queue
(`<key_prefix>bullmq:<prefix>:<queue>:cursor` / `:dispatched`), so the
record is exactly as durable as the stream it indexes.

Gaps. On start, after a reconnect, and whenever a read returned a full batch
(a backlog that BullMQ's trimming may overtake), the watcher compares its
cursor with the stream (XINFO STREAM): entries after the cursor were deleted
(`max-deleted-entry-id`, Redis 7; the first entry on older Redis), the stream
is gone, or it restarted below the cursor. Then it reconciles from
`:failed` (ZRANGEBYSCORE from the cursor's time minus `reconcile_slack_ms`),
dispatching every failed job whose fingerprint it has not recorded. The
first start of a watcher reads from the end of the stream: failures from
before it ever ran are not replayed.

Hostile jobs. Everything read from BullMQ's keys (events, job hashes, the
failed set) is read as bytes and decoded here, field by field; JSON deeper
than `failure_trigger`'s bound is refused, not recursed into. A failure that
cannot be decoded, that `failure_trigger.build_failure` refuses (including
st2's own payload validation and storage check), or whose dispatch st2
refused `max_dispatch_attempts` times is copied to `dead_letter_stream`
(scrubbed, capped to `dead_letter_entry_bytes`, the stream trimmed to the
`dead_letter_max_bytes` budget) and recorded as handled: it never blocks
the cursor.
"""

import json
import time

from synthralos_lib.healing import failure_trigger
from synthralos_lib.streams.bullmq.keys import QueueKeys, _text
from synthralos_lib.streams.bullmq.payload import failure_payload, parse_job
from synthralos_lib.streams.entries import Undecodable, strict_utf8 as _strict

TRIGGER = failure_trigger.TRIGGER_REF
FAILURE_EVENTS = ("failed", "retries-exhausted")
_LOG = "[Self-Healing]"


def fingerprint(job_id, job, event_id):
    """What identifies one failure of one job (see the module docstring)."""
    if not job:
        return "%s|gone|%s" % (job_id, event_id)
    return "%s|%s|%s" % (job_id, job.get("finishedOn", "-"), job.get("attemptsMade", "-"))


def _safe_json(value):
    try:
        return json.dumps(value, default=str)
    except (RecursionError, ValueError, TypeError) as exc:
        return "<%s: %s>" % (type(value).__name__, type(exc).__name__)


def _loose(value):
    """Text for ids and logs whatever the bytes (undecodable bytes as \\xNN)."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _bytes_client(client):
    """A client on `client`'s server that returns bytes: BullMQ's data is decoded here, field by field."""
    import redis

    kwargs = dict(client.connection_pool.connection_kwargs)
    kwargs["decode_responses"] = False
    pool = redis.ConnectionPool(connection_class=client.connection_pool.connection_class, **kwargs)
    return redis.Redis(connection_pool=pool)



def _id_tuple(stream_id):
    ms, _, seq = str(stream_id).partition("-")
    return int(ms), int(seq or 0)


_JOB_FIELDS = ("name", "data", "opts", "failedReason", "atm", "attemptsMade", "ats", "timestamp", "processedOn",
               "finishedOn", "stacktrace")

# KEYS: events stream. ARGV: cursor, count, job key prefix, previous event, previous jobId, job fields...
# Returns {last id read, entries read, last event, last jobId, {{id, event, jobId, failedReason, {fields}}...}}
# for the failed events and the retries-exhausted events not directly after their job's failed event.
_SCAN_LUA = """
local cursor = ARGV[1]
local entries = redis.call("XRANGE", KEYS[1], cursor, "+", "COUNT", tonumber(ARGV[2]) + 1)
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
local prevEvent, prevJob = ARGV[4], ARGV[5]
local last, count, found = cursor, 0, {}
for _, entry in ipairs(entries) do
  local id = entry[1]
  if id ~= cursor and count < tonumber(ARGV[2]) then
    count = count + 1
    last = id
    local f = entry[2]
    local event, jobId, reason = "", "", ""
    for i = 1, #f, 2 do
      if f[i] == "event" then event = f[i + 1]
      elseif f[i] == "jobId" then jobId = f[i + 1]
      elseif f[i] == "failedReason" then reason = f[i + 1] end
    end
    if event == "failed" or (event == "retries-exhausted" and not (prevEvent == "failed" and prevJob == jobId)) then
      local job = {}
      if jobId ~= "" then job = redis.call("HMGET", ARGV[3] .. jobId, unpack(fields)) end
      found[#found + 1] = {id, event, jobId, reason, job}
    end
    prevEvent, prevJob = event, jobId
  end
end
return {last, count, prevEvent, prevJob, found}
"""


class WatchedQueue(object):
    """One queue's keys, cursor and bounded record of dispatched failures."""

    def __init__(self, prefix, queue, state_prefix, dedup_window):
        self.keys = QueueKeys(prefix, queue)
        self.name = queue
        base = "%sbullmq:%s:%s:" % (state_prefix, prefix, queue)
        self.cursor_key = base + "cursor"
        self.dispatched_key = base + "dispatched"
        self.dedup_window = dedup_window
        self.cursor = None
        self.seen = set()
        self.previous = None  # (event, jobId) of the last entry read, to pair failed + retries-exhausted
        self.loaded = False

    def load(self, client):
        """Read the persisted cursor and record. A cursor held in memory survives a Redis that lost its data
        (restarted empty): the gap check then sees the stream below it and reconciles."""
        stored = client.get(self.cursor_key)
        if stored is not None or self.cursor is None:
            self.cursor = stored
        self.seen = self.seen | set(client.zrange(self.dispatched_key, -self.dedup_window, -1))
        self.loaded = True


class FailureWatcher(object):
    """Reads BullMQ events streams and dispatches one trigger per job failure.

    `dispatch(payload, trace_tag)` is the sensor's; `client` a redis-py client
    with decode_responses=True and a socket timeout above `block_ms`.
    """

    def __init__(self, client, options, dispatch, logger, state_prefix="synthralos:", secrets=(), clock=time.time):
        """`options`: the pack config's `bullmq` section, defaults applied (`bullmq_settings`)."""
        self.client = client  # text replies: the watcher's own keys (cursor, record)
        self.raw = _bytes_client(client)  # bytes: everything BullMQ (or the platform) wrote
        self.queues = [WatchedQueue(options["prefix"], q, state_prefix, options["dedup_window"])
                       for q in options["queues"]]
        self._dispatch = dispatch
        self.log = logger
        self.block_ms = options["block_ms"]
        self.batch_size = options["batch_size"]
        self.reconcile_slack_ms = options["reconcile_slack_ms"]
        self.reconcile_max = options["reconcile_max"]
        self.secrets = list(secrets)
        self.clock = clock
        self.stats = {"read": 0, "dispatched": 0, "duplicates": 0, "reconciled": 0, "gaps": 0, "skipped": 0,
                      "dead_lettered": 0, "dispatch_errors": 0, "last_read_at": None, "last_dispatch_at": None}
        self.dead_letter_stream = options["dead_letter_stream"]
        self.max_dispatch_attempts = max(1, int(options["max_dispatch_attempts"]))
        self.dead_letter_entry_bytes = max(1024, int(options["dead_letter_entry_bytes"]))
        self.dead_letter_maxlen = max(1, int(options["dead_letter_max_bytes"])
                                      // self.dead_letter_entry_bytes)
        self._attempts = {}  # failure fingerprint -> dispatches st2 refused
        self._scan_script = None
        self._needs_check = True

    # -- lifecycle -----------------------------------------------------------

    def start(self):
        """Load every queue's cursor and record, and close any gap. Called again after a reconnect."""
        for queue in self.queues:
            queue.load(self.client)
            self._check_gap(queue)
        self._needs_check = False

    def reset(self):
        """Forget what is only in memory (after a connection error); `start` reloads it."""
        self._needs_check = True
        for queue in self.queues:
            queue.loaded = False

    def poll(self):
        """One pass over every queue; returns the number of events-stream entries read.

        When nothing was new it waits for the next entry (XREAD, BLOCK
        `block_ms`) before returning 0, so a loop of polls sleeps in Redis.
        """
        if self._needs_check:
            self.start()
        total = 0
        for queue in self.queues:
            read = self._scan(queue)
            total += read
            if read >= self.batch_size:
                self._needs_check = True  # a backlog: BullMQ's trimming may overtake the cursor
        if total == 0:
            self.raw.xread({q.keys.events: q.cursor or "0-0" for q in self.queues}, count=1, block=self.block_ms)
        else:
            self.stats["last_read_at"] = self.clock()
        self.stats["read"] += total
        return total

    # -- gaps ------------------------------------------------------------------

    def _stream_info(self, queue):
        import redis

        try:
            info = self.raw.xinfo_stream(queue.keys.events)
        except redis.ResponseError:
            return None  # no such key
        info = {_loose(k): v for k, v in info.items()}
        for key in ("last-generated-id", "max-deleted-entry-id"):
            if info.get(key) is not None:
                info[key] = _loose(info[key])
        first = info.get("first-entry")
        info["first-entry"] = (_loose(first[0]),) if first else None  # only its id is used
        return info

    def _check_gap(self, queue):
        info = self._stream_info(queue)
        if queue.cursor is None:
            # First start: from the end of the stream; nothing before is replayed.
            queue.cursor = _text(info["last-generated-id"]) if info else "0-0"
            self.client.set(queue.cursor_key, queue.cursor)
            self.log.info("%s BullMQ queue %s: first start, reading from %s", _LOG, queue.name, queue.cursor)
            return
        cursor = _id_tuple(queue.cursor)
        gap = None
        if info is None:
            if cursor != (0, 0):
                gap = "the events stream is gone"
        elif _id_tuple(info["last-generated-id"]) < cursor:
            gap = "the events stream restarted below the cursor"
        else:
            # XTRIM (BullMQ's MAXLEN trimming) moves the first entry without touching
            # max-deleted-entry-id, which only XDEL raises.
            first = info.get("first-entry")
            deleted = info.get("max-deleted-entry-id")
            if cursor == (0, 0):
                # Reading from the very start: a gap only if anything was ever removed (Redis 7 counts).
                added = info.get("entries-added")
                if added is not None and int(added) > int(info.get("length") or 0):
                    gap = "entries were trimmed before the sensor read them"
            elif first and _id_tuple(first[0]) > cursor:
                gap = "entries after the cursor were trimmed"
            elif not first and _id_tuple(info["last-generated-id"]) > cursor:
                gap = "the stream was emptied past the cursor"
            elif deleted is not None and _id_tuple(deleted) > cursor:
                gap = "entries after the cursor were deleted"
        if gap is None:
            return
        self.stats["gaps"] += 1
        since_ms = max(0, cursor[0] - self.reconcile_slack_ms)
        self.log.warning("%s BullMQ queue %s: %s (cursor %s); reconciling from %s:failed since %d ms", _LOG,
                         queue.name, gap, queue.cursor, queue.keys.base, since_ms)
        if info is None or _id_tuple(info["last-generated-id"]) < cursor:
            queue.cursor = "0-0"
        self.reconcile(queue, since_ms)

    def reconcile(self, queue, since_ms):
        """Dispatch every job in `:failed` finished since `since_ms` whose failure is not recorded."""
        members = self.raw.zrangebyscore(queue.keys.failed, since_ms, "+inf", start=0, num=self.reconcile_max)
        jobs = self._load_jobs(queue, members)
        fresh = []
        for member in members:
            job_id = _loose(member)
            job, problem = jobs.get(member, (None, None))
            if job is None and problem is None:
                continue  # removed since
            mark = fingerprint(job_id, job, None) if job is not None else "%s|undecodable" % job_id
            if mark in queue.seen:
                continue
            if problem is None:
                try:
                    _strict(member, "jobId")
                except Undecodable as exc:
                    problem = str(exc)
            if problem is not None:
                self._dead_letter(queue, job_id, "reconciled", problem, {"jobId": member})
            else:
                self._send(queue, job_id, job, "reconciled", {}, mark)
                self.stats["reconciled"] += 1
            queue.seen.add(mark)
            fresh.append(mark)
        self._persist(queue, fresh, queue.cursor)

    # -- events ----------------------------------------------------------------

    def _scan(self, queue):
        """Read up to `batch_size` entries after the cursor; dispatch the failures among them.

        A Lua script of this module reads the entries in Redis and returns only
        the failure events with their job hashes' fields, so the sensor parses
        one reply with what it needs instead of every event of the queue.
        """
        script = self._scan_script
        if script is None:
            script = self._scan_script = self.client.register_script(_SCAN_LUA)
        previous = queue.previous or ("", "")
        last, count, prev_event, prev_job, found = script(
            keys=[queue.keys.events],
            args=[queue.cursor or "0-0", self.batch_size, queue.keys.base, previous[0], previous[1]] + list(_JOB_FIELDS),
            client=self.raw,
        )
        if not count:
            return 0
        fresh = []
        for entry_id, event, raw_job_id, raw_reason, values in found:
            entry_id, event, job_id = _loose(entry_id), _loose(event), _loose(raw_job_id)
            if not job_id:
                self.log.warning("%s BullMQ queue %s: %s event %s without jobId ignored", _LOG, queue.name, event,
                                 entry_id)
                continue
            raw_fields = {k: v for k, v in zip(_JOB_FIELDS, values or []) if v is not None}
            try:
                _strict(raw_job_id, "jobId")
                reason = _strict(raw_reason, "the event's failedReason")
                job = parse_job({k: _strict(v, "job field %s" % k) for k, v in raw_fields.items()})
            except Undecodable as exc:
                mark = "%s|undecodable|%s" % (job_id, entry_id)
                if mark not in queue.seen:
                    self._dead_letter(queue, job_id, event, str(exc), dict(raw_fields, jobId=raw_job_id,
                                                                            failedReason=raw_reason))
                    queue.seen.add(mark)
                    fresh.append(mark)
                continue
            mark = fingerprint(job_id, job, entry_id)
            if mark in queue.seen:
                self.stats["duplicates"] += 1
                continue
            self._send(queue, job_id, job, event, {"failedReason": reason} if reason else {}, mark)
            queue.seen.add(mark)
            fresh.append(mark)
        queue.previous = (_loose(prev_event), _loose(prev_job))
        queue.cursor = _loose(last)
        self._persist(queue, fresh, last)
        return int(count)

    def _load_jobs(self, queue, job_ids):
        if not job_ids:
            return {}
        """{member: (job or None, why it cannot be decoded or None)} for job ids read as bytes."""
        pipe = self.raw.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(queue.keys.base.encode() + job_id)
        jobs = {}
        for job_id, raw in zip(job_ids, pipe.execute()):
            wanted = {_loose(k): v for k, v in (raw or {}).items() if _loose(k) in _JOB_FIELDS}
            try:
                jobs[job_id] = (parse_job({k: _strict(v, "job field %s" % k) for k, v in wanted.items()}), None)
            except Undecodable as exc:
                jobs[job_id] = ({}, str(exc))
        return jobs

    def _send(self, queue, job_id, job, event, fields, mark):
        """Dispatch one failure; a failure st2 cannot take is dead-lettered (see the module docstring)."""
        try:
            payload, trace_tag = failure_payload(queue.name, job_id, job, event, fields, self.secrets, self.clock())
        except failure_trigger.MalformedFailure as exc:
            # Recorded as seen by the caller all the same: the same job would be refused again.
            self.stats["skipped"] += 1
            self._dead_letter(queue, job_id, event, str(exc), dict(job or {}, **fields))
            return
        try:
            self._dispatch(payload, trace_tag)
        except Exception as exc:
            self.stats["dispatch_errors"] += 1
            attempts = self._attempts[mark] = self._attempts.get(mark, 0) + 1
            if attempts < self.max_dispatch_attempts:
                raise  # the poll fails; the batch is read again from the cursor
            self._attempts.pop(mark, None)
            self._dead_letter(queue, job_id, event, "dispatch failed %d times, last: %s: %s" % (
                attempts, type(exc).__name__, exc), dict(job or {}, **fields))
            return
        self._attempts.pop(mark, None)
        self.stats["last_dispatch_at"] = self.clock()
        self.stats["dispatched"] += 1
        self.log.info("%s BullMQ job %s:%s failed (%s): dispatched %s for agent %s", _LOG, queue.name, job_id,
                      payload["failure_type"], TRIGGER, payload["agent_id"])

    def _dead_letter(self, queue, job_id, event, reason, fields):
        """Copy one failure the sensor cannot dispatch to the dead-letter stream (scrubbed, capped), and log it."""
        from synthralos_lib.state.redaction import scrub_and_cap
        from synthralos_lib.streams.consumer import dead_letter_record

        self.stats["dead_lettered"] += 1
        record = dead_letter_record({"queue": queue.name, "job_id": job_id, "event": event,
                                     "dead_lettered_at": "%.3f" % self.clock()},
                                    {k: v if isinstance(v, (str, bytes)) else _safe_json(v)
                                     for k, v in fields.items() if v is not None},
                                    reason, self.dead_letter_entry_bytes, self.secrets)
        if self.dead_letter_stream:
            self.raw.xadd(self.dead_letter_stream, record, maxlen=self.dead_letter_maxlen, approximate=False)
        self.log.warning("%s BullMQ job %s:%s failed (%s) but was not dispatched, dead-lettered to %s: %s", _LOG,
                         queue.name, scrub_and_cap(job_id, 80, self.secrets), event,
                         self.dead_letter_stream or "(none: logged only)", record["reason"])

    def _persist(self, queue, marks, cursor):
        now_ms = int(time.time() * 1000)
        pipe = self.client.pipeline(transaction=True)
        if marks:
            # Scores keep insertion order, so the window drops the oldest record first.
            pipe.zadd(queue.dispatched_key, {m: now_ms + i / 1000000.0 for i, m in enumerate(marks)})
            pipe.zremrangebyrank(queue.dispatched_key, 0, -queue.dedup_window - 1)
        pipe.set(queue.cursor_key, cursor)
        pipe.execute()
        if len(queue.seen) > 2 * queue.dedup_window:
            queue.seen = set(self.client.zrange(queue.dispatched_key, -queue.dedup_window, -1))
