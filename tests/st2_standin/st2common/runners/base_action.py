"""Stand-in for ``st2common.runners.base_action.Action``, the base class of
Python runner actions.

Mirrors upstream's API: ``Action(config=None, action_service=None)`` sets
``self.config`` (a ``PackConfigDict``), ``self.action_service`` and
``self.logger`` (the stdlib logger ``st2.actions.python.<ClassName>``); subclasses
implement ``run(**kwargs)``. Used only when st2 is not importable.
"""

import abc

from st2common.runners.utils import PackConfigDict
from st2common.runners.utils import get_logger_for_python_runner_action

__all__ = ["Action"]


class Action(object, metaclass=abc.ABCMeta):
    """Base action class other Python actions inherit from."""

    description = None

    def __init__(self, config=None, action_service=None):
        self.config = config or {}
        self.action_service = action_service

        wrapper = getattr(action_service, "_action_wrapper", None) if action_service else None
        if wrapper is not None:
            log_level = getattr(wrapper, "_log_level", "debug")
            pack_name = getattr(wrapper, "_pack", "unknown")
        else:
            log_level = "debug"
            pack_name = "unknown"

        self.config = PackConfigDict(pack_name, self.config)
        self.logger = get_logger_for_python_runner_action(
            action_name=self.__class__.__name__, log_level=log_level
        )

    @abc.abstractmethod
    def run(self, **kwargs):
        pass
