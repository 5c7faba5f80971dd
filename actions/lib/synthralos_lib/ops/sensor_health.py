"""Is each sensor alive and keeping up? Heartbeats in the store, judged by health_check and a watchdog.

A sensor that stops healing must not do so silently (st2's sensor container
restarts a crashed sensor twice, then gives up without a word). So:

* each running sensor writes its record to the store key `sensor.<name>`
  (`Heartbeat.beat`, at most once every `sensor_health.heartbeat_every_s`):
  heartbeat_at, last_read_at, last_dispatch_at, dispatched, dead_lettered,
  errors, reconnects and, for the Redis Stream sensor, the consumer group's
  lag, pending count and the oldest pending entry's age; a sensor that stops
  cleanly (st2 disabled it) writes `stopped: true` and is no longer judged;
* `judge(record, now, settings)` calls it `down` when its heartbeat is older
  than `stale_after_s` or its oldest pending entry older than
  `pending_max_age_s`; `health_check` and `get_system_metrics` report it;
* `StallWatch`, run by the event flusher sensor on its own timer (a stalled
  sensor cannot alert for itself), dispatches `synthralos.sensor_stalled`
  once per episode: when a sensor turns down; nothing more until it has been
  up again, which ends the episode.
"""

import time

from synthralos_lib.state.store import KEEP

KEY_PREFIX = "sensor."
STALL_TRIGGER = "synthralos.sensor_stalled"
EPISODES_KEY = "sensor_watch.episodes"
UP, DOWN, STOPPED = "up", "down", "stopped"


def sensor_health_settings(settings):
    return dict(settings.section("sensor_health"))


class Heartbeat(object):
    """Writes one sensor's record to the store, at most every `every_s` seconds (cheap on a busy loop)."""

    def __init__(self, store, sensor, every_s=5.0, clock=time.time, logger=None):
        self.store = store
        self.sensor = sensor
        self.every_s = float(every_s)
        self.clock = clock
        self.logger = logger
        self._last = None
        self.failures = 0

    def beat(self, state, force=False):
        """`state()` -> dict of the sensor's figures; written when due. Never raises (returns False)."""
        now = self.clock()
        if not force and self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        try:
            record = dict(state() or {})
            record.update(sensor=self.sensor, heartbeat_at=now)
            self.store.set(KEY_PREFIX + self.sensor, record)
            return True
        except Exception as exc:  # the store is down: the stale heartbeat says so to whoever reads it
            self.failures += 1
            if self.logger is not None and (self.failures in (1, 10, 100) or self.failures % 1000 == 0):
                self.logger.warning("[Self-Healing] sensor %s: heartbeat not written (%s, %d so far)", self.sensor,
                                    type(exc).__name__, self.failures)
            return False

    def stopped(self):
        try:
            self.store.set(KEY_PREFIX + self.sensor, {"sensor": self.sensor, "heartbeat_at": self.clock(),
                                                      "stopped": True})
        except Exception:
            pass


def records(store):
    """{sensor name: record} of every sensor that ever beat (a listing: no read of a missing key)."""
    return {key[len(KEY_PREFIX):]: value for key, value in store.scan(KEY_PREFIX) if isinstance(value, dict)}


def judge(record, now, options):
    """`{"status": up|down|stopped, "reason": text or None, "heartbeat_age_s"}` for one record."""
    if record.get("stopped"):
        return {"status": STOPPED, "reason": None, "heartbeat_age_s": None}
    age = max(0.0, now - float(record.get("heartbeat_at") or 0))
    if age > options["stale_after_s"]:
        return {"status": DOWN, "heartbeat_age_s": age,
                "reason": "no heartbeat for %.0f s (bound %s s)" % (age, options["stale_after_s"])}
    oldest = record.get("oldest_pending_age_s")
    if oldest is not None and oldest > options["pending_max_age_s"]:
        return {"status": DOWN, "heartbeat_age_s": age,
                "reason": "oldest pending entry is %.0f s old (bound %s s)" % (oldest, options["pending_max_age_s"])}
    return {"status": UP, "reason": None, "heartbeat_age_s": age}


def report(store, options, now):
    """[record + judgement] for every sensor, by name."""
    out = []
    for name, record in sorted(records(store).items()):
        row = dict(record)
        row.update(judge(record, now, options))
        row["sensor"] = name
        out.append(row)
    return out


class StallWatch(object):
    """Alerts once per stall episode (see the module docstring); `check()` is cheap to call often."""

    def __init__(self, store, options, dispatch, clock=time.time, logger=None):
        self.store = store
        self.options = options
        self._dispatch = dispatch
        self.clock = clock
        self.logger = logger
        self._next = 0.0

    def check(self, force=False):
        """Judge every sensor (at most every heartbeat_every_s); returns the alerts dispatched now."""
        now = self.clock()
        if not force and now < self._next:
            return []
        self._next = now + float(self.options["heartbeat_every_s"])
        rows = report(self.store, self.options, now)
        down = {row["sensor"]: row for row in rows if row["status"] == DOWN}

        def mark(episodes):  # may run twice on Redis (WATCH retry): no side effects
            before = dict(episodes or {})
            after = {name: since for name, since in before.items() if name in down}  # up again: episode over
            fresh = [name for name in sorted(down) if name not in before]
            for name in fresh:
                after[name] = now
            # Written even when unchanged the first time, so later reads never ask for a missing key.
            return (after if after != before or episodes is None else KEEP), fresh

        started = self.store.update(EPISODES_KEY, mark)  # atomic on Redis: two flusher nodes alert once
        alerts = []
        for name in started:
            row = down[name]
            payload = {"sensor": name, "reason": row["reason"], "heartbeat_age_s": round(row["heartbeat_age_s"], 3),
                       "oldest_pending_age_s": row.get("oldest_pending_age_s"),
                       "last_read_at": row.get("last_read_at"), "last_dispatch_at": row.get("last_dispatch_at"),
                       "detected_at": now}
            try:
                self._dispatch(STALL_TRIGGER, payload)
            except Exception as exc:  # not sent: forget the episode so the next check tries again
                self.store.update(EPISODES_KEY, lambda episodes, name=name: (
                    {k: v for k, v in (episodes or {}).items() if k != name}, None))
                if self.logger is not None:
                    self.logger.warning("[Self-Healing] sensor_stalled alert for %s not dispatched (%s); "
                                        "retrying at the next check", name, type(exc).__name__)
                continue
            alerts.append(payload)
            if self.logger is not None:
                self.logger.error("[Self-Healing] sensor %s stalled: %s", name, row["reason"])
        return alerts
