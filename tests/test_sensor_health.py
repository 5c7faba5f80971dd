"""The healer is watched: sensor heartbeats in the store, health_check and metrics reading them, the
flusher sensor's watchdog alerting once per stall episode; no exception escapes a sensor's run loop;
the flusher reads no missing datastore key on its timer. Real redis-server, real st2 (st2tests)."""

import synthralos_tests  # noqa: F401

import json
import shutil
import subprocess
import threading

from st2tests.base import BaseSensorTestCase

from synthralos_lib.ops import metrics, sensor_health
from synthralos_lib.ops.health import check_sensors, health_report
from synthralos_lib.state.config import load_config
from synthralos_lib.state.store import get_store
from synthralos_tests.polling import wait_until
from synthralos_tests.running_sensors import RunningSensorsMixin
from synthralos_tests.st2_storage import st2_refuses

from agent_failure_sensor import AgentFailureSensor
from bullmq_failure_sensor import BullMQFailureSensor
from event_flusher_sensor import EventFlusherSensor

STREAM = "synthralos:agent_executions"
GROUP = "synthralos"
STALE_AFTER_S = 60
T0 = 1796000000.0


class Clock(object):
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class SensorHealthCase(RunningSensorsMixin, BaseSensorTestCase):
    sensor_cls = AgentFailureSensor

    def config(self, **stream):
        section = {"enabled": True, "consumer": "sensor-1", "block_ms": 20, "claim_idle_ms": 200,
                   "reconnect_initial_ms": 20, "reconnect_max_ms": 100}
        section.update(stream)
        return {"redis": {"url": self.redis.url}, "agent_failure_stream": section,
                "sensor_health": {"heartbeat_every_s": 5, "stale_after_s": STALE_AFTER_S, "pending_max_age_s": 600}}

    def agent_sensor(self, clock, **stream):
        sensor = AgentFailureSensor(sensor_service=self.sensor_service, config=self.config(**stream))
        sensor.clock = clock
        sensor.setup()
        return self.run_sensor(sensor)

    def flusher(self, clock):
        sensor = EventFlusherSensor(sensor_service=self.sensor_service, config=self.config())
        sensor.clock = clock
        sensor.setup()
        self.addCleanup(sensor.cleanup)
        return sensor

    def store(self):
        return get_store(load_config(self.config()), self.sensor_service)

    def record(self, name="agent_failure_sensor"):
        return self.store().get(sensor_health.KEY_PREFIX + name)

    def stalled_alerts(self):
        return [t["payload"] for t in self.sensor_service.dispatched_triggers if t["trigger"] == "synthralos.sensor_stalled"]


class StallEpisodeTest(SensorHealthCase):
    def test_a_stalled_sensor_gives_exactly_one_alert_per_episode_and_recovery_ends_it(self):
        sensor_clock, watch_clock = Clock(T0), Clock(T0)
        sensor = self.agent_sensor(sensor_clock)
        wait_until(lambda: (self.record() or {}).get("heartbeat_at") == T0, what="the first heartbeat")
        watchdog = self.flusher(watch_clock)
        self.assertEqual(watchdog.watch(), [])

        # Stall: the read loop hangs (a wedged Redis call, a deadlock) and its heartbeat stops.
        hang, hung = threading.Event(), threading.Event()
        real_poll = sensor._consumer.poll_once

        def hanging_poll():
            hung.set()
            hang.wait(30)
            return real_poll()

        sensor._consumer.poll_once = hanging_poll
        hung.wait(10)
        for minutes in (2, 3, 10):  # one episode however often the watchdog looks
            watch_clock.now = T0 + 60 * minutes
            watchdog.watch()
        alerts = self.stalled_alerts()
        self.assertEqual(len(alerts), 1)
        self.assertEqual((alerts[0]["sensor"], alerts[0]["reason"], alerts[0]["heartbeat_age_s"]),
                         ("agent_failure_sensor", "no heartbeat for 120 s (bound 60 s)", 120.0))
        self.assertIsNone(st2_refuses(alerts[0], "sensor_stalled"))
        [row] = [r for r in check_sensors(load_config(self.config()), self.sensor_service, watch_clock.now)
                 if r["name"] == "sensor:agent_failure_sensor"]
        self.assertEqual((row["status"], row["error"]), ("down", "no heartbeat for 600 s (bound 60 s)"))
        report = health_report(load_config(self.config()), self.sensor_service, include=["sensors"],
                               clock=watch_clock)
        self.assertEqual([(d["name"], d["status"]) for d in report["dependencies"]],
                         [("sensor:agent_failure_sensor", "down"), ("sensor:event_flusher_sensor", "ok")])
        self.assertEqual((report["status"], report["problems"]), (
            "degraded", ["sensor:agent_failure_sensor: down (no heartbeat for 600 s (bound 60 s))"]))

        # Recovery: the loop runs again and beats; the episode ends.
        sensor._consumer.poll_once = real_poll
        sensor_clock.now = watch_clock.now
        hang.set()
        wait_until(lambda: self.record()["heartbeat_at"] == watch_clock.now, what="a fresh heartbeat")
        watch_clock.now += 5
        self.assertEqual(watchdog.watch(), [])
        self.assertEqual(self.store().get(sensor_health.EPISODES_KEY), {})
        self.assertEqual(len(self.stalled_alerts()), 1)

        # A second stall is a second episode: one more alert.
        sensor.cleanup()
        self.running[0][1].join(10)
        self.store().set(sensor_health.KEY_PREFIX + "agent_failure_sensor", dict(self.record(), stopped=False))
        watch_clock.now += 5 + STALE_AFTER_S + 1
        watchdog.watch()
        self.assertEqual(len(self.stalled_alerts()), 2)

    def test_an_entry_pending_too_long_is_down_and_alerts(self):
        real_dispatch = self.sensor_service.dispatch

        def refusing(trigger, payload=None, trace_tag=None):
            if trigger == "synthralos.agent_failure":
                raise RuntimeError("st2 unavailable")
            return real_dispatch(trigger=trigger, payload=payload, trace_tag=trace_tag)

        self.sensor_service.dispatch = refusing
        sensor_clock = Clock(T0)
        sensor = self.agent_sensor(sensor_clock, max_dispatch_attempts=1000)
        entry = self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "e1", "status": "failed"})
        created = int(entry.split("-")[0]) / 1000.0
        sensor_clock.now = created + 700
        wait_until(lambda: (self.record() or {}).get("oldest_pending_age_s") is not None
                   and self.record()["heartbeat_at"] == created + 700, what="a heartbeat with a pending entry")
        record = self.record()
        self.assertEqual((record["pending"], record["lag"]), (1, 0))
        self.assertAlmostEqual(record["oldest_pending_age_s"], 700, delta=1)
        self.assertGreaterEqual(record["dispatch_errors"], 1)
        self.assertEqual(sensor.stats["dispatched"], 0)
        watchdog = self.flusher(Clock(created + 701))
        [alert] = watchdog.watch()
        self.assertEqual(self.stalled_alerts(), [alert])
        self.assertEqual(alert["sensor"], "agent_failure_sensor")
        self.assertTrue(alert["reason"].startswith("oldest pending entry is 70"), alert["reason"])

    def test_an_alert_st2_refused_is_sent_again_at_the_next_check(self):
        store = self.store()
        store.set(sensor_health.KEY_PREFIX + "bullmq_failure_sensor", {"heartbeat_at": T0})
        sent, refuse = [], [True]

        def dispatch(trigger, payload):
            if refuse[0]:
                raise RuntimeError("st2 unavailable")
            sent.append(payload["sensor"])

        options = {"heartbeat_every_s": 5, "stale_after_s": STALE_AFTER_S, "pending_max_age_s": 600}
        watch = sensor_health.StallWatch(store, options, dispatch, clock=Clock(T0 + 100))
        self.assertEqual(watch.check(), [])
        refuse[0] = False
        self.assertEqual([a["sensor"] for a in watch.check(force=True)], ["bullmq_failure_sensor"])
        self.assertEqual(watch.check(force=True), [])
        self.assertEqual(sent, ["bullmq_failure_sensor"])

    def test_metrics_export_the_heartbeats_as_json_and_prometheus(self):
        sensor_clock = Clock(T0)
        sensor = self.agent_sensor(sensor_clock)
        self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "e1", "status": "failed"})
        self.client.xadd(STREAM, {"execution_id": "e2", "status": "failed"})  # dead-lettered
        wait_until(lambda: len(self.sensor_service.dispatched_triggers) == 1, what="the dispatch")
        wait_until(lambda: sensor.stats.get("dead_lettered") == 1, what="the dead letter")
        # Both entries may have been read in the first round, heartbeat at T0: wait for the one at T0 + 5.
        sensor_clock.now = T0 + 5
        wait_until(lambda: (self.record() or {}).get("heartbeat_at") == T0 + 5, what="a heartbeat after the batch")
        self.assertEqual(self.record()["dead_lettered"], 1)
        settings = load_config(self.config())
        collected = metrics.collect(settings, self.store(), clock=lambda: T0 + 6)
        [row] = collected["sensors"]
        self.assertEqual((row["sensor"], row["status"], row["dispatched"], row["dead_lettered"], row["pending"],
                          row["heartbeat_age_s"], row["last_dispatch_at"]),
                         ("agent_failure_sensor", "up", 1, 1, 0, 1.0, T0))
        text = metrics.to_prometheus(collected).splitlines()
        for line in ('synthralos_sensor_up{sensor="agent_failure_sensor"} 1',
                     'synthralos_sensor_dispatched_total{sensor="agent_failure_sensor"} 1',
                     'synthralos_sensor_dead_lettered_total{sensor="agent_failure_sensor"} 1',
                     'synthralos_sensor_stream_pending{sensor="agent_failure_sensor"} 0',
                     'synthralos_sensor_heartbeat_age_seconds{sensor="agent_failure_sensor"} 1'):
            self.assertIn(line, text)
        json.dumps(collected)
        if shutil.which("promtool"):
            check = subprocess.run(["promtool", "check", "metrics"], input=metrics.to_prometheus(collected).encode(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            self.assertEqual(check.returncode, 0, check.stdout.decode())

    def test_heartbeats_are_written_at_most_every_few_seconds(self):
        sensor_clock = Clock(T0)
        self.agent_sensor(sensor_clock)
        wait_until(lambda: self.record() is not None, what="the first heartbeat")
        before = self.client.info("stats")["total_commands_processed"]
        writes = self.client.info("commandstats").get("cmdstat_set", {}).get("calls", 0)
        for n in range(20):  # many rounds at one instant: no new write
            self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "ok-%d" % n, "status": "succeeded"})
        wait_until(lambda: self.client.xpending(STREAM, GROUP)["pending"] == 0 and self.client.xinfo_groups(
            STREAM)[0]["entries-read"] == 20, what="20 entries read")
        self.assertGreater(self.client.info("stats")["total_commands_processed"], before)
        self.assertEqual(self.client.info("commandstats").get("cmdstat_set", {}).get("calls", 0), writes)


class RunLoopTest(SensorHealthCase):
    def test_no_exception_escapes_the_stream_sensors_run_loop(self):
        sensor = AgentFailureSensor(sensor_service=self.sensor_service, config=self.config())
        sensor.setup()
        real_run, calls = sensor._consumer.run, []

        def crashing_run():
            calls.append(1)
            if len(calls) <= 2:
                raise RuntimeError("the consumer blew up")
            return real_run()

        sensor._consumer.run = crashing_run
        self.run_sensor(sensor)
        self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "after-crashes", "status": "failed"})
        wait_until(lambda: self.sensor_service.dispatched_triggers, what="a dispatch after two crashes", timeout=20)
        self.assertEqual((sensor.crashes, len(calls)), (2, 3))

    def test_no_exception_escapes_the_bullmq_sensors_run_loop(self):
        sensor = BullMQFailureSensor(sensor_service=self.sensor_service, config={
            "redis": {"url": self.redis.url}, "bullmq": {"enabled": True, "queues": ["q"], "block_ms": 20,
                                                         "reconnect_max_delay_s": 0.5}})
        clock = Clock(T0)
        sensor.clock = clock
        sensor.setup()
        real_poll, calls = sensor._watcher.poll, []

        def failing_poll():
            calls.append(1)
            if len(calls) <= 2:
                raise KeyError("a reply we did not expect")
            return real_poll()

        sensor._watcher.poll = failing_poll
        self.run_sensor(sensor)
        wait_until(lambda: len(calls) > 3, what="polls after two failures", timeout=20)
        self.assertEqual(sensor.errors, 2)
        self.assertTrue(self.running[0][1].is_alive())
        clock.now += 5
        wait_until(lambda: self.record("bullmq_failure_sensor")["heartbeat_at"] == clock.now, what="a heartbeat")
        self.assertEqual(self.record("bullmq_failure_sensor")["errors"], 2)

    def test_no_exception_escapes_the_flusher_sensors_run_loop(self):
        sensor = self.flusher(Clock(T0))
        calls = []

        def failing_tick():
            calls.append(1)
            if len(calls) <= 2:
                raise ValueError("a bad tick")
            sensor._stopped.set()
            return {"sleep_s": 0}

        sensor.tick = failing_tick
        sensor._wait = lambda seconds: None
        sensor.run()
        self.assertEqual((sensor.stats["errors"], len(calls)), (2, 3))


class QuietDatastoreReadsTest(BaseSensorTestCase):
    """st2api logs a warning for every read of a missing datastore key: the flusher must not read one
    on its timer (it used to read the data-plane state key, missing while all is well, every interval)."""

    sensor_cls = EventFlusherSensor

    def test_the_flusher_reads_no_missing_key_on_its_timer(self):
        from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

        sink = RudderStackSink().start()
        self.addCleanup(sink.stop)
        service = self.sensor_service
        missing_reads = []
        real_get = service.get_value

        def recording_get(name, *args, **kwargs):
            value = real_get(name, *args, **kwargs)
            if value is None:
                missing_reads.append(name)
            return value

        service.get_value = recording_get
        sensor = self.get_sensor_instance(config={"rudderstack": {"write_key": DEFAULT_WRITE_KEY,
                                                                  "data_plane_url": sink.url,
                                                                  "flush_interval_ms": 1000}})
        sensor.setup()
        self.addCleanup(sensor.cleanup)
        clock = Clock(T0)
        sensor._flusher._clock = clock
        sensor.clock = clock
        for _ in range(20):  # 20 flush intervals
            sensor.tick()
            sensor.watch()
            clock.now += 1.5
        self.assertEqual(missing_reads[1:], [])  # at most the watchdog's one first read of its own key
        self.assertLessEqual(len(missing_reads), 1)
