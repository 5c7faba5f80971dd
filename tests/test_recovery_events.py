"""healing/recovery_events.py: a recovery's end events, whatever its output and trace context hold.

The workflow-level checks (which task forwards, the events equal to the workflow's output) are in
test_workflow_agent_recovery.py; here hostile values reach the builder and a real Redis outbox."""

import json
import math
import unittest

from hypothesis import given, settings, strategies as st

from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY

from synthralos_lib.events.builders import MAX_EVENT_BYTES
from synthralos_lib.healing.recovery_events import FAILED, SUCCEEDED, end_events, forward_recovery_end, recovery_output
from synthralos_lib.state.config import load_config
from synthralos_lib.state.store import get_store

SECRET = "sk-live-recoveryQ7kZx9PwLm"
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=40,
)
EPOCH = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10 ** 20, max_value=10 ** 20))


class EndEventsTest(unittest.TestCase):
    def test_which_events_end_a_recovery(self):
        repaired = recovery_output("repaired", {}, None, [{"attempt": 1}], "retry_execution", 1.5, None)
        planned = recovery_output("planned", {}, {"source": "rules"}, [], None, 0.2, None)
        self.assertEqual(end_events(SUCCEEDED, repaired), ["agent_execution", "agent_repair"])
        self.assertEqual(end_events(SUCCEEDED, repaired, dry_run=True), ["agent_execution"])
        self.assertEqual(end_events(SUCCEEDED, planned), ["agent_execution"])
        self.assertEqual(end_events(FAILED, recovery_output("escalated", {}, None, [], None, 3.0, None)),
                         ["agent_execution", "agent_failure"])
        self.assertEqual((repaired["repaired"], repaired["attempts"]), (True, 1))


class HostileEndEventsTest(StoreBackendMixin, unittest.TestCase):
    backend = "redis"

    def setUp(self):
        super(HostileEndEventsTest, self).setUp()
        # The data plane is never reached: with Redis the events are only queued.
        self.settings = load_config(self.make_config(
            rudderstack={"write_key": DEFAULT_WRITE_KEY, "data_plane_url": "http://127.0.0.1:9"},
            agent_api={"api_key": SECRET}))
        self.store = get_store(self.settings, self.action_service)

    @settings(max_examples=150, deadline=None)
    @given(failure=JSON, plan=JSON, storm=JSON, trace_context=JSON, started_at=EPOCH,
           status=st.sampled_from([SUCCEEDED, FAILED]), outcome=st.sampled_from(["repaired", "escalated", "planned"]),
           dry_run=st.booleans())
    def test_any_output_trace_context_and_start_is_queued(
            self, failure, plan, storm, trace_context, started_at, status, outcome, dry_run):
        self.redis.flushall()
        failure = {"summary": "provider said %s" % SECRET, "detail": failure}
        output = recovery_output(outcome, failure, plan, [{"attempt": 1, "error_message": SECRET}], None, 1.0, storm)
        done = forward_recovery_end(self.settings, self.store, self.action_service, "rec-1", "agent-1", status,
                                    output, started_at, trace_context=trace_context, dry_run=dry_run)
        names = end_events(status, output, dry_run)
        self.assertEqual(sorted(done), sorted(names))
        # Whatever the output, trace context and start hold, every event is queued.
        self.assertEqual(set(done.values()), {"queued"}, done)
        client = self.redis.client()
        payloads = [fields[k] for key in client.keys("*") if client.type(key) == "stream"
                    for _, fields in client.xrange(key) for k in fields if fields[k].startswith("{")]
        events = [json.loads(p) for p in payloads]
        self.assertEqual(sorted(e["event"] for e in events), sorted(names))
        if started_at is None or not math.isfinite(started_at):
            self.assertEqual([e["properties"]["started_at"] for e in events], [None] * len(events))
        for payload in payloads:
            self.assertNotIn(SECRET, payload)  # scrubbed before it was queued
            self.assertLessEqual(len(payload.encode()), MAX_EVENT_BYTES)

if __name__ == "__main__":
    unittest.main()
