"""Circuit breakers and cooldowns per LLM target, shared through the Store.

Every st2 action is its own process, so a breaker is state in the pack's
store (Redis when configured, else the st2 datastore), keyed by target name:

* `breaker.<target>`          the open circuit: {opened_at, open_until, cooldown_s, reason, since}; absent = closed
* `breaker.<target>.outcomes` recent outcomes {t, failed}, newest first (bounded list, expires after the window)
* `breaker.<target>.cool`     a short cooldown after 429/overloaded: {until, reason}, expires by itself
* lock `breaker.<target>.probe.<opened_at>`  the one half-open probe of an open period

Life of a circuit:

    closed --(failure rate >= threshold over >= min_requests in window_s, with 95 %
              confidence; or a run of failures implausible at the threshold rate;
              or one quota_exhausted / auth_config)--> open
    open   --(cooldown over)--> half-open: exactly one caller wins the probe lock
    probe ok --> closed (window cleared);  probe failed --> open again (see "Probing" below)

The failure rate of a window of n outcomes with f failures counts as >= the
threshold t when the lower end of its one-sided 95 % Wilson interval is (see
`rate_reaches`): with a large window that is the plain rate f/n >= t, with a
few outcomes it asks for more evidence, because 3 failures out of 5 happen
now and then (16 %) to a target failing 30 % of the time. A window in
which every outcome failed needs no weighing: it opens as soon as it holds
min_requests outcomes, whatever t, so a full outage opens within
min_requests calls (5 with the defaults); t = 1 opens only then.
After a healthy stretch the window's rate lags a sudden outage, so a run of
k failures in a row also opens, with k the smallest run that happens less
than 0.1 % of the time to a target failing at exactly the threshold rate
(t^k <= 0.001: 10 at t 0.5; never fewer than min_requests). A target failing
30 % of calls has such a run once in ~170,000 calls; the old rule (a run of
min_requests, 5) once in ~400.

Probing: a failed probe re-opens the circuit for half as long as it has been
open since it first opened (`since`), never less than `cooldown_s`, never
more than `max_cooldown_s`. Short outages, the common case, are probed every
`cooldown_s` (the old doubling waited 2x then 4x the cooldown, so a primary
that recovered just after a failed probe sat idle while the dearer fallback
served); long ones are probed less and less often (each probe costs one
caller a failed call, up to timeout_s on a hanging provider), and the
primary is back at most half the outage's length after it recovers. With
the defaults (30 s, 600 s): probes 30, 60, 90, 135, 202, 304, 456, 683,
1025, 1538 s after opening, then every 600 s.

quota_exhausted and auth_config open the circuit at once for `max_cooldown_s`
(or for the provider's stated wait, when it said one: a quota that resets in
3 days is not probed every 10 minutes): they need a human (billing, keys),
not a few seconds. They belong to the *account* (one API key, one billing
relationship), not to one target: every target of the failing target's
account (`accounts`, target name -> account, see `client.account_of`) opens
at the same moment, so the next request does not burn a call on a sibling
model or region that shares the exhausted quota or the revoked key. A provider's explicit
cooldown (429 / 529 with Retry-After) cools the target for that long: it is
skipped by requests choosing a new target, while the request that was told
to wait it out may still retry it. Nothing else opens a circuit: a short run
of failures at a rate below the threshold (a 30 % transient error rate
produces runs of 3-5 now and then) does not, so a healthy-enough primary is
not abandoned for a dearer fallback.

Store down (Redis refused or timed out): the breakers fail OPEN, i.e. every
target counts as closed and nothing is recorded, so requests are still
served; `degraded` holds the reason (callers log a warning and say so in
their result). After the first store error an instance stops asking the
store, so a hung Redis costs one timeout per execution, not one per call.

What counts against a target: transient, rate_limited, overloaded,
quota_exhausted, auth_config, invalid_output. context_overflow,
content_policy and bad_request are about the request, not the target, and
count as the target answering.

On Redis the window append and the probe claim are atomic (LPUSH+LTRIM in
MULTI, SET NX); on the st2 datastore they are best-effort (see store.py).
"""

import logging
import math
import time

from synthralos_lib.llm import errors as E
from synthralos_lib.state.store import StoreError

LOG = logging.getLogger(__name__)

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

FAILURE_CLASSES = frozenset([E.TRANSIENT, E.RATE_LIMITED, E.OVERLOADED, E.QUOTA_EXHAUSTED, E.AUTH_CONFIG,
                             E.INVALID_OUTPUT])
OPEN_AT_ONCE = frozenset([E.QUOTA_EXHAUSTED, E.AUTH_CONFIG])
COOL_CLASSES = frozenset([E.RATE_LIMITED, E.OVERLOADED])
WINDOW_MAX_LEN = 200  # outcomes kept per target; the window is also bounded by time
CONFIDENCE_Z = 1.645  # one-sided 95 %


def rate_reaches(failures, total, threshold, z=CONFIDENCE_Z):
    """True when `failures` of `total` show a failure rate >= `threshold` with 95 % confidence."""
    if total <= 0:
        return False
    if threshold >= 1:
        return failures >= total
    rate = failures / float(total)
    if rate < threshold:
        return False
    low = (rate + z * z / (2 * total) - z * math.sqrt(rate * (1 - rate) / total + z * z / (4.0 * total * total))) \
        / (1 + z * z / total)
    return low >= threshold - 1e-9


RUN_ALPHA = 0.001  # a run of failures opens when it is this unlikely at the threshold rate


def run_needed(min_requests, threshold, alpha=RUN_ALPHA):
    """Failures in a row that open a circuit whatever the window holds: threshold**k <= alpha
    (10 at 0.5, 31 at 0.8), never fewer than min_requests; infinite (never) when threshold >= 1."""
    if threshold >= 1:
        return float("inf")
    if threshold <= 0:
        return max(1, min_requests)
    return max(min_requests, int(math.ceil(math.log(alpha) / math.log(threshold) - 1e-9)))


def probe_cooldown(open_for_s, settings):
    """Seconds to stay open after a failed probe, the circuit having been open `open_for_s` since
    it first opened: half of that, within [cooldown_s, max_cooldown_s] (see "Probing")."""
    return round(min(settings["max_cooldown_s"], max(settings["cooldown_s"], open_for_s / 2.0)), 3)


DEFAULTS = {"window_s": 60, "min_requests": 5, "failure_rate_threshold": 0.5, "cooldown_s": 30,
            "max_cooldown_s": 600}


class Breakers(object):
    """The breakers of every target, over one store. `clock` is wall time (shared across processes)."""

    def __init__(self, store, settings=None, clock=time.time, probe_ttl_s=120, accounts=None):
        self.store = store
        self.accounts = dict(accounts or {})  # target name -> account; quota/auth open a whole account
        self.settings = dict(DEFAULTS)
        self.settings.update(settings or {})
        self.clock = clock
        self.probe_ttl_s = probe_ttl_s
        self.degraded = None  # why the store is not used (fail open), or None

    def _guard(self, fn, fallback):
        """Run a store-backed step; on a store error fail open (return `fallback`) from now on."""
        if self.degraded is None:
            try:
                return fn()
            except StoreError as exc:
                self.degraded = "breaker store unavailable, breakers fail open: %s" % exc
        return fallback

    # -- reading ----------------------------------------------------------
    def status(self, target):
        """A JSON-able view of one target's breaker (no side effects); state `unknown` when the store is down."""
        unknown = {"target": target, "state": "unknown", "reason": self.degraded, "open_for_s": 0.0,
                   "cooldown_s": None, "cooling_for_s": 0.0, "window_requests": 0, "window_failures": 0,
                   "failure_rate": 0.0}
        return self._guard(lambda: self._status(target), None) or dict(unknown, reason=self.degraded)

    def _status(self, target):
        now = self.clock()
        opened = self.store.get(self._key(target))
        cool = self.store.get(self._key(target, "cool"))
        window = self._window(target, now)
        failures = sum(1 for item in window if item.get("failed"))
        if opened is None:
            state = CLOSED
        elif now < opened["open_until"]:
            state = OPEN
        else:
            state = HALF_OPEN
        return {
            "target": target,
            "state": state,
            "reason": opened.get("reason") if opened else None,
            "open_for_s": round(max(0.0, opened["open_until"] - now), 3) if opened else 0.0,
            "cooldown_s": opened.get("cooldown_s") if opened else None,
            "cooling_for_s": round(max(0.0, cool["until"] - now), 3) if cool and cool["until"] > now else 0.0,
            "window_requests": len(window),
            "window_failures": failures,
            "failure_rate": round(failures / float(len(window)), 4) if window else 0.0,
        }

    # -- using a target ---------------------------------------------------
    def try_acquire(self, target, retrying=False):
        """(allowed, why). Claims the half-open probe when the cooldown is over.

        `retrying`: the caller already called this target and was told to wait;
        a cooldown (429/overloaded) does not stop it, an open circuit does.
        """
        return self._guard(lambda: self._try_acquire(target, retrying), (True, "breaker store unavailable: fail open"))

    def _try_acquire(self, target, retrying):
        now = self.clock()
        opened = self.store.get(self._key(target))
        if opened is not None:
            if now < opened["open_until"]:
                return False, "circuit open (%s) for %.1fs more" % (opened.get("reason"), opened["open_until"] - now)
            probe = "probe.%d" % int(opened["opened_at"] * 1000)
            if self.store.acquire_lock(self._key(target, probe), self.probe_ttl_s) is None:
                return False, "circuit half-open and another caller holds the probe"
            return True, "half-open probe"
        if not retrying:
            cool = self.store.get(self._key(target, "cool"))
            if cool is not None and now < cool["until"]:
                return False, "cooling down (%s) for %.1fs more" % (cool.get("reason"), cool["until"] - now)
        return True, "closed"

    def record(self, target, ok, error_class=None, cool_s=None):
        """Record one outcome; returns the breaker's status afterwards."""
        self._guard(lambda: self._record(target, ok, error_class, cool_s), None)
        return self.status(target)

    def _record(self, target, ok, error_class, cool_s):
        now = self.clock()
        failed = (not ok) and error_class in FAILURE_CLASSES
        cfg = self.settings
        opened = self.store.get(self._key(target))

        needs_human = failed and error_class in OPEN_AT_ONCE
        human_cooldown = max(cfg["max_cooldown_s"], float(cool_s or 0))
        if opened is not None and now >= opened["open_until"]:
            # The half-open probe's outcome decides for the whole circuit.
            if needs_human:
                self._open_account(target, now, human_cooldown, error_class)
            elif failed:
                since = opened.get("since", opened["opened_at"])
                self._open(target, now, probe_cooldown(now - since, cfg), error_class, since=since)
            else:
                self.reset(target)
                LOG.info("[Reroute] circuit of %s closed: the half-open probe succeeded", target)
        else:
            self.store.list_push(self._key(target, "outcomes"), {"t": now, "failed": failed}, WINDOW_MAX_LEN,
                                 ttl=cfg["window_s"])
            if needs_human:
                self._open_account(target, now, human_cooldown, error_class)
            elif opened is None and failed:
                window = self._window(target, now)
                failures = sum(1 for item in window if item.get("failed"))
                run = next((i for i, item in enumerate(window) if not item.get("failed")), len(window))
                if len(window) >= cfg["min_requests"] and (
                        failures == len(window) or rate_reaches(failures, len(window), cfg["failure_rate_threshold"])):
                    self._open(target, now, cfg["cooldown_s"], "failure rate %d/%d" % (failures, len(window)))
                elif run >= run_needed(cfg["min_requests"], cfg["failure_rate_threshold"]):
                    # A sudden outage after a healthy stretch: the window's rate lags, but a
                    # run this long is implausible (< 0.1 %) for a target failing at the threshold.
                    self._open(target, now, cfg["cooldown_s"], "%d failures in a row" % run)
        if failed and error_class in COOL_CLASSES and cool_s:
            self.store.set(self._key(target, "cool"), {"until": now + float(cool_s), "reason": error_class},
                           ttl=float(cool_s))

    def reset(self, target):
        """Close the circuit and forget its window and cooldown (raises StoreError when the store is down)."""
        for key in (self._key(target), self._key(target, "outcomes"), self._key(target, "cool")):
            self.store.delete(key)

    def account_targets(self, target):
        """`target` and every other target of its account (just `target` when it has no known account)."""
        account = self.accounts.get(target)
        if account is None:
            return [target]
        return [target] + sorted(name for name, acc in self.accounts.items() if acc == account and name != target)

    # -- internals --------------------------------------------------------
    def _open_account(self, target, now, cooldown_s, error_class):
        """Open `target` and its account's other targets (those not already open for longer)."""
        self._open(target, now, cooldown_s, error_class)
        for sibling in self.account_targets(target)[1:]:
            current = self.store.get(self._key(sibling))
            if current is not None and current["open_until"] >= now + cooldown_s:
                continue
            self._open(sibling, now, cooldown_s, "%s on %s (account %s)" % (error_class, target,
                                                                           self.accounts[target]))

    def _open(self, target, now, cooldown_s, reason, since=None):
        self.store.set(self._key(target), {"opened_at": now, "open_until": now + cooldown_s,
                                           "cooldown_s": cooldown_s, "reason": reason,
                                           "since": now if since is None else since})
        LOG.warning("[Reroute] circuit of %s opened for %gs: %s", target, cooldown_s, reason)

    def _window(self, target, now):
        since = now - self.settings["window_s"]
        return [item for item in self.store.list_range(self._key(target, "outcomes")) if item.get("t", 0) > since]

    @staticmethod
    def _key(target, part=None):
        return "breaker.%s" % target if part is None else "breaker.%s.%s" % (target, part)
