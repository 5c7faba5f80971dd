"""agent_recovery through the real Orquesta conductor, with the real actions, a real
local agent platform (docs/agent_api.md) and the real store (st2 datastore and Redis).

Each python-action execution is a new process in st2 (1.5-4 s), so the tests count them:
a one-step repair, a dry run, a failure with nothing to try and a storm-suppressed failure
are ONE python execution (begin); later steps and their record are their own tasks. The
recovery's end events come from the task that records its outcome, not from a rule execution."""

import unittest

from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.healing import python_executions, recovery_actions
from synthralos_tests.http_server import Reply
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink
from synthralos_tests.orquesta_runner import ACTIONS_DIR, ActionParameterError, run_workflow, skip_unless_orquesta

from begin_recovery import BeginRecoveryAction
from execute_repair_step import ExecuteRepairStepAction
from flush_events import FlushEvents
from record_failure import RecordFailureAction
from synthralos_lib.events.builders import message_id
from synthralos_lib.healing.failure_trigger import build_failure
from synthralos_lib.healing.history import get_failure_history

KEY = "agent-key-wf-0c91"
QUERY = "Summarise ticket 1234 for the customer and draft a reply."
# A run that timed out: the rule plan is reduce_max_iterations -> simplify_query -> switch_provider.
TIMED_OUT = {
    "id": "exec-1",
    "status": "timeout",
    "input": QUERY,
    "duration_ms": 300000,
    "timeout_ms": 300000,
    "max_iterations": 10,
    "provider": "openai",
    "model": "gpt-4o",
}
TARGETS = [
    {"name": "openai-us", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o", "priority": 1},
    {"name": "claude", "kind": "anthropic", "base_url": "http://127.0.0.1:9/v1", "model": "claude-3-5-sonnet", "priority": 2},
]
PLAN_STEPS = [
    {"action": "reduce_max_iterations", "priority": 1, "params": {"max_iterations": 5},
     "reason": "cap the agent at 5 iterations so it finishes in time"},
    {"action": "simplify_query", "priority": 2, "params": {"max_chars": 1000},
     "reason": "re-run with a shorter, simplified query"},
    {"action": "switch_provider", "priority": 3, "params": {"provider": "anthropic", "model": "claude-3-5-sonnet"},
     "reason": "switch to anthropic/claude-3-5-sonnet (target claude)"},
]


def without_durations(attempts):
    return [{k: v for k, v in a.items() if k != "duration_s"} for a in attempts]


def attempt(number, action, params, repaired, new_id, failure_type=None, error_class=None, error_message=None):
    return {
        "attempt": number,
        "action": action,
        "params": params,
        "repaired": repaired,
        "new_execution_id": new_id,
        "error_class": error_class,
        "error_message": error_message,
        "failure_type": failure_type,
    }


class AgentRecoveryContract(StoreBackendMixin):
    maxDiff = None

    def setUp(self):
        super(AgentRecoveryContract, self).setUp()
        self.server = AgentPlatformServer(api_key=KEY, agents=["agent-1"]).start()
        self.addCleanup(self.server.stop)
        self.server.add_execution("agent-1", TIMED_OUT)
        self.actions = None

    def config(self, **sections):
        sections.setdefault("llm_targets", TARGETS)
        return self.make_config(agent_api={"base_url": self.server.base_url, "api_key": KEY, "timeout_s": 2}, **sections)

    def recover(self, result=TIMED_OUT, step_config=None, begin=None, config=None, actions=None, **inputs):
        """Run agent_recovery; `begin` is an ``(action_cls, config)`` override of begin_recovery."""
        config = config or self.config()
        overrides = {}
        if step_config is not None:
            overrides["execute_repair_step"] = (ExecuteRepairStepAction, step_config)
        if begin is not None:
            overrides["begin_recovery"] = begin
        self.actions = actions or recovery_actions(config, self.action_service, **overrides)
        params = {"agent_id": "agent-1", "execution_id": "exec-1", "result": result, "trace_context": {"trace_id": "tr-9"}}
        params.update(inputs)
        return run_workflow("agent_recovery", params, actions=self.actions, action_meta_dir=ACTIONS_DIR)

    def python_executions(self):
        return python_executions(self.actions)

    def history(self, agent_id="agent-1"):
        return get_failure_history(self.make_store(), agent_id)

    def storm_keys(self):
        return [key for key, _ in self.make_store().scan("storm.running.")]

    def test_first_step_repairs_in_one_python_execution(self):
        run = self.recover()
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["begin"])
        self.assertEqual(self.python_executions(), 1)
        self.assertEqual(run.executions, 1)
        output = run.output
        self.assertEqual(
            {k: output[k] for k in ("outcome", "repaired", "repaired_by", "attempts")},
            {"outcome": "repaired", "repaired": True, "repaired_by": "reduce_max_iterations", "attempts": 1},
        )
        self.assertEqual(
            without_durations(output["attempt_log"]),
            [attempt(1, "reduce_max_iterations", {"max_iterations": 5}, True, "exec-r1")],
        )
        self.assertIsInstance(output["duration_s"], float)
        self.assertTrue(0 <= output["duration_s"] < 60)
        self.assertEqual(output["plan"]["source"], "rules")
        self.assertEqual(output["plan"]["steps"], PLAN_STEPS)
        self.assertEqual(output["failure"]["failure_type"], "timeout")
        self.assertEqual(output["failure"]["summary"], "timeout: status is 'timeout'")
        self.assertEqual(output["failure"]["detected_by"], "begin_recovery")  # no detection given: judged here
        self.assertEqual(output["storm"]["decision"], "admitted")
        # Exactly one run was started on the platform, with the override.
        runs = self.server.runs()
        self.assertEqual(len(runs), 1)
        self.assertEqual(runs[0].json["overrides"], {"max_iterations": 5})
        self.assertEqual(run.injected_triggers, [])
        history = self.history()
        self.assertEqual(len(history), 1)
        self.assertEqual(
            {k: history[0][k] for k in ("agent_id", "execution_id", "failure_type", "outcome", "repaired_by", "plan_source", "trace_context")},
            {
                "agent_id": "agent-1",
                "execution_id": "exec-1",
                "failure_type": "timeout",
                "outcome": "repaired",
                "repaired_by": "reduce_max_iterations",
                "plan_source": "rules",
                "trace_context": {"trace_id": "tr-9"},
            },
        )
        self.assertEqual(history[0]["duration_s"], output["duration_s"])
        self.assertEqual(self.storm_keys(), [])  # the running-recovery marker ended with the recovery

    def test_the_trigger_detection_is_trusted(self):
        # What the rule passes for a record cut to fit the trigger: a bare "failed" result. Judged
        # alone it reads as "error"; the sensor saw the whole record and said timeout.
        payload = build_failure("agent-1", "exec-1", TIMED_OUT, "redis_stream", "1-0")["payload"]
        bare = {"status": "failed", "error": None, "output": None, "duration_ms": 300000}
        run = self.recover(result=bare, detection={"failure_type": payload["failure_type"], "evidence": payload["evidence"]})
        self.assertEqual((run.status, run.task_sequence, self.python_executions()), ("succeeded", ["begin"], 1), run)
        failure = run.output["failure"]
        self.assertEqual((failure["failure_type"], failure["detected_by"], failure["summary"]),
                         ("timeout", "trigger", "timeout: status is 'timeout'"))
        self.assertEqual(failure["evidence"], payload["evidence"]["checks"])
        self.assertEqual(run.output["repaired_by"], "reduce_max_iterations")

    def test_a_detection_that_is_not_a_verdict_is_ignored_and_the_result_judged(self):
        run = self.recover(detection={"failure_type": "on_fire", "evidence": {}})
        self.assertEqual((run.status, run.output["failure"]["failure_type"]), ("succeeded", "timeout"), run)
        self.assertEqual(run.output["failure"]["detected_by"],
                         "begin_recovery: the given detection was not used (detection.failure_type must be one of "
                         "timeout, error, invalid_output, tool_failure, llm_error, unknown_status)")

    def test_first_step_fails_second_repairs(self):
        self.server.on_rerun({"overrides": {"max_iterations": 5}}, {"status": "timeout", "timed_out": True})
        run = self.recover()
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["begin", "execute_step", "record_repaired"])
        self.assertEqual(self.python_executions(), 3)
        self.assertEqual((run.output["repaired_by"], run.output["attempts"]), ("simplify_query", 2))
        self.assertEqual(
            without_durations(run.output["attempt_log"]),
            [
                attempt(1, "reduce_max_iterations", {"max_iterations": 5}, False, "exec-r1", failure_type="timeout"),
                attempt(2, "simplify_query", {"max_chars": 1000}, True, "exec-r2"),
            ],
        )
        self.assertEqual([p["step"]["action"] for p in run.parameters_for("execute_step")], ["simplify_query"])
        self.assertEqual([p["attempt"] for p in run.parameters_for("execute_step")], [2])
        self.assertEqual(run.delays_for("execute_step"), [0])
        self.assertEqual(self.server.runs()[1].json["input"], QUERY)
        self.assertEqual([h["outcome"] for h in self.history()], ["repaired"])
        self.assertEqual(self.storm_keys(), [])  # released by record_repaired

    def test_all_steps_fail_escalates_and_fails(self):
        self.server.on_rerun({}, {"status": "failed", "error": "still broken"})
        self.server.script("POST", self.server.EXECUTIONS, Reply(503, {"error": "maintenance"}))
        run = self.recover()
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence, ["begin", "execute_step", "execute_step", "record_escalation", "escalate"])
        expected_attempts = [
            attempt(1, "reduce_max_iterations", {"max_iterations": 5}, False, None,
                    error_class="server_error", error_message="HTTP 503: maintenance"),
            attempt(2, "simplify_query", {"max_chars": 1000}, False, "exec-r1", failure_type="error"),
            attempt(3, "switch_provider", {"provider": "anthropic", "model": "claude-3-5-sonnet"}, False, "exec-r2",
                    failure_type="error"),
        ]
        self.assertEqual(len(run.injected_triggers), 1)
        trigger = run.injected_triggers[0]
        payload = dict(trigger["payload"])
        self.assertEqual(without_durations(payload.pop("attempts")), expected_attempts)
        duration = payload.pop("duration_s")
        self.assertIsInstance(duration, float)
        self.assertEqual(
            {"trigger": trigger["trigger"], "trace_tag": trigger["trace_tag"], "payload": payload},
            {
                "trigger": "synthralos.recovery_escalated",
                "trace_tag": "tr-9",
                "payload": {
                    "agent_id": "agent-1",
                    "execution_id": "exec-1",
                    "failure_type": "timeout",
                    "summary": "timeout: status is 'timeout'",
                    "reason": "every repair step failed",
                    "plan_source": "rules",
                    "steps_tried": ["reduce_max_iterations", "simplify_query", "switch_provider"],
                    "trace_context": {"trace_id": "tr-9"},
                },
            },
        )
        self.assertEqual(run.state_sequence[-1], "fail")
        self.assertEqual(
            {k: run.output[k] for k in ("outcome", "repaired", "repaired_by", "attempts")},
            {"outcome": "escalated", "repaired": False, "repaired_by": None, "attempts": 3},
        )
        self.assertEqual(run.output["duration_s"], duration)
        history = self.history()
        self.assertEqual([h["outcome"] for h in history], ["escalated"])
        self.assertEqual(without_durations(history[0]["attempts"]), expected_attempts)
        self.assertEqual(history[0]["duration_s"], duration)
        self.assertEqual(self.storm_keys(), [])

    def test_a_crashing_step_action_counts_as_a_failed_attempt(self):
        # Step 1 runs inside begin and fails; a broken agent_api config makes execute_repair_step
        # itself fail (ConfigError) for steps 2 and 3.
        self.server.on_rerun({"overrides": {"max_iterations": 5}}, {"status": "timeout", "timed_out": True})
        run = self.recover(step_config=self.make_config(agent_api={"timeout_s": 0}))
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence, ["begin", "execute_step", "execute_step", "record_escalation", "escalate"])
        crashed = [
            {"attempt": n, "action": step["action"], "repaired": False, "error_class": "action_failed"}
            for n, step in enumerate(PLAN_STEPS, 1)
        ][1:]
        attempts = run.injected_triggers[0]["payload"]["attempts"]
        self.assertEqual((attempts[0]["action"], attempts[0]["failure_type"]), ("reduce_max_iterations", "timeout"))
        self.assertEqual(attempts[1:], crashed)
        self.assertEqual(len(self.server.runs()), 1)

    def test_no_failure_does_nothing(self):
        run = self.recover(result={"id": "exec-1", "status": "succeeded", "output": "All good."})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, self.python_executions()), (["begin"], 1))
        self.assertEqual(
            {k: run.output[k] for k in ("outcome", "repaired", "repaired_by", "attempts", "attempt_log", "duration_s", "plan")},
            {"outcome": "no_failure", "repaired": False, "repaired_by": None, "attempts": 0, "attempt_log": [],
             "duration_s": 0, "plan": None},
        )
        self.assertEqual(run.output["failure"]["failed"], False)
        self.assertEqual(self.server.requests(), [])
        self.assertEqual(self.history(), [])

    def test_dry_run_is_one_execution_and_acts_on_nothing(self):
        run = self.recover(dry_run=True)
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, self.python_executions()), (["begin"], 1))
        self.assertEqual((run.output["outcome"], run.output["repaired"], run.output["attempts"]), ("planned", False, 0))
        self.assertEqual(run.output["plan"]["steps"], PLAN_STEPS)
        self.assertEqual(run.output["plan"]["delays"], [0, 0, 0])
        self.assertTrue(0 <= run.output["duration_s"] < 60)
        self.assertEqual(self.server.requests(), [])
        self.assertEqual(run.injected_triggers, [])
        self.assertEqual(self.history(), [])
        self.assertEqual(run.output["storm"], None)  # no budget spent, no marker taken
        self.assertEqual(self.make_store().scan("storm."), [])

    RATE_LIMITED = {
        "id": "exec-1", "status": "failed", "input": QUERY, "provider": "openai", "model": "gpt-4o",
        "llm_error": {"status": 429, "message": "Rate limit reached", "error_class": "rate_limited", "retry_after_s": 12},
    }

    def test_a_long_backoff_waits_with_a_task_delay(self):
        self.server.add_execution("agent-1", self.RATE_LIMITED)
        self.server.default_outcome = {"status": "failed", "llm_error": {"message": "Rate limit reached"}}
        self.server.on_rerun({"overrides": {"provider": "anthropic"}}, {"status": "succeeded", "output": "Done."})
        run = self.recover(result=self.RATE_LIMITED)
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["begin", "execute_step", "execute_step", "record_repaired"])
        self.assertEqual(run.delays_for("execute_step"), [12, 0])
        self.assertEqual([p["attempt"] for p in run.parameters_for("execute_step")], [1, 2])
        self.assertEqual(run.output["repaired_by"], "switch_provider")
        self.assertEqual(self.server.runs()[1].json["overrides"], {"provider": "anthropic", "model": "claude-3-5-sonnet"})

    def test_a_short_backoff_is_waited_inside_begin(self):
        short = dict(self.RATE_LIMITED, llm_error=dict(self.RATE_LIMITED["llm_error"], retry_after_s=1))
        self.server.add_execution("agent-1", short)
        run = self.recover(result=short)
        self.assertEqual((run.status, run.task_sequence, self.python_executions()), ("succeeded", ["begin"], 1), run)
        self.assertEqual(run.output["plan"]["delays"], [1, 0])
        self.assertEqual(run.output["repaired_by"], "retry_with_backoff")
        # With the inline bound at 0 the same wait is a task delay.
        run = self.recover(result=short, execution_id="exec-1", inline_delay_max_s=0)
        self.assertEqual(run.task_sequence, ["begin", "execute_step", "record_repaired"])
        self.assertEqual(run.delays_for("execute_step"), [1])

    def test_nothing_to_try_escalates_at_once(self):
        quota = {"id": "exec-1", "status": "failed", "provider": "anthropic", "model": "claude-3-5-sonnet",
                 "llm_error": {"error_class": "quota_exhausted", "message": "credit balance too low"}}
        self.server.add_execution("agent-1", quota)
        config = self.make_config(agent_api={"base_url": self.server.base_url, "api_key": KEY}, llm_targets=[TARGETS[1]])
        self.actions = recovery_actions(config, self.action_service)
        run = run_workflow("agent_recovery", {"agent_id": "agent-1", "execution_id": "exec-1", "result": quota},
                           actions=self.actions, action_meta_dir=ACTIONS_DIR)
        self.assertEqual(run.status, "failed", run)
        self.assertEqual((run.task_sequence, self.python_executions()), (["begin", "escalate"], 1))
        payload = run.injected_triggers[0]["payload"]
        self.assertEqual((payload["reason"], payload["steps_tried"], payload["attempts"]),
                         ("no repair step applies to this failure", [], []))
        self.assertEqual(run.injected_triggers[0]["trace_tag"], "exec-1")
        self.assertEqual(self.server.requests(), [])
        self.assertEqual([h["outcome"] for h in self.history()], ["escalated"])

    # -- issue 9: a failed run is never lost --------------------------------

    def assert_payload_matches_trigger_schema(self, payload):
        import jsonschema
        import yaml

        from synthralos_tests.orquesta_runner import PACK_ROOT

        with open(PACK_ROOT + "/triggers/recovery_escalated.yaml") as handle:
            schema = yaml.safe_load(handle)["payload_schema"]
        jsonschema.Draft4Validator(schema).validate(payload)

    def test_an_unknown_status_with_an_infinite_duration_is_recovered(self):
        crashed = {"id": "exec-1", "status": "oom_killed", "input": QUERY, "duration_ms": float("inf"), "timeout_ms": 1000}
        run = self.recover(result=crashed)
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["begin"])
        self.assertEqual(run.output["failure"]["failure_type"], "unknown_status")
        self.assertEqual(run.output["failure"]["summary"], "unknown_status: status 'oom_killed' is not an explicit success")
        self.assertEqual([s["action"] for s in run.output["plan"]["steps"]], ["retry_execution", "retry_with_backoff"])
        self.assertEqual(run.output["repaired_by"], "retry_execution")
        self.assertEqual([h["failure_type"] for h in self.history()], ["unknown_status"])

    def test_a_numeric_status_escalates_with_its_evidence(self):
        self.server.default_outcome = {"status": 137, "output": "killed"}
        run = self.recover(result={"id": "exec-1", "status": 137, "input": QUERY})
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence, ["begin", "execute_step", "record_escalation", "escalate"])
        self.assertEqual(run.delays_for("execute_step"), [30])  # retry_with_backoff's 30 s: a task delay
        payload = run.injected_triggers[0]["payload"]
        self.assert_payload_matches_trigger_schema(payload)
        self.assertEqual((payload["failure_type"], payload["summary"]),
                         ("unknown_status", "unknown_status: status is a number (137), not an explicit success"))
        self.assertEqual([a["failure_type"] for a in payload["attempts"]], ["unknown_status", "unknown_status"])

    def test_detection_that_fails_is_still_recorded_and_escalated(self):
        def crash(result, secrets=()):
            raise RuntimeError("detector crashed on agent_api.timeout_s (ConfigError-like)")

        class CrashingDetect(BeginRecoveryAction):
            detector = staticmethod(crash)

        run = self.recover(begin=(CrashingDetect, self.config()))
        self.assertEqual(run.status, "failed", run)
        self.assertEqual((run.task_sequence, self.python_executions()), (["begin", "escalate"], 1))
        payload = run.injected_triggers[0]["payload"]
        self.assert_payload_matches_trigger_schema(payload)
        self.assertEqual(payload["reason"],
                         "failure detection failed: RuntimeError: detector crashed on agent_api.timeout_s (ConfigError-like)")
        self.assertEqual((payload["failure_type"], payload["plan_source"], payload["steps_tried"]), (None, None, []))
        self.assertEqual(payload["summary"], payload["reason"])
        history = self.history()
        self.assertEqual([(h["outcome"], h["summary"]) for h in history], [("escalated", payload["reason"])])
        self.assertEqual(run.output["outcome"], "escalated")
        self.assertEqual(self.server.requests(), [])

    def test_planning_that_fails_is_still_recorded_and_escalated(self):
        def crash(failure, settings, llm_target=None, clock=None):
            raise ValueError("planner broke")

        class CrashingPlan(BeginRecoveryAction):
            planner = staticmethod(crash)

        run = self.recover(begin=(CrashingPlan, self.config()))
        self.assertEqual(run.status, "failed", run)
        self.assertEqual((run.task_sequence, self.python_executions()), (["begin", "escalate"], 1))
        payload = run.injected_triggers[0]["payload"]
        self.assert_payload_matches_trigger_schema(payload)
        self.assertEqual(payload["reason"], "repair planning failed: ValueError: planner broke")
        self.assertEqual((payload["failure_type"], payload["plan_source"]), ("timeout", None))
        self.assertEqual([(h["outcome"], h["failure_type"]) for h in self.history()], [("escalated", "timeout")])
        self.assertEqual(self.storm_keys(), [])  # the marker is released on this path too
        self.assertEqual(self.server.requests(), [])

    def test_a_begin_that_crashes_is_still_recorded_and_escalated(self):
        run = self.recover(begin=(BeginRecoveryAction, self.make_config(agent_api={"timeout_s": 0})))
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence, ["begin", "record_escalation", "escalate"])
        payload = run.injected_triggers[0]["payload"]
        self.assert_payload_matches_trigger_schema(payload)
        self.assertTrue(payload["reason"].startswith("recovery start failed: "), payload["reason"])
        self.assertIn("ConfigError: invalid synthralos config: agent_api.timeout_s: expected minimum 1", payload["reason"])
        self.assertEqual([(h["outcome"], h["summary"]) for h in self.history()], [("escalated", payload["reason"])])

    def test_a_2xx_without_an_execution_id_is_malformed_not_repaired(self):
        self.server.script("POST", self.server.EXECUTIONS, Reply(200, {"status": "succeeded", "output": "ok"}),
                           Reply(202, {"id": None, "status": "running"}), Reply(200, {"id": ["x"], "status": "succeeded"}))
        run = self.recover()
        self.assertEqual(run.status, "failed", run)
        classes = [(a["error_class"], a["repaired"]) for a in run.output["attempt_log"]]
        self.assertEqual(classes, [("malformed_response", False)] * 3)
        self.assertEqual(run.output["attempt_log"][0]["error_message"], "HTTP 200 without a usable execution id (id is missing)")
        self.assertEqual([r.path for r in self.server.requests() if r.method == "GET"], [])

    def test_a_result_that_is_not_an_object_is_refused(self):
        with self.assertRaises(ActionParameterError) as caught:
            self.recover(result=["failed"])
        self.assertIn("is not of type 'object'", str(caught.exception))
        self.assertEqual(self.server.requests(), [])

    # -- issue 18.3: storm control ------------------------------------------

    def test_an_identical_failure_joins_the_running_recovery(self):
        self.server.on_rerun({"overrides": {"max_iterations": 5}}, {"status": "timeout", "timed_out": True})
        self.server.add_execution("agent-1", dict(TIMED_OUT, id="exec-2"))
        config = self.config()
        actions = recovery_actions(config, self.action_service)
        step = actions["synthralos.execute_repair_step"]
        joined = []

        def step_while_an_identical_failure_arrives(**params):
            if not joined:  # the first recovery is between its steps: its marker is held
                second = recovery_actions(config, self.action_service)
                joined.append((run_workflow("agent_recovery", {"agent_id": "agent-1", "execution_id": "exec-2",
                                                               "result": dict(TIMED_OUT, id="exec-2")},
                                            actions=second, action_meta_dir=ACTIONS_DIR), python_executions(second)))
            return step(**params)

        step_while_an_identical_failure_arrives.python_script = True
        step_while_an_identical_failure_arrives.calls = step.calls
        actions["synthralos.execute_repair_step"] = step_while_an_identical_failure_arrives
        run = self.recover(actions=actions)
        self.assertEqual((run.status, run.output["outcome"]), ("succeeded", "repaired"), run)
        second, executions = joined[0]
        self.assertEqual((second.status, second.task_sequence, executions), ("succeeded", ["begin"], 1), second)
        self.assertEqual((second.output["outcome"], second.output["repaired"]), ("coalesced", False))
        self.assertEqual(second.output["storm"]["joined_to"]["recovery_id"], run.st2_context["st2"]["action_execution_id"])
        self.assertEqual(len(self.server.runs()), 2)  # the first recovery's two steps; nothing for exec-2
        entries = {h["execution_id"]: h for h in self.history()}
        self.assertEqual((entries["exec-2"]["outcome"], entries["exec-1"]["outcome"]), ("coalesced", "repaired"))
        self.assertEqual(entries["exec-2"]["storm"]["joined_to"], second.output["storm"]["joined_to"])
        # The first recovery ended: the next identical failure is recovered on its own.
        third = self.recover(execution_id="exec-2", result=dict(TIMED_OUT, id="exec-2"))
        self.assertEqual((third.output["outcome"], third.output["storm"]["decision"]), ("repaired", "admitted"))

    def test_over_budget_failures_are_recorded_and_escalated_once(self):
        config = self.config(storm_control={"max_per_signature": 2, "window_s": 3600})
        runs = []
        for n in range(1, 5):
            self.server.add_execution("agent-%d" % n, dict(TIMED_OUT, id="exec-%d" % n))
            runs.append(self.recover(config=config, agent_id="agent-%d" % n, execution_id="exec-%d" % n,
                                     result=dict(TIMED_OUT, id="exec-%d" % n)))
        self.assertEqual([(r.status, r.output["outcome"]) for r in runs],
                         [("succeeded", "repaired"), ("succeeded", "repaired"), ("failed", "over_budget"),
                          ("succeeded", "over_budget")])
        self.assertEqual([r.task_sequence for r in runs], [["begin"], ["begin"], ["begin", "escalate"], ["begin"]])
        self.assertEqual(len(self.server.runs()), 2)
        escalated = runs[2].injected_triggers
        self.assertEqual(len(escalated), 1)
        self.assert_payload_matches_trigger_schema(escalated[0]["payload"])
        self.assertTrue(escalated[0]["payload"]["reason"].startswith(
            "recovery budget exceeded: this failure signature is allowed 2 recoveries per 3600 s window "
            "(storm_control.max_per_signature) and this is failure 3 of the window"), escalated[0]["payload"]["reason"])
        self.assertEqual(runs[3].injected_triggers, [])
        self.assertEqual([[h["outcome"] for h in self.history("agent-%d" % n)] for n in range(1, 5)],
                         [["repaired"], ["repaired"], ["over_budget"], ["over_budget"]])
        self.assertEqual(self.history("agent-4")[0]["storm"]["budget"]["scope"], "signature")

    # -- end events: forwarded by the task that records the outcome ---------------------------

    def rudderstack_sink(self):
        """A started RudderStack sink and the `rudderstack` config section that points at it."""
        sink = RudderStackSink().start()
        self.addCleanup(sink.stop)
        return sink, {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": sink.url, "max_retries": 1, "retry_delay_ms": 0}

    def delivered(self, sink, config):
        """What reached the sink. With Redis the events wait in the outbox for the flusher (never sent
        inline): nothing has arrived yet, and one flush delivers them."""
        if self.backend == "redis":
            self.assertEqual(sink.accepted, [])
            FlushEvents(config=config, action_service=self.action_service).run(
                force=True, max_batches=10, reclaim_idle_ms=None)
        return sink.accepted

    def recover_with_events(self, sections=None, **inputs):
        """Run agent_recovery with RudderStack configured; returns the run and what reached the sink."""
        sink, rudder = self.rudderstack_sink()
        config = self.config(rudderstack=rudder, **(sections or {}))
        begin = inputs.pop("begin", None)
        run = self.recover(config=config, begin=begin and (begin, self.make_config(agent_api={"timeout_s": 0},
                                                                                  rudderstack=rudder)), **inputs)
        return run, self.delivered(sink, config)

    def assert_end_events(self, run, events, status, names, dry_run=None):
        """The events the forwarding rules used to make of this completion: same names, messageIds
        (the recovery's execution id), properties, and the workflow's own output as the result."""
        recovery_id = run.st2_context["st2"]["action_execution_id"]
        self.assertEqual([e["event"] for e in events], names)
        self.assertEqual([e["messageId"] for e in events], [message_id(recovery_id, name) for name in names])
        for event in events:
            props = event["properties"]
            self.assertEqual(
                {k: props.get(k) for k in ("status", "agent_id", "trace_id", "workflow", "st2_execution_id", "dry_run")},
                {"status": status, "agent_id": "agent-1", "trace_id": "tr-9", "workflow": "synthralos.agent_recovery",
                 "st2_execution_id": recovery_id, "dry_run": dry_run})
            self.assertEqual(props["result"], {"output": run.output})
            self.assertEqual(event["anonymousId"], "agent:agent-1")
            if props["started_at"] is not None:  # None only when begin itself crashed
                self.assertGreaterEqual(props["duration_ms"], 0)

    def test_a_repair_in_begin_forwards_its_execution_and_repair_events_from_begin(self):
        run, events = self.recover_with_events()
        self.assertEqual((run.status, run.task_sequence, self.python_executions()), ("succeeded", ["begin"], 1))
        self.assert_end_events(run, events, "succeeded", ["agent_execution", "agent_repair"])

    def test_a_repair_by_a_later_step_forwards_from_record_repaired(self):
        self.server.on_rerun({"overrides": {"max_iterations": 5}}, {"status": "timeout", "timed_out": True})
        run, events = self.recover_with_events()
        self.assertEqual(run.task_sequence, ["begin", "execute_step", "record_repaired"])
        self.assertEqual(run.output["repaired_by"], "simplify_query")
        self.assert_end_events(run, events, "succeeded", ["agent_execution", "agent_repair"])

    def test_an_escalation_forwards_execution_and_failure_events(self):
        self.server.on_rerun({}, {"status": "failed", "error": "still broken"})
        run, events = self.recover_with_events()
        self.assertEqual((run.status, run.task_sequence[-2:]), ("failed", ["record_escalation", "escalate"]))
        self.assert_end_events(run, events, "failed", ["agent_execution", "agent_failure"])

    def test_nothing_to_try_escalates_from_begin_with_failure_events(self):
        quota = {"id": "exec-1", "status": "failed", "provider": "anthropic", "model": "claude-3-5-sonnet",
                 "llm_error": {"error_class": "quota_exhausted", "message": "credit balance too low"}}
        run, events = self.recover_with_events(sections={"llm_targets": [TARGETS[1]]}, result=quota)
        self.assertEqual((run.status, run.task_sequence), ("failed", ["begin", "escalate"]))
        self.assertEqual(run.output["outcome"], "escalated")
        self.assert_end_events(run, events, "failed", ["agent_execution", "agent_failure"])

    def test_a_dry_run_says_so_and_makes_no_repair_event(self):
        run, events = self.recover_with_events(dry_run=True)
        self.assertEqual(run.output["outcome"], "planned")
        self.assert_end_events(run, events, "succeeded", ["agent_execution"], dry_run=True)

    def test_no_failure_is_one_execution_event(self):
        run, events = self.recover_with_events(result={"id": "exec-1", "status": "succeeded", "output": "All good."})
        self.assertEqual(run.output["outcome"], "no_failure")
        self.assert_end_events(run, events, "succeeded", ["agent_execution"])

    def test_a_begin_that_crashes_forwards_from_record_escalation(self):
        run, events = self.recover_with_events(begin=BeginRecoveryAction)
        self.assertEqual(run.task_sequence, ["begin", "record_escalation", "escalate"])
        self.assert_end_events(run, events, "failed", ["agent_execution", "agent_failure"])
        self.assertEqual([(e["properties"]["started_at"], e["properties"]["duration_ms"]) for e in events],
                         [(None, None)] * 2)  # begin never said when it started

    def test_a_record_that_fails_still_forwards_the_end_events(self):
        sink, rudder = self.rudderstack_sink()
        config = self.config(rudderstack=rudder)
        action = RecordFailureAction(config=config, action_service=self.action_service)
        with self.assertRaisesRegex(Exception, "plan_source must be a string"):  # refused: nothing recorded
            action.run("agent-1", execution_id="exec-1", outcome="repaired", repaired_by="retry_execution",
                       attempts=[], plan_source=7, started_at=1.0, trace_context={"trace_id": "tr-9"},
                       recovery={"id": "rec-7", "plan": {"source": "rules"}, "storm": None})
        events = self.delivered(sink, config)
        self.assertEqual([(e["event"], e["messageId"]) for e in events],
                         [(n, message_id("rec-7", n)) for n in ("agent_execution", "agent_repair")])
        self.assertEqual(events[0]["properties"]["result"]["output"]["plan"], {"source": "rules"})
        self.assertEqual(self.history(), [])

    def test_a_record_refused_for_its_start_still_forwards_without_a_duration(self):
        sink, rudder = self.rudderstack_sink()
        config = self.config(rudderstack=rudder)
        action = RecordFailureAction(config=config, action_service=self.action_service)
        with self.assertRaisesRegex(Exception, "started_at must be a finite epoch time"):
            action.run("agent-1", outcome="escalated", started_at="yesterday", recovery={"id": "rec-8"})
        self.assertEqual([(e["event"], e["properties"]["result"]["output"]["duration_s"])
                          for e in self.delivered(sink, config)],
                         [("agent_execution", None), ("agent_failure", None)])

    def test_without_a_write_key_the_events_are_skipped_and_the_recovery_goes_on(self):
        run = self.recover()
        self.assertEqual((run.status, run.output["outcome"]), ("succeeded", "repaired"))
        self.assertEqual(run.task("begin").result["result"]["events"],
                         {"agent_execution": "skipped", "agent_repair": "skipped"})

on_both_backends(AgentRecoveryContract, "{backend}AgentRecoveryTest", decorators=(skip_unless_orquesta,))
