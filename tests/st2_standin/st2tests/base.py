"""Stand-in for ``st2tests.base``: the pack test base classes.

Upstream's ``st2tests.base`` also holds DB / eventlet test cases that need a
MongoDB; a pack's tests only use ``BaseActionTestCase`` and
``BaseSensorTestCase``, which upstream re-exports here, so only those exist.
Mirrors upstream's API; used only when st2 is not importable.
"""

from st2tests.actions import BaseActionTestCase
from st2tests.pack_resource import BasePackResourceTestCase
from st2tests.sensors import BaseSensorTestCase

__all__ = ["BaseActionTestCase", "BaseSensorTestCase", "BasePackResourceTestCase"]
