"""Jobs out (`add_job`): a job added as BullMQ's Queue.add adds it.

One Lua script of this module does what BullMQ's
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

from synthralos_lib.streams.bullmq.keys import BullMQError, QueueKeys, _text

PRIORITY_LIMIT = 2097151  # 2^21 - 1, BullMQ's bound
DEFAULT_MAX_EVENTS = 10000  # BullMQ's default opts.maxLenEvents


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
