"""The `synthralos.agent_failure` trigger: from an agent execution record to its payload.

Every way a failure enters st2 (the Redis Stream sensor, the BullMQ sensor, the
webhook) hands this module the same record: `agent_id`, `execution_id`, the
execution `result` (the dict `healing.detection.detect_failure` reads), an
optional `trace_context` and the source's own record (`raw`). `build_failure`
validates it, decides whether it is a failure, and returns the payload that
triggers/agent_failure.yaml declares plus the trace tag, or None when nothing
failed. A record it cannot use raises `MalformedFailure` with the reason.

Which records are failures:

| the result                                                   | decision           |
|--------------------------------------------------------------|--------------------|
| status says it is still going (queued, running, ...)         | not a failure      |
| detect_failure finds timeout/llm_error/tool_failure/error/invalid_output | that type |
| status set but neither a success nor one of the above        | `unknown_status`   |
| no status and nothing detected                               | not a failure      |

Redaction comes first, then the caps: error 2,000 characters, output excerpt
1,000, raw record 8 KB of JSON (long strings in it are cut first; a record
still too big becomes `{"truncated": true, "excerpt": ...}`). Nesting deeper
than `trigger_payload.MAX_DEPTH` is cut and integers wider than 64 bits become
text (a `duration_ms` out of that range is null); the finished payload must
pass st2's own trigger payload validation and serialise as st2 stores it
(`trigger_payload.refusal`), else MalformedFailure says why: a sensor
dead-letters it instead of dispatching something st2 would drop after the ack.
"""

import json
import time

from synthralos_lib.healing import detection, trigger_payload
from synthralos_lib.state import validation
from synthralos_lib.state.redaction import scrub_if_needed

TRIGGER_REF = "synthralos.agent_failure"
SOURCES = ("redis_stream", "bullmq", "webhook")
UNKNOWN_STATUS = detection.UNKNOWN_STATUS
FAILURE_TYPES = detection.FAILURE_TYPES
TRACE_KEYS = ("trace_id", "traceparent", "langfuse_trace_url", "workspace_id", "organization_id")

ERROR_LIMIT = 2000
OUTPUT_LIMIT = 1000
RAW_LIMIT = 8192
EVIDENCE_ITEMS = 10
_RAW_STRING_LIMIT = 1000


class MalformedFailure(ValueError):
    """The record cannot be turned into an agent_failure trigger; the message says why."""


def check_id(name, value):
    """`validation.check_id` (a printable id of at most 256 characters), raising MalformedFailure."""
    try:
        return validation.check_id(value, name)
    except ValueError as exc:
        raise MalformedFailure(str(exc))


def classify(result):
    """`(failure_type or None, detection)` for one execution result (see the module table)."""
    if detection.still_running(result.get("status")):
        return None, None
    found = detection.detect_failure(result)
    # Detection reports any status that is not an explicit success as unknown_status.
    return (found["failure_type"], found) if found["failed"] else (None, found)


def build_failure(agent_id, execution_id, result, source, source_id, trace_context=None, raw=None,
                  secrets=(), now=None):
    """`{"payload", "trace_tag"}` for a failed execution, None when it did not fail.

    `raw` defaults to `result`; `now` (epoch seconds) to the current time.
    Raises MalformedFailure when ids, result or trace_context are unusable.
    """
    if source not in SOURCES:
        raise ValueError("unknown agent_failure source %r" % (source,))
    agent_id = check_id("agent_id", agent_id)
    execution_id = check_id("execution_id", execution_id)
    if not isinstance(result, dict):
        raise MalformedFailure("result must be a JSON object, got %s" % _kind(result))
    if trace_context is None:
        trace_context = {}
    if not isinstance(trace_context, dict):
        raise MalformedFailure("trace_context must be a JSON object, got %s" % _kind(trace_context))
    # Bound, then scrub once: everything below (evidence, error, output, raw) derives from that.
    scrubbed = scrub_if_needed(trigger_payload.bounded({"result": result, "trace": trace_context, "raw": raw}),
                               secrets)
    result = scrubbed["result"]
    failure_type, found = classify(result)
    if failure_type is None:
        return None
    trace = {key: value for key, value in scrubbed["trace"].items()
             if key in TRACE_KEYS and isinstance(value, str) and value}
    payload = {
        "agent_id": agent_id,
        "execution_id": execution_id,
        "failure_type": failure_type,
        "error": _capped(_text(result.get("error") or result.get("llm_error")), ERROR_LIMIT),
        "output_excerpt": _capped(_text(result.get("output")), OUTPUT_LIMIT),
        "duration_ms": _number(result.get("duration_ms")),
        "evidence": _evidence(found, failure_type, result),
        "trace_context": trace,
        "source": source,
        "source_id": str(source_id),
        "raw": cap_raw(result if raw is None else scrubbed["raw"]),
        "detected_at": iso_utc(time.time() if now is None else now),
    }
    # Everything above derives from the bounded record; the check catches what would still not store.
    reason = trigger_payload.refusal(payload)
    if reason is not None:
        raise MalformedFailure(reason)
    trace_tag = trace.get("trace_id") or "synthralos:%s:%s" % (agent_id, execution_id)
    return {"payload": payload, "trace_tag": trace_tag}


def cap_raw(raw, limit=RAW_LIMIT):
    """`raw` when its JSON fits in `limit` bytes; else with long strings cut; else the excerpt form."""
    text = _dumps(raw)  # ensure_ascii: characters == bytes
    if len(text) <= limit:
        return raw if isinstance(raw, dict) else {"value": raw}
    trimmed = _trim_strings(raw, _RAW_STRING_LIMIT)
    if isinstance(trimmed, dict) and len(_dumps(trimmed)) <= limit:
        return trimmed
    # {"truncated": true, "excerpt": ""} is 36 bytes; JSON escaping may double a character.
    excerpt = text[: (limit - 64) // 2]
    while len(_dumps({"truncated": True, "excerpt": excerpt})) > limit:
        excerpt = excerpt[: int(len(excerpt) * 0.9)]
    return {"truncated": True, "excerpt": excerpt}


def iso_utc(epoch):
    """ISO 8601 UTC with milliseconds, e.g. 2026-12-01T11:00:00.250Z."""
    whole = int(epoch)
    millis = int(round((epoch - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%03dZ" % millis


def _evidence(found, failure_type, result):
    found = found or {}
    evidence = {
        "summary": found.get("summary") or "%s: status is %r" % (failure_type, result.get("status")),
        "checks": list(found.get("evidence") or [])[:EVIDENCE_ITEMS],
        "failed_tools": list(found.get("failed_tools") or [])[:EVIDENCE_ITEMS],
    }
    if failure_type == UNKNOWN_STATUS:
        evidence["checks"] = [{"check": UNKNOWN_STATUS, "field": "status",
                               "detail": _clip("status is %r" % (result.get("status"),), 300)}]
    if found.get("llm_error_class"):
        evidence["llm_error_class"] = found["llm_error_class"]
    return evidence


def _capped(text, limit):
    return None if text is None else _clip(text, limit)


def _clip(text, limit):
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value):
    if value is None or value is False or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("message"), str) and value.get("message"):
        return value["message"]
    return _dumps(value)


def _trim_strings(value, limit):
    if isinstance(value, str):
        return _clip(value, limit)
    if isinstance(value, dict):
        return {k: _trim_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_trim_strings(v, limit) for v in value]
    return value


def _dumps(value):
    return json.dumps(value, default=str, separators=(",", ":"))


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    # Out of int64's range (as an int MongoDB cannot store it; raw keeps the digits as text) or
    # infinite, it is no duration: null, whether it came as an int or, through st2's orjson, a float.
    if not trigger_payload.INT64_MIN <= value <= trigger_payload.INT64_MAX:
        return None
    return value


def _kind(value):
    return "null" if value is None else type(value).__name__


def accept_post(body, source_id, secrets=(), now=None):
    """A failure POSTed to the webhook (`{agent_id, execution_id, result, trace_context?}`).

    `{"failed": False, "summary"}` when the execution did not fail, else
    `{"failed": True, "payload", "trace_tag", "summary"}`; MalformedFailure
    (naming the field) when the body breaks the contract.
    """
    if not isinstance(body, dict):
        raise MalformedFailure("the body must be a JSON object, got %s" % _kind(body))
    for name in ("agent_id", "execution_id", "result"):
        if name not in body:
            raise MalformedFailure("the body has no %s" % name)
    built = build_failure(body["agent_id"], body["execution_id"], body["result"], "webhook", source_id,
                          trace_context=body.get("trace_context"), secrets=secrets, now=now)
    if built is None:
        return {"failed": False, "summary": "no failure: status %r" % (body["result"].get("status"),)}
    built.update(failed=True, summary=built["payload"]["evidence"]["summary"])
    return built
