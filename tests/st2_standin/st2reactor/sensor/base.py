"""Stand-in for ``st2reactor.sensor.base``: ``Sensor`` (passive) and
``PollingSensor`` (active).

Mirrors upstream's API: ``Sensor(sensor_service, config=None)``,
``PollingSensor(sensor_service, config=None, poll_interval=5)``, the
``sensor_service`` / ``config`` attributes (and their deprecated ``_``
aliases), the abstract ``setup / run / cleanup / add_trigger /
update_trigger / remove_trigger`` (+ ``poll`` for polling sensors) and
``get_poll_interval`` / ``set_poll_interval``. Used only when st2 is not
importable.
"""

import abc
import time

__all__ = ["Sensor", "PollingSensor"]


class BaseSensor(object, metaclass=abc.ABCMeta):
    """Base sensor class - not instantiated directly."""

    def __init__(self, sensor_service, config=None):
        self._sensor_service = sensor_service  # deprecated upstream, kept for old sensors
        self.sensor_service = sensor_service
        self._config = config or {}  # deprecated upstream, kept for old sensors
        self.config = self._config

    @abc.abstractmethod
    def setup(self):
        """Run the sensor's initialization code (if any)."""

    @abc.abstractmethod
    def run(self):
        """Run the sensor."""

    @abc.abstractmethod
    def cleanup(self):
        """Run the sensor's cleanup code (if any)."""

    @abc.abstractmethod
    def add_trigger(self, trigger):
        """Called when a trigger of one of this sensor's types is created."""

    @abc.abstractmethod
    def update_trigger(self, trigger):
        """Called when such a trigger is updated."""

    @abc.abstractmethod
    def remove_trigger(self, trigger):
        """Called when such a trigger is deleted."""


class Sensor(BaseSensor):
    """Base class of passive sensors: ``run()`` blocks and dispatches as events arrive."""

    @abc.abstractmethod
    def run(self):
        pass


class PollingSensor(BaseSensor):
    """Base class of active sensors: the container calls ``poll()`` every
    ``poll_interval`` seconds."""

    def __init__(self, sensor_service, config=None, poll_interval=5):
        super(PollingSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._poll_interval = poll_interval

    @abc.abstractmethod
    def poll(self):
        """Poll the third-party system for new information."""

    def run(self):
        while True:
            self.poll()
            time.sleep(self._poll_interval)

    def get_poll_interval(self):
        """The current poll interval in seconds."""
        return self._poll_interval

    def set_poll_interval(self, poll_interval):
        """Set the poll interval in seconds."""
        self._poll_interval = poll_interval
