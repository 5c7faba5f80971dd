"""llm_retry and reroute_request through the real Orquesta conductor, with the
real llm_decide / llm_call actions calling the fault-injecting provider and the
breakers in a real store."""

import json
import os
import time
import unittest
from unittest import mock

import jsonschema
import yaml

from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.llm_provider import LLMProviderServer
from synthralos_tests.orquesta_runner import ACTIONS_DIR, run_workflow, skip_unless_orquesta

from llm_call import LLMCall
from llm_decide import LLMDecide
from synthralos_lib.llm.breaker import Breakers

KEYS = {"oa": "sk-oa-wf-1111aaaa", "an": "sk-ant-wf-2222bbbb", "oa2": "sk-oa2-wf-3333cccc"}
USER = [{"role": "user", "content": "Summarise: disk full on db-1"}]
NO_JITTER = {"base_delay_s": 2, "max_delay_s": 5, "jitter": "none"}


class WorkflowMixin(StoreBackendMixin):
    @classmethod
    def setUpClass(cls):
        super(WorkflowMixin, cls).setUpClass()
        cls.server = LLMProviderServer()

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        super(WorkflowMixin, cls).tearDownClass()

    def setUp(self):
        super(WorkflowMixin, self).setUp()
        self.server.reset()
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

    def run_wf(self, name, inputs, **config_sections):
        config = self.make_config(**config_sections)
        run = run_workflow(
            name, dict({"messages": USER}, **inputs),
            actions={"synthralos.llm_call": LLMCall, "synthralos.llm_decide": LLMDecide},
            config=config, action_service=self.action_service, action_meta_dir=ACTIONS_DIR,
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
    def test_delays_grow_and_cap_across_iterations(self):
        self.server.script("oa", ["unavailable", "server_error", "bad_gateway", "gateway_timeout", "ok"])
        run = self.run_wf("llm_retry", {"policy": dict(NO_JITTER, max_attempts=5)})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["start"] + ["decide", "route", "call"] * 5 + ["decide", "route"])
        self.assertEqual(run.delays_for("call"), [0, 2, 4, 5, 5])
        self.assertEqual(run.output["content"], "Reply from oa (gpt-4o-mini).")
        self.assertEqual((run.output["served_by"], run.output["provider"], run.output["region"]),
                         ("oa", "openai", "us"))
        self.assertEqual((run.output["attempt_count"], run.output["total_delay_s"], run.output["result"]),
                         (5, 16, "done"))
        self.assertEqual(self.attempts(run), [("oa", 503, "transient", 2), ("oa", 500, "transient", 4),
                                              ("oa", 502, "transient", 5), ("oa", 504, "transient", 5),
                                              ("oa", 200, None, 0)])
        self.assertEqual(run.injected_triggers, [])

    def test_retry_after_wins_when_present(self):
        self.server.script("oa", [{"fault": "rate_limit", "retry_after": 9}, "server_error", "ok"])
        run = self.run_wf("llm_retry", {"policy": NO_JITTER})
        self.assertEqual(run.status, "succeeded", run)
        # 429 with Retry-After 9 (over max_delay_s 5, under retry_after_cap_s): 9; then backoff for attempt 2: 4.
        self.assertEqual(run.delays_for("call"), [0, 9, 4])
        self.assertEqual(self.attempts(run), [("oa", 429, "rate_limited", 9), ("oa", 500, "transient", 4),
                                              ("oa", 200, None, 0)])
        self.assertEqual(run.output["total_delay_s"], 13)

    def test_retry_after_over_the_cap_moves_on(self):
        self.server.script("oa", [{"fault": "rate_limit", "retry_after": 300}])
        run = self.run_wf("llm_retry", {"policy": dict(NO_JITTER, retry_after_cap_s=60)})
        self.assertEqual(run.delays_for("call"), [0, 0])
        self.assertEqual(run.output["served_by"], "an")

    def test_fallback_after_the_attempts_run_out(self):
        self.server.set_default("oa", "unavailable")
        run = self.run_wf("llm_retry", {"policy": dict(NO_JITTER, max_attempts=2)})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.delays_for("call"), [0, 2, 0])
        self.assertEqual([p["target"] for p in run.parameters_for("call")], ["oa", "oa", "an"])
        self.assertEqual(run.output["served_by"], "an")
        self.assertEqual(run.output["content"], "Reply from an (claude-3-5-haiku-latest).")
        self.assertEqual(self.attempts(run), [("oa", 503, "transient", 2), ("oa", 503, "transient", 0),
                                              ("an", 200, None, 0)])

    def test_overloaded_gets_short_retries_then_switches(self):
        self.server.set_default("an", "overloaded")
        run = self.run_wf("llm_retry", {"targets": ["an", "oa"], "policy": dict(NO_JITTER, max_attempts=4)})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.delays_for("call"), [0, 2, 0])
        self.assertEqual(self.attempts(run), [("an", 529, "overloaded", 2), ("an", 529, "overloaded", 0),
                                              ("oa", 200, None, 0)])

    def test_invalid_output_is_regenerated_at_once(self):
        self.server.script("oa", ["malformed", "ok"])
        run = self.run_wf("llm_retry", {"policy": NO_JITTER})
        self.assertEqual(run.delays_for("call"), [0, 0])
        self.assertEqual(self.attempts(run), [("oa", 200, "invalid_output", 0), ("oa", 200, None, 0)])

    def test_quota_exhausted_switches_at_once_and_alerts(self):
        self.server.script("oa", ["quota"])
        run = self.run_wf("llm_retry", {"policy": NO_JITTER})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.delays_for("call"), [0, 0])
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
            "next_action": "next_target", "next_target": "an"})
        self.assertEqual((breaker["state"], breaker["reason"], breaker["cooldown_s"]), ("open", "quota_exhausted", 600))
        # The next request skips the open circuit without calling it.
        self.server.reset()
        self.server.add_endpoint("oa", "openai", KEYS["oa"], region="us")
        self.server.add_endpoint("an", "anthropic", KEYS["an"], region="eu")
        again = self.run_wf("llm_retry", {})
        self.assertEqual((again.output["served_by"], self.server.faults_served("oa")), ("an", []))
        self.assertEqual([s["target"] for s in again.output["skipped"]], ["oa"])

    def test_auth_fails_fast_on_that_target(self):
        config = self.make_config()
        config["llm_targets"][0]["api_key"] = "sk-revoked-9999ffff"
        run = run_workflow("llm_retry", {"messages": USER, "policy": NO_JITTER},
                           actions={"synthralos.llm_call": LLMCall, "synthralos.llm_decide": LLMDecide},
                           config=config, action_service=self.action_service, action_meta_dir=ACTIONS_DIR)
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
        self.assertEqual([p["target"] for p in run.parameters_for("call")], ["oa", "oa2"])
        self.assertEqual(run.output["served_by"], "oa2")
        self.assertEqual(self.server.faults_served("an"), [])

    def test_every_target_cooling_waits_instead_of_failing(self):
        # One frozen clock for the breakers here and in llm_decide: the wait is exactly the
        # cooldown left, however long the workflow takes to reach the decision.
        now = time.time()

        def frozen_breakers(*args, **kwargs):
            kwargs.setdefault("clock", lambda: now)
            return Breakers(*args, **kwargs)

        breakers = frozen_breakers(self.make_store(), {})
        for name, cool_s in (("oa", 40), ("an", 20), ("oa2", 60)):
            breakers.record(name, False, "rate_limited", cool_s=cool_s)
        with mock.patch("synthralos_lib.llm.routing.Breakers", frozen_breakers):
            run = self.run_wf("llm_retry", {})
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.delays_for("call"), [20])
        self.assertEqual((run.output["served_by"], run.output["total_delay_s"]), ("an", 20))

    def test_exhaustion_ends_failed(self):
        for name in ("oa", "an", "oa2"):
            self.server.set_default(name, "quota")
        run = self.run_wf("llm_retry", {})
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["start", "decide", "route", "call"]
                         + ["decide", "route", "alert", "call"] * 2 + ["decide", "route", "alert"])
        self.assertEqual(run.state_sequence[-1], "fail")
        self.assertEqual(run.output["result"], "give_up")
        self.assertEqual([a["target"] for a in run.output["attempts"]], ["oa", "an", "oa2"])
        last = run.task("decide").result["result"]
        self.assertEqual((last["action"], last["reason"]), ("give_up", "quota_exhausted on oa2; no target left"))
        self.assertEqual([t["payload"]["target"] for t in run.injected_triggers], ["oa", "an", "oa2"])

    def test_bad_request_fails_fast(self):
        self.server.script("oa", ["bad_request"])
        run = self.run_wf("llm_retry", {})
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["start", "decide", "route", "call", "decide", "route"])
        self.assertEqual((run.output["result"], run.output["reason"]),
                         ("give_up", "bad_request: the request itself is invalid"))

    def test_invalid_input_fails_the_workflow(self):
        run = self.run_wf("llm_retry", {"policy": {"max_attempts": 0}})
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["start", "decide"])
        self.assertEqual(run.output["attempts"], [])  # output still renders, without errors of its own
        self.assertEqual([e.get("task_id") for e in run.errors], ["decide", "fail"])  # no output-rendering errors
        self.assertIn("policy.max_attempts must be an integer >= 1", run.task("decide").result["stderr"])


class RerouteContract(WorkflowMixin):
    def test_one_attempt_per_target_and_the_serving_target(self):
        self.server.script("oa", ["unavailable"])
        self.server.script("an", ["overloaded"])
        run = self.run_wf("reroute_request", {})
        self.assertEqual(run.status, "succeeded", run)
        sub = run.task("reroute").subrun
        self.assertEqual(sub.delays_for("call"), [0, 0, 0])
        self.assertEqual((run.output["served_by"], run.output["region"], run.output["model"]),
                         ("oa2", "ap", "gpt-4o-mini"))
        self.assertEqual([(a["target"], a["status"], a["error_class"]) for a in run.output["attempts"]],
                         [("oa", 503, "transient"), ("an", 529, "overloaded"), ("oa2", 200, None)])

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

    def test_reroute_disabled_is_one_attempt_on_the_primary(self):
        self.server.script("oa", ["server_error"])
        run = self.run_wf("reroute_request", {}, features={"enable_reroute": False})
        self.assertEqual(run.status, "failed")
        sub = run.task("reroute").subrun
        self.assertEqual(sub.task_sequence, ["start", "decide", "route", "call", "decide", "route"])
        self.assertEqual(self.server.faults_served(), ["server_error"])

    def test_all_targets_exhausted_ends_failed(self):
        for name in ("oa", "an", "oa2"):
            self.server.set_default(name, "unavailable")
        run = self.run_wf("reroute_request", {})
        self.assertEqual(run.status, "failed")
        self.assertEqual(self.server.faults_served(), ["unavailable"] * 3)


@skip_unless_orquesta
class LLMRetryDatastoreTest(LLMRetryContract, unittest.TestCase):
    backend = "datastore"


@skip_unless_orquesta
class LLMRetryRedisTest(LLMRetryContract, unittest.TestCase):
    backend = "redis"


@skip_unless_orquesta
class RerouteDatastoreTest(RerouteContract, unittest.TestCase):
    backend = "datastore"


@skip_unless_orquesta
class RerouteRedisTest(RerouteContract, unittest.TestCase):
    backend = "redis"


if __name__ == "__main__":
    unittest.main()
