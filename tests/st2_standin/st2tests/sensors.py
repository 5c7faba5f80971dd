"""Stand-in for ``st2tests.sensors.BaseSensorTestCase`` (re-exported by
``st2tests.base``).

Mirrors upstream's API; used only when st2 is not importable.
"""

from st2tests.mocks.sensor import MockSensorService
from st2tests.mocks.sensor import MockSensorWrapper
from st2tests.pack_resource import BasePackResourceTestCase

__all__ = ["BaseSensorTestCase"]


class BaseSensorTestCase(BasePackResourceTestCase):
    """Base class of sensor tests.

    Set ``sensor_cls``; ``setUp`` creates ``self.sensor_service`` (a
    ``MockSensorService`` for pack ``tests``, like upstream), which records
    every dispatched trigger.
    """

    sensor_cls = None

    def setUp(self):
        super(BaseSensorTestCase, self).setUp()
        class_name = self.sensor_cls.__name__
        sensor_wrapper = MockSensorWrapper(pack="tests", class_name=class_name)
        self.sensor_service = MockSensorService(sensor_wrapper=sensor_wrapper)

    def get_sensor_instance(self, config=None, poll_interval=None):
        """An instance of ``sensor_cls`` wired to the mock sensor service.

        Like upstream, ``config`` is passed only when truthy and
        ``poll_interval`` only when not None.
        """
        kwargs = {"sensor_service": self.sensor_service}
        if config:
            kwargs["config"] = config
        if poll_interval is not None:
            kwargs["poll_interval"] = poll_interval
        return self.sensor_cls(**kwargs)  # pylint: disable=not-callable

    def get_dispatched_triggers(self):
        """Every dispatch so far: dicts with ``trigger``, ``payload``, ``trace_context``."""
        return self.sensor_service.dispatched_triggers

    def get_last_dispatched_trigger(self):
        return self.sensor_service.dispatched_triggers[-1]

    def assertTriggerDispatched(self, trigger, payload=None, trace_context=None):
        """Assert some dispatch matches ``trigger`` and, when given (truthy),
        ``payload`` and ``trace_context`` (compared with ``==``).

        Returns True; raises ``AssertionError`` otherwise.
        """
        for item in self.get_dispatched_triggers():
            if item["trigger"] != trigger:
                continue
            if payload and item["payload"] != payload:
                continue
            if trace_context and item["trace_context"] != trace_context:
                continue
            return True
        raise AssertionError('Trigger "%s" hasn\'t been dispatched' % (trigger))
