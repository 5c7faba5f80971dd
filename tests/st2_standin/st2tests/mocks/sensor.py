"""Stand-in for ``st2tests.mocks.sensor``: ``MockSensorWrapper`` and
``MockSensorService``.

``MockSensorService`` exposes what the real ``SensorService`` does:
``get_logger(name)`` (here a ``Mock(spec=RootLogger)``, shared by all names,
like upstream's mock), ``dispatch(trigger, payload=None, trace_tag=None)``,
``dispatch_with_context(trigger, payload=None, trace_context=None)``,
``get_user_info`` and the datastore methods. Every dispatch is appended to
``dispatched_triggers`` as ``{"trigger", "payload", "trace_context"}``;
``dispatch`` wraps a ``trace_tag`` in a ``TraceContext``. Mirrors upstream's
API; used only when st2 is not importable.
"""

from logging import RootLogger
from unittest.mock import Mock

from st2common.constants.keyvalue import SYSTEM_SCOPE
from st2common.models.api.trace import TraceContext
from st2tests.mocks.datastore import MockDatastoreService

__all__ = ["MockSensorWrapper", "MockSensorService"]


class MockSensorWrapper(object):
    def __init__(self, pack, class_name):
        self._pack = pack
        self._class_name = class_name


class MockSensorService(object):
    """Mock SensorService for use in tests."""

    def __init__(self, sensor_wrapper):
        self._sensor_wrapper = sensor_wrapper
        # A Mock, so tests can assert the logger was called with given arguments.
        self._logger = Mock(spec=RootLogger)
        # Every trigger dispatched so far, oldest first.
        self.dispatched_triggers = []
        self._datastore_service = MockDatastoreService(
            logger=self._logger,
            pack_name=self._sensor_wrapper._pack,
            class_name=self._sensor_wrapper._class_name,
        )

    @property
    def datastore_service(self):
        return self._datastore_service

    def get_logger(self, name):
        """The mock logger (the same one for every name)."""
        return self._logger

    def get_user_info(self):
        return self.datastore_service.get_user_info()

    ##################################
    # Sensor methods
    ##################################

    def dispatch(self, trigger, payload=None, trace_tag=None):
        trace_context = TraceContext(trace_tag=trace_tag) if trace_tag else None
        return self.dispatch_with_context(
            trigger=trigger, payload=payload, trace_context=trace_context
        )

    def dispatch_with_context(self, trigger, payload=None, trace_context=None):
        item = {"trigger": trigger, "payload": payload, "trace_context": trace_context}
        self.dispatched_triggers.append(item)
        return item

    ##################################
    # Datastore methods
    ##################################

    def list_values(self, local=True, prefix=None, limit=None, offset=None):
        return self.datastore_service.list_values(
            local=local, prefix=prefix, limit=limit, offset=offset
        )

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        return self.datastore_service.get_value(
            name=name, local=local, scope=scope, decrypt=decrypt
        )

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        return self.datastore_service.set_value(
            name=name, value=value, ttl=ttl, local=local, scope=scope, encrypt=encrypt
        )

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        return self.datastore_service.delete_value(name=name, local=local, scope=scope)
