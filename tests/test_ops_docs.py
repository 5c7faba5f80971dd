"""The sample notification rules in docs/rules/ are valid st2 rules on the pack's alert triggers."""

import synthralos_tests  # noqa: F401

import glob
import os
import unittest

import yaml

from synthralos_tests import PACK_ROOT
from synthralos_tests.st2_rules import check_rule

# Alert triggers whose definitions come with other parts of the pack (cron backoff, sensors).
PENDING_TRIGGERS = {"synthralos.cron_job_disabled", "synthralos.agent_failure"}
ALERTS = {"recovery_escalated", "llm_target_alert", "rudderstack_config_error", "cron_job_disabled", "agent_failure",
          "sensor_stalled"}


class SampleRulesTest(unittest.TestCase):
    def test_sample_rules_are_valid_and_disabled(self):
        paths = sorted(glob.glob(os.path.join(PACK_ROOT, "docs", "rules", "*.yaml")))
        declared = {"synthralos." + os.path.basename(p)[:-5]
                    for p in glob.glob(os.path.join(PACK_ROOT, "triggers", "*.yaml"))}
        covered = set()
        for path in paths:
            with open(path) as handle:
                rule = yaml.safe_load(handle)
            self.assertEqual(check_rule(rule, os.path.basename(path)), [])
            self.assertIs(rule["enabled"], False, path)
            trigger = rule["trigger"]["type"]
            self.assertIn(trigger, declared | PENDING_TRIGGERS, path)
            covered.add(trigger.split(".", 1)[1])
        self.assertEqual(covered, ALERTS)
