"""Stand-in for ``st2common.constants.keyvalue``: datastore scopes and separators.

Values are the ones upstream st2 uses; used only when st2 is not importable.
"""

__all__ = [
    "ALL_SCOPE",
    "ALLOWED_SCOPES",
    "DATASTORE_PARENT_SCOPE",
    "DATASTORE_SCOPE_SEPARATOR",
    "DATASTORE_KEY_SEPARATOR",
    "SYSTEM_SCOPE",
    "FULL_SYSTEM_SCOPE",
    "SYSTEM_SCOPES",
    "USER_SCOPE",
    "FULL_USER_SCOPE",
    "USER_SCOPES",
    "USER_SEPARATOR",
]

ALL_SCOPE = "all"

# Every datastore item lives under "st2kv.<scope>" (that is what Jinja's
# {{ st2kv.system.foo }} refers to).
DATASTORE_PARENT_SCOPE = "st2kv"
DATASTORE_SCOPE_SEPARATOR = "."

SYSTEM_SCOPE = "system"
FULL_SYSTEM_SCOPE = DATASTORE_PARENT_SCOPE + DATASTORE_SCOPE_SEPARATOR + SYSTEM_SCOPE
SYSTEM_SCOPES = [SYSTEM_SCOPE]

USER_SCOPE = "user"
FULL_USER_SCOPE = DATASTORE_PARENT_SCOPE + DATASTORE_SCOPE_SEPARATOR + USER_SCOPE
USER_SCOPES = [USER_SCOPE]

USER_SEPARATOR = ":"

# Separates the "<pack>.<class>" prefix of a local (pack/class scoped) key
# from the key's own name: "mypack.MyAction:counter".
DATASTORE_KEY_SEPARATOR = ":"

ALLOWED_SCOPES = [SYSTEM_SCOPE, USER_SCOPE, FULL_SYSTEM_SCOPE, FULL_USER_SCOPE]
