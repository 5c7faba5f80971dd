"""Health of every dependency the pack talks to, each probed with a cheap, bounded request.

One check per dependency, run in parallel threads (green threads where
eventlet has patched the process, as in st2's runners), each bounded by its
own timeout; a check that has not answered by then is reported `down`. A
check never raises: the action reports, it does not fail.

Per dependency: {name, kind, status, latency_ms, error, details}, where
status is one of

* `ok`              reachable, authenticated, answering as expected
* `degraded`        reachable but not fully usable (429/5xx, slow, Redis without AOF)
* `down`            unreachable: connection refused/reset, DNS, timeout
* `misconfigured`   reachable but refusing our configuration (401/403, unknown
                    key, disabled source, wrong base URL)
* `not_configured`  nothing to check (no write key, no Redis URL)

Probes:

* redis (when `redis.url` is set): PING (latency) and the persistence report
  of `state.persistence.redis_persistence` (the one get_queue_stats gives).
  Without AOF the outbox is not durable across a Redis restart: `degraded`.
* st2_datastore: a set/get/delete round trip through the action service.
* rudderstack: `POST /v1/batch` with the write key and an empty batch. The
  gateway checks the write key first (401 "Invalid Write Key", 404 "Source is
  disabled"), then refuses the empty batch with a 400: a 400 therefore means
  reachable and authenticated, and nothing is ingested.
* agent_api: `GET <base_url>/health` with the bearer token (docs/agent_api.md).
* llm:<target>: `GET <base_url>/models` (OpenAI-compatible: Bearer;
  Anthropic: x-api-key + anthropic-version; Azure OpenAI: `{root}/openai/models
  ?api-version=...` or `{root}/openai/v1/models` with api-key, see
  `llm.client.models_probe`), which costs no tokens.

Overall: `ok` when every check is ok or not_configured; `down` when the
pack's own state store (Redis when configured, else the st2 datastore) is
down or misconfigured; else `degraded`.
"""

import json
import logging
import socket
import threading
import time
import uuid

from synthralos_lib.state.config import with_defaults
from synthralos_lib.state.redaction import scrub_and_cap

LOG = logging.getLogger(__name__)

OK = "ok"
DEGRADED = "degraded"
DOWN = "down"
MISCONFIGURED = "misconfigured"
NOT_CONFIGURED = "not_configured"
STATUSES = (OK, DEGRADED, DOWN, MISCONFIGURED, NOT_CONFIGURED)

MAX_ERROR_CHARS = 300
DATASTORE_PROBE_KEY = "ops.health_probe"


def _result(name, kind, status, started, error=None, details=None):
    return {
        "name": name,
        "kind": kind,
        "status": status,
        "latency_ms": None if started is None else round((time.monotonic() - started) * 1000.0, 1),
        "error": error,
        "details": details or {},
    }


def _short(text, secrets):
    # Scrubbed of the configured secrets before it is cut: the action guard scrubs the report again, but a
    # secret cut in half would not match then.
    return scrub_and_cap(" ".join(str(text).split()), MAX_ERROR_CHARS, secrets)


# -- HTTP -------------------------------------------------------------------


def _http_status_class(status):
    """The health status an HTTP answer maps to, for endpoints where 2xx is the only good answer."""
    if 200 <= status < 300:
        return OK
    if status in (401, 403, 404):
        return MISCONFIGURED
    return DEGRADED


def _http(session, method, url, timeout_s, headers=None, body=None, auth=None):
    """(status, text) or raises; `timeout_s` bounds connect and read."""
    response = session.request(method, url, headers=headers, data=body, auth=auth, timeout=(timeout_s, timeout_s),
                               allow_redirects=False)
    try:
        text = response.text  # whole: cutting it here would cut a secret before it is scrubbed (`_short`)
    finally:
        response.close()
    return response.status_code, text


def _network_error(exc, timeout_s):
    import requests

    if isinstance(exc, requests.exceptions.Timeout):
        return "no answer within %.1fs (%s)" % (timeout_s, type(exc).__name__)
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error: %s" % (type(exc).__name__,)
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = str(exc).lower()
        for marker, said in (("refused", "refused"), ("reset", "reset"), ("aborted", "aborted"),
                             ("name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
                             ("temporary failure in name resolution", "unknown host"), ("getaddrinfo", "unknown host")):
            if marker in reason:
                return "connection failed: %s" % said
        return "connection failed (%s)" % type(exc).__name__
    return "%s: %s" % (type(exc).__name__, _short(exc, ()))  # the action's secrets are in force


def _probe_http(name, kind, method, url, timeout_s, judge, headers=None, body=None, auth=None, session=None):
    """Run one HTTP probe; `judge(status, text)` -> (health status, error or None, details)."""
    import requests

    started = time.monotonic()
    try:
        status, text = _http(session or requests.Session(), method, url, timeout_s, headers, body, auth)
    except Exception as exc:  # every network failure is a report, never an exception
        return _result(name, kind, DOWN, started, _network_error(exc, timeout_s), {"url": url})
    health, error, details = judge(status, text)
    details = dict(details or {}, url=url, http_status=status)
    return _result(name, kind, health, started, error, details)


def check_rudderstack(rudder, timeout_s, session=None, secrets=()):
    name = "rudderstack"
    if not rudder.get("write_key"):
        return _result(name, "rudderstack", NOT_CONFIGURED, None, "rudderstack.write_key is not set; events are not sent")
    url = (rudder.get("data_plane_url") or "").rstrip("/") + "/v1/batch"

    def judge(status, text):
        body = text.strip()
        if 200 <= status < 300 or status == 400:
            # 400: the empty probe batch was refused after the write key was accepted.
            return OK, None, {"answer": _short(body, secrets)}
        if status == 401:
            return MISCONFIGURED, "write key refused (401 %s)" % _short(body, secrets), {}
        if status == 404:
            return MISCONFIGURED, "source disabled or wrong data_plane_url (404 %s)" % _short(body, secrets), {}
        return DEGRADED, "data plane answered %d %s" % (status, _short(body, secrets)), {}

    return _probe_http(name, "rudderstack", "POST", url, timeout_s, judge,
                       headers={"Content-Type": "application/json"}, body=json.dumps({"batch": []}),
                       auth=(rudder["write_key"], ""), session=session)


def check_agent_api(agent_api, timeout_s, session=None, secrets=()):
    name = "agent_api"
    base = (agent_api.get("base_url") or "").rstrip("/")
    if not base:
        return _result(name, "agent_api", NOT_CONFIGURED, None, "agent_api.base_url is not set")
    headers = {"Accept": "application/json"}
    if agent_api.get("api_key"):
        headers["Authorization"] = "Bearer %s" % agent_api["api_key"]

    def judge(status, text):
        health = _http_status_class(status)
        if health == OK:
            return OK, None, {}
        if status in (401, 403):
            return health, "agent_api.api_key refused (%d)" % status, {}
        if status == 404:
            return health, "no GET /health at agent_api.base_url (404): wrong base_url or the platform " \
                           "does not implement docs/agent_api.md's health endpoint", {}
        return health, "agent platform answered %d %s" % (status, _short(text, secrets)), {}

    verify = with_defaults("agent_api", agent_api)["verify_tls"]
    import requests

    session = session or requests.Session()
    session.verify = verify
    return _probe_http(name, "agent_api", "GET", base + "/health", timeout_s, judge, headers=headers, session=session)


def check_llm_target(target, timeout_s, session=None, secrets=()):
    from synthralos_lib.llm.client import models_probe

    name = "llm:%s" % target.get("name")
    try:
        url, headers = models_probe(target)  # each dialect's path and auth (azure_openai included)
    except ValueError as exc:  # an azure_openai target with neither base_url nor resource
        return _result(name, "llm_target", DOWN, time.monotonic(), str(exc), {})
    model = target.get("model")

    def judge(status, text):
        health = _http_status_class(status)
        if health != OK:
            what = {401: "API key refused", 403: "API key lacks permission", 404: "no models endpoint: wrong base_url"}
            said = _short(_provider_message(text), secrets)
            error = "%s (%d %s)" % (what.get(status, "provider answered"), status, said)
            return health, error, {}
        listed = _listed_models(text)
        details = {"models_listed": len(listed) if listed is not None else None,
                   "model_listed": (model in listed) if listed is not None else None}
        return OK, None, details

    result = _probe_http(name, "llm_target", "GET", url, timeout_s, judge, headers=headers, session=session)
    result["details"].update(target=target.get("name"), provider=target.get("kind"), model=model)
    return result


def _json_object(text):
    try:
        body = json.loads(text)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _provider_message(text):
    error = _json_object(text).get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return text


def _listed_models(text):
    data = _json_object(text).get("data")
    if not isinstance(data, list):
        return None
    return [m.get("id") for m in data if isinstance(m, dict)]


# -- Redis and the st2 datastore ------------------------------------------------


def check_redis(url, timeout_s, slow_ms, secrets=()):
    name = "redis"
    if not url:
        return _result(name, "redis", NOT_CONFIGURED, None, "redis.url is not set; state lives in the st2 datastore")
    import redis

    from synthralos_lib.state.persistence import redis_persistence

    options = dict(decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        options["retry"] = Retry(NoBackoff(), 0)  # one try: the probe reports, it does not ride out outages
    except ImportError:  # redis-py < 4.1
        pass
    started = time.monotonic()
    client = redis.Redis.from_url(url, **options)
    details = {}
    try:
        client.ping()
        ping_ms = round((time.monotonic() - started) * 1000.0, 1)
        details["ping_ms"] = ping_ms
        details.update(redis_persistence(client))  # the outbox's durability, as get_queue_stats reports it
    except redis.AuthenticationError as exc:
        return _result(name, "redis", MISCONFIGURED, started, "authentication failed: %s" % _short(exc, secrets),
                       details)
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc) or "NOPERM" in str(exc):
            return _result(name, "redis", MISCONFIGURED, started, "authentication failed: %s" % _short(exc, secrets),
                       details)
        return _result(name, "redis", DEGRADED, started, "redis error: %s" % _short(exc, secrets), details)
    except (redis.TimeoutError, socket.timeout) as exc:
        return _result(name, "redis", DOWN, started, "no answer within %.1fs (%s)" % (timeout_s, type(exc).__name__),
                       details)
    except redis.RedisError as exc:
        return _result(name, "redis", DOWN, started, "unreachable: %s" % _short(exc, secrets), details)
    finally:
        try:
            client.close()
        except Exception:
            pass
    problems = []
    if not details["aof_enabled"]:
        problems.append("appendonly is off: the event outbox and breaker state do not survive a Redis restart")
    if details.get("aof_last_write_status") not in (None, "ok") or details.get("rdb_last_bgsave_status") not in (None, "ok"):
        problems.append("persistence is failing (aof_last_write_status=%s, rdb_last_bgsave_status=%s)"
                        % (details.get("aof_last_write_status"), details.get("rdb_last_bgsave_status")))
    if details["loading"]:
        problems.append("redis is loading its dataset")
    if details["ping_ms"] > slow_ms:
        problems.append("PING took %.1f ms (slow_ms %d)" % (details["ping_ms"], slow_ms))
    return _result(name, "redis", DEGRADED if problems else OK, started, "; ".join(problems) or None, details)


def check_datastore(service, secrets=()):
    """A set/get/delete round trip of one probe key through the action service."""
    from synthralos_lib.state.store import DatastoreStore

    name = "st2_datastore"
    started = time.monotonic()
    if service is None:
        return _result(name, "st2_datastore", NOT_CONFIGURED, None, "no action service (not run by st2)")
    token = uuid.uuid4().hex
    try:
        store = DatastoreStore(service)
        store.set(DATASTORE_PROBE_KEY, token, ttl=300)
        seen = store.get(DATASTORE_PROBE_KEY)
        store.delete(DATASTORE_PROBE_KEY)
    except Exception as exc:
        return _result(name, "st2_datastore", DOWN, started, "round trip failed: %s" % _short(exc, secrets))
    if seen != token:
        return _result(name, "st2_datastore", DEGRADED, started, "the value read back differs from the one written")
    return _result(name, "st2_datastore", OK, started)


def check_sensors(settings, service, now):
    """One result per sensor that ever wrote a heartbeat (ops.sensor_health): `down` when its heartbeat
    is older than sensor_health.stale_after_s or its oldest pending entry older than pending_max_age_s;
    a sensor st2 stopped on purpose is `not_configured`. With the store unreachable there is nothing to
    judge (the store's own check is down); any other failure reading them is one `down` result."""
    from synthralos_lib.ops import sensor_health
    from synthralos_lib.state.store import StoreError, get_store

    started = time.monotonic()
    try:
        rows = sensor_health.report(get_store(settings, service), sensor_health.sensor_health_settings(settings), now)
    except StoreError:
        return []  # the store's own check reports it down
    except Exception as exc:
        return [_result("sensors", "sensor", DOWN, started, "sensor heartbeats unreadable: %s" % _short(exc))]
    status = {sensor_health.UP: OK, sensor_health.DOWN: DOWN, sensor_health.STOPPED: NOT_CONFIGURED}
    figures = ("heartbeat_age_s", "last_read_at", "last_dispatch_at", "dispatched", "dead_lettered", "reconnects",
               "lag", "pending", "oldest_pending_age_s")
    return [_result("sensor:%s" % row["sensor"], "sensor", status[row["status"]], started, row["reason"],
                    {key: row.get(key) for key in figures}) for row in rows]


# -- running them ---------------------------------------------------------------


def planned_checks(settings, service, timeout_s, slow_ms, include=None):
    """[(name, callable)] for the configured dependencies, in report order."""
    secrets = settings.secrets()  # every check's error text is scrubbed of all of them before it is cut
    checks = [
        ("redis", lambda: check_redis(settings.redis_url, timeout_s, slow_ms, secrets=secrets)),
        ("st2_datastore", lambda: check_datastore(service, secrets=secrets)),
        ("rudderstack", lambda: check_rudderstack(settings.section("rudderstack"), timeout_s, secrets=secrets)),
        ("agent_api", lambda: check_agent_api(settings.section("agent_api"), timeout_s, secrets=secrets)),
    ]
    for target in settings.llm_targets():
        checks.append(("llm:%s" % target["name"], lambda t=target: check_llm_target(t, timeout_s, secrets=secrets)))
    if include:
        wanted = set(include)
        checks = [(n, fn) for n, fn in checks if n in wanted or n.split(":", 1)[0] in wanted]
    return checks


def _import_probe_modules():
    """Import what the checks import lazily, in this thread, before they start.

    Several threads importing the same packages at once (redis, requests, email) can deadlock on
    Python's module locks: seen on Python 3.8, where the action then hung until st2 killed it.
    """
    import redis  # noqa: F401
    import redis.backoff  # noqa: F401
    import redis.retry  # noqa: F401
    import requests  # noqa: F401

    from synthralos_lib.llm import client  # noqa: F401
    from synthralos_lib.ops import sensor_health  # noqa: F401
    from synthralos_lib.state import persistence, store  # noqa: F401


def run_checks(checks, timeout_s):
    """Run every check in its own thread; a check still running after timeout_s + 1 s is reported down."""
    _import_probe_modules()
    results = {}
    threads = []

    def run(name, fn):
        try:
            results[name] = fn()
        except Exception as exc:  # a bug in a probe must not hide the others
            results[name] = _result(name, "unknown", DOWN, None,
                                    "check raised %s: %s" % (type(exc).__name__, _short(exc, ())))

    for name, fn in checks:
        thread = threading.Thread(target=run, args=(name, fn), name="health-%s" % name)
        thread.daemon = True
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout_s + 1.0
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    out = []
    for name, _ in checks:
        out.append(results.get(name) or _result(name, "unknown", DOWN, None,
                                                "no answer within %.1fs" % (timeout_s + 1.0)))
    return out


def overall_status(results, store_name):
    """ok / degraded / down (see the module doc)."""
    state_check = "redis" if store_name == "redis" else "st2_datastore"
    for result in results:
        if result["name"] == state_check and result["status"] in (DOWN, MISCONFIGURED):
            return DOWN
    if all(r["status"] in (OK, NOT_CONFIGURED) for r in results):
        return OK
    return DEGRADED


def health_report(settings, service, timeout_s=5.0, slow_ms=1000, include=None, clock=time.time):
    """The whole report: {status, checked_at, store, dependencies: [...], problems: [...]}."""
    store_name = "redis" if settings.redis_url else "st2_datastore"
    results = run_checks(planned_checks(settings, service, timeout_s, slow_ms, include), timeout_s)
    if not include or "sensors" in include:
        results.extend(check_sensors(settings, service, clock()))
    problems = ["%s: %s%s" % (r["name"], r["status"], " (%s)" % r["error"] if r["error"] else "")
                for r in results if r["status"] not in (OK, NOT_CONFIGURED)]
    return {
        "status": overall_status(results, store_name),
        "checked_at": clock(),
        "store": store_name,
        "dependencies": results,
        "problems": problems,
    }
