"""Defaults live in config.schema.yaml only: the code reads them from there, never repeats them."""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import os
import re
import unittest

from synthralos_lib.events.rudderstack import RudderStackClient
from synthralos_lib.healing.agent_api import AgentApiClient
from synthralos_lib.llm import policy as llm_policy
from synthralos_lib.state.config import load_config, load_st2_schema, schema_defaults, with_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Reads that look like a config default but are not of the pack's config, each with why.
NOT_CONFIG = {
    "actions/lib/synthralos_lib/streams/bullmq/producer.py": {
        '.get("priority") or 0': "a BullMQ job option (BullMQ's own default), not llm_targets[].priority"},
}


def section_keys_with_defaults():
    """Every key of a config section (the top-level objects of config.schema.yaml) or of an llm_targets
    entry that has a default."""
    return set(key for name, section in load_st2_schema().items() if "properties" in section or name == "llm_targets"
               for key, default in schema_defaults(name).items() if default is not None)


# `.get("batch_size", 20)`: a config key read with a default written in code (a literal or a DEFAULT_ constant),
# or `.get("timeout_s") or 60`.
LITERAL_DEFAULT = re.compile(r"""\.get\(\s*["'](\w+)["']\s*,\s*(-?[\d.]+|True|False|["'][^"']*["']|[A-Z_]*DEFAULT\w*)\s*\)"""
                             r"""|\.get\(\s*["'](\w+)["']\s*\)\s*or\s*(-?\d[\d.]*|True)\b""")


class OneHomeTest(unittest.TestCase):
    def test_no_code_repeats_a_schema_default(self):
        keys, found = section_keys_with_defaults(), []
        for top in ("actions", "sensors"):
            for folder, _, files in os.walk(os.path.join(ROOT, top)):
                for name in files:
                    path = os.path.relpath(os.path.join(folder, name), ROOT).replace(os.sep, "/")
                    if not name.endswith(".py"):
                        continue
                    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
                        for number, line in enumerate(handle, 1):
                            for match in LITERAL_DEFAULT.finditer(line):
                                if (match.group(1) or match.group(3)) in keys \
                                        and match.group(0) not in NOT_CONFIG.get(path, {}):
                                    found.append("%s:%d: %s" % (path, number, match.group(0)))
        self.assertEqual(found, [], "read the default from the PackConfig section or state.config.with_defaults")

    def test_the_pattern_finds_a_repeated_default(self):
        for line in ('rudder.get("batch_size", 20)', "s.get('gzip', True)", 'x.get("jitter", "full")',
                     'section.get("fast_path_budget_s", DEFAULT_BUDGET_S)', 'target.get("timeout_s") or 60'):
            with self.subTest(line=line):
                self.assertIsNotNone(LITERAL_DEFAULT.search(line))

    def test_a_loaded_config_has_every_schema_default_in_its_sections(self):
        # What lets code write section["key"]: load_config fills each section, even one left out.
        config = load_config({})
        for name, section in load_st2_schema().items():
            if "properties" not in section:
                continue
            for key, default in schema_defaults(name).items():
                if default is not None:
                    with self.subTest(section=name, key=key):
                        self.assertEqual(config.section(name)[key], default)


class DefaultsFromTheSchemaTest(unittest.TestCase):
    def test_the_llm_policy_defaults_are_the_retry_and_reroute_sections(self):
        retry = schema_defaults("retry")
        policy = llm_policy.make_policy()
        for key in ("max_attempts", "base_delay_s", "max_delay_s", "jitter", "retry_after_cap_s", "quota_after_s"):
            self.assertEqual(policy[key], retry[key])
        self.assertEqual(policy["max_targets"], schema_defaults("reroute")["max_targets"])

    def test_with_defaults_fills_what_a_partial_section_leaves_out(self):
        merged = with_defaults("rudderstack", {"batch_size": 7, "gzip": None})
        self.assertEqual(merged["batch_size"], 7)
        self.assertEqual(merged["gzip"], schema_defaults("rudderstack")["gzip"])  # None counts as unset
        self.assertEqual(set(merged), set(load_st2_schema()["rudderstack"]["properties"]))

    def test_clients_built_from_a_partial_section_take_the_schema_defaults(self):
        rudder = schema_defaults("rudderstack")
        client = RudderStackClient.from_settings({"data_plane_url": "http://dp", "write_key": "k"})
        self.assertEqual((client.max_retries, client.timeout_s), (rudder["max_retries"], rudder["request_timeout_s"]))
        api = AgentApiClient({"base_url": "http://agents/"})
        agent_api = schema_defaults("agent_api")
        self.assertEqual((api.base_url, api.timeout_s, api.verify_tls),
                         ("http://agents", float(agent_api["timeout_s"]), agent_api["verify_tls"]))


if __name__ == "__main__":
    unittest.main()
