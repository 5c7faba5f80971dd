"""synthralos_lib.backoff: the one capped exponential backoff, and that nothing else computes one."""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import os
import re
import time
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from synthralos_lib import backoff
from synthralos_lib.backoff import EQUAL, FULL, NONE, capped_exponential

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# n -> wait for base 0.5 s, cap 30 s, doubling (the stream sensor's restart loop):
# 0.5, 1, 2, 4, 8, 16, then the cap.
CEILINGS = [(0, 0.0), (-3, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 30.0),
            (8, 30.0), (64, 30.0), (1100, 30.0), (10 ** 18, 30.0)]


class CeilingTest(unittest.TestCase):
    def test_no_jitter_doubles_from_the_base_up_to_the_cap(self):
        for n, expected in CEILINGS:
            with self.subTest(n=n):
                self.assertEqual(capped_exponential(n, 0.5, 30.0), expected)

    def test_the_multiplier_is_configurable(self):
        # cron: 60 s (in ms), x3, capped at 1 h
        table = [(1, 60000.0), (2, 180000.0), (3, 540000.0), (4, 1620000.0), (5, 3600000.0), (40, 3600000.0)]
        for n, expected in table:
            with self.subTest(n=n):
                self.assertEqual(capped_exponential(n, 60000, 3600000, multiplier=3), expected)
        self.assertEqual([capped_exponential(n, 7.0, 100.0, multiplier=1) for n in (1, 2, 50)], [7.0] * 3)

    def test_a_base_of_zero_never_waits(self):
        self.assertEqual([capped_exponential(n, 0, 10.0, jitter=j) for n in (1, 5, 10 ** 6) for j in (NONE, FULL, EQUAL)],
                         [0.0] * 9)

    def test_a_long_streak_is_the_cap_at_once(self):
        started = time.perf_counter()
        for n in (1024, 1025, 10 ** 9, 10 ** 18):
            for multiplier in (2, 2.5, 1000):
                self.assertEqual(capped_exponential(n, 0.001, 86400000, multiplier=multiplier), 86400000.0)
        self.assertLess(time.perf_counter() - started, 5.0)  # no big-integer power: seconds would mean one

    def test_an_unknown_jitter_is_refused(self):
        with self.assertRaisesRegex(ValueError, "jitter must be one of full, equal, none"):
            capped_exponential(1, 1.0, 2.0, jitter="decorrelated")


class JitterTest(unittest.TestCase):
    # (jitter, draw, wait) for a ceiling of 8 s (n=4, base 1, cap 30)
    TABLE = [
        (NONE, 0.0, 8.0), (NONE, 0.7, 8.0),
        (FULL, 0.0, 0.0), (FULL, 0.25, 2.0), (FULL, 1.0, 8.0),
        (EQUAL, 0.0, 4.0), (EQUAL, 0.5, 6.0), (EQUAL, 1.0, 8.0),
        (FULL, -2.0, 0.0), (FULL, 7.0, 8.0), (EQUAL, -1.0, 4.0), (EQUAL, 3.0, 8.0),  # a draw outside [0, 1] is clamped
    ]

    def test_the_draw_places_the_wait_in_the_jitter_range(self):
        for jitter, draw, expected in self.TABLE:
            with self.subTest(jitter=jitter, draw=draw):
                self.assertEqual(capped_exponential(4, 1.0, 30.0, jitter=jitter, draw=draw), expected)

    def test_jitter_applies_to_the_capped_ceiling(self):
        self.assertEqual(capped_exponential(20, 1.0, 30.0, jitter=FULL, draw=0.5), 15.0)
        self.assertEqual(capped_exponential(20, 1.0, 30.0, jitter=EQUAL, draw=0.0), 15.0)

    def test_without_a_draw_random_places_it(self):
        waits = [capped_exponential(3, 1.0, 30.0, jitter=FULL) for _ in range(200)]
        self.assertTrue(all(0.0 <= w <= 4.0 for w in waits))
        self.assertGreater(len(set(waits)), 1)
        self.assertTrue(all(2.0 <= capped_exponential(3, 1.0, 30.0, jitter=EQUAL) <= 4.0 for _ in range(200)))


class PropertyTest(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.integers(-5, 10 ** 6), st.floats(0, 1e6), st.floats(0, 1e9), st.sampled_from(backoff.JITTERS),
           st.floats(-1, 2), st.floats(1, 100))
    def test_every_wait_is_between_zero_and_the_cap(self, n, base, cap, jitter, draw, multiplier):
        wait = capped_exponential(n, base, cap, jitter=jitter, draw=draw, multiplier=multiplier)
        self.assertGreaterEqual(wait, 0.0)
        self.assertLessEqual(wait, cap)
        low = {NONE: 1.0, FULL: 0.0, EQUAL: 0.5}[jitter]
        if n >= 1:
            self.assertGreaterEqual(wait, low * min(base, cap))

    @settings(max_examples=200, deadline=None)
    @given(st.integers(0, 3000), st.floats(0, 1e6), st.floats(0, 1e9), st.floats(1, 100))
    def test_the_ceiling_never_shrinks(self, n, base, cap, multiplier):
        self.assertLessEqual(capped_exponential(n, base, cap, multiplier=multiplier),
                             capped_exponential(n + 1, base, cap, multiplier=multiplier))


# What a hand-written backoff looks like: a power of a failure/attempt count, a doubled delay,
# a uniform jitter.
HAND_WRITTEN = re.compile(r"\*\*\s*\(?\s*(min\()?\s*[\w.]*(attempt|failure|crash|retr|exponent|streak)"
                          r"|\bdelay\s*\*\s*2\b|random\.uniform\(")


class OneHomeTest(unittest.TestCase):
    def test_no_product_code_computes_its_own_backoff(self):
        found = []
        for top in ("actions", "sensors", "bench"):
            for folder, _, files in os.walk(os.path.join(ROOT, top)):
                for name in files:
                    path = os.path.join(folder, name)
                    if not name.endswith(".py") or path.endswith(os.path.join("synthralos_lib", "backoff.py")):
                        continue
                    with open(path, encoding="utf-8") as handle:
                        for number, line in enumerate(handle, 1):
                            if HAND_WRITTEN.search(line.split("#")[0]):
                                found.append("%s:%d: %s" % (os.path.relpath(path, ROOT), number, line.strip()))
        self.assertEqual(found, [], "use synthralos_lib.backoff.capped_exponential")

    def test_the_pattern_finds_the_old_hand_written_forms(self):
        for line in ("delay = min(cap, base * (2 ** (attempt - 1)))", "0.5 * 2 ** min(crashes - 1, 6)",
                     "value = base_ms * multiplier ** exponent", "delay = min(delay * 2, cap)",
                     "time.sleep(random.uniform(0, pause))", "base * (2.0 ** exponent)",
                     "self.backoff_initial_s * (2 ** (self._failures - 1))"):
            with self.subTest(line=line):
                self.assertIsNotNone(HAND_WRITTEN.search(line))


if __name__ == "__main__":
    unittest.main()
