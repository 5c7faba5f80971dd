"""The long-running event flusher (run by `sensors/event_flusher_sensor.py`).

One `tick()` drains what is due and says how long to wait before the next:

* Redis outbox (when `redis.url` is set): a flush as this flusher's own,
  long-lived consumer of the `flushers` group, so several sensor nodes split
  the stream between them (XREADGROUP hands each entry to one consumer;
  entries a dead node held are reclaimed after `reclaim_idle_ms`). Batches go
  when a full batch waits or the oldest event is older than
  `flush_interval_ms`.
* The st2 datastore queue (direct mode, and events queued while Redis was
  down), under a short best-effort drain lock so two nodes rarely send the
  same entries twice (a duplicate keeps its messageId; RudderStack drops it).
  Checked every tick while it holds events, else every `flush_interval_ms`.
* Full delivery rules (retries with backoff, Retry-After, split on 400/413,
  fix window on 401/404). While the data plane fails, the flusher backs off
  (`Retry-After` when given, else exponential with jitter up to
  `MAX_IDLE_BACKOFF_S`) and keeps the shared unhealthy mark up, so agent-facing
  actions queue without trying.
* A 401/404 recorded by any path (here, an inline attempt, direct mode) is
  dispatched as `synthralos.rudderstack_config_error` by whichever flusher
  takes the alert slot first: once per alert window.
* Redis unreachable: logged once per outage, retried on the same backoff;
  the datastore queue is still drained.

Nothing here blocks the OS thread: every wait is a sleep the caller performs
(eventlet-patched in st2's sensor container), every socket has a timeout.
"""

import logging
import time

from synthralos_lib import backoff
from synthralos_lib.events.forwarding import fallback_outbox, open_outbox
from synthralos_lib.events.health import alert_payload
from synthralos_lib.events.outbox import consumer_name, make_client
from synthralos_lib.state.store import StoreError, get_store

LOG = logging.getLogger(__name__)
CONFIG_ERROR_TRIGGER = "synthralos.rudderstack_config_error"
POLL_S = 1.0
MAX_IDLE_BACKOFF_S = 60.0
DRAIN_LOCK = "events.queue.drain"
MAX_BATCHES_PER_TICK = 20


def take_other_slots(claimed, healths):
    """After alerting from one store, hold the other stores' alert slots too (Redis and datastore paths)."""
    for other in healths:
        if other is not claimed:
            try:
                other.claim_alert()
            except Exception:  # best-effort: at worst a second store alerts once
                pass


class BackgroundFlusher(object):
    """State of one flusher process between ticks. `dispatch(trigger, payload)` sends a trigger."""

    def __init__(self, settings, service, dispatch, logger=None, clock=time.time):
        self.settings = settings
        self.rudder = settings.section("rudderstack")  # a PackConfig section: every default filled in
        self.service = service
        self.dispatch = dispatch
        self.log = logger or LOG
        self._clock = clock
        self.consumer = consumer_name()
        self.client = make_client(self.rudder)
        self.failures = 0
        self.redis_down = False
        self._said_no_key = False
        self._next_datastore_check = 0.0
        self.datastore = fallback_outbox(settings, service, clock=clock)
        self._redis_outbox = None

    def _outbox(self):
        if self._redis_outbox is None:
            self._redis_outbox = open_outbox(self.settings, get_store(self.settings, self.service), clock=self._clock)
        return self._redis_outbox

    def tick(self):
        """Deliver what is due; returns {"sleep_s", "reports", "dispatched"} (one tick's account)."""
        if self.client is None:
            if not self._said_no_key:
                self.log.warning("[RudderStack] rudderstack.write_key is not set; the flusher is idle")
                self._said_no_key = True
            return {"sleep_s": MAX_IDLE_BACKOFF_S, "reports": {}, "dispatched": []}
        reports, healths = {}, []
        if self.settings.redis_url:
            reports["redis"] = self._flush_redis()
            if not self.redis_down:
                healths.append(self._outbox().health)
        if self._clock() >= self._next_datastore_check:
            report = self._flush_datastore()
            healths.append(self.datastore.health)  # a 401/404 met in direct mode may have queued nothing
            if report is not None:
                reports["datastore"] = report
        dispatched = self._alert(healths, reports)
        return {"sleep_s": self._next_sleep(reports), "reports": reports, "dispatched": dispatched}

    def _flush_redis(self):
        import redis

        try:
            report = self._outbox().flush(self.client, force=False, max_batches=MAX_BATCHES_PER_TICK,
                                          consumer=self.consumer, claim_alert=False, forget_consumer=False)
        except (redis.RedisError, StoreError) as exc:
            if not self.redis_down:
                self.log.warning("[RudderStack] Redis outbox unreachable (%s); retrying with backoff",
                                 type(exc).__name__)
            self.redis_down = True
            self._next_datastore_check = 0.0  # events queued meanwhile land in the datastore
            return {"status": "redis_unavailable", "error": type(exc).__name__}
        if self.redis_down:
            self.log.info("[RudderStack] Redis outbox reachable again")
            self.redis_down = False
        return report

    def _flush_datastore(self):
        store = self.datastore.store
        interval = float(self.rudder["flush_interval_ms"]) / 1000.0
        try:
            if not self.datastore.waiting(1):  # idle: one list call, no lock traffic
                self._next_datastore_check = self._clock() + interval
                return None
            token = store.acquire_lock(DRAIN_LOCK, ttl=max(30.0, float(self.rudder["request_timeout_s"]) * 3))
            if token is None:
                return None
            try:
                report = self.datastore.flush(self.client, max_batches=MAX_BATCHES_PER_TICK, claim_alert=False)
                remaining = self.datastore.waiting(1)
            finally:
                store.release_lock(DRAIN_LOCK, token)
        except StoreError as exc:
            self.log.warning("[RudderStack] st2 datastore queue unreadable: %s", type(exc).__name__)
            return {"status": "datastore_unavailable", "error": type(exc).__name__}
        self._next_datastore_check = 0.0 if remaining else self._clock() + interval
        return report if report["batches"] else None

    def _alert(self, healths, reports):
        """Dispatch the config-error trigger when one is recorded and this flusher takes the window's slot."""
        dispatched = []
        for health in healths:
            try:
                pending = health.pending_config_error()
                if not pending or not health.claim_alert():
                    continue
            except Exception as exc:  # a store problem: try again next tick
                self.log.warning("[RudderStack] config-error alert check failed: %s", type(exc).__name__)
                continue
            payload = alert_payload(pending)
            self.log.error("[RudderStack] data plane refused the write key or source (HTTP %d); dispatching %s",
                           payload["status"], CONFIG_ERROR_TRIGGER)
            self.dispatch(CONFIG_ERROR_TRIGGER, payload)
            dispatched.append(payload)
            take_other_slots(health, healths)  # one alert per window, whichever store recorded it
            break
        return dispatched

    def _next_sleep(self, reports):
        failing = [r for r in reports.values() if r.get("status") in ("retrying", "config_error", "redis_unavailable",
                                                                         "datastore_unavailable")]
        if failing:
            self.failures += 1
            base = max(float(self.rudder["retry_delay_ms"]) / 1000.0, POLL_S)
            delay = backoff.capped_exponential(self.failures, base, MAX_IDLE_BACKOFF_S, jitter=backoff.EQUAL)
            waits = [r.get("retry_after_s") for r in failing if r.get("retry_after_s") is not None]
            return max([delay] + waits)
        self.failures = 0
        busy = any(r.get("batches", 0) >= MAX_BATCHES_PER_TICK for r in reports.values())
        return 0.0 if busy else POLL_S

    def close(self):
        """Leave the consumer group (only if this flusher holds nothing; a held entry is reclaimed later)."""
        if self._redis_outbox is None:
            return
        try:
            self._redis_outbox.forget_consumer(self.consumer)
        except Exception:  # housekeeping only
            pass


# -- one-shot operations for the flush_events and get_queue_stats actions ------


def flush_now(settings, store, service, force=True, max_batches=50, reclaim_idle_ms=None):
    """One full flush of the Redis outbox (when configured) and of the datastore queue.

    Used by flush_events (and so by the timer workflow): `alert` is True when
    this run took the config-error alert slot, `config_error` then holds what
    to put in the trigger. A Redis outage is a result (`status:
    redis_unavailable`), not an exception.
    """
    import redis

    rudder = settings.section("rudderstack")
    client = make_client(rudder)
    if client is None:
        return None
    datastore = fallback_outbox(settings, service)
    result = {"mode": "outbox" if settings.redis_url else "direct", "data_plane_url": rudder.get("data_plane_url")}
    healths = [datastore.health]
    if settings.redis_url:
        try:
            outbox = open_outbox(settings, store, reclaim_idle_ms=reclaim_idle_ms)
            healths.append(outbox.health)
            report = outbox.flush(client, force=force, max_batches=max_batches)
            report["queue"] = outbox.stats()
        except (redis.RedisError, StoreError) as exc:
            report = redis_unavailable(exc)
        result.update(report)
    try:
        direct = datastore.flush(client, max_batches=max_batches, claim_alert=not result.get("alert"))
    except StoreError as exc:
        direct = {"status": "datastore_unavailable", "error": str(exc), "delivered": 0, "alert": False}
    if not settings.redis_url:
        result.update(direct)
        result["queue"] = _safe_stats(datastore)
    else:
        result["datastore_queue"] = direct
        for name in ("delivered", "dead_lettered", "retry_later"):
            result[name] = result.get(name, 0) + direct.get(name, 0)
        if direct.get("alert"):
            result.update(alert=True, config_error=direct["config_error"], alert_payload=direct["alert_payload"])
        if result.get("alert"):
            take_other_slots(datastore.health if direct.get("alert") else healths[-1], healths)
    return result


def redis_unavailable(exc):
    return {"status": "redis_unavailable", "delivered": 0, "dead_lettered": 0, "retry_later": 0,
            "config_error": None, "alert": False,
            "error": "Redis outbox unreachable: %s: %s" % (type(exc).__name__, exc)}


def _safe_stats(outbox):
    try:
        return outbox.stats()
    except StoreError as exc:
        return {"status": "datastore_unavailable", "error": str(exc)}


def queue_stats(settings, store, service, include_dead_letters=False, limit=20):
    """Outbox (or datastore queue) stats, the datastore queue's depth, and Redis persistence with a warning."""
    import redis

    from synthralos_lib.state.persistence import redis_persistence

    datastore = fallback_outbox(settings, service)
    outbox = datastore
    if settings.redis_url:
        try:
            outbox = open_outbox(settings, store)
            stats = outbox.stats()
            stats["persistence"] = redis_persistence(store.client)
            stats["warning"] = stats["persistence"]["warning"]
        except redis.RedisError as exc:
            stats = dict(redis_unavailable(exc), backend="redis_stream")
            for name in ("delivered", "dead_lettered", "retry_later", "config_error", "alert"):
                stats.pop(name)
            outbox = None
        stats["datastore_queue"] = _safe_stats(datastore)
    else:
        stats = _safe_stats(datastore)
    if include_dead_letters and outbox is not None:
        stats["dead_letter_entries"] = [
            {k: d.get(k) for k in ("id", "message_id", "reason", "failed_at_ms")} for d in outbox.dead_letters(limit)
        ]
    return stats
