"""Issue 18 item 4: every cut of text from outside goes through the one scrub-then-cap function
(`state.redaction.scrub_and_cap`). This walks the pack's sources (actions/, actions/lib/, sensors/)
with `ast` for cuts -- slices with an end (`[:N]`, `[a:b]`) or a negative start (`[-N:]`), and calls
named shorten / substring / truncate -- and fails on any that is not in the list below of cuts that
are not of outside text, each with the reason.

Issue 20: an action's result, exception and log lines are scrubbed in one place, the guard around
every `run` (`action_base._guarded`, `ops.trace.guarded_logs`); no action under actions/*.py scrubs
itself (`ActionsDoNotScrubTest`). Likewise a sensor's log lines are scrubbed by the guard its base
class opens (`sensors/synthralos_sensor_lib.SynthralosSensor.open_config`), and no sensor scrubs a
line itself (`SensorsDoNotScrubTest`). The end-to-end proof through st2's python runner wrapper is
`test_st2_python_runner_wrapper.PythonRunnerWrapperTest.test_secrets_in_logs_and_results_are_scrubbed_by_the_action_guard_alone`;
in process, `ActionsDoNotScrubTest.test_a_secret_in_a_log_line_and_in_the_result_is_scrubbed`."""

import ast
import glob
import json
import logging
import os
import unittest

import synthralos_tests  # noqa: F401

from st2tests.base import BaseSensorTestCase

from bullmq_failure_sensor import BullMQFailureSensor
from synthralos_lib.state.config import PACK_ROOT
from synthralos_tests.base import StoreBackendMixin

SOURCES = ("actions", "sensors")
CUT_CALLS = ("shorten", "substring", "truncate")

# "path:function: source of the cut" -> why it is not a cut of outside text.
NOT_OUTSIDE_TEXT = {
    # The one function itself.
    "actions/lib/synthralos_lib/state/redaction.py:scrub_and_cap: text[: max(0, limit - len(tail))]":
        "the one scrub-then-cap: the text is scrubbed on the line above",
    # Lists, pages and ids the pack makes itself.
    "actions/lib/synthralos_lib/events/builders.py:Correlation: FIELDS[:7]": "a tuple of field names",
    "actions/lib/synthralos_lib/events/builders.py:_set_path: path[:-1]": "a path of keys",
    "actions/lib/synthralos_lib/events/outbox/redis_stream.py:consumer_name: uuid.uuid4().hex[:8]": "a random hex id",
    "actions/lib/synthralos_lib/events/outbox/delivery.py:FlushReport.as_dict: self.dead[:50]": "a list of dead letters",
    "actions/lib/synthralos_lib/events/outbox/redis_stream.py:RedisOutbox._claim_with_xpending: [p[\"message_id\"] for p in "
    "pending if p[\"time_since_delivered\"] >= self.reclaim_idle_ms][:count]": "a list of stream ids",
    "actions/lib/synthralos_lib/events/outbox/datastore.py:DirectOutbox.waiting: sorted(found.items(), key=lambda item: "
    "item[0])[:limit]": "a page of queue entries",
    "actions/lib/synthralos_lib/events/outbox/datastore.py:DirectOutbox.dead_letters: list(reversed(self.store.list_range("
    "DIRECT_DEAD_LETTER_KEY)))[:limit]": "a page of dead letters",
    "actions/lib/synthralos_lib/events/outbox/datastore.py:DirectOutbox.replay: [d for d in letters if not ids or d[\"id\"] "
    "in ids][:limit]": "a page of dead letters",
    "actions/lib/synthralos_lib/events/rudderstack.py:RudderStackClient._send_chunk: chunk[:middle]":
        "half of a batch of events",
    "actions/lib/synthralos_lib/events/rudderstack.py:RudderStackClient._post: datetime.now(timezone.utc)"
    ".strftime(\"%Y-%m-%dT%H:%M:%S.%f\")[:-3]": "our own clock's timestamp, microseconds to milliseconds",
    "actions/lib/synthralos_lib/state/config.py:_values_at: name[:-2]": "a config schema path ('x[]' -> 'x')",
    "actions/lib/synthralos_lib/state/shapes.py:_bounded: list(value)[:max_items]": "a list bounded in items",
    "actions/lib/synthralos_lib/state/store.py:DatastoreStore.list_push: items[: max(1, int(max_len))]":
        "a list bounded in items",
    "actions/lib/synthralos_lib/state/store.py:DatastoreStore.list_push: items[: _within_bytes(items, max_bytes)]":
        "a list bounded in bytes",
    "actions/lib/synthralos_lib/state/store.py:DatastoreStore.items: out[offset : offset + limit]": "a page of keys",
    "actions/lib/synthralos_lib/state/store.py:_lrange: items[start : stop + 1]": "LRANGE over a list",
    "actions/lib/synthralos_lib/healing/detection.py:detect_failure: evidence[:MAX_EVIDENCE]": "a list of evidence",
    "actions/lib/synthralos_lib/healing/detection.py:_failed_tools: tools[:MAX_TOOL_RESULTS_SCANNED]":
        "a list of tool results",
    "actions/lib/synthralos_lib/healing/history.py:check_entry_inputs: (attempts or [])[:MAX_ATTEMPTS]":
        "a list of attempts",
    "actions/lib/synthralos_lib/healing/plans.py:rule_plan: steps[:MAX_STEPS]": "a list of plan steps",
    "actions/lib/synthralos_lib/healing/plans.py:_retry_tools: (failure.get(\"failed_tools\") or [])[:3]":
        "a list of tools",
    "actions/lib/synthralos_lib/llm/routing.py:resolve_chain: chain[:1]": "a list of LLM targets",
    "actions/lib/synthralos_lib/healing/failure_trigger.py:_evidence: list(found.get(\"evidence\") or [])"
    "[:EVIDENCE_ITEMS]": "a list of evidence",
    "actions/lib/synthralos_lib/healing/failure_trigger.py:_evidence: list(found.get(\"failed_tools\") or [])"
    "[:EVIDENCE_ITEMS]": "a list of tools",
    # Text that is outside text but bounded before it is scrubbed and capped again, shorter.
    "actions/lib/synthralos_lib/healing/detection.py:_safe_text: value[: MAX_INPUT_CHARS * 2]":
        "a pre-bound: every caller passes it to scrub_and_cap with a limit of at most MAX_INPUT_CHARS, so no "
        "character near this cut survives",
    "actions/lib/synthralos_lib/healing/detection.py:_safe_text: json.dumps(value, default=lambda item: \"<%s>\" % "
    "type(item).__name__)[: MAX_INPUT_CHARS * 2]": "the same pre-bound",
    # Lists, digests and configuration, not text from outside.
    "actions/lib/synthralos_lib/healing/detection.py:_check_invalid_output: _validation_texts(result)[:3]":
        "a list of validator messages, each already scrubbed and capped",
    "actions/lib/synthralos_lib/healing/detection.py:validation_errors: _validation_texts(result)[:MAX_VALIDATION_ERRORS]":
        "the same list",
    "actions/lib/synthralos_lib/healing/detection.py:_validation_texts: errors[:MAX_VALIDATION_ERRORS]":
        "a list of validator errors",
    "actions/lib/synthralos_lib/healing/detection.py:_validation_texts: path[:20]": "a list of path parts",
    "actions/lib/synthralos_lib/healing/recovery.py:trusted_failure: checks[: detection.MAX_EVIDENCE]":
        "a list of evidence items",
    "actions/lib/synthralos_lib/healing/recovery.py:trusted_failure: tools[: detection.MAX_FAILED_TOOLS]":
        "a list of tools",
    "actions/lib/synthralos_lib/healing/storm.py:_digest: hashlib.sha1(text.encode(\"utf-8\")).hexdigest()[:16]":
        "a digest",
    "actions/lib/synthralos_lib/llm/client.py:account_of: hashlib.sha256(key.encode(\"utf-8\")).hexdigest()[:12]":
        "a digest (the key itself is never kept)",
    "actions/lib/synthralos_lib/llm/client.py:_azure_root: base_url[:marker]": "configuration, not outside text",
    "actions/lib/synthralos_lib/llm/errors.py:wait_in_message: message[:2000]":
        "bounds a regex search; the text is never returned",
    "actions/lib/synthralos_lib/streams/consumer.py:StreamConsumer._process: list(self._attempts.items())[-self.batch:]":
        "a list of attempt counters",
    # Outside text scrubbed whole before it is cut.
    "actions/lib/synthralos_lib/healing/storm.py:fingerprint: \" \".join(text.split())[:FINGERPRINT_CHARS]":
        "scrub_and_cap ran on the text first; this cuts the normalised form",
    "actions/lib/synthralos_lib/healing/failure_trigger.py:cap_raw: text[: (limit - 64) // 2]":
        "build_failure scrubs the whole payload (scrub_if_needed) before raw is capped",
    "actions/lib/synthralos_lib/healing/failure_trigger.py:cap_raw: excerpt[: int(len(excerpt) * 0.9)]": "the same",
    "actions/lib/synthralos_lib/healing/failure_trigger.py:_clip: text[: limit - 3]":
        "the same: every text clipped here comes from the payload scrubbed whole in build_failure",
    "actions/lib/synthralos_lib/healing/trigger_payload.py:_first_line: text[:297]":
        "st2's refusal of a payload that build_failure scrubbed whole before checking it",
    "actions/lib/synthralos_lib/streams/consumer.py:dead_letter_record: text[: max(0, int(len(text) * 0.8) - 3)]":
        "already scrubbed by scrub_and_cap just above; shortened further to fit a byte budget",
    "actions/lib/synthralos_lib/healing/execution.py:simplify_query: text[:max_chars]":
        "the agent's own input (already scrubbed by detection), shortened at a sentence end for a re-run",
    "actions/lib/synthralos_lib/healing/execution.py:simplify_query: head[: ends[-1]]": "the same",
    "actions/lib/synthralos_lib/healing/execution.py:simplify_query: head[:cut]": "the same",
}



def _cuts(path, source):
    """["path:function: source"] of every cut in one file."""
    tree = ast.parse(source)
    found = []

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = "%s.%s" % (where, child.name) if isinstance(node, ast.ClassDef) else child.name
            cut = False
            if isinstance(child, ast.Subscript) and isinstance(child.slice, ast.Slice):
                lower = child.slice.lower
                negative_start = isinstance(lower, ast.UnaryOp) and isinstance(lower.op, ast.USub)
                cut = child.slice.upper is not None or negative_start
            elif isinstance(child, ast.Call):
                cut = getattr(child.func, "attr", getattr(child.func, "id", None)) in CUT_CALLS
            if cut:
                found.append("%s:%s: %s" % (path, where or "<module>", ast.get_source_segment(source, child)))
            visit(child, inner)

    visit(tree, None)
    return found


def pack_cuts():
    found = []
    for top in SOURCES:
        for folder, _, files in os.walk(os.path.join(PACK_ROOT, top)):
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path) as handle:
                        found.extend(_cuts(os.path.relpath(path, PACK_ROOT).replace(os.sep, "/"), handle.read()))
    return found


class OneScrubTest(unittest.TestCase):
    def test_every_cut_of_outside_text_goes_through_scrub_and_cap(self):
        found = pack_cuts()
        self.assertGreater(len(found), 20)  # the walk sees the sources
        unknown = [cut for cut in found if cut not in NOT_OUTSIDE_TEXT]
        self.assertEqual(unknown, [], "cut outside text with redaction.scrub_and_cap (or list a cut that is "
                                      "not of outside text in NOT_OUTSIDE_TEXT, with the reason)")

    def test_the_lists_name_only_cuts_that_exist(self):
        found = set(pack_cuts())
        self.assertEqual(sorted(set(NOT_OUTSIDE_TEXT) - found), [],
                         "these listed cuts are no longer in the sources (changed or gone): drop them from the list")

    def test_the_walk_finds_the_kinds_of_cut(self):
        source = ("def f(text, limit):\n    a = text[:300]\n    b = text[-40:]\n    c = textwrap.shorten(text, 9)\n"
                  "    d = text[3:]\n    e = text[::2]\n    return text[:limit] + a\n")
        self.assertEqual(_cuts("x.py", source), ["x.py:f: text[:300]", "x.py:f: text[-40:]",
                                                 "x.py:f: textwrap.shorten(text, 9)", "x.py:f: text[:limit]"])


def scrub_calls(path, source):
    """["path:line: source"] of every call of a scrub function (`self.scrub`, `scrub`, `scrub_text`,
    `scrub_result`, `scrub_and_cap`, ...) and every import from `state.redaction` in one file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        name = None
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").endswith("redaction"):
            name = "scrub"
        if isinstance(name, str) and name.lower().startswith("scrub"):
            found.append((node.lineno, node.col_offset, ast.get_source_segment(source, node)))
    return ["%s:%d: %s" % (path, line, text) for line, _, text in sorted(found)]


def scrub_calls_in(folder):
    """scrub_calls of every .py file directly in `folder` (relative to the pack), and how many files that was."""
    paths = sorted(glob.glob(os.path.join(PACK_ROOT, folder, "*.py")))
    found = []
    for path in paths:
        with open(path) as handle:
            found.extend(scrub_calls(os.path.relpath(path, PACK_ROOT), handle.read()))
    return found, len(paths)


class ActionsDoNotScrubTest(StoreBackendMixin, unittest.TestCase):
    backend = "datastore"

    def test_no_action_scrubs_its_own_result_or_log_lines(self):
        found, files = scrub_calls_in("actions")
        self.assertGreater(files, 20)
        self.assertEqual(found, [], "the action guard (action_base._guarded) scrubs every result, exception and "
                                    "log line of an action's run: drop the action's own scrubbing")

    def test_the_walk_finds_scrub_calls(self):
        source = ("from synthralos_lib.state.redaction import scrub_text\n"
                  "def run(self, x):\n    self.logger.info(self.scrub(x))\n    return scrub_result(x, ())\n")
        self.assertEqual(scrub_calls("a.py", source), [
            "a.py:1: from synthralos_lib.state.redaction import scrub_text", "a.py:3: self.scrub(x)",
            "a.py:4: scrub_result(x, ())"])

    def test_a_secret_in_a_log_line_and_in_the_result_is_scrubbed(self):
        from bullmq_add_job import BullMQAddJob
        from synthralos_tests.redis_server import get_redis_server

        key = "agent-key-one-scrub-5e1f"
        redis = get_redis_server()
        config = self.make_config(agent_api={"api_key": key}, bullmq={"redis_url": redis.url, "prefix": "one-scrub"})
        action = BullMQAddJob(config=config, action_service=self.action_service)
        # The BullMQ library knows no secrets: the queue name comes back in the result (the job's key) and in the
        # action's log line as given, and only the guard around run scrubs them.
        with self.assertLogs(action.logger, level="INFO") as logs:
            result = action.run(queue="q-" + key, job_name="j", job_id="one-scrub-1")
        self.assertEqual(result["key"], "one-scrub:q-***:one-scrub-1")
        self.assertEqual([r.getMessage() for r in logs.records], ["[Self-Healing] BullMQ job q-***:one-scrub-1 waiting"])
        self.assertNotIn(key, json.dumps(result))
        self.assertEqual(redis.client().hget("one-scrub:q-%s:one-scrub-1" % key, "name"), "j")


class SensorsDoNotScrubTest(BaseSensorTestCase):
    sensor_cls = BullMQFailureSensor

    def test_no_sensor_scrubs_its_own_log_lines(self):
        found, files = scrub_calls_in("sensors")
        self.assertEqual(files, 4)
        self.assertEqual(found, [], "the sensors' base class (SynthralosSensor.open_config) scrubs every log line "
                                    "of the sensor process: drop the sensor's own scrubbing")

    def test_a_secret_in_a_sensor_log_line_is_scrubbed_by_the_base_class_guard(self):
        key = "agent-key-sensor-scrub-7c2d"
        # st2's sensor container hands a sensor a real logger (st2tests' mock service, a Mock).
        self.sensor_service._logger = logging.getLogger("synthralos.tests.sensor_scrub")
        sensor = self.get_sensor_instance(config={"agent_api": {"api_key": key}})
        with self.assertLogs(sensor._logger, level="INFO") as logs:
            sensor.setup()  # BullMQ is off: the sensor idles, with its log guard open
            try:
                # The read-failure line of BullMQFailureSensor._loop, with a Redis error that echoes the key.
                sensor._logger.error("[Self-Healing] BullMQ read failed (%s: %s); retrying in %.1f s",
                                     "ResponseError", "WRONGPASS key " + key, 0.5)
            finally:
                sensor.cleanup()
        lines = [record.getMessage() for record in logs.records]
        self.assertIn("[Self-Healing] BullMQ read failed (ResponseError: WRONGPASS key ***); retrying in 0.5 s", lines)
        self.assertNotIn(key, "\n".join(lines))


if __name__ == "__main__":
    unittest.main()
