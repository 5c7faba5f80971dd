"""Storm control (healing/storm.py) on both store backends: a real redis-server, and the st2
datastore through the paging datastore service. The storm itself goes through `start_recovery`,
the work of agent_recovery's first execution, against a real local agent platform."""

import json
import os
import subprocess
import sys
import threading
import unittest

from hypothesis import given, settings, strategies as st

from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.paging_datastore import PagingDatastoreService

from synthralos_lib.healing import storm
from synthralos_lib.healing.agent_api import AgentApiClient
from synthralos_lib.healing.failure_trigger import build_failure
from synthralos_lib.healing.history import get_failure_history
from synthralos_lib.healing.recovery import start_recovery
from synthralos_lib.ops import metrics, recovery_stats
from synthralos_lib.state.config import load_config
from synthralos_lib.state.store import DatastoreStore

KEY = "agent-key-storm-71c2"
T0 = 1800000000.0  # a multiple of the 600 s window: the whole storm falls in one window
DEFAULTS = load_config({}).section("storm_control")


LIB_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "actions", "lib")
# One process admitting 50 failures of one signature (distinct agents) once the test says go.
ADMIT_IN_A_PROCESS = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from synthralos_lib.healing import storm
from synthralos_lib.state.config import load_config
from synthralos_lib.state.store import RedisStore
store, index = RedisStore(sys.argv[2]), int(sys.argv[3])
config = dict(load_config({}).section("storm_control"), max_per_signature=7, max_per_agent=1000)
control = storm.StormControl(store, config, clock=lambda: 1800000000.0)
signed = storm.signature("error", "search backend returned 503")
store.get("bench.go")
print("ready", flush=True)
while not store.get("bench.go"):
    time.sleep(0.001)
print(json.dumps([control.admit("agent-%d-%d" % (index, n), signed, "r", 60)["decision"] for n in range(50)]))
"""


class FakeClock(object):
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now


class FingerprintTest(unittest.TestCase):
    def test_ids_numbers_hex_uuids_and_timestamps_are_stripped(self):
        one = ("Upstream 503 for request req_8f3k2x9 at 2026-12-07T10:00:01.250Z (trace 0x7fa3c1, "
               "span 9f8e7d6c5b4a, id 123e4567-e89b-12d3-a456-426614174000) after 3021 ms")
        two = ("upstream 502 for request req_00aa11b at 2026-12-08 23:59:59+01:00 (trace 0xdeadbeef, "
               "span 0123456789ab, id 00000000-0000-4000-8000-000000000000)   after 17 ms")
        self.assertEqual(storm.fingerprint(one),
                         "upstream # for request <id> at <time> (trace <hex>, span <hex>, id <uuid>) after # ms")
        self.assertEqual(storm.fingerprint(one), storm.fingerprint(two))
        self.assertEqual(storm.signature("error", one), storm.signature("error", two))

    def test_type_and_words_make_the_signature(self):
        text = "connection reset by peer"
        self.assertNotEqual(storm.signature("error", text)["signature"], storm.signature("llm_error", text)["signature"])
        self.assertNotEqual(storm.signature("error", text)["signature"],
                            storm.signature("error", "connection refused")["signature"])
        self.assertRegex(storm.signature("error", text)["signature"], r"^error:[0-9a-f]{16}$")

    def test_scrubbed_before_anything_else_and_capped(self):
        secret = "agent-api-key-9a8b7c"
        printed = storm.fingerprint("denied for key %s " % secret + "x " * 500, secrets=[secret])
        self.assertNotIn("9a8b7c", printed)
        self.assertNotIn("agent-api", printed)
        self.assertEqual(len(printed), storm.FINGERPRINT_CHARS)

    def test_the_error_text_comes_from_the_run_else_the_summary(self):
        self.assertEqual(storm.error_text({"error": {"message": "boom"}}, {"summary": "s"}), "boom")
        self.assertEqual(storm.error_text({"llm_error": "rate limited"}, {"summary": "s"}), "rate limited")
        self.assertEqual(storm.error_text({"error": "  ", "status": "timeout"}, {"summary": "timeout: status"}),
                         "timeout: status")
        self.assertEqual(storm.error_text(None, None), "")

    @settings(max_examples=300, deadline=None)
    @given(st.one_of(st.text(max_size=3000), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
    def test_any_text_gives_a_bounded_digit_free_fingerprint(self, text):
        printed = storm.fingerprint(text)
        self.assertIsInstance(printed, str)
        self.assertLessEqual(len(printed), storm.FINGERPRINT_CHARS)
        self.assertFalse(any(c in "0123456789" for c in printed), printed)
        self.assertEqual(printed, storm.fingerprint(text))
        self.assertRegex(storm.signature("error", text)["signature"], r"^error:[0-9a-f]{16}$")


class StormContract(StoreBackendMixin):
    maxDiff = None

    def setUp(self):
        if self.backend == "datastore":
            self.action_service = PagingDatastoreService()
        super(StormContract, self).setUp()
        self.clock = FakeClock()

    def control(self, **config):
        return storm.StormControl(self.make_store(), self.make_settings(storm_control=config).section("storm_control"),
                                  clock=self.clock)

    def signed(self, text="provider overloaded, request req_%d" % 1234):
        return storm.signature("llm_error", text)

    def test_budget_per_signature_across_agents_escalates_once_per_window(self):
        control = self.control(max_per_signature=3, max_per_agent=100, window_s=600)
        decisions = [control.admit("agent-%d" % n, self.signed(), "rec-%d" % n, 60) for n in range(6)]
        self.assertEqual([d["decision"] for d in decisions], ["admitted"] * 3 + ["over_budget"] * 3)
        self.assertEqual([d["escalate"] for d in decisions], [False] * 3 + [True, False, False])
        self.assertEqual(decisions[3]["budget"], {"scope": "signature", "count": 4, "limit": 3, "window_s": 600,
                                                  "window_start": T0})
        self.clock.now += 600  # the next window: a fresh budget, and a fresh escalation when spent again
        later = [control.admit("agent-%d" % n, self.signed(), "rec-%d" % n, 60) for n in range(10, 14)]
        self.assertEqual([(d["decision"], d["escalate"]) for d in later],
                         [("admitted", False)] * 3 + [("over_budget", True)])
        self.assertEqual(storm.totals(self.make_store()), {"coalesced": 0, "over_budget": 4, "budget_escalations": 2})

    def test_budget_per_agent_across_signatures(self):
        control = self.control(max_per_signature=100, max_per_agent=2)
        decisions = [control.admit("agent-1", storm.signature("error", "failure kind %s" % kind), "rec", 60)
                     for kind in "abc"]
        self.assertEqual([d["decision"] for d in decisions], ["admitted", "admitted", "over_budget"])
        self.assertEqual(decisions[2]["budget"]["scope"], "agent")
        self.assertTrue(decisions[2]["escalate"])
        # The signature budget of the turned-away failure was given back.
        other = control.admit("agent-2", storm.signature("error", "failure kind c"), "rec", 60)
        self.assertEqual(other["decision"], "admitted")
        self.assertEqual(self.make_store().get("storm.budget.sig.%s.%d" % (
            storm._digest(other["signature"]), int(T0 // 600))), 1)

    def test_an_identical_failure_joins_the_running_recovery_until_it_ends(self):
        control = self.control()
        first = control.admit("agent-1", self.signed(), "st2-exec-1", 60)
        self.assertEqual(first["decision"], "admitted")
        joined = control.admit("agent-1", self.signed("provider overloaded, request req_999"), "st2-exec-2", 60)
        self.assertEqual((joined["decision"], joined["joined_to"]),
                         ("coalesced", {"recovery_id": "st2-exec-1", "started_at": T0}))
        self.assertEqual(control.admit("agent-2", self.signed(), "st2-exec-3", 60)["decision"], "admitted")
        self.assertFalse(control.release(dict(first["marker"], token="not-the-owner")))
        self.assertTrue(control.release(first["marker"]))
        self.assertEqual(control.admit("agent-1", self.signed(), "st2-exec-4", 60)["decision"], "admitted")
        self.assertEqual(storm.totals(self.make_store())["coalesced"], 1)

    def test_off_admits_everything_and_touches_nothing(self):
        control = self.control(enabled=False, max_per_signature=1)
        self.assertEqual([control.admit("agent-1", self.signed(), "r", 60)["decision"] for _ in range(3)], ["off"] * 3)
        self.assertEqual(self.make_store().scan("storm."), [])

    def test_a_storm_of_1000_identical_failures(self):
        """1,000 identical failures (25 agents, ids and times differ) inside 10 s: at most the budgeted
        recoveries, one escalation, every failure recorded."""
        server = AgentPlatformServer(api_key=KEY).start()
        self.addCleanup(server.stop)
        settings = self.make_settings(agent_api={"base_url": server.base_url, "api_key": KEY, "timeout_s": 5},
                                      storm_control={"max_per_signature": 5, "max_per_agent": 10, "window_s": 600})
        store = self.make_store(**settings.values)
        client = AgentApiClient(settings.section("agent_api"))
        agents = ["agent-%02d" % n for n in range(25)]
        results = []
        for n in range(1000):
            agent = agents[n % len(agents)]
            run = {"id": "exec-%d" % n, "status": "failed", "input": "Summarise ticket %d" % n,
                   "error": "search backend returned 503 for request req_%06dab at 2026-12-07T10:00:%02dZ" % (n, n % 60)}
            server.add_execution(agent, run)
            payload = build_failure(agent, run["id"], run, "redis_stream", "%d-0" % n)["payload"]
            self.clock.now = T0 + n * 0.01  # 1,000 failures in 10 s
            results.append(start_recovery(
                agent, run["id"], payload["raw"], settings, store, client,
                detected={"failure_type": payload["failure_type"], "evidence": payload["evidence"]},
                max_history=100, recovery_id="st2-%d" % n, clock=self.clock, sleep=self.fail_on_sleep))
        outcomes = [r["outcome"] for r in results]
        self.assertEqual(outcomes.count("repaired"), 5)
        self.assertEqual(outcomes.count("over_budget"), 995)
        self.assertEqual(len(server.runs()), 5)  # the agent platform saw the budget, not the storm
        self.assertEqual(sum(1 for r in results if r["next"] == "escalate"), 1)
        self.assertEqual(results[5]["next"], "escalate")
        self.assertTrue(results[5]["escalation_reason"].startswith("recovery budget exceeded: this failure signature "
                                                                   "is allowed 5 recoveries per 600 s window"))
        self.assertEqual(len(set(r["storm"]["signature"] for r in results)), 1)
        self.assertEqual(set(r["recorded"]["error"] for r in results), {None})
        recorded = [entry for agent in agents for entry in get_failure_history(store, agent, limit=100)]
        self.assertEqual(len(recorded), 1000)
        self.assertEqual(sorted(e["execution_id"] for e in recorded), sorted("exec-%d" % n for n in range(1000)))
        self.assertEqual(storm.totals(store), {"coalesced": 0, "over_budget": 995, "budget_escalations": 1})
        self.assertEqual(recovery_stats.totals(store), {("error", "over_budget"): 995, ("error", "repaired"): 5})
        self.assertEqual(store.scan("storm.running."), [])  # every admitted recovery ended and let go
        collected = metrics.collect(settings, store)  # the recovery log is stamped with the real time
        self.assertEqual(collected["storm"], {"coalesced": 0, "over_budget": 995, "budget_escalations": 1})
        self.assertEqual(collected["failures"]["by_type"], {"error": 1000})
        lines = metrics.to_prometheus(collected).splitlines()
        self.assertIn("# TYPE synthralos_recovery_storm_total counter", lines)
        self.assertIn('synthralos_recovery_storm_total{reason="over_budget"} 995', lines)
        self.assertIn('synthralos_recovery_storm_total{reason="budget_escalations"} 1', lines)

    def fail_on_sleep(self, seconds):
        raise AssertionError("the first step of this plan has no wait; slept %s s" % seconds)


class StormOnDatastore(object):
    """Only in DatastoreStormTest."""

    def test_an_abandoned_marker_expires(self):
        store = DatastoreStore(self.action_service, clock=self.clock)
        control = storm.StormControl(store, DEFAULTS, clock=self.clock)
        self.assertEqual(control.admit("agent-1", self.signed(), "crashed", 60)["decision"], "admitted")
        self.clock.now += 30
        self.assertEqual(control.admit("agent-1", self.signed(), "r2", 60)["decision"], "coalesced")
        self.clock.now += 31  # the holder never released it: its TTL ends the coalescing
        self.assertEqual(control.admit("agent-1", self.signed(), "r3", 60)["decision"], "admitted")


class StormOnRedis(object):
    """Only in RedisStormTest."""

    def run_threads(self, work, threads=16):
        barrier = threading.Barrier(threads)
        decisions, errors = [], []

        def worker(index):
            try:
                barrier.wait(timeout=30)
                decisions.extend(work(index))
            except Exception as exc:  # reported below: a worker must not die silently
                errors.append(exc)

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=120)
        self.assertEqual(errors, [])
        return decisions

    def test_the_budget_holds_under_concurrency(self):
        def work(index):
            control = self.control(max_per_signature=7, max_per_agent=100)
            return [control.admit("agent-%d-%d" % (index, n), self.signed(), "r", 60) for n in range(25)]

        decisions = self.run_threads(work)
        self.assertEqual(len(decisions), 400)
        kinds = [d["decision"] for d in decisions]
        self.assertEqual((kinds.count("admitted"), kinds.count("over_budget")), (7, 393))
        self.assertEqual(sum(1 for d in decisions if d["escalate"]), 1)
        self.assertEqual(storm.totals(self.make_store()), {"coalesced": 0, "over_budget": 393, "budget_escalations": 1})

    def test_one_recovery_per_agent_and_signature_under_concurrency(self):
        def work(index):
            control = self.control(max_per_signature=1000, max_per_agent=1000)
            return [control.admit("agent-1", self.signed(), "r-%d-%d" % (index, n), 60) for n in range(10)]

        decisions = self.run_threads(work)
        kinds = [d["decision"] for d in decisions]
        self.assertEqual((kinds.count("admitted"), kinds.count("coalesced")), (1, 159))
        # The failures that raced for the marker and lost gave their budget back.
        window = int(T0 // 600)
        store = self.make_store()
        self.assertEqual(store.get("storm.budget.sig.%s.%d" % (storm._digest(self.signed()["signature"]), window)), 1)

    def test_the_budget_holds_across_processes(self):
        """As st2 runs it: every action execution its own process with its own Redis client."""
        procs = [subprocess.Popen([sys.executable, "-c", ADMIT_IN_A_PROCESS, LIB_DIR, self.redis.url, str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
                 for i in range(6)]
        for proc in procs:
            self.addCleanup(proc.kill)
            self.assertEqual(proc.stdout.readline().strip(), "ready", proc.stderr.read() if proc.poll() else "")
        self.make_store().set("bench.go", True)  # all six are connected and waiting: start them together
        kinds = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 0, err)
            kinds.extend(json.loads(out))
        self.assertEqual((len(kinds), kinds.count("admitted"), kinds.count("over_budget")), (300, 7, 293))

    def test_redis_down_fails_open(self):
        from synthralos_lib.state.store import RedisStore
        from synthralos_tests.http_server import free_port

        control = storm.StormControl(RedisStore("redis://127.0.0.1:%d/0" % free_port()), DEFAULTS, clock=self.clock)
        with self.assertLogs("synthralos_lib.healing.storm", level="WARNING"):
            decision = control.admit("agent-1", self.signed(), "r", 60)
        self.assertEqual(decision["decision"], "unavailable")
        self.assertTrue(decision["reason"].startswith("redis GET failed: "), decision["reason"])


on_both_backends(StormContract, "{backend}StormTest", datastore=StormOnDatastore, redis=StormOnRedis)


if __name__ == "__main__":
    unittest.main()
