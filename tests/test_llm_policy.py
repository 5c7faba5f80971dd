"""The retry/reroute decision function: examples and hypothesis properties."""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import math
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from synthralos_lib.llm import errors as E
from synthralos_lib.llm import policy as P

CHAIN = ["a", "b", "c"]
NO_RETRY_SAME = [E.QUOTA_EXHAUSTED, E.AUTH_CONFIG, E.CONTEXT_OVERFLOW, E.CONTENT_POLICY, E.BAD_REQUEST]


def fail(target, klass, retry_after=None):
    return {"target": target, "ok": False, "error_class": klass, "retry_after_s": retry_after}


def policy(**overrides):
    return P.make_policy(overrides=overrides)


class ExampleTest(unittest.TestCase):
    def test_first_attempt_takes_the_first_usable_target(self):
        self.assertEqual(P.decide([], None, policy(), CHAIN, rand=0.5),
                         {"action": "next_target", "target": "a", "delay_s": 0.0, "wait_s": 0,
                          "reason": "first attempt", "error_class": None, "alert": False})
        self.assertEqual(P.decide([], None, policy(), CHAIN, skip={"a"})["target"], "b")
        self.assertEqual(P.decide([], None, policy(), CHAIN, skip=set(CHAIN))["action"], "give_up")
        self.assertEqual(P.decide([], None, policy(), [])["action"], "give_up")

    def test_success_is_done(self):
        d = P.decide([], {"target": "a", "ok": True}, policy(), CHAIN)
        self.assertEqual((d["action"], d["target"], d["wait_s"]), ("done", "a", 0))

    def test_transient_backs_off_exponentially_then_switches(self):
        pol = policy(base_delay_s=2, max_delay_s=5, jitter="none", max_attempts=4)
        history = []
        delays = []
        for _ in range(3):
            d = P.decide(history, fail("a", E.TRANSIENT), pol, CHAIN)
            self.assertEqual((d["action"], d["target"]), ("retry", "a"))
            delays.append(d["delay_s"])
            history.append(fail("a", E.TRANSIENT))
        self.assertEqual(delays, [2.0, 4.0, 5.0])  # 2, 4, then capped at 5
        d = P.decide(history, fail("a", E.TRANSIENT), pol, CHAIN)
        self.assertEqual((d["action"], d["target"], d["reason"]),
                         ("next_target", "b", "transient on a, 4 of 4 attempts used; next target b"))

    def test_full_and_equal_jitter(self):
        pol = policy(base_delay_s=4, jitter="full")
        self.assertEqual(P.decide([], fail("a", E.TRANSIENT), pol, CHAIN, rand=0.25)["delay_s"], 1.0)
        pol = policy(base_delay_s=4, jitter="equal")
        self.assertEqual(P.decide([], fail("a", E.TRANSIENT), pol, CHAIN, rand=0.25)["delay_s"], 2.5)

    def test_retry_after_wins_when_under_the_cap(self):
        d = P.decide([], fail("a", E.RATE_LIMITED, retry_after=7.2), policy(max_delay_s=1), CHAIN, rand=0.0)
        self.assertEqual((d["action"], d["target"], d["delay_s"], d["wait_s"]), ("retry", "a", 7.2, 8))
        self.assertEqual(d["reason"], "rate_limited: provider asked to wait 7.2s")

    def test_retry_after_over_the_cap_moves_on(self):
        d = P.decide([], fail("a", E.RATE_LIMITED, retry_after=600), policy(retry_after_cap_s=120), CHAIN)
        self.assertEqual((d["action"], d["target"], d["delay_s"]), ("next_target", "b", 0.0))

    def test_retry_after_over_the_cap_with_no_target_left_gives_up_at_once(self):
        # A wait the policy will not sit out is not worked around by a backoff that ends in the same 429.
        d = P.decide([], fail("c", E.RATE_LIMITED, retry_after=600), policy(jitter="none", base_delay_s=3), ["c"])
        self.assertEqual((d["action"], d["target"], d["delay_s"], d["error_class"]),
                         ("give_up", None, 0.0, E.RATE_LIMITED))
        self.assertEqual(d["reason"], "rate_limited: the provider's wait 600s is over the 120s cap, c cools for it; "
                                      "no target left")

    def test_overloaded_gets_short_retries(self):
        pol = policy(max_attempts=5, overloaded_max_attempts=2, jitter="none")
        d1 = P.decide([], fail("a", E.OVERLOADED), pol, CHAIN)
        d2 = P.decide([fail("a", E.OVERLOADED)], fail("a", E.OVERLOADED), pol, CHAIN)
        self.assertEqual([d1["action"], d2["action"], d2["target"]], ["retry", "next_target", "b"])

    def test_quota_and_auth_switch_at_once_and_alert(self):
        for klass in (E.QUOTA_EXHAUSTED, E.AUTH_CONFIG):
            d = P.decide([], fail("a", klass), policy(), CHAIN)
            self.assertEqual((d["action"], d["target"], d["alert"], d["wait_s"]), ("next_target", "b", True, 0))

    def test_context_and_content_switch_without_alert(self):
        for klass in (E.CONTEXT_OVERFLOW, E.CONTENT_POLICY):
            d = P.decide([], fail("a", klass), policy(), CHAIN)
            self.assertEqual((d["action"], d["target"], d["alert"]), ("next_target", "b", False))

    def test_bad_request_gives_up(self):
        d = P.decide([], fail("a", E.BAD_REQUEST), policy(), CHAIN)
        self.assertEqual((d["action"], d["target"], d["reason"]),
                         ("give_up", None, "bad_request: the request itself is invalid"))

    def test_invalid_output_regenerates_at_once_then_switches(self):
        pol = policy(invalid_output_max_attempts=2)
        d1 = P.decide([], fail("a", E.INVALID_OUTPUT), pol, CHAIN)
        d2 = P.decide([fail("a", E.INVALID_OUTPUT)], fail("a", E.INVALID_OUTPUT), pol, CHAIN)
        self.assertEqual((d1["action"], d1["delay_s"]), ("retry", 0.0))
        self.assertEqual((d2["action"], d2["target"]), ("next_target", "b"))

    def test_open_circuit_on_current_target_switches(self):
        d = P.decide([], fail("a", E.TRANSIENT), policy(), CHAIN, skip={"a", "b"})
        self.assertEqual((d["action"], d["target"]), ("next_target", "c"))

    def test_exhausted_chain_gives_up(self):
        d = P.decide([fail("a", E.QUOTA_EXHAUSTED), fail("b", E.AUTH_CONFIG)], fail("c", E.QUOTA_EXHAUSTED),
                     policy(), CHAIN)
        self.assertEqual((d["action"], d["reason"]), ("give_up", "quota_exhausted on c; no target left"))

    def test_max_targets_bounds_the_chain(self):
        d = P.decide([], fail("a", E.QUOTA_EXHAUSTED), policy(max_targets=1), CHAIN)
        self.assertEqual(d["action"], "give_up")

    def test_make_policy_layers_and_validates(self):
        pol = P.make_policy({"max_attempts": 4, "jitter": "equal"}, {"max_targets": 2}, {"base_delay_s": 0.5})
        self.assertEqual(pol, dict(P.DEFAULT_POLICY, max_attempts=4, jitter="equal", max_targets=2, base_delay_s=0.5,
                                   max_delay_s=60.0, retry_after_cap_s=120.0))
        for bad, message in [
            ({"nope": 1}, "unknown policy keys: nope"),
            ({"max_attempts": 0}, "policy.max_attempts must be at least 1"),
            ({"max_attempts": True}, "policy.max_attempts must be an integer"),
            ({"base_delay_s": -1}, "policy.base_delay_s must be at least 0"),
            ({"max_delay_s": float("nan")}, "policy.max_delay_s must be a finite number (not NaN or Infinity)"),
            ({"retry_after_cap_s": float("inf")}, "policy.retry_after_cap_s must be a finite number (not NaN or Infinity)"),
            ({"max_delay_s": "5"}, "policy.max_delay_s must be a number"),
            ({"jitter": "gaussian"}, "policy.jitter must be one of full, equal, none"),
        ]:
            with self.subTest(bad=bad):
                with self.assertRaises(P.PolicyError) as ctx:
                    P.make_policy(overrides=bad)
                self.assertIn(message, str(ctx.exception))

    def test_whole_seconds_rounds_up(self):
        self.assertEqual([P.whole_seconds(x) for x in (0, 0.0001, 1, 1.2, 59.999, -3)], [0, 1, 1, 2, 60, 0])


policies = st.builds(
    lambda base, cap, ra_cap, jitter, attempts, targets, over, inval: P.make_policy(overrides={
        "base_delay_s": base, "max_delay_s": cap, "retry_after_cap_s": ra_cap, "jitter": jitter,
        "max_attempts": attempts, "max_targets": targets, "overloaded_max_attempts": over,
        "invalid_output_max_attempts": inval}),
    st.floats(0, 100, allow_nan=False), st.floats(0, 300, allow_nan=False), st.floats(0, 300, allow_nan=False),
    st.sampled_from(P.JITTERS), st.integers(1, 8), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4),
)
chains = st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), min_size=1, max_size=5, unique=True)
classes = st.sampled_from(E.ERROR_CLASSES)
retry_afters = st.one_of(st.none(), st.floats(0, 1000, allow_nan=False))
rands = st.floats(0, 1, allow_nan=False)


class PropertyTest(unittest.TestCase):
    @settings(max_examples=150, deadline=None)
    @given(policies, st.integers(1, 200), rands)
    def test_backoff_is_within_zero_and_the_cap(self, pol, failures, rand):
        delay = P.backoff_delay(failures, pol, rand)
        self.assertGreaterEqual(delay, 0.0)
        self.assertLessEqual(delay, pol["max_delay_s"])

    @settings(max_examples=150, deadline=None)
    @given(policies, st.integers(1, 60))
    def test_backoff_ceiling_never_shrinks(self, pol, failures):
        pol = dict(pol, jitter="none")
        self.assertLessEqual(P.backoff_delay(failures, pol, 1), P.backoff_delay(failures + 1, pol, 1))

    @settings(max_examples=200, deadline=None)
    @given(policies, chains, classes, retry_afters, rands, st.data())
    def test_every_decision_is_well_formed(self, pol, chain, klass, retry_after, rand, data):
        current = data.draw(st.sampled_from(chain))
        earlier = data.draw(st.lists(st.sampled_from(chain[: chain.index(current) + 1]), max_size=6))
        history = [fail(t, klass) for t in earlier]
        skip = set(data.draw(st.lists(st.sampled_from(chain), max_size=3)))
        d = P.decide(history, fail(current, klass, retry_after), pol, chain, skip, rand)
        self.assertIn(d["action"], ("retry", "next_target", "give_up"))
        self.assertGreaterEqual(d["delay_s"], 0.0)
        self.assertLessEqual(d["delay_s"], max(pol["max_delay_s"], pol["retry_after_cap_s"]))
        self.assertIsInstance(d["wait_s"], int)
        self.assertEqual(d["wait_s"], math.ceil(d["delay_s"]))  # whole seconds, never shorter
        if d["action"] == "retry":
            self.assertNotIn(klass, NO_RETRY_SAME)
            self.assertEqual(d["target"], current)
            honoured = retry_after is not None and retry_after <= pol["retry_after_cap_s"] and d["delay_s"] == retry_after
            if not honoured:
                self.assertLessEqual(d["delay_s"], pol["max_delay_s"])
        if d["action"] == "next_target":
            self.assertIn(d["target"], chain)
            self.assertNotIn(d["target"], skip)
            self.assertNotIn(d["target"], set(earlier) | {current})
            self.assertEqual(d["delay_s"], 0.0)
        if d["action"] == "give_up":
            self.assertIsNone(d["target"])
        self.assertEqual(d["alert"], klass in (E.QUOTA_EXHAUSTED, E.AUTH_CONFIG))

    @settings(max_examples=150, deadline=None)
    @given(policies, chains, st.lists(classes, min_size=1, max_size=5), rands)
    def test_a_request_always_ends_within_its_budget(self, pol, chain, failing_classes, rand):
        """Feed failures until the decision gives up: bounded per target and overall."""
        history, calls = [], {}
        d = P.decide(history, None, pol, chain, rand=rand)
        steps = 0
        while d["action"] in ("retry", "next_target"):
            target = d["target"]
            calls[target] = calls.get(target, 0) + 1
            outcome = fail(target, failing_classes[steps % len(failing_classes)], None)
            d = P.decide(history, outcome, pol, chain, rand=rand)
            history.append(outcome)
            steps += 1
            self.assertLessEqual(steps, pol["max_attempts"] * len(chain))
        self.assertEqual(d["action"], "give_up")
        self.assertTrue(all(n <= pol["max_attempts"] for n in calls.values()))
        self.assertLessEqual(len(calls), pol["max_targets"])

    @settings(max_examples=200, deadline=None)
    @given(policies, chains, st.sampled_from(NO_RETRY_SAME), retry_afters, rands)
    def test_non_retryable_classes_never_retry(self, pol, chain, klass, retry_after, rand):
        d = P.decide([], fail(chain[0], klass, retry_after), pol, chain, rand=rand)
        self.assertNotEqual(d["action"], "retry")
        if klass == E.BAD_REQUEST:
            self.assertEqual(d["action"], "give_up")


if __name__ == "__main__":
    unittest.main()
