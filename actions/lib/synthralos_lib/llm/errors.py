"""Classification of LLM call outcomes (the design's classification table).

One place decides which class a failed call belongs to, from what the call
left behind: the HTTP status, the provider's error body (OpenAI's
`{"error": {"message", "type", "param", "code"}}`, Anthropic's
`{"type": "error", "error": {"type", "message"}}`) and, when no response came
back, the network exception. The retry policy (`llm_policy`) decides what to do
with each class; this module only names it.

| class            | signals                                                       |
|------------------|---------------------------------------------------------------|
| transient        | connect/read timeout, reset, 408, 409, 500, 502, 503, 504     |
| rate_limited     | 429 rate limit                                                |
| overloaded       | 529, provider "overloaded" (Anthropic overloaded_error, 503)  |
| quota_exhausted  | 429/402 insufficient_quota, credit exhausted, spend limit     |
| auth_config      | 401, 403, 404 model not found, unusable base URL              |
| context_overflow | 400 context_length_exceeded, prompt too long, 413             |
| content_policy   | 400 content filter / refusal, 200 finish_reason filter        |
| bad_request      | other 400 / 422 (and other 4xx)                               |
| invalid_output   | 2xx whose body is unparsable, empty or not the API's shape    |

Azure OpenAI speaks OpenAI's body shape with its own codes: `DeploymentNotFound`
(404) is auth_config, `content_filter` / `ResponsibleAIPolicyViolation` (also
in `innererror.code`) is content_policy, and its 429s carry the wait in
`retry-after-ms` / `x-ms-retry-after-ms` / `Retry-After` or only in prose
("Please retry after 6 seconds").

Besides the class, a failed response says how long to wait and whether to
retry at all (`retry_signals`): `x-should-retry: true|false` is the server's
own verdict (the official OpenAI and Anthropic SDKs obey it over the status
code, and so does `llm_policy.decide`); the wait comes from `retry-after-ms`,
`x-ms-retry-after-ms`, `Retry-After` (seconds or HTTP-date), else from the
message ("Please try again in 5.289s", "retry after 20 seconds",
"try again in 1m30s"). Whether a long wait means a quota is the policy's call
(`retry.quota_after_s`), not this module's.
"""

import datetime
import email.utils
import re
import time

from synthralos_lib.state.redaction import scrub_and_cap

TRANSIENT = "transient"
RATE_LIMITED = "rate_limited"
OVERLOADED = "overloaded"
QUOTA_EXHAUSTED = "quota_exhausted"
AUTH_CONFIG = "auth_config"
CONTEXT_OVERFLOW = "context_overflow"
CONTENT_POLICY = "content_policy"
BAD_REQUEST = "bad_request"
INVALID_OUTPUT = "invalid_output"

ERROR_CLASSES = (
    TRANSIENT,
    RATE_LIMITED,
    OVERLOADED,
    QUOTA_EXHAUSTED,
    AUTH_CONFIG,
    CONTEXT_OVERFLOW,
    CONTENT_POLICY,
    BAD_REQUEST,
    INVALID_OUTPUT,
)

TRANSIENT_STATUSES = frozenset([408, 409, 500, 502, 503, 504])

# Provider error codes/types (lower-case) that name a class outright.
_QUOTA_CODES = frozenset(["insufficient_quota", "billing_hard_limit_reached", "billing_error", "billing_not_active"])
_CONTEXT_CODES = frozenset(["context_length_exceeded", "string_above_max_length", "request_too_large"])
_CONTENT_CODES = frozenset(["content_filter", "content_policy_violation", "content_policy", "safety",
                            "responsibleaipolicyviolation"])
_AUTH_CODES = frozenset(
    ["invalid_api_key", "authentication_error", "permission_error", "not_found_error", "model_not_found",
     "deploymentnotfound", "deployment_not_found"]
)
_OVERLOADED_CODES = frozenset(["overloaded_error", "overloaded"])
_RATE_CODES = frozenset(["rate_limit_error", "rate_limit_exceeded"])

# Message patterns, for providers (and OpenAI-compatible proxies) that put the
# reason only in prose.
_QUOTA_TEXT = re.compile(
    r"insufficient[_ ]quota|exceeded your current quota|credit balance|out of credits|"
    r"spend(ing)? limit|billing|usage limit|quota (has been )?exhausted",
    re.I,
)
_CONTEXT_TEXT = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many tokens|"
    r"exceed(s|ed)? (the )?context limit|input is too long|reduce the length",
    re.I,
)
_CONTENT_TEXT = re.compile(
    r"content[_ ]?(management )?(policy|filter)|safety system|flagged|violat(es|ed|ing) (our|the) "
    r"(usage )?polic|refus",
    re.I,
)
_OVERLOADED_TEXT = re.compile(r"overloaded|over capacity|at capacity", re.I)


def provider_error(body, secrets=()):
    """(type, code, message) from an OpenAI, Azure or Anthropic error body; missing parts are ''.

    Anything that is not one of those shapes (HTML from a proxy, a bare
    string, None) gives ('', '', <its text, scrubbed of `secrets` and
    credential shapes, then shortened>). Azure's `innererror.code` (e.g.
    ResponsibleAIPolicyViolation) stands in for a missing `type`.
    """
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            inner = err.get("innererror")
            inner_code = inner.get("code") if isinstance(inner, dict) else None
            return (
                _text(err.get("type") or inner_code),
                _text(err.get("code")),
                _text(err.get("message")),
            )
        if isinstance(err, str):  # some OpenAI-compatible servers: {"error": "..."}
            return "", "", err
        if isinstance(body.get("message"), str):
            return _text(body.get("type")), _text(body.get("code")), body["message"]
        return "", "", ""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        # Scrub before the cut: a key cut in half at the limit is no longer recognisable.
        return "", "", scrub_and_cap(body.strip(), 500, secrets)
    return "", "", ""


def _text(value):
    return "" if value is None else str(value)


def classify_http(status, body=None):
    """The class of a non-2xx HTTP response: `status` (int) and its parsed JSON body (or raw text)."""
    err_type, code, message = provider_error(body)
    names = {err_type.lower(), code.lower()}
    if status == 402 or names & _QUOTA_CODES:
        return QUOTA_EXHAUSTED
    # A rate limit that names itself stays one, whatever its prose mentions (Groq's 429 links to
    # ".../settings/billing"); a spend cap sent as a rate limit shows by its wait (llm_policy).
    if names & _RATE_CODES:
        return RATE_LIMITED
    if status in (400, 403, 429) and _QUOTA_TEXT.search(message):
        return QUOTA_EXHAUSTED
    if status == 429:
        return RATE_LIMITED
    if status == 529 or names & _OVERLOADED_CODES or (status == 503 and _OVERLOADED_TEXT.search(message)):
        return OVERLOADED
    if status in (401, 403, 404) or names & _AUTH_CODES:
        return AUTH_CONFIG
    if status == 413 or names & _CONTEXT_CODES or (status in (400, 422) and _CONTEXT_TEXT.search(message)):
        return CONTEXT_OVERFLOW
    if names & _CONTENT_CODES or (status in (400, 422) and _CONTENT_TEXT.search(message)):
        return CONTENT_POLICY
    if status in TRANSIENT_STATUSES or status >= 500:
        return TRANSIENT
    return BAD_REQUEST


def classify_exception(exc):
    """The class of a call that got no HTTP response (a `requests` or socket exception)."""
    import requests

    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader)):
        return AUTH_CONFIG  # the target's base_url or key is malformed: retrying cannot help
    if isinstance(exc, requests.exceptions.SSLError):
        return TRANSIENT if "timed out" in str(exc) else AUTH_CONFIG
    # Timeouts, refused/reset/dropped connections, truncated bodies.
    return TRANSIENT


def retry_signals(headers, message="", now=None):
    """(retry_after_s, should_retry) a failed response carries.

    `retry_after_s`: the header wait (`parse_retry_after`), else a wait the
    message states (`wait_in_message`), else None; at most MAX_WAIT_S. `should_retry`: True or
    False when the response has `x-should-retry: true|false`, else None.
    """
    wait = parse_retry_after(headers, now)
    if wait is None:
        wait = wait_in_message(message)
    if wait is not None:
        wait = min(wait, MAX_WAIT_S)  # "1e20" ms would overflow a store's TTL; a year already means "a quota"
    return wait, should_retry_header(headers)


MAX_WAIT_S = 366 * 86400.0


def should_retry_header(headers):
    """True / False for `x-should-retry: true|false` (the server's own verdict), None otherwise."""
    value = _lowered(headers).get("x-should-retry")
    value = str(value).strip().lower() if value is not None else None
    return {"true": True, "false": False}.get(value)


# "Please try again in 5.289s" (OpenAI), "try again in 1m30s" / "1m49.44s" (Groq), "in 20ms",
# "Please retry after 6 seconds" (Azure), "Please retry in 37.8s" (Gemini), "retry after 2 minutes".
_UNIT = r"(?:milliseconds?|ms|seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d)(?![a-z])"
_DURATION = r"(?:\d+(?:\.\d+)?\s*%s\s*)+" % _UNIT
_WAIT_TEXT = re.compile(r"(?i)\b(?:try again|retry)\s+(?:in|after)\s+(%s)" % _DURATION)
_PART = re.compile(r"(?i)(\d+(?:\.\d+)?)\s*(%s)" % _UNIT)


def _unit_seconds(unit):
    unit = unit.lower()
    if unit == "ms" or unit.startswith("milli"):
        return 0.001
    return {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[unit[0]]


def wait_in_message(message):
    """Seconds a provider's prose asks us to wait ("Please try again in 1m30s" -> 90.0), or None."""
    if not isinstance(message, str) or not message:
        return None
    found = _WAIT_TEXT.search(message[:2000])  # only searched, never returned: the wait is said early
    if found is None:
        return None
    return round(sum(float(number) * _unit_seconds(unit) for number, unit in _PART.findall(found.group(1))), 3)


def _lowered(headers):
    if not headers:
        return {}
    return {str(k).lower(): v for k, v in headers.items()}


def parse_retry_after(headers, now=None):
    """Seconds the provider asks us to wait, or None.

    `retry-after-ms` (OpenAI, Anthropic, Azure; milliseconds) wins, then
    `x-ms-retry-after-ms` (Azure), then `Retry-After`, which is either
    delta-seconds or an HTTP-date (RFC 9110 10.2.3). Negative or past values
    give 0.0; garbage gives None. `headers` is any case-insensitive or plain
    mapping.
    """
    lowered = _lowered(headers)
    if not lowered:
        return None
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        ms = _number(lowered.get(name))
        if ms is not None:
            return max(0.0, ms / 1000.0)
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    seconds = _number(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = email.utils.parsedate_to_datetime(str(raw).strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP-dates are always UTC
        when = when.replace(tzinfo=datetime.timezone.utc)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _number(value):
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return number
