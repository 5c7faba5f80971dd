"""execute_repair_step against a real local agent platform (docs/agent_api.md)."""

from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.base import SynthralosActionTestCase
from synthralos_tests.http_server import Reply, hang, malformed_json

from execute_repair_step import ExecuteRepairStepAction
from synthralos_lib.healing.detection import detect_failure
from synthralos_lib.healing.plans import repair_context
from synthralos_lib.healing.execution import OUTPUT_INSTRUCTIONS, StepInvalid, simplify_query

KEY = "agent-key-5b1e22"
LONG_INPUT = (
    "Summarise ticket 1234 for the customer.   Include the refund status and the shipping delay. "
    "Then draft a polite reply in German, quoting the order number, and list every prior ticket "
    "from this customer with its resolution and the agent who handled it."
)
FAILED = {
    "id": "exec-1",
    "status": "failed",
    "input": LONG_INPUT,
    "error": "boom",
    "max_iterations": 10,
    "provider": "openai",
    "model": "gpt-4o",
    "tool_results": [{"tool": "search_tickets", "tool_call_id": "call_1", "status": "failed", "error": "502"}],
}


def step(action, params, priority=1, reason="test"):
    return {"action": action, "priority": priority, "params": params, "reason": reason}


class ExecuteRepairStepTest(SynthralosActionTestCase):
    action_cls = ExecuteRepairStepAction

    def setUp(self):
        super(ExecuteRepairStepTest, self).setUp()
        self.server = AgentPlatformServer(api_key=KEY, agents=["agent-1"]).start()
        self.addCleanup(self.server.stop)
        self.server.add_execution("agent-1", FAILED)
        self.failure = detect_failure(FAILED)

    def run_step(self, the_step, failure=None, **section):
        agent_api = {"base_url": self.server.base_url, "api_key": KEY, "timeout_s": 1}
        agent_api.update(section)
        action = self.action(agent_api=agent_api)
        return action.run("agent-1", "exec-1", the_step, failure=self.failure if failure is None else failure, attempt=2)

    def test_each_action_sends_its_request_and_repairs(self):
        reexecute = "/api/agents/agent-1/executions"
        table = [
            (step("retry_execution", {}), reexecute, {"overrides": {}}),
            (step("retry_with_backoff", {"delay_s": 5}), reexecute, {"overrides": {}}),
            (step("reduce_max_iterations", {"max_iterations": 5}), reexecute, {"overrides": {"max_iterations": 5}}),
            (
                step("simplify_query", {"max_chars": 100}),
                reexecute,
                {"overrides": {}, "input": "Summarise ticket 1234 for the customer. Include the refund status and the shipping delay."},
            ),
            (
                step("regenerate_output", {"format": "json"}),
                reexecute,
                {"overrides": {"output_instructions": OUTPUT_INSTRUCTIONS["json"]}},
            ),
            (
                step("switch_provider", {"provider": "anthropic", "model": "claude-3-5-sonnet"}),
                reexecute,
                {"overrides": {"provider": "anthropic", "model": "claude-3-5-sonnet"}},
            ),
            (
                step("retry_tool", {"tool": "search_tickets", "tool_call_id": "call_1"}),
                "/api/agents/agent-1/executions/exec-1/tool-retries",
                {"tool": "search_tickets", "tool_call_id": "call_1"},
            ),
        ]
        for number, (the_step, path, expected_body) in enumerate(table, 1):
            result = self.run_step(the_step)
            self.assertIs(result["repaired"], True, the_step)
            self.assertEqual(result["new_execution_id"], "exec-r%d" % number)
            self.assertEqual(result["execution"]["status"], "succeeded")
            self.assertIsNone(result["error"])
            self.assertIsNone(result["failure"])
            request = self.server.last_request("POST")
            self.assertEqual(request.path, path)
            body = dict(expected_body, wait=True, reason="synthralos repair: %s (test)" % the_step["action"])
            if "tool" not in expected_body:
                body["retry_of"] = "exec-1"
            if the_step["action"] in ("reduce_max_iterations", "simplify_query", "regenerate_output"):
                body["repair_context"] = repair_context(self.failure, the_step["action"])  # what went wrong
            self.assertEqual(request.json, body, the_step["action"])
            self.assertEqual(request.header("idempotency-key"), "synthralos:exec-1:2:%s" % the_step["action"])
            self.assertEqual(
                result["attempt_record"],
                {
                    "attempt": 2,
                    "action": the_step["action"],
                    "params": the_step["params"],
                    "repaired": True,
                    "new_execution_id": "exec-r%d" % number,
                    "error_class": None,
                    "error_message": None,
                    "failure_type": None,
                    "duration_s": result["duration_s"],
                },
            )

    def test_rerun_that_fails_again_is_not_a_repair(self):
        self.server.on_rerun({}, {"status": "timeout", "timed_out": True})
        result = self.run_step(step("retry_execution", {}))
        self.assertIs(result["repaired"], False)
        self.assertEqual(result["failure"]["failure_type"], "timeout")
        self.assertEqual(result["attempt_record"]["failure_type"], "timeout")
        self.assertIsNone(result["error"])

    def test_succeeded_with_empty_output_is_not_a_repair(self):
        self.server.on_rerun({}, {"status": "succeeded", "output": ""})
        result = self.run_step(step("regenerate_output", {"format": "non_empty"}))
        self.assertIs(result["repaired"], False)
        self.assertEqual(result["failure"]["summary"], "invalid_output: output is empty")

    def test_simplify_query_reads_the_input_when_the_failure_lacks_it(self):
        failure = dict(self.failure, input=None)
        result = self.run_step(step("simplify_query", {"max_chars": 100}), failure=failure)
        self.assertTrue(result["repaired"])
        self.assertEqual([r.method for r in self.server.requests()], ["GET", "POST"])
        self.assertEqual(result["request"]["input"], simplify_query(LONG_INPUT, 100))

    def test_simplify_query_without_any_input_does_not_rerun(self):
        self.server.add_execution("agent-1", dict(FAILED, input=None))
        result = self.run_step(step("simplify_query", {"max_chars": 100}), failure=dict(self.failure, input=None))
        self.assertFalse(result["repaired"])
        self.assertEqual(result["error"], {"class": "no_input", "message": "the failed execution has no text input to simplify"})
        self.assertEqual(self.server.requests("POST"), [])

    def test_api_errors_are_reported_not_raised(self):
        path = self.server.EXECUTIONS
        self.server.script("POST", path, Reply(500, {"error": "db down"}), hang(3), malformed_json(), Reply(429, {}, {"Retry-After": "9"}))
        seen = [self.run_step(step("retry_execution", {})) for _ in range(4)]
        self.assertEqual(
            [(r["repaired"], r["error"]["class"], r["error"]["status"]) for r in seen],
            [(False, "server_error", 500), (False, "timeout", None), (False, "malformed_response", 200), (False, "rate_limited", 429)],
        )
        self.assertEqual(seen[0]["error"]["message"], "HTTP 500: db down")
        self.assertEqual(seen[3]["error"]["retry_after_s"], 9.0)
        self.assertEqual(seen[0]["attempt_record"]["error_class"], "server_error")

    def test_wrong_key_and_unknown_agent(self):
        denied = self.run_step(step("retry_execution", {}), api_key="wrong-key")
        self.assertEqual((denied["repaired"], denied["error"]["class"], denied["error"]["status"]), (False, "auth", 401))
        action = self.action(agent_api={"base_url": self.server.base_url, "api_key": KEY, "timeout_s": 1})
        missing = action.run("agent-404", "exec-1", step("retry_execution", {}), failure=self.failure)
        self.assertEqual((missing["error"]["class"], missing["error"]["status"]), ("not_found", 404))

    def test_async_rerun_is_polled(self):
        self.server.on_rerun({}, {"status": "succeeded", "output": "fine", "async_polls": 1})
        result = self.run_step(step("retry_execution", {}))
        self.assertTrue(result["repaired"])
        self.assertEqual([r.method for r in self.server.requests()], ["POST", "GET", "GET"])

    def test_invalid_steps_fail_the_action_and_call_nothing(self):
        for bad in (
            {"action": "delete_agent", "priority": 1, "params": {}, "reason": "x"},
            step("retry_with_backoff", {"delay_s": 100000}),
            step("retry_tool", {"tool": "x; rm -rf /"}),
            {"action": "retry_execution"},
            "retry_execution",
        ):
            with self.assertRaises(StepInvalid):
                self.run_step(bad)
        self.assertEqual(self.server.requests(), [])

    def test_api_key_never_in_the_result(self):
        self.server.on_rerun({}, {"status": "failed", "error": "bad key %s" % KEY, "output": KEY})
        result = self.run_step(step("retry_execution", {}))
        self.assertFalse(result["repaired"])
        self.assertNotIn(KEY, repr(result))
        self.assertIn("bad key ***", repr(result))
