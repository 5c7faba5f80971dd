"""Replaying dead letters while the data plane still refuses them (401 unknown write key, 404 disabled
source), on both outboxes (real redis-server; st2 datastore), against the gateway-faithful sink.

A refused replay must behave like a refused flush: the letters stay dead-lettered with the new
reason, the result lists them in `rejected` with the config error, the stats count it, and the
flusher sensor dispatches `synthralos.rudderstack_config_error` once, as for any other path.
"""

import synthralos_tests  # noqa: F401

import unittest

from st2tests.base import BaseSensorTestCase

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from event_flusher_sensor import EventFlusherSensor
from get_queue_stats import GetQueueStats
from replay_dead_letters import ReplayDeadLetters
from synthralos_lib.events.builders import Correlation, custom_event
from synthralos_lib.events.forwarding import open_outbox
from synthralos_lib.events.health import DataPlaneHealth
from synthralos_lib.events.outbox import make_client
from synthralos_lib.state.config import load_config
from synthralos_lib.state.store import get_store

TRIGGER = "synthralos.rudderstack_config_error"
REFUSALS = {
    401: ("wrong-key", "Invalid Write Key"),
    404: ("disabled-key", "Source is disabled"),
}


class ReplayRefusedContract(StoreBackendMixin):
    sensor_cls = EventFlusherSensor

    def setUp(self):
        super(ReplayRefusedContract, self).setUp()
        self.sensor_service._datastore_service = self.action_service.datastore_service  # one st2 datastore
        self.sink = RudderStackSink(disabled_write_keys=("disabled-key",)).start()
        self.addCleanup(self.sink.stop)

    def config(self, write_key=DEFAULT_WRITE_KEY, **rudder):
        settings = {"write_key": write_key, "data_plane_url": self.sink.url, "max_retries": 1, "retry_delay_ms": 0,
                    "config_error_fix_window_s": 0, "batch_size": 20}
        settings.update(rudder)
        return self.make_config(rudderstack=settings)

    def outbox(self, config):
        settings = load_config(config)
        return open_outbox(settings, get_store(settings, self.action_service))

    def client(self, config):
        return make_client(config["rudderstack"], sleep=lambda s: None)

    def health(self):
        settings = load_config(self.config())
        return DataPlaneHealth(get_store(settings, self.action_service))

    def stats(self):
        return GetQueueStats(config=self.config(), action_service=self.action_service).run(
            include_dead_letters=True, limit=20)

    def alert(self, status, dead_lettered, refused):
        return {"trigger": TRIGGER, "trace_context": None,
                "payload": {"status": status, "body": REFUSALS[status][1], "data_plane_url": self.sink.url,
                            "dead_lettered": dead_lettered, "refused": refused}}

    def refused_reason(self, status):
        return "HTTP %d from the data plane: %s" % (status, REFUSALS[status][1])

    def dead_letters_refused_with(self, status):
        """Two dead letters left by a flush refused with `status` after the fix window; the alert for it is
        dispatched, then the key is fixed (a delivery works, which clears the error and frees the alert slot)."""
        bad = self.config(REFUSALS[status][0])
        outbox = self.outbox(bad)
        events = [custom_event("replayed", {"n": i}, Correlation({}, st2_execution_id="dead-%d" % i)) for i in range(2)]
        events.sort(key=lambda e: e["messageId"])  # the datastore queue's order within one millisecond
        for event in events:
            self.assertTrue(outbox.enqueue(event)["queued"])
        report = outbox.flush(self.client(bad), claim_alert=False)
        self.assertEqual((report["status"], report["dead_lettered"], report["alert"]), ("config_error", 2, False))
        self.sensor(bad).tick()
        self.assertEqual(self.get_dispatched_triggers(), [self.alert(status, dead_lettered=2, refused=2)])
        good = self.outbox(self.config())
        fine = custom_event("fine", {}, Correlation({}, st2_execution_id="fine"))
        good.enqueue(fine)
        self.assertEqual(good.flush(self.client(self.config()))["delivered"], 1)
        self.assertIsNone(self.health().pending_config_error())
        self.assertEqual(self.sink.message_ids(), [fine["messageId"]])
        letters = outbox.dead_letters()
        self.assertEqual([(d["message_id"], d["reason"]) for d in letters],
                         [(e["messageId"], self.refused_reason(status) + " (still refused after the fix window)")
                          for e in events])
        return events, letters

    def sensor(self, config):
        sensor = self.get_sensor_instance(config=config)
        sensor.setup()
        self.addCleanup(sensor.cleanup)
        return sensor

    def replay(self, config, **params):
        params.setdefault("ids", [])
        params.setdefault("limit", 1000)
        params.setdefault("flush", True)
        return ReplayDeadLetters(config=config, action_service=self.action_service).run(**params)

    def assert_refused_replay(self, status, first_status):
        events, letters = self.dead_letters_refused_with(first_status)
        bad = self.config(REFUSALS[status][0])
        result = self.replay(bad, ids=[letters[0]["id"], letters[1]["id"], "0-1"])
        after = self.outbox(bad).dead_letters()
        reason = self.refused_reason(status)
        # The letters stay dead-lettered, oldest first, with the new reason (the Redis stream gives them new ids).
        self.assertEqual([(d["message_id"], d["reason"], d["event"]) for d in after],
                         [(e["messageId"], reason, e) for e in events])
        self.assertEqual(
            result,
            {"mode": "outbox" if self.backend == "redis" else "direct", "replayed": 0, "replayed_ids": [],
             "rejected": [{"id": letters[i]["id"], "reason": reason, "dead_letter_id": after[i]["id"]} for i in (0, 1)],
             "not_found": ["0-1"], "config_error": {"status": status, "body": REFUSALS[status][1]}},
        )
        self.assertEqual(self.sink.statuses()[-1], status)
        stats = self.stats()
        self.assertEqual((stats["depth"], stats["dead_letters"], stats["replayed"], stats["config_errors"]), (0, 2, 0, 2))
        self.assertEqual(stats["last_config_error"], {"status": status, "body": REFUSALS[status][1]})
        self.assertEqual([d["reason"] for d in stats["dead_letter_entries"]], [reason, reason])
        # Recorded like a refused flush: the data plane is marked, and the flusher sensor alerts once.
        self.assertEqual(self.health().unhealthy()["reason"], "HTTP %d from the data plane" % status)
        self.sensor(bad).tick()
        self.sensor(bad).tick()
        self.assertEqual(self.get_dispatched_triggers()[1:], [self.alert(status, dead_lettered=2, refused=2)])
        return after

    def test_replay_refused_with_401_stays_dead_lettered_rejected_and_alerts(self):
        self.assert_refused_replay(401, first_status=404)

    def test_replay_refused_with_404_stays_dead_lettered_rejected_and_alerts(self):
        self.assert_refused_replay(404, first_status=401)

    def test_replay_after_the_fix_delivers_what_a_refused_replay_kept(self):
        events, _ = self.dead_letters_refused_with(401)
        refused = self.replay(self.config("disabled-key"))
        self.assertEqual((refused["replayed"], len(refused["rejected"])), (0, 2))
        kept = self.outbox(self.config()).dead_letters()
        result = self.replay(self.config())
        self.assertEqual(result, {"mode": "outbox" if self.backend == "redis" else "direct", "replayed": 2,
                                  "replayed_ids": sorted(d["id"] for d in kept), "rejected": [], "not_found": [],
                                  "config_error": None})
        self.assertEqual(self.sink.message_ids()[1:], [e["messageId"] for e in events])
        stats = self.stats()
        self.assertEqual((stats["dead_letters"], stats["replayed"], stats["depth"]), (0, 2, 0))
        self.assertIsNone(self.health().pending_config_error())
        self.assertIsNone(self.health().unhealthy())


    def test_replay_while_the_data_plane_is_down_leaves_the_letters_as_they_were(self):
        events, letters = self.dead_letters_refused_with(401)
        self.sink.outage(503)
        result = self.replay(self.config())
        self.assertEqual(
            result,
            {"mode": "outbox" if self.backend == "redis" else "direct", "replayed": 0, "replayed_ids": [],
             "rejected": [{"id": d["id"], "reason": "retry later: HTTP 503: scripted failure", "dead_letter_id": d["id"]}
                          for d in letters],
             "not_found": [], "config_error": None},
        )
        self.assertEqual(self.outbox(self.config()).dead_letters(), letters)
        self.assertEqual(self.health().unhealthy()["reason"], "HTTP 503: scripted failure")
        self.assertEqual(self.sink.statuses()[-2:], [503, 503])  # one retry (max_retries 1), then left alone
        self.sensor(self.config()).tick()
        self.assertEqual(len(self.get_dispatched_triggers()), 1)  # only the first refusal's alert

    def test_a_poison_letter_replayed_is_rejected_with_the_gateways_reason(self):
        outbox = self.outbox(self.config())
        bad = custom_event("bad_event", {"n": 1}, Correlation({}, st2_execution_id="poison"))
        del bad["anonymousId"]
        outbox.enqueue(bad)
        outbox.flush(self.client(self.config()), claim_alert=False)
        letter = outbox.dead_letters()[0]
        result = self.replay(self.config())
        after = outbox.dead_letters()
        reason = "HTTP 400 from the data plane: Request neither has anonymousId nor userId"
        self.assertEqual(result["rejected"], [{"id": letter["id"], "reason": reason, "dead_letter_id": after[0]["id"]}])
        self.assertEqual([(d["reason"], d["event"]) for d in after], [(reason, bad)])
        self.assertEqual((result["replayed"], result["config_error"]), (0, None))


class ReplayRefusedOnDatastore(object):
    """Only in DatastoreReplayRefusedTest."""

    def test_replay_without_flush_still_resends(self):
        # The datastore outbox cannot requeue (can_requeue): flush=false resends now, as flush=true does.
        events, letters = self.dead_letters_refused_with(401)
        result = self.replay(self.config(), flush=False)
        self.assertEqual(result, {"mode": "direct", "replayed": 2, "replayed_ids": sorted(d["id"] for d in letters),
                                  "rejected": [], "not_found": [], "config_error": None})
        self.assertEqual(self.sink.message_ids()[1:], [e["messageId"] for e in events])
        self.assertEqual(self.stats()["dead_letters"], 0)

    def test_an_inline_refusal_after_the_fix_window_counts_its_dead_letter(self):
        from forward_event import ForwardEvent

        result = ForwardEvent(config=self.config("wrong-key"), action_service=self.action_service).run(
            event_type="agent_execution", status="succeeded", source_execution_id="late", agent_id="a")
        self.assertEqual((result["status"], result["delivery"]["status"], result["delivery"]["dead_lettered"],
                          result["delivery"]["retry_later"]), ("dead_lettered", "config_error", 1, 0))


class ReplayRefusedOnRedis(object):
    """Only in RedisReplayRefusedTest."""

    def test_replay_without_flush_only_requeues(self):
        events, letters = self.dead_letters_refused_with(401)
        before = len(self.sink.request_log)
        twice = [letters[0]["id"], letters[0]["id"], letters[1]["id"]]  # an id given twice is requeued once
        result = self.replay(self.config("wrong-key"), ids=twice, flush=False)
        self.assertEqual(result, {"mode": "outbox", "replayed": 2, "replayed_ids": [d["id"] for d in letters],
                                  "rejected": [], "not_found": []})
        self.assertEqual(len(self.sink.request_log), before)  # nothing sent: a flush delivers
        stats = self.stats()
        self.assertEqual((stats["depth"], stats["dead_letters"], stats["replayed"]), (2, 0, 2))
        self.assertEqual(self.outbox(self.config()).flush(self.client(self.config()))["delivered"], 2)
        self.assertEqual(self.sink.message_ids()[1:], [e["messageId"] for e in events])


on_both_backends(ReplayRefusedContract, "{backend}ReplayRefusedTest",
                 base=BaseSensorTestCase, datastore=ReplayRefusedOnDatastore, redis=ReplayRefusedOnRedis)


if __name__ == "__main__":
    unittest.main()
