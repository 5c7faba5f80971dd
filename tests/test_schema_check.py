"""state/schema_check agrees with jsonschema's Draft4Validator on the pack's config schema."""

import synthralos_tests  # noqa: F401

import copy
import unittest

import jsonschema

from synthralos_lib.state import schema_check
from synthralos_lib.state.config import apply_defaults, load_st2_schema, to_json_schema

SCHEMA = to_json_schema(load_st2_schema())
TARGET = {"name": "oa", "kind": "openai", "base_url": "http://x/v1", "model": "m", "api_key": "k"}
BAD = [
    {},
    {"retry": {"max_attempts": 0, "jitter": "random", "base_delay_s": -1}},
    {"retry": {"max_attempts": True}},
    {"retry": {"max_attempts": 2.5, "max_delay_s": "60"}},
    {"llm_targets": [{"name": "x", "kind": "cohere"}, TARGET, {"kind": 3}]},
    {"llm_targets": [dict(TARGET, extra=1, other=2)]},
    {"llm_targets": "not-a-list"},
    {"unknown_section": {}, "another": 1},
    {"rudderstack": {"write_key": 12345678, "batch_size": "20", "gzip": 1, "overflow_policy": "drop"}},
    {"rudderstack": {"batch_size": 501, "flush_interval_ms": 99}},
    {"model_prices": {"gpt-x": {"input_per_1k": -1, "bogus": 2}, "ok": {"output_per_1k": 0.5}}},
    {"model_prices": {"gpt-x": "free"}},
    {"features": {"enable_reroute": "yes"}, "redis": {"url": None}},
    {"circuit_breaker": {"failure_rate_threshold": 1.5, "window_s": 0}},
    {"agent_api": [], "retry": None},
]


def normalized(errors):
    return sorted((tuple(str(p) for p in e.path), e.validator) for e in errors)


class SchemaCheckTest(unittest.TestCase):
    def test_covers_the_pack_schema(self):
        self.assertTrue(schema_check.supported(SCHEMA))

    def test_agrees_with_jsonschema(self):
        for raw in BAD:
            value = apply_defaults(SCHEMA, copy.deepcopy(raw))
            ours = schema_check.iter_errors(SCHEMA, value)
            theirs = list(jsonschema.Draft4Validator(SCHEMA).iter_errors(value))
            self.assertEqual(normalized(ours), normalized(theirs), raw)
            # Messages the config loader shows as they are (the order of several extras varies by version).
            shown = lambda errors: sorted(e.message for e in errors if e.validator == "required" or
                                          (e.validator == "additionalProperties" and "was unexpected" in e.message))
            self.assertEqual(shown(ours), shown(theirs), raw)

    def test_agrees_on_repair_step_params(self):
        from synthralos_lib.healing.plans import PARAMS_SCHEMAS

        samples = [{}, {"tool": "search"}, {"tool": "rm -rf /"}, {"tool": ""}, {"tool": 3}, {"tool": "a", "x": 1},
                   {"provider": "openai", "model": "gpt-4o"}, {"provider": "openai"}, {"delay_s": 0},
                   {"delay_s": 5}, {"delay_s": True}, {"max_iterations": 2.0}, {"format": "json"},
                   {"format": "yaml"}, {"max_chars": 10 ** 9}, {"tool_call_id": "call_1", "tool": "t" * 200}]
        for action, schema in sorted(PARAMS_SCHEMAS.items()):
            self.assertTrue(schema_check.supported(schema), action)
            for params in samples:
                theirs = list(jsonschema.Draft4Validator(schema).iter_errors(params))
                self.assertEqual(normalized(schema_check.iter_errors(schema, params)), normalized(theirs),
                                 (action, params))

    def test_unknown_keyword_goes_to_jsonschema(self):
        schema = {"type": "object", "properties": {"name": {"type": "string", "format": "email", "pattern": "^a"}}}
        self.assertFalse(schema_check.supported(schema))
        errors = schema_check.iter_errors(schema, {"name": "b"})
        self.assertEqual([(list(e.path), e.validator) for e in errors], [(["name"], "pattern")])
        self.assertNotIsInstance(errors[0], schema_check.SchemaError)
