"""One LLM call against one target, as a structured outcome.

`call_llm` makes exactly one HTTP attempt (no retries: deciding whether and
when to try again is `llm_policy`'s job, and in st2 each attempt is its own
action execution). It speaks two dialects over `requests`:

* `openai`: POST {base_url}/chat/completions, `Authorization: Bearer <key>`,
  system prompt as the first message (any OpenAI-compatible server).
* `anthropic`: POST {base_url}/messages, `x-api-key` and `anthropic-version`
  headers, system prompt in the separate `system` field.

It never raises for provider or network errors: every outcome is a dict with
`ok`, `content`, `usage`, `latency_s`, `status`, `error_class` (see
`llm_errors`), `error_message`, `retry_after_s` and the target's identity.
The target's API key is scrubbed from every string it returns.
"""

import json
import time

from synthralos_lib.llm import errors as llm_errors
from synthralos_lib.state.redaction import scrub
from synthralos_lib.state.validation import check_number

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_TIMEOUT_S = 60.0
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a chat completion is never this big; stop reading junk
MAX_TOKENS = 200000  # no model generates more in one answer
MAX_TIMEOUT_S = 3600.0
_MESSAGE_LIMIT = 500  # error messages are cut to this many characters


class _TargetProblem(ValueError):
    """The target entry itself is unusable (no base_url, unknown kind)."""


class _Deadline(Exception):
    """The whole call (connect + response body) took longer than its timeout."""


def call_llm(target, messages, timeout_s=None, max_tokens=1024, temperature=None, system=None, session=None):
    """Make one call to `target` (an `llm_targets` entry) and return its outcome dict.

    `messages` are `{"role": "user"|"assistant"|"system", "content": str}`;
    `timeout_s` (default: the target's `timeout_s`) bounds the whole call,
    connect to last byte. `session` lets a caller reuse connections.
    """
    kind = target.get("kind")
    api_key = target.get("api_key") or ""
    outcome = {
        "ok": False,
        "content": None,
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        "latency_s": 0.0,
        "status": None,
        "error_class": None,
        "error_message": None,
        "retry_after_s": None,
        "target": target.get("name"),
        "provider": kind,
        "model": target.get("model"),
        "region": target.get("region", "default"),
    }
    try:
        timeout = check_params(max_tokens, temperature, timeout_s)
        timeout = timeout or float(target.get("timeout_s") or DEFAULT_TIMEOUT_S)
        url, headers, body = _build_request(target, messages, max_tokens, temperature, system)
    except _TargetProblem as exc:
        return _failed(outcome, llm_errors.AUTH_CONFIG, str(exc), api_key)
    except ValueError as exc:
        return _failed(outcome, llm_errors.BAD_REQUEST, str(exc), api_key)

    import requests  # lazily: its import is paid by every action execution that loads this module

    started = time.monotonic()
    try:
        status, resp_headers, raw = _post(session or requests, url, headers, body, timeout, started)
    except _Deadline:
        outcome["latency_s"] = _elapsed(started)
        return _failed(outcome, llm_errors.TRANSIENT, "timed out after %.1fs" % timeout, api_key)
    except requests.exceptions.RequestException as exc:
        outcome["latency_s"] = _elapsed(started)
        return _failed(outcome, llm_errors.classify_exception(exc), _describe_exception(exc, timeout), api_key)
    outcome["latency_s"] = _elapsed(started)
    outcome["status"] = status

    parsed = _json(raw)
    if not 200 <= status < 300:
        outcome["retry_after_s"] = llm_errors.parse_retry_after(resp_headers)
        err_type, code, message = llm_errors.provider_error(parsed if parsed is not None else raw)
        detail = "HTTP %d" % status
        names = [p for p in (err_type, code) if p]
        if names:
            detail += " %s" % "/".join(sorted(set(names), key=names.index))
        if message:
            detail += ": %s" % message
        return _failed(outcome, llm_errors.classify_http(status, parsed if parsed is not None else raw), detail,
                       api_key)

    if parsed is None:
        return _failed(outcome, llm_errors.INVALID_OUTPUT, "HTTP %d with a body that is not JSON" % status, api_key)
    try:
        content, usage, stop = (_parse_openai if kind == "openai" else _parse_anthropic)(parsed)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return _failed(outcome, llm_errors.INVALID_OUTPUT,
                       "HTTP %d with a body that is not a %s response (%s)" % (status, kind, type(exc).__name__),
                       api_key)
    outcome["usage"] = usage
    outcome["content"] = scrub(content, [api_key])
    if stop in ("content_filter", "refusal"):
        return _failed(outcome, llm_errors.CONTENT_POLICY, "the model stopped with %r" % stop, api_key)
    if not content or not content.strip():
        return _failed(outcome, llm_errors.INVALID_OUTPUT, "the model returned no text (stop: %s)" % stop, api_key)
    outcome["ok"] = True
    return outcome


def check_params(max_tokens, temperature, timeout_s):
    """Validate what JSON schema cannot (NaN, Infinity pass `type: number` and its bounds).

    Raises ValueError naming the field; returns the timeout as a float (None: the target's).
    """
    check_number(max_tokens, "max_tokens", 1, MAX_TOKENS, integer=True, required=True)
    check_number(temperature, "temperature", 0, 2)
    timeout = check_number(timeout_s, "timeout_s", 0.001, MAX_TIMEOUT_S)
    return None if timeout is None else float(timeout)


def _failed(outcome, error_class, message, api_key):
    outcome["ok"] = False
    outcome["error_class"] = error_class
    outcome["error_message"] = scrub(message, [api_key])[:_MESSAGE_LIMIT]  # scrub first: never cut a key in half
    return outcome


def _elapsed(started):
    return round(time.monotonic() - started, 4)


def _build_request(target, messages, max_tokens, temperature, system):
    kind = target.get("kind")
    base_url = (target.get("base_url") or "").rstrip("/")
    if not base_url:
        raise _TargetProblem("target %r has no base_url" % target.get("name"))
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content}")
    system_parts = [system] if system else []
    chat = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant", "system") or not isinstance(
            msg.get("content"), str
        ):
            raise ValueError("messages[%d] must be {role: user|assistant|system, content: str}" % i)
        if msg["role"] == "system":
            system_parts.append(msg["content"])
        else:
            chat.append({"role": msg["role"], "content": msg["content"]})
    if not chat:
        raise ValueError("messages need at least one user or assistant message")
    api_key = target.get("api_key") or ""
    headers = {"content-type": "application/json", "accept": "application/json"}
    body = {"model": target.get("model"), "max_tokens": int(max_tokens)}
    if temperature is not None:
        body["temperature"] = float(temperature)
    system_text = "\n\n".join(system_parts)
    if kind == "openai":
        headers["authorization"] = "Bearer " + api_key
        body["messages"] = ([{"role": "system", "content": system_text}] if system_text else []) + chat
        return base_url + "/chat/completions", headers, body
    if kind == "anthropic":
        headers["x-api-key"] = api_key
        headers["anthropic-version"] = ANTHROPIC_VERSION
        body["messages"] = chat
        if system_text:
            body["system"] = system_text
        return base_url + "/messages", headers, body
    raise _TargetProblem("target %r has unknown kind %r (expected openai or anthropic)" % (target.get("name"), kind))


def _post(http, url, headers, body, timeout, started):
    """POST and read the whole body within `timeout` seconds overall.

    `requests`' own timeout bounds each socket read, so a server that trickles
    bytes could hold a call forever; reading in chunks against a deadline
    bounds the total.
    """
    response = http.post(url, headers=headers, json=body, timeout=(timeout, timeout), stream=True)
    try:
        chunks, size = [], 0
        for chunk in response.iter_content(chunk_size=16384):
            chunks.append(chunk)
            size += len(chunk)
            if time.monotonic() - started > timeout:
                raise _Deadline()
            if size > MAX_RESPONSE_BYTES:
                break
        return response.status_code, response.headers, b"".join(chunks)
    finally:
        response.close()


def _json(raw):
    try:
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None


def _describe_exception(exc, timeout):
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timed out after %.1fs" % timeout
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timed out after %.1fs" % timeout
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection dropped while reading the response"
    if isinstance(exc, requests.exceptions.ConnectionError) and "timed out" in str(exc).lower():
        return "read timed out after %.1fs" % timeout
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection failed: %s" % (exc,)
    return "%s: %s" % (type(exc).__name__, exc)


def _parse_openai(body):
    choice = body["choices"][0]
    message = choice["message"]
    content = message.get("content")
    if content is None and message.get("refusal"):
        return message["refusal"], _usage_openai(body), "refusal"
    if content is not None and not isinstance(content, str):
        raise TypeError("content is not a string")
    return content or "", _usage_openai(body), choice.get("finish_reason")


def _usage_openai(body):
    usage = body.get("usage") or {}
    inp = int(usage.get("prompt_tokens") or 0)
    out = int(usage.get("completion_tokens") or 0)
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": int(usage.get("total_tokens") or inp + out)}


def _parse_anthropic(body):
    if body.get("type") != "message":
        raise ValueError("not a message")
    text = "".join(block.get("text", "") for block in body["content"] if block.get("type") == "text")
    usage = body.get("usage") or {}
    inp = int(usage.get("input_tokens") or 0)
    out = int(usage.get("output_tokens") or 0)
    return text, {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}, body.get("stop_reason")
