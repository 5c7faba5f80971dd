"""One LLM call against one target, as a structured outcome.

`call_llm` makes exactly one HTTP attempt (no retries: deciding whether and
when to try again is `llm_policy`'s job, and in st2 each attempt is its own
action execution). It speaks three dialects over `requests`:

* `openai`: POST {base_url}/chat/completions, `Authorization: Bearer <key>`,
  system prompt as the first message (any OpenAI-compatible server).
* `anthropic`: POST {base_url}/messages, `x-api-key` and `anthropic-version`
  headers, system prompt in the separate `system` field.
* `azure_openai`: Azure OpenAI, OpenAI's body on Azure's paths. The resource
  root is `base_url` (e.g. https://myres.openai.azure.com) or
  https://{resource}.openai.azure.com; `azure_path: deployments` (default)
  POSTs {root}/openai/deployments/{deployment}/chat/completions?api-version=
  {api_version}, `azure_path: v1` POSTs {root}/openai/v1/chat/completions with
  the deployment as `model` (api-version only when set). Auth is the `api-key`
  header, or `Authorization: Bearer <azure_ad_token>` (an Entra ID token) when
  the target has no api_key.

It never raises for provider or network errors: every outcome is a dict with
`ok`, `content`, `usage`, `latency_s`, `status`, `error_class` (see
`llm_errors`), `error_message`, `retry_after_s`, `should_retry` (the
response's `x-should-retry` verdict, or None) and the target's identity
(`account` included, see `account_of`). The target's credentials and any
`secrets` passed in are scrubbed from every string it returns, before any
length cut.
"""

import hashlib
import json
import time
from urllib.parse import quote

from synthralos_lib.llm import errors as llm_errors
from synthralos_lib.state.config import with_defaults
from synthralos_lib.state.redaction import scrub, scrub_and_cap
from synthralos_lib.state.validation import check_number

ANTHROPIC_VERSION = "2023-06-01"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024  # a chat completion is never this big; stop reading junk
MAX_TOKENS = 200000  # no model generates more in one answer
MAX_TIMEOUT_S = 3600.0
_MESSAGE_LIMIT = 500  # error messages are cut to this many characters
MAX_MESSAGES = 1000  # chat messages in one request
KINDS = ("openai", "anthropic", "azure_openai")
AZURE_API_VERSION = "2024-10-21"  # the GA data-plane version the deployments path uses by default
AZURE_PATHS = ("deployments", "v1")


class _TargetProblem(ValueError):
    """The target entry itself is unusable (no base_url, unknown kind)."""


class _Deadline(Exception):
    """The whole call (connect + response body) took longer than its timeout."""


def call_llm(target, messages, timeout_s=None, max_tokens=1024, temperature=None, system=None, session=None,
             secrets=()):
    """Make one call to `target` (an `llm_targets` entry) and return its outcome dict.

    `messages` are `{"role": "user"|"assistant"|"system", "content": str}` (or one of them, or
    plain text: normalize_messages);
    `timeout_s` (default: the target's `timeout_s`) bounds the whole call,
    connect to last byte. `session` lets a caller reuse connections.
    `secrets`: more strings to scrub (an action passes every configured one).
    """
    target = with_defaults("llm_targets", target)  # a target built by hand gets the schema's defaults too
    kind = target.get("kind")
    secrets = [s for s in [target.get("api_key"), target.get("azure_ad_token")] + list(secrets or ())
               if isinstance(s, str) and s]
    outcome = {
        "ok": False,
        "content": None,
        "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
        "latency_s": 0.0,
        "status": None,
        "error_class": None,
        "error_message": None,
        "retry_after_s": None,
        "should_retry": None,
        "target": target.get("name"),
        "provider": kind,
        "model": target.get("model"),
        "region": target["region"],
        "account": account_of(target),
    }
    try:
        timeout = check_params(max_tokens, temperature, timeout_s)
        timeout = timeout or float(target["timeout_s"])
        url, headers, body = _build_request(target, messages, max_tokens, temperature, system)
    except _TargetProblem as exc:
        return _failed(outcome, llm_errors.AUTH_CONFIG, str(exc), secrets)
    except ValueError as exc:
        return _failed(outcome, llm_errors.BAD_REQUEST, str(exc), secrets)

    import requests  # lazily: its import is paid by every action execution that loads this module

    started = time.monotonic()
    try:
        status, resp_headers, raw = _post(session or requests, url, headers, body, timeout, started)
    except _Deadline:
        outcome["latency_s"] = _elapsed(started)
        return _failed(outcome, llm_errors.TRANSIENT, "timed out after %.1fs" % timeout, secrets)
    except requests.exceptions.RequestException as exc:
        outcome["latency_s"] = _elapsed(started)
        return _failed(outcome, llm_errors.classify_exception(exc), _describe_exception(exc, timeout), secrets)
    outcome["latency_s"] = _elapsed(started)
    outcome["status"] = status

    parsed = _json(raw)
    if not 200 <= status < 300:
        err_type, code, message = llm_errors.provider_error(parsed if parsed is not None else raw, secrets)
        outcome["retry_after_s"], outcome["should_retry"] = llm_errors.retry_signals(resp_headers, message)
        detail = "HTTP %d" % status
        names = [p for p in (err_type, code) if p]
        if names:
            detail += " %s" % "/".join(sorted(set(names), key=names.index))
        if message:
            detail += ": %s" % message
        return _failed(outcome, llm_errors.classify_http(status, parsed if parsed is not None else raw), detail,
                       secrets)

    if parsed is None:
        return _failed(outcome, llm_errors.INVALID_OUTPUT, "HTTP %d with a body that is not JSON" % status, secrets)
    try:
        content, usage, stop = (_parse_anthropic if kind == "anthropic" else _parse_openai)(parsed)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return _failed(outcome, llm_errors.INVALID_OUTPUT,
                       "HTTP %d with a body that is not a %s response (%s)" % (status, kind, type(exc).__name__),
                       secrets)
    outcome["usage"] = usage
    outcome["content"] = scrub(content, secrets)
    if stop in ("content_filter", "refusal"):
        return _failed(outcome, llm_errors.CONTENT_POLICY, "the model stopped with %r" % stop, secrets)
    if not content or not content.strip():
        return _failed(outcome, llm_errors.INVALID_OUTPUT, "the model returned no text (stop: %s)" % stop, secrets)
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


def _failed(outcome, error_class, message, secrets):
    outcome["ok"] = False
    outcome["error_class"] = error_class
    outcome["error_message"] = scrub_and_cap(message, _MESSAGE_LIMIT, secrets)  # scrub first: never cut a key in half
    return outcome


def account_of(target):
    """The billing account a target draws on: its `account` when set, else its API host plus a short
    hash of its key (two models or deployments on one key share it; the key itself is never kept)."""
    if target.get("account"):
        return str(target["account"])
    try:
        root = _azure_root(target) if target.get("kind") == "azure_openai" else (target.get("base_url") or "")
    except _TargetProblem:
        root = ""
    host = root.split("://", 1)[-1].split("/", 1)[0].lower() or "unknown"
    key = target.get("api_key") or target.get("azure_ad_token") or ""
    return "%s#%s" % (host, hashlib.sha256(key.encode("utf-8")).hexdigest()[:12] if key else "nokey")


def models_probe(target):
    """(url, headers) of the target's model list, which costs no tokens (health_check calls it):
    {base_url}/models for openai / anthropic, {root}/openai/models?api-version=... (deployments path)
    or {root}/openai/v1/models (v1 path) for azure_openai, with each dialect's auth headers."""
    headers = {"Accept": "application/json"}
    kind, key = target.get("kind"), target.get("api_key")
    if kind == "azure_openai":
        root = _azure_root(target)
        if key:
            headers["api-key"] = key
        elif target.get("azure_ad_token"):
            headers["Authorization"] = "Bearer " + target["azure_ad_token"]
        if (target.get("azure_path") or "deployments") == "v1":
            return root + "/openai/v1/models", headers
        return "%s/openai/models?api-version=%s" % (root, quote(target.get("api_version") or AZURE_API_VERSION)), \
            headers
    if kind == "anthropic":
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if key:
            headers["x-api-key"] = key
    elif key:
        headers["Authorization"] = "Bearer %s" % key
    return (target.get("base_url") or "").rstrip("/") + "/models", headers


def _azure_root(target):
    """The resource root of an Azure OpenAI target: base_url without a pasted /openai/... tail, or
    https://{resource}.openai.azure.com."""
    base_url = (target.get("base_url") or "").rstrip("/")
    if not base_url and target.get("resource"):
        return "https://%s.openai.azure.com" % target["resource"]
    if not base_url:
        raise _TargetProblem("target %r has neither base_url nor resource" % target.get("name"))
    marker = base_url.lower().find("/openai")
    return base_url[:marker] if marker >= 0 else base_url


def _elapsed(started):
    return round(time.monotonic() - started, 4)


def normalize_messages(messages):
    """The chat messages of a request as a checked list of {role, content}.

    Besides a list, a person may give one message object (a list of one) or plain text (one user
    message). st2's web UI and CLI send a parameter without a type as text, so text that is a JSON
    array or object is read as that JSON; text that is not JSON stays text. Raises ValueError
    naming what is wrong.
    """
    if isinstance(messages, str):
        if not messages.strip():
            raise ValueError("messages must not be empty")
        parsed = None
        if messages.lstrip().startswith(("[", "{")):
            try:
                parsed = json.loads(messages)
            except ValueError:
                pass  # plain text that starts with a bracket
        if not isinstance(parsed, (list, dict)):
            return [{"role": "user", "content": messages}]
        messages = parsed
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be plain text, one {role, content} object or a non-empty list of them")
    if len(messages) > MAX_MESSAGES:
        raise ValueError("messages has %d entries; at most %d" % (len(messages), MAX_MESSAGES))
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant", "system") or not isinstance(
            msg.get("content"), str
        ):
            raise ValueError("messages[%d] must be {role: user|assistant|system, content: str}" % i)
    return messages


def _build_request(target, messages, max_tokens, temperature, system):
    kind = target.get("kind")
    if kind not in KINDS:
        raise _TargetProblem("target %r has unknown kind %r (expected %s)" % (target.get("name"), kind,
                                                                            ", ".join(KINDS)))
    base_url = _azure_root(target) if kind == "azure_openai" else (target.get("base_url") or "").rstrip("/")
    if not base_url:
        raise _TargetProblem("target %r has no base_url" % target.get("name"))
    messages = normalize_messages(messages)
    system_parts = [system] if system else []
    chat = []
    for msg in messages:
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
    # azure_openai: OpenAI's body on Azure's path and auth.
    body["messages"] = ([{"role": "system", "content": system_text}] if system_text else []) + chat
    if api_key:
        headers["api-key"] = api_key
    elif target.get("azure_ad_token"):
        headers["authorization"] = "Bearer " + target["azure_ad_token"]
    deployment = target.get("deployment") or target.get("model")
    path = target.get("azure_path") or "deployments"
    if path not in AZURE_PATHS:
        raise _TargetProblem("target %r has azure_path %r (expected deployments or v1)" % (target.get("name"), path))
    if path == "v1":
        body["model"] = deployment
        url = base_url + "/openai/v1/chat/completions"
        return url + ("?api-version=%s" % quote(target["api_version"]) if target.get("api_version") else ""), \
            headers, body
    url = "%s/openai/deployments/%s/chat/completions?api-version=%s" % (
        base_url, quote(str(deployment), safe=""), quote(target.get("api_version") or AZURE_API_VERSION))
    return url, headers, body


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
