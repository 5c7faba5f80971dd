"""The event rules: which workflow completions become which events, and that their
parameters use only what st2's core.st2.generic.actiontrigger carries."""

import glob
import os
import re
import unittest

import yaml

from synthralos_lib.config import PACK_ROOT

# st2common/constants/triggers.py ACTION_TRIGGER_TYPE plus what st2actions' notifier puts in the payload.
ACTIONTRIGGER_FIELDS = {"execution_id", "status", "start_timestamp", "action_name", "action_ref", "runner_ref",
                        "parameters", "result"}
FORWARD_RULES = ("forward_workflow_executions", "forward_agent_repairs", "forward_agent_failures")


def load_rule(name):
    with open(os.path.join(PACK_ROOT, "rules", name + ".yaml")) as handle:
        return yaml.safe_load(handle)


def matches(rule, payload):
    """st2's `regex` criteria operator: re.match of the pattern on the payload value."""
    for key, criterion in rule.get("criteria", {}).items():
        value = payload[key.split(".", 1)[1]]
        if criterion["type"] != "regex" or re.match(criterion["pattern"], value) is None:
            return False
    return True


class ForwardingRulesTest(unittest.TestCase):
    def events_for(self, action_name, status):
        payload = {"action_name": action_name, "status": status}
        return sorted(load_rule(name)["action"]["parameters"]["event_type"] for name in FORWARD_RULES
                      if matches(load_rule(name), payload))

    def test_completion_to_event_table(self):
        table = {
            ("synthralos.agent_recovery", "succeeded"): ["agent_execution", "agent_repair"],
            ("synthralos.agent_recovery", "failed"): ["agent_execution", "agent_failure"],
            ("synthralos.agent_recovery", "timeout"): ["agent_execution", "agent_failure"],
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
