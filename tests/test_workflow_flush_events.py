"""flush_events_scheduled, driven by the real Orquesta conductor with the real flush_events
action against real Redis and the sink: a config error dispatches the alert trigger once."""

import os
import unittest

from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.orquesta_runner import ACTIONS_DIR, python_action, run_workflow, skip_unless_orquesta
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from flush_events import FlushEvents
from synthralos_lib.state.config import PACK_ROOT, load_config
from synthralos_lib.events.builders import Correlation, agent_event
from synthralos_lib.events.forwarding import open_outbox
from synthralos_lib.state.store import get_store

WORKFLOW = os.path.join(PACK_ROOT, "actions", "workflows", "flush_events_scheduled.yaml")


@skip_unless_orquesta
class FlushWorkflowTest(StoreBackendMixin, unittest.TestCase):
    backend = "redis"

    def setUp(self):
        super(FlushWorkflowTest, self).setUp()
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)

    def config(self, write_key=DEFAULT_WRITE_KEY):
        return self.make_config(rudderstack={"write_key": write_key, "data_plane_url": self.sink.url, "max_retries": 0,
                                             "config_error_fix_window_s": 0})

    def enqueue(self, count, config):
        settings = load_config(config)
        outbox = open_outbox(settings, get_store(settings, self.action_service))
        for i in range(count):
            outbox.enqueue(agent_event("agent_failure", Correlation({}, st2_execution_id="e-%d" % i), "failed"))

    def run_flush(self, config):
        return run_workflow(
            WORKFLOW,
            {"force": True, "max_batches": 50},
            actions={"synthralos.flush_events": python_action(FlushEvents, config, self.action_service)},
            action_meta_dir=ACTIONS_DIR,  # parameters checked, cast and defaulted as st2 does
        )

    def test_healthy_flush_succeeds_without_a_trigger(self):
        config = self.config()
        self.enqueue(3, config)
        run = self.run_flush(config)
        self.assertEqual(run.status, "succeeded")
        self.assertEqual(run.task_sequence, ["flush"])
        self.assertEqual(run.injected_triggers, [])
        self.assertEqual((run.output["flush"]["status"], run.output["flush"]["delivered"]), ("ok", 3))
        self.assertEqual(len(self.sink.accepted), 3)

    def test_wrong_write_key_dispatches_the_config_error_trigger_once(self):
        config = self.config(write_key="wrong-key")
        self.enqueue(2, config)
        run = self.run_flush(config)
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["flush", "alert"])
        self.assertEqual(len(run.injected_triggers), 1)
        injected = run.injected_triggers[0]
        self.assertEqual(injected["trigger"], "synthralos.rudderstack_config_error")
        self.assertEqual(
            injected["payload"],
            {"status": 401, "body": "Invalid Write Key", "data_plane_url": self.sink.url, "dead_lettered": 2,
             "refused": 2},
        )
        self.assertEqual(injected["trace_tag"], "synthralos-rudderstack-config-error")

        # The error persists: the next timer run fails again but does not alert again.
        self.enqueue(1, config)
        again = self.run_flush(config)
        self.assertEqual((again.status, again.task_sequence, again.injected_triggers), ("failed", ["flush"], []))
