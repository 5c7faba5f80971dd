"""Issue 9 items 7, 8 and 9 for the self-healing actions: clear answers to bad input,
bounded shapes, and Redis outages that degrade instead of breaking (real agent API
server, real redis-server, a Redis URL with nothing listening)."""

import synthralos_tests  # noqa: F401

import json
import unittest

from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.http_server import Reply
from synthralos_tests.healing import recovery_actions
from synthralos_tests.orquesta_runner import ACTIONS_DIR, run_workflow, skip_unless_orquesta

from detect_failure import DetectFailureAction
from execute_repair_step import ExecuteRepairStepAction
from forward_event import ForwardEvent
from generate_repair_plan import GenerateRepairPlanAction
from get_failure_history import GetFailureHistoryAction
from log_llm_cost import LogLlmCost
from log_prompt_similarity import LogPromptSimilarity
from record_failure import RecordFailureAction
from synthralos_lib.action_base import ActionInputError, SynthralosAction
from synthralos_lib.healing.detection import MAX_EVIDENCE, MAX_FAILED_TOOLS, MAX_INPUT_CHARS, detect_failure
from synthralos_lib.healing.execution import StepInvalid
from synthralos_lib.state.store import DatastoreStore

KEY = "agent-key-promises-01"
FAILED = {"id": "exec-1", "status": "failed", "error": "boom", "input": "Summarise ticket 1234."}
RETRY = {"action": "retry_execution", "priority": 1, "params": {}, "reason": "r"}
# st2 stores results in MongoDB (16 MB) and copies them into workflow context: stay far below.
RESULT_BUDGET = 256 * 1024


def closed_port():
    from synthralos_tests.http_server import free_port  # nothing listens on it once the probe socket is closed

    return free_port()


class _Base(StoreBackendMixin, unittest.TestCase):
    backend = "datastore"

    def setUp(self):
        super(_Base, self).setUp()
        self.server = AgentPlatformServer(api_key=KEY, agents=["agent-1"]).start()
        self.addCleanup(self.server.stop)
        self.server.add_execution("agent-1", FAILED)

    def config(self, **sections):
        return self.make_config(agent_api={"base_url": self.server.base_url, "api_key": KEY, "timeout_s": 2}, **sections)

    def action(self, cls, **sections):
        return cls(config=self.config(**sections), action_service=self.action_service)


class ClearAnswersTest(_Base):
    def test_ids_the_agent_api_cannot_carry_are_refused_by_name(self):
        for agent_id, execution_id, message in (
            ("agent-\u00e9", "exec-1", "agent_id must be printable ASCII without spaces"),
            ("agent-1", "   ", "execution_id must not be only whitespace"),
            ("agent-1", "exec 1", "execution_id must be printable ASCII without spaces"),
            ("agent-1", "a/b", "execution_id must not be '.' or '..' or contain '/'"),
            ("agent-1", "x" * 257, "execution_id must be at most 256 characters"),
            ("agent-1", ["exec-1"], "execution_id must be a string"),
        ):
            with self.assertRaises(StepInvalid) as caught:
                self.action(ExecuteRepairStepAction).run(agent_id, execution_id, RETRY)
            self.assertEqual(str(caught.exception), message)
        self.assertEqual(self.server.requests(), [])

    def test_a_hand_edited_failure_names_the_bad_field(self):
        found = detect_failure(FAILED)
        for field, value, message in (
            ("failure_type", 5, "failure.failure_type must be one of timeout, error, invalid_output, tool_failure, "
                                "llm_error, unknown_status or null"),
            ("failed_tools", "search", "failure.failed_tools must be a list"),
            ("failed_tools", [{"tool": 3}], "failure.failed_tools[0] must be an object with a string tool"),
            ("max_iterations", "10", "failure.max_iterations must be a non-negative integer or null"),
            ("retry_after_s", float("inf"), "failure.retry_after_s must be a finite, non-negative number or null"),
        ):
            with self.assertRaises(ValueError) as caught:
                self.action(GenerateRepairPlanAction).run(dict(found, **{field: value}))
            self.assertEqual(str(caught.exception), message)

    def test_record_failure_checks_what_the_schema_cannot(self):
        for params, message in (
            ({"agent_id": "  "}, "agent_id must not be only whitespace"),
            ({"agent_id": "a", "started_at": float("nan")}, "started_at must be a finite epoch time in seconds, not in the future"),
            ({"agent_id": "a", "started_at": float("inf")}, "started_at must be a finite epoch time in seconds, not in the future"),
            ({"agent_id": "a", "attempts": ["x"]}, "attempts must be a list of objects"),
            ({"agent_id": "a", "failure": "timeout"}, "failure must be an object (the result of synthralos.detect_failure)"),
        ):
            with self.assertRaises(ValueError) as caught:
                self.action(RecordFailureAction).run(**params)
            self.assertEqual(str(caught.exception), message)
        self.assertEqual(self.action(GetFailureHistoryAction).run("a")["count"], 0)

    def test_event_actions_refuse_nan_infinity_and_blank_ids(self):
        cases = (
            (LogLlmCost, dict(provider="openai", model="gpt-4o", input_tokens=1, output_tokens=1,
                              input_price_per_1k=float("nan")),
             "input_price_per_1k must be a finite number (not NaN or Infinity)"),
            (LogLlmCost, dict(provider="openai", model="gpt-4o", input_tokens=10 ** 12, output_tokens=1),
             "input_tokens must be at most 100000000"),
            (LogPromptSimilarity, dict(threshold=float("nan"), score=0.5), "threshold must be a finite number (not NaN or Infinity)"),
            (LogPromptSimilarity, dict(threshold=0.8, vector_a=[0.1, float("inf")], vector_b=[0.1, 0.2]),
             "vector_a[1] must be a finite number (not NaN or Infinity)"),
            (ForwardEvent, dict(event_type="agent_execution", user_id="   "), "user_id must not be only whitespace"),
        )
        for cls, params, message in cases:
            self.assertEqual(self.action(cls).run(**params), (False, {"error": message}), cls.__name__)

    def test_a_raw_type_error_becomes_a_named_input_error(self):
        class Broken(SynthralosAction):
            def run(self, value):
                return value["missing"] + 1

        with self.assertRaises(ActionInputError) as caught:
            Broken(config={}, action_service=self.action_service).run({})
        self.assertEqual(str(caught.exception), "Broken could not process its input (KeyError: 'missing')")


class BoundedShapesTest(_Base):
    def test_detection_bounds_evidence_tools_and_input(self):
        deep = {"message": "innermost"}
        for _ in range(5000):
            deep = {"error": deep}
        result = {
            "status": "failed",
            "error": deep,
            "duration_ms": float("inf"),
            "timeout_ms": 10,
            "input": "q" * (MAX_INPUT_CHARS * 3),
            "max_iterations": 10 ** 40,
            "tool_results": [{"tool": "t%d" % n, "status": "failed", "error": "e" * 100000} for n in range(3000)],
        }
        found = self.action(DetectFailureAction).run(result, agent_id="agent-1", execution_id="exec-1")
        self.assertEqual(found["failure_type"], "tool_failure")
        self.assertEqual(len(found["failed_tools"]), MAX_FAILED_TOOLS)
        self.assertLessEqual(len(found["evidence"]), MAX_EVIDENCE)
        self.assertEqual(len(found["input"]), MAX_INPUT_CHARS)
        self.assertIsNone(found["max_iterations"])
        self.assertNotIn("duration_ms", [e["field"] for e in found["evidence"]])
        self.assertLess(len(json.dumps(found)), RESULT_BUDGET)

    def test_failure_history_results_stay_within_a_megabyte(self):
        from synthralos_lib.healing.history import within_budget

        entries = [{"n": n, "summary": "s" * 1000} for n in range(3000)]
        kept, truncated = within_budget(entries)
        self.assertTrue(truncated)
        self.assertEqual([e["n"] for e in kept], list(range(len(kept))))
        self.assertLess(len(json.dumps(kept)), 1024 * 1024)
        self.assertEqual(within_budget(entries[:5]), (entries[:5], False))
        history = self.action(GetFailureHistoryAction).run("agent-1")
        self.assertEqual((history["count"], history["truncated"]), (0, False))

    def test_a_huge_or_deep_agent_api_body_is_bounded(self):
        deep = []
        for _ in range(200):
            deep = [deep]
        self.server.on_rerun({}, {"status": "succeeded", "output": "o" * 600000, "trace": deep,
                                  "steps": [{"n": n} for n in range(5000)]})
        outcome = self.action(ExecuteRepairStepAction).run("agent-1", "exec-1", RETRY, wait_s=0)
        self.assertTrue(outcome["repaired"], outcome["error"])
        self.assertLess(len(json.dumps(outcome)), RESULT_BUDGET)
        self.assertTrue(outcome["execution"]["output"].endswith("..."))

    def test_a_body_over_the_size_limit_is_malformed(self):
        self.server.script("POST", self.server.EXECUTIONS, Reply(200, {"id": "r1", "status": "succeeded",
                                                                       "output": "o" * (2 * 1024 * 1024)}))
        outcome = self.action(ExecuteRepairStepAction).run("agent-1", "exec-1", RETRY, wait_s=0)
        self.assertEqual((outcome["repaired"], outcome["error"]["class"]), (False, "malformed_response"))
        self.assertTrue(outcome["error"]["message"].startswith("the body is "), outcome["error"])

    def test_an_accepted_run_without_an_id_is_never_polled(self):
        for body in ({"status": "running"}, {"id": None, "status": "running"}, {"id": "", "status": "queued"},
                     {"id": {"x": 1}, "status": "succeeded"}, {"id": "../../admin", "status": "succeeded"}):
            self.server.script("POST", self.server.EXECUTIONS, Reply(202, body))
            outcome = self.action(ExecuteRepairStepAction).run("agent-1", "exec-1", RETRY, wait_s=5)
            self.assertEqual((outcome["repaired"], outcome["error"]["class"]), (False, "malformed_response"), body)
        self.assertEqual(self.server.requests("GET"), [])


class RedisDownTest(_Base):
    """redis.url set, nothing listening: history falls back to the st2 datastore and says so."""

    def config(self, **sections):
        return dict(super(RedisDownTest, self).config(**sections),
                    redis={"url": "redis://127.0.0.1:%d/0" % closed_port()})

    def test_history_is_recorded_and_read_from_the_datastore(self):
        recorded = self.action(RecordFailureAction).run("agent-1", execution_id="exec-1", failure=detect_failure(FAILED),
                                                        outcome="escalated")
        self.assertEqual(recorded["store"], "st2_datastore")
        self.assertTrue(recorded["fallback_reason"].startswith("redis unavailable (redis LPUSH failed: "),
                        recorded["fallback_reason"])
        self.assertTrue(recorded["fallback_reason"].endswith("); recorded in st2_datastore"))
        read = self.action(GetFailureHistoryAction).run("agent-1")
        self.assertEqual((read["store"], read["count"]), ("st2_datastore", 1))
        self.assertTrue(read["fallback_reason"].startswith("redis unavailable (redis LRANGE failed: "))
        self.assertEqual(read["entries"][0]["outcome"], "escalated")
        stored = DatastoreStore(self.action_service).list_range("failures.agent-1")
        self.assertEqual([e["execution_id"] for e in stored], ["exec-1"])

    @skip_unless_orquesta
    def test_a_recovery_with_redis_down_repairs_and_records(self):
        actions = recovery_actions(self.config(), self.action_service)
        run = run_workflow("agent_recovery", {"agent_id": "agent-1", "execution_id": "exec-1", "result": FAILED},
                           actions=actions, action_meta_dir=ACTIONS_DIR)
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["begin"])
        self.assertEqual(run.output["storm"]["decision"], "unavailable")  # fails open: the failure is recovered
        self.assertEqual([e["outcome"] for e in DatastoreStore(self.action_service).list_range("failures.agent-1")],
                         ["repaired"])
