"""The RudderStack client against the local gateway-faithful sink (real HTTP), and the sink itself."""

import base64
import gzip
import json
import unittest

import requests

from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from synthralos_lib.events.builders import Correlation, agent_event
from synthralos_lib.events.rudderstack import RudderStackClient, backoff_delay


def make_events(count, prefix="exec"):
    return [
        agent_event("agent_execution", Correlation({}, st2_execution_id="%s-%d" % (prefix, i), agent_id="a"), "succeeded")
        for i in range(count)
    ]


def poison(event):
    """A copy the gateway rejects: neither userId nor anonymousId."""
    bad = json.loads(json.dumps(event))
    bad.pop("anonymousId", None)
    bad.pop("userId", None)
    return bad


class SinkTestCase(unittest.TestCase):
    def setUp(self):
        super(SinkTestCase, self).setUp()
        self.sink = RudderStackSink(disabled_write_keys=("disabled-key",)).start()
        self.addCleanup(self.sink.stop)
        self.sleeps = []

    def client(self, write_key=DEFAULT_WRITE_KEY, **kwargs):
        kwargs.setdefault("max_retries", 3)
        kwargs.setdefault("retry_delay_ms", 100)
        return RudderStackClient(self.sink.url, write_key, sleep=self.sleeps.append, rand=lambda: 0.5, timeout_s=5, **kwargs)


class GatewaySinkTest(SinkTestCase):
    """The sink answers like rudder-server's gateway."""

    def post(self, body, auth=(DEFAULT_WRITE_KEY, ""), headers=None):
        return requests.post(self.sink.url + "/v1/batch", data=body, auth=auth, headers=headers or {}, timeout=5)

    def test_gateway_answers(self):
        good = json.dumps({"batch": [{"anonymousId": "a", "event": "e", "type": "track"}]}).encode()
        cases = [
            (self.post(good), 200, "OK"),
            (self.post(good, auth=None), 401, "Failed to read writeKey from header\n"),
            (self.post(good, auth=("wrong", "")), 401, "Invalid Write Key\n"),
            (self.post(good, auth=("disabled-key", "")), 404, "Source is disabled\n"),
            (self.post(b"{not json"), 400, "Invalid JSON\n"),
            (self.post(json.dumps({"batch": ["x"]}).encode()), 400, "Event is not a valid rudder event\n"),
            (self.post(json.dumps({"batch": []}).encode()), 400, "Empty batch payload\n"),
            (self.post(json.dumps({"batch": [{"event": "e", "userId": "  "}]}).encode()), 400,
             "Request neither has anonymousId nor userId\n"),
            (self.post(gzip.compress(good), headers={"Content-Encoding": "gzip"}), 200, "OK"),
            (self.post(b"not gzip", headers={"Content-Encoding": "gzip"}), 400, "Failed to read body from request\n"),
        ]
        self.assertEqual([(r.status_code, r.text) for r, _, _ in cases], [(s, t) for _, s, t in cases])
        self.assertEqual(len(self.sink.accepted), 2)

    def test_request_limit_is_4000_kb_of_decompressed_body(self):
        filler = "x" * (4000 * 1024)
        body = json.dumps({"batch": [{"anonymousId": "a", "p": filler}]}).encode()
        response = self.post(gzip.compress(body), headers={"Content-Encoding": "gzip"})
        self.assertEqual((response.status_code, response.text), (413, "Request size exceeds max limit\n"))
        just_under = json.dumps({"batch": [{"anonymousId": "a", "p": "x" * (4000 * 1024 - 100)}]}).encode()
        self.assertEqual(self.post(just_under).status_code, 200)


class ClientTest(SinkTestCase):
    def test_delivers_gzip_with_basic_auth(self):
        events = make_events(3)
        result = self.client().send(events)
        self.assertEqual(result.summary()["delivered"], 3)
        self.assertEqual(self.sink.message_ids(), [e["messageId"] for e in events])
        self.assertEqual(self.sink.request_log, [{"status": 200, "events": 3, "gzip": True}])

    def test_plain_json_when_gzip_is_off(self):
        self.client(use_gzip=False).send(make_events(1))
        self.assertEqual(self.sink.request_log, [{"status": 200, "events": 1, "gzip": False}])

    def test_retries_429_and_5xx_with_jittered_backoff(self):
        self.sink.fail_next(503)
        self.sink.fail_next(429)
        self.sink.fail_next(500)
        result = self.client().send(make_events(2))
        self.assertEqual(self.sink.statuses(), [503, 429, 500, 200])
        self.assertEqual(result.summary()["delivered"], 2)
        self.assertEqual(result.retries, 3)
        # equal jitter with rand()=0.5: 3/4 of 0.1, 0.2, 0.4 s
        self.assertEqual([round(s, 6) for s in self.sleeps], [0.075, 0.15, 0.3])

    def test_gives_up_after_max_retries_and_keeps_events_for_later(self):
        self.sink.outage(503)
        events = make_events(2)
        result = self.client(max_retries=2).send(events)
        self.assertEqual(self.sink.statuses(), [503, 503, 503])
        self.assertEqual(result.summary(), {
            "delivered": 0, "dead_lettered": 0, "refused": 0, "retry_later": 2, "requests": 3, "retries": 2,
            "config_error": None, "last_error": "HTTP 503: scripted failure", "retry_after_s": None,
        })
        self.assertEqual(result.retry_later, events)

    def test_dropped_connection_is_retried(self):
        self.sink.drop_next()
        result = self.client().send(make_events(1))
        self.assertEqual(self.sink.statuses(), [None, 200])
        self.assertEqual(result.summary()["delivered"], 1)
        self.assertEqual(result.retries, 1)

    def test_poison_event_is_isolated_by_splitting(self):
        events = make_events(8)
        events[5] = poison(events[5])
        result = self.client().send(events)
        self.assertEqual([e for e, _ in result.dead], [events[5]])
        self.assertEqual(result.dead[0][1], "HTTP 400 from the data plane: Request neither has anonymousId nor userId")
        self.assertEqual(sorted(self.sink.message_ids()), sorted(e["messageId"] for i, e in enumerate(events) if i != 5))
        # depth first: [0..7] 400 -> [0..3] 200, [4..7] 400 -> [4,5] 400 -> [4] 200, [5] 400 (dead) -> [6,7] 200
        self.assertEqual(self.sink.statuses(), [400, 200, 400, 400, 200, 400, 200])

    def test_413_splits_until_each_request_fits(self):
        self.sink.max_request_bytes = 3000
        events = make_events(8)
        result = self.client(use_gzip=True).send(events)
        self.assertEqual(result.summary()["delivered"], 8)
        self.assertEqual(sorted(self.sink.message_ids()), sorted(e["messageId"] for e in events))
        self.assertIn(413, self.sink.statuses())

    def test_wrong_write_key_refuses_the_batch_without_spinning(self):
        events = make_events(3)
        result = self.client(write_key="wrong").send(events)
        self.assertEqual(self.sink.statuses(), [401])  # no retry, no split
        self.assertEqual(result.config_error, {"status": 401, "body": "Invalid Write Key"})
        self.assertEqual([e for e, _ in result.refused], events)  # the outbox decides (fix window)
        self.assertEqual(result.dead, [])

    def test_disabled_source_is_a_config_error(self):
        result = self.client(write_key="disabled-key").send(make_events(1))
        self.assertEqual(result.config_error, {"status": 404, "body": "Source is disabled"})

    def test_large_batches_are_chunked_under_the_request_limit(self):
        events = make_events(4)
        for event in events:
            event["properties"]["blob"] = "y" * (1500 * 1024)
        result = self.client(use_gzip=False).send(events)
        self.assertEqual(result.summary()["delivered"], 4)
        self.assertEqual([r["events"] for r in self.sink.request_log], [2, 2])

    def test_write_key_travels_only_in_basic_auth(self):
        session = requests.Session()
        sent = []
        session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request))
        RudderStackClient(self.sink.url, "test-write-key", session=session).send(make_events(1))
        self.assertEqual(sent[0].headers["Authorization"], "Basic " + base64.b64encode(b"test-write-key:").decode())
        self.assertNotIn(b"test-write-key", gzip.decompress(sent[0].body))

    def test_backoff_is_capped(self):
        self.assertEqual(backoff_delay(20, 1.0, rand=lambda: 1.0), 30.0)
        self.assertEqual(backoff_delay(1, 1.0, rand=lambda: 0.0), 0.5)
