import synthralos_sensor_lib  # noqa: F401  (puts actions/lib on sys.path)

import time

from synthralos_sensor_lib import SynthralosSensor

from synthralos_lib.events.flusher import BackgroundFlusher
from synthralos_lib.ops.sensor_health import StallWatch, sensor_health_settings
from synthralos_lib.state.config import ConfigError
from synthralos_lib.state.store import get_store

SLEEP_SLICE_S = 0.25  # how quickly cleanup() is noticed while waiting
BAD_CONFIG_IDLE_S = 60.0


class EventFlusherSensor(SynthralosSensor):
    """Drains the event outbox and the st2 datastore queue to RudderStack, continuously.

    All decisions live in synthralos_lib.events.flusher; this class only loops,
    sleeps (eventlet-patched in the sensor container) and stops promptly.
    Between ticks it is also the pack's sensor watchdog (ops.sensor_health):
    it writes its own heartbeat and dispatches synthralos.sensor_stalled once
    per episode for any sensor whose heartbeat went stale (a stalled sensor
    cannot alert for itself).
    """

    def __init__(self, sensor_service, config=None):
        super(EventFlusherSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._flusher = None
        self._watch = None  # self.clock also drives the watchdog
        self.stats = {"ticks": 0, "errors": 0, "watch_errors": 0, "alerts": 0}

    def setup(self):
        try:
            settings = self.open_config()
        except ConfigError as exc:  # said once; crashing would only make st2 restart us twice
            self._logger.error("[RudderStack] event flusher idle: %s", exc)
            return
        self._flusher = BackgroundFlusher(settings, self.sensor_service, self._dispatch, logger=self._logger)
        store = get_store(settings, self.sensor_service)
        self.start_heartbeat(settings, "event_flusher_sensor", store=store)
        self._watch = StallWatch(store, sensor_health_settings(settings), self._dispatch, clock=lambda: self.clock(),
                                 logger=self._logger)

    def run(self):
        while not self.stopping():
            try:
                delay = self.tick()["sleep_s"]
            except Exception as exc:  # never let one bad tick kill the sensor (st2 restarts it only twice)
                self.stats["errors"] += 1
                self._logger.warning("[RudderStack] flusher tick failed: %s: %s", type(exc).__name__, exc)
                delay = 5.0
            self.watch()
            self._wait(delay)

    def watch(self):
        """This sensor's heartbeat, then the watchdog over every sensor's (each at most every
        sensor_health.heartbeat_every_s); returns the sensor_stalled alerts dispatched. Never raises."""
        if self._watch is None:
            return []
        self._heartbeat.beat(lambda: dict(self.stats))
        try:
            alerts = self._watch.check()
        except Exception as exc:  # the store is away: the next round tries again
            self.stats["watch_errors"] += 1
            self._logger.warning("[Self-Healing] sensor watchdog check failed: %s", type(exc).__name__)
            return []
        self.stats["alerts"] += len(alerts)
        return alerts

    def tick(self):
        """One drain step (tests call it directly); returns the flusher's account of it."""
        if self._flusher is None:
            return {"sleep_s": BAD_CONFIG_IDLE_S, "reports": {}, "dispatched": []}
        self.stats["ticks"] += 1
        return self._flusher.tick()

    def _wait(self, seconds):
        deadline = time.time() + seconds
        while not self.stopping() and time.time() < deadline:
            time.sleep(min(SLEEP_SLICE_S, max(0.0, deadline - time.time())))
        if seconds <= 0:
            time.sleep(0)  # yield to other green threads between busy ticks

    def _dispatch(self, trigger, payload):
        self.sensor_service.dispatch(trigger=trigger, payload=payload)

    def release(self):
        if self._flusher is not None:
            self._flusher.close()
