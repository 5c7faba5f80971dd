"""Repairs with reasons: regenerate_output, simplify_query and reduce_max_iterations re-runs tell
the agent what went wrong (`repair_context`, docs/agent_api.md), scrubbed and capped, through the
real agent API client against the local agent platform; the LLM planner's prompt gets the same."""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import json
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from synthralos_tests.agent_api_server import AgentPlatformServer

from synthralos_lib.healing import plans
from synthralos_lib.healing.agent_api import AgentApiClient
from synthralos_lib.healing.detection import detect_failure
from synthralos_lib.healing.execution import execute_step

KEY = "agent-key-r3Tz9Qw1"
SECRET = "sk-Vb7Nq2Lx8Pz4Rk6Ht1Wm9Cd3Gs5"  # a configured secret (say, an LLM key) the agent echoed

INVALID = {
    "id": "exec-inv", "status": "succeeded", "input": "List the refunds as JSON.",
    "output": '{"refunds": "three"}',
    "validation_errors": [
        {"loc": ["refunds"], "msg": "Input should be a valid list"},
        {"path": "total", "message": "Field required"},
        "currency: must be one of EUR, USD",
    ],
}
TOOL_FAILED = {
    "id": "exec-tool", "status": "failed", "input": "Summarise ticket 1234. " * 20, "max_iterations": 8,
    "error": "the agent gave up after a tool failure",
    "tool_results": [{"tool": "search_tickets", "tool_call_id": "call_1", "status": "failed",
                      "error": "HTTP 502 from ticket API"}],
}
TIMED_OUT = {
    "id": "exec-slow", "status": "timeout", "input": "Plan the migration.", "duration_ms": 130000,
    "timeout_ms": 120000, "max_iterations": 12,
}


def step(action, params):
    return {"action": action, "priority": 1, "params": params, "reason": "test"}


class RerunCarriesTheEvidenceTest(unittest.TestCase):
    def setUp(self):
        self.server = AgentPlatformServer(api_key=KEY, agents=["agent-1"]).start()
        self.addCleanup(self.server.stop)
        self.client = AgentApiClient({"base_url": self.server.base_url, "api_key": KEY, "timeout_s": 5})

    def rerun(self, execution, the_step, secrets=(SECRET,)):
        self.server.add_execution("agent-1", execution)
        failure = detect_failure(execution, secrets)
        outcome = execute_step(self.client, "agent-1", execution["id"], the_step, failure=failure, secrets=secrets)
        request = self.server.last_request("POST")
        return outcome, request.json

    def test_regenerate_output_sends_the_validator_errors(self):
        # The platform answers a re-run that carries the validator's errors with a valid output.
        self.server.on_rerun({"repair_context": {"failure_type": "invalid_output"}},
                             {"status": "succeeded", "output": '{"refunds": [], "total": 0, "currency": "EUR"}'})
        self.server.on_rerun({}, {"status": "succeeded", "output": "Error: still invalid"})
        outcome, body = self.rerun(INVALID, step("regenerate_output", {"format": "json"}))
        self.assertTrue(outcome["repaired"], outcome)
        context = body["repair_context"]
        self.assertEqual(context["failure_type"], "invalid_output")
        self.assertEqual(context["validation_errors"], ["refunds: Input should be a valid list",
                                                        "total: Field required", "currency: must be one of EUR, USD"])
        self.assertEqual(context["summary"], "invalid_output: output failed validation: refunds: Input should be a "
                                             "valid list")
        self.assertEqual(outcome["request"]["repair_context"], context)

    def test_simplify_query_sends_the_failed_tool_and_its_error(self):
        outcome, body = self.rerun(TOOL_FAILED, step("simplify_query", {"max_chars": 200}))
        self.assertTrue(outcome["repaired"], outcome)
        context = body["repair_context"]
        self.assertEqual((context["failure_type"], context["failed_tools"]),
                         ("tool_failure", [{"tool": "search_tickets", "error": "HTTP 502 from ticket API"}]))
        self.assertIn("the agent gave up after a tool failure", context["errors"])
        self.assertLessEqual(len(body["input"]), 200)

    def test_reduce_max_iterations_sends_the_timeout(self):
        outcome, body = self.rerun(TIMED_OUT, step("reduce_max_iterations", {"max_iterations": 6}))
        context = body["repair_context"]
        self.assertEqual((context["failure_type"], context["timeout"], context["max_iterations"]),
                         ("timeout", "status is 'timeout'; ran 130000 ms, limit 120000 ms", 12))
        self.assertEqual(body["overrides"], {"max_iterations": 6})

    def test_other_repairs_carry_no_context(self):
        for the_step in (step("retry_execution", {}), step("retry_with_backoff", {"delay_s": 1}),
                         step("switch_provider", {"provider": "anthropic", "model": "claude-3-5-haiku"})):
            _, body = self.rerun(TOOL_FAILED, the_step)
            self.assertNotIn("repair_context", body, the_step["action"])
        _, body = self.rerun(TOOL_FAILED, step("retry_tool", {"tool": "search_tickets"}))
        self.assertNotIn("repair_context", body)

    def test_a_platform_that_refuses_the_field_still_gets_the_rerun(self):
        self.server.rerun_fields.discard("repair_context")  # built to the contract before repair_context
        outcome, body = self.rerun(TIMED_OUT, step("reduce_max_iterations", {"max_iterations": 6}))
        self.assertTrue(outcome["repaired"], outcome)
        self.assertNotIn("repair_context", body)
        refused, accepted = self.server.requests("POST")[-2:]
        self.assertEqual((refused.status, accepted.status), (422, 200))
        self.assertIn("repair_context", refused.json)

    def test_secrets_are_scrubbed_before_the_cap(self):
        # A validator error and a tool error that quote a secret and the agent API key around the cut.
        long_error = "x" * 480 + SECRET + " and " + KEY + " y" * 100
        execution = dict(TOOL_FAILED, id="exec-leak", error=long_error,
                         tool_results=[{"tool": "search_tickets", "status": "failed", "error": long_error}])
        _, body = self.rerun(execution, step("simplify_query", {"max_chars": 200}), secrets=(SECRET, KEY))
        text = json.dumps(body)
        for secret in (SECRET, KEY):
            leaked = [secret[i:i + 6] for i in range(len(secret) - 5) if secret[i:i + 6] in text]
            self.assertEqual(leaked, [], secret)
        context = body["repair_context"]
        self.assertTrue(all(len(e) <= plans.MAX_CONTEXT_STRING for e in context["errors"]))


class PlannerPromptTest(unittest.TestCase):
    def test_the_llm_planner_gets_the_same_evidence(self):
        failure = detect_failure(INVALID)
        _, messages = plans.llm_messages(failure, [], [], secrets=(SECRET,))
        facts = json.loads(messages[0]["content"].split("\n", 1)[1])
        self.assertEqual(facts["repair_context"], plans.repair_context(failure, secrets=(SECRET,)))
        self.assertEqual(facts["repair_context"]["validation_errors"][0], "refunds: Input should be a valid list")

    def test_no_failure_no_context(self):
        self.assertIsNone(plans.repair_context(detect_failure({"status": "succeeded", "output": "fine"})))
        self.assertIsNone(plans.repair_context(None))


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=50),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=4), max_leaves=20)


class HostileExecutionTest(unittest.TestCase):
    @settings(max_examples=150, deadline=None)
    @given(st.dictionaries(st.sampled_from(["status", "output", "error", "validation_errors", "tool_results",
                                            "timed_out", "duration_ms", "timeout_ms", "max_iterations",
                                            "llm_error"]), _json, max_size=8),
           st.sampled_from(plans.REPAIR_CONTEXT_ACTIONS))
    def test_any_execution_gives_a_bounded_json_context_or_none(self, execution, action):
        context = plans.repair_context(detect_failure(execution), action)
        if context is None:
            return
        json.dumps(context)
        for key in ("validation_errors", "failed_tools", "errors"):
            self.assertLessEqual(len(context[key]), plans.MAX_CONTEXT_ITEMS + 1)  # +1: the "more" marker


if __name__ == "__main__":
    unittest.main()
