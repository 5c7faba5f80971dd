"""healing/failure_trigger.py and streams/entries.py: what becomes a synthralos.agent_failure payload."""

import synthralos_tests  # noqa: F401

import copy
import json
import os
import unittest

import jsonschema
import yaml

from synthralos_lib.healing.failure_trigger import (
    MalformedFailure, accept_post, build_failure, cap_raw, classify, iso_utc)
from synthralos_lib.state.config import PACK_ROOT
from synthralos_lib.streams.entries import decode_entry, prepare_entry

SECRET = "sk-live-abcdef123456"


def payload_schema():
    with open(os.path.join(PACK_ROOT, "triggers", "agent_failure.yaml")) as handle:
        schema = copy.deepcopy(yaml.safe_load(handle)["payload_schema"])
    schema["required"] = sorted(k for k, v in schema["properties"].items() if v.pop("required", False))
    return schema


class ClassifyTest(unittest.TestCase):
    def test_table(self):
        table = {
            "running": None, "queued": None, "succeeded": None, "completed": None,
            "timeout": "timeout", "failed": "error", "cancelled": "error", "paused": "unknown_status",
        }
        self.assertEqual({status: classify({"status": status, "output": "ok"})[0] for status in table}, table)
        self.assertEqual(classify({"output": "fine"})[0], None)
        self.assertEqual(classify({})[0], None)
        self.assertEqual(classify({"status": "succeeded", "output": ""})[0], "invalid_output")
        self.assertEqual(classify({"error": "x"})[0], "error")


class BuildFailureTest(unittest.TestCase):
    maxDiff = None

    def build(self, result, **kwargs):
        kwargs.setdefault("secrets", [SECRET])
        kwargs.setdefault("now", 0.5)
        return build_failure("agent-1", "exec-1", result, kwargs.pop("source", "redis_stream"), "1-0", **kwargs)

    def test_non_failure_is_none(self):
        self.assertIsNone(self.build({"status": "succeeded", "output": "done"}))

    def test_scrub_before_cap_and_schema(self):
        error = ("x" * 1990) + SECRET + ("y" * 100)
        built = self.build({"status": "failed", "error": error, "output": SECRET + "z" * 2000})
        payload = built["payload"]
        self.assertEqual(payload["error"], ("x" * 1990) + "***" + "y" * 4 + "...")
        self.assertEqual(len(payload["error"]), 2000)
        self.assertEqual(payload["output_excerpt"], "***" + "z" * 994 + "...")
        self.assertNotIn(SECRET, json.dumps(payload))
        self.assertEqual(payload["detected_at"], "1970-01-01T00:00:00.500Z")
        self.assertEqual(built["trace_tag"], "synthralos:agent-1:exec-1")
        jsonschema.Draft4Validator(payload_schema()).validate(payload)

    def test_error_object_and_llm_error_text(self):
        self.assertEqual(self.build({"status": "failed", "error": {"message": "bad", "code": 7}})["payload"]["error"], "bad")
        self.assertEqual(self.build({"status": "failed", "error": {"code": 7}})["payload"]["error"], '{"code":7}')
        self.assertEqual(self.build({"llm_error": "overloaded"})["payload"]["error"], "overloaded")

    def test_trace_context_is_filtered_and_gives_the_trace_tag(self):
        built = self.build({"status": "timeout"}, trace_context={"trace_id": "t1", "workspace_id": "w", "other": "x",
                                                                 "organization_id": 5})
        self.assertEqual(built["payload"]["trace_context"], {"trace_id": "t1", "workspace_id": "w"})
        self.assertEqual(built["trace_tag"], "t1")

    def test_raw_is_capped_at_8_kb(self):
        small = {"status": "failed", "output": "a" * 100}
        self.assertEqual(cap_raw(small), small)
        long_strings = {"status": "failed", "output": "a" * 20000, "error": "b" * 5000}
        self.assertEqual(cap_raw(long_strings), {"status": "failed", "output": "a" * 997 + "...", "error": "b" * 997 + "..."})
        many = {"status": "failed", "tool_results": [{"tool": "t%d" % n, "status": "error"} for n in range(2000)]}
        capped = cap_raw(many)
        self.assertEqual(sorted(capped), ["excerpt", "truncated"])
        self.assertIs(capped["truncated"], True)
        self.assertLessEqual(len(json.dumps(capped, separators=(",", ":")).encode("utf-8")), 8192)
        quotes = {"status": "failed", "items": ['"\\' * 10] * 2000}
        self.assertLessEqual(len(json.dumps(cap_raw(quotes), separators=(",", ":")).encode("utf-8")), 8192)
        payload = self.build(many)["payload"]
        jsonschema.Draft4Validator(payload_schema()).validate(payload)

    def test_bad_records(self):
        for args, reason in [
            (("", "e", {}), "agent_id must not be empty"),
            (("a", None, {}), "execution_id is required"),
            (("a", "e\n1", {}), "execution_id must not contain control characters"),
            (("a", "e", ["failed"]), "result must be a JSON object, got list"),
        ]:
            with self.assertRaises(MalformedFailure) as caught:
                build_failure(args[0], args[1], args[2], "webhook", "x")
            self.assertEqual(str(caught.exception), reason)
        with self.assertRaises(ValueError):
            build_failure("a", "e", {"status": "failed"}, "carrier-pigeon", "x")

    def test_accept_post(self):
        self.assertEqual(accept_post({"agent_id": "a", "execution_id": "e", "result": {"status": "running"}}, "s"),
                         {"failed": False, "summary": "no failure: status 'running'"})
        accepted = accept_post({"agent_id": "a", "execution_id": 42, "result": {"status": "timeout"}}, "s", now=0)
        self.assertEqual((accepted["failed"], accepted["summary"], accepted["payload"]["execution_id"],
                          accepted["payload"]["source"]), (True, "timeout: status is 'timeout'", "42", "webhook"))

    def test_iso_utc(self):
        self.assertEqual(iso_utc(1796000000.9999), "2026-11-30T00:53:21.000Z")


class DecodeEntryTest(unittest.TestCase):
    def test_flat_fields(self):
        fields = {"agent_id": "a", "execution_id": "e", "status": "failed", "duration_ms": "12.5", "timeout_ms": "10",
                  "max_iterations": "3", "timed_out": "true", "tool_results": '[{"tool": "x", "status": "error"}]',
                  "llm_error": '"overloaded"', "error": "boom", "trace_id": "t", "extra": "ignored"}
        self.assertEqual(decode_entry(fields), {
            "agent_id": "a", "execution_id": "e", "trace_context": {"trace_id": "t"},
            "result": {"status": "failed", "duration_ms": 12.5, "timeout_ms": 10, "max_iterations": 3, "timed_out": True,
                       "tool_results": [{"tool": "x", "status": "error"}], "llm_error": "overloaded", "error": "boom"},
        })

    def test_result_field_wins(self):
        record = decode_entry({"agent_id": "a", "execution_id": "e", "result": '{"status": "timeout"}', "status": "ok",
                               "trace_context": '{"trace_id": "t"}'})
        self.assertEqual((record["result"], record["trace_context"]), ({"status": "timeout"}, {"trace_id": "t"}))

    def test_bad_fields(self):
        for fields, reason in [
            ({}, "the entry has no fields"),
            ({"agent_id": "a", "execution_id": "e", "status": "failed", "timed_out": "maybe"},
             "field timed_out must be true or false"),
            ({"agent_id": "a", "execution_id": "e", "status": "failed", "duration_ms": "NaN"},
             "field duration_ms must be a finite number"),
            ({"agent_id": "a", "execution_id": "e", "status": "failed", "llm_error": "[1]"},
             "field llm_error must hold a JSON object or string"),
        ]:
            with self.assertRaises(MalformedFailure) as caught:
                decode_entry(fields)
            self.assertEqual(str(caught.exception), reason)

    def test_prepare_entry(self):
        self.assertIsNone(prepare_entry("1-0", {"agent_id": "a", "execution_id": "e", "status": "succeeded", "output": "x"}))
        built = prepare_entry("1-0", {"agent_id": "a", "execution_id": "e", "status": "failed"}, now=0)
        self.assertEqual((built["payload"]["source"], built["payload"]["source_id"], built["payload"]["raw"]),
                         ("redis_stream", "1-0", {"status": "failed"}))


class PayloadSchemaTest(unittest.TestCase):
    """Both sensors' payloads against triggers/agent_failure.yaml, with the draft 4 validator st2 uses."""

    def test_bullmq_and_stream_sensor_payloads_match_the_schema(self):
        from synthralos_lib.streams import bullmq

        validator = jsonschema.Draft4Validator(payload_schema())
        job = bullmq.parse_job({"name": "research", "atm": "2", "processedOn": "10", "finishedOn": "40",
                                "failedReason": "Request timed out after 30000 ms", "opts": '{"attempts": 2}',
                                "data": json.dumps({"agentId": "agent-7", "traceId": "t-1", "workspaceId": "w-1"}),
                                "stacktrace": '["Error: Request timed out\\n    at run (worker.js:1:1)"]'})
        payload, tag = bullmq.failure_payload("agent-runs", "7", job, "failed", {}, [SECRET], 0)
        validator.validate(payload)
        self.assertEqual((payload["failure_type"], payload["trace_context"], tag),
                         ("timeout", {"trace_id": "t-1", "workspace_id": "w-1"}, "t-1"))
        built = prepare_entry("1700000000000-0", {"agent_id": "a", "execution_id": "e", "status": "failed",
                                                  "error": "boom " + SECRET, "tool_results": "[]"},
                              secrets=[SECRET], now=0)
        validator.validate(built["payload"])
        self.assertEqual(built["payload"]["error"], "boom ***")

    def test_credential_shapes_scrubbed_without_configured_secrets(self):
        # The no-secret-in-the-text shortcut still applies the credential patterns.
        built = build_failure("a", "e", {"status": "failed", "error": "Authorization: Bearer abcdef123456"},
                              "bullmq", "q:1", raw={"url": "https://u:hunter22@example.com"}, now=0)
        self.assertEqual((built["payload"]["error"], built["payload"]["raw"]),
                         ("Authorization: Bearer ***", {"url": "https://u:***@example.com"}))
        non_ascii = build_failure("a", "e", {"status": "failed", "error": "échec: password=hunter22"}, "bullmq", "q:1",
                                  now=0)
        self.assertEqual(non_ascii["payload"]["error"], "échec: password=***")
        plain = {"status": "failed", "error": "boom"}
        self.assertIs(build_failure("a", "e", plain, "bullmq", "q:1", raw=plain, now=0)["payload"]["raw"], plain)
