"""synthralos_lib.streams.bullmq's pure parts: job options as BullMQ stores them, job hashes, payload caps."""

import synthralos_tests  # noqa: F401

import unittest

from synthralos_lib.healing import failure_trigger
from synthralos_lib.state.config import with_defaults
from synthralos_lib.streams import bullmq


class JobOptionsTest(unittest.TestCase):
    def test_defaults_and_every_option(self):
        self.assertEqual(bullmq.job_options(), {"attempts": 0})
        self.assertEqual(
            bullmq.job_options(attempts=3, backoff_type="exponential", backoff_delay_ms=100, delay_ms=5, job_id="a-1",
                               priority=2, remove_on_complete=True, remove_on_fail={"age": 60, "count": 5}, lifo=True),
            {"attempts": 3, "backoff": {"type": "exponential", "delay": 100}, "delay": 5, "jobId": "a-1", "priority": 2,
             "removeOnComplete": True, "removeOnFail": {"age": 60, "count": 5}, "lifo": True})

    def test_refused_like_bullmq(self):
        for kwargs in ({"job_id": "7"}, {"job_id": "-7"}, {"job_id": "0"}, {"job_id": "0:x"}, {"job_id": "a:b"},
                       {"priority": -1}, {"priority": 1.5}, {"priority": True}, {"delay_ms": -1}, {"attempts": -1},
                       {"backoff_type": "linear", "backoff_delay_ms": 1}, {"remove_on_complete": "yes"},
                       {"remove_on_complete": {"age": -1}}, {"remove_on_complete": {}}):
            with self.assertRaises(bullmq.BullMQError, msg=kwargs):
                bullmq.job_options(**kwargs)
        # BullMQ allows ids like "007" (parseInt gives "7", not the id itself)
        self.assertEqual(bullmq.job_options(job_id="007")["jobId"], "007")


class PayloadTest(unittest.TestCase):
    def test_parse_job_decodes_bullmq_fields(self):
        job = bullmq.parse_job({"name": "n", "data": '{"a": 1}', "opts": '{"attempts": 2}', "atm": "2", "ats": "3",
                                "timestamp": "10", "processedOn": "11", "finishedOn": "15", "failedReason": "boom",
                                "stacktrace": '["Error: boom"]'})
        self.assertEqual(job, {"name": "n", "failedReason": "boom", "data": {"a": 1}, "opts": {"attempts": 2},
                               "stacktrace": ["Error: boom"], "timestamp": 10, "processedOn": 11, "finishedOn": 15,
                               "attemptsMade": 2, "attemptsStarted": 3})
        self.assertIsNone(bullmq.parse_job({}))
        self.assertEqual(bullmq.fingerprint("7", job, "1-0"), "7|15|2")
        self.assertEqual(bullmq.fingerprint("7", None, "1-0"), "7|gone|1-0")

    def test_caps_after_scrubbing(self):
        secret = "s3cr3t-token"
        job = {"name": "agent", "data": {"blob": "x" * 20000, "note": secret}, "failedReason": "e" * 1990 + secret,
               "finishedOn": 2, "processedOn": 1}
        payload, tag = bullmq.failure_payload("q", "9", job, "failed", {}, [secret], 0.25)
        # 2002 characters: capping first would keep "s3cr3t-"; scrubbed first, it fits.
        self.assertEqual(payload, {
            "agent_id": "agent", "execution_id": "q:9", "failure_type": "error", "error": "e" * 1990 + "***",
            "output_excerpt": None, "duration_ms": 1,
            "evidence": {"summary": "error: status is 'failed'", "failed_tools": [],
                         "checks": [{"check": "error", "field": "status", "detail": "status is 'failed'"},
                                    {"check": "error", "field": "error", "detail": "e" * 297 + "..."}]},
            "trace_context": {}, "source": "bullmq", "source_id": "q:9",
            # over 8 KB: its long strings cut to 1,000 characters (after scrubbing)
            "raw": {"queue": "q", "job_id": "9", "event": "failed", "job_found": True, "name": "agent",
                    "data": {"blob": "x" * 997 + "...", "note": "***"}, "failedReason": "e" * 997 + "...",
                    "processedOn": 1, "finishedOn": 2},
            "detected_at": "1970-01-01T00:00:00.250Z"})
        self.assertEqual(tag, "synthralos:agent:q:9")

    def test_claimed_success_or_running_of_a_failed_job_is_a_failure(self):
        for status in ("succeeded", "running"):
            job = {"name": "a", "data": {"result": {"status": status, "output": ""}}, "failedReason": "bad output"}
            payload, _ = bullmq.failure_payload("q", "1", job, "failed", {}, [], 0)
            self.assertEqual((payload["failure_type"], payload["error"]), ("error", "bad output"), status)

    def test_trace_context_spellings_and_trace_tag(self):
        job = {"name": "a", "failedReason": "x",
               "data": {"traceId": "t-1", "workspaceId": "w-1", "organization_id": 7,
                        "trace_context": {"langfuseTraceUrl": "https://langfuse.example/t-1", "traceparent": ""}}}
        payload, tag = bullmq.failure_payload("q", "1", job, "failed", {}, [], 0)
        self.assertEqual(payload["trace_context"], {"trace_id": "t-1", "workspace_id": "w-1", "organization_id": "7",
                                                    "langfuse_trace_url": "https://langfuse.example/t-1"})
        self.assertEqual(tag, "t-1")

    def test_unusable_ids_fall_back_or_are_refused(self):
        job = {"name": "n" * 300, "data": {"execution_id": "bad\nid"}, "failedReason": "x"}
        payload, tag = bullmq.failure_payload("q", "5", job, "failed", {}, [], 0)
        self.assertEqual((payload["agent_id"], payload["execution_id"], tag), ("unknown", "q:5", "synthralos:unknown:q:5"))
        with self.assertRaises(failure_trigger.MalformedFailure) as caught:
            bullmq.failure_payload("q", "j" * 300, {"name": "a", "failedReason": "x"}, "failed", {}, [], 0)
        self.assertEqual(str(caught.exception), "execution_id must be at most 256 characters")

    def test_watcher_dead_letters_a_job_it_cannot_dispatch(self):
        from unittest import mock

        from synthralos_tests.redis_server import get_redis_server

        server = get_redis_server()
        server.flushall()
        client = server.client()
        self.addCleanup(client.connection_pool.disconnect)
        sent, logger = [], mock.Mock()
        options = with_defaults("bullmq", {"prefix": "bull", "queues": ["q"], "dedup_window": 10, "block_ms": 50,
                                           "batch_size": 10, "reconcile_slack_ms": 0, "reconcile_max": 10,
                                           "dead_letter_stream": "dead"})
        watcher = bullmq.FailureWatcher(client, options, lambda p, t: sent.append(t), logger, clock=lambda: 0)
        self.addCleanup(watcher.raw.connection_pool.disconnect)
        queue = watcher.queues[0]
        watcher._send(queue, "j" * 300, {"name": "a", "failedReason": "x"}, "failed", {}, "m1")
        watcher._send(queue, "2", {"name": "a", "failedReason": "x"}, "failed", {}, "m2")
        self.assertEqual(sent, ["synthralos:a:q:2"])
        self.assertEqual((watcher.stats["skipped"], watcher.stats["dead_lettered"], watcher.stats["dispatched"]),
                         (1, 1, 1))
        [warning] = logger.warning.call_args_list
        self.assertEqual(warning[0][0] % warning[0][1:], "[Self-Healing] BullMQ job q:%s... failed (failed) but was "
                         "not dispatched, dead-lettered to dead: execution_id must be at most 256 characters"
                         % ("j" * 77))
        [(_, dead)] = client.xrange("dead")
        self.assertEqual((dead["queue"], dead["event"], dead["reason"]),
                         ("q", "failed", "execution_id must be at most 256 characters"))


class NodeMissingTest(unittest.TestCase):
    def test_missing_node_fails_with_what_to_install(self):
        import os
        from unittest import mock

        from synthralos_tests import bullmq_node

        with mock.patch.dict(os.environ, {"PATH": "/nonexistent"}):
            with self.assertRaises(bullmq_node.BullMQNodeError) as caught:
                bullmq_node.node_binary()
        self.assertIn("node was not found on PATH", str(caught.exception))
        self.assertIn("npm ci --prefix tests/bullmq", str(caught.exception))
        self.assertIsInstance(caught.exception, AssertionError)  # a test failure, not an error or a skip
