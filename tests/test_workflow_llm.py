"""llm_retry and reroute_request through the real Orquesta conductor, with the
real llm_request action calling the fault-injecting provider and the breakers
in a real store.

Each test counts the action executions st2 would create for the request
(`run.executions`): 1 on the fast path (every wait slept in-process), one more
per wait handed back to the workflow's persisted task delay (the slow path),
one per alert dispatched."""

import json
import os
import unittest

import jsonschema
import yaml

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.llm_provider import ProviderServerMixin
from synthralos_tests.orquesta_runner import ACTIONS_DIR, ActionParameterError, run_workflow, skip_unless_orquesta

from llm_request import LLMRequest
from synthralos_lib.llm.breaker import Breakers
from synthralos_lib.llm.client import account_of
from synthralos_tests.redis_server import RedisServer

KEYS = {"oa": "sk-oa-wf-1111aaaa", "an": "sk-ant-wf-2222bbbb", "oa2": "sk-oa2-wf-3333cccc"}
USER = [{"role": "user", "content": "Summarise: disk full on db-1"}]
NO_JITTER = {"base_delay_s": 2, "max_delay_s": 5, "jitter": "none"}
FAST = {"base_delay_s": 0.01, "max_delay_s": 0.02, "jitter": "none"}  # waits short enough to sleep in-process
SLOW_PATH = {"fast_path_max_wait_s": 0}  # every wait > 0 s goes back to the workflow's task delay
ACTIONS = {"synthralos.llm_request": LLMRequest}


class WorkflowMixin(ProviderServerMixin, StoreBackendMixin):
    def setUp(self):
        super(WorkflowMixin, self).setUp()
        self.server.add_endpoint("oa", "openai", KEYS["oa"], region="us")
        self.server.add_endpoint("an", "anthropic", KEYS["an"], region="eu")
        self.server.add_endpoint("oa2", "openai", KEYS["oa2"], region="ap")
        self.base_config = {
            "llm_targets": [
                dict(self.server.target("oa"), priority=1),
                dict(self.server.target("an"), priority=2),
                dict(self.server.target("oa2"), priority=3),
            ],
            "retry": {"max_attempts": 3},
        }

    def run_wf(self, name, inputs, actions=None, restart=None, config=None, **config_sections):
        config = config or self.make_config(**config_sections)
        # The action's workflow (its entry point) with the parameters st2 renders from its metadata:
        # reroute_request runs llm_retry's workflow with its immutable one_attempt_per_target.
        run = run_workflow(
            name, dict({"messages": USER}, **inputs), actions=dict(ACTIONS, **(actions or {})),
            config=config, action_service=self.action_service, action_meta_dir=ACTIONS_DIR, restart=restart,
            action_ref="synthralos." + name,
        )
        # No key anywhere in what st2 would store or show.
        text = json.dumps([run.output, [t.as_dict() for t in run.tasks], run.injected_triggers, run.errors],
                          default=str)
        for key in KEYS.values():
            self.assertNotIn(key, text)
        return run

    def attempts(self, run):
        return [(a["target"], a["status"], a["error_class"], a["wait_after_s"]) for a in run.output["attempts"]]


class LLMRetryContract(WorkflowMixin):
    def test_fast_path_serves_the_request_in_one_execution(self):
        self.server.script("oa", ["unavailable", "server_error", {"fault": "rate_limit", "retry_after": 1,
                                                                  "retry_after_ms": 30}, "ok"])
        run = self.run_wf("llm_retry", {"policy": dict(FAST, max_attempts=4)})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, run.executions), (["request"], 1))
        self.assertEqual(run.output["content"], "Reply from oa (gpt-4o-mini).")
        self.assertEqual((run.output["served_by"], run.output["provider"], run.output["region"]),
                         ("oa", "openai", "us"))
        # Backoff 0.01, 0.02 (capped), then the provider's retry-after-ms 30: all slept in-process.
        self.assertEqual(self.attempts(run), [("oa", 503, "transient", 0.01), ("oa", 500, "transient", 0.02),
                                              ("oa", 429, "rate_limited", 0.03), ("oa", 200, None, 0)])
        self.assertEqual((run.output["attempt_count"], run.output["total_delay_s"], run.output["result"]),
                         (4, 0.06, "done"))
        self.assertEqual((run.output["breaker_warning"], run.injected_triggers), (None, []))

    def test_slow_path_delays_grow_and_cap_across_iterations(self):
        self.server.script("oa", ["unavailable", "server_error", "bad_gateway", "gateway_timeout", "ok"])
        run = self.run_wf("llm_retry", {"policy": dict(NO_JITTER, max_attempts=5)}, retry=SLOW_PATH)
        self.assertEqual(run.status, "succeeded", run)
        # One execution per wait handed back (5 for 5 attempts; the old one-attempt-per-task loop took 18).
        self.assertEqual((run.task_sequence, run.executions), (["request"] + ["resume"] * 4, 5))
        self.assertEqual(run.delays_for("resume"), [2, 4, 5, 5])
        self.assertEqual([p["resume"]["pending"]["target"] for p in run.parameters_for("resume")], ["oa"] * 4)
        self.assertEqual((run.output["attempt_count"], run.output["total_delay_s"], run.output["result"]),
                         (5, 16, "done"))
        self.assertEqual(self.attempts(run), [("oa", 503, "transient", 2), ("oa", 500, "transient", 4),
                                              ("oa", 502, "transient", 5), ("oa", 504, "transient", 5),
                                              ("oa", 200, None, 0)])

    def test_a_long_retry_after_is_a_persisted_delay_across_engine_restarts(self):
        self.server.script("oa", [{"fault": "rate_limit", "retry_after": 30}, "ok"])
        run = self.run_wf("llm_retry", {"policy": NO_JITTER}, restart=lambda run, conductor: True)
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, run.executions), (["request", "resume"], 2))
        # After each restart the conductor is rebuilt from its persisted JSON: the pending
        # resume and its 30 s delay are re-rendered from the restored ctx.
        self.assertEqual(run.restarts, [{"next_tasks": [("resume", 30)]}, {"next_tasks": []}])
        self.assertEqual(run.delays_for("resume"), [30])
        self.assertEqual(self.attempts(run), [("oa", 429, "rate_limited", 30), ("oa", 200, None, 0)])
        self.assertEqual((run.output["served_by"], run.output["total_delay_s"]), ("oa", 30))
        self.assertEqual(self.server.faults_served("oa"), ["rate_limit", "ok"])

    def test_retry_after_over_the_cap_moves_on(self):
        self.server.script("oa", [{"fault": "rate_limit", "retry_after": 300}])
        run = self.run_wf("llm_retry", {"policy": dict(NO_JITTER, retry_after_cap_s=60)})
        self.assertEqual((run.task_sequence, run.executions), (["request"], 1))
        self.assertEqual(self.attempts(run), [("oa", 429, "rate_limited", 0), ("an", 200, None, 0)])
        self.assertEqual(run.output["served_by"], "an")

    def test_fallback_after_the_attempts_run_out(self):
        self.server.set_default("oa", "unavailable")
        run = self.run_wf("llm_retry", {"policy": dict(FAST, max_attempts=2)})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, run.executions), (["request"], 1))
        self.assertEqual(run.output["served_by"], "an")
        self.assertEqual(run.output["content"], "Reply from an (claude-3-5-haiku-latest).")
        self.assertEqual(self.attempts(run), [("oa", 503, "transient", 0.01), ("oa", 503, "transient", 0),
                                              ("an", 200, None, 0)])

    def test_overloaded_gets_short_retries_then_switches(self):
        self.server.set_default("an", "overloaded")
        run = self.run_wf("llm_retry", {"targets": ["an", "oa"], "policy": dict(FAST, max_attempts=4)})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(self.attempts(run), [("an", 529, "overloaded", 0.01), ("an", 529, "overloaded", 0),
                                              ("oa", 200, None, 0)])

    def test_invalid_output_is_regenerated_at_once(self):
        self.server.script("oa", ["malformed", "ok"])
        run = self.run_wf("llm_retry", {"policy": NO_JITTER}, retry=SLOW_PATH)
        self.assertEqual((run.task_sequence, run.executions), (["request"], 1))  # no wait: stays in-process
        self.assertEqual(self.attempts(run), [("oa", 200, "invalid_output", 0), ("oa", 200, None, 0)])

    def test_quota_exhausted_switches_at_once_and_alerts(self):
        self.server.script("oa", ["quota"])
        run = self.run_wf("llm_retry", {"policy": NO_JITTER})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, run.executions), (["request", "alert"], 2))
        self.assertEqual(self.attempts(run), [("oa", 429, "quota_exhausted", 0), ("an", 200, None, 0)])
        self.assertEqual(len(run.injected_triggers), 1)
        trigger = run.injected_triggers[0]
        with open(os.path.join(os.path.dirname(ACTIONS_DIR), "triggers", "llm_target_alert.yaml")) as handle:
            schema = yaml.safe_load(handle)["payload_schema"]
        jsonschema.Draft4Validator(schema).validate(trigger["payload"])  # what st2 checks on dispatch
        self.assertEqual((trigger["trigger"], trigger["trace_tag"]), ("synthralos.llm_target_alert", "oa"))
        breaker = trigger["payload"].pop("breaker")
        self.assertEqual(trigger["payload"], {
            "target": "oa", "provider": "openai", "model": "gpt-4o-mini", "region": "us",
            "error_class": "quota_exhausted", "status": 429,
            "error_message": "HTTP 429 insufficient_quota: You exceeded your current quota, please check your plan "
                             "and billing details.",
            "next_action": "next_target", "next_target": "an",
            "account": account_of(self.make_settings().llm_target("oa")), "account_targets_opened": []})
        self.assertEqual((breaker["state"], breaker["reason"], breaker["cooldown_s"]), ("open", "quota_exhausted", 600))
        # The next request skips the open circuit without calling it.
        self.server.reset()
        self.server.add_endpoint("oa", "openai", KEYS["oa"], region="us")
        self.server.add_endpoint("an", "anthropic", KEYS["an"], region="eu")
        again = self.run_wf("llm_retry", {})
        self.assertEqual((again.output["served_by"], self.server.faults_served("oa")), ("an", []))
        self.assertEqual([s["target"] for s in again.output["skipped"]], ["oa"])
        self.assertEqual(again.executions, 1)

    def test_a_failed_alert_does_not_fail_the_request(self):
        self.server.script("oa", ["quota"])
        failing = {"core.inject_trigger": lambda **params: ("failed", {"error": "st2api unreachable"})}
        run = self.run_wf("llm_retry", {}, actions=failing)
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, run.output["served_by"]), (["request", "alert"], "an"))

    def test_auth_fails_fast_on_that_target(self):
        config = self.make_config()
        config["llm_targets"][0]["api_key"] = "sk-revoked-9999ffff"
        run = self.run_wf("llm_retry", {"policy": NO_JITTER}, config=config)
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(self.attempts(run), [("oa", 401, "auth_config", 0), ("an", 200, None, 0)])
        self.assertEqual(self.server.faults_served("oa"), ["auth"])  # one call, no retry
        self.assertEqual(run.injected_triggers[0]["payload"]["error_class"], "auth_config")
        self.assertNotIn("sk-revoked-9999ffff", json.dumps([run.output, run.injected_triggers]))

    def test_an_open_circuit_is_skipped(self):
        Breakers(self.make_store(), {}).record("an", False, "auth_config")
        self.server.script("oa", ["context_overflow"])
        run = self.run_wf("llm_retry", {})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual([a["target"] for a in run.output["attempts"]], ["oa", "oa2"])
        self.assertEqual(run.output["served_by"], "oa2")
        self.assertEqual(self.server.faults_served("an"), [])

    def test_every_target_cooling_waits_in_the_workflow(self):
        breakers = Breakers(self.make_store(), {})
        for name, cool_s in (("oa", 40), ("an", 20), ("oa2", 60)):
            breakers.record(name, False, "rate_limited", cool_s=cool_s)
        run = self.run_wf("llm_retry", {})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, run.executions), (["request", "resume"], 2))
        # What is left of an's 20 s cooldown (wall clock), rounded up: over the 10 s bound, so handed back.
        (delay,) = run.delays_for("resume")
        self.assertEqual(delay, run.task("request").result["result"]["wait_s"])
        self.assertTrue(10 < delay <= 20, delay)
        self.assertEqual(run.task("request").result["result"]["calls"], 0)
        self.assertEqual((run.output["served_by"], run.output["total_delay_s"]), ("an", delay))

    def test_exhaustion_ends_failed(self):
        for name in ("oa", "an", "oa2"):
            self.server.set_default(name, "quota")
        run = self.run_wf("llm_retry", {})
        self.assertEqual(run.status, "failed")
        self.assertEqual((run.task_sequence, run.executions), (["request", "alert"], 4))  # 1 + 3 alerts
        self.assertEqual(run.state_sequence[-1], "fail")
        self.assertEqual(run.output["result"], "give_up")
        self.assertEqual(run.output["reason"], "quota_exhausted on oa2; no target left")
        self.assertEqual([a["target"] for a in run.output["attempts"]], ["oa", "an", "oa2"])
        self.assertEqual([t["payload"]["target"] for t in run.injected_triggers], ["oa", "an", "oa2"])
        self.assertEqual([t["payload"]["next_action"] for t in run.injected_triggers],
                         ["next_target", "next_target", "give_up"])

    def test_bad_request_fails_fast(self):
        self.server.script("oa", ["bad_request"])
        run = self.run_wf("llm_retry", {})
        self.assertEqual(run.status, "failed")
        self.assertEqual((run.task_sequence, run.executions), (["request"], 1))
        self.assertEqual((run.output["result"], run.output["reason"]),
                         ("give_up", "bad_request: the request itself is invalid"))

    def test_nan_temperature_is_a_bad_request_that_spares_the_breaker(self):
        run = self.run_wf("llm_retry", {"temperature": float("nan")})
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.output["reason"], "bad_request: the request itself is invalid")
        self.assertEqual([(a["target"], a["status"], a["error_class"], a["error_message"])
                          for a in run.output["attempts"]],
                         [("oa", None, "bad_request", "temperature must be a finite number (not NaN or Infinity)")])
        self.assertEqual(self.server.calls(), [])
        self.assertEqual(Breakers(self.make_store(), {}).status("oa")["window_requests"], 0)

    def test_out_of_range_input_is_refused_by_st2(self):
        with self.assertRaises(ActionParameterError) as caught:
            self.run_wf("llm_retry", {"policy": {"max_attempts": 0}})
        self.assertIn("0 is less than the minimum of 1", str(caught.exception))  # st2's jsonschema message
        self.assertIn("instance['policy']['max_attempts']", str(caught.exception))
        with self.assertRaises(ActionParameterError) as caught:
            self.run_wf("llm_retry", {"temperature": 2.5})
        self.assertIn("2.5 is greater than the maximum of 2", str(caught.exception))
        self.assertIn("instance['temperature']", str(caught.exception))

    def test_a_person_may_give_plain_text_or_one_message(self):
        """st2's web UI and CLI send the untyped messages field as text; st2 passes it through to
        llm_request, which reads text, one message object, or JSON text of either."""
        one = USER[0]
        for given in (one["content"], one, json.dumps(one)):
            with self.subTest(given=given):
                run = self.run_wf("llm_retry", {"messages": given})
                self.assertEqual((run.status, run.executions), ("succeeded", 1), run)
                self.assertEqual(run.task("request").parameters["messages"], given)  # as st2 handed it over
                self.assertEqual(self.server.last_request().json["messages"], [one])

    def test_messages_that_are_not_messages_fail_without_a_call(self):
        run = self.run_wf("llm_retry", {"messages": '[{"role": "robot", "content": "hi"}]'})
        self.assertEqual(run.status, "failed")
        self.assertEqual([(a["error_class"], a["error_message"]) for a in run.output["attempts"]],
                         [("bad_request", "messages[0] must be {role: user|assistant|system, content: str}")])
        self.assertEqual(self.server.calls(), [])

    def test_invalid_input_fails_the_workflow(self):
        # NaN passes JSON schema's type and bounds; the library names the field.
        run = self.run_wf("llm_retry", {"policy": {"max_delay_s": float("nan")}})
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["request"])
        self.assertEqual(run.output["attempts"], [])  # output still renders, without errors of its own
        self.assertEqual([e.get("task_id") for e in run.errors], ["request", "fail"])  # no output-rendering errors
        self.assertIn("policy.max_delay_s must be a finite number (not NaN or Infinity)", run.task("request").result["stderr"])
        self.assertEqual(self.server.calls(), [])


class RerouteContract(WorkflowMixin):
    def test_one_attempt_per_target_and_the_serving_target(self):
        self.server.script("oa", ["unavailable"])
        self.server.script("an", ["overloaded"])
        run = self.run_wf("reroute_request", {})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, run.executions), (["request"], 1))
        self.assertEqual((run.output["served_by"], run.output["region"], run.output["model"]),
                         ("oa2", "ap", "gpt-4o-mini"))
        self.assertEqual([(a["target"], a["status"], a["error_class"], a["wait_after_s"])
                          for a in run.output["attempts"]],
                         [("oa", 503, "transient", 0), ("an", 529, "overloaded", 0), ("oa2", 200, None, 0)])

    def test_records_outcomes_and_skips_open_circuits(self):
        store = self.make_store()
        Breakers(store, {}).record("oa", False, "quota_exhausted")
        run = self.run_wf("reroute_request", {"targets": ["oa", "oa2", "an"]})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.output["served_by"], "oa2")
        self.assertEqual([s["target"] for s in run.output["skipped"]], ["oa"])
        self.assertEqual(self.server.faults_served("oa"), [])
        status = Breakers(store, {}).status("oa2")
        self.assertEqual((status["state"], status["window_requests"], status["window_failures"]), ("closed", 1, 0))

    def test_a_cooling_chain_waits_in_a_persisted_delay(self):
        breakers = Breakers(self.make_store(), {})
        for name, cool_s in (("oa", 25), ("an", 40), ("oa2", 60)):
            breakers.record(name, False, "overloaded", cool_s=cool_s)
        run = self.run_wf("reroute_request", {}, restart=lambda run, conductor: True)
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual((run.task_sequence, run.executions), (["request", "resume"], 2))
        ((task, delay),) = run.restarts[0]["next_tasks"]
        self.assertEqual(task, "resume")
        # What is left of oa's 25 s cooldown (wall clock), rounded up, as the action handed it back.
        self.assertEqual(delay, run.task("request").result["result"]["wait_s"])
        self.assertTrue(10 < delay <= 25, delay)
        self.assertEqual(run.output["served_by"], "oa")

    def test_reroute_disabled_is_one_attempt_on_the_primary(self):
        self.server.script("oa", ["server_error"])
        run = self.run_wf("reroute_request", {}, features={"enable_reroute": False})
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["request"])
        self.assertEqual(self.server.faults_served(), ["server_error"])

    def test_all_targets_exhausted_ends_failed(self):
        for name in ("oa", "an", "oa2"):
            self.server.set_default(name, "unavailable")
        run = self.run_wf("reroute_request", {})
        self.assertEqual(run.status, "failed")
        self.assertEqual(self.server.faults_served(), ["unavailable"] * 3)


    def test_one_message_object_is_accepted(self):
        run = self.run_wf("reroute_request", {"messages": USER[0]})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(self.server.last_request().json["messages"], USER)


class RedisDownContract(WorkflowMixin):
    """redis.url set and Redis killed: requests are still served, breakers fail open, the output says so."""

    backend = "datastore"

    def test_requests_are_served_with_breakers_failing_open(self):
        redis_server = RedisServer().start()
        try:
            config = self.make_config(redis={"url": redis_server.url, "key_prefix": "wf-down:"})
            redis_server.kill()
            self.server.script("oa", ["unavailable"])
            for name, expected in (("llm_retry", "oa"), ("reroute_request", "an")):
                run = self.run_wf(name, {"policy": FAST} if name == "llm_retry" else {}, config=config)
                self.assertEqual(run.status, "succeeded", run)
                self.assertEqual((run.output["served_by"], run.executions), (expected, 1))
                self.assertTrue(run.output["breaker_warning"].startswith(
                    "breaker store unavailable, breakers fail open: redis "), run.output["breaker_warning"])
                self.server.script("oa", ["unavailable"])
        finally:
            redis_server.stop()


on_both_backends(LLMRetryContract, "LLMRetry{backend}Test", decorators=(skip_unless_orquesta,))


on_both_backends(RerouteContract, "Reroute{backend}Test", decorators=(skip_unless_orquesta,))


@skip_unless_orquesta
class RedisDownTest(RedisDownContract, unittest.TestCase):
    pass


if __name__ == "__main__":
    unittest.main()
