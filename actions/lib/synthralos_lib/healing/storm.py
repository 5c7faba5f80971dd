"""Storm control: a recovery budget per agent and per failure signature, and coalescing.

One provider outage can fail every agent at once; without a bound, each
failure would start its own recovery with its re-runs and LLM planner calls.
`StormControl.admit` decides, before any planning, whether a failure gets a
recovery of its own:

1. **Coalesce.** A failure whose agent and signature already have a recovery
   running joins it: it is recorded (outcome `coalesced`, `joined_to`) and not
   run again. The running recovery holds a marker `storm.running.<agent>.<sig>`
   with a TTL, released when it ends (begin_recovery or record_failure).
2. **Budget.** Each window of `window_s` seconds (fixed windows aligned to
   multiples of `window_s` since the epoch, so a burst across a boundary can
   get up to twice the budget) allows `max_per_signature` recoveries of one
   signature across all agents and `max_per_agent` recoveries of one agent.
   A failure over either budget is recorded (outcome `over_budget`), counted,
   and the first one per window and exceeded budget escalates; none is
   dropped silently.

The signature is the failure type plus a fingerprint of the error text:
scrubbed, lowercased, uuids / timestamps / hex / ids / numbers replaced by
placeholders, whitespace collapsed, capped at `FINGERPRINT_CHARS`.

Atomicity. Budgets are counters (`Store.incr`: INCRBY with expiry in one Lua
step on Redis); a failure is admitted only if each counter it incremented is
within its limit, and a failure turned away by the second counter or by the
marker gives back what it took. So on Redis the number of admitted
recoveries never exceeds a budget, whatever the concurrency (a give-back can
only make a racing failure see a budget as spent a moment early). The marker
is taken with `Store.update` (WATCH/MULTI on Redis). On the st2 datastore
these are read-modify-write and best-effort under concurrency (state/store.py).

The store unreachable: the failure is recovered (fail open, like the
breakers) and the decision says `unavailable` with the reason.
"""

import hashlib
import logging
import re
import time
import uuid

from synthralos_lib.state.redaction import scrub_and_cap
from synthralos_lib.state.store import KEEP, StoreError

LOG = logging.getLogger(__name__)

FINGERPRINT_CHARS = 200
# How long a running-recovery marker lives past the recovery's own worst case (st2 scheduling, HTTP timeouts).
MARKER_MARGIN_S = 300

ADMITTED, COALESCED, OVER_BUDGET, OFF, UNAVAILABLE = "admitted", "coalesced", "over_budget", "off", "unavailable"
TOTAL_KEY = "storm.total."
TOTALS = (COALESCED, OVER_BUDGET, "budget_escalations")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:z|[+-]\d{2}:?\d{2})?)?"
                        r"|\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b")
_HEX = re.compile(r"\b0x[0-9a-f]+\b|\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
# A word of 6+ letters/digits/underscores that holds a digit: an id (req_8f3k2x, exec42abc).
_ID = re.compile(r"\b(?=\w*\d)\w{6,}\b")
_NUMBER = re.compile(r"\d+")


def fingerprint(text, secrets=()):
    """The error text normalised so that the same error on another run, agent or id reads the same."""
    text = scrub_and_cap(text or "", 4 * FINGERPRINT_CHARS, secrets).lower()
    for pattern, placeholder in ((_UUID, "<uuid>"), (_TIMESTAMP, "<time>"), (_HEX, "<hex>"), (_ID, "<id>"),
                                 (_NUMBER, "#")):
        text = pattern.sub(placeholder, text)
    return " ".join(text.split())[:FINGERPRINT_CHARS]


def error_text(result, failure):
    """The text a signature is made of: the run's error (or LLM error), else the failure's summary."""
    result = result if isinstance(result, dict) else {}
    for value in (result.get("error"), result.get("llm_error")):
        if isinstance(value, dict):
            value = value.get("message") or value.get("error")
        if isinstance(value, str) and value.strip():
            return value
    return (failure or {}).get("summary") or ""


def signature(failure_type, text, secrets=()):
    """`{"signature", "fingerprint"}`: `<failure_type>:<16 hex of the fingerprint's SHA-1>` and the fingerprint."""
    printed = fingerprint(text, secrets)
    return {"signature": "%s:%s" % (failure_type or "unknown", _digest(printed)), "fingerprint": printed}


def _digest(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def marker_ttl(delays, wait_s):
    """Seconds a recovery with these step delays can run: every delay and every step's wait, plus a margin."""
    return int(sum(delays) + len(delays) * (wait_s + MARKER_MARGIN_S)) or MARKER_MARGIN_S


class StormControl(object):
    """Budgets and coalescing over the pack's store.

    `config` is the validated `storm_control` config section (`PackConfig.section`: the
    schema's defaults filled in; config.schema.yaml is the one place they live).
    """

    def __init__(self, store, config, clock=time.time):
        self.store = store
        self.enabled = bool(config["enabled"])
        self.window_s = int(config["window_s"])
        self.max_per_agent = int(config["max_per_agent"])
        self.max_per_signature = int(config["max_per_signature"])
        self.clock = clock

    def admit(self, agent_id, signed, recovery_id, ttl_s):
        """Whether this failure gets a recovery of its own.

        `signed` is `signature(...)`'s result; `recovery_id` names this recovery for
        failures that join it; `ttl_s` bounds the marker's life. Returns a decision
        dict: `decision` (admitted, coalesced, over_budget, off, unavailable),
        `signature`, `fingerprint`, and as they apply `marker` (release it when the
        recovery ends), `joined_to`, `budget` ({scope, count, limit, window_s,
        window_start}) and `escalate` (the first over-budget failure of its window).
        """
        decision = {"decision": OFF, "signature": signed["signature"], "fingerprint": signed["fingerprint"],
                    "marker": None, "joined_to": None, "budget": None, "escalate": False}
        if not self.enabled:
            return decision
        try:
            decision.update(self._admit(agent_id, signed["signature"], recovery_id, ttl_s))
        except StoreError as exc:
            LOG.warning("[Self-Healing] storm control unavailable, recovering anyway: %s", exc)
            decision.update(decision=UNAVAILABLE, reason=str(exc))
        return decision

    def _admit(self, agent_id, sig, recovery_id, ttl_s):
        marker_key = "storm.running.%s.%s" % (_digest(agent_id), _digest(sig))
        running = self.store.get(marker_key)
        if running is not None:  # the cheap check first: joining costs no budget
            return self._joined(running)
        now = self.clock()
        window = int(now // self.window_s)
        taken = []
        for scope, key, limit in (("signature", "sig.%s" % _digest(sig), self.max_per_signature),
                                  ("agent", "agent.%s" % _digest(agent_id), self.max_per_agent)):
            counter = "storm.budget.%s.%d" % (key, window)
            count = self.store.incr(counter, 1, ttl=2 * self.window_s)
            if count > limit:
                self._give_back(taken)
                return self._over_budget(scope, key, count, limit, window)
            taken.append(counter)
        marker = {"token": uuid.uuid4().hex, "recovery_id": recovery_id, "started_at": now}
        holder = self.store.update(marker_key, lambda current: (KEEP, current) if current else (marker, None),
                                   ttl=ttl_s)
        if holder is not None:  # another recovery took it between our read and now
            self._give_back(taken)
            return self._joined(holder)
        return {"decision": ADMITTED, "marker": {"key": marker_key, "token": marker["token"]}}

    def _give_back(self, counters):
        for counter in counters:
            self.store.incr(counter, -1)

    def _joined(self, running):
        self._count(COALESCED)
        return {"decision": COALESCED, "joined_to": {"recovery_id": running.get("recovery_id"),
                                                     "started_at": running.get("started_at")}}

    def _over_budget(self, scope, key, count, limit, window):
        self._count(OVER_BUDGET)
        first = self.store.incr("storm.escalated.%s.%d" % (key, window), 1, ttl=2 * self.window_s) == 1
        if first:
            self._count("budget_escalations")
        budget = {"scope": scope, "count": count, "limit": limit, "window_s": self.window_s,
                  "window_start": window * self.window_s}
        return {"decision": OVER_BUDGET, "budget": budget, "escalate": first}

    def _count(self, what):
        self.store.incr(TOTAL_KEY + what)

    def renew(self, marker, ttl_s):
        """Give the marker a new TTL if `marker` still owns it; returns whether it did."""
        token = marker.get("token")
        return bool(self.store.update(
            marker["key"], lambda current: (current, True) if current and current.get("token") == token
            else (KEEP, False), ttl=ttl_s))

    def release(self, marker):
        """End the running-recovery marker if `marker` ({key, token}) still owns it; returns whether it did."""
        if not marker:
            return False
        token = marker.get("token")
        return bool(self.store.update(
            marker["key"], lambda current: (None, True) if current and current.get("token") == token else (KEEP, False)))


def budget_reason(budget):
    """The escalation reason for an over-budget failure."""
    what = "this failure signature" if budget["scope"] == "signature" else "this agent"
    return ("recovery budget exceeded: %s is allowed %d recoveries per %d s window (storm_control.max_per_%s) "
            "and this is failure %d of the window; later ones are recorded, not recovered, until the window ends"
            % (what, budget["limit"], budget["window_s"], budget["scope"], budget["count"]))


def totals(store):
    """Lifetime counts: {"coalesced", "over_budget", "budget_escalations"}."""
    return {what: int(store.get(TOTAL_KEY + what, default=0) or 0) for what in TOTALS}
