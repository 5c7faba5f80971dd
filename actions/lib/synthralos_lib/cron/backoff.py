"""Backoff state of scheduled (cron) jobs, shared through the Store.

One JSON document per job at `cron.<job_id>`; absent means the job is healthy.

    {job_id, consecutive_failures, first_failure_at, last_failure_at,
     last_error, backoff_s, next_allowed_at,
     disabled, disabled_at, failed_probes, quiet_period_s, next_probe_at,
     probe_started_at, probe_lease_until, updated_at}

Life of a job (times from the injectable `clock`, wall seconds):

    healthy --failure n--> backoff: runs skipped until last failure + schedule.backoff_s(n)
    backoff --success--> healthy (document deleted)
    backoff --failure n = max_consecutive_failures--> disabled (trigger + event)
    disabled: runs skipped; after the quiet period `check` lets exactly one run
              probe (a lease of probe_lease_ms, so a lost probe is retried)
    probe ok --> healthy, re-enabled (event);  probe failed --> quiet period x multiplier (capped)
    reset --> healthy at once (re-enabled event if it was disabled)

Concurrency. `check` (with its probe claim) and `record` are each one
`Store.update`: on Redis a WATCH/MULTI transaction retried on conflict, so two
runs of one job that fail together count two failures and only one of them
wins a probe. On the st2 datastore they are read-modify-write without
compare-and-set: two records racing can lose one failure (the job then backs
off one step less and is disabled one failure later), a success racing a
failure keeps whichever was written last, and two checks racing for a probe
can both probe. Nothing else is lost: the next record starts from what was
stored.

`enable_cron_backoff` off: `check` always allows and `record` stores nothing.
"""

import json
import logging
import re
import time
from datetime import datetime, timezone

from synthralos_lib.cron import schedule
from synthralos_lib.state.redaction import scrub_and_cap
from synthralos_lib.state.store import KEEP

LOG = logging.getLogger(__name__)

KEY_PREFIX = "cron."
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
LAST_ERROR_MAX_CHARS = 1000

# Where a job stands (`status` of a view).
HEALTHY = "healthy"
BACKOFF = "backoff"  # failing, next run not allowed yet
RETRY_DUE = "retry_due"  # failing, next run allowed
DISABLED = "disabled"  # quiet, no probe due yet (or probes off)
PROBE_DUE = "probe_due"  # disabled, the next run probes
PROBING = "probing"  # disabled, a probe run holds the lease

# Why `check` allowed or skipped a run.
FEATURE_OFF = "feature_off"
NO_FAILURES = "no_failures"
BACKOFF_ELAPSED = "backoff_elapsed"
IN_BACKOFF = "in_backoff"
IS_DISABLED = "disabled"
PROBE = "probe"
PROBE_IN_PROGRESS = "probe_in_progress"

EVENT_DISABLED = "cron_job_disabled"
EVENT_REENABLED = "cron_job_reenabled"
EVENT_PROBE = "cron_job_probe"


class InvalidJobId(ValueError):
    """A job id the store keys cannot carry."""


class CorruptState(ValueError):
    """A job's stored backoff document cannot be read (edited by hand, written by another version)."""


def iso(epoch):
    """UTC ISO-8601 (milliseconds) for an epoch time, None for None."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(float(epoch), tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def _ms(epoch):
    return int(round(float(epoch) * 1000))


def describe_failure(result):
    """One line on why a job's execution failed, from the result its runner stored.

    Orquesta workflows: `errors[].message`; python-script: `result.error` or
    the last line of `stderr` (the traceback's exception); shell runners:
    `stderr` or the return code; a plain string as it is.
    """
    if result is None:
        return "the job failed without a result"
    if isinstance(result, str):
        return result
    if not isinstance(result, dict):
        return json.dumps(result, default=str)
    errors = result.get("errors")
    if isinstance(errors, list) and errors:
        messages = [e.get("message") if isinstance(e, dict) else str(e) for e in errors]
        return "; ".join(m for m in messages if m) or json.dumps(errors, default=str)
    inner = result.get("result")
    if isinstance(inner, dict) and inner.get("error"):
        return str(inner["error"])
    stderr = (result.get("stderr") or "").strip()
    if stderr:
        return stderr.splitlines()[-1].strip()
    if isinstance(inner, str) and inner not in ("", "None"):
        return inner
    for code in ("return_code", "exit_code"):
        if result.get(code) not in (None, 0):
            return "exit code %s" % result[code]
    if result.get("error"):
        return str(result["error"])
    return json.dumps(result, default=str, sort_keys=True)


class CronBackoff(object):
    """Backoff of every cron job over one store; `clock` is wall time (shared across processes)."""

    def __init__(self, store, settings=None, enabled=True, clock=time.time, secrets=()):
        self.store = store
        self.settings = schedule.settings_from(settings)
        self.enabled = bool(enabled)
        self.clock = clock
        self.secrets = list(secrets or ())

    @classmethod
    def from_config(cls, config, store, clock=time.time):
        """From a PackConfig: its cron_backoff section, the feature flag and the secrets to scrub."""
        return cls(store, config.section("cron_backoff"), enabled=config.flag("enable_cron_backoff"), clock=clock,
                   secrets=config.secrets())

    # -- the guard's two steps ------------------------------------------------
    def check(self, job_id):
        """May the job run now? Claims the probe of a disabled job whose quiet period is over."""
        key = self._key(job_id)
        if not self.enabled:
            return self._decision(job_id, True, FEATURE_OFF, None, None)

        def claim(state):
            now = self.clock()
            if not state or not state.get("consecutive_failures"):
                return KEEP, (True, NO_FAILURES, state)
            if not state.get("disabled"):
                if now >= state["next_allowed_at"]:
                    return KEEP, (True, BACKOFF_ELAPSED, state)
                return KEEP, (False, IN_BACKOFF, state)
            if state.get("next_probe_at") is None or now < state["next_probe_at"]:
                return KEEP, (False, IS_DISABLED, state)
            if state.get("probe_lease_until") is not None and now < state["probe_lease_until"]:
                return KEEP, (False, PROBE_IN_PROGRESS, state)
            claimed = dict(state, probe_started_at=now, probe_lease_until=now + self.settings["probe_lease_ms"] / 1000.0,
                           updated_at=now)
            return claimed, (True, PROBE, claimed)

        allowed, reason, state = self.store.update(key, claim)
        return self._decision(job_id, allowed, reason, state, self.clock())

    def record(self, job_id, succeeded, error=None):
        """Record one run's outcome; returns the outcome, the state after it and its transitions."""
        key = self._key(job_id)
        if not self.enabled:
            return {"job_id": job_id, "recorded": False, "outcome": FEATURE_OFF, "disabled_now": False,
                    "reenabled_now": False, "probe": False, "alert": None, "transitions": [], "state": None}
        error = None if succeeded else self._clean_error(error)

        def apply(state):
            now = self.clock()
            if succeeded:
                new, outcome, transitions = self._on_success(job_id, state, now)
            else:
                new, outcome, transitions = self._on_failure(job_id, state, now, error)
            return new, (state if new is KEEP else new, outcome, transitions)

        new_state, outcome, transitions = self.store.update(key, apply)
        result = {
            "job_id": job_id,
            "recorded": True,
            "outcome": outcome,
            "disabled_now": any(t["event"] == EVENT_DISABLED for t in transitions),
            "reenabled_now": any(t["event"] == EVENT_REENABLED for t in transitions),
            "probe": any(t["event"] == EVENT_PROBE for t in transitions),
            "alert": None,
            "transitions": transitions,
            "state": self.view(job_id, new_state),
        }
        if result["disabled_now"]:
            result["alert"] = self.alert_payload(new_state)
        return result

    # -- operators ------------------------------------------------------------
    def reset(self, job_id):
        """Forget the job's failures and re-enable it at once."""
        key = self._key(job_id)

        def clear(state):
            now = self.clock()
            return None, (state, now)

        previous, now = self.store.update(key, clear)
        transitions = []
        if previous and previous.get("disabled"):
            transitions.append(self._reenabled(previous, now, "reset"))
        return {"job_id": job_id, "reset": previous is not None, "was_disabled": bool(previous and previous.get("disabled")),
                "previous": self.view(job_id, previous) if previous else None, "transitions": transitions,
                "state": self.view(job_id, None)}

    def status(self, job_id=None):
        """One job's view (CorruptState if its stored document cannot be read), or every job in backoff or
        disabled (sorted by job id; corrupt documents are skipped: `listing` reports them)."""
        if job_id is not None:
            key = self._key(job_id)
            return self._readable_view(job_id, self.store.get(key))
        return self.listing()["jobs"]

    def listing(self):
        """{"jobs": every job in backoff or disabled, "corrupt": [{"job_id", "error"}]}: one corrupt document
        is reported and skipped, never fails the listing of the others."""
        views, corrupt = [], []
        for key, state in self.store.scan(KEY_PREFIX):
            job_id = scrub_and_cap(key[len(KEY_PREFIX):], 200, self.secrets)
            try:
                if not isinstance(state, dict) or state.get("consecutive_failures"):
                    views.append(self._readable_view(job_id, state))
            except CorruptState as exc:
                LOG.warning("[CronBackoff] %s", exc)
                corrupt.append({"job_id": job_id, "error": str(exc)})
        return {"jobs": sorted(views, key=lambda v: v["job_id"]), "corrupt": sorted(corrupt, key=lambda c: c["job_id"])}

    def _readable_view(self, job_id, state):
        try:
            if state is not None and not isinstance(state, dict):
                raise TypeError("a %s, not a document" % type(state).__name__)
            return self.view(job_id, state)
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise CorruptState("the stored backoff state of job %s is corrupt (%s: %s); cron_backoff_reset clears it"
                               % (job_id, type(exc).__name__, scrub_and_cap(str(exc), 200, self.secrets)))

    def view(self, job_id, state, now=None):
        """A JSON-able view of a job's state with its status and next allowed run."""
        now = self.clock() if now is None else now
        state = state or {}
        failures = int(state.get("consecutive_failures") or 0)
        disabled = bool(state.get("disabled")) and failures > 0
        if not failures:
            status, next_at = HEALTHY, None
        elif not disabled:
            next_at = state["next_allowed_at"]
            status = BACKOFF if now < next_at else RETRY_DUE
        else:
            next_at = state.get("next_probe_at")
            lease = state.get("probe_lease_until")
            if next_at is None or now < next_at:
                status = DISABLED
            elif lease is not None and now < lease:
                status, next_at = PROBING, lease
            else:
                status = PROBE_DUE
        return {
            "job_id": job_id,
            "status": status,
            "disabled": disabled,
            "consecutive_failures": failures,
            "max_consecutive_failures": self.settings["max_consecutive_failures"],
            "last_error": state.get("last_error"),
            "first_failure_at": iso(state.get("first_failure_at")),
            "last_failure_at": iso(state.get("last_failure_at")),
            "backoff_s": state.get("backoff_s", 0.0) if failures else 0.0,
            "next_allowed_at": next_at,
            "next_allowed_run": iso(next_at),
            "wait_s": round(max(0.0, next_at - now), 3) if next_at is not None else (None if disabled else 0.0),
            "disabled_at": iso(state.get("disabled_at")) if disabled else None,
            "failed_probes": int(state.get("failed_probes") or 0) if disabled else 0,
            "quiet_period_s": state.get("quiet_period_s") if disabled else None,
            "next_probe_at": iso(state.get("next_probe_at")) if disabled else None,
        }

    def alert_payload(self, state):
        """The synthralos.cron_job_disabled trigger payload."""
        return {
            "job_id": state["job_id"],
            "consecutive_failures": state["consecutive_failures"],
            "last_error": state.get("last_error"),
            "disabled_at": iso(state["disabled_at"]),
            "next_probe_at": iso(state.get("next_probe_at")),
        }

    # -- transitions ----------------------------------------------------------
    def _on_success(self, job_id, state, now):
        if not state or not state.get("consecutive_failures"):
            return KEEP, "ok", []
        transitions = []
        if state.get("disabled"):
            probing = state.get("probe_started_at") is not None
            if probing:
                transitions.append(self._probe(state, now, "succeeded"))
            transitions.append(self._reenabled(state, now, "probe" if probing else "success"))
            return None, "reenabled", transitions
        return None, "recovered", []

    def _on_failure(self, job_id, state, now, error):
        state = dict(state or {})
        failures = int(state.get("consecutive_failures") or 0) + 1
        state.update(job_id=job_id, consecutive_failures=failures, last_failure_at=now, last_error=error,
                     updated_at=now)
        state.setdefault("first_failure_at", now)
        if state.get("disabled"):
            if state.get("probe_started_at") is None:
                # A run that did not go through a probe (a direct run, or the flag was off): counted only.
                return state, "failed_while_disabled", []
            state["failed_probes"] = int(state.get("failed_probes") or 0) + 1
            self._quiet(state, now)
            transition = self._probe(state, now, "failed")
            state.update(probe_started_at=None, probe_lease_until=None)
            return state, "probe_failed", [transition]
        delay = schedule.backoff_s(failures, self.settings)
        state.update(backoff_s=delay, next_allowed_at=now + delay)
        if not schedule.disables(failures, self.settings):
            return state, "failed", []
        state.update(disabled=True, disabled_at=now, failed_probes=0, probe_started_at=None, probe_lease_until=None)
        self._quiet(state, now)
        return state, "disabled", [self._disabled(state)]

    def _quiet(self, state, now):
        quiet = schedule.quiet_period_s(state["failed_probes"], self.settings)
        state["quiet_period_s"] = quiet
        state["next_probe_at"] = None if quiet is None else now + quiet

    def _episode(self, state):
        """Identifies one disabled period of a job (deterministic event ids)."""
        return "%s@%d" % (state["job_id"], _ms(state["disabled_at"]))

    def _disabled(self, state):
        return {
            "event": EVENT_DISABLED,
            "job_id": state["job_id"],
            "at": state["disabled_at"],
            "discriminator": self._episode(state),
            "properties": dict(self.alert_payload(state), quiet_period_s=state.get("quiet_period_s"),
                               max_consecutive_failures=self.settings["max_consecutive_failures"]),
        }

    def _probe(self, state, now, outcome):
        number = int(state.get("failed_probes") or 0) + (1 if outcome == "succeeded" else 0)
        return {
            "event": EVENT_PROBE,
            "job_id": state["job_id"],
            "at": now,
            "discriminator": "%s#%d" % (self._episode(state), number),
            "properties": {
                "job_id": state["job_id"],
                "outcome": outcome,
                "probe_number": number,
                "consecutive_failures": state["consecutive_failures"],
                "last_error": state.get("last_error") if outcome == "failed" else None,
                "disabled_at": iso(state["disabled_at"]),
                "probe_started_at": iso(state.get("probe_started_at")),
                "quiet_period_s": state.get("quiet_period_s") if outcome == "failed" else None,
                "next_probe_at": iso(state.get("next_probe_at")) if outcome == "failed" else None,
            },
        }

    def _reenabled(self, state, now, via):
        return {
            "event": EVENT_REENABLED,
            "job_id": state["job_id"],
            "at": now,
            "discriminator": self._episode(state),
            "properties": {
                "job_id": state["job_id"],
                "via": via,
                "consecutive_failures": state["consecutive_failures"],
                "failed_probes": int(state.get("failed_probes") or 0),
                "disabled_at": iso(state["disabled_at"]),
                "disabled_for_s": round(now - state["disabled_at"], 3),
            },
        }

    # -- helpers --------------------------------------------------------------
    def _decision(self, job_id, allowed, reason, state, now):
        view = self.view(job_id, state, now) if self.enabled else None
        next_at = None if allowed or view is None else view["next_allowed_at"]
        return {
            "job_id": job_id,
            "allowed": allowed,
            "skipped": not allowed,
            "probe": reason == PROBE,
            "reason": reason,
            "message": self._message(reason, view),
            "next_allowed_at": next_at,
            "next_allowed_run": iso(next_at),
            "state": view,
        }

    @staticmethod
    def _message(reason, view):
        if reason == FEATURE_OFF:
            return "features.enable_cron_backoff is off: the job always runs"
        if reason == NO_FAILURES:
            return "no recent failures"
        failures = view["consecutive_failures"]
        if reason == BACKOFF_ELAPSED:
            return "backoff after %d consecutive failure(s) is over" % failures
        if reason == IN_BACKOFF:
            return "backing off after %d consecutive failure(s) until %s" % (failures, view["next_allowed_run"])
        if reason == IS_DISABLED:
            if view["next_allowed_run"] is None:
                return "disabled after %d consecutive failures; cron_backoff_reset re-enables it" % failures
            return "disabled after %d consecutive failures; next probe at %s" % (failures, view["next_allowed_run"])
        if reason == PROBE:
            return "disabled; this run is the probe (success re-enables the job)"
        return "disabled; another run is probing until %s" % view["next_allowed_run"]

    def _clean_error(self, error):
        text = describe_failure(error) if not isinstance(error, str) else error
        return scrub_and_cap(text, LAST_ERROR_MAX_CHARS, self.secrets)

    @staticmethod
    def _key(job_id):
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise InvalidJobId("job_id must be 1-128 characters: letters, digits, _ . : - (starting with a letter or digit)")
        return KEY_PREFIX + job_id
