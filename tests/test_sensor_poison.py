"""Hostile stream entries against AgentFailureSensor / StreamConsumer, on a real redis-server under
the real st2 (eventlet-patched by st2tests): one bad entry never stalls the consumer, nothing acked
is lost later by st2, dead letters are scrubbed and bounded in bytes. The property-based test feeds
random bytes, field sets, depths and sizes and checks every entry's fate."""

import synthralos_tests  # noqa: F401

import json
import threading

from hypothesis import HealthCheck, given, settings, strategies as st
from st2tests.base import BaseSensorTestCase

from synthralos_lib.healing.trigger_payload import refusal
from synthralos_lib.streams.consumer import StreamConsumer, connect_factory
from synthralos_lib.streams.entries import prepare_entry
from synthralos_tests.polling import wait_until
from synthralos_tests.redis_server import get_redis_server
from synthralos_tests.running_sensors import RunningSensorsMixin
from synthralos_tests.st2_storage import st2_refuses

from agent_failure_sensor import AgentFailureSensor

STREAM = "synthralos:agent_executions"
DEAD = "synthralos:agent_executions:dead"
GROUP = "synthralos"
NOW = 1796000000.25
API_KEY = "agent-api-key-9f8e7d"


def nested(depth, leaf="x"):
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_json(depth, **outer):
    """JSON text of `outer` plus "detail": {"a": {"a": ...}} `depth` levels deep (json.dumps would recurse)."""
    inner = '{"a": ' * depth + '"x"' + "}" * depth
    return json.dumps(outer)[:-1] + ', "detail": ' + inner + "}"


def pieces(secret, size=6):
    return [secret[i:i + size] for i in range(len(secret) - size + 1)]


class PoisonSensorTest(RunningSensorsMixin, BaseSensorTestCase):
    sensor_cls = AgentFailureSensor
    maxDiff = None

    def setUp(self):
        super(PoisonSensorTest, self).setUp()
        self.raw = connect_factory(self.redis.url, 50, decode_responses=False)()
        self.addCleanup(self.raw.connection_pool.disconnect)

    def start(self, **stream):
        section = {"enabled": True, "consumer": "sensor-1", "block_ms": 50, "claim_idle_ms": 200,
                   "reconnect_initial_ms": 20, "reconnect_max_ms": 200}
        section.update(stream)
        sensor = self.get_sensor_instance(config={"redis": {"url": self.redis.url}, "agent_api": {"api_key": API_KEY},
                                                  "agent_failure_stream": section})
        sensor.clock = lambda: NOW
        sensor.setup()
        return self.run_sensor(sensor)

    def pending(self):
        return self.client.xpending(STREAM, GROUP)["pending"]

    def dead(self):
        return [fields for _, fields in self.client.xrange(DEAD)]

    def payloads(self):
        return [item["payload"] for item in self.sensor_service.dispatched_triggers]

    def test_a_non_utf8_byte_in_any_field_dead_letters_that_entry_and_the_rest_go_on(self):
        sensor = self.start()
        bad = [
            {b"agent_id": b"bot-\xff", b"execution_id": b"e1", b"status": b"failed"},
            {b"agent_id": b"bot", b"execution_id": b"e2", b"status": b"failed", b"error": b"boom \xc3\x28"},
            {b"agent_id": b"bot", b"execution_id": b"e3", b"status": b"failed", b"extra\xfe": b"x"},
            {b"agent_id": b"bot", b"execution_id": b"e4", b"result": b'{"status": "failed", "error": "\xff"}'},
        ]
        ids = []
        for fields in bad:
            ids.append(self.raw.xadd(STREAM, fields).decode())
            self.raw.xadd(STREAM, {b"agent_id": b"bot", b"execution_id": b"ok-%d" % len(ids), b"status": b"failed"})
        wait_until(lambda: len(self.payloads()) == 4, what="the four good entries")
        wait_until(lambda: self.pending() == 0, what="every entry acked")
        self.assertEqual([p["execution_id"] for p in self.payloads()], ["ok-1", "ok-2", "ok-3", "ok-4"])
        dead = self.dead()
        self.assertEqual([d["entry_id"] for d in dead], ids)
        self.assertEqual([d["reason"] for d in dead], [
            "field agent_id is not valid UTF-8 (byte 0xff at offset 4)",
            "field error is not valid UTF-8 (byte 0xc3 at offset 5)",
            "a field name is not valid UTF-8 (byte 0xfe at offset 5)",
            "field result is not valid UTF-8 (byte 0xff at offset 31)",
        ])
        self.assertEqual(json.loads(dead[0]["fields"])["agent_id"], "bot-\\xff")
        self.assertEqual(sensor.stats["dead_lettered"], 4)

    def test_deep_records_are_bounded_or_dead_lettered_never_acked_then_dropped_by_st2(self):
        self.start()
        self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "deep-300", "result": deep_json(
            300, status="failed", error="boom")})
        deepest = self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "deep-5000", "result": deep_json(
            5000, status="failed")})
        self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "after", "status": "failed"})
        wait_until(lambda: len(self.payloads()) == 2, what="two dispatches")
        wait_until(lambda: self.pending() == 0, what="every entry acked")
        first = self.payloads()[0]
        self.assertEqual(first["execution_id"], "deep-300")
        self.assertIsNone(st2_refuses(first))
        self.assertIn("<nested deeper than 32 levels: cut>", json.dumps(first["raw"]))
        self.assertEqual([(d["entry_id"], d["reason"]) for d in self.dead()],
                         [(deepest, "field result is JSON nested too deep to read")])

    def test_an_integer_wider_than_64_bits_never_reaches_the_payload(self):
        self.start()
        self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "flat", "status": "failed",
                                  "duration_ms": "1" * 30})
        self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "json", "result": '{"status": "failed", '
                                  '"duration_ms": %s, "n": [%s]}' % ("9" * 30, "-" + "9" * 25)})
        wait_until(lambda: len(self.payloads()) == 2, what="two dispatches")
        flat, nested_json = self.payloads()
        self.assertEqual((flat["duration_ms"], flat["raw"]["duration_ms"]), (None, "1" * 30))
        self.assertEqual((nested_json["duration_ms"], nested_json["raw"]["n"]), (None, ["-" + "9" * 25]))
        self.assertIsNone(st2_refuses(flat))
        self.assertIsNone(st2_refuses(nested_json))

    def test_dispatch_refused_every_time_is_dead_lettered_after_the_bounded_attempts(self):
        calls = []

        def refusing(**kwargs):
            calls.append(kwargs["payload"]["execution_id"])
            raise RuntimeError("st2 refused it (token %s)" % API_KEY)

        self.sensor_service.dispatch = refusing
        sensor = self.start(max_dispatch_attempts=3)
        entry = self.client.xadd(STREAM, {"agent_id": "a", "execution_id": "e1", "status": "failed"})
        wait_until(lambda: self.client.xlen(DEAD) == 1, what="the dead letter")
        wait_until(lambda: self.pending() == 0, what="the ack")
        self.assertEqual(calls, ["e1"] * 3)
        dead = self.dead()[0]
        self.assertEqual((dead["entry_id"], dead["reason"]),
                         (entry, "dispatch failed 3 times, last: st2 refused it (token ***)"))
        self.assertEqual(sensor.stats["dispatch_errors"], 3)

    def test_dead_letters_are_scrubbed_capped_and_the_stream_bounded_in_bytes(self):
        self.start(dead_letter_entry_bytes=2048, dead_letter_max_bytes=4 * 2048)
        for n in range(10):
            self.client.xadd(STREAM, {"execution_id": "e%d" % n, "status": "failed", API_KEY: API_KEY * 3,
                                      "blob": ("%s " % API_KEY) * 40000})  # about 1 MB, no agent_id
        wait_until(lambda: self.pending() == 0 and self.client.xinfo_groups(STREAM)[0]["entries-read"] == 10,
                   what="ten entries judged")
        dead = self.client.xrange(DEAD)
        self.assertEqual(len(dead), 4)
        for _, fields in dead:
            self.assertEqual(fields["reason"], "field agent_id is missing")
            size = sum(len(k.encode()) + len(v.encode()) for k, v in fields.items())
            self.assertLessEqual(size, 2048)
            text = json.dumps(fields)
            self.assertEqual([p for p in pieces(API_KEY) if p in text], [])
        self.assertLessEqual(self.redis.client().memory_usage(DEAD), 4 * 2048 * 2)


# ---------------------------------------------------------------------- property-based

_text = st.one_of(st.text(max_size=40), st.binary(max_size=40))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 40), max_value=10 ** 40),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
_json_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)


@st.composite
def entries(draw):
    """A stream entry's fields as bytes: contract fields sometimes, hostile bytes and shapes often."""
    fields = {}
    for name in ("agent_id", "execution_id"):
        if draw(st.integers(0, 9)) > 0:
            fields[name] = draw(st.one_of(st.sampled_from([b"bot", b"exec-1"]), _text))
    shape = draw(st.sampled_from(["flat", "result", "junk"]))
    if shape == "flat":
        fields["status"] = draw(st.one_of(st.sampled_from([b"failed", b"timeout", b"succeeded", b"running"]), _text))
        for name in draw(st.lists(st.sampled_from(["error", "output", "duration_ms", "timeout_ms", "timed_out",
                                                   "tool_results", "llm_error", "trace_id"]), max_size=4)):
            fields[name] = draw(st.one_of(_text, st.integers(-10 ** 40, 10 ** 40).map(lambda n: str(n).encode())))
    elif shape == "result":
        result = draw(st.dictionaries(st.sampled_from(["status", "error", "output", "duration_ms", "tool_results",
                                                       "llm_error", "deep"]), _json_values, max_size=5))
        if draw(st.booleans()):
            result["status"] = draw(st.sampled_from(["failed", "error", "weird", "done"]))
        depth = draw(st.sampled_from([0, 0, 40, 300, 3000]))
        text = (deep_json(depth, **result) if depth else json.dumps(result)).encode()
        if draw(st.booleans()):
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(st.binary(min_size=1, max_size=3)) + text[at:]
        fields["result"] = text
    else:
        fields.update(draw(st.dictionaries(_text, _text, min_size=1, max_size=4)))
    if draw(st.integers(0, 9)) == 0:
        fields["output"] = draw(st.sampled_from([b"x" * 200000, ("\u00e9" * 50000).encode()]))
    return {k if isinstance(k, bytes) else k.encode(): v if isinstance(v, bytes) else v.encode()
            for k, v in fields.items()}


class StreamEntryPropertyTest(BaseSensorTestCase):
    sensor_cls = AgentFailureSensor

    def setUp(self):
        super(StreamEntryPropertyTest, self).setUp()
        self.redis = get_redis_server()

    @settings(max_examples=60, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(st.lists(entries(), min_size=1, max_size=4))
    def test_every_entry_ends_dispatched_storable_ignored_or_dead_lettered(self, batch):
        self.redis.flushall()
        client = connect_factory(self.redis.url, 10, decode_responses=False)()
        dispatched = []
        consumer = StreamConsumer(
            connect=connect_factory(self.redis.url, 10, decode_responses=False), stream=STREAM, group=GROUP,
            consumer="c1", dead_letter_stream=DEAD, block_ms=10, claim_idle_ms=100000, batch=3,
            prepare=lambda entry_id, fields: prepare_entry(entry_id, fields, secrets=[API_KEY], now=NOW),
            dispatch=dispatched.append, secrets=[API_KEY])
        try:
            ids = [client.xadd(STREAM, fields).decode() for fields in batch]
            for _ in range(len(batch) + 2):  # a stall would leave entries unread or pending
                consumer.poll_once()
            self.assertEqual(client.xpending(STREAM, GROUP)["pending"], 0)
            dead = {fields[b"entry_id"].decode(): fields for _, fields in client.xrange(DEAD)}
            sent = {item["payload"]["source_id"]: item["payload"] for item in dispatched}
            for entry_id in ids:
                if entry_id in sent:
                    self.assertIsNone(st2_refuses(sent[entry_id]))
                    self.assertIsNone(refusal(sent[entry_id]))
                elif entry_id in dead:
                    self.assertTrue(dead[entry_id][b"reason"])
                    self.assertLessEqual(sum(len(k) + len(v) for k, v in dead[entry_id].items()), 8192)
                else:  # judged not a failure: it must read as a non-failure again
                    fields = dict(client.xrange(STREAM, entry_id, entry_id)[0][1])
                    text = {k.decode(): v.decode() for k, v in fields.items()}
                    self.assertIsNone(prepare_entry(entry_id, text, now=NOW))
            self.assertEqual(consumer.stats["read"], len(ids))
        finally:
            consumer.stop()
            client.connection_pool.disconnect()
            consumer._close()


class WebhookPathTest(BaseSensorTestCase):
    sensor_cls = AgentFailureSensor

    def test_the_webhook_path_refuses_what_st2_could_not_store_and_bounds_the_rest(self):
        from synthralos_lib.healing.failure_trigger import MalformedFailure, accept_post

        built = accept_post({"agent_id": "a", "execution_id": "e", "result": {
            "status": "failed", "duration_ms": 10 ** 30, "detail": nested(400)}}, "exec-1", now=NOW)
        self.assertIsNone(built["payload"]["duration_ms"])
        self.assertIsNone(st2_refuses(built["payload"]))
        self.assertIn("<nested deeper than 32 levels: cut>", json.dumps(built["payload"]["raw"]))
        with self.assertRaises(MalformedFailure):  # ids are still checked first
            accept_post({"agent_id": "a\x00", "execution_id": "e", "result": {"status": "failed"}}, "x", now=NOW)


# ---------------------------------------------------------------------- BullMQ

BULL_QUEUE = "agent-runs"
BULL_DEAD = "synthralos:bullmq:dead"


class BullMQPoisonCase(BaseSensorTestCase):
    """Failed jobs written as BullMQ lays them out (job hash, `failed` event), with hostile content:
    what a misbehaving platform writing the queue's keys itself would leave."""

    from bullmq_failure_sensor import BullMQFailureSensor as sensor_cls

    def setUp(self):
        super(BullMQPoisonCase, self).setUp()
        self.server = get_redis_server()
        self.server.flushall()
        self.client = self.server.client()
        self.raw = connect_factory(self.server.url, 50, decode_responses=False)()
        self.addCleanup(self.client.connection_pool.disconnect)
        self.addCleanup(self.raw.connection_pool.disconnect)
        self.sensors = []
        self.addCleanup(self.stop_sensors)
        self.next_ms = 1700000000000

    def stop_sensors(self):
        for sensor, thread in self.sensors:
            sensor.cleanup()
            if thread is not None:
                thread.join(10)
                self.assertFalse(thread.is_alive(), "the sensor did not stop")

    def start_sensor(self, run=False, **bullmq):
        section = {"enabled": True, "queues": [BULL_QUEUE], "block_ms": 20, "reconnect_max_delay_s": 0.5}
        section.update(bullmq)
        sensor = self.get_sensor_instance(config={"bullmq": section, "redis": {"url": self.server.url},
                                                  "agent_api": {"api_key": API_KEY}})
        sensor.clock = lambda: NOW
        sensor.setup()
        sensor._watcher.start()
        thread = None
        if run:
            thread = threading.Thread(target=sensor.run)
            thread.daemon = True
            thread.start()
        self.sensors.append((sensor, thread))
        return sensor

    def fail_job(self, job_id, data=b"{}", reason=b"boom", name=b"support-bot", extra=None):
        """HSET the job hash and XADD its `failed` event as BullMQ's moveToFailed does; returns the event id."""
        self.next_ms += 1000
        fields = {b"name": name, b"data": data, b"opts": b'{"attempts":1}', b"timestamp": b"%d" % self.next_ms,
                  b"processedOn": b"%d" % (self.next_ms + 10), b"finishedOn": b"%d" % (self.next_ms + 60),
                  b"atm": b"1", b"ats": b"1", b"failedReason": reason}
        fields.update(extra or {})
        self.raw.hset(b"bull:%s:" % BULL_QUEUE.encode() + job_id, mapping=fields)
        return self.raw.xadd(b"bull:%s:events" % BULL_QUEUE.encode(),
                             {b"event": b"failed", b"jobId": job_id, b"failedReason": reason,
                              b"prev": b"active"}).decode()

    def drain(self, sensor):
        while sensor._watcher.poll():
            pass

    def payloads(self):
        return [item["payload"] for item in self.sensor_service.dispatched_triggers]

    def dead(self):
        return [fields for _, fields in self.client.xrange(BULL_DEAD)]


class BullMQPoisonTest(BullMQPoisonCase):
    def test_non_utf8_bytes_in_data_reason_or_id_dead_letter_that_job_and_the_rest_go_on(self):
        sensor = self.start_sensor()
        self.fail_job(b"1", data=b'{"agent_id": "bot-\xff"}')
        self.fail_job(b"2", reason=b"broke \xfe")
        self.fail_job(b"job-\xff3")
        self.fail_job(b"4", reason=b"real failure")
        self.drain(sensor)
        self.drain(sensor)  # read again: nothing is retried, nothing stalls
        self.assertEqual([(p["source_id"], p["error"]) for p in self.payloads()], [("agent-runs:4", "real failure")])
        self.assertEqual([(d["job_id"], d["reason"]) for d in self.dead()], [
            ("1", "job field data is not valid UTF-8 (byte 0xff at offset 18)"),
            ("2", "the event's failedReason is not valid UTF-8 (byte 0xfe at offset 6)"),
            ("job-\\xff3", "jobId is not valid UTF-8 (byte 0xff at offset 4)"),
        ])
        self.assertEqual(self.client.get("synthralos:bullmq:bull:%s:cursor" % BULL_QUEUE),
                         self.client.xrevrange("bull:%s:events" % BULL_QUEUE, count=1)[0][0])
        self.assertEqual(sensor._watcher.stats["dead_lettered"], 3)

    def test_data_nested_5000_deep_and_wide_integers_are_dispatched_as_st2_can_store_them(self):
        sensor = self.start_sensor()
        deep = ('{"result": {"status": "failed", "duration_ms": %s}, "x": ' % ("7" * 30)
                + "[" * 5000 + "]" * 5000 + "}").encode()
        self.fail_job(b"1", data=deep)
        self.fail_job(b"2", data=deep_json(300, agent_id="bot", result={"status": "failed"}).encode())
        self.fail_job(b"3", data=json.dumps({"result": {"status": "failed", "duration_ms": 10 ** 30}}).encode())
        self.drain(sensor)
        payloads = self.payloads()
        self.assertEqual([p["source_id"] for p in payloads], ["agent-runs:1", "agent-runs:2", "agent-runs:3"])
        for payload in payloads:
            self.assertIsNone(st2_refuses(payload))
        self.assertEqual([p["duration_ms"] for p in payloads], [50, 50, None])
        self.assertIn("<nested deeper than 32 levels: cut>", json.dumps(payloads[1]["raw"]))
        self.assertEqual(self.dead(), [])

    def test_a_dispatch_st2_keeps_refusing_is_dead_lettered_after_the_bounded_attempts(self):
        calls = []

        def refusing(**kwargs):
            calls.append(kwargs["payload"]["source_id"])
            raise RuntimeError("refused, token %s" % API_KEY)

        self.sensor_service.dispatch = refusing
        sensor = self.start_sensor(run=True, max_dispatch_attempts=3)
        self.fail_job(b"7")
        wait_until(lambda: self.client.xlen(BULL_DEAD) == 1, what="the dead letter")
        self.assertEqual(calls, ["agent-runs:7"] * 3)
        self.assertEqual(self.dead()[0]["reason"], "dispatch failed 3 times, last: RuntimeError: refused, token ***")
        self.assertEqual(sensor.errors, 2)


_byteish = st.one_of(st.binary(max_size=30), st.text(max_size=30).map(lambda t: t.encode()))


@st.composite
def bull_jobs(draw):
    """(job id, job hash fields, failedReason) with hostile bytes, shapes and depths."""
    job_id = draw(st.one_of(st.integers(1, 10 ** 6).map(lambda n: b"%d" % n), _byteish.filter(
        lambda b: b and b":" not in b)))
    data = draw(st.one_of(
        st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(
            st.sampled_from(["agent_id", "execution_id", "result", "trace_id", "x"]), _json_values, max_size=4)),
        st.sampled_from([0, 40, 300, 3000, 6000]).map(lambda n: deep_json(n, agent_id="a").encode()),
        _byteish))
    extra = {}
    for field in draw(st.lists(st.sampled_from([b"atm", b"finishedOn", b"processedOn", b"name", b"stacktrace"]),
                               max_size=3)):
        extra[field] = draw(st.one_of(_byteish, st.integers(-10 ** 30, 10 ** 30).map(lambda n: b"%d" % n)))
    return job_id, data, draw(_byteish), extra


class BullMQJobPropertyTest(BullMQPoisonCase):
    @settings(max_examples=50, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                                     HealthCheck.function_scoped_fixture])
    @given(st.lists(bull_jobs(), min_size=1, max_size=4, unique_by=lambda job: job[0]))
    def test_every_failed_job_ends_dispatched_storable_or_dead_lettered(self, jobs):
        self.server.flushall()
        self.sensor_service.dispatched_triggers = []
        sensor = self.start_sensor()
        events = [self.fail_job(job_id, data=data, reason=reason, extra=extra) for job_id, data, reason, extra in jobs]
        for _ in range(3):  # a stall would leave the cursor behind
            self.drain(sensor)
        self.assertEqual(self.client.get("synthralos:bullmq:bull:%s:cursor" % BULL_QUEUE), events[-1])
        sent = {p["source_id"]: p for p in self.payloads()}
        dead = {d["job_id"]: d for d in self.dead()}
        self.assertEqual(len(sent) + len(dead), len(jobs))
        for payload in sent.values():
            self.assertIsNone(st2_refuses(payload))
        for letter in dead.values():
            self.assertTrue(letter["reason"])
            self.assertLessEqual(sum(len(k.encode()) + len(v.encode()) for k, v in letter.items()), 8192)
        sensor.cleanup()
        sensor._client.connection_pool.disconnect()
        sensor._watcher.raw.connection_pool.disconnect()
        self.sensors = []
