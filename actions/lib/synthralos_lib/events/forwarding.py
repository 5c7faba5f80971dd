"""The one place that decides how an event leaves an action.

With Redis: enqueue into the outbox, then flush inline only when a full batch
(or an overdue one) is waiting, with one attempt per batch and a short
timeout, so the agent-facing action stays fast. If
Redis itself is unreachable, the event is sent directly instead. Without
Redis: sent directly. In every case telemetry problems are reported in the
result and never raised: a dead data plane must not fail an agent workflow.
"""

import logging
import os

from synthralos_lib.events.outbox import DirectOutbox, RedisOutbox, make_client

LOG = logging.getLogger(__name__)
NO_WRITE_KEY = "rudderstack.write_key is not set; events are not sent"
INLINE_TIMEOUT_S = 5.0


def open_outbox(settings, store, reclaim_idle_ms=None):
    """RedisOutbox when redis.url is configured, else DirectOutbox over the store."""
    if settings.redis_url:
        return RedisOutbox(store.client, store.key(""), settings.section("rudderstack"), reclaim_idle_ms=reclaim_idle_ms)
    return DirectOutbox(store)


def forward(settings, store, event, client=None, inline_flush=True):
    """Queue or send one built event; returns a JSON-able result (never raises for telemetry failures)."""
    rudder = settings.section("rudderstack")
    client = client or make_client(rudder)
    base = {"event": event["event"], "message_id": event["messageId"]}
    if client is None:
        return dict(base, status="skipped", forwarded=False, reason=NO_WRITE_KEY)
    if settings.redis_url:
        import redis  # only needed, and only installed-for-sure, when Redis is configured

        try:
            outbox = open_outbox(settings, store)
            queued = outbox.enqueue(event)
            result = dict(base, mode="outbox", forwarded=queued["queued"], dropped_oldest=queued["dropped"])
            if not queued["queued"]:
                return dict(result, status="rejected", reason=queued["reason"])
            result.update(status="queued", outbox_id=queued["id"])
            if inline_flush and outbox.due():
                result["flush"] = outbox.flush(inline_client(rudder), force=False, max_batches=5)
            return result
        except redis.RedisError as exc:  # Redis down or misbehaving: do not lose the event if we can help it
            LOG.warning("[RudderStack] outbox unavailable (%s); sending the event directly", type(exc).__name__)
            report = _direct(store, client, event, store_dead_letters=False)
            return dict(base, mode="direct_fallback", outbox_error=type(exc).__name__, **report)
    return dict(base, mode="direct", **_direct(store, client, event))


def inline_client(rudder):
    """The client for flushes inside forward_event: one attempt per batch, short timeout.

    The agent-facing action must not wait out retries; a batch that fails here
    is handed back at once and the timer's flush retries it with the full rules.
    """
    timeout = min(float(rudder.get("request_timeout_s", 10)), INLINE_TIMEOUT_S)
    return make_client(dict(rudder, max_retries=0, request_timeout_s=timeout))


def _direct(store, client, event, store_dead_letters=True):
    try:
        if store_dead_letters:
            report = DirectOutbox(store).send(client, [event])
        else:
            delivery = client.send([event])
            report = {"status": "ok" if delivery.delivered else "failed", **delivery.summary()}
    except Exception as exc:  # the datastore itself failing: report, never raise
        LOG.warning("[RudderStack] direct delivery failed: %s", type(exc).__name__)
        return {"status": "failed", "forwarded": False, "error": "%s: %s" % (type(exc).__name__, exc)}
    delivered = report.get("delivered", 0) == 1
    status = "delivered" if delivered else ("config_error" if report.get("config_error") else "failed")
    return {"status": status, "forwarded": delivered, "delivery": report}


def correlation(settings, source_execution_id=None, **values):
    """Correlation for an event built by an action: config defaults, and this execution's id when no source is given."""
    from synthralos_lib.events.builders import Correlation

    values = {k: v for k, v in values.items() if v not in (None, "")}
    values["st2_execution_id"] = source_execution_id or os.environ.get("ST2_ACTION_EXECUTION_ID") or None
    return Correlation(settings.section("observability"), **values)
