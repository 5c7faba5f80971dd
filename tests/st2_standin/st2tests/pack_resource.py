"""Stand-in for ``st2tests.pack_resource.BasePackResourceTestCase``.

Mirrors upstream's API; used only when st2 is not importable.
"""

import inspect
import os
import unittest

__all__ = ["BasePackResourceTestCase"]


class BasePackResourceTestCase(unittest.TestCase):
    """Base of the pack resource test cases: loads fixtures from the pack's
    ``tests/fixtures/`` directory."""

    def get_fixture_content(self, fixture_path):
        """Raw content of ``tests/fixtures/<fixture_path>`` of the pack the test lives in."""
        fixtures_path = os.path.join(self._get_base_pack_path(), "tests/fixtures/")
        with open(os.path.join(fixtures_path, fixture_path), "r") as handle:
            return handle.read()

    def _get_base_pack_path(self):
        # The pack root is the parent of the directory holding the test module.
        test_file_path = inspect.getfile(self.__class__)
        return os.path.abspath(os.path.join(os.path.dirname(test_file_path), ".."))
