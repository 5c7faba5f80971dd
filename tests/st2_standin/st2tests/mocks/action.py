"""Stand-in for ``st2tests.mocks.action``: ``MockActionWrapper`` and
``MockActionService``.

``MockActionService`` exposes what the real ``ActionService`` (the Python
runner's ``action_service``) does: ``datastore_service``, ``get_user_info``,
``list_values(local, prefix)``, ``get_value``, ``set_value`` and
``delete_value``, backed by an in-memory ``MockDatastoreService``; its logger
is a ``Mock(spec=RootLogger)`` so tests can assert on log calls. Mirrors
upstream's API; used only when st2 is not importable.
"""

from logging import RootLogger
from unittest.mock import Mock

from st2common.constants.keyvalue import SYSTEM_SCOPE
from st2tests.mocks.datastore import MockDatastoreService

__all__ = ["MockActionWrapper", "MockActionService"]


class MockActionWrapper(object):
    def __init__(self, pack, class_name):
        self._pack = pack
        self._class_name = class_name


class MockActionService(object):
    """Mock ActionService for use in tests."""

    def __init__(self, action_wrapper):
        self._action_wrapper = action_wrapper
        # A Mock, so tests can assert the logger was called with given arguments.
        self._logger = Mock(spec=RootLogger)
        self._datastore_service = MockDatastoreService(
            logger=self._logger,
            pack_name=self._action_wrapper._pack,
            class_name=self._action_wrapper._class_name,
        )

    @property
    def datastore_service(self):
        return self._datastore_service

    def get_user_info(self):
        return self.datastore_service.get_user_info()

    def list_values(self, local=True, prefix=None):
        return self.datastore_service.list_values(local=local, prefix=prefix)

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        return self.datastore_service.get_value(name, local, scope=scope, decrypt=decrypt)

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        return self.datastore_service.set_value(
            name, value, ttl, local, scope=scope, encrypt=encrypt
        )

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        return self.datastore_service.delete_value(name, local, scope=scope)
