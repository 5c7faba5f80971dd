"""Every python action of the pack, run the way st2's action runner runs it: in a
subprocess through st2's own ``python_action_wrapper.py``, with the argv,
PYTHONPATH and environment ``PythonRunner.run`` builds, the result read back the
way st2 reads it (``tests/synthralos_tests/st2_python_runner.py``).

In-process tests import the action modules from the test's ``sys.path``; this
catches what they cannot: an import that works only from the test's path, a
module st2's loader cannot find an action class in, a result st2 cannot
serialise. State goes to a real local redis-server (``redis.url``), HTTP to the
pack's stub servers; actions of one test share that state across processes.
"""

import glob
import json
import os
import shutil
import tempfile
import unittest

import synthralos_tests  # noqa: F401  (import paths, and st2 must import)

import yaml

from synthralos_tests import PACK_ROOT
from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.llm_provider import LLMProviderServer
from synthralos_tests.redis_server import get_redis_server
from synthralos_tests.st2_api_server import St2ApiServer
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from synthralos_lib.cron.backoff import iso
from synthralos_lib.events.builders import message_id
from synthralos_lib.events.forwarding import NO_WRITE_KEY
from synthralos_lib.healing.detection import detect_failure
from synthralos_lib.healing.plans import plan_repair
from synthralos_lib.llm.client import account_of
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
    "begin_recovery.py": "test_begin_recovery",
    "detect_failure.py": "test_detect_and_plan",
    "generate_repair_plan.py": "test_detect_and_plan",
    "execute_repair_step.py": "test_repair_and_history",
    "record_failure.py": "test_repair_and_history",
    "get_failure_history.py": "test_repair_and_history",
    "llm_call.py": "test_llm_actions",
    "llm_breaker_status.py": "test_llm_actions",
    "llm_breaker_reset.py": "test_llm_actions",
    "forward_event.py": "test_event_actions_through_the_outbox",
    "log_llm_cost.py": "test_event_actions_through_the_outbox",
    "log_prompt_similarity.py": "test_event_actions_through_the_outbox",
    "get_queue_stats.py": "test_event_actions_through_the_outbox",
    "flush_events.py": "test_event_actions_through_the_outbox",
    "replay_dead_letters.py": "test_event_actions_through_the_outbox",
    "cron_backoff_check.py": "test_cron_backoff_actions",
    "cron_backoff_record.py": "test_cron_backoff_actions",
    "cron_backoff_reset.py": "test_cron_backoff_actions",
    "cron_backoff_status.py": "test_cron_backoff_actions",
    "health_check.py": "test_operations_actions",
    "get_system_metrics.py": "test_operations_actions",
    "llm_request.py": "test_llm_request",
    "normalize_agent_failure.py": "test_agent_failure_webhook_normalize",
    "bullmq_add_job.py": "test_bullmq_add_job",
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


class PythonRunnerWrapperTest(unittest.TestCase):
    maxDiff = None
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

    def outbox_config(self, **sections):
        """A RudderStack sink, and a config that queues events for it in the Redis outbox."""
        sink = RudderStackSink().start()
        self.addCleanup(sink.stop)
        config = {
            "redis": {"url": self.redis.url},
            # An hour of flush interval: forwards never flush inline, however slow the machine.
            "rudderstack": {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": sink.url, "max_retries": 1,
                            "retry_delay_ms": 0, "flush_interval_ms": 3600000},
        }
        config.update(sections)
        return sink, config

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
        # The failure, and the recovery counters get_system_metrics reads.
        self.assertEqual(sorted(self.api.keys), ["synthralos.failures.agent-1", "synthralos.ops.recoveries",
                                                 "synthralos.ops.recoveries.index",
                                                 "synthralos.ops.recoveries.total.error.recorded"])
        history = self.assertSucceeded("get_failure_history.py", {"agent_id": "agent-1", "limit": 5})
        self.assertEqual(history, {"agent_id": "agent-1", "count": 1, "entries": [recorded["entry"]],
                                   "store": "st2_datastore", "truncated": False, "fallback_reason": None})
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
             "failure": None, "request": {"call": "reexecute", "input": None, "overrides": {}, "repair_context": None,
                                                           "tool": None}},
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
        self.assertEqual(history, {"agent_id": "agent-1", "count": 1, "entries": [entry], "store": "redis",
                                   "fallback_reason": None, "truncated": False})

    def test_begin_recovery(self):
        """agent_recovery's first task in st2's own python runner: judged, planned, re-run, recorded, one process."""
        server = AgentPlatformServer(api_key=AGENT_KEY, agents=["agent-1"]).start()
        self.addCleanup(server.stop)
        server.add_execution("agent-1", FAILED)
        config = {
            "redis": {"url": self.redis.url},
            "agent_api": {"base_url": server.base_url, "api_key": AGENT_KEY, "timeout_s": 1},
        }
        started = self.assertSucceeded(
            "begin_recovery.py", {"agent_id": "agent-1", "execution_id": "exec-1", "result": FAILED, "wait_s": 5,
                                  "recovery_id": "st2-exec-1"}, config)
        self.assertEqual(
            {k: started[k] for k in ("outcome", "next", "repaired_by", "escalation_reason", "recorded")},
            {"outcome": "repaired", "next": None, "repaired_by": "retry_execution", "escalation_reason": None,
             "recorded": {"store": "redis", "fallback_reason": None, "error": None}},
        )
        self.assertEqual((started["failure"]["failure_type"], started["storm"]["decision"]), ("error", "admitted"))
        self.assertEqual([r.path for r in server.runs()], ["/api/agents/agent-1/executions"])
        history = self.assertSucceeded("get_failure_history.py", {"agent_id": "agent-1", "limit": 5}, config)
        self.assertEqual([e["outcome"] for e in history["entries"]], ["repaired"])

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
             "ok": True, "provider": "openai", "region": "us", "retry_after_s": None, "should_retry": None,
             "status": 200, "target": "oa", "account": account_of(server.target("oa"))},
        )
        self.assertEqual(len(server.calls("oa")), 1)
        # A single call records nothing; a request records its outcome in the shared breaker.
        served = self.assertSucceeded("llm_request.py", {"messages": "hi", "targets": ["oa"]}, config)
        self.assertEqual(
            {k: served[k] for k in ("action", "served_by", "attempt_count", "calls")},
            {"action": "done", "served_by": "oa", "attempt_count": 1, "calls": 1},
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
        sink, config = self.outbox_config(features={"track_model_costs": True, "enable_similarity_logging": True})
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

    def test_the_metadata_log_level_keeps_debug_lines_out_of_stderr(self):
        """st2's web UI shows stderr in the box it labels "error": at the python runner's default
        DEBUG, a forward_event that succeeded fills it with st2's datastore lines."""
        sink = RudderStackSink().start()
        self.addCleanup(sink.stop)
        config = {"rudderstack": {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": sink.url}}  # datastore state
        with open(os.path.join(PACK_ROOT, "actions", "forward_event.yaml")) as handle:
            level = yaml.safe_load(handle)["parameters"]["log_level"]["default"]
        stderr = {}
        for run_level in ("DEBUG", level):
            status, output = self.st2.run("forward_event.py", {"event_type": "agent_execution", "status": "succeeded",
                                                               "source_execution_id": "exec-" + run_level}, config,
                                          log_level=run_level)
            self.assertEqual((status, output["result"]["status"]), ("succeeded", "delivered"), output["stderr"])
            stderr[run_level] = output["stderr"]
        self.assertIn("DEBUG    Setting value in the datastore", stderr["DEBUG"])  # what the issue saw
        self.assertEqual(level, "INFO")
        self.assertNotIn("DEBUG", stderr[level])
        self.assertEqual(len(sink.accepted), 2)

    # -- cron -----------------------------------------------------------------

    def test_cron_backoff_actions(self):
        # Disabled after 2 failures (10 by default): two records instead of ten processes.
        sink, config = self.outbox_config(agent_api={"api_key": AGENT_KEY},
                                          cron_backoff={"max_consecutive_failures": 2})
        first = self.assertSucceeded("cron_backoff_record.py", {"job_id": "job-1", "succeeded": False, "error": "boom"},
                                     config)
        self.assertEqual(without(first, "state"),
                         {"alert": None, "disabled_now": False, "events": [], "job_id": "job-1", "outcome": "failed",
                          "probe": False, "recorded": True, "reenabled_now": False, "transitions": []})
        self.assertEqual(
            {k: first["state"][k] for k in ("status", "consecutive_failures", "backoff_s", "last_error", "disabled",
                                            "next_allowed_run")},
            {"status": "backoff", "consecutive_failures": 1, "backoff_s": 60.0, "last_error": "boom", "disabled": False,
             "next_allowed_run": iso(first["state"]["next_allowed_at"])},
        )
        # The error comes from the failed run's result, scrubbed of the agent API key.
        run_result = {"result": "None", "exit_code": 1, "stderr": "ValueError: key %s refused" % AGENT_KEY}
        second = self.assertSucceeded("cron_backoff_record.py",
                                      {"job_id": "job-1", "succeeded": False, "result": run_result}, config)
        state = second["state"]
        disabled_at = state["disabled_at"]
        self.assertEqual(
            {k: state[k] for k in ("status", "consecutive_failures", "disabled", "last_error", "quiet_period_s",
                                   "backoff_s", "next_probe_at", "next_allowed_run")},
            {"status": "disabled", "consecutive_failures": 2, "disabled": True,
             "last_error": "ValueError: key *** refused", "quiet_period_s": 3600.0, "backoff_s": 120.0,
             "next_probe_at": iso(state["next_allowed_at"]), "next_allowed_run": iso(state["next_allowed_at"])},
        )
        self.assertEqual((second["outcome"], second["disabled_now"], second["alert"]),
                         ("disabled", True, {"consecutive_failures": 2, "disabled_at": disabled_at, "job_id": "job-1",
                                             "last_error": "ValueError: key *** refused",
                                             "next_probe_at": state["next_probe_at"]}))
        [transition] = second["transitions"]
        self.assertEqual([without(e, "outbox_id") for e in second["events"]],
                         [{"dropped_oldest": 0, "event": "cron_job_disabled", "forwarded": True,
                           "message_id": message_id("cron_job:job-1", "cron_job_disabled", transition["discriminator"]),
                           "mode": "outbox", "status": "queued"}])
        check = self.assertSucceeded("cron_backoff_check.py", {"job_id": "job-1"}, config)
        self.assertEqual(
            without(check, "state"),
            {"allowed": False, "job_id": "job-1", "probe": False, "reason": "disabled", "skipped": True,
             "message": "disabled after 2 consecutive failures; next probe at %s" % state["next_probe_at"],
             "next_allowed_at": state["next_allowed_at"], "next_allowed_run": state["next_allowed_run"]},
        )
        listed = self.assertSucceeded("cron_backoff_status.py", {}, config)
        self.assertEqual((listed["enabled"], listed["count"], listed["disabled"]), (True, 1, 1))
        self.assertEqual([without(j, "wait_s") for j in listed["jobs"]], [without(state, "wait_s")])
        reset = self.assertSucceeded("cron_backoff_reset.py", {"job_id": "job-1"}, config)
        self.assertEqual((reset["reset"], reset["was_disabled"], without(reset["previous"], "wait_s")),
                         (True, True, without(state, "wait_s")))
        self.assertEqual(
            {k: reset["state"][k] for k in ("status", "consecutive_failures", "disabled", "last_error", "wait_s")},
            {"status": "healthy", "consecutive_failures": 0, "disabled": False, "last_error": None, "wait_s": 0.0},
        )
        self.assertEqual([(e["event"], e["status"]) for e in reset["events"]], [("cron_job_reenabled", "queued")])
        self.assertEqual(without(reset["transitions"][0]["properties"], "disabled_for_s"),
                         {"consecutive_failures": 2, "disabled_at": disabled_at, "failed_probes": 0, "job_id": "job-1",
                          "via": "reset"})
        # Both events wait in the Redis outbox for the flusher; nothing was posted inline.
        outbox = self.redis.client().xrange("synthralos:events:outbox")
        self.assertEqual([entry_id for entry_id, _ in outbox],
                         [second["events"][0]["outbox_id"], reset["events"][0]["outbox_id"]])
        self.assertEqual(sink.accepted, [])
        # A job id st2's rules could not have produced fails the execution, with st2 keeping the reason.
        status, output = self.run_action("cron_backoff_check.py", {"job_id": "no spaces allowed"}, config)
        self.assertEqual((status, output["exit_code"], output["result"]["job_id"]), ("failed", 0, "no spaces allowed"))
        self.assertIn("job_id must be 1-128 characters", output["result"]["error"])

    # -- operations -----------------------------------------------------------

    def test_operations_actions(self):
        sink = RudderStackSink().start()
        self.addCleanup(sink.stop)
        agents = AgentPlatformServer(api_key=AGENT_KEY).start()
        self.addCleanup(agents.stop)
        llm = LLMProviderServer()
        self.addCleanup(llm.close)
        llm.add_endpoint("oa", "openai", LLM_KEY, region="us")
        config = {
            "redis": {"url": self.redis.url},
            "rudderstack": {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": sink.url},
            "agent_api": {"base_url": agents.base_url, "api_key": AGENT_KEY},
            "llm_targets": [llm.target("oa")],
        }
        report = self.assertSucceeded("health_check.py", {"probe_timeout_s": 5}, config)
        self.assertEqual((report["status"], report["store"]), ("degraded", "redis"))
        aof_off = "appendonly is off: the event outbox and breaker state do not survive a Redis restart"
        self.assertEqual(report["problems"], ["redis: degraded (%s)" % aof_off])
        self.assertEqual(
            [without(d, "latency_ms", "details") for d in report["dependencies"]],
            [{"name": "redis", "kind": "redis", "status": "degraded", "error": aof_off},
             {"name": "st2_datastore", "kind": "st2_datastore", "status": "ok", "error": None},
             {"name": "rudderstack", "kind": "rudderstack", "status": "ok", "error": None},
             {"name": "agent_api", "kind": "agent_api", "status": "ok", "error": None},
             {"name": "llm:oa", "kind": "llm_target", "status": "ok", "error": None}],
        )
        details = [d["details"] for d in report["dependencies"]]
        self.assertEqual({k: details[0][k] for k in ("aof_enabled", "appendonly", "loading")},
                         {"aof_enabled": False, "appendonly": "no", "loading": False})
        self.assertEqual(details[1:], [
            {},
            {"answer": "Empty batch payload", "http_status": 400, "url": sink.url + "/v1/batch"},
            {"http_status": 200, "url": agents.base_url + "/health"},
            {"http_status": 200, "model": "gpt-4o-mini", "model_listed": True, "models_listed": 2,
             "provider": "openai", "target": "oa", "url": llm.target("oa")["base_url"] + "/models"},
        ])
        # The datastore probe went through st2's API and cleaned up after itself; nothing was ingested.
        self.assertEqual(self.api.keys, {})
        self.assertEqual(sink.accepted, [])
        self.assertEqual([r.path for r in agents.requests()], ["/api/health"])

        collected = self.assertSucceeded("get_system_metrics.py", {"window_s": 600}, config)
        self.assertEqual(without(collected, "collected_at", "events"), {
            "cron": {"available": True, "backoff": 0, "disabled": 0, "jobs": []},
            "errors": {},
            "failures": {"by_type": {}, "total": 0, "window_s": 600},
            "llm_circuits": [dict(CLOSED, window_requests=0)],
            "recoveries": {"all": {"attempted": 0, "escalated": 0, "failures": 0, "mttr_s": None, "planned": 0,
                                   "recovery_rate": None, "repaired": 0},
                           "by_type": {}, "totals": [], "window_s": 600},
            "sensors": [],
            "store": "redis",
            "storm": {"budget_escalations": 0, "coalesced": 0, "over_budget": 0},
        })
        self.assertEqual(
            {k: collected["events"][k]
             for k in ("backend", "depth", "enqueued", "delivered", "dead_letters", "pending")},
            {"backend": "redis_stream", "depth": 0, "enqueued": 0, "delivered": 0, "dead_letters": 0, "pending": 0},
        )
        textfile_dir = tempfile.mkdtemp(prefix="synthralos-prom-")
        self.addCleanup(shutil.rmtree, textfile_dir, True)
        path = os.path.join(textfile_dir, "synthralos.prom")
        written = self.assertSucceeded("get_system_metrics.py", {"write_to": path}, config)
        self.assertEqual((written["format"], written["errors"]), ("prometheus", {}))
        with open(path) as handle:
            text = handle.read()
        self.assertEqual((written["text"], written["written"]), (text, {"path": path, "bytes": len(text.encode())}))
        self.assertIn('synthralos_llm_circuit_state{state="closed",target="oa"} 1\n', text)
        self.assertIn("synthralos_metrics_window_seconds 3600\n", text)
        self.assertEqual(os.listdir(textfile_dir), ["synthralos.prom"])
        # A path node_exporter would not read fails the execution.
        status, output = self.run_action("get_system_metrics.py", {"write_to": os.path.join(textfile_dir, "m.txt")},
                                         config)
        self.assertEqual((status, output["exit_code"], output["result"]), ("failed", 1, "None"))
        self.assertIn("ValueError: write_to must name a .prom file", output["stderr"])

    # -- llm fast path --------------------------------------------------------

    def test_llm_request(self):
        server = LLMProviderServer()
        self.addCleanup(server.close)
        server.add_endpoint("oa", "openai", LLM_KEY, region="us")
        server.add_endpoint("an", "anthropic", "sk-ant-key-6666ffff", region="eu")
        server.set_default("oa", "auth")
        config = {"redis": {"url": self.redis.url},
                  "llm_targets": [dict(server.target("oa"), priority=1), dict(server.target("an"), priority=2)]}
        params = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
        served = self.assertSucceeded("llm_request.py", params, config)
        self.assertEqual(without(served, "attempts", "alerts"), {
            "action": "done", "attempt_count": 2, "breaker_warning": None, "calls": 2,
            "content": "Reply from an (claude-3-5-haiku-latest).", "error_class": None, "handed_back": False,
            "model": "claude-3-5-haiku-latest", "provider": "anthropic", "reason": "served by an", "region": "eu",
            "resume": None, "served_by": "an", "skipped": [], "target": "an", "total_delay_s": 0.0,
            "usage": {"input_tokens": 1, "output_tokens": 10, "total_tokens": 11}, "wait_s": 0,
        })
        rejected = "HTTP 401 invalid_request_error/invalid_api_key: Incorrect API key provided."
        self.assertEqual([without(a, "latency_s") for a in served["attempts"]], [
            {"error_class": "auth_config", "error_message": rejected, "model": "gpt-4o-mini", "ok": False,
             "provider": "openai", "region": "us", "retry_after_s": None, "should_retry": None, "status": 401,
             "target": "oa", "wait_after_s": 0, "account": account_of(server.target("oa"))},
            {"error_class": None, "error_message": None, "model": "claude-3-5-haiku-latest", "ok": True,
             "provider": "anthropic", "region": "eu", "retry_after_s": None, "should_retry": None, "status": 200,
             "target": "an", "wait_after_s": 0, "account": account_of(server.target("an"))},
        ])
        [alert] = served["alerts"]
        self.assertEqual(
            (without(alert, "breaker"), {k: alert["breaker"][k] for k in ("state", "reason", "cooldown_s")}),
            ({"error_class": "auth_config", "error_message": rejected, "model": "gpt-4o-mini",
              "next_action": "next_target", "next_target": "an", "provider": "openai", "region": "us", "status": 401,
              "target": "oa", "account": account_of(server.target("oa")), "account_targets_opened": []},
             {"state": "open", "reason": "auth_config", "cooldown_s": 600}),
        )
        self.assertEqual((len(server.calls("oa")), len(server.calls("an"))), (1, 1))
        # Next process: the open circuit (in Redis) skips oa; an refusing too gives up, a result, not a failure.
        server.set_default("an", "auth")
        given_up = self.assertSucceeded("llm_request.py", params, config)
        self.assertEqual(
            {k: given_up[k] for k in ("action", "served_by", "content", "error_class", "reason", "calls", "target")},
            {"action": "give_up", "served_by": None, "content": None, "error_class": "auth_config",
             "reason": "auth_config on an; no target left", "calls": 1, "target": None},
        )
        self.assertEqual([s["target"] for s in given_up["skipped"]], ["oa"])
        self.assertEqual((len(server.calls("oa")), len(server.calls("an"))), (1, 2))

    def test_renamed_timeouts_old_names(self):
        # st2 fills in probe_timeout_s's default (5) for a caller of the old name: the old value is used.
        status, output = self.run_action("health_check.py", {"timeout_s": 2, "probe_timeout_s": 5,
                                                             "include": ["st2_datastore"]})
        self.assertEqual((status, output["result"]["status"]), ("succeeded", "ok"), output["stderr"])
        self.assertEqual(output["stderr"].count("[Deprecated] parameter timeout_s is deprecated: use probe_timeout_s "
                                                "(timeout_s is removed in the next release)"), 1, output["stderr"])
        status, output = self.run_action("health_check.py", {"timeout_s": 2, "probe_timeout_s": 3,
                                                             "include": ["st2_datastore"]})
        self.assertEqual((status, output["result"]["error"]), (
            "failed", "probe_timeout_s and timeout_s were both given, with different values: probe_timeout_s "
                      "replaces timeout_s (the old name is removed in the next release); give probe_timeout_s only"))
        server = LLMProviderServer()
        self.addCleanup(server.close)
        server.add_endpoint("oa", "openai", LLM_KEY, region="us")
        server.script("oa", [{"fault": "hang", "delay_s": 5}])
        config = {"redis": {"url": self.redis.url}, "llm_targets": [server.target("oa")], "retry": {"max_attempts": 1}}
        params = {"messages": "hi", "max_tokens": 16, "timeout_s": 0.2}  # call_timeout_s's old name
        result = self.assertSucceeded("llm_request.py", params, config)
        self.assertEqual((result["action"], result["attempts"][0]["error_class"]), ("give_up", "transient"))
        self.assertIn("timed out after 0.2s", result["attempts"][0]["error_message"])
        self.assertEqual(self.st2.run("llm_request.py", params, config)[1]["stderr"].count(
            "[Deprecated] parameter timeout_s is deprecated: use call_timeout_s"), 1)

    # -- webhook --------------------------------------------------------------

    def test_agent_failure_webhook_normalize(self):
        config = {"agent_api": {"api_key": AGENT_KEY}}
        result = {"status": "failed", "error": "upstream said %s is wrong" % AGENT_KEY, "duration_ms": 1200}
        body = {"agent_id": "support-bot", "execution_id": "exec-42", "result": result,
                "trace_context": {"trace_id": "abc"}}
        accepted = self.assertSucceeded("normalize_agent_failure.py", {"body": body, "source_id": "hook-1"}, config)
        scrubbed = "upstream said *** is wrong"
        self.assertEqual((accepted["failed"], accepted["summary"], accepted["trace_tag"]),
                         (True, "error: status is 'failed'", "abc"))
        self.assertEqual(without(accepted["payload"], "detected_at"), {
            "agent_id": "support-bot", "execution_id": "exec-42", "failure_type": "error", "error": scrubbed,
            "duration_ms": 1200, "output_excerpt": None, "raw": dict(result, error=scrubbed), "source": "webhook",
            "source_id": "hook-1", "trace_context": {"trace_id": "abc"},
            "evidence": {"checks": [{"check": "error", "detail": "status is 'failed'", "field": "status"},
                                    {"check": "error", "detail": scrubbed, "field": "error"}],
                         "failed_tools": [], "summary": "error: status is 'failed'"},
        })
        self.assertRegex(accepted["payload"]["detected_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertNotIn(AGENT_KEY, json.dumps(accepted))
        status, output = self.run_action("normalize_agent_failure.py", {"body": dict(body, result=["failed"]),
                                                                         "source_id": "hook-1"}, config)
        self.assertEqual((status, output["exit_code"], output["result"]),
                         ("failed", 0, {"malformed": True, "reason": "result must be a JSON object, got list"}))

    # -- BullMQ ---------------------------------------------------------------

    def test_bullmq_add_job(self):
        config = {"redis": {"url": self.redis.url}}
        params = {"queue": "repairs", "job_name": "retry", "data": {"agent_id": "a-1"}, "job_id": "run-42",
                  "attempts": 3, "backoff_type": "exponential", "backoff_delay_ms": 100}
        added = self.assertSucceeded("bullmq_add_job.py", params, config)
        self.assertEqual(added, {"created": True, "job_id": "run-42", "key": "bull:repairs:run-42", "state": "waiting",
                                 "opts": {"attempts": 3, "backoff": {"delay": 100, "type": "exponential"},
                                          "jobId": "run-42"}})
        # What a BullMQ Worker reads: the job hash and the job id on the wait list.
        client = self.redis.client()
        job = client.hgetall("bull:repairs:run-42")
        self.assertEqual(
            (without(job, "timestamp", "opts"), json.loads(job["opts"])),
            ({"name": "retry", "data": '{"agent_id":"a-1"}', "priority": "0", "delay": "0"},
             {"jobId": "run-42", "backoff": {"type": "exponential", "delay": 100}, "attempts": 3}),
        )
        self.assertTrue(job["timestamp"].isdigit())
        self.assertEqual(client.lrange("bull:repairs:wait", 0, -1), ["run-42"])
        self.assertEqual(sorted(client.keys("bull:repairs:*")),
                         ["bull:repairs:events", "bull:repairs:id", "bull:repairs:marker", "bull:repairs:meta",
                          "bull:repairs:run-42", "bull:repairs:wait"])
        again = self.assertSucceeded("bullmq_add_job.py", dict(params, data={"k": "again"}), config)
        self.assertEqual((again["created"], again["state"]), (False, "duplicated"))
        self.assertEqual(client.hget("bull:repairs:run-42", "data"), '{"agent_id":"a-1"}')
        status, output = self.run_action("bullmq_add_job.py",
                                         {"queue": "repairs", "job_name": "retry", "job_id": "a:b"}, config)
        self.assertEqual((status, output["exit_code"], output["result"]),
                         ("failed", 0, {"error": "a custom job id cannot contain ':'"}))
        self.assertEqual(client.lrange("bull:repairs:wait", 0, -1), ["run-42"])
        # name, job_name's old name, is accepted until the next release, with one warning line.
        params = {"queue": "repairs", "name": "legacy", "job_id": "run-43"}
        status, output = self.run_action("bullmq_add_job.py", params, config)
        self.assertEqual((status, output["result"]["state"], client.hget("bull:repairs:run-43", "name")),
                         ("succeeded", "waiting", "legacy"), output["stderr"])
        warning = "[Deprecated] parameter name is deprecated: use job_name (name is removed in the next release)"
        self.assertEqual(output["stderr"].count(warning), 1, output["stderr"])
        # Both names with different values, or neither (job_name is not marked required in the metadata, so
        # that a caller of the old name passes st2's required check): refused, nothing added.
        for params, error in (
                ({"job_name": "new", "name": "old"}, "job_name and name were both given, with different values: "
                                                     "job_name replaces name (the old name is removed in the next "
                                                     "release); give job_name only"),
                ({}, "job_name is required (name is its deprecated old name)")):
            status, output = self.run_action("bullmq_add_job.py", dict(params, queue="repairs", job_id="run-44"),
                                             config)
            self.assertEqual((status, output["exit_code"], output["result"]), ("failed", 0, {"error": error}))
        self.assertFalse(client.exists("bull:repairs:run-44"))

    def test_secrets_in_logs_and_results_are_scrubbed_by_the_action_guard_alone(self):
        # No action scrubs itself (tests/test_one_scrub.py): a configured secret in a parameter comes back in
        # the result (the job's key) and in the action's log line (the queue name), both scrubbed on the way out.
        config = {"redis": {"url": self.redis.url}, "agent_api": {"api_key": AGENT_KEY}}
        queue = "repairs-" + AGENT_KEY
        status, output = self.run_action("bullmq_add_job.py", {"queue": queue, "job_name": "j", "job_id": "s-1"},
                                         config)
        self.assertEqual((status, output["result"]["key"]), ("succeeded", "bull:repairs-***:s-1"), output["stderr"])
        self.assertIn("[Self-Healing] BullMQ job repairs-***:s-1 waiting", output["stderr"])
        self.assertNotIn(AGENT_KEY, json.dumps([output["result"], output["stdout"], output["stderr"]]))
        self.assertEqual(self.redis.client().hget("bull:%s:s-1" % queue, "name"), "j")  # the job itself is as given


class EveryPythonActionHasAWrapperTest(unittest.TestCase):
    """Runs on both runs: a new python action needs a case in PythonRunnerWrapperTest."""

    def test_every_python_action_has_a_case(self):
        self.assertEqual(python_actions(), set(COVERED))
        for name in set(COVERED.values()):
            self.assertTrue(hasattr(PythonRunnerWrapperTest, name), name)


if __name__ == "__main__":
    unittest.main()
