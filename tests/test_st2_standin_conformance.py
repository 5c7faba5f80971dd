"""The st2 stand-in (tests/st2_standin) checked against the real StackStorm
classes, in the real-st2 run: every public name it defines exists upstream
with a compatible signature or the same value, and what the tests rely on
(datastore get / set / delete / list with ttl, local, scope, encrypt and decrypt;
dispatch recording; the action and sensor bases and test cases) gives the same
results with both.

The stand-in is loaded under its own names with a temporary ``sys.modules``
swap (``load_standin()``), so its modules import each other, not upstream's.
The compatibility run has no real st2 to compare with and skips these.
"""

import importlib
import inspect
import logging
import os
import re
import sys
import unittest
from unittest import mock

import synthralos_tests  # noqa: F401  (import paths; st2 stand-in when st2 is absent)

from synthralos_tests import STANDIN_DIR, using_st2_standin

PACKAGES = ("st2common", "st2reactor", "st2tests")
SKIP_REASON = "the compatibility run has only the stand-in; the real-st2 run (Python 3.11) compares them"


def standin_module_names():
    names = []
    for root, _dirs, files in os.walk(STANDIN_DIR):
        for filename in sorted(files):
            if not filename.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, filename), STANDIN_DIR)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            names.append(".".join(rel))
    return sorted(names)


def load_standin():
    """The stand-in's modules by name, imported from tests/st2_standin while the
    real st2 packages are out of ``sys.modules``; everything is put back after."""
    saved = {name: module for name, module in sys.modules.items() if name.split(".", 1)[0] in PACKAGES}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, STANDIN_DIR)
    try:
        return {name: importlib.import_module(name) for name in standin_module_names()}
    finally:
        sys.path.remove(STANDIN_DIR)
        for name in [n for n in sys.modules if n.split(".", 1)[0] in PACKAGES]:
            del sys.modules[name]
        sys.modules.update(saved)


def signature_problems(standin, real):
    """Why a call valid for the stand-in's signature may not be valid for the real one
    (empty when compatible): same parameter names, kinds and defaults; the real one
    may add parameters only with defaults; required positionals in the same order."""
    try:
        ours, theirs = inspect.signature(standin), inspect.signature(real)
    except (TypeError, ValueError) as exc:
        return ["no signature: %s" % exc]
    problems = []
    for name, param in ours.parameters.items():
        other = theirs.parameters.get(name)
        if other is None:
            problems.append("%s: not upstream" % name)
            continue
        if param.kind != other.kind:
            problems.append("%s: kind %s upstream %s" % (name, param.kind, other.kind))
        if param.default != other.default:
            problems.append("%s: default %r upstream %r" % (name, param.default, other.default))
    for name, other in theirs.parameters.items():
        if name not in ours.parameters and other.default is inspect.Parameter.empty and other.kind not in (
            inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD
        ):
            problems.append("%s: required upstream, missing here" % name)

    def required(sig):
        return [n for n, p in sig.parameters.items() if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    if required(ours) != required(theirs):
        problems.append("required positionals %s upstream %s" % (required(ours), required(theirs)))
    return problems


_MISSING = object()


def public_members(cls):
    """Methods and properties a class defines itself (``__init__`` included)."""
    return {name: value for name, value in vars(cls).items() if not name.startswith("_") or name == "__init__"}


# ------------------------------------------------------------------ behaviours


def concrete(base, name, **methods):
    """A subclass of ``base`` whose abstract methods do nothing (``methods`` override)."""
    body = {method: (lambda self, *args: None) for method in getattr(base, "__abstractmethods__", ())}
    body.update(methods)
    return type(name, (base,), body)


def datastore_transcript(mods, service=None):
    """What the tests rely on from MockDatastoreService (or a service wrapping it)."""
    if service is None:
        service = mods["st2tests.mocks.datastore"].MockDatastoreService(
            logger=mock.Mock(spec=logging.RootLogger), pack_name="synthralos", class_name="Probe"
        )
    scope = mods["st2common.constants.keyvalue"].SYSTEM_SCOPE

    def items(found):
        return [(kv.name, kv.value, getattr(kv, "ttl", None)) for kv in found]

    out = [
        service.set_value("a", "1"),
        service.set_value("b", {"kept": "as given"}, ttl=10),
        service.set_value("synthralos.cb.x", "2", local=False, encrypt=True),
        service.set_value("c", 3, scope=scope),
        service.set_value("other.key", "4", local=False),
        service.get_value("a"),
        service.get_value("b"),
        service.get_value("synthralos.cb.x", local=False, decrypt=True),
        service.get_value("synthralos.cb.x"),
        service.get_value("c", scope=scope),
        service.get_value("missing"),
        items(service.list_values()),
        items(service.list_values(local=False)),
        items(service.list_values(prefix="a")),
        items(service.list_values(local=False, prefix="synthralos.")),
        items(service.list_values(local=False, prefix="synthralos.cb")),
        service.delete_value("a"),
        service.delete_value("a"),
        service.delete_value("synthralos.cb.x", local=False),
        service.delete_value("c", scope=scope),
        items(service.list_values(local=False)),
        service.get_user_info(),
    ]
    return out


def sensor_service_transcript(mods):
    MockSensorService = mods["st2tests.mocks.sensor"].MockSensorService
    MockSensorWrapper = mods["st2tests.mocks.sensor"].MockSensorWrapper
    TraceContext = mods["st2common.models.api.trace"].TraceContext
    service = MockSensorService(sensor_wrapper=MockSensorWrapper(pack="synthralos", class_name="Tick"))
    service.dispatch("synthralos.tick", payload={"n": 1})
    service.dispatch("synthralos.tick", payload={"n": 2}, trace_tag="tag-2")
    service.dispatch_with_context("synthralos.tick", payload={"n": 3}, trace_context=TraceContext(trace_tag="tag-3"))
    service.dispatch("synthralos.other")

    def context(item):
        ctx = item["trace_context"]
        return None if ctx is None else (type(ctx).__name__, ctx.id_, ctx.trace_tag)

    logger = service.get_logger("Tick")
    return [
        [(d["trigger"], d["payload"], context(d)) for d in service.dispatched_triggers],
        logger is service.get_logger("Other"),
        callable(getattr(logger.info, "assert_called_with", None)),  # a Mock (unittest.mock or mock)
        datastore_transcript(mods, service),
    ]


def action_transcript(mods):
    Action = mods["st2common.runners.base_action"].Action
    utils = mods["st2common.runners.utils"]
    MockActionService = mods["st2tests.mocks.action"].MockActionService
    MockActionWrapper = mods["st2tests.mocks.action"].MockActionWrapper

    class Probe(Action):
        def run(self, x):
            return x

    class OldStyle(Action):
        def __init__(self, config=None):
            super(OldStyle, self).__init__(config=config)

        def run(self):
            return None

    service = MockActionService(action_wrapper=MockActionWrapper(pack="synthralos", class_name="Probe"))
    action = utils.get_action_class_instance(Probe, config={"k": 1}, action_service=service)
    old = utils.get_action_class_instance(OldStyle, config=None, action_service=service)
    bare = Probe()
    try:
        action.config["missing"]
        missing = None
    except ValueError as exc:
        # The path is cfg.CONF.system.base_path upstream, a constant here.
        missing = re.sub(r"\(/[^)]*/configs/synthralos\.yaml\)", "(<configs>/synthralos.yaml)", str(exc))
    return [
        type(action.config).__name__,
        dict(action.config),
        action.config.get("missing", "default"),
        missing,
        action.action_service is service,
        action.logger.name,
        isinstance(action.logger, logging.Logger),
        (dict(old.config), old.action_service is service),
        (dict(bare.config), bare.action_service, bare.logger.name),
        action.run(x=5),
        datastore_transcript(mods, service),
    ]


def sensor_transcript(mods):
    base = mods["st2reactor.sensor.base"]
    MockSensorService = mods["st2tests.mocks.sensor"].MockSensorService
    MockSensorWrapper = mods["st2tests.mocks.sensor"].MockSensorWrapper

    Poll = concrete(base.PollingSensor, "Poll")

    service = MockSensorService(sensor_wrapper=MockSensorWrapper(pack="synthralos", class_name="Poll"))
    default = Poll(sensor_service=service)
    configured = Poll(sensor_service=service, config={"a": 1}, poll_interval=30)
    configured.set_poll_interval(7)
    return [
        (default.config, default.get_poll_interval(), default.sensor_service is service),
        (configured.config, configured.get_poll_interval()),
        [name for name in ("setup", "run", "cleanup", "add_trigger", "update_trigger", "remove_trigger", "poll")
         if name in getattr(base.PollingSensor, "__abstractmethods__", ())],
        sorted(getattr(base.Sensor, "__abstractmethods__", ())),
    ]


def pack_test_case_transcript(mods):
    bases = mods["st2tests.base"]
    base = mods["st2reactor.sensor.base"]
    Action = mods["st2common.runners.base_action"].Action

    class Probe(Action):
        def run(self):
            return self.config

    def run(self):
        self.sensor_service.dispatch("synthralos.tick", payload={"n": 1}, trace_tag="t")

    Passive = concrete(base.Sensor, "Passive", run=run)

    class ActionCase(bases.BaseActionTestCase):
        action_cls = Probe

        def runTest(self):
            pass

    class SensorCase(bases.BaseSensorTestCase):
        sensor_cls = Passive

        def runTest(self):
            pass

    action_case = ActionCase()
    action_case.setUp()
    action = action_case.get_action_instance(config={"k": "v"})
    sensor_case = SensorCase()
    sensor_case.setUp()
    sensor = sensor_case.get_sensor_instance(config={"c": 1})
    sensor.run()
    results = []
    for call in (
        lambda: sensor_case.assertTriggerDispatched("synthralos.tick"),
        lambda: sensor_case.assertTriggerDispatched("synthralos.tick", payload={"n": 1}),
        lambda: sensor_case.assertTriggerDispatched("synthralos.tick", payload={"n": 2}),
        lambda: sensor_case.assertTriggerDispatched("synthralos.none"),
    ):
        try:
            results.append(call())
        except AssertionError as exc:
            results.append("AssertionError: %s" % exc)
    last = sensor_case.get_last_dispatched_trigger()
    return [
        (type(action_case.action_service).__name__, action_case.action_service._action_wrapper._pack,
         action_case.action_service._action_wrapper._class_name),
        (action.run(), action.action_service is action_case.action_service),
        (type(sensor_case.sensor_service).__name__, sensor.config, sensor.sensor_service is sensor_case.sensor_service),
        len(sensor_case.get_dispatched_triggers()),
        (last["trigger"], last["payload"], last["trace_context"].trace_tag),
        results,
        sorted(n for n in dir(bases) if n in ("BaseActionTestCase", "BaseSensorTestCase")),
    ]


@unittest.skipIf(using_st2_standin(), SKIP_REASON)
class StandinMatchesUpstreamTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.standin = load_standin()
        cls.real = {name: importlib.import_module(name) for name in cls.standin}

    def test_the_standin_was_loaded_from_its_own_files_and_the_real_st2_is_back(self):
        for name, module in self.standin.items():
            self.assertTrue(os.path.realpath(module.__file__).startswith(os.path.realpath(STANDIN_DIR)), name)
            self.assertFalse(os.path.realpath(self.real[name].__file__).startswith(os.path.realpath(STANDIN_DIR)), name)
            self.assertIs(sys.modules[name], self.real[name])
        self.assertIn("st2tests.mocks.datastore", self.standin)

    def test_every_public_name_exists_upstream_with_a_compatible_signature(self):
        problems = {}
        checked = 0
        for name, module in sorted(self.standin.items()):
            for attr in getattr(module, "__all__", []):
                ours = getattr(module, attr)
                where = "%s.%s" % (name, attr)
                if not hasattr(self.real[name], attr):
                    problems[where] = ["not upstream"]
                    continue
                theirs = getattr(self.real[name], attr)
                checked += 1
                if inspect.isclass(ours):
                    for member, value in public_members(ours).items():
                        other = getattr(theirs, member, _MISSING)
                        if other is _MISSING:
                            problems["%s.%s" % (where, member)] = ["not upstream"]
                        elif callable(value) and callable(other):
                            found = signature_problems(value, other)
                            if found:
                                problems["%s.%s" % (where, member)] = found
                        elif isinstance(value, property) != isinstance(other, property):
                            problems["%s.%s" % (where, member)] = ["property here, not upstream (or back)"]
                        elif not isinstance(value, property) and value != other:
                            problems["%s.%s" % (where, member)] = ["%r here, %r upstream" % (value, other)]
                elif callable(ours):
                    found = signature_problems(ours, theirs)
                    if found:
                        problems[where] = found
                elif ours != theirs:
                    problems[where] = ["%r here, %r upstream" % (ours, theirs)]
        self.assertEqual(problems, {})
        self.assertGreaterEqual(checked, 20)

    def assertSameBehaviour(self, transcript):
        self.assertEqual(transcript(self.standin), transcript(self.real))

    def test_datastore(self):
        self.assertSameBehaviour(datastore_transcript)

    def test_sensor_service_dispatch_and_datastore(self):
        self.assertSameBehaviour(sensor_service_transcript)

    def test_action_base_and_action_service(self):
        self.assertSameBehaviour(action_transcript)

    def test_sensor_bases(self):
        self.assertSameBehaviour(sensor_transcript)

    def test_pack_test_cases(self):
        self.assertSameBehaviour(pack_test_case_transcript)


if __name__ == "__main__":
    unittest.main()
