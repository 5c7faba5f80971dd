"""The event rules: which workflow completions become which events, and that their
parameters use only what st2's core.st2.generic.actiontrigger carries."""

import glob
import os
import re
import unittest
from datetime import datetime, timezone

import yaml

from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink
from synthralos_tests.st2_rules import FORWARD_RULES, load_rule, matches, render_rule_parameters

from forward_event import ForwardEvent
from synthralos_lib.state.config import PACK_ROOT
from synthralos_lib.events.builders import message_id

# st2common/constants/triggers.py ACTION_TRIGGER_TYPE plus what st2actions' notifier puts in the payload.
ACTIONTRIGGER_FIELDS = {"execution_id", "status", "start_timestamp", "action_name", "action_ref", "runner_ref",
                        "parameters", "result"}


class ForwardingRulesTest(unittest.TestCase):
    def events_for(self, action_name, status, parameters=None, result=None):
        payload = {"execution_id": "e1", "action_name": action_name, "action_ref": action_name, "status": status,
                   "parameters": parameters or {}, "result": result or {}}
        return sorted(load_rule(name)["action"]["parameters"]["event_type"] for name in FORWARD_RULES
                      if matches(load_rule(name), payload))

    def test_a_recovery_reaches_a_rule_only_when_st2_ended_it(self):
        # Its own tasks forward a recovery that succeeded or failed (test_workflow_agent_recovery):
        # no rule execution for them, whatever the output says.
        recovery = "synthralos.agent_recovery"
        repaired = {"output": {"outcome": "repaired", "repaired": True}}
        for status in ("succeeded", "failed"):
            self.assertEqual(self.events_for(recovery, status, result=repaired), [], status)
        self.assertEqual(self.events_for(recovery, "timeout"), ["agent_execution", "agent_failure"])
        self.assertEqual(self.events_for(recovery, "abandoned"), ["agent_execution", "agent_failure"])
        self.assertEqual(self.events_for(recovery, "canceled", {"dry_run": True}), ["agent_execution"])

    def test_a_workflow_is_forwarded_only_at_the_level_the_user_started(self):
        # reroute_request and llm_retry run synthralos.llm_request (a python action), never each
        # other, so only the workflow the user started is forwarded, whatever its parameters.
        for name in ("reroute_request", "llm_retry"):  # reroute_request's entry point is llm_retry's workflow
            with open(os.path.join(PACK_ROOT, "actions", name + ".yaml")) as handle:
                entry_point = yaml.safe_load(handle)["entry_point"]
            with open(os.path.join(PACK_ROOT, "actions", entry_point)) as handle:
                refs = set(re.findall(r"^\s+action:\s*(\S+)", handle.read(), re.M))
            self.assertEqual(refs, {"synthralos.llm_request", "core.inject_trigger"}, name)
        self.assertEqual(self.events_for("synthralos.llm_request", "succeeded", {"messages": []}), [])
        self.assertEqual(self.events_for("synthralos.reroute_request", "failed", {"messages": []}),
                         ["agent_execution", "agent_failure"])
        direct = {"messages": [], "one_attempt_per_target": True}
        self.assertEqual(self.events_for("synthralos.llm_retry", "succeeded", direct), ["agent_execution"])

    def test_completion_to_event_table(self):
        table = {
            ("synthralos.agent_recovery", "succeeded"): [],  # forwarded by its own tasks
            ("synthralos.agent_recovery", "failed"): [],
            ("synthralos.agent_recovery", "timeout"): ["agent_execution", "agent_failure"],
            ("synthralos.agent_recovery", "canceled"): ["agent_execution"],
            ("synthralos.llm_retry", "succeeded"): ["agent_execution"],
            ("synthralos.llm_retry", "failed"): ["agent_execution", "agent_failure"],
            ("synthralos.reroute_request", "abandoned"): ["agent_execution", "agent_failure"],
            ("synthralos.reroute_request", "canceled"): ["agent_execution"],
            ("synthralos.forward_event", "succeeded"): [],  # never forwards its own completions
            ("synthralos.flush_events_scheduled", "failed"): [],
            ("other.agent_recovery", "failed"): [],
            ("synthralos.llm_retry", "running"): [],
        }
        self.assertEqual({key: self.events_for(*key) for key in table}, table)

    def test_parameters_use_only_actiontrigger_fields_and_forward_event_parameters(self):
        with open(os.path.join(PACK_ROOT, "actions", "forward_event.yaml")) as handle:
            accepted = set(yaml.safe_load(handle)["parameters"])
        for name in FORWARD_RULES:
            rule = load_rule(name)
            self.assertEqual(rule["trigger"]["type"], "core.st2.generic.actiontrigger")
            self.assertEqual(rule["action"]["ref"], "synthralos.forward_event")
            params = rule["action"]["parameters"]
            self.assertLessEqual(set(params), accepted, name)
            used = set(re.findall(r"trigger\.(\w+)", yaml.safe_dump(params)))
            self.assertLessEqual(used, ACTIONTRIGGER_FIELDS, name)
            self.assertEqual(params["source_execution_id"], "{{ trigger.execution_id }}")  # drives the messageId

    def test_flush_timer_runs_the_alerting_workflow(self):
        rule = load_rule("flush_events_timer")
        self.assertEqual(rule["trigger"], {"type": "core.st2.IntervalTimer", "parameters": {"unit": "seconds", "delta": 10}})
        self.assertEqual(rule["action"]["ref"], "synthralos.flush_events_scheduled")
        # the static delta matches the default flush interval
        with open(os.path.join(PACK_ROOT, "config.schema.yaml")) as handle:
            schema = yaml.safe_load(handle)
        self.assertEqual(schema["rudderstack"]["properties"]["flush_interval_ms"]["default"], 10000)

    def test_all_event_rules_are_listed(self):
        names = {os.path.basename(p)[:-5] for p in glob.glob(os.path.join(PACK_ROOT, "rules", "*.yaml"))}
        self.assertLessEqual(set(FORWARD_RULES) | {"flush_events_timer"}, names)


class RuleToEventTest(StoreBackendMixin, unittest.TestCase):
    """Render each forwarding rule's parameters from a real-shaped actiontrigger payload the way
    st2's rules engine does (Jinja with StrictUndefined, then casts by the action's parameter types),
    run forward_event with them, and check what reaches the sink."""

    backend = "datastore"

    PAYLOAD = {
        "execution_id": "6790f0c1e1b2a3c4d5e6f708",
        "status": "timeout",
        "start_timestamp": "2026-11-28 12:00:00.250000+00:00",
        "action_name": "synthralos.agent_recovery",
        "action_ref": "synthralos.agent_recovery",
        "runner_ref": "orquesta",
        "parameters": {"agent_id": "agent-42", "dry_run": False, "trace_context": {"trace_id": "tr-42"}},
        "result": {"output": {"plan": ["retry_execution"]}, "errors": [{"message": "all steps failed <exhausted>"}]},
    }

    def setUp(self):
        super(RuleToEventTest, self).setUp()
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)
        with open(os.path.join(PACK_ROOT, "actions", "forward_event.yaml")) as handle:
            self.schema = yaml.safe_load(handle)["parameters"]

    def render(self, rule, payload):
        return render_rule_parameters(self.schema, rule, payload)

    def test_a_timed_out_recovery_becomes_execution_and_failure_events(self):
        config = self.make_config(rudderstack={"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url})
        fired = [name for name in FORWARD_RULES if matches(load_rule(name), self.PAYLOAD)]
        self.assertEqual(fired, ["forward_interrupted_recoveries", "forward_interrupted_recovery_failures"])
        for name in fired:
            result = ForwardEvent(config=config, action_service=self.action_service).run(
                **self.render(load_rule(name), self.PAYLOAD))
            self.assertEqual(result["status"], "delivered", result)
        events = self.sink.accepted
        self.assertEqual([e["event"] for e in events], ["agent_execution", "agent_failure"])
        self.assertEqual([e["messageId"] for e in events],
                         [message_id(self.PAYLOAD["execution_id"], n, "") for n in ("agent_execution", "agent_failure")])
        props = events[1]["properties"]
        self.assertEqual(
            {k: props[k] for k in ("status", "agent_id", "workflow", "result", "st2_execution_id", "started_at", "trace_id")},
            {"status": "timeout", "agent_id": "agent-42", "workflow": "synthralos.agent_recovery",
             "result": self.PAYLOAD["result"], "st2_execution_id": "6790f0c1e1b2a3c4d5e6f708",
             "started_at": "2026-11-28T12:00:00.250Z", "trace_id": "tr-42"},
        )
        self.assertEqual(events[1]["anonymousId"], "agent:agent-42")
        # every forwarded event of the recovery carries its trace_context.trace_id
        self.assertEqual([e["properties"]["trace_id"] for e in events], ["tr-42", "tr-42"])
        # no end time in the actiontrigger: stamped when forwarded, not at the start
        stamped = datetime.strptime(events[1]["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        self.assertLess(abs((datetime.now(timezone.utc) - stamped).total_seconds()), 60)

    def test_a_canceled_dry_run_says_so_in_its_event(self):
        dry = dict(self.PAYLOAD, status="canceled", parameters=dict(self.PAYLOAD["parameters"], dry_run=True),
                   result={"output": None})
        real = dict(self.PAYLOAD, execution_id="6790f0c1e1b2a3c4d5e6f709", status="canceled",
                    parameters={"agent_id": "agent-42"})  # dry_run not given: st2 passes no default here
        config = self.make_config(rudderstack={"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url})
        self.assertEqual([name for name in FORWARD_RULES if matches(load_rule(name), dry)], ["forward_interrupted_recoveries"])
        for payload in (dry, real):
            params = self.render(load_rule("forward_interrupted_recoveries"), payload)
            self.assertIs(params["dry_run"], payload is dry)  # cast to a boolean by st2
            result = ForwardEvent(config=config, action_service=self.action_service).run(**params)
            self.assertEqual(result["status"], "delivered", result)
        self.assertEqual([(e["event"], e["properties"].get("dry_run")) for e in self.sink.accepted],
                         [("agent_execution", True), ("agent_execution", None)])

    def test_a_timed_out_dry_run_says_so_in_its_failure_event(self):
        dry = dict(self.PAYLOAD, parameters=dict(self.PAYLOAD["parameters"], dry_run=True))
        rule = load_rule("forward_interrupted_recovery_failures")
        self.assertIs(self.render(rule, dry)["dry_run"], True)
        self.assertIs(self.render(rule, self.PAYLOAD)["dry_run"], False)

    def test_workflow_without_agent_parameters_still_forwards(self):
        payload = dict(self.PAYLOAD, action_name="synthralos.llm_retry", status="succeeded", parameters={"messages": []},
                       result={"output": {"text": "hi"}})
        config = self.make_config(rudderstack={"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url})
        params = self.render(load_rule("forward_workflow_executions"), payload)
        self.assertEqual((params["agent_id"], params["trace_id"]), ("", ""))
        result = ForwardEvent(config=config, action_service=self.action_service).run(**params)
        self.assertEqual(result["status"], "delivered")
        self.assertEqual(self.sink.accepted[0]["anonymousId"], "synthralos")
