"""Issue 18 item 5: bounds and clear errors. Echoed input is capped in every result, replay of an
unknown id is `not_found` on both backends, a corrupt cron document is reported and skipped, NaN is
refused by health_check, redaction masks only the secret, and dead letters are bounded in bytes.
Real redis-server and the st2 datastore (StoreBackendMixin)."""

import synthralos_tests  # noqa: F401

import json
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from bullmq_add_job import BullMQAddJob
from cron_backoff_record import CronBackoffRecord
from cron_backoff_status import CronBackoffStatus
from health_check import HealthCheck
from replay_dead_letters import ReplayDeadLetters
from synthralos_lib.action_base import MAX_RESULT_STRING_CHARS, SynthralosAction
from synthralos_lib.cron.backoff import KEY_PREFIX
from synthralos_lib.events import outbox as outbox_module
from synthralos_lib.events.builders import Correlation, custom_event
from synthralos_lib.events.forwarding import open_outbox
from synthralos_lib.state.config import load_config
from synthralos_lib.state.redaction import scrub_text
from synthralos_lib.state.store import get_store

HUGE = "j" * (10 * 1024 * 1024)  # a 10 MB id


class Echo(SynthralosAction):
    def run(self, value, nested=False, refuse=False):
        if refuse:
            raise ValueError("refused: %s" % value)
        return {"echo": value, "list": [value, {value[:10]: 1}]} if nested else value


class BoundsContract(StoreBackendMixin):
    maxDiff = None

    def setUp(self):
        super(BoundsContract, self).setUp()
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)

    def config(self, **rudder):
        settings = {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url, "max_retries": 0}
        settings.update(rudder)
        return self.make_config(rudderstack=settings)

    def size(self, result):
        return len(json.dumps(result))

    # -- echo caps ------------------------------------------------------------

    def test_every_result_string_is_capped_and_says_so(self):
        result = Echo(config=self.config(), action_service=self.action_service).run(HUGE, nested=True)
        self.assertEqual(set(result), {"echo", "list"})  # same shape
        cut = "... [cut: %d characters in all]" % len(HUGE)
        self.assertEqual(result["echo"], "j" * (MAX_RESULT_STRING_CHARS - len(cut)) + cut)
        self.assertEqual(result["list"], [result["echo"], {"j" * 10: 1}])
        self.assertEqual(Echo(config=self.config(), action_service=self.action_service).run("short"), "short")

    def test_an_error_message_is_capped_too(self):
        with self.assertRaises(ValueError) as caught:
            Echo(config=self.config(), action_service=self.action_service).run(HUGE, refuse=True)
        self.assertEqual(len(str(caught.exception)), MAX_RESULT_STRING_CHARS)
        self.assertTrue(str(caught.exception).endswith("... [cut: %d characters in all]" % (len(HUGE) + 9)))

    def test_cron_backoff_status_with_a_10_mb_id(self):
        ok, result = CronBackoffStatus(config=self.config(), action_service=self.action_service).run(job_id=HUGE)
        self.assertFalse(ok)
        self.assertLess(self.size(result), 2 * MAX_RESULT_STRING_CHARS)
        self.assertIn("job_id must be 1-128 characters", result["error"])

    # -- replay -----------------------------------------------------------------

    def test_replay_of_an_id_that_is_not_a_stream_id_is_not_found(self):
        for flush in (True, False):
            result = ReplayDeadLetters(config=self.config(), action_service=self.action_service).run(
                ids=["not-a-stream-id", "0-1", "x" * 300], limit=10, flush=flush)
            expected = sorted(["not-a-stream-id", "0-1", "x" * 300])
            self.assertEqual((result["replayed"], result["not_found"]), (0, expected), result)

    # -- cron -------------------------------------------------------------------

    def test_a_corrupt_cron_document_is_reported_and_skipped(self):
        store = get_store(load_config(self.config()), self.action_service)
        for job in ("job-a", "job-b"):
            CronBackoffRecord(config=self.config(), action_service=self.action_service).run(
                job_id=job, succeeded=False, error="boom")
        store.set(KEY_PREFIX + "job-corrupt", {"consecutive_failures": 3, "next_allowed_at": "garbage"})
        store.set(KEY_PREFIX + "job-list", ["not", "a", "document"])
        listing = CronBackoffStatus(config=self.config(), action_service=self.action_service).run()
        self.assertEqual([j["job_id"] for j in listing["jobs"]], ["job-a", "job-b"])
        self.assertEqual(listing["count"], 2)
        self.assertEqual([c["job_id"] for c in listing["corrupt"]], ["job-corrupt", "job-list"])
        self.assertIn("cron_backoff_reset", listing["corrupt"][0]["error"])
        ok, one = CronBackoffStatus(config=self.config(), action_service=self.action_service).run(job_id="job-corrupt")
        self.assertFalse(ok)
        self.assertEqual(one["job_id"], "job-corrupt")
        self.assertIn("corrupt", one["error"])

    # -- health_check -----------------------------------------------------------

    def test_health_check_refuses_nan(self):
        action = HealthCheck(config=self.config(), action_service=self.action_service)
        for value in (float("nan"), float("inf")):
            self.assertEqual(action.run(probe_timeout_s=value, include=["st2_datastore"]),
                             (False, {"error": "probe_timeout_s must be a finite number (not NaN or Infinity)"}))
        self.assertEqual(action.run(probe_timeout_s=1, include=["st2_datastore"])["status"], "ok")

    # -- dead letters in bytes --------------------------------------------------

    def test_a_dead_letter_is_capped_and_the_dead_letters_bounded_in_bytes(self):
        config = self.config(data_plane_url="http://127.0.0.1:9")
        settings = load_config(config)
        box = open_outbox(settings, get_store(settings, self.action_service))
        box.dead_letter_bytes = 300 * 1024  # the budget (64 MiB on Redis, 4 MiB in the datastore), small here
        big = [custom_event("big", {"blob": "b" * (600 * 1024), "n": i}, Correlation({}, st2_execution_id="e%d" % i))
               for i in range(12)]
        self.dead_letter(box, big)
        letters = box.dead_letters(limit=100)
        total = sum(len(json.dumps(d["event"], separators=(",", ":"))) + len(d["reason"]) for d in letters)
        self.assertLessEqual(total, box.dead_letter_bytes)
        self.assertGreaterEqual(len(letters), 3)
        newest = letters[-1]
        self.assertEqual(newest["message_id"], big[-1]["messageId"])  # the newest are kept
        self.assertLessEqual(len(json.dumps(newest["event"])), outbox_module.MAX_DEAD_LETTER_BYTES)
        self.assertIn("cut", json.dumps(newest["event"]))
        stats = box.stats()
        self.assertEqual((stats["dead_letters"], stats["dead_letter_bytes_max"]), (len(letters), box.dead_letter_bytes))
        self.assertLessEqual(stats["dead_letter_bytes"], box.dead_letter_bytes)
        if self.backend == "redis":
            self.assertEqual(stats["dead_letters_dropped"], len(big) - len(letters))
            self.assertEqual(stats["dead_letter_bytes"], total)
            # Replaying (requeueing) every letter takes its bytes off the total.
            box.replay(ids=[d["id"] for d in letters])
            self.assertEqual((box.stats()["dead_letters"], box.stats()["dead_letter_bytes"]), (0, 0))


class BoundsOnDatastore(object):
    """Only in DatastoreBoundsTest."""

    def dead_letter(self, box, events):
        box._dead_letter([(event, "HTTP 400 from the data plane: too big") for event in events])


class BoundsOnRedis(object):
    """Only in RedisBoundsTest."""

    def dead_letter(self, box, events):
        box.dead_letter([(None, event, "HTTP 400 from the data plane: too big") for event in events])

    def test_bullmq_add_job_with_a_10_mb_job_id(self):
        config = self.make_config(bullmq={"redis_url": self.redis.url})
        ok, result = BullMQAddJob(config=config, action_service=self.action_service).run(
            queue="q", name="n", job_id=HUGE)
        self.assertFalse(ok)
        self.assertEqual(result, {"error": "job_id must be at most 256 characters"})
        ok, result = BullMQAddJob(config=config, action_service=self.action_service).run(
            queue="q" * 300, name="n")
        self.assertEqual((ok, result), (False, {"error": "queue must be at most 256 characters"}))


on_both_backends(BoundsContract, "{backend}BoundsTest", datastore=BoundsOnDatastore, redis=BoundsOnRedis)


class DeadLetterSizeTest(unittest.TestCase):
    @settings(max_examples=60, deadline=None)
    @given(texts=st.lists(st.one_of(st.text(max_size=3000),  # and long runs of one character, astral ones too
                                    st.tuples(st.characters(), st.integers(1000, 20000)).map(lambda c: c[0] * c[1])),
                          min_size=1, max_size=12),
           keys=st.integers(min_value=0, max_value=12000),
           name=st.one_of(st.text(max_size=300), st.just("n" * 100000)))  # the event's name comes from outside
    def test_a_letter_never_exceeds_its_bytes(self, texts, keys, name):
        # Big strings, any characters (JSON may escape one in 12 bytes), or very many small keys.
        event = {"messageId": "m-1", "type": "track", "event": name,
                 "properties": dict({"t%d" % i: t for i, t in enumerate(texts)}, **{"k%d" % i: i for i in range(keys)})}
        letter = outbox_module.bounded_letter_event(event)
        self.assertLessEqual(len(json.dumps(letter, separators=(",", ":")).encode("utf-8")),
                             outbox_module.MAX_DEAD_LETTER_BYTES)
        if len(json.dumps(event, separators=(",", ":")).encode("utf-8")) <= outbox_module.MAX_DEAD_LETTER_BYTES:
            self.assertEqual(letter, event)  # a letter that fits is kept whole
        else:
            self.assertEqual(letter["messageId"], "m-1")


class RedactionMasksOnlyTheSecretTest(unittest.TestCase):
    def test_the_word_after_a_credential_key_is_kept(self):
        cases = [
            ("invalid synthralos config: rudderstack.write_key: expected type string",
             "invalid synthralos config: rudderstack.write_key: expected type string"),
            ("agent_api.api_key: must be a string", "agent_api.api_key: must be a string"),
            ("write_key: 2Xyzzy9PlughQ type string", "write_key: *** type string"),
            ("password=Hunter2", "password=***"),
            ("HTTP 401 invalid_api_key: Incorrect API key provided.", "HTTP 401 invalid_api_key: Incorrect API key provided."),
            ("OPENAI_API_KEY=sk-abcd1234efgh", "OPENAI_API_KEY=***"),
        ]
        self.assertEqual([scrub_text(text) for text, _ in cases], [expected for _, expected in cases])


if __name__ == "__main__":
    unittest.main()
