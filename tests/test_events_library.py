"""Event builders, prices and similarity: pure functions, exact values."""

import json
import unittest
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path when run by nose)
from synthralos_lib.events import pricing, similarity
from synthralos_lib.events.builders import (
    MAX_EVENT_BYTES,
    Correlation,
    EventError,
    EventTooLarge,
    agent_event,
    build_event,
    custom_event,
    event_size,
    llm_cost_event,
    message_id,
    similarity_event,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OBS = {"langfuse_base_url": "https://langfuse.example.com/", "workspace_id": "ws-default", "organization_id": "org-1"}


class CorrelationTest(unittest.TestCase):
    def test_traceparent_gives_trace_id_and_langfuse_url(self):
        corr = Correlation(OBS, traceparent=TRACEPARENT, st2_execution_id="exec-1", st2_trace_tag="tag-1")
        self.assertEqual(
            corr.properties(),
            {
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "workspace_id": "ws-default",
                "organization_id": "org-1",
                "st2_execution_id": "exec-1",
                "st2_trace_tag": "tag-1",
                "traceparent": TRACEPARENT,
                "langfuse_trace_url": "https://langfuse.example.com/trace/4bf92f3577b34da6a3ce929d0e0e4736",
            },
        )

    def test_explicit_values_win_over_config_defaults(self):
        corr = Correlation(OBS, trace_id="t-9", workspace_id="ws-2", langfuse_trace_url="https://lf/x")
        props = corr.properties()
        self.assertEqual((props["trace_id"], props["workspace_id"], props["langfuse_trace_url"]), ("t-9", "ws-2", "https://lf/x"))

    def test_identity_prefers_user_then_agent(self):
        self.assertEqual(Correlation({}, user_id="u1", agent_id="a1").identity(), {"userId": "u1"})
        self.assertEqual(Correlation({}, agent_id="a1").identity(), {"anonymousId": "agent:a1"})
        self.assertEqual(Correlation({}).identity(), {"anonymousId": "synthralos"})

    def test_bad_input(self):
        with self.assertRaisesRegex(EventError, "traceparent"):
            Correlation({}, traceparent="not-a-traceparent")
        with self.assertRaisesRegex(EventError, "unknown correlation field"):
            Correlation({}, tenant="x")


class BuildEventTest(unittest.TestCase):
    def test_agent_event_shape(self):
        corr = Correlation(OBS, st2_execution_id="exec-1", agent_id="agent-7", traceparent=TRACEPARENT)
        event = agent_event(
            "agent_failure", corr, "failed", "2026-01-02T03:04:05Z", "2026-01-02 03:04:06.250000+00:00",
            details={"error": "timeout"},
        )
        self.assertEqual(
            event,
            {
                "type": "track",
                "event": "agent_failure",
                "anonymousId": "agent:agent-7",
                "properties": {
                    "agent_id": "agent-7",
                    "status": "failed",
                    "started_at": "2026-01-02T03:04:05.000Z",
                    "ended_at": "2026-01-02T03:04:06.250Z",
                    "duration_ms": 1250,
                    "error": "timeout",
                    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                    "workspace_id": "ws-default",
                    "organization_id": "org-1",
                    "st2_execution_id": "exec-1",
                    "st2_trace_tag": None,
                    "traceparent": TRACEPARENT,
                    "langfuse_trace_url": "https://langfuse.example.com/trace/4bf92f3577b34da6a3ce929d0e0e4736",
                },
                "context": {
                    "library": {"name": "synthralos-stackstorm", "version": "0.1.0"},
                    "synthralos": {"source_id": "exec-1"},
                    "traceparent": TRACEPARENT,
                },
                "timestamp": "2026-01-02T03:04:06.250Z",
                "messageId": message_id("exec-1", "agent_failure", ""),
            },
        )

    def test_message_id_is_deterministic_per_source_event_and_discriminator(self):
        def build(execution, name="agent_repair", disc=""):
            return agent_event(name, Correlation({}, st2_execution_id=execution), "succeeded", discriminator=disc)

        first = build("exec-1")["messageId"]
        self.assertEqual(build("exec-1")["messageId"], first)  # resend -> same id, even at another time
        self.assertNotEqual(build("exec-2")["messageId"], first)
        self.assertNotEqual(build("exec-1", name="agent_execution")["messageId"], first)
        self.assertNotEqual(build("exec-1", disc="attempt-2")["messageId"], first)
        self.assertEqual(uuid.UUID(first).version, 5)

    def test_events_without_source_hash_their_content(self):
        a = custom_event("deploy", {"v": 1}, Correlation({}), timestamp="2026-01-01T00:00:00Z")
        b = custom_event("deploy", {"v": 1}, Correlation({}), timestamp="2026-01-01T00:00:00Z")
        c = custom_event("deploy", {"v": 2}, Correlation({}), timestamp="2026-01-01T00:00:00Z")
        self.assertEqual(a["messageId"], b["messageId"])
        self.assertNotEqual(a["messageId"], c["messageId"])
        self.assertTrue(a["context"]["synthralos"]["source_id"].startswith("sha256:"))

    def test_oversized_text_is_trimmed_with_a_reason(self):
        corr = Correlation({}, st2_execution_id="exec-1")
        event = custom_event("big", {"output": "x" * 40000, "keep": "short"}, corr)
        self.assertLessEqual(event_size(event), MAX_EVENT_BYTES)
        self.assertEqual(event["context"]["synthralos"]["trimmed"], ["output"])
        self.assertRegex(event["properties"]["output"], r"^x+\.\.\.\[trimmed \d+ chars\]$")
        self.assertEqual(event["properties"]["keep"], "short")

    def test_event_that_cannot_be_trimmed_is_refused(self):
        many_numbers = {"values": list(range(20000))}
        with self.assertRaisesRegex(EventTooLarge, r"bytes after trimming 0 text field\(s\); the limit is 32768"):
            custom_event("big", many_numbers, Correlation({}, st2_execution_id="e"))

    def test_bad_events(self):
        corr = Correlation({}, st2_execution_id="e")
        with self.assertRaisesRegex(EventError, "built-in event"):
            custom_event("agent_failure", {}, corr)
        with self.assertRaisesRegex(EventError, "event name"):
            custom_event("", {}, corr)
        with self.assertRaisesRegex(EventError, "properties must be an object"):
            build_event("x", ["list"], corr)
        with self.assertRaisesRegex(EventError, "not JSON-serialisable"):
            custom_event("x", {"nan": float("nan")}, corr)
        with self.assertRaisesRegex(EventError, "status is required"):
            agent_event("agent_execution", corr, "")
        with self.assertRaisesRegex(EventError, "not ISO-8601"):
            custom_event("x", {}, corr, timestamp="yesterday")

    @settings(max_examples=50, deadline=None)
    @given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=3000), max_size=30))
    def test_every_built_event_fits_or_is_refused(self, properties):
        try:
            event = custom_event("prop_test", properties, Correlation({}, st2_execution_id="e"))
        except EventTooLarge:
            return
        self.assertLessEqual(len(json.dumps(event, separators=(",", ":")).encode("utf-8")), MAX_EVENT_BYTES)


class LlmCostTest(unittest.TestCase):
    def test_builtin_price_of_a_dated_snapshot(self):
        event = llm_cost_event(
            Correlation({}, st2_execution_id="e", agent_id="a"), "openai", "gpt-4o-2024-08-06", 1234, 567, {},
            node_id="n1", workflow_execution_id="wf-1",
        )
        props = event["properties"]
        self.assertEqual(event["event"], "llm_cost_logged")
        self.assertEqual(
            {k: props[k] for k in (
                "provider", "model", "node_id", "workflow_execution_id", "input_tokens", "output_tokens", "total_tokens",
                "input_price_per_1k", "output_price_per_1k", "price_source", "input_cost_usd", "output_cost_usd",
                "cost_usd", "cost_usd_cents")},
            {
                "provider": "openai", "model": "gpt-4o-2024-08-06", "node_id": "n1", "workflow_execution_id": "wf-1",
                "input_tokens": 1234, "output_tokens": 567, "total_tokens": 1801,
                "input_price_per_1k": 0.0025, "output_price_per_1k": 0.01, "price_source": "builtin:gpt-4o",
                "input_cost_usd": 0.003085, "output_cost_usd": 0.00567, "cost_usd": 0.008755, "cost_usd_cents": 0.8755,
            },
        )

    def test_longest_prefix_wins(self):
        self.assertEqual(pricing.lookup("gpt-4o-mini-2024-07-18", pricing.BUILTIN_PRICES), (0.00015, 0.0006, "gpt-4o-mini"))
        self.assertIsNone(pricing.lookup("llama-3", pricing.BUILTIN_PRICES))

    def test_override_order_call_target_config_builtin(self):
        prices = {
            "model_prices": {"gpt-4o": {"input_per_1k": 0.004}},
            "llm_targets": [{"name": "oa", "model": "gpt-4o", "output_price_per_1k": 0.02}],
        }
        self.assertEqual(pricing.resolve_rates("gpt-4o", prices), (0.004, 0.02, "model_prices:gpt-4o,llm_target:oa"))
        self.assertEqual(pricing.resolve_rates("gpt-4o", prices, input_price_per_1k=0.1), (0.1, 0.02, "call,llm_target:oa"))
        self.assertEqual(pricing.resolve_rates("gpt-4o", {}), (0.0025, 0.01, "builtin:gpt-4o"))
        self.assertEqual(pricing.resolve_rates("gpt-4o", prices, target="other"), (0.004, 0.01, "model_prices:gpt-4o,builtin:gpt-4o"))

    def test_unknown_model_has_null_cost(self):
        cost = pricing.cost("in-house-model", 10, 5, {})
        self.assertEqual((cost["cost_usd"], cost["cost_usd_cents"], cost["price_source"], cost["total_tokens"]), (None, None, "unknown", 15))

    def test_bad_token_counts(self):
        with self.assertRaisesRegex(pricing.PricingError, "^input_tokens must be at least 0$"):
            pricing.cost("gpt-4o", -1, 0, {})
        with self.assertRaisesRegex(pricing.PricingError, "^output_tokens must be an integer$"):
            pricing.cost("gpt-4o", 1, "2", {})


class SimilarityTest(unittest.TestCase):
    def test_each_method_maps_to_unit_interval(self):
        self.assertAlmostEqual(similarity.score("cosine", [1, 0], [1, 1]), 0.7071067811865475)
        self.assertEqual(similarity.score("cosine", [1, 0], [-1, 0]), 0.0)
        self.assertAlmostEqual(similarity.score("cosine", [2, 2], [1, 1]), 1.0)
        self.assertAlmostEqual(similarity.score("euclidean", [0, 0], [3, 4]), 1 / 6.0)
        self.assertAlmostEqual(similarity.score("manhattan", [0, 0], [3, 4]), 1 / 8.0)
        self.assertAlmostEqual(similarity.score("dot_product", [1, 0], [1, 0]), 0.7310585786300049)
        self.assertAlmostEqual(similarity.score("dot_product", [-800, 0], [1, 0]), 0.0)
        self.assertEqual(similarity.score("euclidean", [1, 2], [1, 2]), 1.0)

    def test_bad_vectors(self):
        for a, b, message in (
            ([1, 2], [1], "equal length"),
            ([], [], "non-empty"),
            ([0, 0], [1, 1], "zero vector"),
            ([1, "x"], [1, 2], r"^vector_a\[1\] must be a number$"),
            ([1, 2], [1, float("inf")], r"^vector_b\[1\] must be a finite number \(not NaN or Infinity\)$"),
        ):
            with self.assertRaisesRegex(similarity.SimilarityError, message):
                similarity.score("cosine", a, b)

    @settings(max_examples=100, deadline=None)
    @given(
        st.sampled_from(similarity.METHODS),
        st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=16).flatmap(
            lambda a: st.tuples(st.just(a), st.lists(st.floats(-1e3, 1e3), min_size=len(a), max_size=len(a)))
        ),
    )
    def test_score_is_always_in_unit_interval(self, method, vectors):
        try:
            value = similarity.score(method, *vectors)
        except similarity.SimilarityError:
            return
        self.assertTrue(0.0 <= value <= 1.0)

    def test_similarity_event(self):
        corr = Correlation({}, st2_execution_id="e", agent_id="a")
        event = similarity_event(corr, 0.7, vector_a=[1, 0], vector_b=[1, 1], prompt="p" * 1500, flagged_content="bad")
        props = event["properties"]
        self.assertEqual(
            {k: props[k] for k in ("score", "percent", "threshold", "above_threshold", "method", "score_computed", "action_taken", "flagged_content")},
            {"score": 0.707107, "percent": 70.71, "threshold": 0.7, "above_threshold": True, "method": "cosine",
             "score_computed": True, "action_taken": "flagged", "flagged_content": "bad"},
        )
        self.assertEqual(props["prompt"], "p" * 997 + "...")  # scrubbed, then cut, and says so
        given_score = similarity_event(corr, 0.9, score=0.5, method="euclidean", action_taken="warned")["properties"]
        self.assertEqual((given_score["score"], given_score["action_taken"], given_score["score_computed"]), (0.5, "warned", False))
        below = similarity_event(corr, 0.9, score=0.5)["properties"]
        self.assertEqual(below["action_taken"], "allowed")

    def test_similarity_event_bad_input(self):
        corr = Correlation({}, st2_execution_id="e")
        with self.assertRaisesRegex(EventError, "either score or both vectors"):
            similarity_event(corr, 0.5)
        with self.assertRaisesRegex(EventError, "method must be one of"):
            similarity_event(corr, 0.5, score=0.1, method="jaccard")
        with self.assertRaisesRegex(EventError, "action_taken must be one of"):
            similarity_event(corr, 0.5, score=0.1, action_taken="ignored")
        with self.assertRaisesRegex(EventError, "^score must be at most 1$"):
            similarity_event(corr, 0.5, score=1.5)
        with self.assertRaisesRegex(EventError, "^threshold must be at most 1$"):
            similarity_event(corr, 2, score=0.5)
        with self.assertRaisesRegex(EventError, r"^threshold must be a finite number \(not NaN or Infinity\)$"):
            similarity_event(corr, float("nan"), score=0.5)
        with self.assertRaisesRegex(EventError, "equal length"):
            similarity_event(corr, 0.5, vector_a=[1], vector_b=[1, 2])
