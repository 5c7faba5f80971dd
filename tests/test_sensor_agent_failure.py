"""AgentFailureSensor on a real redis-server, under st2tests' BaseSensorTestCase (eventlet
monkey-patched with the real st2): exact dispatched triggers, non-failures, malformed entries,
Redis restarted under the sensor, a dead consumer's entries reclaimed, two sensors on one group."""

import synthralos_tests  # noqa: F401

import json
import time

from st2tests.base import BaseSensorTestCase
from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper

from synthralos_tests.polling import wait_until
from synthralos_tests.running_sensors import RunningSensorsMixin

from agent_failure_sensor import AgentFailureSensor

STREAM = "synthralos:agent_executions"
DEAD = "synthralos:agent_executions:dead"
GROUP = "synthralos"
NOW = 1796000000.25
DETECTED_AT = "2026-11-30T00:53:20.250Z"
API_KEY = "agent-api-key-9f8e7d"


class AgentFailureSensorTest(RunningSensorsMixin, BaseSensorTestCase):
    sensor_cls = AgentFailureSensor
    maxDiff = None

    def config(self, **stream):
        section = {"enabled": True, "consumer": "sensor-1", "block_ms": 50, "claim_idle_ms": 300,
                   "reconnect_initial_ms": 20, "reconnect_max_ms": 200}
        section.update(stream)
        return {"redis": {"url": self.redis.url}, "agent_api": {"api_key": API_KEY},
                "agent_failure_stream": section}

    def start(self, sensor=None, **stream):
        sensor = sensor or self.get_sensor_instance(config=self.config(**stream))
        sensor.clock = lambda: NOW
        sensor.setup()
        return self.run_sensor(sensor)

    def stop_all(self):
        super(AgentFailureSensorTest, self).stop_all()
        if not self.redis.is_running():
            self.redis.restart()

    def xadd(self, **fields):
        return self.client.xadd(STREAM, {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})

    def pending(self):
        return self.client.xpending(STREAM, GROUP)["pending"]

    def payloads(self, service=None):
        return [item["payload"] for item in (service or self.sensor_service).dispatched_triggers]

    # ------------------------------------------------------------------ failures

    def test_failures_dispatch_exact_triggers(self):
        self.start()
        timeout_id = self.xadd(agent_id="support-bot", execution_id="exec-1", status="timeout",
                               duration_ms="30000", timeout_ms="30000", trace_id="4bf92f3577b34da6")
        llm = {"status": "failed", "llm_error": {"status": 429, "message": "Rate limit reached", "error_class": "rate_limited"},
               "provider": "openai", "model": "gpt-4o", "duration_ms": 812.5}
        llm_id = self.xadd(agent_id="support-bot", execution_id="exec-2", result=llm,
                           trace_context={"trace_id": "t-2", "workspace_id": "ws-1", "ignored": "x"})
        tool = {"status": "failed", "error": "tool search failed with key %s" % API_KEY,
                "tool_results": [{"tool": "search", "status": "error", "error": "HTTP 503"}], "output": "partial"}
        tool_id = self.xadd(agent_id="research-bot", execution_id="exec-3", result=tool)
        wait_until(lambda: len(self.sensor_service.dispatched_triggers) == 3, what="three dispatches")
        self.assertEqual([item["trigger"] for item in self.sensor_service.dispatched_triggers],
                         ["synthralos.agent_failure"] * 3)
        self.assertEqual([item["trace_context"].trace_tag for item in self.sensor_service.dispatched_triggers],
                         ["4bf92f3577b34da6", "t-2", "synthralos:research-bot:exec-3"])
        self.assertEqual(self.payloads(), [
            {
                "agent_id": "support-bot", "execution_id": "exec-1", "failure_type": "timeout", "error": None,
                "output_excerpt": None, "duration_ms": 30000,
                "evidence": {"summary": "timeout: status is 'timeout'", "failed_tools": [], "checks": [
                    {"check": "timeout", "field": "status", "detail": "status is 'timeout'"},
                    {"check": "timeout", "field": "duration_ms", "detail": "ran 30000 ms, limit 30000 ms"}]},
                "trace_context": {"trace_id": "4bf92f3577b34da6"}, "source": "redis_stream", "source_id": timeout_id,
                "raw": {"status": "timeout", "duration_ms": 30000, "timeout_ms": 30000}, "detected_at": DETECTED_AT,
            },
            {
                "agent_id": "support-bot", "execution_id": "exec-2", "failure_type": "llm_error",
                "error": "Rate limit reached", "output_excerpt": None, "duration_ms": 812.5,
                "evidence": {"summary": "llm_error: Rate limit reached", "failed_tools": [], "llm_error_class": "rate_limited",
                             "checks": [{"check": "llm_error", "field": "llm_error", "detail": "Rate limit reached"},
                                        {"check": "error", "field": "status", "detail": "status is 'failed'"}]},
                "trace_context": {"trace_id": "t-2", "workspace_id": "ws-1"}, "source": "redis_stream",
                "source_id": llm_id, "raw": llm, "detected_at": DETECTED_AT,
            },
            {
                "agent_id": "research-bot", "execution_id": "exec-3", "failure_type": "tool_failure",
                "error": "tool search failed with key ***", "output_excerpt": "partial", "duration_ms": None,
                "evidence": {"summary": "tool_failure: tool 'search' HTTP 503",
                             "failed_tools": [{"tool": "search", "status": "error", "error": "HTTP 503", "tool_call_id": None}],
                             "checks": [{"check": "tool_failure", "field": "tool_results", "detail": "tool 'search' HTTP 503"},
                                        {"check": "error", "field": "status", "detail": "status is 'failed'"},
                                        {"check": "error", "field": "error", "detail": "tool search failed with key ***"}]},
                "trace_context": {}, "source": "redis_stream", "source_id": tool_id,
                "raw": dict(tool, error="tool search failed with key ***"), "detected_at": DETECTED_AT,
            },
        ])
        wait_until(lambda: self.pending() == 0, what="acks")
        self.assertNotIn(API_KEY, json.dumps(self.payloads()))

    def test_non_failures_dispatch_nothing_and_are_acked(self):
        sensor = self.start()
        self.xadd(agent_id="a", execution_id="e1", status="succeeded", output="All done")
        self.xadd(agent_id="a", execution_id="e2", status="running")
        self.xadd(agent_id="a", execution_id="e3", result={"output": "no status, nothing wrong"})
        last = self.xadd(agent_id="a", execution_id="e4", status="completed", output={"answer": 42})
        wait_until(lambda: sensor.stats["ignored"] == 4, what="four entries judged")
        wait_until(lambda: self.pending() == 0, what="acks")
        self.assertEqual(self.get_dispatched_triggers(), [])
        self.assertEqual(self.client.xinfo_groups(STREAM)[0]["last-delivered-id"], last)
        self.assertEqual(self.client.exists(DEAD), 0)

    def test_unknown_status_is_a_failure(self):
        self.start()
        self.xadd(agent_id="a", execution_id="e1", status="weird")
        wait_until(lambda: self.get_dispatched_triggers(), what="a dispatch")
        payload = self.payloads()[0]
        self.assertEqual((payload["failure_type"], payload["evidence"]["checks"]),
                         ("unknown_status", [{"check": "unknown_status", "field": "status", "detail": "status is 'weird'"}]))

    # ------------------------------------------------------------------ bad input

    def test_malformed_entries_are_dead_lettered_and_the_sensor_goes_on(self):
        sensor = self.start()
        bad = [
            ({"execution_id": "e1", "status": "failed"}, "field agent_id is missing"),
            ({"agent_id": "a", "status": "failed"}, "field execution_id is missing"),
            ({"agent_id": "a", "execution_id": "e3", "result": "{not json"}, "field result is not valid JSON"),
            ({"agent_id": "a", "execution_id": "e4", "result": "[1, 2]"}, "field result must hold a JSON object"),
            ({"agent_id": "a", "execution_id": "e5"}, "the entry has neither a result field nor a status field"),
            ({"agent_id": "a", "execution_id": "e6", "status": "failed", "duration_ms": "soon"},
             "field duration_ms must be a number"),
            ({"agent_id": "a", "execution_id": "e7", "status": "failed", "tool_results": "{}"},
             "field tool_results must hold a JSON array"),
            ({"agent_id": "a" * 300, "execution_id": "e8", "status": "failed"}, "agent_id must be at most 256 characters"),
            ({"agent_id": "a", "execution_id": "e9", "status": "failed", "trace_context": "\"x\""},
             "field trace_context must hold a JSON object"),
        ]
        ids = [self.client.xadd(STREAM, fields) for fields, _ in bad]
        good = self.xadd(agent_id="a", execution_id="ok", status="failed", error="boom")
        wait_until(lambda: len(self.get_dispatched_triggers()) == 1, what="the good entry")
        wait_until(lambda: self.pending() == 0, what="acks")
        dead = self.client.xrange(DEAD)
        self.assertEqual([(d["entry_id"], d["reason"], json.loads(d["fields"])) for _, d in dead],
                         [(entry_id, reason, fields) for entry_id, (fields, reason) in zip(ids, bad)])
        self.assertEqual({(d["stream"], d["group"], d["consumer"]) for _, d in dead}, {(STREAM, GROUP, "sensor-1")})
        self.assertEqual(self.payloads()[0]["source_id"], good)
        self.assertEqual(sensor.stats["dead_lettered"], len(bad))

    def test_dispatch_error_leaves_the_entry_pending_and_it_is_retried(self):
        calls = []
        original = self.sensor_service.dispatch

        def flaky(**kwargs):
            calls.append(kwargs["payload"]["execution_id"])
            if len(calls) == 1:
                raise RuntimeError("message bus down")
            return original(**kwargs)

        self.sensor_service.dispatch = flaky
        self.start()
        self.xadd(agent_id="a", execution_id="e1", status="failed")
        wait_until(lambda: len(self.get_dispatched_triggers()) == 1, what="the retried dispatch")
        wait_until(lambda: self.pending() == 0, what="the ack")
        self.assertEqual(calls, ["e1", "e1"])

    # ------------------------------------------------------------------ Redis faults

    def test_redis_restarted_under_the_sensor(self):
        sensor = self.start()
        for n in range(5):
            self.xadd(agent_id="a", execution_id="before-%d" % n, status="failed")
        wait_until(lambda: len(self.get_dispatched_triggers()) == 5, what="entries before the restart")
        self.redis.kill()
        time.sleep(0.2)  # the sensor meets a dead Redis and backs off
        self.redis.start()
        client = self.redis.client()
        self.addCleanup(client.connection_pool.disconnect)
        for n in range(5):
            client.xadd(STREAM, {"agent_id": "a", "execution_id": "after-%d" % n, "status": "failed"})
        wait_until(lambda: len(self.get_dispatched_triggers()) == 10, what="entries after the restart")
        self.assertEqual([p["execution_id"] for p in self.payloads()],
                         ["before-%d" % n for n in range(5)] + ["after-%d" % n for n in range(5)])
        self.assertGreaterEqual(sensor.stats["reconnects"], 1)
        wait_until(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, what="acks after the restart")

    def test_redis_down_at_start_then_up(self):
        self.redis.kill()
        self.start()
        time.sleep(0.3)
        self.redis.start()
        client = self.redis.client()
        self.addCleanup(client.connection_pool.disconnect)
        client.xadd(STREAM, {"agent_id": "a", "execution_id": "e1", "status": "failed"})
        wait_until(lambda: len(self.get_dispatched_triggers()) == 1, what="a dispatch once Redis is up")

    # ------------------------------------------------------------------ consumers

    def test_entries_of_a_killed_consumer_are_reclaimed(self):
        self.client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        for n in range(3):
            self.xadd(agent_id="a", execution_id="orphan-%d" % n, status="failed")
        # A consumer reads them and dies before it acks: they stay pending under its name.
        taken = self.client.xreadgroup(GROUP, "dead-consumer", {STREAM: ">"}, count=10)
        self.assertEqual(len(taken[0][1]), 3)
        sensor = self.start(claim_idle_ms=200)
        wait_until(lambda: len(self.get_dispatched_triggers()) == 3, what="the reclaimed entries")
        self.assertEqual([p["execution_id"] for p in self.payloads()], ["orphan-0", "orphan-1", "orphan-2"])
        wait_until(lambda: self.pending() == 0, what="acks")
        self.assertEqual(sensor.stats["reclaimed"], 3)

    def test_two_sensors_on_one_group_split_the_work_without_duplicates(self):
        other_service = MockSensorService(sensor_wrapper=MockSensorWrapper(pack="tests", class_name="AgentFailureSensor"))
        first = self.start(batch=5)
        second = self.start(sensor=AgentFailureSensor(other_service, self.config(consumer="sensor-2", batch=5)))
        total = 200
        for n in range(total):
            self.xadd(agent_id="agent-%d" % (n % 7), execution_id="exec-%d" % n, status="failed")
            if n % 10 == 9:
                time.sleep(0.01)
        both = lambda: self.payloads() + self.payloads(other_service)  # noqa: E731
        wait_until(lambda: len(both()) >= total, what="every entry dispatched")
        time.sleep(0.4)  # longer than claim_idle_ms: a late duplicate would show now
        ids = [p["execution_id"] for p in both()]
        self.assertEqual(sorted(ids), sorted("exec-%d" % n for n in range(total)))
        self.assertGreater(len(self.payloads()), 0)
        self.assertGreater(len(self.payloads(other_service)), 0)
        self.assertEqual(first.stats["dispatched"] + second.stats["dispatched"], total)
        wait_until(lambda: self.pending() == 0, what="acks")
        consumers = {c["name"] for c in self.client.xinfo_consumers(STREAM, GROUP)}
        self.assertEqual(consumers, {"sensor-1", "sensor-2"})

    # ------------------------------------------------------------------ lifecycle

    def test_disabled_or_without_redis_it_idles_and_stops_promptly(self):
        for config in ({"agent_failure_stream": {"enabled": True}}, {"redis": {"url": self.redis.url}}):
            sensor = self.start(sensor=self.get_sensor_instance(config=config))
            self.xadd(agent_id="a", execution_id="e1", status="failed")
            time.sleep(0.1)
            self.assertEqual(self.get_dispatched_triggers(), [])
            self.assertEqual(sensor.stats, {})
            sensor.remove_trigger({"ref": "synthralos.agent_failure"})
            sensor.cleanup()
            self.running[-1][1].join(10)
            self.assertFalse(self.running[-1][1].is_alive())
        self.assertEqual(self.client.exists("synthralos:agent_executions:dead"), 0)
        self.assertEqual(self.client.xinfo_groups(STREAM), [])

    def test_cleanup_stops_a_blocked_reader(self):
        sensor = self.start(block_ms=1000)
        wait_until(lambda: self.client.exists(STREAM) and self.client.xinfo_groups(STREAM), what="the group")
        time.sleep(0.1)  # inside XREADGROUP BLOCK 1000
        sensor.remove_trigger({"ref": "synthralos.agent_failure"})
        sensor.cleanup()
        self.running[-1][1].join(10)
        self.assertFalse(self.running[-1][1].is_alive())


class SensorMetadataTest(BaseSensorTestCase):
    sensor_cls = AgentFailureSensor

    def test_st2_loads_the_class_named_in_the_metadata(self):
        import os
        import sys

        import yaml

        from synthralos_lib.state.config import PACK_ROOT

        with open(os.path.join(PACK_ROOT, "sensors", "agent_failure_sensor.yaml")) as handle:
            meta = yaml.safe_load(handle)
        path = os.path.join(PACK_ROOT, "sensors", meta["entry_point"])
        with open(path) as handle:
            self.assertTrue(handle.readline().startswith("import synthralos_sensor_lib"))
        self.assertNotIn("trigger_types", meta)  # declared once, in triggers/agent_failure.yaml
        from st2common.util.loader import register_plugin_class
        from st2reactor.sensor.base import Sensor

        # st2 3.8's loader (imp.load_source) re-executes the file INTO the module of that name in
        # sys.modules, rebinding the class other tests imported (super() then fails in them):
        # let it load a module of its own.
        module_name = os.path.splitext(os.path.basename(path))[0]
        imported = sys.modules.pop(module_name, None)
        try:
            loaded = register_plugin_class(base_class=Sensor, file_path=path, class_name=meta["class_name"])
        finally:
            if imported is not None:
                sys.modules[module_name] = imported
        self.assertEqual(loaded.__name__, "AgentFailureSensor")
