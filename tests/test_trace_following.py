"""One trace id, followed end to end: an agent failure (the payload the sensors and the webhook
dispatch) -> rule agent_failure_recovery -> agent_recovery through the real Orquesta conductor
with the real actions and agent platform -> the forwarding rules -> forward_event -> the
RudderStack sink. Every log line of the recovery and every event it forwards carries the id."""

import logging
import os
import unittest

import synthralos_tests  # noqa: F401  (import paths, and st2 must import)

import yaml

from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.healing import recovery_actions
from synthralos_tests.orquesta_runner import ACTIONS_DIR, run_workflow, skip_unless_orquesta
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink
from synthralos_tests.st2_rules import FORWARD_RULES, load_rule, matches, render_rule_parameters

from flush_events import FlushEvents
from forward_event import ForwardEvent
from synthralos_lib.healing.failure_trigger import build_failure
from synthralos_lib.state.config import PACK_ROOT

TRACE_ID = "tr-follow-5f1c"
KEY = "agent-key-trace-77a1"
TIMED_OUT = {"id": "exec-1", "status": "timeout", "input": "Summarise ticket 1234", "duration_ms": 300000,
             "timeout_ms": 300000, "max_iterations": 10, "provider": "openai", "model": "gpt-4o"}


def render(action_name, rule, payload):
    """The rule's parameters for `action_name`, rendered from `payload` as st2 renders them."""
    with open(os.path.join(PACK_ROOT, "actions", action_name + ".yaml")) as handle:
        schema = yaml.safe_load(handle)["parameters"]
    return render_rule_parameters(schema, rule, payload)


@skip_unless_orquesta
class TraceFollowingTest(StoreBackendMixin, unittest.TestCase):
    backend = "redis"

    def setUp(self):
        super(TraceFollowingTest, self).setUp()
        self.platform = AgentPlatformServer(api_key=KEY, agents=["agent-1"]).start()
        self.addCleanup(self.platform.stop)
        self.platform.add_execution("agent-1", TIMED_OUT)
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)
        self.config = self.make_config(
            agent_api={"base_url": self.platform.base_url, "api_key": KEY, "timeout_s": 2},
            rudderstack={"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url},
        )

    def test_one_trace_id_from_the_failure_to_every_log_line_and_event(self):
        failure = build_failure("agent-1", "exec-1", TIMED_OUT, "redis_stream", "1700000000000-0",
                                trace_context={"trace_id": TRACE_ID})
        self.assertEqual(failure["trace_tag"], TRACE_ID)  # st2's trace tag of the dispatched trigger

        rule = load_rule("agent_failure_recovery")
        self.assertTrue(matches(rule, failure["payload"]))
        params = render("agent_recovery", rule, failure["payload"])
        self.assertEqual(params["trace_context"], {"trace_id": TRACE_ID})

        with self.assertLogs(level="INFO") as logs:
            run = run_workflow("agent_recovery", params, actions=recovery_actions(self.config, self.action_service),
                               action_meta_dir=ACTIONS_DIR)
        self.assertEqual((run.status, run.output["outcome"]), ("succeeded", "repaired"), run)
        self.assertEqual(run.task_sequence, ["begin"])  # the trigger's detection trusted, one step, recorded
        self.assertEqual(run.output["failure"]["detected_by"], "trigger")
        pack_lines = [r.getMessage() for r in logs.records
                      if r.name.startswith(("synthralos_lib", "st2.actions")) and r.levelno >= logging.INFO]
        # One line per decision: step outcome, recorded, the recovery's start.
        self.assertGreaterEqual(len(pack_lines), 3, pack_lines)
        self.assertEqual([line for line in pack_lines if not line.endswith(" trace_id=" + TRACE_ID)], [])

        completion = {"execution_id": "6790f0c1e1b2a3c4d5e6f799", "status": run.status,
                      "start_timestamp": "2026-12-01 12:00:00.250000+00:00",
                      "action_name": "synthralos.agent_recovery", "action_ref": "synthralos.agent_recovery",
                      "runner_ref": "orquesta", "parameters": params, "result": {"output": run.output}}
        for name in FORWARD_RULES:
            if matches(load_rule(name), completion):
                result = ForwardEvent(config=self.config, action_service=self.action_service).run(
                    **render("forward_event", load_rule(name), completion))
                self.assertEqual(result["status"], "queued", result)  # the Redis outbox
        flushed = FlushEvents(config=self.config, action_service=self.action_service).run(force=True)
        self.assertEqual(flushed["delivered"], 2, flushed)
        self.assertEqual([(e["event"], e["properties"]["trace_id"]) for e in self.sink.accepted],
                         [("agent_execution", TRACE_ID), ("agent_repair", TRACE_ID)])
        self.assertEqual(len(self.platform.runs()), 1)


if __name__ == "__main__":
    unittest.main()
