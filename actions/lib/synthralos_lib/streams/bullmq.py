"""BullMQ both ways: watch queues for failed jobs, and add jobs as Queue.add does.

Key layout (BullMQ's, `<prefix>` defaults to "bull"): `<prefix>:<queue>:<jobId>`
is the job hash, `:wait` (list), `:prioritized`, `:delayed`, `:failed`
(sorted sets), `:id` (the id counter), `:pc` (priority counter), `:meta`,
`:marker` and `:events` (a stream, trimmed by BullMQ to about
`meta.opts.maxLenEvents`, 10,000 by default). Verified against bullmq 6.7.0
(tests/bullmq/package.json); see docs/bullmq.md.

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

Jobs out (`add_job`). One Lua script of this module does what BullMQ's
addStandardJob / addPrioritizedJob / addDelayedJob scripts do for a job
without parent or deduplication: id counter, jobId idempotency (an existing
job id adds nothing and emits `duplicated`), the job hash, the `added`,
`waiting` / `delayed` events, the wait list / prioritized / delayed set and
the worker marker.
"""

import json
import re
import threading
import time

from synthralos_lib.healing import failure_trigger
from synthralos_lib.healing.detection import SUCCESS_STATUSES, still_running
from synthralos_lib.streams.entries import Undecodable, strict_utf8 as _strict

SOURCE = "bullmq"
TRIGGER = failure_trigger.TRIGGER_REF
FAILURE_EVENTS = ("failed", "retries-exhausted")
PRIORITY_LIMIT = 2097151  # 2^21 - 1, BullMQ's bound
DEFAULT_MAX_EVENTS = 10000  # BullMQ's default opts.maxLenEvents
_LOG = "[Self-Healing]"


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


# ---------------------------------------------------------------------------
# Adding jobs
# ---------------------------------------------------------------------------


def job_options(attempts=None, backoff_type=None, backoff_delay_ms=None, delay_ms=None, job_id=None, priority=None,
                remove_on_complete=None, remove_on_fail=None, lifo=None):
    """The job's `opts` as BullMQ stores them (public option names, `attempts` always set).

    Raises BullMQError for what BullMQ's Job.validateOptions / Queue.add refuse.
    """
    opts = {}
    if delay_ms is not None:
        if _not_int(delay_ms) or delay_ms < 0:
            raise BullMQError("delay must be a whole number of milliseconds >= 0")
        opts["delay"] = delay_ms
    if priority is not None:
        if _not_int(priority) or not 0 <= priority <= PRIORITY_LIMIT:
            raise BullMQError("priority must be a whole number between 0 and %d" % PRIORITY_LIMIT)
        opts["priority"] = priority
    if lifo:
        opts["lifo"] = True
    if remove_on_complete is not None:
        opts["removeOnComplete"] = _keep_option("remove_on_complete", remove_on_complete)
    if remove_on_fail is not None:
        opts["removeOnFail"] = _keep_option("remove_on_fail", remove_on_fail)
    if job_id is not None:
        opts["jobId"] = validate_job_id(job_id)
    if backoff_type is not None or backoff_delay_ms is not None:
        if backoff_type not in ("fixed", "exponential"):
            raise BullMQError("backoff type must be 'fixed' or 'exponential'")
        if backoff_delay_ms is None or _not_int(backoff_delay_ms) or backoff_delay_ms < 0:
            raise BullMQError("backoff needs a delay: a whole number of milliseconds >= 0")
        opts["backoff"] = {"type": backoff_type, "delay": backoff_delay_ms}
    if attempts is not None and (_not_int(attempts) or attempts < 0):
        raise BullMQError("attempts must be a whole number >= 0")
    opts["attempts"] = attempts or 0
    return opts


def validate_job_id(job_id):
    job_id = str(job_id)
    if not job_id or job_id == "0" or job_id.startswith("0:"):
        raise BullMQError("a job id cannot be empty, '0' or start with '0:'")
    if re.match(r"^-?\d+$", job_id) and str(int(job_id)) == job_id:
        raise BullMQError("a custom job id cannot be an integer (BullMQ keeps those for its own ids)")
    if ":" in job_id:
        raise BullMQError("a custom job id cannot contain ':'")
    return job_id


def _keep_option(name, value):
    # true / false, a count of jobs to keep, or {"age": s, "count": n}.
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, dict) and value and set(value) <= {"age", "count", "limit"} and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values()
    ):
        return dict(value)
    raise BullMQError("%s must be true, false, a count >= 0 or {age, count}" % name)


def _not_int(value):
    return isinstance(value, bool) or not isinstance(value, int)


# KEYS: wait, meta, id, delayed, prioritized, pc, active, events, marker
# ARGV: job key prefix, custom id or "", name, timestamp, data, opts, delay, priority, lifo
_ADD_JOB_LUA = """
local counter = redis.call("INCR", KEYS[3])
local maxEvents = redis.call("HGET", KEYS[2], "opts.maxLenEvents")
if not maxEvents then
  maxEvents = %(max_events)d
  redis.call("HSET", KEYS[2], "opts.maxLenEvents", maxEvents)
end
local jobId = ARGV[2]
if jobId == "" then jobId = tostring(counter) end
local jobKey = ARGV[1] .. jobId
if ARGV[2] ~= "" and redis.call("EXISTS", jobKey) == 1 then
  redis.call("XADD", KEYS[8], "MAXLEN", "~", maxEvents, "*", "event", "duplicated", "jobId", jobId)
  return {jobId, "duplicated"}
end
redis.call("HMSET", jobKey, "name", ARGV[3], "data", ARGV[5], "opts", ARGV[6],
           "timestamp", ARGV[4], "delay", ARGV[7], "priority", ARGV[8])
redis.call("XADD", KEYS[8], "*", "event", "added", "jobId", jobId, "name", ARGV[3])
local delay = tonumber(ARGV[7])
if delay > 0 then
  -- delayed set score: due time * 4096 plus a sequence within the millisecond
  local due = tonumber(ARGV[4]) + delay
  local low = due * 4096
  local high = (due + 1) * 4096 - 1
  local score = low
  local last = redis.call("ZREVRANGEBYSCORE", KEYS[4], high, low, "WITHSCORES", "LIMIT", 0, 1)
  if last[2] then
    score = math.min(tonumber(last[2]) + 1, high)
  end
  redis.call("ZADD", KEYS[4], score, jobId)
  redis.call("XADD", KEYS[8], "MAXLEN", "~", maxEvents, "*", "event", "delayed", "jobId", jobId, "delay", due)
  local first = redis.call("ZRANGE", KEYS[4], 0, 0, "WITHSCORES")
  if first[2] then redis.call("ZADD", KEYS[9], tonumber(first[2]) / 4096, "1") end
  return {jobId, "delayed"}
end
local state = "waiting"
local priority = tonumber(ARGV[8])
if priority > 0 then
  local n = redis.call("INCR", KEYS[6])
  redis.call("ZADD", KEYS[5], priority * 4294967296 + n %% 4294967296, jobId)
  state = "prioritized"
elseif ARGV[9] == "1" then
  redis.call("RPUSH", KEYS[1], jobId)
else
  redis.call("LPUSH", KEYS[1], jobId)
end
local meta = redis.call("HMGET", KEYS[2], "paused", "concurrency")
local blocked = meta[1] ~= false
if not blocked and meta[2] then
  blocked = redis.call("LLEN", KEYS[7]) >= tonumber(meta[2])
end
if not blocked then redis.call("ZADD", KEYS[9], 0, "0") end
redis.call("XADD", KEYS[8], "MAXLEN", "~", maxEvents, "*", "event", "waiting", "jobId", jobId)
return {jobId, state}
""" % {"max_events": DEFAULT_MAX_EVENTS}

_scripts = {}
_scripts_lock = threading.Lock()


def add_job(client, queue, name, data=None, opts=None, prefix="bull", now_ms=None):
    """Add one job to `queue`; returns `{"job_id", "created", "state", "key", "opts"}`.

    `opts` is what `job_options` returns. `state` is waiting, prioritized,
    delayed or duplicated (the job id existed: nothing was added).
    """
    keys = QueueKeys(prefix, queue)
    if not isinstance(name, str) or not name:
        raise BullMQError("a job needs a name")
    opts = dict(opts if opts is not None else job_options())
    opts.setdefault("attempts", 0)
    payload = json.dumps({} if data is None else data, separators=(",", ":"), allow_nan=False)
    timestamp = int(now_ms if now_ms is not None else time.time() * 1000)
    script = _script(client)
    job_id, state = script(
        keys=[keys.wait, keys.meta, keys.id, keys.delayed, keys.prioritized, keys.pc, keys.active, keys.events,
              keys.marker],
        args=[keys.base, opts.get("jobId", ""), name, timestamp, payload, json.dumps(opts, separators=(",", ":")),
              int(opts.get("delay") or 0), int(opts.get("priority") or 0), "1" if opts.get("lifo") else "0"],
    )
    job_id, state = _text(job_id), _text(state)
    return {"job_id": job_id, "created": state != "duplicated", "state": state, "key": keys.job(job_id),
            "opts": opts}


def _script(client):
    with _scripts_lock:
        script = _scripts.get(id(client))
        if script is None:
            script = _scripts[id(client)] = client.register_script(_ADD_JOB_LUA)
        return script


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------
# A failed job as an agent failure
# ---------------------------------------------------------------------------


def parse_job(job_hash):
    """Decode a BullMQ job hash (HGETALL) into plain values; None for an empty hash."""
    if not job_hash:
        return None
    job = {}
    for key in ("name", "failedReason"):
        if key in job_hash:
            job[key] = job_hash[key]
    for key in ("data", "opts", "returnvalue", "stacktrace"):
        if key in job_hash:
            job[key] = _json_or_text(job_hash[key])
    for key, field in (("timestamp", "timestamp"), ("processedOn", "processedOn"), ("finishedOn", "finishedOn"),
                       ("delay", "delay"), ("priority", "priority"), ("attemptsMade", "atm"),
                       ("attemptsStarted", "ats")):
        value = job_hash.get(field)
        if value is None and key == "attemptsMade":
            value = job_hash.get("attemptsMade")  # bullmq < 5 spelled it out
        number = _int(value)
        if number is not None:
            job[key] = number
    return job


def agent_result(queue, job_id, job, event_fields):
    """The agent execution result (detection's input) a failed job stands for.

    The job's data may carry the platform's execution result under `result`
    (or `execution`); its fields win. BullMQ supplies what is missing: the
    job failed (a claimed success or a status still in progress becomes
    "failed"), `error` is its
    failedReason, `duration_ms` runs from processedOn to finishedOn.
    """
    job = job or {}
    data = job.get("data") if isinstance(job.get("data"), dict) else {}
    nested = data.get("result") if isinstance(data.get("result"), dict) else data.get("execution")
    result = dict(nested) if isinstance(nested, dict) else {}
    for key in ("timeout_ms", "tool_results", "llm_error", "provider", "model", "max_iterations", "input"):
        if key not in result and key in data:
            result[key] = data[key]
    status = str(result.get("status") or "").strip().lower()
    if not status or status in SUCCESS_STATUSES or still_running(status):
        result["status"] = "failed"
    reason = job.get("failedReason") or event_fields.get("failedReason")
    if not result.get("error") and reason:
        result["error"] = reason
    if result.get("duration_ms") is None and job.get("processedOn") is not None and job.get("finishedOn") is not None:
        result["duration_ms"] = job["finishedOn"] - job["processedOn"]
    result.setdefault("agent_id", _first_str(data, "agent_id", "agentId") or job.get("name"))
    result.setdefault("execution_id", _first_str(data, "execution_id", "executionId") or "%s:%s" % (queue, job_id))
    return result


def failure_payload(queue, job_id, job, event, event_fields, secrets, now):
    """`(payload, trace_tag)` of the `synthralos.agent_failure` trigger for one failed job.

    A mapping onto `failure_trigger.build_failure`, which classifies, scrubs,
    caps and stamps it (`now`: epoch seconds) as for every other source. An
    agent id or execution id from the job that `check_id` refuses falls back
    to "unknown" / "<queue>:<jobId>"; MalformedFailure when even
    "<queue>:<jobId>" is not a usable id.
    """
    job = job or {}
    result = agent_result(queue, job_id, job, event_fields)
    data = job.get("data") if isinstance(job.get("data"), dict) else {}
    source_id = "%s:%s" % (queue, job_id)
    built = failure_trigger.build_failure(
        _usable_id("agent_id", result.get("agent_id"), "unknown"),
        _usable_id("execution_id", result.get("execution_id"), source_id),
        result, SOURCE, source_id, trace_context=_trace_context(data, result),
        raw=_raw(queue, job_id, job, event, event_fields), secrets=secrets, now=now)
    if built is None:  # agent_result makes every failed job a failed execution
        raise failure_trigger.MalformedFailure("the job's result does not read as a failure")
    return built["payload"], built["trace_tag"]


def _usable_id(name, value, fallback):
    try:
        return failure_trigger.check_id(name, value)
    except failure_trigger.MalformedFailure:
        return failure_trigger.check_id(name, fallback)


def _raw(queue, job_id, job, event, event_fields):
    raw = {"queue": queue, "job_id": job_id, "event": event, "job_found": bool(job)}
    for key in ("name", "data", "opts", "failedReason", "attemptsMade", "attemptsStarted", "timestamp",
                "processedOn", "finishedOn"):
        if key in job:
            raw[key] = job[key]
    if not job and event_fields.get("failedReason"):
        raw["failedReason"] = event_fields["failedReason"]
    traces = job.get("stacktrace")
    if isinstance(traces, list) and traces:
        raw["stacktrace"] = traces[-1]  # the last attempt's; build_failure scrubs, then caps the raw record
    return raw


_TRACE_KEYS = (
    ("trace_id", ("trace_id", "traceId")),
    ("traceparent", ("traceparent",)),
    ("langfuse_trace_url", ("langfuse_trace_url", "langfuseTraceUrl")),
    ("workspace_id", ("workspace_id", "workspaceId")),
    ("organization_id", ("organization_id", "organizationId")),
)


def _trace_context(data, result):
    """The trace ids in BullMQ job data (its `trace_context`, then the data, then the result; camelCase too)."""
    sources = [data.get("trace_context"), data, result]
    context = {}
    for name, spellings in _TRACE_KEYS:
        for source in sources:
            value = _first_str(source, *spellings) if isinstance(source, dict) else None
            if value:
                context[name] = value
                break
    return context


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


def _first_str(source, *keys):
    for key in keys:
        value = source.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _json_or_text(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text
    except RecursionError:  # data nested thousands deep: keep it as text (capped in the payload's raw)
        return text


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return None


# ---------------------------------------------------------------------------
# Watching queues
# ---------------------------------------------------------------------------


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
        self.dead_letter_stream = options.get("dead_letter_stream", "")
        self.max_dispatch_attempts = max(1, int(options.get("max_dispatch_attempts", 5)))
        self.dead_letter_entry_bytes = max(1024, int(options.get("dead_letter_entry_bytes", 8192)))
        self.dead_letter_maxlen = max(1, int(options.get("dead_letter_max_bytes", 64 * 1024 * 1024))
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


# ---------------------------------------------------------------------------
# Config and connections
# ---------------------------------------------------------------------------


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
