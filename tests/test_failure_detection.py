"""Failure detection: table-driven, exact types and evidence."""

import synthralos_tests  # noqa: F401

import unittest

from hypothesis import given, settings, strategies as st

from synthralos_lib.healing.detection import FAILURE_TYPES, detect_failure

# (name, execution result, failure type, [(check, field), ...] evidence in order)
CASES = [
    ("clean success", {"status": "succeeded", "output": "Here is the summary."}, None, []),
    ("success with structured output", {"status": "completed", "output": {"answer": 42}}, None, []),
    ("output with the word error inside is fine", {"status": "succeeded", "output": "No error was found in the logs."}, None, []),
    ("status timeout", {"status": "timeout"}, "timeout", [("timeout", "status")]),
    ("timed_out flag", {"status": "failed", "timed_out": True}, "timeout", [("timeout", "timed_out"), ("error", "status")]),
    (
        "duration reached the limit",
        {"status": "failed", "duration_ms": 120000, "timeout_ms": 120000},
        "timeout",
        [("timeout", "duration_ms"), ("error", "status")],
    ),
    ("duration under the limit", {"status": "succeeded", "output": "x", "duration_ms": 10, "timeout_ms": 100}, None, []),
    (
        "error message says timed out",
        {"status": "failed", "error": "Agent run timed out after 300s"},
        "timeout",
        [("timeout", "error"), ("error", "status"), ("error", "error")],
    ),
    (
        "llm_error object",
        {"status": "failed", "llm_error": {"status": 429, "message": "Rate limit reached", "error_class": "rate_limited"}},
        "llm_error",
        [("llm_error", "llm_error"), ("error", "status")],
    ),
    (
        "error typed as an LLM error",
        {"status": "failed", "error": {"type": "context_length_exceeded", "message": "too long"}},
        "llm_error",
        [("llm_error", "error"), ("error", "status"), ("error", "error")],
    ),
    (
        "error text naming the provider",
        {"status": "error", "error": "OpenAI returned 503 overloaded"},
        "llm_error",
        [("llm_error", "error"), ("error", "status"), ("error", "error")],
    ),
    (
        "failed tool",
        {"status": "failed", "error": "tool failed", "tool_results": [{"tool": "search", "status": "failed", "error": "HTTP 502"}]},
        "tool_failure",
        [("tool_failure", "tool_results"), ("error", "status"), ("error", "error")],
    ),
    (
        "tool with an error but a succeeded run",
        {"status": "succeeded", "output": "partial", "tool_results": [{"name": "fetch", "error": {"message": "boom"}}]},
        "tool_failure",
        [("tool_failure", "tool_results")],
    ),
    (
        "tools that succeeded",
        {"status": "succeeded", "output": "ok", "tool_results": [{"tool": "search", "status": "succeeded"}]},
        None,
        [],
    ),
    ("plain failure", {"status": "failed"}, "error", [("error", "status")]),
    ("error without status", {"error": "KeyError: 'customer'"}, "error", [("error", "error")]),
    ("cancelled", {"status": "cancelled"}, "error", [("error", "status")]),
    ("empty string output", {"status": "succeeded", "output": "   "}, "invalid_output", [("invalid_output", "output")]),
    ("null output", {"status": "succeeded", "output": None}, "invalid_output", [("invalid_output", "output")]),
    ("empty object output", {"status": "succeeded", "output": {}}, "invalid_output", [("invalid_output", "output")]),
    ("no output at all", {"status": "succeeded"}, "invalid_output", [("invalid_output", "output")]),
    ("error prefix", {"status": "succeeded", "output": "Error: could not parse"}, "invalid_output", [("invalid_output", "output")]),
    (
        "traceback in output",
        {"status": "succeeded", "output": "Result:\nTraceback (most recent call last):\n  File x"},
        "invalid_output",
        [("invalid_output", "output")],
    ),
    ("[ERROR] marker", {"status": "ok", "output": "[ERROR] upstream down"}, "invalid_output", [("invalid_output", "output")]),
    ("bare undefined", {"status": "succeeded", "output": "undefined"}, "invalid_output", [("invalid_output", "output")]),
    (
        "object carrying error",
        {"status": "succeeded", "output": {"error": "invalid schema"}},
        "invalid_output",
        [("invalid_output", "output")],
    ),
    ("nothing to judge", {}, None, []),
    # Only an explicit success is a success: an unfinished or unknown status is a failure of its own kind.
    ("running is not a success", {"status": "running"}, "unknown_status", [("unknown_status", "status")]),
]


class DetectFailureTableTest(unittest.TestCase):
    def test_table(self):
        for name, result, failure_type, evidence in CASES:
            found = detect_failure(result)
            self.assertEqual(found["failure_type"], failure_type, name)
            self.assertEqual(found["failed"], failure_type is not None, name)
            self.assertEqual([(e["check"], e["field"]) for e in found["evidence"]], evidence, name)

    def test_evidence_details_and_summary(self):
        found = detect_failure(
            {"status": "failed", "duration_ms": 130000, "timeout_ms": 120000, "tool_results": [{"tool": "t", "status": "timeout"}]}
        )
        self.assertEqual(found["summary"], "timeout: ran 130000 ms, limit 120000 ms")
        self.assertEqual(
            found["evidence"],
            [
                {"check": "timeout", "field": "duration_ms", "detail": "ran 130000 ms, limit 120000 ms"},
                {"check": "tool_failure", "field": "tool_results", "detail": "tool 't' timeout"},
                {"check": "error", "field": "status", "detail": "status is 'failed'"},
            ],
        )
        self.assertEqual(found["failed_tools"], [{"tool": "t", "status": "timeout", "error": None, "tool_call_id": None}])

    def test_context_for_the_planner(self):
        found = detect_failure(
            {
                "status": "failed",
                "input": "Summarise ticket 1",
                "provider": "openai",
                "model": "gpt-4o",
                "max_iterations": 12,
                "llm_error": {"error_class": "rate_limited", "retry_after_s": 7, "message": "slow down"},
            }
        )
        self.assertEqual(found["failure_type"], "llm_error")
        self.assertEqual(found["llm_error_class"], "rate_limited")
        self.assertEqual(found["retry_after_s"], 7)
        self.assertEqual((found["provider"], found["model"], found["max_iterations"]), ("openai", "gpt-4o", 12))
        self.assertEqual(found["input"], "Summarise ticket 1")
        self.assertEqual(found["summary"], "llm_error: slow down")

    def test_raw_provider_errors_are_classified_with_the_shared_table(self):
        def class_of(llm_error):
            return detect_failure({"status": "failed", "llm_error": llm_error})["llm_error_class"]

        self.assertEqual(class_of({"status": 429, "type": "requests", "code": "rate_limit_exceeded", "message": "Rate limit reached"}), "rate_limited")
        self.assertEqual(class_of({"status": 429, "type": "insufficient_quota", "code": "insufficient_quota", "message": "quota"}), "quota_exhausted")
        self.assertEqual(class_of({"status": 400, "code": "context_length_exceeded", "message": "maximum context length"}), "context_overflow")
        self.assertEqual(class_of({"status": 529, "type": "overloaded_error", "message": "Overloaded"}), "overloaded")
        self.assertEqual(class_of({"status": 401, "message": "invalid x-api-key"}), "auth_config")
        self.assertEqual(class_of({"status": 502, "message": "Bad gateway"}), "transient")
        # The platform's own class wins; no status and no class: unknown.
        self.assertEqual(class_of({"status": 500, "error_class": "quota_exhausted"}), "quota_exhausted")
        self.assertIsNone(class_of({"message": "something"}))
        self.assertIsNone(class_of("a plain string"))

    def test_unknown_llm_error_class_is_ignored(self):
        found = detect_failure({"llm_error": {"error_class": "rm -rf /", "message": "x"}})
        self.assertEqual(found["failure_type"], "llm_error")
        self.assertIsNone(found["llm_error_class"])

    def test_long_evidence_is_cut(self):
        found = detect_failure({"status": "failed", "error": "x" * 5000})
        self.assertEqual(len(found["evidence"][1]["detail"]), 300)
        self.assertTrue(found["evidence"][1]["detail"].endswith("..."))

    def test_bad_input_is_a_clear_error(self):
        for bad in (None, "failed", [1, 2], 3):
            with self.assertRaises(ValueError) as caught:
                detect_failure(bad)
            self.assertIn("must be a JSON object", str(caught.exception))

    def test_booleans_are_not_durations(self):
        self.assertIsNone(detect_failure({"status": "succeeded", "output": "x", "duration_ms": True, "timeout_ms": True})["failure_type"])

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(
            st.sampled_from(["status", "error", "output", "duration_ms", "timeout_ms", "timed_out", "tool_results", "llm_error"]),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
                lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
                max_leaves=8,
            ),
        )
    )
    def test_any_result_gets_a_verdict(self, result):
        found = detect_failure(result)
        self.assertIn(found["failure_type"], FAILURE_TYPES + (None,))
        self.assertEqual(found["failed"], bool(found["evidence"]))


class StillRunningTest(unittest.TestCase):
    """One set says "not finished yet"; the trigger, the agent API poller and BullMQ read it alike."""

    def test_the_set_is_pinned(self):
        from synthralos_lib.healing.detection import IN_PROGRESS_STATUSES

        self.assertEqual(sorted(IN_PROGRESS_STATUSES), [
            "accepted", "active", "created", "delayed", "in_progress", "pending", "queued", "running", "scheduled",
            "started", "waiting",
        ])

    def test_every_caller_agrees(self):
        from synthralos_lib.healing import agent_api, failure_trigger
        from synthralos_lib.healing.detection import IN_PROGRESS_STATUSES, SUCCESS_STATUSES, still_running
        from synthralos_lib.streams import bullmq

        finished = sorted(SUCCESS_STATUSES) + ["failed", "timeout", "cancelled", "crashed", "137"]
        for status in sorted(IN_PROGRESS_STATUSES) + finished:
            for spelled in (status, " %s " % status.upper()):
                running = status in IN_PROGRESS_STATUSES
                self.assertEqual(still_running(spelled), running, spelled)
                # The trigger does not judge a run that is still going; the poller keeps polling it.
                self.assertEqual(failure_trigger.classify({"status": spelled, "output": "an answer"})[0] is None,
                                 running or status in SUCCESS_STATUSES, spelled)
                self.assertEqual(agent_api.is_terminal({"status": spelled}), not running, spelled)
                # A failed BullMQ job whose result still reads "running" (or a success) is a failed run.
                result = bullmq.agent_result("q", "1", {"data": {"result": {"status": spelled}}}, {})
                self.assertEqual(result["status"], "failed" if running or status in SUCCESS_STATUSES else spelled,
                                 spelled)
        self.assertFalse(still_running(137))
        self.assertTrue(agent_api.is_terminal({"status": 137}))
        self.assertFalse(agent_api.is_terminal({"status": None}))
