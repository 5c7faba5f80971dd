"""The event flusher sensor (st2tests BaseSensorTestCase) with the agent-facing actions, on both
backends (Redis outbox; st2 datastore queue), against real redis-server and the gateway-faithful
sink: hung, refusing and 503-with-Retry-After data planes, 401/404, poison events, Redis down.

The actions and the sensor share one st2 datastore, as they do in st2.
"""

import synthralos_tests  # noqa: F401

import json
import threading
import time
import unittest

from st2tests.base import BaseSensorTestCase

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.http_server import closed_port_url
from synthralos_tests.polling import wait_until
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from event_flusher_sensor import EventFlusherSensor
from flush_events import FlushEvents
from forward_event import ForwardEvent
from get_queue_stats import GetQueueStats
from synthralos_lib.events.builders import Correlation, custom_event, message_id
from synthralos_lib.events.health import DataPlaneHealth
from synthralos_lib.state.config import load_config
from synthralos_lib.state.store import DatastoreStore, get_store

TRIGGER = "synthralos.rudderstack_config_error"
QUEUE_WHERE = "st2_datastore:synthralos.events.queue.*"



class FlusherContract(StoreBackendMixin):
    sensor_cls = EventFlusherSensor

    def setUp(self):
        super(FlusherContract, self).setUp()
        # One st2 datastore for actions and sensors.
        self.sensor_service._datastore_service = self.action_service.datastore_service
        self.sink = RudderStackSink(disabled_write_keys=("disabled-key",)).start()
        self.addCleanup(self.sink.stop)

    def config(self, **rudder):
        settings = {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url, "max_retries": 1,
                    "retry_delay_ms": 0, "batch_size": 1 if self.backend == "redis" else 20}
        settings.update(rudder)
        return self.make_config(rudderstack=settings)

    def sensor(self, config=None):
        sensor = self.get_sensor_instance(config=config or self.config())
        sensor.setup()
        self.addCleanup(sensor.cleanup)
        return sensor

    def forward(self, config=None, **params):
        params.setdefault("event_type", "agent_execution")
        params.setdefault("status", "succeeded")
        params.setdefault("agent_id", "agent-1")
        action = ForwardEvent(config=config or self.config(), action_service=self.action_service)
        return action.run(**params)

    def health(self, config=None):
        settings = load_config(config or self.config())
        return DataPlaneHealth(get_store(settings, self.action_service))

    def stats(self, config=None):
        return GetQueueStats(config=config or self.config(), action_service=self.action_service).run(
            include_dead_letters=True, limit=20)

    def batch_requests(self):
        return len(self.sink.requests("POST", r"/v1/batch"))

    # -- delivery ----------------------------------------------------------------

    def test_hung_data_plane_costs_one_short_attempt_then_the_sensor_delivers(self):
        self.sink.hang(30)
        first = self.forward(source_execution_id="e-1")
        second = self.forward(source_execution_id="e-2")
        if self.backend == "redis":
            self.assertEqual((first["status"], first["flush"]["status"], first["flush"]["last_error"]),
                             ("queued", "retrying", "network error: ReadTimeout"))
            self.assertEqual((second["status"], second["flush"]["status"]), ("queued", "skipped"))
            self.assertTrue(second["flush"]["reason"].startswith("data plane marked unhealthy (network error"))
        else:
            self.assertEqual((first["status"], first["where"], first["reason"]),
                             ("pending_retry", QUEUE_WHERE, "network error: ReadTimeout"))
            self.assertEqual((second["status"], second["where"], second["reason"]),
                             ("pending_retry", QUEUE_WHERE, "data plane marked unhealthy (network error: ReadTimeout)"))
        self.assertEqual(self.batch_requests(), 1)  # the second call did not wait on the hung data plane
        self.sink.recover()
        tick = self.sensor().tick()
        self.assertEqual(sum(r["delivered"] for r in tick["reports"].values()), 2)
        self.assertEqual(sorted(self.sink.message_ids()),
                         sorted([first["message_id"], second["message_id"]]))
        self.assertEqual(self.get_dispatched_triggers(), [])
        self.assertIsNone(self.health().unhealthy())  # delivered: the mark is cleared
        self.assertEqual(self.forward(source_execution_id="e-3")["status"],
                         "queued" if self.backend == "redis" else "delivered")

    def test_refused_connections_keep_events_until_the_data_plane_is_back(self):
        down = self.config(data_plane_url=closed_port_url())
        result = self.forward(config=down, source_execution_id="e-1")
        if self.backend == "redis":
            self.assertEqual(result["flush"]["last_error"], "network error: ConnectionError")
        else:
            self.assertEqual((result["status"], result["reason"]), ("pending_retry", "network error: ConnectionError"))
        tick = self.sensor(config=down).tick()
        self.assertGreater(tick["sleep_s"], 0)  # backs off while unhealthy
        self.assertEqual([r["status"] for r in tick["reports"].values()], ["retrying"])
        self.assertEqual((self.stats()["depth"], self.stats()["dead_letters"]), (1, 0))
        tick = self.sensor().tick()  # the data plane is reachable again
        self.assertEqual(self.sink.message_ids(), [result["message_id"]])
        self.assertEqual(self.stats()["depth"], 0)

    def test_503_with_retry_after_is_honoured_by_actions_and_the_sensor(self):
        self.sink.outage(503, retry_after=120)
        result = self.forward(source_execution_id="e-1")
        self.assertIn(result["status"], ("queued", "pending_retry"))
        held = self.health().unhealthy()
        self.assertEqual(held["reason"], "HTTP 503: scripted failure")
        self.assertGreater(held["until_ms"] - time.time() * 1000, 110000)  # Retry-After: 120 s, not the 30 s default
        before = self.batch_requests()
        self.forward(source_execution_id="e-2")
        self.assertEqual(self.batch_requests(), before)  # no inline attempt while the data plane said to wait
        tick = self.sensor(config=self.config(max_retries=3)).tick()
        self.assertEqual(tick["sleep_s"], 120.0)
        self.assertEqual(self.batch_requests(), before + 1)  # Retry-After beyond the backoff cap: no retry loop
        self.assertEqual(self.sink.accepted, [])
        self.sink.recover()
        sensor = self.sensor()
        sensor.tick()
        sensor.tick()
        self.assertEqual(sorted(self.sink.message_ids()),
                         sorted(message_id(s, "agent_execution", "") for s in ("e-1", "e-2")))

    def test_poison_event_is_the_only_dead_letter(self):
        settings = load_config(self.config())
        bad = custom_event("bad_event", {"n": 1}, Correlation({}, st2_execution_id="poison"))
        del bad["anonymousId"]
        good = custom_event("good_event", {"n": 2}, Correlation({}, st2_execution_id="fine"))
        if self.backend == "redis":
            from synthralos_lib.events.forwarding import open_outbox
            outbox = open_outbox(settings, get_store(settings, self.action_service))
        else:
            from synthralos_lib.events.outbox import DirectOutbox
            outbox = DirectOutbox(DatastoreStore(self.action_service), settings.section("rudderstack"))
        outbox.enqueue(bad)
        outbox.enqueue(good)
        sensor = self.sensor(config=self.config(batch_size=2))
        sensor.tick()
        self.assertEqual(self.sink.message_ids(), [good["messageId"]])
        stats = self.stats()
        self.assertEqual((stats["depth"], stats["dead_letters"]), (0, 1))
        self.assertEqual(
            [(d["message_id"], d["reason"]) for d in stats["dead_letter_entries"]],
            [(bad["messageId"], "HTTP 400 from the data plane: Request neither has anonymousId nor userId")],
        )

    # -- the config-error trigger --------------------------------------------------

    def expected_alert(self, refused, dead_lettered=0, status=401, body="Invalid Write Key"):
        return {"trigger": TRIGGER, "trace_context": None,
                "payload": {"status": status, "body": body, "data_plane_url": self.sink.url,
                            "dead_lettered": dead_lettered, "refused": refused}}

    def test_config_error_seen_inline_gives_exactly_one_trigger_across_paths(self):
        bad = self.config(write_key="wrong-key")
        first = self.forward(config=bad, source_execution_id="e-1")  # the inline attempt meets the 401
        self.assertEqual(self.get_dispatched_triggers(), [])
        node_a, node_b = self.sensor(config=bad), self.sensor(config=bad)
        node_a.tick()
        node_b.tick()
        flush = FlushEvents(config=bad, action_service=self.action_service).run(force=True, max_batches=5)
        self.assertEqual((flush["status"], flush["alert"]), ("config_error", False))  # the timer path: no second alert
        self.forward(config=bad, source_execution_id="e-2")
        node_a.tick()
        triggers = self.get_dispatched_triggers()
        self.assertEqual(len(triggers), 1)
        self.assertEqual(triggers[0]["trigger"], TRIGGER)
        # refused counts refusals: the inline attempt's and node A's retry of the same event
        self.assertEqual(triggers[0]["payload"], self.expected_alert(refused=2)["payload"])
        # Refused events wait for the fix window: fixing the key delivers them, and frees the alert slot.
        self.assertEqual(self.stats()["dead_letters"], 0)
        fixed = self.sensor()
        fixed.tick()
        fixed.tick()
        self.assertEqual(sorted(self.sink.message_ids()),
                         sorted([first["message_id"], message_id("e-2", "agent_execution", "")]))
        self.forward(config=self.config(write_key="disabled-key"), source_execution_id="e-3")
        self.sensor(config=self.config(write_key="disabled-key")).tick()
        self.assertEqual(self.get_dispatched_triggers()[1:],
                         [self.expected_alert(refused=2, status=404, body="Source is disabled")])

    def test_config_error_seen_by_the_sensor_first_and_dead_lettered_after_the_fix_window(self):
        bad = self.config(write_key="wrong-key", config_error_fix_window_s=0)
        settings = load_config(bad)
        if self.backend == "redis":
            from synthralos_lib.events.forwarding import open_outbox
            outbox = open_outbox(settings, get_store(settings, self.action_service))
        else:
            from synthralos_lib.events.outbox import DirectOutbox
            outbox = DirectOutbox(DatastoreStore(self.action_service), settings.section("rudderstack"))
        for i in range(3):
            outbox.enqueue(custom_event("e", {"i": i}, Correlation({}, st2_execution_id="x-%d" % i)))
        self.sensor(config=self.config(write_key="wrong-key", config_error_fix_window_s=0, batch_size=3)).tick()
        self.assertEqual(self.get_dispatched_triggers(), [self.expected_alert(refused=3, dead_lettered=3)])
        self.assertEqual(self.forward(config=bad, source_execution_id="y")["status"],
                         "queued" if self.backend == "redis" else "pending_retry")  # marked: no inline 401 attempt
        self.sensor(config=bad).tick()
        self.assertEqual(len(self.get_dispatched_triggers()), 1)
        self.assertEqual(self.stats()["dead_letters"], 4)

    def test_refusal_met_inline_after_the_fix_window_still_alerts(self):
        bad = self.config(write_key="wrong-key", config_error_fix_window_s=0)
        result = self.forward(config=bad, source_execution_id="late")
        if self.backend == "datastore":
            self.assertEqual(result["status"], "dead_lettered")  # nothing queued for the sensor to meet
        self.sensor(config=bad).tick()
        self.assertEqual(self.get_dispatched_triggers(), [self.expected_alert(refused=1, dead_lettered=1)])

    def test_missing_write_key_is_said_once(self):
        config = self.config()
        del config["rudderstack"]["write_key"]
        sensor = self.sensor(config=config)
        self.assertEqual([sensor.tick()["sleep_s"] for _ in range(3)], [60.0] * 3)
        warnings = [c for c in self.sensor_service.get_logger("x").warning.call_args_list
                    if "write_key is not set" in c[0][0]]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(self.get_dispatched_triggers(), [])

    # -- the loop ------------------------------------------------------------------------

    def test_run_loop_delivers_and_cleanup_stops_it_promptly(self):
        self.sink.outage(503)
        results = [self.forward(source_execution_id="loop-%d" % i) for i in range(3)]
        self.sink.recover()
        sensor = self.sensor()
        thread = threading.Thread(target=sensor.run)
        thread.start()
        try:
            self.sink.wait_for_requests(1, "POST", r"/v1/batch", timeout=10)
            wait_until(lambda: len(self.sink.accepted) >= 3, "three accepted events", timeout=15.0)
        finally:
            sensor.cleanup()
            thread.join(5)
        self.assertFalse(thread.is_alive())
        self.assertEqual(sorted(self.sink.message_ids()), sorted(r["message_id"] for r in results))


class FlusherOnRedis(object):
    """Only in RedisFlusherTest."""

    def test_sensor_nodes_split_the_outbox_through_the_consumer_group(self):
        config = self.config(batch_size=20)
        node_a, node_b = self.sensor(config=config), self.sensor(config=config)
        settings = load_config(config)
        from synthralos_lib.events.forwarding import open_outbox
        outbox = open_outbox(settings, get_store(settings, self.action_service))
        events = [custom_event("e", {"i": i}, Correlation({}, st2_execution_id="s-%d" % i)) for i in range(40)]
        for event in events:
            outbox.enqueue(event)
        outbox.ensure_group()
        held = node_a._flusher._outbox().read_new(node_a._flusher.consumer, 20)  # node A is mid-batch
        self.assertEqual(len(held), 20)
        node_b.tick()
        self.assertEqual(self.sink.message_ids(), [e["messageId"] for e in events[20:]])  # B never takes A's entries
        self.assertEqual(outbox.stats()["pending"], 20)

    def test_redis_outage_is_reported_once_and_the_datastore_queue_still_drains(self):
        config = self.config()
        config["redis"] = {"url": "redis://127.0.0.1:1/0"}
        self.sink.outage(503)
        result = self.forward(config=config, source_execution_id="r-1")
        self.assertEqual((result["mode"], result["status"], result["where"]),
                         ("direct_fallback", "pending_retry", QUEUE_WHERE))
        self.sink.recover()
        sensor = self.sensor(config=config)
        first, second = sensor.tick(), sensor.tick()
        self.assertEqual(first["reports"]["redis"], {"status": "redis_unavailable", "error": "ConnectionError"})
        self.assertEqual(first["reports"]["datastore"]["delivered"], 1)
        self.assertEqual(second["reports"]["redis"]["status"], "redis_unavailable")
        self.assertEqual(self.sink.message_ids(), [result["message_id"]])
        warnings = [c for c in self.sensor_service.get_logger("x").warning.call_args_list
                    if "Redis outbox unreachable" in c[0][0]]
        self.assertEqual(len(warnings), 1)

    def test_secrets_are_scrubbed_from_the_event_before_it_is_queued(self):
        config = self.config(write_key=DEFAULT_WRITE_KEY, batch_size=20)
        result = self.forward(config=config, source_execution_id="sec", properties={"leak": "key=" + DEFAULT_WRITE_KEY})
        raw = json.dumps(self.redis.client().xrange("synthralos:events:outbox"))
        self.assertNotIn(DEFAULT_WRITE_KEY, raw)
        self.assertIn("key=***", raw)
        self.assertEqual(result["status"], "queued")


on_both_backends(FlusherContract, "{backend}FlusherTest", base=BaseSensorTestCase, redis=FlusherOnRedis)


class QueueStatsPersistenceTest(StoreBackendMixin, unittest.TestCase):
    backend = "redis"

    def setUp(self):
        super(QueueStatsPersistenceTest, self).setUp()
        client = self.redis.client()
        self.addCleanup(client.config_set, "save", "")
        self.addCleanup(client.config_set, "appendfsync", "everysec")
        self.addCleanup(client.config_set, "appendonly", "no")
        self.client = client

    def persistence(self):
        config = self.make_config(rudderstack={"write_key": "persistence-test-write-key"})
        stats = GetQueueStats(config=config, action_service=self.action_service).run(include_dead_letters=False)
        return stats["persistence"], stats["warning"]

    def pick(self, persistence):
        return {k: persistence[k] for k in ("appendonly", "appendfsync", "save", "durable", "restart_loses", "warning")}

    def test_no_persistence_warns_that_a_restart_loses_every_queued_event(self):
        persistence, warning = self.persistence()
        self.assertEqual(self.pick(persistence), {
            "appendonly": "no", "appendfsync": "everysec", "save": "", "durable": False,
            "restart_loses": "every queued event (no AOF, no RDB snapshots)",
            "warning": "Redis does not persist (appendonly no, save \"\"): a restart loses every queued event; "
                       "set appendonly yes"})
        self.assertEqual(warning, persistence["warning"])

    def test_rdb_only_and_aof_settings(self):
        self.client.config_set("save", "900 1")
        self.assertEqual(self.pick(self.persistence()[0])["restart_loses"],
                         "every event queued since the last RDB snapshot (save 900 1)")
        self.client.config_set("appendonly", "yes")
        persistence, warning = self.persistence()
        self.assertEqual(self.pick(persistence), {
            "appendonly": "yes", "appendfsync": "everysec", "save": "900 1", "durable": True,
            "restart_loses": "up to about 1 s of writes", "warning": None})
        self.assertIsNone(warning)
        self.client.config_set("appendfsync", "always")
        self.assertEqual(self.pick(self.persistence()[0])["restart_loses"], "nothing acknowledged (every write is fsynced)")
        self.client.config_set("appendfsync", "no")
        persistence, warning = self.persistence()
        self.assertEqual((persistence["durable"], warning),
                         (False, "Redis AOF uses appendfsync no: a crash can lose recently queued events; "
                                 "use everysec or always"))


class BadConfigSensorTest(BaseSensorTestCase):
    sensor_cls = EventFlusherSensor

    def test_invalid_config_is_logged_once_and_the_sensor_idles(self):
        sensor = self.get_sensor_instance(config={"rudderstack": {"batch_size": "lots", "write_key": "s3cr3t-wk"}})
        sensor.setup()
        self.assertEqual(sensor.tick(), {"sleep_s": 60.0, "reports": {}, "dispatched": []})
        calls = self.sensor_service.get_logger("x").error.call_args_list
        self.assertEqual(len(calls), 1)
        self.assertNotIn("s3cr3t-wk", str(calls))
        self.assertEqual(self.get_dispatched_triggers(), [])
        sensor.cleanup()


class SensorFilesTest(unittest.TestCase):
    def test_sensor_module_reaches_the_library_and_names_its_class(self):
        import os

        import yaml
        from st2reactor.sensor.base import Sensor

        from synthralos_lib.state.config import PACK_ROOT

        meta = yaml.safe_load(open(os.path.join(PACK_ROOT, "sensors", "event_flusher_sensor.yaml")))
        with open(os.path.join(PACK_ROOT, "sensors", meta["entry_point"])) as handle:
            self.assertEqual(handle.readline().split("#")[0].strip(), "import synthralos_sensor_lib")
        self.assertEqual(meta["class_name"], EventFlusherSensor.__name__)
        self.assertTrue(issubclass(EventFlusherSensor, Sensor))

    def test_alert_payload_matches_the_trigger_schema(self):
        import os

        import jsonschema
        import yaml

        from synthralos_lib.events.health import alert_payload
        from synthralos_lib.state.config import PACK_ROOT, to_json_schema

        trigger = yaml.safe_load(open(os.path.join(PACK_ROOT, "triggers", "rudderstack_config_error.yaml")))
        schema = to_json_schema(trigger["payload_schema"]["properties"])
        payload = alert_payload({"status": 404, "body": "Source is disabled", "data_plane_url": "http://dp",
                                 "dead_lettered": 0, "refused": 3, "first_seen_ms": 1})
        jsonschema.validate(payload, schema)
        self.assertEqual(payload, {"status": 404, "body": "Source is disabled", "data_plane_url": "http://dp",
                                   "dead_lettered": 0, "refused": 3})


class RetryAfterTest(unittest.TestCase):
    def test_seconds_and_http_dates(self):
        from synthralos_lib.events.rudderstack import parse_retry_after

        self.assertEqual(parse_retry_after("120"), 120.0)
        self.assertEqual(parse_retry_after(" 1.5 "), 1.5)
        self.assertEqual(parse_retry_after("-3"), 0.0)
        self.assertEqual(parse_retry_after("99999999"), 3600.0)
        self.assertEqual(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412420.0), 60.0)
        for bad in (None, "", "soon", "nan"):
            self.assertIsNone(parse_retry_after(bad), bad)


class InlineClientTest(unittest.TestCase):
    def test_inline_attempts_are_one_short_try(self):
        from synthralos_lib.events.forwarding import inline_client

        client = inline_client({"write_key": "k", "data_plane_url": "http://dp", "request_timeout_s": 10,
                                "max_retries": 5})
        self.assertEqual((client.timeout_s, client.max_retries), (1.0, 0))


class DatastoreQueueBoundTest(StoreBackendMixin, unittest.TestCase):
    backend = "datastore"

    def test_full_datastore_queue_rejects_and_says_so(self):
        from synthralos_lib.events.outbox import DirectOutbox

        store = self.make_store()
        queue = DirectOutbox(store, {"max_queue_length": 100})
        for i in range(100):
            self.assertTrue(queue.enqueue(custom_event("e", {"i": i}, Correlation({}, st2_execution_id="q-%d" % i)))["queued"])
        config = self.make_config(rudderstack={"write_key": DEFAULT_WRITE_KEY, "data_plane_url": closed_port_url(),
                                               "max_queue_length": 100})
        result = ForwardEvent(config=config, action_service=self.action_service).run(
            event_type="agent_failure", status="failed", source_execution_id="one-too-many")
        self.assertEqual((result["status"], result["forwarded"], result["reason"]),
                         ("rejected", False, "datastore queue full (100 events); the event is not kept"))
        self.assertEqual((queue.stats()["depth"], queue.stats()["overflow_rejected"]), (100, 1))
