"""synthralos_lib.streams.bullmq's pure parts: job options as BullMQ stores them, job hashes, payload caps."""

import synthralos_tests  # noqa: F401

import json
import unittest

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
        payload, tag = bullmq.failure_payload("q", "9", job, "failed", {}, [secret], "T")
        # 2002 characters: capping first would keep "s3cr3t-"; scrubbed first, it fits.
        self.assertEqual(payload["error"], "e" * 1990 + "***")
        self.assertEqual(payload["raw"]["truncated"], True)
        self.assertNotIn(secret, json.dumps(payload))
        self.assertLessEqual(len(json.dumps(payload["raw"]).encode()), bullmq.RAW_BYTES)
        self.assertEqual(tag, "synthralos:agent:q:9")

    def test_claimed_success_of_a_failed_job_is_a_failure(self):
        job = {"name": "a", "data": {"result": {"status": "succeeded", "output": ""}}, "failedReason": "bad output"}
        payload, _ = bullmq.failure_payload("q", "1", job, "failed", {}, [], "T")
        self.assertEqual(payload["failure_type"], "error")
        self.assertEqual(payload["error"], "bad output")


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
