"""Base class for the pack's python-script actions."""

from st2common.runners.base_action import Action

from synthralos_lib.state.config import load_config
from synthralos_lib.state.redaction import scrub
from synthralos_lib.state.store import get_store


class SynthralosAction(Action):
    """Gives every action its validated config, its store, and secret scrubbing.

    The config is validated on first use, not in the constructor, so a bad
    config fails the execution with a clear ConfigError instead of a
    traceback from the runner's wrapper.
    """

    def __init__(self, config=None, action_service=None):
        super(SynthralosAction, self).__init__(config=config, action_service=action_service)
        self._settings = None
        self._store = None

    @property
    def settings(self):
        if self._settings is None:
            self._settings = load_config(self.config)
        return self._settings

    @property
    def store(self):
        if self._store is None:
            self._store = get_store(self.settings, self.action_service)
        return self._store

    def scrub(self, value):
        """`value` with every configured secret replaced by ***."""
        return scrub(value, self.settings.secrets())
