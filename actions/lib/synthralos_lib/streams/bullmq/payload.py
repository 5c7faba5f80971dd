"""A failed job as an agent failure: the job hash decoded, and the `synthralos.agent_failure` payload."""

import json

from synthralos_lib.healing import failure_trigger
from synthralos_lib.healing.detection import SUCCESS_STATUSES, still_running

SOURCE = "bullmq"


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
