"""Failure history on both store backends, through the library and the actions."""

import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import SynthralosActionTestCase

from get_failure_history import GetFailureHistoryAction
from record_failure import RecordFailureAction
from synthralos_lib.healing.detection import detect_failure
from synthralos_lib.healing.history import get_failure_history, history_key, record_failure


class FailureHistoryContract(object):
    def test_bounded_newest_first_per_agent(self):
        store = self.make_store()
        clock = iter(range(100, 200)).__next__
        for n in range(7):
            record_failure(store, "agent-1", {"execution_id": "e%d" % n, "outcome": "escalated"}, max_entries=5, clock=clock)
        record_failure(store, "agent-2", {"execution_id": "other"}, clock=clock)
        history = get_failure_history(store, "agent-1")
        self.assertEqual([e["execution_id"] for e in history], ["e6", "e5", "e4", "e3", "e2"])
        self.assertEqual(history[0], {"execution_id": "e6", "outcome": "escalated", "agent_id": "agent-1", "recorded_at": 106})
        self.assertEqual([e["execution_id"] for e in get_failure_history(store, "agent-1", limit=2)], ["e6", "e5"])
        self.assertEqual(get_failure_history(store, "agent-2"), [{"execution_id": "other", "outcome": "recorded", "agent_id": "agent-2", "recorded_at": 107}])
        self.assertEqual(get_failure_history(store, "agent-3"), [])

    def test_bad_input(self):
        store = self.make_store()
        for agent in ("", "  ", None, 5):
            with self.assertRaises(ValueError):
                record_failure(store, agent, {})
        with self.assertRaises(ValueError):
            record_failure(store, "a", {"outcome": "exploded"})
        with self.assertRaises(ValueError):
            record_failure(store, "a", ["not", "a", "dict"])
        for limit in (0, -1, True, "5"):
            with self.assertRaises(ValueError):
                get_failure_history(store, "a", limit=limit)
        self.assertEqual(get_failure_history(store, "a"), [])

    def test_key(self):
        self.assertEqual(history_key(" agent-1 "), "failures.agent-1")


class FailureHistoryOnRedis(object):
    """Only in RedisFailureHistoryTest."""

    def test_entries_live_in_one_bounded_redis_list(self):
        store = self.make_store()
        for n in range(4):
            record_failure(store, "agent-1", {"n": n}, max_entries=3)
        self.assertEqual(self.redis.client().llen("synthralos:failures.agent-1"), 3)
        self.assertGreater(self.redis.client().ttl("synthralos:failures.agent-1"), 0)


on_both_backends(FailureHistoryContract, "{backend}FailureHistoryTest",
                 base=SynthralosActionTestCase, redis=FailureHistoryOnRedis, action_cls=RecordFailureAction)


class RecordAndReadActionsContract(object):
    maxDiff = None

    def test_record_then_read(self):
        failure = detect_failure({"status": "timeout", "error": "run timed out"})
        recorder = self.get_action_instance(config=self.make_config())
        result = recorder.run(
            "agent-1",
            execution_id="exec-9",
            failure=failure,
            outcome="repaired",
            repaired_by="reduce_max_iterations",
            attempts=[{"attempt": 1, "action": "reduce_max_iterations", "repaired": True}],
            plan_source="rules",
            trace_context={"trace_id": "t-1"},
            started_at=None,
        )
        entry = result["entry"]
        self.assertEqual(result["store"], "redis" if self.backend == "redis" else "st2_datastore")
        self.assertIsNone(result["duration_s"])
        self.assertEqual(
            {k: v for k, v in entry.items() if k != "recorded_at"},
            {
                "agent_id": "agent-1",
                "execution_id": "exec-9",
                "failure_type": "timeout",
                "summary": "timeout: status is 'timeout'",
                "evidence": failure["evidence"],
                "outcome": "repaired",
                "repaired_by": "reduce_max_iterations",
                "attempts": [{"attempt": 1, "action": "reduce_max_iterations", "repaired": True}],
                "plan_source": "rules",
                "trace_context": {"trace_id": "t-1"},
                "duration_s": None,
            },
        )
        reader = GetFailureHistoryAction(config=self.make_config(), action_service=self.action_service)
        read = reader.run("agent-1", limit=10)
        self.assertEqual(read["count"], 1)
        self.assertEqual(read["entries"], [entry])

    def test_duration_is_measured_from_started_at(self):
        recorder = self.get_action_instance(config=self.make_config())
        import time

        result = recorder.run("agent-1", outcome="escalated", started_at=time.time() - 5)
        self.assertGreaterEqual(result["duration_s"], 5)
        self.assertLess(result["duration_s"], 60)

    def test_secrets_are_scrubbed_from_entries(self):
        config = self.make_config(agent_api={"api_key": "very-secret-agent-key"})
        recorder = self.get_action_instance(config=config)
        failure = detect_failure({"status": "failed", "error": "auth header Bearer very-secret-agent-key rejected"})
        entry = recorder.run("agent-1", failure=failure, outcome="escalated")["entry"]
        self.assertEqual(entry["evidence"][1]["detail"], "auth header Bearer *** rejected")
        self.assertNotIn("very-secret-agent-key", repr(self.make_store().list_range("failures.agent-1")))


on_both_backends(RecordAndReadActionsContract, "{backend}RecordActionsTest",
                 base=SynthralosActionTestCase, action_cls=RecordFailureAction)


if __name__ == "__main__":
    unittest.main()
