"""The Grafana dashboard (dashboards/synthralos-grafana.json) queries only metrics that
get_system_metrics exports, with labels and label values those metrics carry.

What is exported is read from `ops.metrics.to_prometheus` over a metrics dict with every part
present (the shape `ops.metrics.collect` returns): the `# TYPE` lines name the families, the
samples give each family's labels and their values.
"""

import synthralos_tests  # noqa: F401

import json
import os
import re
import unittest

from hypothesis import given, strategies as st

from synthralos_tests import PACK_ROOT
from synthralos_lib.ops import metrics

DASHBOARD = os.path.join(PACK_ROOT, "dashboards", "synthralos-grafana.json")

PROMQL_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                   "offset", "bool", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\")\s*")
_IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.])([A-Za-z_:][A-Za-z0-9_:]*)(?![A-Za-z0-9_:])(\s*\()?")


def parse_promql(expr):
    """(metric names, [(metric or None, label, operator, value)]) used by a PromQL expression."""
    matchers = []
    for metric, body in _SELECTOR.findall(expr):
        for part in filter(None, (p.strip() for p in _split_matchers(body))):
            found = _MATCHER.fullmatch(part)
            if not found:
                raise ValueError("cannot read label matcher %r in %r" % (part, expr))
            matchers.append((metric or None, found.group(1), found.group(2), json.loads(found.group(3))))
    bare = _SELECTOR.sub(lambda m: m.group(1) or "", expr)
    bare = _STRING.sub(" ", _GROUPING.sub(" ", _RANGE.sub(" ", bare)))
    names = set()
    for name, call in _IDENTIFIER.findall(bare):
        if call or name.lower() in PROMQL_KEYWORDS or re.match(r"^\d", name):
            continue  # a function call, an operator keyword or a number
        names.add(name)
    return names, matchers


def _split_matchers(body):
    parts, current, quoted = [], "", False
    for index, char in enumerate(body):
        if char == '"' and (index == 0 or body[index - 1] != "\\"):
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def full_metrics():
    """A metrics dict as `collect` returns it, with every part present and populated."""
    stats = {k: 1 for _, k, _ in metrics.EVENT_GAUGES + metrics.EVENT_COUNTERS}
    stats["backend"] = "redis"
    return {
        "collected_at": 1767225600.0,
        "store": "redis",
        "events": stats,
        "llm_circuits": [{"target": "oa", "state": "open", "failure_rate": 0.5, "window_requests": 10}],
        "cron": {"available": True, "jobs": [], "backoff": 1, "disabled": 1},
        "recoveries": {"window_s": 3600,
                       "by_type": {"timeout": {"repaired": 1, "escalated": 1, "planned": 0, "recovery_rate": 0.5,
                                               "mttr_s": 30.0, "failures": 2}},
                       "totals": [{"failure_type": "timeout", "outcome": "repaired", "count": 1}]},
        "failures": {"window_s": 3600, "total": 2, "by_type": {"timeout": 2}},
        "sensors": [dict({key: 1 for _, key, _ in metrics.SENSOR_GAUGES + metrics.SENSOR_COUNTERS},
                         sensor="agent_failure_sensor", status="up")],
        "storm": {"coalesced": 1, "over_budget": 1, "budget_escalations": 1},
        "errors": {},
    }


def exported():
    """{metric name: {label: set(values)}} from the Prometheus text of `full_metrics()`."""
    text = metrics.to_prometheus(full_metrics())
    families = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families[line.split()[2]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, rest = line.partition("{")
        name = name.split()[0]
        labels = re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"', rest.rpartition("}")[0]) if rest else []
        for label, value in labels:
            families[name].setdefault(label, set()).add(value)
    return families


def dashboard_queries(dashboard):
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets") or []:
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels") or [])

    walk(dashboard["panels"])
    return found


class DashboardMetricsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DASHBOARD) as handle:
            cls.dashboard = json.load(handle)
        cls.exported = exported()

    def test_every_family_is_exported_with_samples(self):
        # The fixture covers every family, so label checks below see every label.
        empty = sorted(name for name, labels in self.exported.items() if not labels
                       and name not in ("synthralos_metrics_collected_timestamp_seconds",
                                        "synthralos_cron_backoff_available", "synthralos_metrics_window_seconds"))
        self.assertEqual(empty, [])

    def test_every_queried_metric_is_exported(self):
        queries = dashboard_queries(self.dashboard)
        self.assertGreater(len(queries), 15)
        used = set()
        for title, expr in queries:
            names, matchers = parse_promql(expr)
            self.assertTrue(names, "%s: no metric in %r" % (title, expr))
            for name in names:
                self.assertIn(name, self.exported, "%s: %r queries %s, which get_system_metrics does not export"
                              % (title, expr, name))
            used |= names
            for metric, label, operator, value in matchers:
                self.assertIsNotNone(metric, "%s: a selector without a metric name in %r" % (title, expr))
                labels = self.exported[metric]
                self.assertIn(label, labels, "%s: %s has no label %r" % (title, metric, label))
                if operator == "=":
                    self.assertIn(value, labels[label], "%s: %s{%s} is never %r" % (title, metric, label, value))
                elif operator == "=~":
                    for alternative in value.split("|"):
                        self.assertIn(alternative, labels[label], "%s: %s{%s} is never %r"
                                      % (title, metric, label, alternative))
        # The dashboard's rows cover recoveries, circuits, the outbox, dead letters, cron, collection health,
        # sensor health and storm control.
        for name in ("synthralos_recovery_rate", "synthralos_recovery_mttr_seconds", "synthralos_llm_circuit_state",
                     "synthralos_outbox_depth", "synthralos_outbox_oldest_age_seconds", "synthralos_outbox_dead_letters",
                     "synthralos_cron_jobs", "synthralos_metrics_part_up", "synthralos_sensor_up",
                     "synthralos_sensor_oldest_pending_age_seconds", "synthralos_recovery_storm_total"):
            self.assertIn(name, used)

    def test_panels_use_the_datasource_variable(self):
        self.assertEqual(self.dashboard["templating"]["list"][0]["name"], "datasource")
        for panel in self.dashboard["panels"]:
            if panel["type"] != "row":
                self.assertEqual(panel["datasource"]["uid"], "${datasource}", panel["title"])
        ids = [p["id"] for p in self.dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)))


class PromqlParserTest(unittest.TestCase):
    def test_names_labels_and_functions(self):
        names, matchers = parse_promql(
            'sum by (outcome) (increase(synthralos_recoveries_total{outcome=~"a|b", failure_type!="x,y"}[1h])) '
            '/ on (job) group_left(instance) clamp_min(up, 1) and time() - foo_seconds offset 5m > 0.5e3')
        self.assertEqual(names, {"synthralos_recoveries_total", "up", "foo_seconds"})
        self.assertEqual(matchers, [("synthralos_recoveries_total", "outcome", "=~", "a|b"),
                                    ("synthralos_recoveries_total", "failure_type", "!=", "x,y")])

    def test_a_query_of_an_unknown_metric_is_caught(self):
        names, _ = parse_promql("rate(synthralos_no_such_metric_total[5m])")
        self.assertNotIn(list(names)[0], exported())

    @given(st.sampled_from(sorted(exported())), st.sampled_from(["rate(%s[5m])", "sum by (x) (%s)", "%s > 1",
                                                                   "max_over_time(%s[1h:5m])", "-%s"]))
    def test_any_exported_metric_in_any_wrapper_is_found(self, name, template):
        self.assertEqual(parse_promql(template % name)[0], {name})
