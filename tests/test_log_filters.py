"""The redaction and trace-id log filters cover every line the pack writes while an action runs,
including lines of library loggers that only come to exist inside `run`.

`ops.metrics.collect` imports cron.backoff, events.forwarding, llm.breaker and
ops.recovery_stats on its first call: in st2's python runner (a fresh process per execution)
their loggers are created during `run`. Here those modules are taken out of `sys.modules`
(and their loggers out of logging's registry) for the test, so the real `get_system_metrics`
path imports them, and creates their loggers, inside `run`, as st2 does; then those very
loggers, and a third-party logger created in the same run, log secrets. Every line must come
out scrubbed and ending with the trace id, and the filters must be gone once `run` returns.
"""

import synthralos_tests  # noqa: F401

import logging
import sys
import unittest
import uuid

from synthralos_tests.base import SynthralosActionTestCase
from synthralos_tests.http_server import Reply
from synthralos_tests.redis_server import get_redis_server
from synthralos_tests.rudderstack_sink import BATCH_PATH, RudderStackSink

from get_system_metrics import GetSystemMetrics
from synthralos_lib.action_base import ActionInputError
from synthralos_lib.ops.trace import TraceLogFilter
from synthralos_lib.state.redaction import RedactingFilter

AGENT_KEY = "ZETAlatekey5d4c3b2a9f"
BEARER = "KAPPAlatebearer00998877"
WRITE_KEY = "SIGMAlatewritekey7123"
TRACE_ID = "tr-late-41aa"
# The modules ops.metrics.collect imports inside the function, and whose loggers log.
LAZY_LOGGING_MODULES = ("synthralos_lib.events.forwarding", "synthralos_lib.llm.breaker")
PACK_FILTERS = (RedactingFilter, TraceLogFilter)
LAZY_MODULES = LAZY_LOGGING_MODULES + ("synthralos_lib.cron.backoff", "synthralos_lib.ops.recovery_stats")


class _Capture(logging.Handler):
    def __init__(self):
        super(_Capture, self).__init__(level=logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append((record.name, record.getMessage()))


class MetricsThenLibraryLines(GetSystemMetrics):
    """The real metrics action; then, in the same run, the loggers its library just created log."""

    def run(self, trace_id=None, third_party=None, **kwargs):
        result = super(MetricsThenLibraryLines, self).run(**kwargs)
        self.created = [name for name in LAZY_LOGGING_MODULES if name in logging.Logger.manager.loggerDict]
        for name in LAZY_LOGGING_MODULES:
            sys.modules[name].LOG.warning("[Observability] %s saw key %s", name.rsplit(".", 1)[-1], AGENT_KEY)
        logging.getLogger(third_party).error("retrying with Authorization: Bearer %s", BEARER)
        return result


def forget_modules(test, names):
    """Take `names` out of sys.modules, their packages and logging's registry until the test ends."""
    manager = logging.Logger.manager
    for name in names:
        package, _, attribute = name.rpartition(".")
        module, logger = sys.modules.pop(name, None), manager.loggerDict.pop(name, None)
        if logger is not None:
            test.addCleanup(manager.loggerDict.__setitem__, name, logger)
        if module is not None:  # put back the module every other test's imports refer to
            test.addCleanup(setattr, sys.modules[package], attribute, module)
            test.addCleanup(sys.modules.__setitem__, name, module)
            delattr(sys.modules[package], attribute)


class LoggersCreatedDuringRunTest(SynthralosActionTestCase):
    action_cls = MetricsThenLibraryLines
    backend = "redis"

    def setUp(self):
        super(LoggersCreatedDuringRunTest, self).setUp()
        self.capture = _Capture()
        root = logging.getLogger()
        self.addCleanup(root.setLevel, root.level)
        root.setLevel(logging.DEBUG)
        root.addHandler(self.capture)
        self.addCleanup(root.removeHandler, self.capture)
        self.third_party = "thirdparty_%s.client" % uuid.uuid4().hex  # created inside run, never before
        forget_modules(self, LAZY_MODULES)

    def run_action(self, **params):
        action = self.action(agent_api={"base_url": "http://127.0.0.1:9", "api_key": AGENT_KEY})
        self.assertEqual([name for name in LAZY_MODULES if name in logging.Logger.manager.loggerDict], [])
        result = action.run(third_party=self.third_party, **params)
        self.assertEqual(action.created, list(LAZY_LOGGING_MODULES))  # the run created them
        self.assertEqual(result["errors"], {})
        return result

    def lines(self):
        names = LAZY_LOGGING_MODULES + (self.third_party,)
        return [(name, line) for name, line in self.capture.records if name in names]

    def test_lines_of_loggers_created_inside_run_are_scrubbed_and_traced(self):
        self.run_action(trace_id=TRACE_ID)
        suffix = " trace_id=" + TRACE_ID
        self.assertEqual(self.lines(), [
            ("synthralos_lib.events.forwarding", "[Observability] forwarding saw key ***" + suffix),
            ("synthralos_lib.llm.breaker", "[Observability] breaker saw key ***" + suffix),
            (self.third_party, "retrying with Authorization: Bearer ***" + suffix),
        ])
        # The action's own lines carry the trace id too.
        own = [line for name, line in self.capture.records if name.endswith("python.MetricsThenLibraryLines")]
        self.assertEqual(own, ["[Observability] metrics collected (store redis)" + suffix])

    def test_without_a_trace_id_lines_are_still_scrubbed(self):
        self.run_action()
        self.assertEqual([line for _, line in self.lines()], [
            "[Observability] forwarding saw key ***",
            "[Observability] breaker saw key ***",
            "retrying with Authorization: Bearer ***",
        ])

    def test_the_filters_are_removed_when_run_ends(self):
        handlers = logging.getLogger().handlers + getattr(self.action(), "logger").handlers
        before = [list(h.filters) for h in handlers]
        self.run_action(trace_id=TRACE_ID)
        self.assertEqual([list(h.filters) for h in handlers], before)
        left = [name for name, logger in logging.Logger.manager.loggerDict.items()
                if isinstance(logger, logging.Logger) and any(isinstance(f, PACK_FILTERS) for f in logger.filters)]
        self.assertEqual(left, [])  # nor on any logger: a sensor process must not rely on an action's leftovers
        logging.getLogger(self.third_party).warning("after the run: %s", "plain")
        self.assertEqual(self.lines()[-1], (self.third_party, "after the run: plain"))

    def test_a_failing_run_removes_the_filters_too(self):
        handlers = list(logging.getLogger().handlers)
        before = [list(h.filters) for h in handlers]
        action = self.action()
        with self.assertRaises(ActionInputError):
            action.run(trace_id=TRACE_ID, third_party=self.third_party, no_such_parameter=1)
        self.assertEqual([list(h.filters) for h in handlers], before)


class ReopenedGuardTest(unittest.TestCase):
    """A sensor opens its guard in every setup(): opening again replaces the filters and the secrets."""

    def test_opening_again_replaces_the_filters_and_their_secrets(self):
        from synthralos_lib.ops.trace import guarded_logs

        logger = logging.getLogger("synthralos-test-sensor-%s" % uuid.uuid4().hex[:8])
        logger.propagate = False
        capture = _Capture()
        logger.addHandler(capture)
        guard = guarded_logs(logger, ())
        guard.close()  # cleanup() before any setup(): nothing to take off
        guard.open(["FIRSTsecret123456"])
        guard.open(["SECONDsecret654321"])
        self.assertEqual([type(f) for f in capture.filters], [RedactingFilter])
        logger.warning("keys FIRSTsecret123456 SECONDsecret654321")
        guard.close()
        self.assertEqual(capture.filters, [])
        self.assertEqual(capture.records, [(logger.name, "keys FIRSTsecret123456 ***")])


class ActionProcessTest(unittest.TestCase):
    """In st2's python runner process only the action logger has a handler: a library line reaches
    no handler and goes to `logging.lastResort` (stderr, WARNING and up), which must be guarded too."""

    @classmethod
    def setUpClass(cls):
        from synthralos_tests.st2_python_runner import StackStormLayout

        import st2tests.base  # noqa: F401  (st2's test config, which the layout overrides)
        cls.st2 = StackStormLayout().__enter__()
        cls.addClassCleanup(cls.st2.__exit__, None, None, None)

    def test_a_library_line_on_stderr_is_scrubbed_and_traced(self):
        redis = get_redis_server()
        redis.flushall()
        sink = RudderStackSink(write_keys=()).start()
        self.addCleanup(sink.stop)
        sink.script("POST", BATCH_PATH, Reply(401, "Invalid write key %s" % WRITE_KEY))
        config = {"redis": {"url": redis.url}, "rudderstack": {"write_key": WRITE_KEY, "data_plane_url": sink.url,
                                                               "max_retries": 0, "batch_size": 1}}
        status, output = self.st2.run("forward_event.py", {
            "event_type": "agent_execution", "status": "failed", "source_execution_id": "exec-1",
            "agent_id": "agent-1", "trace_context": {"trace_id": TRACE_ID}}, config)
        self.assertEqual((status, output["result"]["status"]), ("succeeded", "queued"), output["stderr"])
        self.assertEqual([line for line in output["stderr"].splitlines() if "[RudderStack]" in line], [
            "[RudderStack] configuration error: HTTP 401 from the data plane: Invalid write key ***; "
            "1 event(s) refused trace_id=" + TRACE_ID,
        ])
        self.assertNotIn(WRITE_KEY, output["stderr"] + output["stdout"])


if __name__ == "__main__":
    unittest.main()
