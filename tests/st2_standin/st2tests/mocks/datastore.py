"""Stand-in for ``st2tests.mocks.datastore.MockDatastoreService``: an
in-memory datastore with the key naming of st2's datastore service.

Semantics follow upstream's mock (and, for naming, the real
``BaseDatastoreService``):

* ``local=True`` (the default) names a key ``"<pack>.<ClassName>:<name>"``;
  ``local=False`` uses ``name`` as given (a global key).
* ``list_values(local, prefix)`` filters with ``startswith`` on the full
  prefix: ``"<pack>.<ClassName>:" + prefix`` when local, ``prefix`` otherwise;
  no prefix at all (``local=False`` and no / empty ``prefix``) lists every item.
  Items come back in insertion order as objects with ``.id``, ``.name``,
  ``.value`` (and ``.ttl`` when one was given).
* ``set_value`` stores the value as given (upstream's mock does not ``str()``
  it; a live st2 does), accepts ``ttl`` but never expires the key (it logs a
  warning like upstream), and ignores ``scope`` and ``encrypt``;
  ``get_value`` ignores ``scope`` and ``decrypt``; ``delete_value`` returns
  False for a missing key.

Used only when st2 is not importable.
"""

from st2common.constants.keyvalue import DATASTORE_KEY_SEPARATOR
from st2common.constants.keyvalue import SYSTEM_SCOPE

__all__ = ["MockDatastoreService", "KeyValuePair"]


class KeyValuePair(object):
    """The item ``list_values`` returns (upstream: ``st2client.models.keyvalue.KeyValuePair``)."""

    def __init__(self, **kwargs):
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __repr__(self):
        return "<KeyValuePair name=%r value=%r>" % (
            getattr(self, "name", None),
            getattr(self, "value", None),
        )


class MockDatastoreService(object):
    """In-memory datastore service for one pack / class."""

    DATASTORE_NAME_SEPARATOR = DATASTORE_KEY_SEPARATOR

    def __init__(self, logger, pack_name, class_name, api_username=None):
        self._pack_name = pack_name
        self._class_name = class_name
        self._username = api_username or "admin"
        self._logger = logger
        # Full key name -> KeyValuePair.
        self._datastore_items = {}

    ##################################
    # General methods
    ##################################

    def get_user_info(self):
        """The user the datastore calls are made as (always an admin here)."""
        return {
            "username": self._username,
            "rbac": {"is_admin": True, "enabled": True, "roles": ["admin"]},
            "authentication": {"method": "authentication token", "location": "header"},
        }

    ##################################
    # Datastore management
    ##################################

    def list_values(self, local=True, prefix=None, limit=None, offset=0):
        key_prefix = self._get_full_key_prefix(local=local, prefix=prefix)
        if not key_prefix:
            items = list(self._datastore_items.values())
        else:
            items = [kvp for name, kvp in self._datastore_items.items() if name.startswith(key_prefix)]
        offset = offset or 0
        if limit:
            return items[offset:offset + limit]
        return items[offset:]

    def get_value(self, name, local=True, scope=SYSTEM_SCOPE, decrypt=False):
        name = self._get_full_key_name(name=name, local=local)
        kvp = self._datastore_items.get(name)
        return None if kvp is None else kvp.value

    def set_value(self, name, value, ttl=None, local=True, scope=SYSTEM_SCOPE, encrypt=False):
        name = self._get_full_key_name(name=name, local=local)
        instance = KeyValuePair(id=name, name=name, value=value)
        if ttl:
            self._logger.warning("MockDatastoreService is not able to expire keys based on ttl.")
            instance.ttl = ttl
        self._datastore_items[name] = instance
        return True

    def delete_value(self, name, local=True, scope=SYSTEM_SCOPE):
        name = self._get_full_key_name(name=name, local=local)
        if name not in self._datastore_items:
            return False
        del self._datastore_items[name]
        return True

    ##################################
    # Key naming (as BaseDatastoreService)
    ##################################

    def _get_full_key_name(self, name, local):
        if local:
            return self._get_key_name_with_prefix(name=name)
        return name

    def _get_full_key_prefix(self, local, prefix=None):
        if local:
            key_prefix = self._get_local_key_name_prefix()
            if prefix:
                key_prefix += prefix
            return key_prefix
        return prefix

    def _get_local_key_name_prefix(self):
        return self._get_datastore_key_prefix() + self.DATASTORE_NAME_SEPARATOR

    def _get_key_name_with_prefix(self, name):
        return self._get_datastore_key_prefix() + self.DATASTORE_NAME_SEPARATOR + name

    def _get_datastore_key_prefix(self):
        return "%s.%s" % (self._pack_name, self._class_name)
