"""Puts the pack's library (``actions/lib``) on ``sys.path`` for sensors.

st2's sensor container puts a sensor's own directory (``sensors/``) on
``sys.path`` when it loads the sensor, but shares ``lib/`` between actions and
sensors only when ``[packs] enable_common_libs`` is on, which it is not by
default. Every sensor module starts with ``import synthralos_sensor_lib``.

It also holds ``SynthralosSensor``, the base class of the pack's sensors (below).
"""

import os
import sys

ACTIONS_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions", "lib")

if ACTIONS_LIB not in sys.path:
    sys.path.append(ACTIONS_LIB)

import threading  # noqa: E402  (after the path set-up above: the imports below need it)
import time  # noqa: E402

from st2reactor.sensor.base import Sensor  # noqa: E402

from synthralos_lib.ops.sensor_health import Heartbeat, sensor_health_settings  # noqa: E402
from synthralos_lib.ops.trace import guarded_logs  # noqa: E402
from synthralos_lib.state.config import config_secrets, load_config  # noqa: E402
from synthralos_lib.state.store import get_store  # noqa: E402


class SynthralosSensor(Sensor):
    """What the pack's sensors share: scrubbed logs, the validated config, a heartbeat and one way to stop.

    A subclass's setup() starts with `settings = self.open_config()`, may call
    `self.start_heartbeat(settings, name)`, and its run() loops while
    `self.stopping()` is False (or calls `self.idle()` when there is nothing to
    do: st2 restarts a sensor whose run() returns). cleanup() sets the stop
    flag, calls the subclass's `release()`, marks the heartbeat stopped (on
    purpose: not a stall) and closes the log guard. The pack's triggers take
    no parameters, so there is no per-trigger state.
    """

    def __init__(self, sensor_service, config=None):
        super(SynthralosSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._logger = self.sensor_service.get_logger(name=self.__class__.__name__)
        self._log_guard = guarded_logs(self._logger, ())  # opened by open_config(), closed by cleanup()
        self._stopped = threading.Event()
        self._heartbeat = None
        self.clock = time.time  # stamps heartbeats (tests inject one)

    def open_config(self):
        """Scrub every line of this long-lived process, the library's included (ops.trace), then load the config."""
        self._log_guard.open(config_secrets(self.config))
        return load_config(self.config)

    def start_heartbeat(self, settings, name, store=None):
        """This sensor's heartbeat record (ops.sensor_health), written through `store` or the config's store."""
        store = store or get_store(settings, self.sensor_service)
        self._heartbeat = Heartbeat(store, name, every_s=sensor_health_settings(settings)["heartbeat_every_s"],
                                    clock=lambda: self.clock(), logger=self._logger)
        return self._heartbeat

    def stopping(self):
        return self._stopped.is_set()

    def idle(self):
        """Wait for cleanup() (a sensor with nothing to do must not return from run())."""
        while not self._stopped.wait(1.0):
            pass

    def release(self):
        """Let go of what run() holds (a subclass hook, called by cleanup() after the stop flag is set)."""

    def cleanup(self):
        self._stopped.set()
        self.release()
        if self._heartbeat is not None:
            self._heartbeat.stopped()  # disabled on purpose: not a stall
        self._log_guard.close()

    def add_trigger(self, trigger):  # the pack's triggers take no parameters: nothing to keep
        pass

    update_trigger = remove_trigger = add_trigger
