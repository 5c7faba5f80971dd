"""Issue 9 item 5: distinctive secrets fed through every self-healing action and the
agent_recovery workflow never reach a log line, a result, stored state (st2 datastore
and real Redis) or anything a real local server received, except the legitimate
auth header. Each secret starts with a unique marker, and any 6-character piece of a
secret counts as a leak, so a prefix or a tail left by a truncation is caught too."""

import synthralos_tests  # noqa: F401

import json
import logging
import unittest

from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper

from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin, merge
from synthralos_tests.http_server import Reply, StubHTTPServer, malformed_json
from synthralos_tests.llm_provider import LLMProviderServer
from synthralos_tests.rudderstack_sink import BATCH_PATH, RudderStackSink
from synthralos_tests.healing import recovery_actions
from synthralos_tests.orquesta_runner import ACTIONS_DIR, run_workflow, skip_unless_orquesta

from detect_failure import DetectFailureAction
from event_flusher_sensor import EventFlusherSensor
from execute_repair_step import ExecuteRepairStepAction
from forward_event import ForwardEvent
from generate_repair_plan import GenerateRepairPlanAction
from get_failure_history import GetFailureHistoryAction
from health_check import HealthCheck
from record_failure import RecordFailureAction
from synthralos_lib.state.config import ConfigError, load_config

# Every 6-character piece of these secrets holds a letter outside hex, so no timestamp, number,
# uuid or hex id the pack stores can contain one by chance (a stored expiry 1799247535.7344556
# once "leaked" a piece "344556" of an all-digit tail).
AGENT_KEY = "ZETAagentkey7g3h9k1m2n4p"
PLANNER_KEY = "OMEGAsk-qx8w-5q6r7s8t9u"
WRITE_KEY = "SIGMAwritekey9x8y7z6w5v"
BEARER = "KAPPAtoken0x1y2z3w4v5u6t"
URL_PASSWORD = "LAMBDApw5x6y7z8w"
MARKERS = ("ZETA", "OMEGA", "SIGMA", "KAPPA", "LAMBDA")
SECRETS = (AGENT_KEY, PLANNER_KEY, WRITE_KEY, BEARER, URL_PASSWORD)
PIECES = sorted(set(secret[i:i + 6] for secret in SECRETS for i in range(len(secret) - 5)))
NOT_A_LEAK = set("0123456789abcdefABCDEF.-:")  # what numbers, timestamps and hex ids are made of
# Texts that put the secrets where the old code cut (300 and 80 characters): scrubbing after
# the cut left the first characters of the key behind.
LEAKY_ERROR = ("e" * 280 + " key " + AGENT_KEY + " Authorization: Bearer " + BEARER +
               " dsn https://bob:" + URL_PASSWORD + "@db.example.com/prod")
FAILED = {
    "id": "exec-1",
    "status": "crashed",
    "input": "Summarise ticket 1234; the DSN is https://bob:%s@db.example.com/prod" % URL_PASSWORD,
    "error": {"message": LEAKY_ERROR},
    "output": "Error: " + "o" * 280 + PLANNER_KEY,
    "provider": "openai",
    "model": "gpt-4o",
    "tool_results": [{"tool": "search", "status": "failed", "error": "t" * 285 + WRITE_KEY}],
}


class SecretPiecesTest(unittest.TestCase):
    def test_no_piece_could_be_part_of_a_number_or_a_hex_id(self):
        self.assertEqual([piece for piece in PIECES if set(piece) <= NOT_A_LEAK], [])


class _Capture(logging.Handler):
    def __init__(self):
        super(_Capture, self).__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


class SecretSweepContract(StoreBackendMixin):
    maxDiff = None

    def setUp(self):
        super(SecretSweepContract, self).setUp()
        self.capture = _Capture()
        root = logging.getLogger()
        self.old_level = root.level
        root.addHandler(self.capture)
        root.setLevel(logging.DEBUG)
        self.addCleanup(root.removeHandler, self.capture)
        self.addCleanup(root.setLevel, self.old_level)
        self.agents = AgentPlatformServer(api_key=AGENT_KEY, agents=["agent-1"]).start()
        self.addCleanup(self.agents.stop)
        self.agents.add_execution("agent-1", FAILED)
        self.provider = LLMProviderServer()
        self.addCleanup(self.provider.close)
        self.provider.add_endpoint("planner", "openai", PLANNER_KEY)
        target = self.provider.target("planner", model="gpt-4o", name="planner", timeout_s=2, priority=1)
        other = dict(target, name="claude", kind="anthropic", model="claude-3-5-sonnet", priority=2)
        self.config = self.make_config(
            agent_api={"base_url": self.agents.base_url, "api_key": AGENT_KEY, "timeout_s": 2},
            llm_targets=[target, other],
            rudderstack={"write_key": WRITE_KEY, "data_plane_url": "http://127.0.0.1:9"},
            features={"enable_llm_repair_plans": True},
        )
        self.results = []

    def run_action(self, cls, **params):
        action = cls(config=self.config, action_service=self.action_service)
        try:
            self.results.append(action.run(**params))
        except Exception as exc:  # an error message is a boundary too
            self.results.append("%s: %s" % (type(exc).__name__, exc))
        return self.results[-1]

    def stored_state(self):
        texts = [json.dumps(item.value if hasattr(item, "value") else str(item))
                 for item in self.action_service.list_values(local=False)]
        if self.redis is not None:
            client = self.redis.client()
            for key in client.keys("*"):
                kind = client.type(key)
                kind = kind.decode() if isinstance(kind, bytes) else kind
                value = {"string": lambda: client.get(key), "list": lambda: client.lrange(key, 0, -1),
                         "hash": lambda: client.hgetall(key), "stream": lambda: client.xrange(key)}.get(kind, lambda: "")()
                texts.append(repr(key) + repr(value))
        return texts

    def sent(self):
        """What the servers received, minus the one legitimate credential header each."""
        texts = []
        for server in (self.agents, self.provider):
            for request in server.requests():
                headers = {k: v for k, v in dict(request.headers).items()
                           if k.lower() not in ("authorization", "x-api-key")}
                texts.append(request.raw_path + repr(headers) + (request.raw_body or b"").decode("utf-8", "replace"))
        return texts

    def assert_no_marker(self, where, texts):
        for text in texts:
            text = text if isinstance(text, str) else json.dumps(text, default=repr)
            for marker in MARKERS + tuple(PIECES):
                self.assertNotIn(marker, text, "%s leaks %s: ...%s..." % (
                    where, marker, text[max(0, text.find(marker) - 60): text.find(marker) + 40]))

    def assert_swept(self):
        self.assert_no_marker("a result", self.results)
        self.assert_no_marker("a log line", self.capture.lines)
        self.assert_no_marker("stored state", self.stored_state())
        self.assert_no_marker("a request", self.sent())

    def test_every_action_path(self):
        found = self.run_action(DetectFailureAction, result=FAILED, agent_id="agent-1", execution_id="exec-1")
        self.assertEqual(found["failure_type"], "tool_failure")
        # The planner is asked (the facts it gets are scrubbed) and answers with our secret in prose.
        self.provider.script("planner", [{"fault": "ok", "content": "use key %s now" % AGENT_KEY},
                                         {"fault": "auth"}])
        plan = self.run_action(GenerateRepairPlanAction, failure=found)
        self.assertEqual(plan["source"], "rules")
        self.run_action(GenerateRepairPlanAction, failure=found)
        prompt = self.provider.requests("POST")[0].json["messages"][-1]["content"]
        self.assertIn("key **", prompt)  # scrubbed first, then cut at 300 characters
        step = {"action": "retry_execution", "priority": 1, "params": {}, "reason": "r"}
        # The platform echoes credentials back in errors, malformed bodies and a re-run's output.
        self.agents.script("POST", self.agents.EXECUTIONS,
                           Reply(500, {"error": {"message": LEAKY_ERROR}}),
                           malformed_json(200, ("m" * 70 + AGENT_KEY).encode()),
                           Reply(401, {"error": "bad bearer " + BEARER}))
        for attempt in (1, 2, 3):
            self.run_action(ExecuteRepairStepAction, agent_id="agent-1", execution_id="exec-1", step=step,
                            failure=found, attempt=attempt, wait_s=0)
        self.agents.on_rerun({}, {"status": "failed", "error": LEAKY_ERROR, "output": "x" * 5000 + PLANNER_KEY})
        rerun = self.run_action(ExecuteRepairStepAction, agent_id="agent-1", execution_id="exec-1", step=step,
                                failure=found, attempt=4, wait_s=0)
        self.assertEqual(rerun["failure"]["failure_type"], "error")
        self.run_action(RecordFailureAction, agent_id="agent-1", execution_id="exec-1", failure=found,
                        outcome="escalated", attempts=[rerun["attempt_record"], {"note": "Authorization: Bearer " + BEARER}],
                        trace_context={"trace_id": "tr-1", "dsn": "https://bob:%s@x" % URL_PASSWORD})
        history = self.run_action(GetFailureHistoryAction, agent_id="agent-1")
        self.assertEqual(history["count"], 1)
        self.assert_swept()

    def test_config_errors_never_echo_a_secret(self):
        for raw in ({"agent_api": {AGENT_KEY: "x"}}, {AGENT_KEY: {}}, {"agent_api": {"api_key": 5, "timeout_s": AGENT_KEY}},
                    {"llm_targets": [{"name": "a", "kind": "openai", "base_url": "http://x", "model": "m",
                                      "api_key": PLANNER_KEY, PLANNER_KEY: 1}]}):
            with self.assertRaises(ConfigError) as caught:
                load_config(raw)
            self.assert_no_marker("a config error", [str(caught.exception)])
            self.config = raw
            self.run_action(DetectFailureAction, result={"status": "ok", "output": "fine"})
            self.run_action(RecordFailureAction, agent_id="agent-1")
        self.assertTrue(all(r.startswith("ConfigError: invalid synthralos config") for r in self.results[1::2]),
                        self.results)
        self.assert_swept()

    def test_the_event_flusher_sensor_and_a_data_plane_that_echoes_the_write_key(self):
        # A gateway answering 401 with the key it refused: the library's RudderStack client logs
        # that answer, in the forwarding action and in the long-lived sensor alike.
        sink = RudderStackSink(write_keys=()).start()
        self.addCleanup(sink.stop)
        sink.script("POST", BATCH_PATH, *[Reply(401, "Invalid write key %s\n" % WRITE_KEY) for _ in range(3)])
        self.config = merge(self.config, {"rudderstack": {"data_plane_url": sink.url, "max_retries": 0, "batch_size": 1}})
        forwarded = self.run_action(ForwardEvent, event_type="agent_execution", status="failed", agent_id="agent-1",
                                    source_execution_id="exec-1", trace_context={"trace_id": "tr-9"})
        self.assertIn(forwarded["status"], ("queued", "pending_retry"), forwarded)
        service = MockSensorService(MockSensorWrapper(pack="synthralos", class_name="EventFlusherSensor"))
        service._datastore_service = self.action_service.datastore_service
        sensor = EventFlusherSensor(sensor_service=service, config=self.config)
        sensor.setup()
        try:
            # As in st2's sensor process, where no action ever runs: the sensor guards the handlers itself.
            self.assertEqual([type(f).__name__ for f in self.capture.filters], ["RedactingFilter"])
            self.results.append(sensor.tick())
        finally:
            sensor.cleanup()
        self.assertEqual(self.capture.filters, [])
        self.results.append(service.dispatched_triggers)
        refused = [line for line in self.capture.lines if line.startswith("[RudderStack] configuration error")]
        self.assertEqual(len(refused), 2, self.capture.lines)  # the action's inline attempt, the sensor's
        self.assertEqual(len(sink.requests("POST", BATCH_PATH)), 2)
        self.assert_swept()

    def test_health_check_error_texts(self):
        # A platform whose failing health endpoint quotes our key, in ten places around the 300-character
        # cut of an error text: before the fix the cut came first and left 6-14 characters of the key.
        answers = [Reply(503, "h" * (280 + offset) + " key " + AGENT_KEY + " then more text " + "z" * 40)
                   for offset in range(0, 20, 2)]
        self.agents.script("GET", self.agents.prefix + r"/health", *answers)
        # Both LLM targets (on one provider server) answer their models probe with the planner key in a page.
        pages = [Reply(502, "m" * (270 + offset) + " key " + PLANNER_KEY + " more " + "z" * 40)
                 for offset in range(0, 20, 2) for _ in ("planner", "claude")]
        StubHTTPServer.script(self.provider, "*", r"/(?P<endpoint>[^/]+)(?P<route>/.*)?", *pages)
        for _ in answers:
            report = self.run_action(HealthCheck, include=["agent_api", "llm"], probe_timeout_s=2)
            self.assertEqual([d["status"] for d in report["dependencies"]], ["degraded"] * 3, report)
            self.assertIn("agent platform answered 503 hhh", report["dependencies"][0]["error"])
            self.assertIn("provider answered (502 mmm", report["dependencies"][1]["error"])
        self.assertEqual(len(self.agents.requests("GET", self.agents.prefix + r"/health")), len(answers))
        self.assertEqual(len(self.provider.requests("GET")), len(pages))
        self.assert_swept()

    def test_a_trace_id_holding_a_secret(self):
        # The trace id comes from the caller; the log suffix is added after the redacting filter has run.
        for trace_context in ({"trace_id": "tr-" + AGENT_KEY}, {"trace_id": "Authorization: Bearer " + BEARER}):
            self.run_action(RecordFailureAction, agent_id="agent-1", execution_id="exec-2", outcome="escalated",
                            trace_context=dict(trace_context, dsn="https://bob:%s@x" % URL_PASSWORD))
        self.assertTrue(any(line.endswith(" trace_id=tr-***") for line in self.capture.lines), self.capture.lines)
        self.assert_swept()

    @skip_unless_orquesta
    def test_the_agent_recovery_workflow(self):
        self.agents.default_outcome = {"status": "failed", "error": LEAKY_ERROR}
        self.provider.script("planner", [{"fault": "auth"}])
        actions = recovery_actions(self.config, self.action_service)
        run = run_workflow("agent_recovery", {"agent_id": "agent-1", "execution_id": "exec-1", "result": FAILED,
                                              "trace_context": {"trace_id": "tr-7"}},
                           actions=actions, action_meta_dir=ACTIONS_DIR)
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence[-2:], ["record_escalation", "escalate"])
        # What the pack produced: the output, the trigger, and every task's result (the workflow's own
        # input is the caller's data and is not checked).
        self.results.extend([run.output, run.injected_triggers])
        self.assert_swept()


on_both_backends(SecretSweepContract, "{backend}SecretSweepTest")
