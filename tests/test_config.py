"""The config loader: defaults at every depth, validation without leaking values, flags."""

import unittest

import yaml

from synthralos_lib.state.config import SCHEMA_PATH, ConfigError, FEATURE_FLAGS, load_config, load_st2_schema
from synthralos_lib.state.redaction import scrub

OPENAI = {
    "name": "openai-us",
    "kind": "openai",
    "base_url": "http://127.0.0.1:1/v1",
    "api_key": "sk-live-0123456789",
    "model": "gpt-4o-mini",
}


class DefaultsTest(unittest.TestCase):
    def test_nested_defaults_fill_partial_sections(self):
        config = load_config({"retry": {"max_attempts": 5}, "rudderstack": {"write_key": "wk"}})
        self.assertEqual(
            config.section("retry"),
            {"max_attempts": 5, "base_delay_s": 1, "max_delay_s": 60, "jitter": "full", "retry_after_cap_s": 120,
             "quota_after_s": 3600, "fast_path_max_wait_s": 10, "fast_path_budget_s": 300},
        )
        self.assertEqual(config.section("rudderstack")["write_key"], "wk")
        self.assertEqual(config.section("rudderstack")["batch_size"], 20)

    def test_list_items_get_defaults(self):
        config = load_config({"llm_targets": [OPENAI]})
        target = config.llm_targets()[0]
        self.assertEqual((target["region"], target["priority"], target["timeout_s"]), ("default", 100, 60))

    def test_feature_flag_defaults(self):
        config = load_config({})
        self.assertEqual(
            {flag: config.flag(flag) for flag in FEATURE_FLAGS},
            {
                "enable_reroute": True,
                "enable_cron_backoff": True,
                "track_model_costs": True,
                "enable_similarity_logging": True,
                "enable_guardrails_tracing": False,
                "enable_llm_repair_plans": False,
            },
        )
        self.assertFalse(load_config({"features": {"enable_reroute": False}}).flag("enable_reroute"))
        with self.assertRaises(KeyError):
            config.flag("enable_stackstorm")

    def test_none_config_is_all_defaults(self):
        self.assertEqual(load_config(None).values, load_config({}).values)
        self.assertEqual(load_config(None).redis_url, "")

    def test_caller_dict_is_not_modified(self):
        raw = {"retry": {"max_attempts": 2}}
        load_config(raw)
        self.assertEqual(raw, {"retry": {"max_attempts": 2}})


class TargetsTest(unittest.TestCase):
    def test_targets_in_priority_then_config_order(self):
        targets = [
            dict(OPENAI, name="c", priority=20),
            dict(OPENAI, name="a", priority=10),
            dict(OPENAI, name="b", priority=20),
            dict(OPENAI, name="d"),
        ]
        config = load_config({"llm_targets": targets})
        self.assertEqual([t["name"] for t in config.llm_targets()], ["a", "c", "b", "d"])
        self.assertEqual(config.llm_target("b")["priority"], 20)
        with self.assertRaisesRegex(ConfigError, "no llm_targets entry named 'zz'"):
            config.llm_target("zz")


class ValidationTest(unittest.TestCase):
    def test_errors_name_every_path(self):
        with self.assertRaises(ConfigError) as caught:
            load_config(
                {
                    "retry": {"max_attempts": 0, "jitter": "random"},
                    "llm_targets": [{"name": "x", "kind": "cohere"}],
                    "unknown_section": {},
                }
            )
        message = str(caught.exception)
        for expected in (
            "retry.max_attempts: expected minimum 1",
            "retry.jitter: expected enum ['full', 'equal', 'none']",
            "llm_targets.0.kind: expected enum ['openai', 'anthropic', 'azure_openai']",
            "'model' is a required property",
            "'unknown_section' was unexpected",
        ):
            self.assertIn(expected, message)

    def test_errors_never_echo_values(self):
        with self.assertRaises(ConfigError) as caught:
            load_config({"rudderstack": {"write_key": 12345678, "batch_size": "sk-secret-batch"}})
        self.assertNotIn("12345678", str(caught.exception))
        self.assertNotIn("sk-secret-batch", str(caught.exception))
        self.assertIn("rudderstack.write_key: expected type string", str(caught.exception))


class SecretsTest(unittest.TestCase):
    def test_every_secret_is_collected_and_scrubbed(self):
        config = load_config(
            {
                "llm_targets": [OPENAI, dict(OPENAI, name="b", api_key="sk-ant-987")],
                "agent_api": {"api_key": "agent-key-1"},
                "rudderstack": {"write_key": "write-key-1"},
                "redis": {"url": "redis://:hunter2@127.0.0.1:6379/0"},
            }
        )
        self.assertEqual(
            sorted(config.secrets()),
            sorted(
                [
                    "sk-live-0123456789",
                    "sk-ant-987",
                    "agent-key-1",
                    "write-key-1",
                    "redis://:hunter2@127.0.0.1:6379/0",
                    "hunter2",
                ]
            ),
        )
        leaked = {"error": "401 for key sk-live-0123456789", "nested": ["auth hunter2 failed", 3]}
        self.assertEqual(
            scrub(leaked, config.secrets()),
            {"error": "401 for key ***", "nested": ["auth *** failed", 3]},
        )


class SchemaFileTest(unittest.TestCase):
    def test_schema_is_what_the_pure_python_safe_loader_reads(self):
        # load_st2_schema uses libyaml's safe loader when PyYAML has one: the same document.
        with open(SCHEMA_PATH) as handle:
            self.assertEqual(load_st2_schema(SCHEMA_PATH), yaml.load(handle, Loader=yaml.SafeLoader))
