"""Issue 9 item 7: every input st2 accepts is bounded in the action metadata, and what the
schema cannot express is refused in code with the field's name."""

import synthralos_tests  # noqa: F401

import glob
import math
import os
import unittest

import yaml

from synthralos_lib.state.config import PACK_ROOT
from synthralos_lib.state.validation import check_id, check_number, check_numbers, check_text



def _actions():
    for path in sorted(glob.glob(os.path.join(PACK_ROOT, "actions", "*.yaml"))):
        name = os.path.basename(path)[:-5]
        with open(path) as handle:
            yield name, yaml.safe_load(handle)


def _types(schema):
    kind = schema.get("type")
    return kind if isinstance(kind, list) else [kind]


class MetadataBoundsTest(unittest.TestCase):
    def test_every_number_parameter_has_minimum_and_maximum(self):
        missing = []
        for name, meta in _actions():
            for param, schema in (meta.get("parameters") or {}).items():
                if {"number", "integer"} & set(_types(schema)):
                    if "minimum" not in schema or "maximum" not in schema:
                        missing.append("%s.%s" % (name, param))
                    elif "default" in schema and schema["default"] is not None:
                        self.assertTrue(schema["minimum"] <= schema["default"] <= schema["maximum"], (name, param))
        self.assertEqual(missing, [])

    def test_every_array_parameter_has_an_items_schema(self):
        missing = ["%s.%s" % (name, param) for name, meta in _actions()
                   for param, schema in (meta.get("parameters") or {}).items()
                   if "array" in _types(schema) and "items" not in schema]
        self.assertEqual(missing, [])

    def test_the_actions_checked_include_every_family(self):
        names = set(name for name, _ in _actions())
        self.assertLessEqual({"detect_failure", "execute_repair_step", "record_failure", "log_llm_cost",
                              "log_prompt_similarity", "forward_event", "agent_recovery"}, names)

    def test_the_example_config_needs_no_redis_host(self):
        with open(os.path.join(PACK_ROOT, "synthralos.yaml.example")) as handle:
            example = yaml.safe_load(handle)
        self.assertEqual(example["redis"]["url"], "")


class CodeValidationTest(unittest.TestCase):
    def test_numbers_the_schema_lets_through(self):
        for value, message in ((float("nan"), "x must be a finite number (not NaN or Infinity)"),
                               (float("inf"), "x must be a finite number (not NaN or Infinity)"),
                               (True, "x must be a number"), ("1", "x must be a number"),
                               (-1, "x must be at least 0"), (11, "x must be at most 10")):
            with self.assertRaises(ValueError) as caught:
                check_number(value, "x", 0, 10)
            self.assertEqual(str(caught.exception), message)
        self.assertEqual(check_number(2.5, "x", 0, 10), 2.5)
        with self.assertRaises(ValueError) as caught:
            check_numbers([0.1, math.nan], "vector_a")
        self.assertEqual(str(caught.exception), "vector_a[1] must be a finite number (not NaN or Infinity)")

    def test_text(self):
        self.assertEqual(check_text("", "user_id"), "")
        for value, message in (("   ", "user_id must not be only whitespace"), (5, "user_id must be a string"),
                               ("agent-\u00e9", "user_id must be printable ASCII without spaces")):
            with self.assertRaises(ValueError) as caught:
                check_text(value, "user_id", ascii_only=True)
            self.assertEqual(str(caught.exception), message)

    def test_ids(self):
        self.assertEqual((check_id(" agent-1 ", "agent_id"), check_id(42, "agent_id"), check_id("agent \u00e9", "agent_id")),
                         ("agent-1", "42", "agent \u00e9"))
        self.assertEqual(check_text(" a ", "agent_id", strip=True), "a")
        for value, options, message in (
            (None, {}, "agent_id is required"),
            (True, {}, "agent_id must be a string"),
            ("", {}, "agent_id must not be empty"),
            (" \t", {}, "agent_id must not be only whitespace"),
            ("a" * 257, {}, "agent_id must be at most 256 characters"),
            ("a\nb", {}, "agent_id must not contain control characters"),
            ("a b", {"ascii_only": True}, "agent_id must be printable ASCII without spaces"),
            ("..", {"path_segment": True}, "agent_id must not be '.' or '..' or contain '/'"),
            ("a/b", {"path_segment": True}, "agent_id must not be '.' or '..' or contain '/'"),
        ):
            with self.assertRaises(ValueError) as caught:
                check_id(value, "agent_id", **options)
            self.assertEqual(str(caught.exception), message)
