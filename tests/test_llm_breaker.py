"""Circuit breakers on the pack's store, run against both backends."""

import threading
import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin

from synthralos_lib.llm import errors as E
from synthralos_lib.llm.breaker import Breakers

SETTINGS = {"window_s": 60, "min_requests": 4, "failure_rate_threshold": 0.5, "cooldown_s": 30, "max_cooldown_s": 100}


class Clock(object):
    def __init__(self, now=1000000.0):
        self.now = now

    def __call__(self):
        return self.now


class BreakerContract(StoreBackendMixin):
    def setUp(self):
        super(BreakerContract, self).setUp()
        self.clock = Clock()
        self.breakers = Breakers(self.make_store(), SETTINGS, clock=self.clock)

    def other_process(self):
        """A second Breakers over a fresh store object: shares state only through the backend."""
        return Breakers(self.make_store(), SETTINGS, clock=self.clock)

    def test_closed_until_the_failure_rate_crosses_the_threshold(self):
        b = self.breakers
        self.assertEqual(b.record("a", True)["state"], "closed")
        self.assertEqual(b.record("a", False, E.TRANSIENT)["state"], "closed")
        self.assertEqual(b.record("a", True)["state"], "closed")  # 1/3, under min_requests
        # 2/4 = 0.5, but 4 outcomes are no evidence: a 30 % target shows 2/4 a third of the time.
        self.assertEqual(b.record("a", False, E.TRANSIENT)["state"], "closed")
        for _ in range(4):
            self.assertEqual(b.record("a", False, E.TRANSIENT)["state"], "closed")  # up to 6/8
        status = b.record("a", False, E.TRANSIENT)  # 7/9: >= 0.5 with 95 % confidence
        self.assertEqual(status, {"target": "a", "state": "open", "reason": "failure rate 7/9", "open_for_s": 30.0,
                                  "cooldown_s": 30, "cooling_for_s": 0.0, "window_requests": 9,
                                  "window_failures": 7, "failure_rate": 0.7778})
        self.assertEqual(b.try_acquire("a"), (False, "circuit open (failure rate 7/9) for 30.0s more"))
        # Shared: another process sees the open circuit.
        self.assertEqual(self.other_process().try_acquire("a")[0], False)

    def test_the_rate_rule(self):
        from synthralos_lib.llm.breaker import rate_reaches

        self.assertEqual([n for n in range(1, 12) if rate_reaches(n, n, 0.5)][0], 3)  # a full outage
        self.assertEqual([rate_reaches(f, 20, 0.5) for f in (10, 13, 14)], [False, False, True])
        self.assertEqual([rate_reaches(f, 1000, 0.5) for f in (499, 530)], [False, True])  # the plain rate, nearly
        self.assertEqual((rate_reaches(4, 5, 1.0), rate_reaches(5, 5, 1.0)), (False, True))
        self.assertEqual((rate_reaches(0, 5, 0.0), rate_reaches(0, 0, 0.5)), (True, False))

    def test_a_short_run_below_the_threshold_does_not_open(self):
        b = self.breakers
        for _ in range(20):
            b.record("a", True)
        for _ in range(6):
            self.assertEqual(b.record("a", False, E.TRANSIENT)["state"], "closed")  # 6 in a row, 6/26 < 0.5
        status = b.status("a")
        self.assertEqual((status["state"], status["window_failures"], status["failure_rate"]), ("closed", 6, 0.2308))

    def test_thirty_percent_failures_in_runs_of_three_stay_closed(self):
        states = set()
        for i in range(100):
            self.clock.now += 0.25  # 4 calls a second: the 60 s window holds all of them
            failed = i % 10 >= 7  # 7 successes, then 3 failures in a row (> min_requests - 1)
            states.add(self.breakers.record("a", not failed, E.TRANSIENT if failed else None)["state"])
        self.assertEqual(states, {"closed"})
        self.assertEqual(self.breakers.status("a")["failure_rate"], 0.3)

    def test_a_full_outage_opens_within_min_requests_calls(self):
        b = self.breakers
        states = [b.record("a", False, E.TRANSIENT)["state"] for _ in range(SETTINGS["min_requests"])]
        self.assertEqual(states, ["closed"] * (SETTINGS["min_requests"] - 1) + ["open"])
        self.assertEqual(b.status("a")["reason"], "failure rate 4/4")

    def test_a_full_outage_opens_within_min_requests_calls_at_any_threshold(self):
        for threshold in (0.5, 0.8, 1.0):
            breakers = Breakers(self.make_store(), dict(SETTINGS, min_requests=3, failure_rate_threshold=threshold),
                                clock=self.clock)
            target = "t-%s" % threshold
            states = [breakers.record(target, False, E.TRANSIENT)["state"] for _ in range(3)]
            self.assertEqual(states, ["closed", "closed", "open"], threshold)
            self.assertEqual(breakers.status(target)["reason"], "failure rate 3/3")

    def test_an_outage_after_a_healthy_stretch_opens_on_an_implausible_run(self):
        b = self.breakers
        for _ in range(20):
            b.record("a", True)
        states = [b.record("a", False, E.TRANSIENT)["state"] for _ in range(10)]
        self.assertEqual(states, ["closed"] * 9 + ["open"])  # 10/30: the rate lags, the run does not
        self.assertEqual(b.status("a")["reason"], "10 failures in a row")

    def test_the_run_rule(self):
        from synthralos_lib.llm.breaker import run_needed

        self.assertEqual([run_needed(4, t) for t in (0.0, 0.5, 0.8)], [4, 10, 31])
        self.assertEqual((run_needed(12, 0.5), run_needed(4, 1.0)), (12, float("inf")))

    def test_request_errors_do_not_count_against_the_target(self):
        b = self.breakers
        for klass in (E.BAD_REQUEST, E.CONTEXT_OVERFLOW, E.CONTENT_POLICY, E.BAD_REQUEST):
            b.record("a", False, klass)
        status = b.status("a")
        self.assertEqual((status["state"], status["window_requests"], status["window_failures"]), ("closed", 4, 0))

    def test_old_outcomes_leave_the_window(self):
        b = self.breakers
        for _ in range(3):
            b.record("a", False, E.TRANSIENT)
        self.clock.now += 61
        self.assertEqual(b.record("a", False, E.TRANSIENT)["state"], "closed")  # only 1 in the window now
        self.assertEqual(b.status("a")["window_requests"], 1)

    def test_quota_and_auth_open_at_once_for_max_cooldown(self):
        for klass in (E.QUOTA_EXHAUSTED, E.AUTH_CONFIG):
            status = self.breakers.record("t-" + klass, False, klass)
            self.assertEqual((status["state"], status["reason"], status["cooldown_s"], status["open_for_s"]),
                             ("open", klass, 100, 100.0))

    def test_half_open_allows_exactly_one_probe(self):
        b = self.breakers
        b.record("a", False, E.AUTH_CONFIG)
        self.clock.now += 100
        self.assertEqual(b.status("a")["state"], "half_open")
        self.assertEqual(b.try_acquire("a"), (True, "half-open probe"))
        self.assertEqual(self.other_process().try_acquire("a"),
                         (False, "circuit half-open and another caller holds the probe"))
        self.assertEqual(b.try_acquire("a")[0], False)

    def test_probe_success_closes_and_clears(self):
        b = self.breakers
        for _ in range(4):
            b.record("a", False, E.TRANSIENT)
        self.clock.now += 30
        self.assertEqual(b.try_acquire("a"), (True, "half-open probe"))
        status = b.record("a", True)
        self.assertEqual((status["state"], status["window_requests"]), ("closed", 0))
        self.assertEqual(b.try_acquire("a"), (True, "closed"))

    def test_opening_and_closing_are_logged(self):
        b = self.breakers
        with self.assertLogs("synthralos_lib.llm.breaker", level="INFO") as logs:
            for _ in range(4):
                b.record("a", False, E.TRANSIENT)
            self.clock.now += 30
            b.try_acquire("a")
            b.record("a", True)
        self.assertEqual([r.getMessage() for r in logs.records], [
            "[Reroute] circuit of a opened for %ds: failure rate 4/4" % SETTINGS["cooldown_s"],
            "[Reroute] circuit of a closed: the half-open probe succeeded",
        ])

    def test_a_failed_probe_reopens_for_half_the_time_open_so_far(self):
        b = self.breakers
        for _ in range(4):
            b.record("a", False, E.TRANSIENT)
        opened_at = self.clock.now
        cooldowns, probe_times = [], []
        for i in range(7):
            self.clock.now += b.status("a")["open_for_s"]
            probe_times.append(self.clock.now - opened_at)
            # Each probe may come from another process: the episode's start lives in the store.
            breakers = self.other_process() if i % 2 else b
            self.assertEqual(breakers.try_acquire("a"), (True, "half-open probe"))
            cooldowns.append(breakers.record("a", False, E.OVERLOADED)["cooldown_s"])
        # cooldown_s (30) while the outage is short, then half the time open so far, capped at 100.
        self.assertEqual(cooldowns, [30, 30, 45, 67.5, 100, 100, 100])
        self.assertEqual(probe_times, [30, 60, 90, 135, 202.5, 302.5, 402.5])

    def test_the_probe_cadence(self):
        from synthralos_lib.llm.breaker import probe_cooldown

        limits = {"cooldown_s": 30, "max_cooldown_s": 600}
        self.assertEqual([probe_cooldown(s, limits) for s in (0, 30, 60, 61, 90, 1199, 5000)],
                         [30, 30, 30, 30.5, 45, 599.5, 600])
        self.assertEqual(probe_cooldown(-5, limits), 30)  # a clock step backwards

    def test_a_short_outage_is_probed_every_cooldown_and_closes_on_the_first_good_probe(self):
        b = self.breakers
        for _ in range(4):
            b.record("a", False, E.TRANSIENT)
        self.clock.now += 30
        self.assertTrue(b.try_acquire("a")[0])
        b.record("a", False, E.TRANSIENT)  # still down at the first probe
        self.assertEqual(b.try_acquire("a"), (False, "circuit open (transient) for 30.0s more"))
        self.clock.now += 30  # back up: the second probe comes one cooldown later, not two
        self.assertTrue(b.try_acquire("a")[0])
        self.assertEqual(b.record("a", True)["state"], "closed")
        # A later outage is a new episode: it starts again at cooldown_s.
        for _ in range(4):
            b.record("a", False, E.TRANSIENT)
        self.clock.now += 30
        b.try_acquire("a")
        self.assertEqual(b.record("a", False, E.TRANSIENT)["cooldown_s"], 30)

    def test_quota_probe_failure_stays_open_for_max_cooldown(self):
        b = self.breakers
        b.record("a", False, E.QUOTA_EXHAUSTED)
        self.clock.now += 100
        self.assertTrue(b.try_acquire("a")[0])
        self.assertEqual(b.record("a", False, E.QUOTA_EXHAUSTED)["cooldown_s"], 100)

    def test_cooldown_after_rate_limit_skips_new_requests_but_not_the_waiting_one(self):
        b = self.breakers
        status = b.record("a", False, E.RATE_LIMITED, cool_s=7)
        self.assertEqual((status["state"], status["cooling_for_s"]), ("closed", 7.0))
        self.assertEqual(b.try_acquire("a"), (False, "cooling down (rate_limited) for 7.0s more"))
        self.assertEqual(b.try_acquire("a", retrying=True), (True, "closed"))
        self.clock.now += 7
        self.assertEqual(b.try_acquire("a"), (True, "closed"))

    def test_targets_are_independent_and_reset_closes(self):
        b = self.breakers
        b.record("a", False, E.QUOTA_EXHAUSTED)
        self.assertEqual(b.status("b")["state"], "closed")
        b.reset("a")
        self.assertEqual(b.status("a")["state"], "closed")

    def test_concurrent_half_open_probes(self):
        self.breakers.record("a", False, E.AUTH_CONFIG)
        self.clock.now += 100
        wins = []
        processes = [self.other_process() for _ in range(8)]

        def probe(breakers):
            wins.append(breakers.try_acquire("a")[0])

        threads = [threading.Thread(target=probe, args=(p,)) for p in processes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.backend == "redis":
            self.assertEqual(sorted(wins), [False] * 7 + [True])  # SET NX: exactly one
        else:
            self.assertGreaterEqual(wins.count(True), 1)  # datastore: best-effort, at least one


class RedisDownBreakerTest(StoreBackendMixin, unittest.TestCase):
    """redis.url set, Redis killed: the breakers fail open (every target usable), nothing raises."""

    backend = "redis"

    def test_breakers_fail_open_when_redis_is_down(self):
        from synthralos_tests.redis_server import RedisServer

        server = RedisServer().start()
        try:
            config = {"redis": {"url": server.url, "key_prefix": "down:"}}
            from synthralos_lib.state.config import load_config
            from synthralos_lib.state.store import get_store

            breakers = Breakers(get_store(load_config(config), self.action_service), SETTINGS)
            breakers.record("a", False, E.AUTH_CONFIG)
            self.assertEqual(breakers.try_acquire("a")[0], False)  # up: open
            server.kill()
            breakers = Breakers(get_store(load_config(config), self.action_service), SETTINGS)
            self.assertEqual(breakers.try_acquire("a"), (True, "breaker store unavailable: fail open"))
            self.assertTrue(breakers.degraded.startswith("breaker store unavailable, breakers fail open: redis "))
            status = breakers.record("a", False, E.TRANSIENT)
            self.assertEqual((status["state"], status["reason"]), ("unknown", breakers.degraded))
        finally:
            server.stop()


class BreakerOnRedis(object):
    """Only in RedisBreakerTest."""

    def test_state_lives_in_redis_under_the_prefix(self):
        self.breakers.record("a", False, E.QUOTA_EXHAUSTED)
        self.assertEqual(sorted(self.redis.client().keys("synthralos:breaker.*")),
                         ["synthralos:breaker.a", "synthralos:breaker.a.outcomes"])


on_both_backends(BreakerContract, "{backend}BreakerTest", redis=BreakerOnRedis)


if __name__ == "__main__":
    unittest.main()
