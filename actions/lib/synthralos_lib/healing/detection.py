"""Failure detection: did an agent execution fail, how, and what says so.

Input is an agent execution as the agent platform reports it (the execution
object of docs/agent_api.md): `status`, `error`, `output`, `duration_ms`,
`timeout_ms`, `timed_out`, `tool_results`, `llm_error`, `max_iterations`,
`provider`, `model`. Every field is optional, so a partial result posted by
a webhook can still be judged.

The checks run in a fixed order and the first that matches decides the
failure type; every check that matches adds evidence, so an operator sees
e.g. that a timeout also left a failed tool behind. The order goes from the
most specific cause to the most generic symptom:

| order | type           | decided by                                                          |
|-------|----------------|---------------------------------------------------------------------|
| 1     | timeout        | status timeout/timed_out, `timed_out` true, duration >= timeout,     |
|       |                | or an error message that says the run timed out                     |
| 2     | llm_error      | an `llm_error` object/string, or an error whose type/code names the |
|       |                | LLM call (llm_error, rate_limit_error, context_length_exceeded, ...) |
| 3     | tool_failure   | a tool result with status failed/error/timeout or an `error`        |
| 4     | unknown_status | a status that is neither an explicit success nor a known failure    |
|       |                | (crashed, killed, oom_killed, running, a number, a list, ...)       |
| 5     | error          | status failed/error/cancelled, or any `error`                       |
| 6     | invalid_output | a run that claims success with empty output, output that carries    |
|       |                | an error marker (Traceback, "Error:", {"error": ...}, ...), or      |
|       |                | `validation_errors` from the platform's output validator            |

Only an explicit success is a success: a status the table does not know is
never "no failure". Detection never raises on a JSON object: NaN/Infinity
numbers are ignored, nesting is followed to a bounded depth, and every text
it returns is scrubbed (the `secrets` given plus credential shapes) and then
capped; evidence, failed tools and the echoed input are bounded too.

Pure: no I/O, no clock.
"""

import json
import re

from synthralos_lib.state.redaction import scrub_and_cap
from synthralos_lib.state.shapes import finite_number

TIMEOUT = "timeout"
ERROR = "error"
INVALID_OUTPUT = "invalid_output"
TOOL_FAILURE = "tool_failure"
LLM_ERROR = "llm_error"
UNKNOWN_STATUS = "unknown_status"
FAILURE_TYPES = (TIMEOUT, ERROR, INVALID_OUTPUT, TOOL_FAILURE, LLM_ERROR, UNKNOWN_STATUS)

# The LLM error classes of llm/errors.py (the retry policy's classes); a platform may
# report one as llm_error.error_class, and the planner uses it.
LLM_ERROR_CLASSES = (
    "transient",
    "rate_limited",
    "overloaded",
    "quota_exhausted",
    "auth_config",
    "context_overflow",
    "content_policy",
    "bad_request",
    "invalid_output",
)

TIMEOUT_STATUSES = frozenset(["timeout", "timed_out", "timedout", "deadline_exceeded"])
FAILED_STATUSES = frozenset(["failed", "failure", "error", "errored", "cancelled", "canceled", "aborted", "abandoned"])
SUCCESS_STATUSES = frozenset(["succeeded", "success", "successful", "completed", "complete", "ok", "done"])
TOOL_FAILED_STATUSES = frozenset(["failed", "failure", "error", "errored", "timeout", "timed_out"])
# A run that has not finished yet: accepted or queued but not started (the platform's and BullMQ's
# words for it), or started and still going. Not judged as a failure (failure_trigger.classify),
# and the agent API client keeps polling it (agent_api.is_terminal).
IN_PROGRESS_STATUSES = frozenset(
    ["accepted", "created", "queued", "pending", "scheduled", "waiting", "delayed",
     "started", "running", "in_progress", "active"]
)

_TIMEOUT_TEXT = re.compile(
    r"timed?[ _-]?out|timeout|deadline exceeded|ETIMEDOUT|ESOCKETTIMEDOUT|took too long|time limit", re.I
)
# Error types/codes that mean the LLM call itself failed (OpenAI and Anthropic spellings).
_LLM_ERROR_TYPES = frozenset(
    [
        "llm_error",
        "llm",
        "provider_error",
        "rate_limit_error",
        "rate_limit_exceeded",
        "insufficient_quota",
        "context_length_exceeded",
        "overloaded_error",
        "content_filter",
        "content_policy_violation",
        "model_not_found",
        "invalid_api_key",
        "authentication_error",
        "api_error",
        "api_connection_error",
    ]
)
_LLM_ERROR_TEXT = re.compile(
    r"\b(openai|anthropic|llm|language model|chat completion|rate limit|insufficient_quota|"
    r"context[_ ]length|maximum context|overloaded)\b",
    re.I,
)
# Markers that turn an apparently successful output into an invalid one.
_OUTPUT_ERROR_TEXT = re.compile(
    r"^\s*(error|exception|fatal|failed|failure)\s*[:!-]|"
    r"Traceback \(most recent call last\)|"
    r"\[(ERROR|FATAL)\]|"
    r"^\s*(undefined|null|none|nan|\[object Object\])\s*$",
    re.I,
)
_OUTPUT_ERROR_KEYS = ("error", "errors", "exception", "traceback")
_EVIDENCE_TEXT_LIMIT = 300
MAX_EVIDENCE = 20
MAX_FAILED_TOOLS = 20
MAX_TOOL_RESULTS_SCANNED = 1000
MAX_INPUT_CHARS = 20000
MAX_NAME_CHARS = 200
_MAX_ERROR_DEPTH = 20


def still_running(status):
    """Whether a reported `status` says the run has not finished (IN_PROGRESS_STATUSES, any case)."""
    return isinstance(status, str) and status.strip().lower() in IN_PROGRESS_STATUSES


def detect_failure(result, secrets=()):
    """Judge one agent execution result.

    Returns `{"failed", "failure_type", "evidence", "summary", "llm_error_class",
    "failed_tools", "provider", "model", "max_iterations", "input", "retry_after_s",
    "validation_errors"}`;
    `failure_type` is None when nothing failed. `evidence` is a list of
    `{"check", "field", "detail"}` in check order (at most MAX_EVIDENCE). Texts
    are scrubbed of `secrets` before they are capped.
    """
    if not isinstance(result, dict):
        raise ValueError("an agent execution result must be a JSON object, got %s" % type(result).__name__)
    evidence = []
    found = []
    for failure_type, check in _CHECKS:
        hits = check(result)
        if hits:
            found.append(failure_type)
            evidence.extend(
                {"check": failure_type, "field": field, "detail": _short(detail, secrets=secrets)} for field, detail in hits
            )
    failure_type = found[0] if found else None
    judged = {
        "failed": failure_type is not None,
        "failure_type": failure_type,
        "evidence": evidence[:MAX_EVIDENCE],
        "summary": _summary(failure_type, evidence),
        "llm_error_class": llm_error_class(result) if failure_type == LLM_ERROR else None,
        "failed_tools": failed_tools(result, secrets),
    }
    judged.update(execution_facts(result, secrets))
    return judged


def execution_facts(result, secrets=()):
    """What a repair plan needs from the run besides the verdict: `provider`, `model`,
    `max_iterations`, `input` (scrubbed, capped) and `retry_after_s`. No judging."""
    text_input = result.get("input")
    return {
        "provider": _name_or_none(result.get("provider"), secrets),
        "model": _name_or_none(result.get("model"), secrets),
        "max_iterations": _int_or_none(result.get("max_iterations")),
        "input": scrub_and_cap(text_input, MAX_INPUT_CHARS, secrets) if isinstance(text_input, str) else None,
        "retry_after_s": _retry_after(result),
        "validation_errors": validation_errors(result, secrets),
    }


def _check_timeout(result):
    hits = []
    status = _status(result)
    if status in TIMEOUT_STATUSES:
        hits.append(("status", "status is %r" % status))
    if result.get("timed_out") is True:
        hits.append(("timed_out", "timed_out is true"))
    duration, limit = _number(result.get("duration_ms")), _number(result.get("timeout_ms"))
    if duration is not None and limit is not None and limit > 0 and duration >= limit:
        hits.append(("duration_ms", "ran %s ms, limit %s ms" % (_ms(duration), _ms(limit))))
    message = _error_text(result.get("error"))
    if message and _TIMEOUT_TEXT.search(message):
        hits.append(("error", message))
    return hits


def _check_llm_error(result):
    hits = []
    llm_error = result.get("llm_error")
    if llm_error:
        hits.append(("llm_error", _error_text(llm_error) or "llm_error is set"))
    error = result.get("error")
    kind = _error_kind(error)
    if kind in _LLM_ERROR_TYPES:
        hits.append(("error", "error type %r: %s" % (kind, _error_text(error))))
    elif error and not hits and _LLM_ERROR_TEXT.search(_error_text(error)):
        hits.append(("error", _error_text(error)))
    return hits


def _check_tool_failure(result):
    hits = []
    for tool in _failed_tools(result):
        hits.append(("tool_results", "tool %r %s" % (tool["tool"], tool["error"] or tool["status"])))
    return hits


def _check_unknown_status(result):
    value = result.get("status")
    if value is None or (isinstance(value, str) and not value.strip()):
        return []  # no status reported: the other checks judge the run
    status = _status(result)
    if isinstance(value, str) and status in SUCCESS_STATUSES | FAILED_STATUSES | TIMEOUT_STATUSES:
        return []
    if isinstance(value, str):
        return [("status", "status %r is not an explicit success" % _short(value.strip(), 80))]
    return [("status", "status is a %s (%s), not an explicit success" % (_json_type(value), _short(_safe_text(value), 80)))]


def _check_error(result):
    hits = []
    status = _status(result)
    if status in FAILED_STATUSES:
        hits.append(("status", "status is %r" % status))
    if result.get("error"):
        hits.append(("error", _error_text(result.get("error")) or "error is set"))
    return hits


def _check_invalid_output(result):
    status = _status(result)
    if status and status not in SUCCESS_STATUSES:
        return []  # only a run that claims success can have invalid output
    if "output" not in result and not status:
        return []  # nothing to judge
    output = result.get("output")
    if _is_empty(output):
        return [("output", "output is empty")]
    marker = _error_marker(output)
    if marker:
        return [("output", marker)]
    return [("validation_errors", "output failed validation: %s" % text)
            for text in _validation_texts(result)[:3]]


MAX_VALIDATION_ERRORS = 10


def validation_errors(result, secrets=()):
    """The platform's output-validator errors (`validation_errors`: strings or {path, message}), each
    scrubbed of `secrets`, then capped; at most MAX_VALIDATION_ERRORS."""
    return [_short(text, secrets=secrets) for text in _validation_texts(result)[:MAX_VALIDATION_ERRORS]]


def _validation_texts(result):
    errors = result.get("validation_errors")
    if not isinstance(errors, list):
        return []
    texts = []
    for item in errors[:MAX_VALIDATION_ERRORS]:
        if isinstance(item, dict):
            path, message = item.get("path") or item.get("loc"), _error_text(item.get("message") or item.get("msg"))
            if isinstance(path, list):
                path = ".".join(str(p) for p in path[:20])
            text = "%s: %s" % (path, message) if isinstance(path, str) and path and message else message
        else:
            text = item if isinstance(item, str) else None
        if text:
            texts.append(text)
    return texts


_CHECKS = (
    (TIMEOUT, _check_timeout),
    (LLM_ERROR, _check_llm_error),
    (TOOL_FAILURE, _check_tool_failure),
    (UNKNOWN_STATUS, _check_unknown_status),
    (ERROR, _check_error),
    (INVALID_OUTPUT, _check_invalid_output),
)


def failed_tools(result, secrets=()):
    """`[{"tool", "status", "error", "tool_call_id"}]` for every failed tool result (at most MAX_FAILED_TOOLS);
    errors scrubbed of `secrets`, then capped."""
    return [dict(tool, error=_short(tool["error"], secrets=secrets) if tool["error"] else None)
            for tool in _failed_tools(result, secrets)]


def _failed_tools(result, secrets=()):
    # Errors uncut here: they are scrubbed before any cut (detect_failure, failed_tools).
    failed = []
    tools = result.get("tool_results")
    if not isinstance(tools, list):
        return failed
    for item in tools[:MAX_TOOL_RESULTS_SCANNED]:
        if not isinstance(item, dict):
            continue
        status = item.get("status")
        status = scrub_and_cap(status.strip(), MAX_NAME_CHARS).lower() if isinstance(status, str) else ""
        if status in TOOL_FAILED_STATUSES or item.get("error"):
            failed.append(
                {
                    "tool": _name_or_none(item.get("tool") or item.get("name"), secrets) or "unknown",
                    "status": status or "failed",
                    "error": _error_text(item.get("error")) or None,
                    "tool_call_id": _name_or_none(item.get("tool_call_id") or item.get("id"), secrets),
                }
            )
            if len(failed) >= MAX_FAILED_TOOLS:
                break
    return failed


def llm_error_class(result):
    """The design's LLM error class of the failure, or None when nothing tells.

    The platform's own `error_class` wins; otherwise an `llm_error` that carries
    the provider's HTTP `status` (and type/code/message) is classified by
    llm/errors.py, the one classification table the retry and reroute parts use too.
    """
    for source in (result.get("llm_error"), result.get("error")):
        if isinstance(source, dict):
            value = str(source.get("error_class") or source.get("class") or "").strip().lower()
            if value in LLM_ERROR_CLASSES:
                return value
    llm_error = result.get("llm_error")
    status = llm_error.get("status") if isinstance(llm_error, dict) else None
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        from synthralos_lib.llm import errors as llm_errors

        body = {"error": {key: _scalar_text(llm_error.get(key)) for key in ("type", "code", "message")}}
        return llm_errors.classify_http(llm_error["status"], body)
    return None


def _retry_after(result):
    for source in (result.get("llm_error"), result.get("error")):
        if isinstance(source, dict):
            value = _number(source.get("retry_after_s"))
            if value is not None and value >= 0:
                return value
    return None


def _error_marker(output):
    if isinstance(output, dict):
        for key in _OUTPUT_ERROR_KEYS:
            if output.get(key):
                return "output carries %r: %s" % (key, _error_text(output.get(key)))
        return None
    if isinstance(output, str) and _OUTPUT_ERROR_TEXT.search(output):
        return "output carries an error marker: %s" % output.strip()
    return None


def _is_empty(output):
    if output is None:
        return True
    if isinstance(output, str):
        return not output.strip()
    if isinstance(output, (list, dict)):
        return not output
    return False


def _status(result):
    """The status as a lower-case word; "" when it is missing or not a string."""
    value = result.get("status")
    return value.strip().lower() if isinstance(value, str) else ""


def _error_kind(error):
    if isinstance(error, dict):
        for key in ("type", "code", "kind"):
            value = error.get(key)
            if isinstance(value, str) and value:
                return value.strip().lower()
    return None


def _error_text(error):
    """The human text of an error (string or nested object), followed to a bounded depth."""
    for _ in range(_MAX_ERROR_DEPTH):
        if error is None or error is False:
            return ""
        if not isinstance(error, dict):
            return _safe_text(error)
        for key in ("message", "error", "detail", "type", "code"):
            value = error.get(key)
            if value:
                error = value
                break
        else:
            return _safe_text(error)
    return _safe_text(error)


def _safe_text(value):
    """Text for any JSON value without recursing without bound (deep objects, huge numbers)."""
    if isinstance(value, str):
        return value[: MAX_INPUT_CHARS * 2]
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10 ** 30 else "<integer of %d bits>" % value.bit_length()
    if isinstance(value, float):
        return repr(value)
    try:
        return json.dumps(value, default=lambda item: "<%s>" % type(item).__name__)[: MAX_INPUT_CHARS * 2]
    except (RecursionError, ValueError, TypeError):
        return "<%s nested too deep>" % _json_type(value)


def _scalar_text(value):
    return value if isinstance(value, str) else None


def _json_type(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {dict: "object", list: "list"}.get(type(value), type(value).__name__)


def _ms(value):
    return "%d" % value if abs(value) < 10 ** 15 else "%.3g" % value


def _summary(failure_type, evidence):
    if failure_type is None:
        return "no failure detected"
    first = next(item for item in evidence if item["check"] == failure_type)
    return "%s: %s" % (failure_type, first["detail"])


def _short(text, limit=_EVIDENCE_TEXT_LIMIT, secrets=()):
    return scrub_and_cap("" if text is None else _safe_text(text), limit, secrets)


def _number(value):
    return finite_number(value)


def _int_or_none(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2 ** 31 else None


def _name_or_none(value, secrets=()):
    return scrub_and_cap(value, MAX_NAME_CHARS, secrets) if isinstance(value, str) and value else None
