"""Shared test bases for the pack's action, sensor and library tests.

In the style of the Exchange packs: a test case names its `action_cls`, asks
for an instance with a config, and asserts exact results. Each test case runs
against one store backend (`backend = "datastore"` or `"redis"`); tests that
must hold on both are written once as a mixin and bound to both.
"""

import copy
import json
import os

from st2tests.base import BaseActionTestCase
from st2tests.mocks.action import MockActionService, MockActionWrapper

from synthralos_lib.state.config import load_config
from synthralos_lib.state.store import get_store
from synthralos_tests.redis_server import get_redis_server

FIXTURES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def fixture_path(*parts):
    return os.path.join(FIXTURES_DIR, *parts)


def load_fixture(*parts):
    """A fixture file's content; `.json` files are parsed."""
    with open(fixture_path(*parts)) as handle:
        return json.load(handle) if parts[-1].endswith(".json") else handle.read()


def merge(base, override):
    """Deep-merge two config dicts (override wins)."""
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class StoreBackendMixin(object):
    """Gives a TestCase an action service, a store config and, for Redis, a flushed real server."""

    backend = "datastore"
    base_config = {}

    def setUp(self):
        super(StoreBackendMixin, self).setUp()
        if getattr(self, "action_service", None) is None:
            wrapper = MockActionWrapper(pack="synthralos", class_name=type(self).__name__)
            self.action_service = MockActionService(action_wrapper=wrapper)
        self.redis = None
        if self.backend == "redis":
            self.redis = get_redis_server()
            self.redis.flushall()

    def make_config(self, **sections):
        """A raw pack config: `base_config`, then `sections`, plus the Redis URL for this backend."""
        config = merge(self.base_config, sections)
        if self.backend == "redis":
            config = merge(config, {"redis": {"url": self.redis.url}})
        return config

    def make_settings(self, **sections):
        return load_config(self.make_config(**sections))

    def make_store(self, **sections):
        return get_store(self.make_settings(**sections), self.action_service)


class SynthralosActionTestCase(StoreBackendMixin, BaseActionTestCase):
    """Base for action tests: `self.action(**config_sections)` returns a configured instance."""

    action_cls = None

    def action(self, **sections):
        return self.get_action_instance(config=self.make_config(**sections))
