"""healing/recovery.py: the verdict a synthralos.agent_failure trigger carries is trusted as
detect_failure's own, and a hostile `detection` never breaks the start of a recovery."""

import json
import unittest

from hypothesis import given, settings, strategies as st

from synthralos_lib.healing.detection import FAILURE_TYPES, detect_failure
from synthralos_lib.healing.failure_trigger import build_failure
from synthralos_lib.healing.recovery import judge, trusted_failure

RUNS = {
    "timeout": {"status": "timeout", "input": "Summarise ticket 1234", "max_iterations": 10, "provider": "openai",
                "model": "gpt-4o", "duration_ms": 300000, "timeout_ms": 300000},
    "tool_failure": {"status": "failed", "tool_results": [
        {"tool": "search", "status": "failed", "error": "HTTP 502", "tool_call_id": "call_1"},
        {"tool": "calc", "status": "ok"}]},
    "llm_error": {"status": "failed", "provider": "openai", "model": "gpt-4o",
                  "llm_error": {"status": 429, "message": "Rate limit reached", "retry_after_s": 12}},
    "invalid_output": {"status": "succeeded", "output": ""},
    "unknown_status": {"status": "oom_killed"},
}


class TrustedDetectionTest(unittest.TestCase):
    maxDiff = None

    def test_the_trigger_verdict_reads_as_detect_failure(self):
        for name, run in RUNS.items():
            payload = build_failure("agent-1", "exec-1", run, "redis_stream", "1-0")["payload"]
            trusted = trusted_failure({"failure_type": payload["failure_type"], "evidence": payload["evidence"]}, run)
            expected = detect_failure(run)
            if name == "unknown_status":  # the trigger words its one check its own way
                expected["evidence"] = payload["evidence"]["checks"]
            self.assertEqual(trusted, expected, name)

    def test_a_verdict_that_is_not_usable_is_judged_again(self):
        run = RUNS["timeout"]
        for detected, why in [
            ({"failure_type": "on_fire"}, "detection.failure_type must be one of"),
            ({"failure_type": "timeout", "evidence": "bad"}, "detection.evidence must be an object"),
            ({"failure_type": "timeout", "evidence": {"checks": [1]}}, "detection.evidence.checks must be a list"),
            ({"failure_type": "timeout", "evidence": {"failed_tools": [{"tool": 5}]}}, "detection.evidence.failed_tools"),
        ]:
            failure = judge(run, detected)
            self.assertEqual(failure["failure_type"], "timeout")
            self.assertTrue(failure["detected_by"].startswith("begin_recovery: the given detection was not used (" + why),
                            failure["detected_by"])

    def test_only_the_known_evidence_fields_are_kept_scrubbed_and_capped(self):
        secret = "agent-key-5d4c3b2a"
        detected = {"failure_type": "error", "evidence": {
            "summary": "error: key %s refused" % secret,
            "checks": [{"check": "error", "field": "error", "detail": secret + "x" * 5000, "extra": "y" * 10 ** 5}]}}
        failure = trusted_failure(detected, {"status": "failed"}, secrets=[secret])
        self.assertNotIn("5d4c3b2a", json.dumps(failure))
        self.assertEqual(sorted(failure["evidence"][0]), ["check", "detail", "field"])
        self.assertLessEqual(len(failure["evidence"][0]["detail"]), 300)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)
EVIDENCE = st.fixed_dictionaries({}, optional={
    "summary": JSON, "llm_error_class": JSON,
    "checks": st.lists(st.dictionaries(st.sampled_from(["check", "field", "detail", "x"]), JSON, max_size=4), max_size=30) | JSON,
    "failed_tools": st.lists(st.dictionaries(st.sampled_from(["tool", "status", "error", "tool_call_id", "x"]), JSON),
                             max_size=30) | JSON})
DETECTION = st.fixed_dictionaries({}, optional={"failure_type": st.sampled_from(FAILURE_TYPES) | JSON,
                                                "evidence": EVIDENCE | JSON}) | JSON


class HostileDetectionTest(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(DETECTION, st.sampled_from(sorted(RUNS)))
    def test_any_detection_gives_a_failure(self, detected, run_name):
        failure = judge(RUNS[run_name], detected)
        self.assertTrue(failure["failed"])
        self.assertIn(failure["failure_type"], FAILURE_TYPES)
        json.dumps(failure, allow_nan=False)
        self.assertLessEqual(len(failure["evidence"]), 20)
        self.assertLessEqual(len(failure["failed_tools"]), 20)
        if failure["detected_by"] == "trigger":
            self.assertEqual(failure["failure_type"], detected["failure_type"])


if __name__ == "__main__":
    unittest.main()
