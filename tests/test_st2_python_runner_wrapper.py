"""Every python action of the pack, run the way st2's action runner runs it: in a
subprocess through st2's own ``python_action_wrapper.py``, with the argv,
PYTHONPATH and environment ``PythonRunner.run`` builds, the result read back the
way st2 reads it (``tests/synthralos_tests/st2_python_runner.py``).

In-process tests import the action modules from the test's ``sys.path``; this
catches what they cannot: an import that works only from the test's path, a
module st2's loader cannot find an action class in, a result st2 cannot
serialise. State goes to a real local redis-server (``redis.url``), HTTP to the
pack's stub servers; actions of one test share that state across processes.
Real StackStorm only; the compatibility run (stand-in) skips with the reason.
"""

import glob
import os
import unittest

import synthralos_tests  # noqa: F401  (import paths; st2 stand-in when st2 is absent)

import yaml

from synthralos_tests import PACK_ROOT
from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.llm_provider import LLMProviderServer
from synthralos_tests.redis_server import get_redis_server
from synthralos_tests.st2_api_server import St2ApiServer
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink
from synthralos_tests.st2_python_runner import WRAPPER_AVAILABLE, WRAPPER_SKIP_REASON

from synthralos_lib.events.builders import message_id
from synthralos_lib.events.forwarding import NO_WRITE_KEY
from synthralos_lib.healing.detection import detect_failure
from synthralos_lib.healing.plans import plan_repair
from synthralos_lib.state.config import load_config

AGENT_KEY = "agent-api-key-7d41c0"
LLM_KEY = "sk-oa-key-5555eeee"
FAILED = {"id": "exec-1", "status": "failed", "error": "boom", "input": "Summarise ticket 1234"}
STEP = {"action": "retry_execution", "priority": 1, "params": {}, "reason": "transient error"}
CLOSED = {
    "cooldown_s": None,
    "cooling_for_s": 0.0,
    "failure_rate": 0.0,
    "open_for_s": 0.0,
    "reason": None,
    "state": "closed",
    "target": "oa",
    "window_failures": 0,
    "window_requests": 0,
}
# Which test runs each python action (every one must have one).
COVERED = {
    "detect_failure.py": "test_detect_and_plan",
    "generate_repair_plan.py": "test_detect_and_plan",
    "execute_repair_step.py": "test_repair_and_history",
    "record_failure.py": "test_repair_and_history",
    "get_failure_history.py": "test_repair_and_history",
    "llm_call.py": "test_llm_actions",
    "llm_decide.py": "test_llm_actions",
    "llm_breaker_status.py": "test_llm_actions",
    "llm_breaker_reset.py": "test_llm_actions",
    "forward_event.py": "test_event_actions_through_the_outbox",
    "log_llm_cost.py": "test_event_actions_through_the_outbox",
    "log_prompt_similarity.py": "test_event_actions_through_the_outbox",
    "get_queue_stats.py": "test_event_actions_through_the_outbox",
    "flush_events.py": "test_event_actions_through_the_outbox",
    "replay_dead_letters.py": "test_event_actions_through_the_outbox",
}


def python_actions():
    """entry_point of every python-script action in actions/*.yaml."""
    found = set()
    for path in glob.glob(os.path.join(PACK_ROOT, "actions", "*.yaml")):
        with open(path) as handle:
            meta = yaml.safe_load(handle)
        if meta.get("runner_type") in ("python-script", "run-python"):
            found.add(meta["entry_point"])
    return found


def without(mapping, *keys):
    return {k: v for k, v in mapping.items() if k not in keys}


@unittest.skipUnless(WRAPPER_AVAILABLE, WRAPPER_SKIP_REASON)
class PythonRunnerWrapperTest(unittest.TestCase):
    """One test per group of actions that share state; each asserts st2's status and result."""

    @classmethod
    def setUpClass(cls):
        from synthralos_tests.st2_python_runner import StackStormLayout

        # Importing st2tests.base parses st2's test config (cfg.CONF); the layout overrides two options.
        import st2tests.base  # noqa: F401
        cls.api = St2ApiServer(token="st2-token-9c2e").start()
        cls.addClassCleanup(cls.api.stop)
        cls.st2 = StackStormLayout(api_url=cls.api.api_url, auth_token=cls.api.token).__enter__()
        cls.addClassCleanup(cls.st2.__exit__, None, None, None)

    def setUp(self):
        self.redis = get_redis_server()
        self.redis.flushall()
        self.api.keys.clear()

    def run_action(self, entry_point, parameters, config=None):
        self.assertIn(entry_point, COVERED)
        status, output = self.st2.run(entry_point, parameters, config)
        self.assertIn("--file-path=%s" % os.path.join(self.st2.base, "packs", "synthralos", "actions", entry_point),
                      output["argv"])
        return status, output

    def assertSucceeded(self, entry_point, parameters, config=None):
        status, output = self.run_action(entry_point, parameters, config)
        self.assertEqual((status, output["exit_code"]), ("succeeded", 0), output["stderr"])
        self.assertNotIn("Traceback", output["stderr"])
        return output["result"]

    # -- healing ------------------------------------------------------------

    def test_detect_and_plan(self):
        config = {"redis": {"url": self.redis.url}}
        found = self.assertSucceeded(
            "detect_failure.py", {"result": FAILED, "agent_id": "agent-1", "execution_id": "exec-1"}, config
        )
        expected = dict(detect_failure(FAILED), agent_id="agent-1", execution_id="exec-1")
        self.assertEqual(without(found, "checked_at"), expected)
        self.assertIsInstance(found["checked_at"], float)
        plan = self.assertSucceeded("generate_repair_plan.py", {"failure": found}, config)
        self.assertEqual(without(plan, "planned_at"), without(plan_repair(found, load_config(config)), "planned_at"))
        self.assertEqual((plan["failure_type"], plan["source"]), ("error", "rules"))

    def test_parameters_too_long_for_argv_come_on_stdin(self):
        huge = dict(FAILED, error="x" * 140000)
        status, output = self.run_action("detect_failure.py", {"result": huge})
        self.assertIn("--stdin-parameters", output["argv"])
        self.assertEqual(status, "succeeded", output["stderr"])
        self.assertEqual(without(output["result"], "checked_at"),
                         dict(detect_failure(huge), agent_id=None, execution_id=None))

    def test_an_exception_fails_the_execution_with_the_traceback(self):
        status, output = self.run_action("generate_repair_plan.py", {"failure": {}})
        self.assertEqual((status, output["exit_code"], output["result"]), ("failed", 1, "None"))
        self.assertIn("ValueError: failure must be the result of synthralos.detect_failure", output["stderr"])

    def test_st2_datastore_through_the_st2_api(self):
        # Without redis.url the store is st2's datastore: ActionDatastoreService -> <auth.api_url>/v1/keys.
        failure = detect_failure(FAILED)
        recorded = self.assertSucceeded("record_failure.py", {"agent_id": "agent-1", "failure": failure})
        self.assertEqual((recorded["store"], recorded["entry"]["failure_type"]), ("st2_datastore", "error"))
        self.assertEqual(sorted(self.api.keys), ["synthralos.failures.agent-1"])
        history = self.assertSucceeded("get_failure_history.py", {"agent_id": "agent-1", "limit": 5})
        self.assertEqual(history, {"agent_id": "agent-1", "count": 1, "entries": [recorded["entry"]], "store": "st2_datastore"})
        self.assertEqual({r.header("x-auth-token") for r in self.api.requests()}, {"st2-token-9c2e"})

    def test_st2_datastore_refusing_writes_fails_the_execution(self):
        self.api.token = "another-token"
        self.addCleanup(setattr, self.api, "token", "st2-token-9c2e")
        status, output = self.run_action("record_failure.py", {"agent_id": "agent-1"})
        self.assertEqual((status, output["exit_code"], output["result"]), ("failed", 1, "None"))
        self.assertIn("StoreError: st2 datastore write of 'failures.agent-1' failed", output["stderr"])
        self.assertEqual(self.api.keys, {})

    def test_repair_and_history(self):
        server = AgentPlatformServer(api_key=AGENT_KEY, agents=["agent-1"]).start()
        self.addCleanup(server.stop)
        server.add_execution("agent-1", FAILED)
        failure = detect_failure(FAILED)
        config = {
            "redis": {"url": self.redis.url},
            "agent_api": {"base_url": server.base_url, "api_key": AGENT_KEY, "timeout_s": 1},
        }
        outcome = self.assertSucceeded(
            "execute_repair_step.py",
            {"agent_id": "agent-1", "execution_id": "exec-1", "step": STEP, "failure": failure, "attempt": 1, "wait_s": 5},
            config,
        )
        self.assertEqual(
            {k: outcome[k] for k in ("action", "attempt", "repaired", "new_execution_id", "error", "failure", "request")},
            {"action": "retry_execution", "attempt": 1, "repaired": True, "new_execution_id": "exec-r1", "error": None,
             "failure": None, "request": {"call": "reexecute", "input": None, "overrides": {}, "tool": None}},
        )
        self.assertEqual(
            without(outcome["execution"]),
            {"agent_id": "agent-1", "error": None, "id": "exec-r1", "input": FAILED["input"], "output": "repaired output",
             "retry_of": "exec-1", "status": "succeeded", "tool_results": []},
        )
        self.assertEqual([r.path for r in server.runs()], ["/api/agents/agent-1/executions"])
        recorded = self.assertSucceeded(
            "record_failure.py",
            {"agent_id": "agent-1", "execution_id": "exec-1", "failure": failure, "outcome": "repaired",
             "repaired_by": "retry_execution", "attempts": [outcome["attempt_record"]]},
            config,
        )
        self.assertEqual((recorded["store"], recorded["duration_s"]), ("redis", None))
        entry = recorded["entry"]
        self.assertEqual(
            without(entry, "recorded_at"),
            {"agent_id": "agent-1", "attempts": [outcome["attempt_record"]], "duration_s": None,
             "evidence": failure["evidence"], "execution_id": "exec-1", "failure_type": "error", "outcome": "repaired",
             "plan_source": None, "repaired_by": "retry_execution", "summary": failure["summary"], "trace_context": {}},
        )
        history = self.assertSucceeded("get_failure_history.py", {"agent_id": "agent-1", "limit": 5}, config)
        self.assertEqual(history, {"agent_id": "agent-1", "count": 1, "entries": [entry], "store": "redis"})

    # -- llm ------------------------------------------------------------------

    def test_llm_actions(self):
        server = LLMProviderServer()
        self.addCleanup(server.close)
        server.add_endpoint("oa", "openai", LLM_KEY, region="us")
        config = {"redis": {"url": self.redis.url}, "llm_targets": [server.target("oa")]}
        out = self.assertSucceeded(
            "llm_call.py", {"target": "oa", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}, config
        )
        self.assertEqual(
            without(out, "latency_s", "usage"),
            {"content": "Reply from oa (gpt-4o-mini).", "error_class": None, "error_message": None, "model": "gpt-4o-mini",
             "ok": True, "provider": "openai", "region": "us", "retry_after_s": None, "status": 200, "target": "oa"},
        )
        self.assertEqual(len(server.calls("oa")), 1)
        decision = self.assertSucceeded("llm_decide.py", {"outcome": out, "history": []}, config)
        self.assertEqual(
            {k: decision[k] for k in ("action", "target", "chain", "attempts")},
            {"action": "done", "target": "oa", "chain": ["oa"], "attempts": 1},
        )
        status = self.assertSucceeded("llm_breaker_status.py", {}, config)
        self.assertEqual(status["store"], "redis")
        self.assertEqual([(t["target"], t["state"], t["window_requests"]) for t in status["targets"]], [("oa", "closed", 1)])
        reset = self.assertSucceeded("llm_breaker_reset.py", {"target": "oa"}, config)
        self.assertEqual((reset["target"], reset["before"]["window_requests"], reset["after"]), ("oa", 1, CLOSED))
        status, output = self.run_action("llm_breaker_reset.py", {"target": "ghost"}, config)
        self.assertEqual((status, output["exit_code"]), ("failed", 1))
        self.assertIn("ghost", output["stderr"])

    # -- events ---------------------------------------------------------------

    def test_event_actions_through_the_outbox(self):
        sink = RudderStackSink().start()
        self.addCleanup(sink.stop)
        config = {
            "redis": {"url": self.redis.url},
            # An hour of flush interval: forwards never flush inline, however slow the machine.
            "rudderstack": {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": sink.url, "max_retries": 1,
                            "retry_delay_ms": 0, "flush_interval_ms": 3600000},
            "features": {"track_model_costs": True, "enable_similarity_logging": True},
        }
        forwarded = self.assertSucceeded(
            "forward_event.py",
            {"event_type": "agent_execution", "status": "succeeded", "source_execution_id": "exec-1", "agent_id": "agent-1"},
            config,
        )
        self.assertEqual(
            without(forwarded, "outbox_id"),
            {"dropped_oldest": 0, "event": "agent_execution", "forwarded": True,
             "message_id": message_id("exec-1", "agent_execution", ""), "mode": "outbox", "status": "queued"},
        )
        cost = self.assertSucceeded(
            "log_llm_cost.py",
            {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1000, "output_tokens": 500,
             "input_price_per_1k": 0.5, "output_price_per_1k": 1.0, "source_execution_id": "exec-2"},
            config,
        )
        self.assertEqual((cost["status"], cost["event"]), ("queued", "llm_cost_logged"))
        self.assertEqual((cost["cost"]["cost_usd"], cost["cost"]["total_tokens"], cost["cost"]["price_source"]),
                         (1.0, 1500, "call"))
        similarity = self.assertSucceeded(
            "log_prompt_similarity.py", {"threshold": 0.8, "score": 0.9, "source_execution_id": "exec-3"}, config
        )
        self.assertEqual(
            (similarity["status"], similarity["similarity"]),
            ("queued", {"above_threshold": True, "action_taken": "flagged", "method": "cosine", "percent": 90.0,
                        "score": 0.9, "threshold": 0.8}),
        )
        stats = self.assertSucceeded("get_queue_stats.py", {"include_dead_letters": True}, config)
        self.assertEqual((stats["backend"], stats["depth"], stats["enqueued"], stats["dead_letter_entries"]),
                         ("redis_stream", 3, 3, []))
        self.assertEqual(sink.accepted, [])
        flushed = self.assertSucceeded("flush_events.py", {"force": True}, config)
        self.assertEqual(
            {k: flushed[k] for k in ("status", "mode", "delivered", "dead_lettered", "retry_later", "config_error")},
            {"status": "ok", "mode": "outbox", "delivered": 3, "dead_lettered": 0, "retry_later": 0, "config_error": None},
        )
        self.assertEqual([e["event"] for e in sink.accepted],
                         ["agent_execution", "llm_cost_logged", "prompt_similarity_logged"])
        replay = self.assertSucceeded("replay_dead_letters.py", {}, config)
        self.assertEqual(replay, {"mode": "outbox", "not_found": [], "rejected": [], "replayed": 0, "replayed_ids": []})
        # A (False, result) return is a failed execution whose result st2 still records.
        config["rudderstack"].pop("write_key")
        status, output = self.run_action("replay_dead_letters.py", {}, config)
        self.assertEqual((status, output["exit_code"], output["result"]), ("failed", 0, {"error": NO_WRITE_KEY}))



class EveryPythonActionHasAWrapperTest(unittest.TestCase):
    """Runs on both runs: a new python action needs a case in PythonRunnerWrapperTest."""

    def test_every_python_action_has_a_case(self):
        self.assertEqual(python_actions(), set(COVERED))
        for name in set(COVERED.values()):
            self.assertTrue(hasattr(PythonRunnerWrapperTest, name), name)


if __name__ == "__main__":
    unittest.main()
