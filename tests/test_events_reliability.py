"""The Redis outbox and flusher against a real redis-server and the gateway-faithful sink.

Covers the issue's "done when": a flusher killed (SIGKILL, real subprocess)
mid-batch loses nothing and duplicates only with the same messageId; a 503
window is survived; 401 dead-letters and raises an alert; one poison event in
a batch is the only one dead-lettered; replay delivers dead letters.
"""

import json
import os
import signal
import subprocess
import sys
import time
import unittest

import redis

from synthralos_tests.polling import wait_until
from synthralos_tests.redis_server import get_redis_server
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from synthralos_lib.events.builders import Correlation, agent_event, custom_event
from synthralos_lib.events.outbox import RedisOutbox, make_client

FLUSHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthralos_tests", "events_flusher.py")
PREFIX = "synthralos:"


class OutboxTestCase(unittest.TestCase):
    def setUp(self):
        super(OutboxTestCase, self).setUp()
        self.server = get_redis_server()
        self.server.flushall()
        self.redis = redis.Redis.from_url(self.server.url, decode_responses=True)
        self.sink = RudderStackSink(disabled_write_keys=("disabled-key",)).start()
        self.addCleanup(self.sink.stop)

    def rudder(self, **overrides):
        rudder = {
            "write_key": DEFAULT_WRITE_KEY,
            "data_plane_url": self.sink.url,
            "batch_size": 20,
            "max_retries": 2,
            "retry_delay_ms": 1,
            "request_timeout_s": 10,
            "flush_interval_ms": 10000,
            "max_queue_length": 100000,
            "overflow_policy": "reject_new",
            "gzip": True,
        }
        rudder.update(overrides)
        return rudder

    def outbox(self, reclaim_idle_ms=60000, clock=time.time, **overrides):
        return RedisOutbox(self.redis, PREFIX, self.rudder(**overrides), reclaim_idle_ms=reclaim_idle_ms, clock=clock)

    def client(self, **overrides):
        return make_client(self.rudder(**overrides), sleep=lambda s: None)

    def enqueue(self, outbox, count, prefix="exec"):
        events = [
            agent_event("agent_execution", Correlation({}, st2_execution_id="%s-%d" % (prefix, i), agent_id="a"), "succeeded")
            for i in range(count)
        ]
        for event in events:
            self.assertTrue(outbox.enqueue(event)["queued"])
        return events


class FlusherKilledTest(OutboxTestCase):
    def test_flusher_killed_mid_batch_loses_nothing_and_duplicates_keep_their_message_id(self):
        outbox = self.outbox(reclaim_idle_ms=500)
        events = self.enqueue(outbox, 50)
        # The sink records the first batch, then holds its answer (longer than any stall of a
        # busy machine; its stop cuts the wait short); the flusher is killed while it waits.
        self.sink.delay_next(600.0)
        proc = subprocess.Popen(
            [sys.executable, FLUSHER, self.server.url, PREFIX, json.dumps(self.rudder()), "500"],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: len(self.sink.accepted) >= 20, "the first batch at the sink")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        first_batch = self.sink.message_ids()
        self.assertEqual(first_batch, [e["messageId"] for e in events[:20]])
        stats = outbox.stats()
        self.assertEqual((stats["depth"], stats["pending"], stats["delivered"]), (50, 20, 0))

        time.sleep(0.6)  # the dead flusher's entries become reclaimable
        report = outbox.flush(self.client())
        self.assertEqual((report["status"], report["delivered"], report["reclaimed"]), ("ok", 50, 20))

        accepted = self.sink.message_ids()
        self.assertEqual(set(accepted), {e["messageId"] for e in events})  # nothing lost
        duplicates = sorted(m for m in set(accepted) if accepted.count(m) > 1)
        self.assertEqual(duplicates, sorted(first_batch))  # only the in-flight batch, same ids
        self.assertEqual(len(accepted), 70)
        stats = outbox.stats()
        self.assertEqual((stats["depth"], stats["pending"], stats["delivered"], stats["reclaimed"]), (0, 0, 50, 20))

    def test_live_flusher_is_not_robbed_before_the_reclaim_timeout(self):
        outbox = self.outbox(reclaim_idle_ms=60000)
        self.enqueue(outbox, 5)
        outbox.ensure_group()
        held = outbox.read_new("other-flusher", 5)
        self.assertEqual(len(held), 5)
        report = outbox.flush(self.client())
        self.assertEqual((report["delivered"], report["reclaimed"]), (0, 0))
        self.assertEqual(outbox.stats()["pending"], 5)

    def age(self, outbox, consumer, entries, idle_ms=600000):
        """Make pending entries look idle for `idle_ms` (XCLAIM IDLE): Redis's clock, no sleeping."""
        ids = [entry_id for entry_id, _ in entries]
        self.redis.xclaim(outbox.stream, "flushers", consumer, 0, ids, idle=idle_ms, justid=True)

    def test_stale_entries_behind_many_live_ones_are_found(self):
        outbox = self.outbox(reclaim_idle_ms=60000, batch_size=2)
        self.enqueue(outbox, 60, prefix="live")
        self.enqueue(outbox, 3, prefix="stale")
        outbox.ensure_group()
        outbox.read_new("live-flusher", 60)  # still busy: idle well under 60 s
        self.age(outbox, "dead-flusher", outbox.read_new("dead-flusher", 3))
        # XAUTOCLAIM COUNT 2 scans 20 pending entries per call: the stale ones sit on the 4th page.
        claimed = outbox.claim_stale("me", 2)
        self.assertEqual(len(claimed), 2)
        self.assertEqual(sorted(e["properties"]["st2_execution_id"] for _, e in claimed), ["stale-0", "stale-1"])

    def test_claim_stale_reads_the_whole_xautoclaim_reply_on_this_redis_py(self):
        # redis-py 4.1 (st2 3.8's pin) parses XAUTOCLAIM into the entries alone, 6.x into
        # [cursor, entries, deleted ids]; claim_stale must page, parse and ack on both.
        outbox = self.outbox(reclaim_idle_ms=60000)
        self.enqueue(outbox, 4)
        outbox.ensure_group()
        self.assertEqual(outbox.claim_stale("me", 10), [])  # a group, nothing pending
        held = outbox.read_new("dead-flusher", 4)
        self.assertEqual(outbox.claim_stale("me", 10), [])  # pending, not idle long enough
        self.age(outbox, "dead-flusher", held)
        self.redis.xdel(outbox.stream, held[0][0])  # trimmed while pending (drop_oldest)
        claimed = outbox.claim_stale("me", 10)
        self.assertEqual([entry_id for entry_id, _ in claimed], [entry_id for entry_id, _ in held[1:]])
        self.assertEqual([e["properties"]["st2_execution_id"] for _, e in claimed], ["exec-1", "exec-2", "exec-3"])
        pending = self.redis.xpending_range(outbox.stream, "flushers", min="-", max="+", count=10)
        self.assertEqual([(p["message_id"], p["consumer"]) for p in pending], [(i, "me") for i, _ in claimed])

    def test_xpending_fallback_claims_only_stale_entries(self):
        outbox = self.outbox(reclaim_idle_ms=60000)
        self.enqueue(outbox, 3)
        outbox.ensure_group()
        held = outbox.read_new("dead-flusher", 3)
        self.assertEqual(outbox._claim_with_xpending("me", 10), [])
        self.age(outbox, "dead-flusher", held)
        claimed = outbox._claim_with_xpending("me", 10)
        self.assertEqual(len(claimed), 3)
        self.assertTrue(all(event["event"] == "agent_execution" for _, event in claimed))


class OutageTest(OutboxTestCase):
    def test_503_window_then_everything_is_delivered_once(self):
        outbox = self.outbox()
        events = self.enqueue(outbox, 30)
        self.sink.outage(503)
        first = outbox.flush(self.client())
        second = outbox.flush(self.client())
        for report in (first, second):
            self.assertEqual(
                {k: report[k] for k in ("status", "delivered", "retry_later", "requests", "retries", "last_error")},
                {"status": "retrying", "delivered": 0, "retry_later": 20, "requests": 3, "retries": 2,
                 "last_error": "HTTP 503: scripted failure"},
            )
        self.assertEqual(outbox.stats()["depth"], 30)
        self.sink.recover()
        report = outbox.flush(self.client())
        self.assertEqual((report["status"], report["delivered"], report["dead_lettered"]), ("ok", 30, 0))
        self.assertEqual(sorted(self.sink.message_ids()), sorted(e["messageId"] for e in events))
        stats = outbox.stats()
        self.assertEqual((stats["depth"], stats["delivered"], stats["retries"], stats["dead_letters"]), (0, 30, 4, 0))

    def test_dropped_connections_are_retried_within_the_flush(self):
        outbox = self.outbox()
        events = self.enqueue(outbox, 3)
        self.sink.drop_next(2)
        report = outbox.flush(self.client())
        self.assertEqual((report["delivered"], report["retries"]), (3, 2))
        self.assertEqual(self.sink.message_ids(), [e["messageId"] for e in events])


class DeadLetterTest(OutboxTestCase):
    def test_wrong_write_key_dead_letters_after_the_fix_window_and_alerts_once(self):
        outbox = self.outbox(config_error_fix_window_s=0)
        events = self.enqueue(outbox, 5)
        report = outbox.flush(self.client(write_key="wrong-key"))
        self.assertEqual(
            {k: report[k] for k in ("status", "delivered", "dead_lettered", "requests", "retries", "config_error", "alert")},
            {"status": "config_error", "delivered": 0, "dead_lettered": 5, "requests": 1, "retries": 0,
             "config_error": {"status": 401, "body": "Invalid Write Key"}, "alert": True},
        )
        self.assertEqual([d["message_id"] for d in outbox.dead_letters()], [e["messageId"] for e in events])
        self.assertEqual(outbox.dead_letters()[0]["reason"],
                         "HTTP 401 from the data plane: Invalid Write Key (still refused after the fix window)")
        self.enqueue(outbox, 2, prefix="later")
        again = outbox.flush(self.client(write_key="wrong-key"))
        self.assertEqual((again["status"], again["alert"]), ("config_error", False))  # one alert per window
        stats = outbox.stats()
        self.assertEqual((stats["dead_letters"], stats["config_errors"], stats["depth"]), (7, 2, 0))
        self.assertEqual(stats["last_config_error"], {"status": 401, "body": "Invalid Write Key"})
        self.assertEqual(self.sink.accepted, [])

    def test_disabled_source_404_is_a_config_error(self):
        outbox = self.outbox()
        self.enqueue(outbox, 1)
        report = outbox.flush(self.client(write_key="disabled-key"))
        self.assertEqual(report["config_error"], {"status": 404, "body": "Source is disabled"})

    def test_one_poison_event_is_the_only_dead_letter(self):
        outbox = self.outbox()
        events = self.enqueue(outbox, 9)
        bad = custom_event("bad_event", {"n": 1}, Correlation({}, st2_execution_id="poison"))
        del bad["anonymousId"]
        outbox.enqueue(bad)
        report = outbox.flush(self.client())
        self.assertEqual((report["status"], report["delivered"], report["dead_lettered"]), ("ok", 9, 1))
        self.assertEqual(
            report["dead_letters"],
            [{"message_id": bad["messageId"], "event": "bad_event",
              "reason": "HTTP 400 from the data plane: Request neither has anonymousId nor userId"}],
        )
        self.assertEqual(sorted(self.sink.message_ids()), sorted(e["messageId"] for e in events))
        self.assertEqual(outbox.dead_letters()[0]["event"], bad)
        self.assertEqual(outbox.stats()["depth"], 0)

    def test_replay_delivers_dead_letters_once_the_sink_accepts_them(self):
        outbox = self.outbox(config_error_fix_window_s=0)
        events = self.enqueue(outbox, 4)
        outbox.flush(self.client(write_key="wrong-key"))
        letters = outbox.dead_letters()
        self.assertEqual(len(letters), 4)
        picked = outbox.replay(ids=[letters[1]["id"], "0-1"])
        self.assertEqual((picked["replayed"], picked["replayed_ids"], picked["not_found"]), (1, [letters[1]["id"]], ["0-1"]))
        self.assertEqual(outbox.flush(self.client())["delivered"], 1)
        rest = outbox.replay()
        self.assertEqual(rest["replayed"], 3)
        self.assertEqual(outbox.flush(self.client())["delivered"], 3)
        self.assertEqual(sorted(self.sink.message_ids()), sorted(e["messageId"] for e in events))
        stats = outbox.stats()
        self.assertEqual((stats["dead_letters"], stats["replayed"], stats["delivered"]), (0, 4, 4))


    def test_unreadable_outbox_entry_is_dead_lettered_with_its_content(self):
        outbox = self.outbox()
        events = self.enqueue(outbox, 2)
        self.redis.xadd(outbox.stream, {"e": "{not json", "m": ""})
        report = outbox.flush(self.client())
        self.assertEqual((report["delivered"], report["dead_lettered"]), (2, 1))
        letter = outbox.dead_letters()[0]
        self.assertEqual((letter["reason"], letter["event"]), ("unreadable outbox entry (not event JSON)", {"unreadable_entry": "{not json"}))
        self.assertEqual(sorted(self.sink.message_ids()), sorted(e["messageId"] for e in events))


class OverflowTest(OutboxTestCase):
    def test_reject_new_refuses_and_counts(self):
        outbox = self.outbox(max_queue_length=100, overflow_policy="reject_new")
        self.enqueue(outbox, 100)
        extra = agent_event("agent_execution", Correlation({}, st2_execution_id="extra"), "succeeded")
        self.assertEqual(
            outbox.enqueue(extra),
            {"queued": False, "id": None, "dropped": 0, "reason": "outbox full (100 events), overflow_policy reject_new"},
        )
        stats = outbox.stats()
        self.assertEqual((stats["depth"], stats["overflow_rejected"], stats["enqueued"]), (100, 1, 100))

    def test_drop_oldest_trims_and_reports(self):
        outbox = self.outbox(max_queue_length=100, overflow_policy="drop_oldest")
        events = self.enqueue(outbox, 100)
        extra = agent_event("agent_execution", Correlation({}, st2_execution_id="extra"), "succeeded")
        self.assertEqual(outbox.enqueue(extra)["dropped"], 1)
        stats = outbox.stats()
        self.assertEqual((stats["depth"], stats["overflow_dropped"], stats["enqueued"]), (100, 1, 101))
        outbox.flush(self.client())
        delivered = set(self.sink.message_ids())
        self.assertNotIn(events[0]["messageId"], delivered)
        self.assertEqual(delivered, {e["messageId"] for e in events[1:]} | {extra["messageId"]})


class DueTest(OutboxTestCase):
    def test_full_batch_or_old_event_makes_a_flush_due(self):
        now = [1000.0]
        outbox = self.outbox(clock=lambda: now[0], batch_size=5, flush_interval_ms=10000)
        self.assertFalse(outbox.due())
        self.enqueue(outbox, 4)
        now[0] = time.time()
        self.assertFalse(outbox.due())
        self.enqueue(outbox, 1, prefix="fifth")
        self.assertTrue(outbox.due())
        report = outbox.flush(self.client(), force=False)
        self.assertEqual(report["delivered"], 5)
        self.enqueue(outbox, 1, prefix="lonely")
        self.assertFalse(outbox.due())
        self.assertEqual(outbox.flush(self.client(), force=False)["delivered"], 0)
        now[0] = time.time() + 11
        self.assertTrue(outbox.due())
        self.assertEqual(outbox.flush(self.client(), force=False)["delivered"], 1)
