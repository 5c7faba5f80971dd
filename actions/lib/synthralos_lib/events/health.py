"""What every delivery path knows about the data plane: a shared short-lived
"unhealthy" mark, the 401/404 fix window, and the one-alert-per-window slot.

All three live in the pack's store (Redis when configured and reachable, else
the st2 datastore), so an agent-facing action, the flusher sensor on any node
and the timer workflow see the same picture:

* **Unhealthy mark.** After a failed attempt (timeout, refused connection,
  429/5xx) a path marks the data plane unhealthy for `Retry-After` seconds
  when the data plane said so, else for `DEFAULT_MARK_S`. While the mark
  holds, agent-facing actions do not try to deliver inline (they queue and
  return); the flusher sensor keeps retrying on its own backoff and renews or
  clears the mark. A delivery that works clears it.
* **Fix window.** A 401 (unknown write key) or 404 (disabled source) is
  usually an operator mistake fixed within minutes. Events refused that way
  stay queued for `rudderstack.config_error_fix_window_s` after the error was
  first seen, so fixing the key delivers them without a replay; after the
  window they are dead-lettered.
* **Alert slot.** Any path that meets a 401/404 records it here; whoever
  claims the slot first (the flusher sensor, or flush_events for the timer
  workflow) dispatches `synthralos.rudderstack_config_error`, once per
  `CONFIG_ALERT_WINDOW_S`. The slot is an atomic SET NX on Redis
  (best-effort on the datastore). A delivery that works frees it.

The state is one small JSON value (one read per forwarded event, writes only
when something changes), plus the alert slot.
"""

import time

from synthralos_lib.state.config import schema_defaults, with_defaults

STATE_KEY = "events.data_plane"
ALERT_SLOT = "events.config_error_alert"
DEFAULT_MARK_S = 30.0
MAX_MARK_S = 600.0
CONFIG_ERROR_MARK_S = 60.0
CONFIG_ALERT_WINDOW_S = 900
DEFAULT_FIX_WINDOW_S = schema_defaults("rudderstack")["config_error_fix_window_s"]

CLEAN = {"unhealthy_until_ms": 0, "reason": None, "config_error": None}


class DataPlaneHealth(object):
    """The shared state above, over a `Store`. Store errors propagate (StoreError); callers decide."""

    def __init__(self, store, fix_window_s=DEFAULT_FIX_WINDOW_S, clock=time.time):
        self.store = store
        self.fix_window_s = float(fix_window_s)
        self._clock = clock
        self._state = None

    @classmethod
    def for_settings(cls, store, rudder, clock=time.time):
        return cls(store, fix_window_s=with_defaults("rudderstack", rudder)["config_error_fix_window_s"], clock=clock)

    def _now_ms(self):
        return int(self._clock() * 1000)

    def state(self, refresh=False):
        if self._state is None or refresh:
            value = self.store.get_quiet(STATE_KEY)  # missing while all is well: no st2api warning per read
            self._state = dict(CLEAN, **value) if isinstance(value, dict) else dict(CLEAN)
        return self._state

    def _save(self, state):
        self._state = state
        self.store.set(STATE_KEY, state)

    # -- the unhealthy mark --------------------------------------------------

    def unhealthy(self):
        """None when inline delivery may be tried, else {"until_ms", "reason"}."""
        state = self.state()
        if state["unhealthy_until_ms"] > self._now_ms():
            return {"until_ms": state["unhealthy_until_ms"], "reason": state["reason"]}
        return None

    def mark_unhealthy(self, reason, retry_after_s=None, hold_s=None):
        """Hold inline attempts off for Retry-After (else `hold_s`, else the default); returns the hold in seconds."""
        if retry_after_s is not None:
            hold = float(retry_after_s)
        else:
            hold = DEFAULT_MARK_S if hold_s is None else float(hold_s)
        hold = min(MAX_MARK_S, max(1.0, hold))
        state = dict(self.state(refresh=True), unhealthy_until_ms=self._now_ms() + int(hold * 1000), reason=reason)
        self._save(state)
        return hold

    def mark_healthy(self):
        """A delivery worked: clear the mark and any config error, free the alert slot (only writes if needed)."""
        state = self.state()
        if state == CLEAN:
            return
        had_config_error = state.get("config_error") is not None
        self._save(dict(CLEAN))
        if had_config_error:
            self.store.delete("lock." + ALERT_SLOT)  # fixed: the next config error alerts at once

    # -- 401/404 -------------------------------------------------------------

    def note_config_error(self, config_error, data_plane_url, refused, dead_lettered=False):
        """Record a 401/404; returns True while refused events should still be kept (inside the fix window).

        `dead_lettered`: the refused events stay dead letters whatever the window (a refused replay)."""
        state = self.state(refresh=True)
        now = self._now_ms()
        current = state.get("config_error") or {}
        first_seen = current.get("first_seen_ms", now)
        keep = (now - first_seen) < self.fix_window_s * 1000
        record = {
            "status": int(config_error["status"]),
            "body": config_error.get("body") or "",
            "data_plane_url": data_plane_url or "",
            "first_seen_ms": first_seen,
            "last_seen_ms": now,
            "refused": int(current.get("refused", 0)) + int(refused),
            "dead_lettered": int(current.get("dead_lettered", 0)) + (int(refused) if dead_lettered or not keep else 0),
        }
        until = now + int(CONFIG_ERROR_MARK_S * 1000)
        self._save(dict(state, config_error=record, unhealthy_until_ms=max(until, state["unhealthy_until_ms"]),
                        reason="HTTP %d from the data plane" % record["status"]))
        return keep

    def pending_config_error(self):
        return self.state(refresh=True).get("config_error")

    def claim_alert(self):
        """Take this window's alert slot; True for exactly one caller per window (atomic on Redis)."""
        return self.store.acquire_lock(ALERT_SLOT, CONFIG_ALERT_WINDOW_S) is not None


def alert_payload(config_error):
    """The synthralos.rudderstack_config_error payload for a recorded config error."""
    return {
        "status": int(config_error["status"]),
        "body": config_error.get("body") or "",
        "data_plane_url": config_error.get("data_plane_url") or "",
        "dead_lettered": int(config_error.get("dead_lettered", 0)),
        "refused": int(config_error.get("refused", 0)),
    }
