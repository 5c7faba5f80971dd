"""Stand-in for ``st2tests.base``: the pack test base classes.

Upstream's ``st2tests.base`` also holds DB / eventlet test cases that need a
MongoDB; a pack's tests only use ``BaseActionTestCase`` and
``BaseSensorTestCase``, which upstream re-exports here, so only those exist.
Mirrors upstream's API; used only when st2 is not importable.
"""

from st2tests.actions import BaseActionTestCase
from st2tests.sensors import BaseSensorTestCase

# Upstream's st2tests.base does not export BasePackResourceTestCase (it lives in
# st2tests.pack_resource), so neither does this.
__all__ = ["BaseActionTestCase", "BaseSensorTestCase"]
