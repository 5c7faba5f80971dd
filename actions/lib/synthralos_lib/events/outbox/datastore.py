"""`DirectOutbox`: the outbox in the st2 datastore, for a pack without Redis (see the package docstring)."""

import json
import time
import uuid

from synthralos_lib.events.health import DataPlaneHealth
from synthralos_lib.events.outbox.base import Outbox
from synthralos_lib.events.outbox.delivery import (
    COUNTERS,
    DIRECT_DEAD_LETTER_BYTES,
    LOG,
    FlushReport,
    _safely,
    bounded_letter_event,
    flush_result,
    nothing_to_replay,
    record_outcome,
    replay_result,
    resend,
    take_delivery,
)
from synthralos_lib.state.config import with_defaults
from synthralos_lib.state.redaction import scrub_and_cap

DIRECT_DEAD_LETTER_KEY = "events.dead_letters"
DIRECT_DEAD_LETTER_MAX = 1000
DIRECT_QUEUE_PREFIX = "events.queue."
DIRECT_QUEUE_DEPTH = "events.queue_depth"  # a hint: +1 per enqueue, set to the true depth by each drain
DIRECT_QUEUE_MAX = 10000  # the datastore is no bulk store: its queue holds at most this many
DATASTORE_PAGE = 100  # st2 api.max_page_size default


class DirectOutbox(Outbox):
    """No Redis: a datastore-backed queue (one key per event) and a datastore dead-letter list."""

    mode = "direct"
    can_requeue = False

    def __init__(self, store, rudder=None, clock=time.time, health=None):
        rudder = rudder or {}
        self.store = store
        self._clock = clock
        self.data_plane_url = rudder.get("data_plane_url") or ""
        filled = with_defaults("rudderstack", rudder)
        self.batch_size = int(filled["batch_size"])
        self.max_len = min(int(filled["max_queue_length"]), DIRECT_QUEUE_MAX)
        self.dead_letter_bytes = DIRECT_DEAD_LETTER_BYTES
        self.health = health or DataPlaneHealth.for_settings(store, rudder, clock=clock)

    where = "st2_datastore:synthralos." + DIRECT_QUEUE_PREFIX + "*"

    def _count(self, name, amount):
        if amount:
            _safely("counting " + name, self.store.incr, "events.stats." + name, amount)

    # -- the queue -----------------------------------------------------------

    def enqueue(self, event):
        """Queue one event for the flusher; {"queued", "key", "reason"}. Raises StoreError if the datastore fails."""
        if int(self.store.get(DIRECT_QUEUE_DEPTH, 0) or 0) >= self.max_len:
            self._count("overflow_rejected", 1)
            LOG.warning("[RudderStack] datastore queue full (%d events): event %s rejected", self.max_len,
                        event.get("messageId"))
            return {"queued": False, "key": None,
                    "reason": "datastore queue full (%d events); the event is not kept" % self.max_len}
        key = "%s%013d.%s" % (DIRECT_QUEUE_PREFIX, int(self._clock() * 1000), event.get("messageId") or uuid.uuid4().hex)
        self.store.set(key, {"event": event, "queued_at_ms": int(self._clock() * 1000)})
        _safely("counting the queue depth", self.store.incr, DIRECT_QUEUE_DEPTH, 1)
        self._count("enqueued", 1)
        return {"queued": True, "key": key, "reason": None}

    def waiting(self, limit):
        """[(key, record)] oldest first, up to `limit`."""
        found, offset = {}, 0
        while len(found) < limit:
            page = self.store.items(DIRECT_QUEUE_PREFIX, limit=min(DATASTORE_PAGE, limit - len(found)), offset=offset)
            fresh = [(key, value) for key, value in page if key not in found]
            found.update(fresh)
            if len(page) < DATASTORE_PAGE or not fresh:  # last page (or a service that does not page)
                break
            offset += len(page)
        return sorted(found.items(), key=lambda item: item[0])[:limit]

    def depth(self, cap=DIRECT_QUEUE_MAX):
        """How many events wait (at most `cap`), counted without reading them (`DatastoreStore.count`)."""
        return self.store.count(DIRECT_QUEUE_PREFIX, cap, page_size=DATASTORE_PAGE)

    def _dead_letter(self, items):
        for event, reason in items:
            self._push_letter({"id": uuid.uuid4().hex, "message_id": event.get("messageId"),
                               "reason": scrub_and_cap(reason or "", 1000), "failed_at_ms": int(self._clock() * 1000),
                               "event": bounded_letter_event(event)})
        self._count("dead_lettered", len(items))

    def _push_letter(self, letter):
        """Newest first; at most DIRECT_DEAD_LETTER_MAX letters and dead_letter_bytes bytes (the oldest go)."""
        self.store.list_push(DIRECT_DEAD_LETTER_KEY, letter, max_len=DIRECT_DEAD_LETTER_MAX,
                             max_bytes=self.dead_letter_bytes)

    def _note(self, delivery):
        self._count("delivered", len(delivery.delivered))
        self._count("retries", delivery.retries)
        self._count("requests", delivery.requests)
        self._count("config_errors", 1 if delivery.config_error else 0)
        if delivery.config_error:
            _safely("recording the last config error", self.store.set, "events.stats.last_config_error",
                    delivery.config_error)
        if delivery.last_error:
            _safely("recording the last error", self.store.set, "events.stats.last_error", delivery.last_error)

    def deliver(self, client, event):
        """Try one event now; what cannot go now waits in the queue. Returns the event's outcome:
        {"status": delivered | pending_retry | dead_lettered | rejected, "where"/"reason", "delivery"}.
        Raises StoreError only if the event had to be queued and the datastore failed."""
        report = FlushReport()
        delivery = client.send([event])
        _, dead = take_delivery(report, self.health, delivery, self.data_plane_url)
        report.batches = 1
        self._note(delivery)
        outcome = {"delivery": report.as_dict()}
        if delivery.delivered:
            record_outcome(self.health, report)
            return dict(outcome, status="delivered")
        if dead:
            self._dead_letter(dead)
            return dict(outcome, status="dead_lettered", reason=dead[0][1])
        record_outcome(self.health, report)  # retry_later: the event waits in the queue (or in the fix window)
        return dict(outcome, **self.queue_outcome(event, delivery.last_error or (
            "HTTP %d from the data plane" % delivery.config_error["status"] if delivery.config_error else None)))

    def queue_outcome(self, event, why):
        queued = self.enqueue(event)
        if not queued["queued"]:
            return {"status": "rejected", "reason": queued["reason"]}
        return {"status": "pending_retry", "where": self.where, "queue_key": "synthralos." + queued["key"],
                "reason": why}

    def flush(self, client, max_batches=50, claim_alert=True, deadline=None):
        """Drain the queue in batches (same rules as the Redis outbox); a flush-style report."""
        report = FlushReport()
        for _ in range(max_batches):
            if deadline is not None and self._clock() >= deadline:
                report.stopped = "deadline"
                break
            batch = self.waiting(self.batch_size)
            if not batch:
                break
            report.batches += 1
            good = [(key, r["event"]) for key, r in batch if isinstance(r, dict) and isinstance(r.get("event"), dict)]
            broken = [key for key, r in batch if not (isinstance(r, dict) and isinstance(r.get("event"), dict))]
            if broken:
                self._dead_letter([({"datastore_key": k}, "unreadable queue entry (not an event)") for k in broken])
                report.dead_lettered += len(broken)
                for key in broken:
                    self.store.delete(key)
            if not good:
                continue
            key_of = {id(event): key for key, event in good}
            events = [event for _, event in good]
            delivery = client.send(events)
            keep, dead = take_delivery(report, self.health, delivery, self.data_plane_url)
            self._note(delivery)
            self._dead_letter(dead)
            for event in list(delivery.delivered) + [e for e, _ in dead]:
                self.store.delete(key_of[id(event)])
            if delivery.retry_later or delivery.config_error:
                break
        if report.batches:
            _safely("recording the queue depth", lambda: self.store.set(DIRECT_QUEUE_DEPTH, self.depth()))
        return flush_result(self.health, report, claim_alert, self.where)

    def stats(self):
        waiting = self.waiting(DIRECT_QUEUE_MAX)
        letters = self.store.list_range(DIRECT_DEAD_LETTER_KEY)
        oldest_age_s = None
        if waiting:
            oldest_age_s = round(max(0.0, self._clock() - int(waiting[0][0].split(".")[2]) / 1000.0), 3)
        result = {
            "backend": "st2_datastore",
            "depth": len(waiting),
            "pending": 0,
            "waiting": len(waiting),
            "oldest_age_s": oldest_age_s,
            "dead_letters": len(letters),
            "dead_letter_bytes": sum(len(json.dumps(d).encode("utf-8")) for d in letters),
            "dead_letter_bytes_max": self.dead_letter_bytes,
            "max_queue_length": self.max_len,
            "overflow_policy": "reject_new",
            "consumers": 0,
        }
        for name in COUNTERS:
            result[name] = int(self.store.get("events.stats." + name, 0) or 0)
        result["last_error"] = self.store.get("events.stats.last_error")
        result["last_config_error"] = self.store.get("events.stats.last_config_error")
        return result

    def dead_letters(self, limit=100):
        # Stored newest first; show oldest first like the Redis stream.
        return list(reversed(self.store.list_range(DIRECT_DEAD_LETTER_KEY)))[:limit]

    def replay(self, ids=None, limit=1000, client=None):
        """Resend dead letters now (the given ids, or all up to `limit`): delivered ones leave the list; refused
        (401/404) or rejected (400/413) ones stay with the new reason; the rest stay as they are."""
        if client is None:
            raise ValueError("the datastore outbox cannot requeue dead letters (can_requeue): replay needs a client")
        letters = self.dead_letters(DIRECT_DEAD_LETTER_MAX)
        chosen = [d for d in letters if not ids or d["id"] in ids][:limit]
        if not chosen:
            return nothing_to_replay(ids)
        delivery, _, outcome = resend(client, self.health, self.data_plane_url, chosen)
        keep = [d if outcome.get(d["id"]) is None else dict(d, reason=outcome[d["id"]])
                for d in letters if outcome.get(d["id"]) != "delivered"]
        # Rewrite the list (oldest pushed first so the newest stays at the head).
        self.store.delete(DIRECT_DEAD_LETTER_KEY)
        for d in keep:
            self._push_letter(d)
        self._note(delivery)
        self._count("replayed", len(delivery.delivered))
        return replay_result(chosen, outcome, {}, delivery, ids)
