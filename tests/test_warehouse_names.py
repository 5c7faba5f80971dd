"""Every event name and property the pack emits, named as RudderStack's warehouse names it
(analytics/synthralos_analytics/warehouse_names.py): no collision, no reserved word, nothing
over PostgreSQL's 63 characters, and the warehouse models read only columns that exist.

The names come from events the pack's builders really build (agent events carrying the
workflows' results, LLM cost, prompt similarity with a guardrail, the cron backoff
transitions of a real CronBackoff over Redis) and from the tables in docs/events.md.
"""

import synthralos_tests  # noqa: F401

import os
import re
import sys
import unittest
import uuid
from datetime import datetime, timezone

import yaml
from hypothesis import given, settings as hypothesis_settings, strategies as st

from synthralos_tests import PACK_ROOT
from synthralos_tests.redis_server import get_redis_server

sys.path.insert(0, os.path.join(PACK_ROOT, "analytics"))

from synthralos_analytics import scenario  # noqa: E402
from synthralos_analytics.warehouse_names import (  # noqa: E402
    POSTGRES_MAX_IDENTIFIER, TRACK_RESERVED_COLUMNS, NameReport, column_name, snake_case, table_name)
from synthralos_lib.cron.backoff import CronBackoff  # noqa: E402
from synthralos_lib.cron.events import transition_event  # noqa: E402
from synthralos_lib.events import builders  # noqa: E402
from synthralos_lib.events.forwarding import correlation  # noqa: E402
from synthralos_lib.state.store import RedisStore  # noqa: E402

SOURCES_YML = os.path.join(PACK_ROOT, "analytics", "dbt", "models", "sources.yml")
EVENTS_DOC = os.path.join(PACK_ROOT, "docs", "events.md")
STANDARD_COLUMNS = {"id", "anonymous_id", "user_id", "event", "event_text", "sent_at", "timestamp",
                    "original_timestamp", "received_at", "channel", "uuid_ts"}
WORKFLOW_OUTPUTS = ("llm_retry", "reroute_request", "agent_recovery")  # actions; reroute_request runs llm_retry's workflow


class SnakeCaseTest(unittest.TestCase):
    def test_lodash_snake_case(self):
        # lodash's documented examples, rudder-server's own test cases, and the pack's digits.
        for text, expected in [
            ("Foo Bar", "foo_bar"), ("fooBar", "foo_bar"), ("--FOO-BAR--", "foo_bar"), ("gpt4o", "gpt_4_o"),
            ("HTTPServer", "http_server"), ("ABCdef", "ab_cdef"), ("k3_namespace", "k_3_namespace"),
            ("st2_execution_id", "st_2_execution_id"), ("input_price_per_1k", "input_price_per_1_k"),
            ("1st_place", "1st_place"), ("don't", "dont"),
        ]:
            self.assertEqual(snake_case(text), expected, text)

    def test_column_names(self):
        for raw, expected in [
            ("omega v2 ", "omega_v_2"), ("9mega________-________90", "_9_mega_90"), (u"C\u00edz\u01d4", "c_z"),
            ("group", "_group"), ("Order", "_order"), ("__private_key", "__private_key"), ("ómega", "mega"),
            ("x" * 70, "x" * 63), ("cost.usd", "cost_usd"), ("$$", ""),
        ]:
            self.assertEqual(column_name(raw), expected, raw)
        self.assertEqual(column_name("x" * 70, provider="snowflake"), "x" * 70)
        self.assertEqual(table_name("llm_cost_logged"), "llm_cost_logged")

    @hypothesis_settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=st.sampled_from("aZ09_ .-$gG4oT"), max_size=80))
    def test_names_are_safe_and_stable(self, raw):
        name = column_name(raw)
        self.assertRegex(name, r"^[a-z0-9_]*$")
        self.assertLessEqual(len(name), POSTGRES_MAX_IDENTIFIER + 1)  # + the reserved-word prefix
        self.assertFalse(name[:1].isdigit())
        self.assertEqual(column_name(name), name)  # a warehouse name is its own warehouse name


def recovery_outputs(settings):
    """The agent_recovery results of the scripted recoveries (repaired and escalated)."""
    return [scenario.recovery_event(settings, r) for r in scenario.RECOVERIES]


def workflow_output_keys(workflow):
    """The output keys of the workflow action `workflow` (its entry point's)."""
    with open(os.path.join(PACK_ROOT, "actions", workflow + ".yaml")) as handle:
        entry_point = yaml.safe_load(handle)["entry_point"]
    with open(os.path.join(PACK_ROOT, "actions", entry_point)) as handle:
        doc = yaml.safe_load(handle)
    return [list(item)[0] for item in doc.get("output") or []]


def documented_properties():
    """{event name: [property]} from the 'Built-in events' table of docs/events.md."""
    with open(EVENTS_DOC) as handle:
        text = handle.read()
    table = text.split("### Built-in events", 1)[1].split("\n\n", 2)[1]
    documented = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([a-z_]+)`", cells[0])
        props = [p for p in re.findall(r"`([A-Za-z0-9_.]+)`", cells[1]) if "." not in p and p != "properties"]
        for name in names:
            documented[name] = props
    return documented


class PackEventNamesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.settings = scenario.scenario_settings("http://127.0.0.1:9", get_redis_server().url)
        cls.report = NameReport()
        cls.events = cls.build_events()
        for event in cls.events:
            cls.report.add_event(event)
        for name, keys in documented_properties().items():
            cls.report.add_keys(name, keys)
        for workflow in WORKFLOW_OUTPUTS:
            keys = ["result_output_" + k for k in workflow_output_keys(workflow)]
            for event_name in ("agent_execution", "agent_failure", "agent_repair"):
                cls.report.add_keys(event_name, keys)

    @classmethod
    def build_events(cls):
        settings = cls.settings
        events = recovery_outputs(settings)
        events.extend(scenario.cost_event(settings, call, scenario.WEEK_1) for call in scenario.LLM_CALLS)
        events.extend(scenario.similarity_events(settings))
        corr = correlation(settings, source_execution_id="e1", agent_id="agent-a",
                           traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                           user_id="user-1")
        events.append(builders.similarity_event(corr, 0.8, vector_a=[1.0, 0.0], vector_b=[0.9, 0.1],
                                                flagged_content="x", guardrail={"name": "pii", "version": "2"}))
        llm_result = {"output": {"content": "hi", "served_by": "oa", "provider": "openai", "model": "gpt-4o",
                                 "region": "eu", "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                                           "total_tokens": 15},
                                 "attempts": [{"target": "oa", "outcome": "ok"}], "attempt_count": 1,
                                 "total_delay_s": 0.0, "skipped": [], "result": "success", "reason": None,
                                 "breaker_warning": None}}
        for name in (builders.EVENT_AGENT_EXECUTION, builders.EVENT_AGENT_FAILURE):
            events.append(builders.agent_event(name, corr, "succeeded", started_at="2026-01-01T00:00:00Z",
                                               ended_at="2026-01-01T00:00:02Z",
                                               details={"workflow": "synthralos.llm_retry", "result": llm_result}))
        # The cron backoff transitions, from the library itself over a real Redis.
        now = [datetime(2026, 11, 10, tzinfo=timezone.utc).timestamp()]
        store = RedisStore(get_redis_server().url, key_prefix="names-%s:" % uuid.uuid4().hex)
        backoff = CronBackoff.from_config(settings, store, clock=lambda: now[0])
        transitions = []
        for _ in range(settings.section("cron_backoff")["max_consecutive_failures"]):
            transitions += backoff.record("nightly_export", False, "HTTP 500")["transitions"]
        for ok in (False, True):
            now[0] += 3 * 3600
            assert backoff.check("nightly_export")["probe"]
            transitions += backoff.record("nightly_export", ok, None if ok else "HTTP 500")["transitions"]
        assert [t["event"] for t in transitions] == ["cron_job_disabled", "cron_job_probe", "cron_job_probe",
                                                    "cron_job_reenabled"]
        cron_corr = correlation(settings)
        events.extend(transition_event(cron_corr, t) for t in transitions)
        return events

    def test_every_event_kind_was_built(self):
        self.assertEqual(sorted(set(e["event"] for e in self.events)), sorted([
            "agent_execution", "agent_failure", "agent_repair", "cron_job_disabled", "cron_job_probe",
            "cron_job_reenabled", "llm_cost_logged", "prompt_similarity_logged"]))

    def test_no_collision_reserved_word_or_long_name(self):
        self.assertEqual(self.report.problems, [])

    def test_names_rudderstack_changes(self):
        """The renames a warehouse user meets (the models use these names)."""
        columns = self.report.columns("agent_repair")
        self.assertIn("st_2_execution_id", columns)
        self.assertIn("result_output_failure_failure_type", columns)
        self.assertIn("input_price_per_1_k", self.report.columns("llm_cost_logged"))

    def test_the_models_read_columns_that_exist(self):
        with open(SOURCES_YML) as handle:
            sources = yaml.safe_load(handle)["sources"]
        tables = [t for s in sources for t in s["tables"]]
        self.assertTrue(tables)
        for table in tables:
            wanted = set(c["name"] for c in table.get("columns") or [])
            known = STANDARD_COLUMNS if table["name"] == "tracks" else self.report.columns(table["name"]) | STANDARD_COLUMNS
            self.assertEqual(sorted(wanted - known), [], table["name"])


class NameReportTest(unittest.TestCase):
    def test_it_reports_each_kind_of_problem(self):
        report = NameReport()
        corr = builders.Correlation({}, agent_id="a")
        long_key = "a_property_name_that_is_much_too_long_for_a_postgresql_identifier_x"
        event = builders.custom_event("bad event", {"costUsd": 1, "cost_usd": 2, "group": "g", long_key: 1,
                                                    "timestamp": "t", "nested": {"key": 1}, "nested_key": 2,
                                                    "$": 1}, corr)
        report.add_event(event)
        problems = "\n".join(report.problems)
        self.assertIn("['costUsd', 'cost_usd'] collide in column 'cost_usd'", problems)
        self.assertIn("['nested.key', 'nested_key'] collide in column 'nested_key'", problems)
        self.assertIn("is the reserved word 'group' (it lands as '_group')", problems)
        self.assertIn("%r is %d characters" % (long_key, len(long_key)), problems)
        self.assertIn("'timestamp' becomes column 'timestamp', which RudderStack fills itself", problems)
        self.assertIn("'$' has no letters or digits", problems)
        self.assertEqual(report.columns("bad_event") & TRACK_RESERVED_COLUMNS, {"timestamp"})
