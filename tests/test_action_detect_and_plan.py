"""detect_failure and generate_repair_plan as st2 runs them (config through load_config)."""

from synthralos_tests.base import SynthralosActionTestCase

from detect_failure import DetectFailureAction
from generate_repair_plan import GenerateRepairPlanAction
from synthralos_lib.healing.detection import detect_failure

TARGETS = [
    {"name": "openai-us", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o", "api_key": "sk-planner-secret"},
    {"name": "claude", "kind": "anthropic", "base_url": "http://127.0.0.1:9/v1", "model": "claude-3-5-sonnet"},
]


class DetectFailureActionTest(SynthralosActionTestCase):
    action_cls = DetectFailureAction

    def test_detects_and_scrubs(self):
        action = self.action(agent_api={"api_key": "agent-secret-1"})
        found = action.run({"status": "failed", "error": "401 for key agent-secret-1"}, agent_id="a", execution_id="e")
        self.assertEqual(found["failure_type"], "error")
        self.assertEqual((found["agent_id"], found["execution_id"]), ("a", "e"))
        self.assertEqual(found["evidence"][1]["detail"], "401 for key ***")
        self.assertIsInstance(found["checked_at"], float)

    def test_no_failure(self):
        found = self.action().run({"status": "succeeded", "output": "ok"})
        self.assertEqual((found["failed"], found["failure_type"], found["summary"]), (False, None, "no failure detected"))

    def test_bad_result(self):
        with self.assertRaises(ValueError):
            self.action().run("failed")


class GenerateRepairPlanActionTest(SynthralosActionTestCase):
    action_cls = GenerateRepairPlanAction

    def test_rule_plan(self):
        failure = detect_failure({"status": "failed", "provider": "openai", "model": "gpt-4o",
                                  "llm_error": {"error_class": "overloaded", "message": "Overloaded"}})
        plan = self.action(llm_targets=TARGETS).run(failure)
        self.assertEqual(plan["source"], "rules")
        self.assertEqual(
            [(s["action"], s["params"]) for s in plan["steps"]],
            [("retry_with_backoff", {"delay_s": 20}), ("switch_provider", {"provider": "anthropic", "model": "claude-3-5-sonnet"})],
        )
        self.assertEqual(plan["delays"], [20, 0])
        self.assertNotIn("sk-planner-secret", repr(plan))

    def test_flag_on_without_targets_records_why(self):
        plan = self.action(features={"enable_llm_repair_plans": True}).run(detect_failure({"status": "failed"}))
        self.assertEqual(plan["source"], "rules")
        self.assertEqual(plan["llm"]["rejected_reason"], "no llm_targets are configured")
        self.assertEqual([s["action"] for s in plan["steps"]], ["retry_execution", "retry_with_backoff"])

    def test_input_that_is_not_a_detection_is_refused(self):
        with self.assertRaises(ValueError) as caught:
            self.action().run({"status": "failed"})
        self.assertEqual(str(caught.exception), "failure must be the result of synthralos.detect_failure")
