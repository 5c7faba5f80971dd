"""HTTP client for the agent platform API the repairs act on (docs/agent_api.md).

Three calls, all JSON, all with `Authorization: Bearer <agent_api.api_key>`:

* `get_execution(agent_id, execution_id)`  GET  /agents/{agent}/executions/{id}
* `reexecute(agent_id, execution_id, input=None, overrides=None, reason=None, repair_context=None)`
                                            POST /agents/{agent}/executions
  (`repair_context`: what went wrong, `plans.repair_context`, sent as is)
* `retry_tool(agent_id, execution_id, tool, tool_call_id=None, reason=None)`
                                            POST /agents/{agent}/executions/{id}/tool-retries

A call never raises for HTTP or network trouble; it returns an `ApiResult`
whose `error_class` says what went wrong:

| error_class        | cause                                                    |
|--------------------|----------------------------------------------------------|
| (None)             | 2xx with a JSON object body                              |
| auth               | 401, 403                                                 |
| not_found          | 404 (unknown agent or execution)                         |
| conflict           | 409 (e.g. the agent is already running a repair)         |
| rejected           | 400, 422 and other 4xx (the request itself is wrong)     |
| rate_limited       | 429 (`retry_after_s` from Retry-After)                   |
| server_error       | 5xx                                                      |
| timeout            | no response within `agent_api.timeout_s`                 |
| unreachable        | connection refused, DNS, TLS, reset                      |
| malformed_response | 2xx whose body is not a JSON object, is larger than      |
|                    | MAX_BODY_BYTES, or (for a re-run) carries no usable id   |

The API key is sent only in the Authorization header and scrubbed from any
text the client returns (before any text is cut to length). Bodies are kept
as bounded copies (`state.shapes.bounded`), so a huge or deeply nested answer
cannot blow up an st2 result.
"""

import logging
import time
from urllib.parse import quote

from synthralos_lib.healing.detection import still_running
from synthralos_lib.state import validation
from synthralos_lib.state.config import with_defaults
from synthralos_lib.state.redaction import scrub, scrub_and_cap
from synthralos_lib.state.shapes import bounded

LOG = logging.getLogger(__name__)

AUTH = "auth"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
REJECTED = "rejected"
RATE_LIMITED = "rate_limited"
SERVER_ERROR = "server_error"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
MALFORMED_RESPONSE = "malformed_response"

_MESSAGE_LIMIT = 300
MAX_BODY_BYTES = 1024 * 1024
_BODY_STRING_LIMIT = 10000
_USER_AGENT = "synthralos-stackstorm-pack"


class ApiResult(dict):
    """`{"ok", "status", "error_class", "error_message", "body", "retry_after_s", "latency_s", "method", "path"}`."""

    @property
    def ok(self):
        return self["ok"]

    @property
    def body(self):
        return self["body"]


class AgentApiClient(object):
    """One client per action execution; `section` is the `agent_api` config section."""

    def __init__(self, section, session=None, poll_s=2.0, clock=time.time, sleep=time.sleep):
        section = with_defaults("agent_api", section)
        self.base_url = (section["base_url"] or "").rstrip("/")
        self.timeout_s = float(section["timeout_s"])
        self.verify_tls = section["verify_tls"]
        self.poll_s = poll_s
        self._api_key = section.get("api_key") or ""
        self._session_given = session
        self._clock = clock
        self._sleep = sleep

    @property
    def _session(self):
        # Created on first use: importing requests costs every execution that loads this module.
        if self._session_given is None:
            import requests

            self._session_given = requests.Session()
        return self._session_given

    # -- the three calls ----------------------------------------------------

    def get_execution(self, agent_id, execution_id):
        return self._request("GET", "/agents/%s/executions/%s" % (_seg(agent_id), _seg(execution_id)))

    def reexecute(self, agent_id, execution_id, input=None, overrides=None, reason=None, idempotency_key=None,
                  repair_context=None):
        body = {"retry_of": execution_id, "overrides": dict(overrides or {}), "wait": True}
        if input is not None:
            body["input"] = input
        if reason:
            body["reason"] = reason
        path = "/agents/%s/executions" % _seg(agent_id)
        if repair_context:
            body["repair_context"] = scrub(repair_context, [self._api_key])
            result = self._request("POST", path, body, idempotency_key)
            if result["status"] not in (400, 422):
                return _require_id(result)
            # A platform built to the contract before repair_context may refuse an unknown field:
            # the re-run matters more than its reasons, so ask once more without them.
            LOG.warning("[Self-Healing] the agent platform refused the re-run with repair_context (HTTP %s); "
                        "re-running without it", result["status"])
            del body["repair_context"]
        return _require_id(self._request("POST", path, body, idempotency_key))

    def retry_tool(self, agent_id, execution_id, tool, tool_call_id=None, reason=None, idempotency_key=None):
        body = {"tool": tool, "wait": True}
        if tool_call_id:
            body["tool_call_id"] = tool_call_id
        if reason:
            body["reason"] = reason
        path = "/agents/%s/executions/%s/tool-retries" % (_seg(agent_id), _seg(execution_id))
        return _require_id(self._request("POST", path, body, idempotency_key))

    def wait_for(self, agent_id, started, wait_s):
        """Poll a re-execution the platform accepted with 202 until it is terminal or `wait_s` passes."""
        result = started
        deadline = self._clock() + wait_s
        while result.ok and not is_terminal(result.body) and self._clock() < deadline:
            self._sleep(min(self.poll_s, max(0.0, deadline - self._clock())))
            result = _require_id(self.get_execution(agent_id, result.body.get("id")))
        return result

    # -- plumbing -----------------------------------------------------------

    def _request(self, method, path, body=None, idempotency_key=None):
        headers = {"Accept": "application/json", "User-Agent": _USER_AGENT}
        if self._api_key:
            headers["Authorization"] = "Bearer " + self._api_key
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        started = self._clock()
        outcome = ApiResult(
            ok=False, status=None, error_class=None, error_message=None, body=None, retry_after_s=None,
            latency_s=None, method=method, path=path,
        )
        import requests

        try:
            response = self._session.request(
                method, self.base_url + path, json=body, headers=headers, timeout=self.timeout_s, verify=self.verify_tls
            )
        except requests.Timeout:
            return self._failed(outcome, TIMEOUT, "no response within %s s" % self.timeout_s, started)
        except (requests.RequestException, ValueError) as exc:  # ValueError: e.g. a header requests cannot encode
            return self._failed(outcome, UNREACHABLE, "%s: %s" % (type(exc).__name__, exc), started)
        outcome["status"] = response.status_code
        payload, parse_error = _parse(response, [self._api_key])
        if isinstance(payload, dict):
            payload = bounded(payload, [self._api_key], max_string=_BODY_STRING_LIMIT)
        if 200 <= response.status_code < 300:
            if parse_error:
                return self._failed(outcome, MALFORMED_RESPONSE, parse_error, started)
            outcome.update(ok=True, body=payload, latency_s=round(self._clock() - started, 3))
            return ApiResult(scrub(outcome, [self._api_key]))
        outcome["body"] = payload if isinstance(payload, dict) else None
        if response.status_code == 429:
            outcome["retry_after_s"] = _retry_after(response.headers.get("Retry-After"))
        message = "HTTP %d: %s" % (response.status_code, _error_message(payload, response))
        return self._failed(outcome, classify_status(response.status_code), message, started)

    def _failed(self, outcome, error_class, message, started):
        outcome.update(error_class=error_class, error_message=message, latency_s=round(self._clock() - started, 3))
        outcome = ApiResult(scrub(outcome, [self._api_key]))
        outcome["error_message"] = scrub_and_cap(outcome["error_message"], _MESSAGE_LIMIT, [self._api_key])
        LOG.warning("[Self-Healing] agent API %s %s failed: %s", outcome["method"], outcome["path"], outcome["error_message"])
        return outcome


def classify_status(status):
    """The error class of a non-2xx HTTP status."""
    if status in (401, 403):
        return AUTH
    if status == 404:
        return NOT_FOUND
    if status == 409:
        return CONFLICT
    if status == 429:
        return RATE_LIMITED
    if status >= 500:
        return SERVER_ERROR
    return REJECTED


def is_terminal(execution):
    """Whether a reported run is finished: a status that is not `detection.still_running`.

    Any other reported status (crashed, 137, ...) is final, so polling never
    waits out its whole budget on a status the platform will not change.
    """
    status = (execution or {}).get("status")
    if status is None or (isinstance(status, str) and not status.strip()):
        return False
    return not still_running(status)


def _require_id(result):
    """A 2xx re-run answer without a usable execution id is malformed: nothing to poll, nothing repaired."""
    if not result.ok:
        return result
    found = result.body.get("id")
    try:
        if check_id(found, "id") == (found if isinstance(found, str) else str(found)):  # usable as it stands
            return result
    except ValueError:
        pass
    failed = ApiResult(result)
    failed.update(
        ok=False,
        error_class=MALFORMED_RESPONSE,
        error_message="HTTP %s without a usable execution id (id is %s)" % (result["status"], _describe_id(found)),
    )
    LOG.warning("[Self-Healing] agent API %s %s failed: %s", failed["method"], failed["path"], failed["error_message"])
    return failed


def _describe_id(value):
    if value is None:
        return "missing"
    if isinstance(value, str):
        return "an invalid string of %d characters" % len(value)
    return "a %s" % type(value).__name__


def check_id(value, field):
    """`value` as an id the agent API can carry in a path and a header; ValueError naming `field` if not."""
    return validation.check_id(value, field, ascii_only=True, path_segment=True)


def _parse(response, secrets=()):
    if len(response.content or b"") > MAX_BODY_BYTES:
        return None, "the body is %d bytes (limit %d)" % (len(response.content), MAX_BODY_BYTES)
    try:
        payload = response.json()
    except (ValueError, RecursionError):
        return None, "the body is not JSON (%s)" % scrub_and_cap(response.text or "empty", 80, secrets)
    if not isinstance(payload, dict):
        return payload, "the body is JSON %s, not an object" % type(payload).__name__
    return payload, None


def _error_message(payload, response):
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            error = error.get("message") or error.get("code")
        if error:
            return str(error)
        if payload.get("message"):
            return str(payload["message"])
    return response.reason or "no detail"


def _retry_after(value):
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def _seg(value):
    """One URL path segment; ids with slashes or dots could otherwise address another resource."""
    text = str(value)
    if not text or text in (".", "..") or "/" in text:
        raise ValueError("invalid id %r for the agent API" % _short(text))
    return quote(text, safe="")


def _short(text, limit=_MESSAGE_LIMIT):
    return scrub_and_cap(text, limit)
