"""The in-process attempt loop (`fastpath.serve`, what llm_request runs) against the
fault-injecting provider and the breakers in a real store: breaker behaviour under
random transient errors and a full outage, the wait bound and the time budget."""

import synthralos_tests  # noqa: F401

import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.llm_provider import ProviderServerMixin

from synthralos_lib.llm import fastpath
from synthralos_lib.llm.breaker import Breakers
from synthralos_lib.llm.client import call_llm
from synthralos_lib.llm.routing import make_policy, resolve_chain

MESSAGES = [{"role": "user", "content": "ping"}]


class FastPathContract(ProviderServerMixin, StoreBackendMixin):
    def setUp(self):
        super(FastPathContract, self).setUp()
        self.server.add_endpoint("p", "openai", "sk-fp-primary-1111")
        self.server.add_endpoint("f", "anthropic", "sk-ant-fp-fallback-2222")
        self.base_config = {
            "llm_targets": [dict(self.server.target("p"), priority=1, timeout_s=5),
                            dict(self.server.target("f"), priority=2, timeout_s=5)],
            "retry": {"max_attempts": 3, "base_delay_s": 1, "max_delay_s": 4, "jitter": "none"},
            "circuit_breaker": {"min_requests": 5, "failure_rate_threshold": 0.5},
        }
        self.settings = self.make_settings()
        self.store = self.make_store()
        self.slept = []

    def serve(self, resume=None, clock=None, **limits):
        chain = resolve_chain(self.settings)

        def call(name):
            return call_llm(self.settings.llm_target(name), MESSAGES, max_tokens=16)

        kwargs = {"clock": clock} if clock else {}
        return fastpath.serve(self.settings, self.store, chain, make_policy(self.settings), call, resume=resume,
                              sleep=self.slept.append, **dict(limits, **kwargs))

    def test_thirty_percent_transient_errors_keep_the_primary_serving(self):
        self.server.set_error_rate("p", 0.3, ["server_error", "bad_gateway", "unavailable"], seed=7)
        served = [self.serve()["served_by"] for _ in range(100)]
        self.assertEqual(served.count(None), 0)
        self.assertGreaterEqual(served.count("p"), 90)
        status = Breakers(self.store, self.settings.section("circuit_breaker")).status("p")
        self.assertEqual(status["state"], "closed")

    def test_a_full_outage_opens_the_circuit_within_min_requests_calls(self):
        self.server.set_default("p", "unavailable")
        results = [self.serve() for _ in range(6)]
        self.assertEqual([r["served_by"] for r in results], ["f"] * 6)
        self.assertEqual(len(self.server.calls("p")), 5)  # 3 + 2 calls, then the circuit is open
        self.assertEqual([r["calls"] for r in results], [4, 3, 1, 1, 1, 1])
        self.assertEqual(results[2]["skipped"][0]["target"], "p")
        status = Breakers(self.store, self.settings.section("circuit_breaker")).status("p")
        self.assertEqual((status["state"], status["reason"]), ("open", "failure rate 5/5"))

    def test_a_wait_over_the_bound_is_handed_back_and_resumed(self):
        self.server.script("p", ["server_error", {"fault": "rate_limit", "retry_after": 30}, "ok"])
        first = self.serve(max_wait_s=10)
        self.assertEqual(self.slept, [1.0])  # the backoff under the bound was slept in-process
        self.assertEqual((first["handed_back"], first["action"], first["target"], first["wait_s"], first["calls"]),
                         (True, "retry", "p", 30, 2))
        self.assertEqual(first["resume"]["pending"]["target"], "p")
        self.assertEqual(first["total_delay_s"], 31.0)
        second = self.serve(resume=first["resume"], max_wait_s=10)
        self.assertEqual(self.slept, [1.0])  # the workflow waited the 30 s, not the action
        self.assertEqual((second["action"], second["served_by"], second["calls"], second["attempt_count"],
                          second["total_delay_s"]), ("done", "p", 1, 3, 31.0))
        self.assertEqual([a["wait_after_s"] for a in second["attempts"]], [1.0, 30, 0])

    def test_the_time_budget_hands_back_before_a_call_that_could_overrun_it(self):
        self.server.script("p", ["server_error", "ok"])
        now = [0.0]

        def clock():
            now[0] += 1.0  # each look at the clock: one more second
            return now[0]

        first = self.serve(clock=clock, budget_s=6)  # 1 call done; 2 s in + 1 s wait + 5 s timeout > 6
        self.assertEqual((first["handed_back"], first["calls"], first["wait_s"], self.slept), (True, 1, 1, []))
        second = self.serve(resume=first["resume"], clock=clock, budget_s=6)
        self.assertEqual((second["action"], second["served_by"], second["calls"]), ("done", "p", 1))

    def test_alerts_are_collected_for_the_workflow(self):
        self.server.set_default("p", "quota")
        result = self.serve()
        self.assertEqual(result["served_by"], "f")
        self.assertEqual([(a["target"], a["error_class"], a["next_action"], a["next_target"])
                          for a in result["alerts"]], [("p", "quota_exhausted", "next_target", "f")])


on_both_backends(FastPathContract, "{backend}FastPathTest")


if __name__ == "__main__":
    unittest.main()
