"""Stand-in for ``st2tests.actions.BaseActionTestCase`` (re-exported by
``st2tests.base``).

Mirrors upstream's API; used only when st2 is not importable.
"""

from st2common.runners.utils import get_action_class_instance
from st2tests.mocks.action import MockActionService
from st2tests.mocks.action import MockActionWrapper
from st2tests.pack_resource import BasePackResourceTestCase

__all__ = ["BaseActionTestCase"]


class BaseActionTestCase(BasePackResourceTestCase):
    """Base class of Python runner action tests.

    Set ``action_cls``; ``setUp`` creates ``self.action_service`` (a
    ``MockActionService`` for pack ``tests``, like upstream) and
    ``get_action_instance(config=None)`` returns an instance wired to it.
    """

    action_cls = None

    def setUp(self):
        super(BaseActionTestCase, self).setUp()
        class_name = self.action_cls.__name__
        action_wrapper = MockActionWrapper(pack="tests", class_name=class_name)
        self.action_service = MockActionService(action_wrapper=action_wrapper)

    def get_action_instance(self, config=None):
        """An instance of ``action_cls`` with ``config`` and the mock action service."""
        return get_action_class_instance(
            action_cls=self.action_cls, config=config, action_service=self.action_service
        )
