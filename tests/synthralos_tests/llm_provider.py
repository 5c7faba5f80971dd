"""A fault-injecting LLM provider on loopback, for tests and bench/retry.py.

One server hosts any number of *endpoints*, each a pretend provider/region
reached under its own path prefix: `<server.url>/<endpoint>/v1`. An endpoint
speaks either OpenAI's chat completions API (`POST .../chat/completions`,
`Authorization: Bearer <key>`) or Anthropic's messages API (`POST
.../messages`, `x-api-key` + `anthropic-version`), checks the credentials and
the request shape the way the real service does, and answers with the
real services' success and error bodies.

An `azure_openai` endpoint is an Azure OpenAI resource rooted at
`<server.url>/<endpoint>`: `POST /openai/deployments/{deployment}/chat/completions
?api-version=...` (a missing or unknown api-version is 404 "Resource not found",
an unknown deployment 404 `DeploymentNotFound`) and `POST /openai/v1/chat/completions`
(deployment in `model`); `api-key` header or `Authorization: Bearer <ad_token>`
(401 "Access denied due to invalid subscription key..." otherwise). Its errors
are Azure's: `{"error": {"code", "message"}}` with code "429" and "Please retry
after N seconds." in the message plus `retry-after` (and `retry-after-ms` when
given), `content_filter` with `innererror.code` ResponsibleAIPolicyViolation
and the per-category `content_filter_result`; its successes carry
`prompt_filter_results` / `content_filter_results`; `filtered_output` is a 200
whose choice stopped with finish_reason `content_filter`. `GET .../v1/models` lists the
endpoint's models in each provider's shape (same auth checks; Anthropic also
wants `anthropic-version`), for health checks.
Errors:

* OpenAI errors: `{"error": {"message", "type", "param", "code"}}`, e.g. 429
  `rate_limit_exceeded` / `insufficient_quota`, 400 `context_length_exceeded`,
  401 `invalid_api_key`, 404 `model_not_found`.
* Anthropic errors: `{"type": "error", "error": {"type", "message"}}` with
  `rate_limit_error` (429), `overloaded_error` (529), `authentication_error`
  (401), `invalid_request_error` (400), `not_found_error` (404), `api_error`
  (500).

What each request gets is scriptable per endpoint, in this order:
1. queued faults (`script(endpoint, [...])`), one consumed per request;
2. outage windows (`add_outage(endpoint, start_s, end_s, fault)`) on the
   server's clock (seconds since `reset_clock()`);
3. a real rate limit (`set_rate_limit(endpoint, n, per_s)`): over it, 429
   with `retry-after`;
4. a seeded random error rate (`set_error_rate(endpoint, 0.3, fault)`);
5. the endpoint's default (normally "ok").

Faults: ok, rate_limit, quota, server_error (500), bad_gateway (502),
unavailable (503), gateway_timeout (504), overloaded (529 / OpenAI 503),
auth (401), forbidden (403), not_found (404), context_overflow, content_filter
(400), refusal (200 with a refusal stop), bad_request (400), hang (sleep
`delay_s`, then answer ok, or drop with `then: "drop"`), slow (ok after
`delay_s`), malformed (200 with broken JSON), empty (200 with empty text),
drop (close the connection without answering), filtered_output (200,
finish_reason content_filter; OpenAI and Azure), raw (answer `status`,
`headers` and `body` exactly as given: a provider's answer shape copied from
its docs). A fault is a name or a dict `{"fault": name, "retry_after": s,
"retry_after_ms": ms, "retry_after_date": s (Retry-After as an HTTP-date s
seconds ahead), "should_retry": true|false (x-should-retry), "headers": {...}
(added to an error answer), "message_wait_s": s (Azure's "retry after N
seconds"), "delay_s": s, "content": text, "then": fault}`.

A 429's `retry-after` is whole seconds (rounded up, as RFC 9110 and the
providers send it); OpenAI endpoints add the precise `retry-after-ms`. An
exhausted quota is OpenAI's 429 `insufficient_quota` and Anthropic's 400
"Your credit balance is too low".

Deliberate worst case: a wrong API key is echoed verbatim in the 401 message
(OpenAI masks most of it), so tests prove the client scrubs it.

Built on `StubHTTPServer` (tests/synthralos_tests/http_server.py): its
request log (`server.requests()`) holds every raw request; `server.calls()`
adds which endpoint and fault each one got. Importable from bench/ (standard
library only).
"""

import email.utils
import json
import math
import random
import threading
import time
import uuid

from synthralos_tests.http_server import Reply, StubHTTPServer

FAULTS = (
    "ok", "rate_limit", "quota", "server_error", "bad_gateway", "unavailable", "gateway_timeout", "overloaded",
    "auth", "forbidden", "not_found", "context_overflow", "content_filter", "refusal", "bad_request", "hang",
    "slow", "malformed", "empty", "drop", "filtered_output", "raw",
)
KINDS = ("openai", "anthropic", "azure_openai")
AZURE_API_VERSIONS = ("2024-02-01", "2024-06-01", "2024-10-21", "2025-04-01-preview", "preview")
AZURE_DEFAULT_DEPLOYMENT = "gpt-4o"

ANTHROPIC_VERSIONS = ("2023-06-01", "2023-01-01")


def _fault_spec(fault):
    spec = {"fault": fault} if isinstance(fault, str) else dict(fault)
    if spec.get("fault") not in FAULTS:
        raise ValueError("unknown fault %r (known: %s)" % (spec.get("fault"), ", ".join(FAULTS)))
    return spec


class Endpoint(object):
    """One pretend provider/region: its dialect, credentials and fault script."""

    def __init__(self, name, kind, api_key, region="default", models=None, default="ok", ad_token=None):
        if kind not in KINDS:
            raise ValueError("kind must be one of %s" % ", ".join(KINDS))
        self.name = name
        self.kind = kind
        self.api_key = api_key
        self.ad_token = ad_token  # azure_openai: an Entra ID bearer token it also accepts
        self.region = region
        self.models = set(models) if models else None
        self.default = _fault_spec(default)
        self.queue = []
        self.outages = []  # (start_s, end_s, spec)
        self.error_rate = 0.0
        self.error_faults = [_fault_spec("server_error")]
        self.rng = random.Random(0)
        self.rate_limit = None  # (n, per_s)
        self.rate_wait_in = "headers"
        self.rate_hits = []  # served request times inside the rate window


class LLMProviderServer(StubHTTPServer):
    """The server; started by the constructor (also a context manager). `close()` stops it."""

    def __init__(self, host="127.0.0.1", port=0, clock=time.monotonic):
        self._state_lock = threading.Lock()
        self._endpoints = {}
        self._calls = []
        self._clock = clock
        self._t0 = clock()
        StubHTTPServer.__init__(self, host, port)
        self.start()

    def setup_routes(self):
        self.add_route("*", r"/(?P<endpoint>[^/]+)(?P<route>/.*)?", self._serve)

    # -- set-up -----------------------------------------------------------
    def add_endpoint(self, name, kind, api_key, region="default", models=None, default="ok", ad_token=None):
        """`models`: the model names it serves (azure_openai: its deployment names); None: any."""
        with self._state_lock:
            self._endpoints[name] = Endpoint(name, kind, api_key, region, models, default, ad_token)
        return self

    def target(self, endpoint, model=None, name=None, **extra):
        """An `llm_targets` config entry pointing at `endpoint`."""
        ep = self._endpoints[endpoint]
        if ep.kind == "azure_openai":
            entry = {"name": name or endpoint, "kind": "azure_openai", "base_url": "%s/%s" % (self.url, endpoint),
                     "api_key": ep.api_key, "model": model or AZURE_DEFAULT_DEPLOYMENT, "region": ep.region}
            entry.update(extra)
            return entry
        entry = {
            "name": name or endpoint,
            "kind": ep.kind,
            "base_url": "%s/%s/v1" % (self.url, endpoint),
            "api_key": ep.api_key,
            "model": model or ("gpt-4o-mini" if ep.kind == "openai" else "claude-3-5-haiku-latest"),
            "region": ep.region,
        }
        entry.update(extra)
        return entry

    def script(self, endpoint, faults):
        """Queue faults served one per request, before anything else applies."""
        specs = [_fault_spec(f) for f in faults]
        with self._state_lock:
            self._endpoints[endpoint].queue.extend(specs)

    def set_default(self, endpoint, fault):
        with self._state_lock:
            self._endpoints[endpoint].default = _fault_spec(fault)

    def add_outage(self, endpoint, start_s, end_s, fault="unavailable"):
        """Serve `fault` for requests arriving between start_s and end_s after `reset_clock()`."""
        with self._state_lock:
            self._endpoints[endpoint].outages.append((float(start_s), float(end_s), _fault_spec(fault)))

    def set_error_rate(self, endpoint, rate, fault="server_error", seed=0):
        """Serve a fault to a random `rate` of requests (seeded); `fault` may be a list to draw from."""
        faults = fault if isinstance(fault, list) else [fault]
        with self._state_lock:
            ep = self._endpoints[endpoint]
            ep.error_rate = float(rate)
            ep.error_faults = [_fault_spec(f) for f in faults]
            ep.rng = random.Random(seed)

    def set_rate_limit(self, endpoint, requests, per_s, wait_in="headers"):
        """At most `requests` served per sliding `per_s` seconds; more get 429 + retry-after, or
        (`wait_in="message"`, Azure) a 429 that states the wait only in its message."""
        if wait_in not in ("headers", "message"):
            raise ValueError("wait_in must be headers or message")
        with self._state_lock:
            ep = self._endpoints[endpoint]
            ep.rate_limit = (int(requests), float(per_s))
            ep.rate_hits = []
            ep.rate_wait_in = wait_in

    def reset_clock(self):
        with self._state_lock:
            self._t0 = self._clock()

    def now(self):
        """Seconds since the server started or `reset_clock()`."""
        return self._clock() - self._t0

    def reset(self):
        """Forget every endpoint, script and logged request."""
        StubHTTPServer.reset(self)
        with self._state_lock:
            self._endpoints.clear()
            del self._calls[:]
            self._t0 = self._clock()

    # -- inspection -------------------------------------------------------
    def calls(self, endpoint=None):
        """What each request got (dicts: endpoint, path, model, fault, status, t, usage: (input, output)
        tokens of a 200), oldest first."""
        with self._state_lock:
            return [dict(r) for r in self._calls if endpoint is None or r["endpoint"] == endpoint]

    def faults_served(self, endpoint=None):
        return [r["fault"] for r in self.calls(endpoint)]

    def close(self):
        self.stop()

    # -- request handling -------------------------------------------------
    def _choose(self, ep):
        """The fault for the next request to `ep` (called with the lock held)."""
        if ep.queue:
            return ep.queue.pop(0)
        now = self.now()
        for start, end, spec in ep.outages:
            if start <= now < end:
                return spec
        if ep.rate_limit is not None:
            limit, per_s = ep.rate_limit
            ep.rate_hits = [t for t in ep.rate_hits if t > now - per_s]
            if len(ep.rate_hits) >= limit:
                wait = max(0.001, ep.rate_hits[0] + per_s - now)
                if ep.rate_wait_in == "message":
                    return {"fault": "rate_limit", "message_wait_s": round(wait, 3)}
                return {"fault": "rate_limit", "retry_after": wait, "retry_after_ms": wait * 1000.0}
            ep.rate_hits.append(now)
        if ep.error_rate and ep.rng.random() < ep.error_rate:
            return ep.rng.choice(ep.error_faults)
        return ep.default

    def _serve(self, request):
        """The stub server's handler for every request."""
        return _to_wire(self._answer_request(request.method, request.path, request.headers, request.body,
                                             request.query))

    def _answer_request(self, method, path, headers, raw, query=None):
        """Decide the answer: (status, headers, body bytes, action)."""
        parts = path.strip("/").split("/")
        with self._state_lock:
            ep = self._endpoints.get(parts[0]) if parts else None
        if ep is None:
            return self._record(None, path, None, "unknown_endpoint", _plain(404, "no such endpoint"))
        route = "/".join(parts[1:])
        if ep.kind == "azure_openai":
            return self._answer_azure(ep, method, path, route, headers, raw, query or {})
        if method == "GET" and route == "v1/models":
            return self._models(ep, path, headers)
        expected = "v1/chat/completions" if ep.kind == "openai" else "v1/messages"
        if method != "POST" or route != expected:
            return self._record(ep, path, None, "unknown_route",
                                _error(ep.kind, 404, "not_found", "Not found: %s /%s" % (method, route)))

        auth = _check_auth(ep, headers)
        if auth is not None:
            return self._record(ep, path, None, "auth", auth)
        body = _json_object(raw)
        if body is None:
            return self._record(ep, path, None, "bad_request",
                                _error(ep.kind, 400, "bad_request", "We could not parse the JSON body of your request."))
        invalid = _check_body(ep, headers, body)
        if invalid is not None:
            return self._record(ep, path, body.get("model"), "bad_request", invalid)
        model = body["model"]
        if ep.models is not None and model not in ep.models:
            return self._record(ep, path, model, "not_found", _answer(ep, {"fault": "not_found"}, body))

        with self._state_lock:
            spec = self._choose(ep)
        return self._record(ep, path, model, spec["fault"], _answer(ep, spec, body))

    def _answer_azure(self, ep, method, path, route, headers, raw, query):
        """An Azure OpenAI resource: the deployments path (api-version required) and the v1 path."""
        version = (query.get("api-version") or [None])[0]
        deployment = None
        parts = route.split("/")
        if method == "GET" and route in ("openai/models", "openai/v1/models"):
            if route == "openai/models" and version not in AZURE_API_VERSIONS:
                return self._record(ep, path, None, "unknown_route", _azure_error(404, "404", "Resource not found"))
            auth = _check_auth(ep, headers)
            if auth is not None:
                return self._record(ep, path, None, "auth", auth)
            return self._record(ep, path, None, "ok", _model_list(ep))
        if (method == "POST" and len(parts) == 5 and parts[:2] == ["openai", "deployments"]
                and parts[3:] == ["chat", "completions"]):
            deployment = parts[2]
            if version not in AZURE_API_VERSIONS:
                return self._record(ep, path, None, "unknown_route", _azure_error(404, "404", "Resource not found"))
        elif method == "POST" and route == "openai/v1/chat/completions":
            if version not in (None, "preview", "latest"):
                return self._record(ep, path, None, "bad_request", _azure_error(
                    400, "BadRequest", "API version not supported"))
        else:
            return self._record(ep, path, None, "unknown_route", _azure_error(404, "404", "Resource not found"))
        auth = _check_auth(ep, headers)
        if auth is not None:
            return self._record(ep, path, None, "auth", auth)
        body = _json_object(raw)
        if body is None:
            return self._record(ep, path, None, "bad_request", _azure_error(
                400, "BadRequest", "We could not parse the JSON body of your request."))
        if deployment is None:
            deployment = body.get("model")
            if not isinstance(deployment, str) or not deployment:
                return self._record(ep, path, None, "bad_request",
                                    _error(ep.kind, 400, "bad_request", "you must provide a model parameter",
                                           param="model"))
        body = dict(body, model=body.get("model") or deployment)
        invalid = _check_body(ep, headers, body)
        if invalid is not None:
            return self._record(ep, path, deployment, "bad_request", invalid)
        if ep.models is not None and deployment not in ep.models:
            return self._record(ep, path, deployment, "not_found", _answer(ep, {"fault": "not_found"}, body))
        with self._state_lock:
            spec = self._choose(ep)
        return self._record(ep, path, deployment, spec["fault"], _answer(ep, spec, body))

    def _models(self, ep, path, headers):
        """`GET /v1/models`, both dialects' list shapes; queued faults and outages apply as to completions."""
        auth = _check_auth(ep, headers)
        if auth is not None:
            return self._record(ep, path, None, "auth", auth)
        if ep.kind == "anthropic" and headers.get("anthropic-version") not in ANTHROPIC_VERSIONS:
            return self._record(ep, path, None, "bad_request",
                                _error("anthropic", 400, "bad_request", "anthropic-version: header is required"))
        with self._state_lock:
            spec = self._choose(ep)
        if spec["fault"] not in ("ok", "slow", "hang", "empty", "refusal"):
            return self._record(ep, path, None, spec["fault"], _answer(ep, spec, {"model": "", "messages": []}))
        answer = _model_list(ep)
        if spec["fault"] in ("slow", "hang"):
            then = "drop" if spec.get("then") == "drop" else None
            answer = answer[:3] + (("sleep", float(spec.get("delay_s", 30 if spec["fault"] == "hang" else 1)), then),)
        return self._record(ep, path, None, spec["fault"], answer)

    def _record(self, ep, path, model, fault, answer):
        status = answer[0]
        with self._state_lock:
            self._calls.append({
                "endpoint": ep.name if ep else None,
                "path": path,
                "model": model,
                "fault": fault,
                "status": status,
                "t": round(self.now(), 4),
                "usage": _billed_usage(answer),
            })
        return answer


# ---------------------------------------------------------------------------
# Request checks and answers, in each provider's own words.

_AZURE_DENIED = ("Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
                 "key for an active subscription and use a correct regional API endpoint for your resource.")


def _check_auth(ep, headers):
    if ep.kind == "azure_openai":
        if headers.get("api-key"):
            ok = headers["api-key"] == ep.api_key
        else:
            bearer = headers.get("authorization") or ""
            ok = bool(ep.ad_token) and bearer == "Bearer " + ep.ad_token
        return None if ok else _azure_error(401, "401", _AZURE_DENIED)
    if ep.kind == "openai":
        header = headers.get("authorization") or ""
        if not header.startswith("Bearer ") or not header[7:].strip():
            return _error("openai", 401, "auth", "You didn't provide an API key. You need to provide your API key in an "
                          "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", code=None)
        given = header[7:].strip()
        if given != ep.api_key:
            return _error("openai", 401, "auth", "Incorrect API key provided: %s. You can find your API key at "
                          "https://platform.openai.com/account/api-keys." % given)
        return None
    given = headers.get("x-api-key")
    if not given:
        return _error("anthropic", 401, "auth", "x-api-key header is required")
    if given != ep.api_key:
        return _error("anthropic", 401, "auth", "invalid x-api-key: %s" % given)
    return None


def _check_body(ep, headers, body):
    if ep.kind == "anthropic":
        version = headers.get("anthropic-version")
        if not version:
            return _error("anthropic", 400, "bad_request", "anthropic-version: header is required")
        if version not in ANTHROPIC_VERSIONS:
            return _error("anthropic", 400, "bad_request", "anthropic-version: invalid version %s" % version)
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _error(ep.kind, 400, "bad_request", "model: Field required" if ep.kind == "anthropic" else
                      "you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(ep.kind, 400, "bad_request", "messages: Field required" if ep.kind == "anthropic" else
                      "'messages' is a required property", param="messages")
    for i, msg in enumerate(messages):
        roles = ("user", "assistant") if ep.kind == "anthropic" else ("system", "user", "assistant")
        if not isinstance(msg, dict) or msg.get("role") not in roles:
            if ep.kind == "anthropic" and isinstance(msg, dict) and msg.get("role") == "system":
                return _error("anthropic", 400, "bad_request", 'messages: Unexpected role "system". The Messages API '
                              'accepts a top-level `system` parameter, not "system" as an input message role.')
            return _error(ep.kind, 400, "bad_request", "messages.%d.role: Input should be one of %s" % (i, roles),
                          param="messages")
    if ep.kind == "anthropic":
        if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
            return _error("anthropic", 400, "bad_request", "max_tokens: Field required")
        if messages[0].get("role") != "user":
            return _error("anthropic", 400, "bad_request", "messages: first message must use the \"user\" role")
    return None


def _prompt_tokens(body):
    text = "".join(str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict))
    return max(1, len(text + str(body.get("system", ""))) // 4)


def _answer(ep, spec, body):
    """(status, headers, body bytes | None, action) for a chosen fault; action is None, 'drop' or ('sleep', s, then)."""
    fault = spec["fault"]
    kind = ep.kind
    if fault == "raw":
        return _raw_answer(spec)
    if fault not in ("ok", "slow", "hang", "empty", "refusal", "filtered_output", "malformed", "drop"):
        return _with_signals(_answer_error(ep, spec, body), spec)
    if fault == "filtered_output":
        if kind == "anthropic":
            raise ValueError("filtered_output is an OpenAI / Azure answer (Anthropic stops with refusal)")
        return _success(ep, body, "", "content_filter")
    if fault in ("ok", "slow", "hang", "empty", "refusal"):
        if fault == "hang":
            then = spec.get("then", "ok")
            inner = _answer(ep, _fault_spec(then), body) if then != "drop" else (0, {}, None, "drop")
            return inner[:3] + (("sleep", float(spec.get("delay_s", 30)), inner[3]),)
        text = spec.get("content")
        if text is None:
            text = "" if fault == "empty" else "Reply from %s (%s)." % (ep.name, body["model"])
        ans = _success(ep, body, text, "refusal" if fault == "refusal" else None)
        if fault == "slow":
            return ans[:3] + (("sleep", float(spec.get("delay_s", 1)), None),)
        return ans
    if fault == "malformed":
        return 200, {"content-type": "application/json"}, b'{"id": "chatcmpl-x", "choices": [{"message": {"con', None
    return 0, {}, None, "drop"


def _answer_error(ep, spec, body):
    """The error answer for an error fault, in the endpoint's dialect."""
    fault = spec["fault"]
    kind = ep.kind
    if fault == "rate_limit":
        if kind == "azure_openai":
            wait = spec.get("message_wait_s", math.ceil(float(spec.get("retry_after") or 1)))
            answer = _azure_error(429, "429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
                                  "version 2024-10-21 have exceeded token rate limit of your current AIServices S0 "
                                  "pricing tier. Please retry after %s seconds. Please contact Azure support service "
                                  "if you would like to further increase the default rate limit." % wait)
        else:
            answer = _error(kind, 429, "rate_limit", "Rate limit reached for requests" if kind == "openai" else
                            "This request would exceed your organization's rate limit. Please try again later.")
        headers = answer[1]
        if spec.get("retry_after") is not None:
            headers["retry-after"] = _seconds_header(spec["retry_after"])
        if spec.get("retry_after_ms") is not None and kind in ("openai", "azure_openai"):
            headers["retry-after-ms"] = "%d" % int(round(float(spec["retry_after_ms"])))
        return answer
    if kind == "azure_openai" and fault in _AZURE_ERRORS:
        status, code, message = _AZURE_ERRORS[fault]
        if fault == "content_filter":
            return _azure_error(status, code, message, extra={"type": None, "param": "prompt", "status": 400}, innererror={
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "jailbreak": {"filtered": False, "detected": False},
                    "self_harm": {"filtered": False, "severity": "safe"},
                    "sexual": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": True, "severity": "medium"}}})
        return _azure_error(status, code, message)
    if kind == "azure_openai":
        kind = "openai"  # everything else Azure answers as OpenAI does
    if fault == "quota":
        if kind == "openai":
            return _error("openai", 429, "quota", "You exceeded your current quota, please check your plan and "
                          "billing details.")
        return _error("anthropic", 400, "quota", "Your credit balance is too low to access the Anthropic API. Please "
                      "go to Plans & Billing to upgrade or purchase credits.")
    if fault == "context_overflow":
        if kind == "openai":
            return _error("openai", 400, "context_overflow", "This model's maximum context length is 128000 tokens. "
                          "However, your messages resulted in %d tokens. Please reduce the length of the messages."
                          % (128000 + _prompt_tokens(body)), param="messages")
        return _error("anthropic", 400, "context_overflow", "prompt is too long: %d tokens > 200000 maximum"
                      % (200000 + _prompt_tokens(body)))
    if fault == "not_found":
        if kind == "openai":
            return _error("openai", 404, "not_found", "The model `%s` does not exist or you do not have access to it."
                          % body.get("model"))
        return _error("anthropic", 404, "not_found", "model: %s" % body.get("model"))
    messages = {
        "auth": "invalid x-api-key" if kind == "anthropic" else "Incorrect API key provided.",
        "forbidden": "Your API key does not have permission to use the specified resource.",
        "content_filter": "The response was filtered due to the prompt triggering content management policy.",
        "bad_request": "Invalid value for 'temperature': expected a number between 0 and 2.",
        "server_error": "The server had an error while processing your request. Sorry about that!",
        "bad_gateway": "Bad gateway.",
        "unavailable": "The service is temporarily unavailable.",
        "gateway_timeout": "Request timed out.",
        "overloaded": "Overloaded" if kind == "anthropic" else "That model is currently overloaded with other "
                                                               "requests. You can retry your request.",
    }
    statuses = {"auth": 401, "forbidden": 403, "content_filter": 400, "bad_request": 400, "server_error": 500,
                "bad_gateway": 502, "unavailable": 503, "gateway_timeout": 504,
                "overloaded": 529 if kind == "anthropic" else 503}
    return _error("openai" if kind == "azure_openai" else kind, statuses[fault], fault, messages[fault])


# Azure's own answers where they differ from OpenAI's: (status, code, message).
_AZURE_ERRORS = {
    "auth": (401, "401", _AZURE_DENIED),
    "not_found": (404, "DeploymentNotFound", "The API deployment for this resource does not exist. If you created the "
                  "deployment within the last 5 minutes, please wait a moment and try again."),
    "content_filter": (400, "content_filter", "The response was filtered due to the prompt triggering Azure OpenAI's "
                       "content management policy. Please modify your prompt and retry. To learn more about our "
                       "content filtering policies please read our documentation: "
                       "https://go.microsoft.com/fwlink/?linkid=2198766"),
    "server_error": (500, "InternalServerError", "The server had an error processing your request."),
    "unavailable": (503, "ServiceUnavailable", "The service is temporarily unable to process your request. "
                    "Please try again later."),
    "overloaded": (503, "ServiceUnavailable", "The service is temporarily unable to process your request. "
                   "Please try again later."),
}


def _azure_error(status, code, message, extra=None, innererror=None):
    error = {"code": code, "message": message}
    error.update(extra or {})
    if innererror is not None:
        error["innererror"] = innererror
    headers = {"content-type": "application/json", "apim-request-id": str(uuid.uuid4()),
               "x-ms-region": "local"}
    return status, headers, json.dumps({"error": error}).encode("utf-8"), None


def _with_signals(answer, spec):
    """Add a fault's retry signals (x-should-retry, an HTTP-date Retry-After, extra headers) to an error answer."""
    status, headers, body, action = answer
    headers = dict(headers)
    if spec.get("should_retry") is not None:
        headers["x-should-retry"] = "true" if spec["should_retry"] else "false"
    if spec.get("retry_after_date") is not None:
        headers["retry-after"] = email.utils.formatdate(time.time() + float(spec["retry_after_date"]), usegmt=True)
    headers.update(spec.get("headers") or {})
    return status, headers, body, action


def _raw_answer(spec):
    body = spec.get("body", b"")
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode("utf-8")
    elif isinstance(body, str):
        body = body.encode("utf-8")
    headers = {"content-type": "application/json" if body[:1] in (b"{", b"[") else "text/html"}
    headers.update(spec.get("headers") or {})
    return int(spec.get("status", 200)), headers, body, None


# (openai type, openai code, anthropic type) per fault
_ERROR_NAMES = {
    "rate_limit": ("requests", "rate_limit_exceeded", "rate_limit_error"),
    "quota": ("insufficient_quota", "insufficient_quota", "invalid_request_error"),
    "auth": ("invalid_request_error", "invalid_api_key", "authentication_error"),
    "forbidden": ("invalid_request_error", "unsupported_country_region_territory", "permission_error"),
    "not_found": ("invalid_request_error", "model_not_found", "not_found_error"),
    "context_overflow": ("invalid_request_error", "context_length_exceeded", "invalid_request_error"),
    "content_filter": ("invalid_request_error", "content_filter", "invalid_request_error"),
    "bad_request": ("invalid_request_error", None, "invalid_request_error"),
    "server_error": ("server_error", None, "api_error"),
    "bad_gateway": ("server_error", None, "api_error"),
    "unavailable": ("server_error", None, "api_error"),
    "gateway_timeout": ("server_error", None, "timeout_error"),
    "overloaded": ("server_error", None, "overloaded_error"),
}


def _json_object(raw):
    """The request body as a JSON object, or None when it is not one (unreadable, not UTF-8, not an object)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def _error(kind, status, fault, message, code="default", param=None):
    oa_type, oa_code, an_type = _ERROR_NAMES[fault]
    if kind == "openai":
        body = {"error": {"message": message, "type": oa_type, "param": param,
                          "code": oa_code if code == "default" else code}}
        headers = {"content-type": "application/json", "x-request-id": "req_" + uuid.uuid4().hex[:24]}
    else:
        body = {"type": "error", "error": {"type": an_type, "message": message}}
        headers = {"content-type": "application/json", "request-id": "req_" + uuid.uuid4().hex[:24]}
    return status, headers, json.dumps(body).encode("utf-8"), None


def _model_list(ep):
    names = sorted(ep.models) if ep.models is not None else (
        ["claude-3-5-haiku-latest", "claude-3-5-sonnet-latest"] if ep.kind == "anthropic" else ["gpt-4o-mini", "gpt-4o"])
    if ep.kind != "anthropic":
        payload = {"object": "list", "data": [{"id": n, "object": "model", "created": 1700000000,
                                               "owned_by": "system"} for n in names]}
    else:
        payload = {"data": [{"type": "model", "id": n, "display_name": n, "created_at": "2024-10-22T00:00:00Z"}
                            for n in names],
                   "has_more": False, "first_id": names[0] if names else None, "last_id": names[-1] if names else None}
    return 200, {"content-type": "application/json"}, json.dumps(payload).encode("utf-8"), None


def _plain(status, text):
    return status, {"content-type": "text/plain"}, text.encode("utf-8"), None


def _seconds_header(seconds):
    # RFC 9110 delay-seconds is a whole number; providers round up (the precise
    # value goes in OpenAI's retry-after-ms).
    return "%d" % math.ceil(float(seconds))


def _success(ep, body, text, stop):
    prompt = _prompt_tokens(body)
    completion = max(0, len(text) // 4) if text else 0
    if ep.kind in ("openai", "azure_openai"):
        message = {"role": "assistant", "content": text, "refusal": None}
        finish = "stop"
        if stop == "refusal":
            message = {"role": "assistant", "content": None, "refusal": text or "I can't help with that."}
        if stop == "content_filter":
            message, finish = {"role": "assistant", "content": None}, "content_filter"
        payload = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }
        headers = {"content-type": "application/json", "x-request-id": "req_" + uuid.uuid4().hex[:24]}
        if ep.kind == "azure_openai":
            safe = {name: {"filtered": False, "severity": "safe"} for name in ("hate", "self_harm", "sexual",
                                                                                "violence")}
            payload["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": safe}]
            payload["choices"][0]["content_filter_results"] = (
                dict(safe, violence={"filtered": True, "severity": "high"}) if stop == "content_filter" else safe)
            headers = {"content-type": "application/json", "apim-request-id": str(uuid.uuid4()),
                       "x-ms-region": ep.region}
    else:
        payload = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}] if text else [],
            "stop_reason": stop or "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }
        headers = {"content-type": "application/json", "request-id": "req_" + uuid.uuid4().hex[:24]}
    return 200, headers, json.dumps(payload).encode("utf-8"), None


def _billed_usage(answer):
    """(input_tokens, output_tokens) a 200 answer reports in its usage (what a provider bills), else (0, 0)."""
    status, _, body = answer[0], answer[1], answer[2]
    if status != 200 or not body:
        return (0, 0)
    try:
        usage = json.loads(body.decode("utf-8")).get("usage") or {}
    except (ValueError, AttributeError, UnicodeDecodeError):
        return (0, 0)
    return (int(usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0),
            int(usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0))


def _to_wire(answer):
    """A Reply for the stub server from (status, headers, body, action)."""
    status, headers, body, action = answer
    if action == "drop":
        return Reply(0, drop=True)
    if isinstance(action, tuple):  # ("sleep", seconds, then): a hang or a slow answer
        return Reply(status, body, headers, delay=action[1], drop=action[2] == "drop")
    return Reply(status, body, headers)


class ProviderServerMixin(object):
    """For TestCases: one LLMProviderServer per class as `cls.server`, reset before each test."""

    @classmethod
    def setUpClass(cls):
        super(ProviderServerMixin, cls).setUpClass()
        cls.server = LLMProviderServer()

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        super(ProviderServerMixin, cls).tearDownClass()

    def setUp(self):
        super(ProviderServerMixin, self).setUp()
        self.server.reset()
