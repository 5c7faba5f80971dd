"""BullMQFailureSensor on jobs failed by the real BullMQ library (node, tests/bullmq), under st2tests.

Each test runs Node scripts that add jobs with BullMQ's Queue.add and fail
them in a real Worker (attempts, backoff, UnrecoverableError, removeOnFail),
then drives the sensor: `drain()` polls until the events streams are read to
the end, as `run()` does in a loop. Dispatched triggers are compared whole.
"""

import synthralos_tests  # noqa: F401

import calendar
import json
import threading

from st2tests.base import BaseSensorTestCase

from bullmq_failure_sensor import BullMQFailureSensor
from synthralos_tests import bullmq_node
from synthralos_tests.polling import wait_until
from synthralos_tests.redis_server import RedisServer, get_redis_server

DETECTED_AT = "2026-01-02T03:04:05.000Z"
DETECTED_EPOCH = calendar.timegm((2026, 1, 2, 3, 4, 5))  # the watcher's clock: epoch seconds
QUEUE = "agent-runs"


def _checks(*items):
    return [{"check": c, "field": f, "detail": d} for c, f, d in items]


class BullMQSensorCase(BaseSensorTestCase):
    sensor_cls = BullMQFailureSensor
    queues = (QUEUE,)

    def setUp(self):
        super(BullMQSensorCase, self).setUp()
        bullmq_node.ensure_node_modules()
        self.server = self.redis_server()
        self.redis = self.server.client()
        self.sensors = []

    def tearDown(self):
        for sensor in self.sensors:
            sensor.cleanup()
        super(BullMQSensorCase, self).tearDown()

    def redis_server(self):
        server = get_redis_server()
        server.flushall()
        return server

    def config(self, **bullmq):
        section = {"enabled": True, "queues": list(self.queues), "block_ms": 50}
        section.update(bullmq)
        return {"bullmq": section, "redis": {"url": self.server.url}}

    def start_sensor(self, service=None, **bullmq):
        if service is not None:
            self.sensor_service = service
        sensor = self.get_sensor_instance(config=self.config(**bullmq))
        sensor.setup()
        sensor._watcher.clock = lambda: DETECTED_EPOCH
        sensor._watcher.start()
        self.sensors.append(sensor)
        return sensor

    def drain(self, sensor):
        while sensor._watcher.poll():
            pass

    def fail_jobs(self, jobs, queue=QUEUE):
        return bullmq_node.run_script("fail_jobs.js", {"port": self.server.port, "queue": queue, "jobs": jobs})

    def job_hash(self, job_id, queue=QUEUE):
        return self.redis.hgetall("bull:%s:%s" % (queue, job_id))

    def expected_raw(self, job_id, event, queue=QUEUE):
        stored = self.job_hash(job_id, queue)
        raw = {"queue": queue, "job_id": job_id, "event": event, "job_found": True, "name": stored["name"],
               "data": json.loads(stored["data"]), "opts": json.loads(stored["opts"]),
               "failedReason": stored["failedReason"], "attemptsMade": int(stored["atm"]),
               "attemptsStarted": int(stored["ats"]), "timestamp": int(stored["timestamp"]),
               "processedOn": int(stored["processedOn"]), "finishedOn": int(stored["finishedOn"])}
        raw["stacktrace"] = json.loads(stored["stacktrace"])[-1]  # the last attempt's, whole: the record fits 8 KB
        return raw

    def duration(self, job_id, queue=QUEUE):
        stored = self.job_hash(job_id, queue)
        return int(stored["finishedOn"]) - int(stored["processedOn"])

    def payload(self, job_id, agent_id, execution_id, failure_type, error, checks, event="failed", trace_context=None,
                queue=QUEUE, **extra):
        payload = {
            "agent_id": agent_id, "execution_id": execution_id, "failure_type": failure_type, "error": error,
            "output_excerpt": None, "duration_ms": self.duration(job_id, queue),
            "evidence": {"summary": "%s: %s" % (failure_type, checks[0]["detail"]), "checks": checks,
                         "failed_tools": []},
            "trace_context": trace_context or {}, "source": "bullmq", "source_id": "%s:%s" % (queue, job_id),
            "raw": self.expected_raw(job_id, event, queue), "detected_at": DETECTED_AT,
        }
        for key, value in extra.items():
            payload[key] = value
        return payload

    def trigger(self, payload, trace_tag):
        return {"trigger": "synthralos.agent_failure", "payload": payload, "trace_context": trace_tag}

    def dispatched(self):
        return [
            {"trigger": t["trigger"], "payload": t["payload"],
             "trace_context": t["trace_context"].trace_tag if t["trace_context"] is not None else None}
            for t in self.get_dispatched_triggers()
        ]

    def plain_failure(self, job_id, reason="planned failure", event="failed"):
        """The trigger of a job failed with a plain Error and no agent data: the job name is the agent."""
        agent = self.job_hash(job_id)["name"]
        payload = self.payload(job_id, agent, "%s:%s" % (QUEUE, job_id), "error", reason,
                               _checks(("error", "status", "status is 'failed'"), ("error", "error", reason)),
                               event=event)
        return self.trigger(payload, "synthralos:%s:%s:%s" % (agent, QUEUE, job_id))


class FailuresTest(BullMQSensorCase):
    def test_failures_dispatched_with_exact_payloads(self):
        sensor = self.start_sensor()
        jobs = self.fail_jobs([
            # retried once (fixed backoff), then failed for good: 'failed' + 'retries-exhausted', one trigger
            {"name": "research", "opts": {"attempts": 2, "backoff": {"type": "fixed", "delay": 10}},
             "data": {"agent_id": "agent-7", "execution_id": "exec-1", "error": "Request timed out after 30000 ms",
                      "trace_id": "trace-abc", "workspace_id": "ws-1",
                      "trace_context": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}},
            # an UnrecoverableError: 'failed' without 'retries-exhausted'
            {"name": "writer", "opts": {"attempts": 3},
             "data": {"agentId": "agent-8", "executionId": "exec-2", "unrecoverable": True,
                      "error": "OpenAI rate limit exceeded"}},
            # the platform's own execution result in the job data
            {"name": "tools", "data": {"agent_id": "agent-9", "error": "tool search failed",
                                       "result": {"status": "completed", "output": "partial answer",
                                                  "tool_results": [{"tool": "search", "status": "failed",
                                                                    "error": "HTTP 500"}]}}},
            {"name": "ok", "data": {"succeed": True}},
        ])
        self.assertEqual([j["state"] for j in jobs], ["failed", "failed", "failed", "completed"])
        self.assertEqual([j["attemptsMade"] for j in jobs], [2, 1, 1, 1])
        self.drain(sensor)

        timeout = self.payload(
            "1", "agent-7", "exec-1", "timeout", "Request timed out after 30000 ms",
            _checks(("timeout", "error", "Request timed out after 30000 ms"), ("error", "status", "status is 'failed'"),
                    ("error", "error", "Request timed out after 30000 ms")),
            trace_context={"trace_id": "trace-abc", "workspace_id": "ws-1",
                           "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
        llm = self.payload(
            "2", "agent-8", "exec-2", "llm_error", "OpenAI rate limit exceeded",
            _checks(("llm_error", "error", "OpenAI rate limit exceeded"), ("error", "status", "status is 'failed'"),
                    ("error", "error", "OpenAI rate limit exceeded")))
        tool = self.payload(
            "3", "agent-9", "agent-runs:3", "tool_failure", "tool search failed",
            _checks(("tool_failure", "tool_results", "tool 'search' HTTP 500"), ("error", "status", "status is 'failed'"),
                    ("error", "error", "tool search failed")),
            output_excerpt="partial answer")
        tool["evidence"]["failed_tools"] = [{"tool": "search", "status": "failed", "error": "HTTP 500",
                                             "tool_call_id": None}]
        # Order of the events stream: job 2 fails at once, 3 next, 1 after its retry.
        got = sorted(self.dispatched(), key=lambda t: t["payload"]["source_id"])
        self.assertEqual(got, [
            self.trigger(timeout, "trace-abc"),
            self.trigger(llm, "synthralos:agent-8:exec-2"),
            self.trigger(tool, "synthralos:agent-9:agent-runs:3"),
        ])
        self.assertEqual(sensor._watcher.stats["dispatched"], 3)

    def test_non_failure_events_dispatch_nothing(self):
        sensor = self.start_sensor()
        self.fail_jobs([{"name": "ok-%d" % i, "data": {"succeed": True}} for i in range(3)]
                       + [{"name": "retried", "data": {"fail_times": 1}, "opts": {"attempts": 2, "backoff": 5}}])
        events = self.redis.xrange("bull:%s:events" % QUEUE)
        self.assertIn("completed", [fields["event"] for _, fields in events])
        self.assertIn("delayed", [fields["event"] for _, fields in events])  # the retried job's retry
        self.drain(sensor)
        self.assertEqual(self.get_dispatched_triggers(), [])
        self.assertEqual(self.redis.get("synthralos:bullmq:bull:%s:cursor" % QUEUE), events[-1][0])

    def test_removed_on_fail_job_dispatched_once_from_the_event(self):
        sensor = self.start_sensor()
        self.fail_jobs([{"name": "gone", "data": {"agent_id": "agent-1"}, "opts": {"removeOnFail": True,
                                                                                     "attempts": 1}}])
        self.assertEqual(self.job_hash("1"), {})
        self.drain(sensor)
        failed_id = [i for i, f in self.redis.xrange("bull:%s:events" % QUEUE) if f["event"] == "failed"][0]
        self.assertEqual(self.dispatched(), [self.trigger({
            "agent_id": "unknown", "execution_id": "agent-runs:1", "failure_type": "error",
            "error": "planned failure", "output_excerpt": None, "duration_ms": None,
            "evidence": {"summary": "error: status is 'failed'",
                         "checks": _checks(("error", "status", "status is 'failed'"),
                                           ("error", "error", "planned failure")),
                         "failed_tools": []},
            "trace_context": {}, "source": "bullmq", "source_id": "agent-runs:1",
            "raw": {"queue": QUEUE, "job_id": "1", "event": "failed", "job_found": False,
                    "failedReason": "planned failure"},
            "detected_at": DETECTED_AT}, "synthralos:unknown:agent-runs:1")])
        self.assertEqual(self.redis.zrange("synthralos:bullmq:bull:%s:dispatched" % QUEUE, 0, -1),
                         ["1|gone|%s" % failed_id])

    def test_secrets_scrubbed_from_payload(self):
        config = self.config()
        config["agent_api"] = {"api_key": "sk-agent-secret-123"}
        sensor = self.get_sensor_instance(config=config)
        sensor.setup()
        sensor._watcher.clock = lambda: DETECTED_EPOCH
        sensor._watcher.start()
        self.sensors.append(sensor)
        self.fail_jobs([{"name": "leaky", "data": {"error": "auth failed with key sk-agent-secret-123"}}])
        self.drain(sensor)
        [trigger] = self.get_dispatched_triggers()
        text = json.dumps(trigger["payload"])
        self.assertNotIn("sk-agent-secret-123", text)
        self.assertEqual(trigger["payload"]["error"], "auth failed with key ***")
        self.assertEqual(trigger["payload"]["raw"]["data"], {"error": "auth failed with key ***"})


class CursorAndGapTest(BullMQSensorCase):
    def test_restart_from_persisted_cursor_dispatches_no_duplicate(self):
        first = self.start_sensor()
        self.fail_jobs([{"name": "a"}, {"name": "b"}])
        self.drain(first)
        self.assertEqual(sorted(t["payload"]["source_id"] for t in self.dispatched()), ["agent-runs:1", "agent-runs:2"])
        first.cleanup()

        self.fail_jobs([{"name": "c"}])  # while no sensor runs
        service = type(self.sensor_service)(sensor_wrapper=self.sensor_service._sensor_wrapper)
        second = self.start_sensor(service=service)
        self.drain(second)
        self.assertEqual(self.dispatched(), [self.plain_failure("3")])
        self.assertEqual(second._watcher.stats["gaps"], 0)

    def test_cursor_saved_before_a_crash_replays_without_duplicates(self):
        first = self.start_sensor()
        self.fail_jobs([{"name": "a"}, {"name": "b"}])
        self.drain(first)
        first.cleanup()
        # A crash after dispatching but before saving the cursor: it points back to the start.
        self.redis.set("synthralos:bullmq:bull:%s:cursor" % QUEUE, "0-0")
        self.fail_jobs([{"name": "c"}])
        service = type(self.sensor_service)(sensor_wrapper=self.sensor_service._sensor_wrapper)
        second = self.start_sensor(service=service)
        self.drain(second)
        self.assertEqual([t["payload"]["source_id"] for t in self.dispatched()], ["agent-runs:3"])
        self.assertEqual(second._watcher.stats["duplicates"], 2)

    def test_gap_trimmed_stream_reconciled_from_failed_set(self):
        first = self.start_sensor()
        self.fail_jobs([{"name": "a"}])
        self.drain(first)
        self.assertEqual([t["payload"]["source_id"] for t in self.dispatched()], ["agent-runs:1"])
        first.cleanup()

        # While the sensor is down: three failures and a success, then the events stream
        # is trimmed past the sensor's cursor (BullMQ trims it to ~maxLenEvents).
        self.fail_jobs([{"name": "b"}, {"name": "c", "data": {"succeed": True}}, {"name": "d"},
                        {"name": "e", "opts": {"attempts": 2, "backoff": 5}}])
        self.redis.xtrim("bull:%s:events" % QUEUE, maxlen=0, approximate=False)
        service = type(self.sensor_service)(sensor_wrapper=self.sensor_service._sensor_wrapper)
        second = self.start_sensor(service=service)
        self.assertEqual(second._watcher.stats["gaps"], 1)
        self.drain(second)
        self.assertEqual(sorted(self.dispatched(), key=lambda t: t["payload"]["source_id"]),
                         [self.plain_failure(job_id, event="reconciled") for job_id in ("2", "4", "5")])

        # Later failures come from the stream again, once each.
        self.fail_jobs([{"name": "f"}])
        self.drain(second)
        self.assertEqual([t["payload"]["source_id"] for t in self.dispatched()][3:], ["agent-runs:6"])
        second.cleanup()

        # A third start: the record holds all five; nothing twice even if it reconciles again.
        service = type(self.sensor_service)(sensor_wrapper=self.sensor_service._sensor_wrapper)
        third = self.start_sensor(service=service)
        third._watcher.reconcile(third._watcher.queues[0], 0)
        self.drain(third)
        self.assertEqual(self.get_dispatched_triggers(), [])

    def test_gap_while_running_overtaken_by_trimming(self):
        sensor = self.start_sensor(batch_size=2)
        self.fail_jobs([{"name": "a"}, {"name": "b"}, {"name": "c"}])
        sensor._watcher.poll()  # reads 2 entries (added/waiting of job 1): a full batch
        self.redis.xtrim("bull:%s:events" % QUEUE, maxlen=0, approximate=False)
        self.drain(sensor)  # the full batch makes it check the stream: a gap, reconciled
        self.assertEqual(sorted(t["payload"]["source_id"] for t in self.dispatched()),
                         ["agent-runs:1", "agent-runs:2", "agent-runs:3"])
        self.assertEqual(sensor._watcher.stats["gaps"], 1)

    def test_first_start_does_not_replay_history(self):
        self.fail_jobs([{"name": "old"}])
        sensor = self.start_sensor()
        self.drain(sensor)
        self.assertEqual(self.get_dispatched_triggers(), [])
        self.fail_jobs([{"name": "new"}])
        self.drain(sensor)
        self.assertEqual([t["payload"]["source_id"] for t in self.dispatched()], ["agent-runs:2"])


class TwoQueuesTest(BullMQSensorCase):
    queues = ("alpha", "beta")

    def test_each_queue_has_its_own_cursor(self):
        sensor = self.start_sensor()
        self.fail_jobs([{"name": "a"}], queue="alpha")
        self.fail_jobs([{"name": "b"}, {"name": "c"}], queue="beta")
        self.drain(sensor)
        self.assertEqual(sorted(t["payload"]["source_id"] for t in self.dispatched()),
                         ["alpha:1", "beta:1", "beta:2"])
        self.assertEqual(sorted(k for k in self.redis.keys("synthralos:bullmq:*")), [
            "synthralos:bullmq:bull:alpha:cursor", "synthralos:bullmq:bull:alpha:dispatched",
            "synthralos:bullmq:bull:beta:cursor", "synthralos:bullmq:bull:beta:dispatched"])


class RunLoopTest(BullMQSensorCase):
    """run() in a green thread, as st2's sensor container runs it."""

    def redis_server(self):
        server = RedisServer().start()
        self.addCleanup(server.stop)
        return server

    def test_redis_restart_under_the_sensor_then_cleanup_returns(self):
        sensor = self.start_sensor(reconnect_max_delay_s=0.5)
        thread = threading.Thread(target=sensor.run)
        thread.start()
        try:
            self.fail_jobs([{"name": "before"}])
            wait_until(lambda: len(self.get_dispatched_triggers()) == 1, "the dispatch before the restart",
                       timeout=20.0)
            self.server.restart()  # same port, empty: the sensor's connections break
            self.fail_jobs([{"name": "after"}])
            wait_until(lambda: len(self.get_dispatched_triggers()) == 2, "a dispatch after the Redis restart",
                       timeout=20.0)
            self.assertEqual([t["payload"]["raw"]["name"] for t in self.get_dispatched_triggers()],
                             ["before", "after"])
            warnings = [c[0][0] for c in self.sensor_service._logger.warning.call_args_list]
            self.assertTrue(any("unreachable" in w or "reconciling" in w for w in warnings), warnings)
        finally:
            sensor.cleanup()
            thread.join(10)
        self.assertFalse(thread.is_alive())

    def test_disabled_sensor_idles_and_stops(self):
        sensor = self.get_sensor_instance(config={"bullmq": {"enabled": False}})
        sensor.setup()
        thread = threading.Thread(target=sensor.run)
        thread.start()
        sensor.cleanup()
        thread.join(5)
        self.assertFalse(thread.is_alive())
        self.assertEqual(self.get_dispatched_triggers(), [])


class SensorLoadsLikeSt2Test(BullMQSensorCase):
    def test_imports_with_only_sensors_dir_added_no_common_libs(self):
        import os
        import subprocess
        import sys

        pack_lib = os.path.join(synthralos_tests.PACK_ROOT, "actions", "lib")
        sensors = os.path.join(synthralos_tests.PACK_ROOT, "sensors")
        # st2's own packages stay importable; the pack's lib does not.
        path = [p for p in sys.path if p and os.path.abspath(p) not in (pack_lib, synthralos_tests.PACK_ROOT,
                                                                         os.path.join(synthralos_tests.PACK_ROOT, "actions"))]
        code = ("import sys; sys.path.insert(0, %r); import bullmq_failure_sensor as m; "
                "print(m.BullMQFailureSensor.__name__, m.bullmq.__name__)" % sensors)
        done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(path)), timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr.decode()[-2000:])
        self.assertEqual(done.stdout.decode().split(), ["BullMQFailureSensor", "synthralos_lib.streams.bullmq"])
