"""generate_repair_plan with enable_llm_repair_plans on, against a real local
LLM provider speaking OpenAI chat completions (tests/synthralos_tests/llm_provider.py):
a valid plan is used; a hostile answer, a 500 and a timeout fall back to the
rule plan with the reason recorded."""

import json
import unittest

from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.base import StoreBackendMixin, SynthralosActionTestCase, load_fixture
from synthralos_tests.llm_provider import LLMProviderServer
from synthralos_tests.healing import recovery_actions
from synthralos_tests.orquesta_runner import ACTIONS_DIR, run_workflow, skip_unless_orquesta

from generate_repair_plan import GenerateRepairPlanAction
from synthralos_lib.healing.detection import detect_failure

PLANNER_KEY = "sk-planner-test-4e1f"
# An OpenAI gpt-4o run that was rate limited; the rule plan waits 30 s then switches to Claude.
FAILURE = detect_failure(
    {
        "status": "failed",
        "provider": "openai",
        "model": "gpt-4o",
        "max_iterations": 8,
        "llm_error": {"status": 429, "error_class": "rate_limited", "message": "Rate limit reached"},
    }
)
RULE_STEPS = [
    {"action": "retry_with_backoff", "priority": 1, "params": {"delay_s": 30},
     "reason": "wait 30 s then re-run: the provider asked to slow down or was briefly unavailable"},
    {"action": "switch_provider", "priority": 2, "params": {"provider": "anthropic", "model": "claude-3-5-sonnet"},
     "reason": "switch to anthropic/claude-3-5-sonnet (target claude)"},
]
LLM_STEPS = [
    {"action": "switch_provider", "priority": 1, "params": {"provider": "anthropic", "model": "claude-3-5-sonnet"},
     "reason": "the OpenAI org is rate limited; move to Claude now"},
    {"action": "reduce_max_iterations", "priority": 2, "params": {"max_iterations": 4},
     "reason": "fewer iterations means fewer calls"},
]


class LLMRepairPlanTest(SynthralosActionTestCase):
    action_cls = GenerateRepairPlanAction
    maxDiff = None

    def setUp(self):
        super(LLMRepairPlanTest, self).setUp()
        self.provider = LLMProviderServer()
        self.addCleanup(self.provider.close)
        self.provider.add_endpoint("planner", "openai", PLANNER_KEY)
        self.provider.add_endpoint("claude", "anthropic", "sk-ant-unused")
        self.targets = [
            self.provider.target("planner", model="gpt-4o", name="planner", timeout_s=1, priority=1),
            self.provider.target("claude", model="claude-3-5-sonnet", name="claude", priority=2),
        ]

    def plan(self, *faults):
        self.provider.script("planner", list(faults))
        action = self.action(features={"enable_llm_repair_plans": True}, llm_targets=self.targets)
        return action.run(FAILURE)

    def test_valid_plan_is_used(self):
        plan = self.plan({"fault": "ok", "content": "```json\n%s\n```" % json.dumps({"steps": LLM_STEPS})})
        self.assertEqual(plan["source"], "llm")
        self.assertEqual(plan["steps"], LLM_STEPS)
        self.assertEqual(plan["delays"], [0, 0])
        self.assertEqual(plan["rule_steps"], RULE_STEPS)
        llm = plan["llm"]
        self.assertEqual(
            {k: llm[k] for k in ("enabled", "asked", "accepted", "target", "rejected_reason")},
            {"enabled": True, "asked": True, "accepted": True, "target": "planner", "rejected_reason": None},
        )
        self.assertGreater(llm["usage"]["total_tokens"], 0)
        # What the provider was asked: one OpenAI chat completion, the schema in the system message.
        calls = self.provider.calls("planner")
        self.assertEqual([(c["model"], c["status"]) for c in calls], [("gpt-4o", 200)])
        request = self.provider.requests("POST")[-1].json
        self.assertEqual(request["model"], "gpt-4o")
        self.assertEqual(request["temperature"], 0)
        self.assertEqual(request["messages"][0]["role"], "system")
        self.assertIn('"maxItems": 7', request["messages"][0]["content"])
        self.assertIn('"rule_based_plan"', request["messages"][1]["content"])
        self.assertNotIn(PLANNER_KEY, repr(plan))

    def test_hostile_answers_fall_back_to_the_rules(self):
        expected = load_fixture("llm_plans", "hostile.json")
        for name in ("ignore_previous_instructions.txt", "shell_command_action.txt", "huge_delay.txt", "truncated.txt",
                     "unknown_provider.txt"):
            plan = self.plan({"fault": "ok", "content": load_fixture("llm_plans", "hostile", name)})
            self.assertEqual(plan["source"], "rules", name)
            self.assertEqual(plan["steps"], RULE_STEPS, name)
            self.assertEqual((plan["llm"]["asked"], plan["llm"]["accepted"]), (True, False), name)
            self.assertTrue(plan["llm"]["rejected_reason"].startswith("the LLM plan was rejected: "), name)
            self.assertIn(expected[name], plan["llm"]["rejected_reason"], name)

    def test_server_error_falls_back(self):
        plan = self.plan("server_error")
        self.assertEqual((plan["source"], plan["steps"]), ("rules", RULE_STEPS))
        self.assertEqual(plan["llm"]["error_class"], "transient")
        self.assertEqual(
            plan["llm"]["rejected_reason"],
            "the LLM call failed (transient): HTTP 500 server_error: The server had an error while processing your "
            "request. Sorry about that!",
        )

    def test_timeout_falls_back(self):
        plan = self.plan({"fault": "hang", "delay_s": 5})
        self.assertEqual((plan["source"], plan["steps"]), ("rules", RULE_STEPS))
        self.assertEqual(plan["llm"]["error_class"], "transient")
        self.assertTrue(plan["llm"]["rejected_reason"].startswith("the LLM call failed (transient): "))
        self.assertIn("timed out after 1.0s", plan["llm"]["rejected_reason"])
        self.assertLess(plan["llm"]["latency_s"], 4)

    def test_wrong_key_falls_back_without_leaking_it(self):
        self.targets[0]["api_key"] = "sk-wrong-key-0000"
        plan = self.plan("ok")
        self.assertEqual(plan["source"], "rules")
        self.assertEqual(plan["llm"]["error_class"], "auth_config")
        self.assertNotIn("sk-wrong-key-0000", repr(plan))

    def test_malformed_and_empty_answers_fall_back(self):
        for fault in ("malformed", "empty"):
            plan = self.plan(fault)
            self.assertEqual((plan["source"], plan["llm"]["error_class"]), ("rules", "invalid_output"), fault)


@skip_unless_orquesta
class AgentRecoveryWithLLMPlanTest(StoreBackendMixin, unittest.TestCase):
    """The whole agent_recovery workflow with the LLM planner on: its plan runs; a bad answer changes nothing."""

    def setUp(self):
        super(AgentRecoveryWithLLMPlanTest, self).setUp()
        self.provider = LLMProviderServer()
        self.addCleanup(self.provider.close)
        self.provider.add_endpoint("planner", "openai", PLANNER_KEY)
        self.agents = AgentPlatformServer(api_key="agent-key-llm", agents=["agent-1"]).start()
        self.addCleanup(self.agents.stop)
        self.result = {"id": "exec-1", "status": "failed", "input": "Draft the weekly report.", "provider": "openai",
                       "model": "gpt-4o", "max_iterations": 8,
                       "llm_error": {"status": 429, "error_class": "rate_limited", "message": "Rate limit reached"}}
        self.agents.add_execution("agent-1", self.result)
        # Only a run moved to Claude succeeds.
        self.agents.default_outcome = {"status": "failed", "llm_error": {"message": "Rate limit reached"}}
        self.agents.on_rerun({"overrides": {"provider": "anthropic"}}, {"status": "succeeded", "output": "Report."})

    def recover(self, answer):
        self.provider.script("planner", [{"fault": "ok", "content": answer}])
        targets = [
            self.provider.target("planner", model="gpt-4o", name="planner", timeout_s=1, priority=1),
            {"name": "claude", "kind": "anthropic", "base_url": "http://127.0.0.1:9/v1", "model": "claude-3-5-sonnet",
             "priority": 2},
        ]
        config = self.make_config(
            agent_api={"base_url": self.agents.base_url, "api_key": "agent-key-llm"},
            llm_targets=targets,
            features={"enable_llm_repair_plans": True},
        )
        actions = recovery_actions(config, self.action_service)
        params = {"agent_id": "agent-1", "execution_id": "exec-1", "result": self.result}
        return run_workflow("agent_recovery", params, actions=actions, action_meta_dir=ACTIONS_DIR)

    def test_llm_plan_drives_the_recovery(self):
        run = self.recover(json.dumps({"steps": LLM_STEPS}))
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["begin"])  # planned by the LLM, applied and recorded in one execution
        self.assertEqual((run.output["plan"]["source"], run.output["repaired_by"], run.output["attempts"]),
                         ("llm", "switch_provider", 1))

    def test_hostile_answer_falls_back_and_the_recovery_still_works(self):
        run = self.recover(load_fixture("llm_plans", "hostile", "ignore_previous_instructions.txt"))
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["begin", "execute_step", "execute_step", "record_repaired"])
        self.assertEqual(run.output["plan"]["source"], "rules")
        self.assertEqual(run.output["plan"]["llm"]["rejected_reason"],
                         "the LLM plan was rejected: the answer contains no JSON object")
        self.assertEqual(run.delays_for("execute_step"), [30, 0])
        self.assertEqual((run.output["repaired_by"], run.output["attempts"]), ("switch_provider", 2))
