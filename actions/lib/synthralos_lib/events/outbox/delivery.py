"""What both outboxes share: the flush report, the data-plane health bookkeeping, the dead-letter bounds
and the replay's resend and result (so a replay reads the same on Redis and on the datastore)."""

import json
import logging

from synthralos_lib.events.health import alert_payload
from synthralos_lib.events.rudderstack import RudderStackClient
from synthralos_lib.state.redaction import scrub_and_cap, scrub_result

LOG = logging.getLogger("synthralos_lib.events.outbox")

# Dead letters are bounded in bytes, not only in count: one letter's event is cut to MAX_DEAD_LETTER_BYTES
# of JSON (`bounded_letter_event`), and the oldest letters go once the dead letters hold more than the
# budget: DEAD_LETTER_BYTES for the Redis stream, DIRECT_DEAD_LETTER_BYTES for the datastore's list (one
# st2 datastore value, which MongoDB keeps under 16 MB).
MAX_DEAD_LETTER_BYTES = 64 * 1024
DEAD_LETTER_BYTES = 64 * 1024 * 1024
DIRECT_DEAD_LETTER_BYTES = 4 * 1024 * 1024
DEAD_LETTER_CUT_CHARS = 2048  # each string of a letter's event that is too big is cut to this
COUNTERS = (
    "enqueued",
    "delivered",
    "retries",
    "requests",
    "dead_lettered",
    "overflow_rejected",
    "overflow_dropped",
    "reclaimed",
    "replayed",
    "config_errors",
)


def bounded_letter_event(event):
    """`event` as a dead letter keeps it: whole when its JSON fits MAX_DEAD_LETTER_BYTES, else with every
    string scrubbed and cut (saying so), else only its ids and the start of its JSON."""
    text = json.dumps(event, separators=(",", ":"))
    if len(text.encode("utf-8")) <= MAX_DEAD_LETTER_BYTES:
        return event
    cut = scrub_result(event, (), DEAD_LETTER_CUT_CHARS)
    if len(json.dumps(cut, separators=(",", ":")).encode("utf-8")) <= MAX_DEAD_LETTER_BYTES:
        return cut
    # `text` is ASCII (json.dumps escapes the rest): stored again as JSON, a character takes at most 2 bytes.
    ids = dict((k, scrub_and_cap(event.get(k), 256)) for k in ("messageId", "type", "event")
               if isinstance(event, dict) and isinstance(event.get(k), str))
    return dict(ids, dead_letter_cut=scrub_and_cap(text, MAX_DEAD_LETTER_BYTES // 8, note_cut=True))


class FlushReport(object):
    def __init__(self):
        self.delivered = 0
        self.dead_lettered = 0
        self.retry_later = 0
        self.reclaimed = 0
        self.requests = 0
        self.retries = 0
        self.batches = 0
        self.config_error = None
        self.last_error = None
        self.retry_after_s = None
        self.stopped = None  # why this flush stopped early, if it did
        self.dead = []  # [{"message_id", "event", "reason"}]

    def add(self, delivery):
        self.delivered += len(delivery.delivered)
        self.dead_lettered += len(delivery.dead)
        self.retry_later += len(delivery.retry_later)
        self.requests += delivery.requests
        self.retries += delivery.retries
        self.config_error = self.config_error or delivery.config_error
        self.last_error = delivery.last_error or self.last_error
        if delivery.retry_after_s is not None:
            self.retry_after_s = delivery.retry_after_s
        for event, reason in delivery.dead:
            self.dead.append({"message_id": event.get("messageId"), "event": event.get("event"), "reason": reason})
            LOG.warning("[RudderStack] event %s dead-lettered: %s", event.get("messageId"), reason)
        if delivery.delivered:
            LOG.info("[RudderStack] batch delivered: %d event(s) in %d request(s)", len(delivery.delivered),
                     delivery.requests)

    def as_dict(self):
        if self.config_error:
            status = "config_error"
        elif self.retry_later:
            status = "retrying"
        else:
            status = "ok"
        return {
            "status": status,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "retry_later": self.retry_later,
            "reclaimed": self.reclaimed,
            "batches": self.batches,
            "requests": self.requests,
            "retries": self.retries,
            "config_error": self.config_error,
            "last_error": self.last_error,
            "retry_after_s": self.retry_after_s,
            "stopped": self.stopped,
            "dead_letters": self.dead[:50],
        }


def _safely(what, fn, *args):
    """Health bookkeeping must never break a flush: log and carry on when the store fails."""
    try:
        return fn(*args)
    except Exception as exc:  # StoreError, or anything else a backend raises
        LOG.warning("[RudderStack] %s failed: %s", what, type(exc).__name__)
        return None


def record_outcome(health, report):
    """After a delivery attempt: mark the data plane healthy or unhealthy (honouring Retry-After)."""
    if health is None:
        return
    if report.retry_later and not report.config_error:
        _safely("marking the data plane unhealthy", health.mark_unhealthy, report.last_error, report.retry_after_s)
    elif report.delivered and not report.config_error:
        _safely("clearing the data plane mark", health.mark_healthy)


def alert_result(health, report, claim_alert):
    """`alert` for a flush result: True when this caller took the window's config-error alert slot."""
    if health is None or not claim_alert:
        return False
    pending = _safely("reading the config error", health.pending_config_error)
    if not pending:
        return False
    return bool(_safely("claiming the config-error alert", health.claim_alert))


def note_refused(health, delivery, data_plane_url, dead_lettered=False):
    """Record a 401/404 for the alert; True while refused events may still be kept (inside the fix window).

    `dead_lettered`: the refused events stay dead letters whatever the window (a replay), so they count as such.
    """
    if health is None:
        return True
    keep = _safely("recording the config error", health.note_config_error, delivery.config_error, data_plane_url,
                   len(delivery.refused), dead_lettered)
    return True if keep is None else keep  # store down: keeping is the safe choice


def flush_result(health, report, claim_alert, where):
    """A flush's result (both outboxes): health marked, `pending_retry_in` (`where`), the alert slot if claimed."""
    record_outcome(health, report)
    result = report.as_dict()
    result["pending_retry_in"] = where if report.retry_later else None
    result["alert"] = alert_result(health, report, claim_alert)
    result["alert_payload"] = alert_payload(health.pending_config_error()) if result["alert"] else None
    return result


def split_refused(health, delivery, data_plane_url):
    """Events refused with 401/404: (kept for the fix window, [(event, reason)] to dead-letter now)."""
    if not delivery.refused:
        return [], []
    if note_refused(health, delivery, data_plane_url):
        return [e for e, _ in delivery.refused], []
    return [], [(e, reason + " (still refused after the fix window)") for e, reason in delivery.refused]


def take_delivery(report, health, delivery, data_plane_url):
    """Account one batch's delivery in `report`: (events kept for the fix window, [(event, reason)] to dead-letter)."""
    keep, refused_dead = split_refused(health, delivery, data_plane_url)
    report.add(delivery)
    report.dead_lettered += len(refused_dead)
    report.retry_later += len(keep)
    return keep, list(delivery.dead) + refused_dead


def resend(client, health, data_plane_url, letters):
    """Send dead letters ([{"id", "event", ...}], oldest first) again now, for `replay`.

    Returns (delivery, report, outcome) where `outcome` maps each letter id to "delivered", a new reason
    (refused with 401/404 or rejected with 400/413: it stays dead-lettered with that reason) or None (not
    tried or left to retry later: it stays as it is). A 401/404 is recorded for the alert like a refused flush.
    """
    id_of = {id(d["event"]): d["id"] for d in letters}
    delivery = client.send([d["event"] for d in letters])
    if delivery.refused:
        note_refused(health, delivery, data_plane_url, dead_lettered=True)
    report = FlushReport()
    report.add(delivery)
    record_outcome(health, report)
    outcome = {d["id"]: None for d in letters}
    outcome.update((id_of[id(e)], "delivered") for e in delivery.delivered)
    outcome.update((id_of[id(e)], reason) for e, reason in list(delivery.dead) + list(delivery.refused))
    return delivery, report, outcome


def nothing_to_replay(ids):
    return {"replayed": 0, "replayed_ids": [], "rejected": [], "not_found": sorted(set(ids or []))}


def replay_result(letters, outcome, new_ids, delivery, ids):
    """The replay result, the same on both outboxes; `new_ids`: a rewritten letter's id now (Redis re-adds it)."""
    delivered = sorted(i for i, what in outcome.items() if what == "delivered")
    rejected = []
    for d in letters:
        what = outcome[d["id"]]
        if what == "delivered":
            continue
        reason = what if what is not None else "retry later: %s" % (
            delivery.last_error or "not sent after an earlier refusal in this replay")
        rejected.append({"id": d["id"], "reason": reason, "dead_letter_id": new_ids.get(d["id"], d["id"])})
    return {
        "replayed": len(delivered),
        "replayed_ids": delivered,
        "rejected": rejected,
        "not_found": sorted(set(ids or []) - set(outcome)),
        "config_error": delivery.config_error,
    }


def make_client(rudder, **kwargs):
    """A RudderStackClient for the `rudderstack` section, or None when no write key is configured."""
    if not rudder.get("write_key"):
        return None
    return RudderStackClient.from_settings(rudder, **kwargs)
