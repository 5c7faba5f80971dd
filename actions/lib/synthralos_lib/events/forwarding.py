"""The one place that decides how an event leaves an agent-facing action.

Latency budget: forward_event, log_llm_cost and log_prompt_similarity stay
within the seed's 150 ms (p95) of their own work and never take more than
about 1 s of network time, whatever the data plane does. Delivery is the
flusher sensor's job (`events/flusher.py`); an action only tries an
opportunistic inline delivery, with one attempt and an `INLINE_TIMEOUT_S`
timeout, and only while the data plane is not marked unhealthy
(`events/health.py`). A failed attempt sets that shared mark (for
`Retry-After` when the data plane sent one), so the next calls skip straight
to queueing.

* Redis (`redis.url`): the event is scrubbed and enqueued in the outbox; when
  a full (or overdue) batch waits and the data plane is healthy, one inline
  batch goes out.
* No Redis: the event is tried once inline; whatever cannot go now waits in
  the datastore queue, which the flusher drains.
* Redis configured but unreachable: the same as no Redis (`mode:
  direct_fallback`), so the event is not lost when the data plane is down too.

The result says what happened to this event: `status` is `queued`,
`delivered`, `pending_retry` (with `where`), `dead_lettered` (with `reason`),
`rejected` (queue full, with `reason`) or `skipped` (no write key). Telemetry
problems are reported, never raised: a dead data plane must not fail an agent
workflow.
"""

import logging
import os
import time

from synthralos_lib.events.outbox import DirectOutbox, RedisOutbox, make_client
from synthralos_lib.state.config import with_defaults
from synthralos_lib.state.redaction import scrub_if_needed
from synthralos_lib.state.store import DatastoreStore, StoreError

LOG = logging.getLogger(__name__)
NO_WRITE_KEY = "rudderstack.write_key is not set; events are not sent"
INLINE_TIMEOUT_S = 1.0
INLINE_MAX_BATCHES = 1


def open_outbox(settings, store, reclaim_idle_ms=None, clock=time.time):
    """The outbox for this config, the one place outboxes are built: RedisOutbox when redis.url is
    configured (`store` a RedisStore), else the datastore-backed DirectOutbox over `store`."""
    rudder = settings.section("rudderstack")
    if settings.redis_url:
        return RedisOutbox(store.client, store.key(""), rudder, reclaim_idle_ms=reclaim_idle_ms, clock=clock)
    return DirectOutbox(store, rudder, clock=clock)


def fallback_outbox(settings, service, clock=time.time):
    """The datastore queue used when Redis is configured but unreachable (and always drained by the flusher)."""
    return DirectOutbox(DatastoreStore(service), settings.section("rudderstack"), clock=clock)


def forward(settings, store, event, service=None, client=None, inline_flush=True, clock=time.time):
    """Queue or deliver one built event; returns a JSON-able result (never raises for telemetry failures).

    `service`: the action service, for the datastore queue when Redis is down.
    """
    rudder = settings.section("rudderstack")
    event = scrub_if_needed(event, settings.secrets())  # before it is queued, sent or dead-lettered anywhere
    client = client or inline_client(rudder)
    base = {"event": event["event"], "message_id": event["messageId"]}
    if client is None:
        return dict(base, status="skipped", forwarded=False, reason=NO_WRITE_KEY)
    if settings.redis_url:
        import redis  # only needed, and only installed-for-sure, when Redis is configured

        try:
            outbox = open_outbox(settings, store)
            queued = outbox.enqueue(event)
        except (redis.RedisError, StoreError) as exc:  # Redis down: the datastore queue keeps the event
            LOG.warning("[RudderStack] outbox unavailable (%s); using the st2 datastore queue", type(exc).__name__)
            if service is None:
                return dict(base, status="rejected", forwarded=False, mode="direct_fallback",
                            reason="Redis unreachable (%s) and no st2 datastore to queue in" % type(exc).__name__)
            result = _direct(fallback_outbox(settings, service), client, event, clock)
            return dict(base, mode="direct_fallback", outbox_error=type(exc).__name__, **result)
        result = dict(base, mode="outbox", forwarded=queued["queued"], dropped_oldest=queued["dropped"])
        if not queued["queued"]:
            return dict(result, status="rejected", reason=queued["reason"])
        result.update(status="queued", outbox_id=queued["id"])
        flush = _inline_flush(outbox, client, clock) if inline_flush else None
        if flush is not None:
            result["flush"] = flush
        return result
    return dict(base, mode="direct", **_direct(open_outbox(settings, store), client, event, clock))


def inline_client(rudder):
    """The client for deliveries inside an agent-facing action: one attempt, short timeout.

    The action must not wait out retries or a hung data plane; what fails here
    waits in the outbox / datastore queue for the flusher sensor.
    """
    timeout = min(float(with_defaults("rudderstack", rudder)["request_timeout_s"]), INLINE_TIMEOUT_S)
    return make_client(dict(rudder, max_retries=0, request_timeout_s=timeout))


def _inline_flush(outbox, client, clock):
    """One opportunistic batch when one is due and the data plane is not marked unhealthy; never raises."""
    try:
        if not outbox.due():
            return None
        held = outbox.health.unhealthy()
        if held:
            return {"status": "skipped", "reason": "data plane marked unhealthy (%s); the flusher delivers"
                    % (held["reason"] or "recent failure"), "retry_at_ms": held["until_ms"]}
        return outbox.flush(client, force=False, max_batches=INLINE_MAX_BATCHES, claim_alert=False,
                            deadline=clock() + INLINE_TIMEOUT_S)
    except Exception as exc:  # the event is queued; an inline flush problem is only reported
        LOG.warning("[RudderStack] inline flush failed: %s", type(exc).__name__)
        return {"status": "skipped", "reason": "inline flush failed: %s" % type(exc).__name__}


def _direct(outbox, client, event, clock):
    """No (reachable) Redis: deliver now if the data plane is healthy, else queue in the datastore."""
    try:
        held = _safe_unhealthy(outbox.health)
        if held:
            outcome = outbox.queue_outcome(event, "data plane marked unhealthy (%s)" % (held["reason"] or "recent failure"))
        else:
            outcome = outbox.deliver(client, event)
    except StoreError as exc:  # the datastore itself failing: the event could not be kept
        LOG.warning("[RudderStack] st2 datastore queue unavailable: %s", type(exc).__name__)
        return {"status": "rejected", "forwarded": False,
                "reason": "not delivered and the st2 datastore queue failed: %s" % type(exc).__name__}
    outcome["forwarded"] = outcome["status"] in ("delivered", "pending_retry")
    return outcome


def _safe_unhealthy(health):
    try:
        return health.unhealthy()
    except StoreError:
        return None  # cannot read the mark: try the (short) inline attempt


def correlation(settings, source_execution_id=None, **values):
    """Correlation for an event built by an action: config defaults, and this execution's id when no source is given."""
    from synthralos_lib.events.builders import Correlation

    values = {k: v for k, v in values.items() if v not in (None, "")}
    values["st2_execution_id"] = source_execution_id or os.environ.get("ST2_ACTION_EXECUTION_ID") or None
    return Correlation(settings.section("observability"), **values)


def refused_or_skipped(settings, feature, check, *args):
    """What an event action answers before building: `(False, {"error"})` when `check(*args)` refuses
    the input (even with the feature off, as st2 refuses what the schema can say), the `skipped`
    result when `features.<feature>` is off, else None (go on)."""
    try:
        check(*args)
    except ValueError as exc:
        return False, {"error": str(exc)}
    if not settings.flag(feature):
        return {"status": "skipped", "forwarded": False, "reason": "features.%s is off" % feature}
    return None
