"""The LLM actions (llm_call, llm_request, llm_breaker_status, llm_breaker_reset) and the one
step of llm_request's loop (`routing.next_step`) against the fault-injecting provider, on both
store backends where state matters."""

import json
import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import SynthralosActionTestCase
from synthralos_tests.llm_provider import ProviderServerMixin

from llm_breaker_reset import LLMBreakerReset
from llm_breaker_status import LLMBreakerStatus
from llm_call import LLMCall
from llm_request import LLMRequest
from synthralos_lib.state.config import ConfigError
from synthralos_lib.llm.breaker import Breakers
from synthralos_lib.llm.policy import PolicyError
from synthralos_lib.llm.routing import make_policy, next_step, resolve_chain

KEYS = {"oa": "sk-oa-key-1111aaaa", "an": "sk-ant-key-2222bbbb", "oa2": "sk-oa2-key-3333cccc"}
AGENT_KEY = "ag-7Tq2Vw9Xc4Hn8Rb3Lz6Kp1"
USER = [{"role": "user", "content": "Say hello"}]


class ProviderMixin(ProviderServerMixin):
    """A provider server for the class, three targets in the config: oa (priority 1), an (2), oa2 (3)."""

    def setUp(self):
        super(ProviderMixin, self).setUp()
        self.server.add_endpoint("oa", "openai", KEYS["oa"], region="us")
        self.server.add_endpoint("an", "anthropic", KEYS["an"], region="eu")
        self.server.add_endpoint("oa2", "openai", KEYS["oa2"], region="ap")
        self.base_config = {
            "llm_targets": [
                dict(self.server.target("an"), priority=2),
                dict(self.server.target("oa"), priority=1),
                dict(self.server.target("oa2"), priority=3),
            ],
            "agent_api": {"api_key": AGENT_KEY},
            "retry": {"base_delay_s": 2, "max_delay_s": 10, "jitter": "none"},
            "circuit_breaker": {"min_requests": 3, "cooldown_s": 30, "max_cooldown_s": 300},
        }


class LLMCallTest(ProviderMixin, SynthralosActionTestCase):
    action_cls = LLMCall

    def test_success(self):
        out = self.action().run(target="oa", messages=USER, max_tokens=32)
        self.assertEqual({k: out[k] for k in ("ok", "content", "status", "error_class", "target", "provider",
                                              "model", "region")},
                         {"ok": True, "content": "Reply from oa (gpt-4o-mini).", "status": 200, "error_class": None,
                          "target": "oa", "provider": "openai", "model": "gpt-4o-mini", "region": "us"})

    def test_provider_error_is_a_result_not_a_failure(self):
        self.server.script("an", [{"fault": "rate_limit", "retry_after": 4}])
        out = self.action().run(target="an", messages=USER)
        self.assertEqual((out["ok"], out["status"], out["error_class"], out["retry_after_s"]),
                         (False, 429, "rate_limited", 4.0))

    def test_fail_on_error(self):
        self.server.script("oa", ["server_error"])
        ok, out = self.action().run(target="oa", messages=USER, fail_on_error=True)
        self.assertEqual((ok, out["error_class"]), (False, "transient"))

    def test_unknown_target_fails_clearly(self):
        with self.assertRaises(ConfigError) as ctx:
            self.action().run(target="nope", messages=USER)
        self.assertEqual(str(ctx.exception), "no llm_targets entry named 'nope'")

    def test_no_secret_in_result_or_log(self):
        # The model echoes the agent API key; a wrong key is echoed by the provider's 401.
        self.server.script("oa", [{"fault": "ok", "content": "leak %s and %s" % (AGENT_KEY, KEYS["an"])}])
        action = self.action()
        with self.assertLogs(action.logger, level="INFO") as logs:
            out = action.run(target="oa", messages=USER)
        self.assertEqual(out["content"], "leak *** and ***")
        config = self.make_config()
        config["llm_targets"][1]["api_key"] = "sk-wrong-5555eeee"
        wrong = self.get_action_instance(config=config)
        with self.assertLogs(wrong.logger, level="INFO") as more:
            out2 = wrong.run(target="oa", messages=USER)
        self.assertEqual(out2["error_class"], "auth_config")
        text = json.dumps([out, out2]) + "\n".join(logs.output + more.output)
        for secret in list(KEYS.values()) + [AGENT_KEY, "sk-wrong-5555eeee"]:
            self.assertNotIn(secret, text)
        self.assertEqual([r.getMessage() for r in logs.records],
                         ["[Retry] llm_call target=oa model=gpt-4o-mini ok=True status=200 class=None latency=%.3fs"
                          % out["latency_s"]])


    def test_a_configured_secret_straddling_the_500_character_cut_leaks_no_piece(self):
        # llm_call and llm_request scrub every configured secret (here the agent API key) from a
        # non-JSON error body BEFORE the 500-character cut (issue 18).
        for offset in (480, 490, 495, 500):
            page = "<html>" + "x" * offset + AGENT_KEY + "</html>"
            self.server.script("oa", [{"fault": "raw", "status": 502, "body": page}])
            action = self.action()
            with self.assertLogs(action.logger, level="INFO") as logs:
                out = action.run(target="oa", messages=USER)
            self.server.script("oa", [{"fault": "raw", "status": 502, "body": page}, "ok"])
            request = LLMRequest(config=self.make_config(), action_service=self.action_service)
            served = request.run(messages=USER, targets=["oa"], policy={"base_delay_s": 0})
            self.assertEqual((out["error_class"], served["served_by"]), ("transient", "oa"))
            text = json.dumps([out, served]) + "\n".join(logs.output)
            leaked = [AGENT_KEY[i:i + 6] for i in range(len(AGENT_KEY) - 5) if AGENT_KEY[i:i + 6] in text]
            self.assertEqual(leaked, [], offset)


class NextStepContract(ProviderMixin):
    """`routing.next_step`: the decision llm_request takes after each call (record the outcome in
    the shared breaker; done, retry after a delay, next target or give up)."""
    action_cls = LLMRequest  # its settings and store are built from the config as in a run

    def decide(self, targets=None, outcome=None, history=None, policy=None, one_attempt_per_target=False,
               total_delay_s=0, **config):
        action = self.action(**config)
        chain = resolve_chain(action.settings, targets)
        return next_step(action.settings, action.store, chain, outcome, history or [],
                         make_policy(action.settings, policy, one_attempt_per_target), total_delay_s=total_delay_s)

    def outcome(self, target, fault):
        self.server.script(target, [fault])
        call = LLMCall(config=self.make_config(), action_service=self.action_service)
        return call.run(target=target, messages=USER)

    def test_first_step_follows_priority(self):
        d = self.decide()
        self.assertEqual((d["action"], d["target"], d["wait_s"], d["chain"], d["history"], d["attempts"]),
                         ("next_target", "oa", 0, ["oa", "an", "oa2"], [], 0))

    def test_explicit_chain_and_bad_input(self):
        self.assertEqual(self.decide(targets=["oa2", "an"])["target"], "oa2")
        with self.assertRaises(ConfigError) as ctx:
            self.decide(targets=["oa", "ghost"])
        self.assertEqual(str(ctx.exception), "unknown llm target(s): ghost (configured: oa, an, oa2)")
        with self.assertRaises(PolicyError):
            self.decide(policy={"max_attempts": 0})
        with self.assertRaises(ConfigError):
            self.decide(llm_targets=[])

    def test_backoff_then_fallback_with_history(self):
        d = self.decide()
        waits = []
        for _ in range(3):
            d = self.decide(outcome=self.outcome(d["target"], "unavailable"), history=d["history"],
                            total_delay_s=d["total_delay_s"])
            waits.append((d["action"], d["target"], d["wait_s"]))
        self.assertEqual(waits, [("retry", "oa", 2), ("retry", "oa", 4), ("next_target", "an", 0)])
        self.assertEqual(d["total_delay_s"], 6)
        self.assertEqual([(a["target"], a["status"], a["error_class"], a["wait_after_s"]) for a in d["history"]],
                         [("oa", 503, "transient", 2), ("oa", 503, "transient", 4), ("oa", 503, "transient", 0)])
        d = self.decide(outcome=self.outcome("an", "ok"), history=d["history"])
        self.assertEqual((d["action"], d["target"], d["attempts"], d["reason"]), ("done", "an", 4, "served by an"))

    def test_retry_after_wins_and_cools_the_target(self):
        out = self.outcome("oa", {"fault": "rate_limit", "retry_after": 7, "retry_after_ms": 6500})
        d = self.decide(outcome=out)
        self.assertEqual((d["action"], d["target"], d["delay_s"], d["wait_s"]), ("retry", "oa", 6.5, 7))
        self.assertEqual(d["breaker"]["cooling_for_s"] > 6, True)
        # A new request does not start on the cooled target.
        self.assertEqual(self.decide()["target"], "an")

    def test_quota_opens_the_circuit_and_alerts(self):
        d = self.decide(outcome=self.outcome("oa", "quota"))
        self.assertEqual((d["action"], d["target"], d["alert"], d["error_class"]),
                         ("next_target", "an", True, "quota_exhausted"))
        self.assertEqual((d["breaker"]["state"], d["breaker"]["reason"]), ("open", "quota_exhausted"))
        fresh = self.decide()
        self.assertEqual((fresh["target"], fresh["skipped"][0]["target"]), ("an", "oa"))
        self.assertTrue(fresh["skipped"][0]["why"].startswith("circuit open (quota_exhausted) for "))

    def test_open_circuit_is_skipped_when_falling_back(self):
        Breakers(self.make_store(), {}).record("an", False, "auth_config")
        d = self.decide(outcome=self.outcome("oa", "auth"))
        self.assertEqual((d["action"], d["target"]), ("next_target", "oa2"))
        self.assertEqual([s["target"] for s in d["skipped"]], ["an"])

    def test_all_targets_cooling_waits_for_the_first_to_cool_down(self):
        breakers = Breakers(self.make_store(), {})
        for name, cool_s in (("oa", 50), ("an", 30), ("oa2", 80)):
            breakers.record(name, False, "rate_limited", cool_s=cool_s)
        d = self.decide()
        self.assertEqual((d["action"], d["target"], d["wait_s"], d["total_delay_s"]), ("next_target", "an", 30, 30))
        self.assertRegex(d["reason"], r"^first attempt; every usable target is cooling down, waiting (29\.\d|30\.0)s for an$")
        # An open circuit is not waited for.
        breakers.record("an", False, "quota_exhausted")
        self.assertEqual((self.decide()["target"]), "oa")

    def test_reroute_disabled_uses_the_primary_only(self):
        d = self.decide(outcome=self.outcome("oa", "quota"), features={"enable_reroute": False})
        self.assertEqual((d["action"], d["chain"], d["reason"]),
                         ("give_up", ["oa"], "quota_exhausted on oa; no target left"))

    def test_one_attempt_per_target(self):
        d = self.decide(outcome=self.outcome("oa", "server_error"), one_attempt_per_target=True)
        self.assertEqual((d["action"], d["target"]), ("next_target", "an"))

    def test_bad_request_gives_up(self):
        d = self.decide(outcome=self.outcome("oa", "bad_request"))
        self.assertEqual((d["action"], d["target"]), ("give_up", None))


on_both_backends(NextStepContract, "NextStep{backend}Test", base=SynthralosActionTestCase)


class BreakerActionsTest(ProviderMixin, SynthralosActionTestCase):
    action_cls = LLMBreakerStatus
    backend = "redis"

    def test_status_and_reset(self):
        Breakers(self.make_store(), {}).record("an", False, "quota_exhausted")
        status = self.action().run()
        self.assertEqual(status["store"], "redis")
        self.assertEqual([(t["target"], t["state"]) for t in status["targets"]],
                         [("oa", "closed"), ("an", "open"), ("oa2", "closed")])
        reset = LLMBreakerReset(config=self.make_config(), action_service=self.action_service).run(target="an")
        self.assertEqual((reset["before"]["state"], reset["after"]["state"], reset["also_reset"]),
                         ("open", "closed", []))

    def test_a_quota_opens_the_account_and_one_reset_closes_it(self):
        config = self.make_config()
        for target in config["llm_targets"]:
            target["account"] = "acme" if target["name"] in ("oa", "oa2") else "other"
        Breakers(self.make_store(), {}, accounts={"oa": "acme", "oa2": "acme", "an": "other"}).record(
            "oa", False, "quota_exhausted")
        status = LLMBreakerStatus(config=config, action_service=self.action_service).run()
        self.assertEqual([(t["target"], t["state"]) for t in status["targets"]],
                         [("oa", "open"), ("an", "closed"), ("oa2", "open")])
        reset = LLMBreakerReset(config=config, action_service=self.action_service).run(target="oa", whole_account=True)
        self.assertEqual(reset["also_reset"], ["oa2"])
        status = LLMBreakerStatus(config=config, action_service=self.action_service).run()
        self.assertEqual([t["state"] for t in status["targets"]], ["closed", "closed", "closed"])
        with self.assertRaises(ConfigError):
            self.action().run(targets=["ghost"])


if __name__ == "__main__":
    unittest.main()
