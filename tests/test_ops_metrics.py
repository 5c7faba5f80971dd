"""get_system_metrics: figures that agree with a scripted sequence of deliveries, breaker
outcomes, cron states, recoveries and failures, on both store backends; the Prometheus text
passes `promtool check metrics`; the textfile is written atomically."""

import synthralos_tests  # noqa: F401

import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.http_server import free_port
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from flush_events import FlushEvents
from forward_event import ForwardEvent
from get_system_metrics import GetSystemMetrics
from record_failure import RecordFailureAction
from synthralos_lib.llm.breaker import Breakers
from synthralos_lib.cron.backoff import CronBackoff
from synthralos_lib.ops import recovery_stats

# (job id, consecutive failures): disabled at the default limit of 10, in backoff, recovered.
CRON_FAILURES = [("hourly_sync", 2), ("nightly_export", 10), ("healthy_job", 0)]
# (seconds ago, failure type, outcome, duration_s)
RECOVERIES = [
    (100, "timeout", "repaired", 30.0),
    (200, "timeout", "repaired", 60.0),
    (300, "timeout", "escalated", None),
    (50, "llm_error", "escalated", None),
    (10, "tool_failure", "planned", None),
    (7200, "error", "repaired", 5.0),  # outside the one-hour window
    (5, "timeout", "no_failure", None),  # not a failure: not logged
]


def promtool():
    return shutil.which("promtool")


class MetricsContract(StoreBackendMixin):
    def setUp(self):
        super(MetricsContract, self).setUp()
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)

    def config(self, write_key=DEFAULT_WRITE_KEY):
        return {
            "rudderstack": {"write_key": write_key, "data_plane_url": self.sink.url, "max_retries": 0,
                            "retry_delay_ms": 0},
            "llm_targets": [
                {"name": "oa", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o-mini"},
                {"name": "an", "kind": "anthropic", "base_url": "http://127.0.0.1:9/v1", "model": "claude-3-5-haiku"},
            ],
        }

    def run_action(self, cls, config=None, **params):
        action = cls(config=self.make_config(**(config or self.config())), action_service=self.action_service)
        return action.run(**params)

    def forward(self, n, config=None, first=0):
        for i in range(first, first + n):
            self.run_action(ForwardEvent, config=config, event_type="agent_execution", status="succeeded",
                            source_execution_id="exec-%d" % i, agent_id="agent-1")
        if self.backend == "redis":
            self.run_action(FlushEvents, config=config, force=True, max_batches=50, reclaim_idle_ms=None)

    def script(self):
        """The scripted sequence the figures must agree with."""
        self.forward(3)  # delivered
        revoked = self.config(write_key="revoked-key")
        revoked["rudderstack"]["config_error_fix_window_s"] = 0  # no wait for a fixed key: dead-lettered at once
        self.forward(1, config=revoked, first=3)  # dead-lettered (401)
        if self.backend == "redis":
            for i in (4, 5):  # queued, not flushed yet
                self.run_action(ForwardEvent, event_type="agent_execution", status="succeeded",
                                source_execution_id="exec-%d" % i, agent_id="agent-1")
        store = self.make_store(**self.config())
        Breakers(store).record("oa", ok=False, error_class="auth_config")
        now = time.time()
        for ago, failure_type, outcome, duration in RECOVERIES:
            recovery_stats.record(store, failure_type, outcome, duration, clock=lambda ago=ago: now - ago)
        cron = CronBackoff(store, clock=lambda: now)
        for job_id, failures in CRON_FAILURES:
            for _ in range(failures):
                cron.record(job_id, succeeded=False, error="exit 1")
        cron.record("healthy_job", succeeded=True)
        self.cron_now = now

    def test_metrics_agree_with_the_script(self):
        self.script()
        out = self.run_action(GetSystemMetrics, window_s=3600)
        json.dumps(out)
        self.assertEqual(out["errors"], {})
        self.assertEqual(out["store"], "redis" if self.backend == "redis" else "st2_datastore")
        events = out["events"]
        expected_events = {"depth": 2, "pending": 0, "dead_letters": 1, "enqueued": 6, "delivered": 3,
                           "dead_lettered": 1, "retries": 0, "config_errors": 1}
        if self.backend != "redis":
            expected_events.update(depth=0, enqueued=0)
        self.assertEqual({k: events[k] for k in expected_events}, expected_events)
        self.assertEqual([(c["target"], c["state"], c["reason"]) for c in out["llm_circuits"]],
                         [("oa", "open", "auth_config"), ("an", "closed", None)])
        self.assertEqual(out["cron"], {"available": True, "backoff": 1, "disabled": 1, "jobs": [
            {"job": "hourly_sync", "state": "backoff", "consecutive_failures": 2,
             "next_allowed_at": self.cron_now + 120.0},  # 60 s x 2^(2-1) after the last failure
            {"job": "nightly_export", "state": "disabled", "consecutive_failures": 10,
             "next_allowed_at": self.cron_now + 3600.0},  # the default quiet period before a probe
        ]})
        recoveries = out["recoveries"]
        self.assertEqual(recoveries["window_s"], 3600)
        self.assertEqual(recoveries["all"], {"failures": 5, "attempted": 4, "repaired": 2, "escalated": 2,
                                             "planned": 1, "recovery_rate": 0.5, "mttr_s": 45.0})
        self.assertEqual(recoveries["by_type"], {
            "timeout": {"failures": 3, "attempted": 3, "repaired": 2, "escalated": 1, "planned": 0,
                        "recovery_rate": 0.6667, "mttr_s": 45.0},
            "llm_error": {"failures": 1, "attempted": 1, "repaired": 0, "escalated": 1, "planned": 0,
                          "recovery_rate": 0.0, "mttr_s": None},
            "tool_failure": {"failures": 1, "attempted": 0, "repaired": 0, "escalated": 0, "planned": 1,
                             "recovery_rate": None, "mttr_s": None},
        })
        self.assertEqual(recoveries["totals"], [
            {"failure_type": "error", "outcome": "repaired", "count": 1},
            {"failure_type": "llm_error", "outcome": "escalated", "count": 1},
            {"failure_type": "timeout", "outcome": "escalated", "count": 1},
            {"failure_type": "timeout", "outcome": "repaired", "count": 2},
            {"failure_type": "tool_failure", "outcome": "planned", "count": 1},
        ])
        self.assertEqual(out["failures"], {"window_s": 3600, "total": 5,
                                           "by_type": {"llm_error": 1, "timeout": 3, "tool_failure": 1}})

    def test_prometheus_exposition(self):
        self.script()
        out = self.run_action(GetSystemMetrics, window_s=3600, format="prometheus")
        self.assertEqual(out["errors"], {})
        lines = out["text"].splitlines()
        backend = "redis_stream" if self.backend == "redis" else "st2_datastore"
        for expected in [
            "# HELP synthralos_outbox_depth Events in the outbox (waiting and in flight).",
            "# TYPE synthralos_outbox_depth gauge",
            'synthralos_outbox_depth{backend="%s"} %d' % (backend, 2 if self.backend == "redis" else 0),
            "# TYPE synthralos_events_delivered_total counter",
            'synthralos_events_delivered_total{backend="%s"} 3' % backend,
            'synthralos_outbox_dead_letters{backend="%s"} 1' % backend,
            'synthralos_llm_circuit_state{state="open",target="oa"} 1',
            'synthralos_llm_circuit_state{state="closed",target="oa"} 0',
            'synthralos_llm_circuit_state{state="closed",target="an"} 1',
            'synthralos_cron_jobs{state="backoff"} 1',
            'synthralos_cron_jobs{state="disabled"} 1',
            "# TYPE synthralos_recoveries_total counter",
            'synthralos_recoveries_total{failure_type="timeout",outcome="repaired"} 2',
            'synthralos_recoveries_total{failure_type="error",outcome="repaired"} 1',
            'synthralos_recoveries_window{failure_type="timeout",outcome="escalated"} 1',
            'synthralos_recovery_rate{failure_type="timeout"} 0.6667',
            'synthralos_recovery_mttr_seconds{failure_type="timeout"} 45',
            'synthralos_failures_window{failure_type="llm_error"} 1',
            "synthralos_metrics_window_seconds 3600",
            'synthralos_metrics_part_up{part="events"} 1',
        ]:
            self.assertIn(expected, lines)
        # No value for a rate that has no attempts (tool_failure), rather than a made-up 0.
        self.assertNotIn('synthralos_recovery_rate{failure_type="tool_failure"}', out["text"])
        self.assert_promtool_accepts(out["text"])

    def assert_promtool_accepts(self, text):
        tool = promtool()
        if tool is None:
            self.skipTest("promtool not installed (scripts/run-tests.sh installs Debian's prometheus package)")
        proc = subprocess.run([tool, "check", "metrics"], input=text.encode("utf-8"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual((proc.returncode, proc.stdout.decode("utf-8", "replace")), (0, ""))

    def test_record_failure_action_feeds_the_metrics(self):
        self.run_action(RecordFailureAction, agent_id="agent-1", failure={"failure_type": "timeout"},
                        outcome="repaired", started_at=time.time() - 12)
        self.run_action(RecordFailureAction, agent_id="agent-1", failure={"failure_type": "timeout"},
                        outcome="no_failure")
        self.run_action(RecordFailureAction, agent_id="agent-2", failure={"failure_type": "llm_error"},
                        outcome="escalated", started_at=time.time() - 40)
        out = self.run_action(GetSystemMetrics, window_s=600)
        by_type = out["recoveries"]["by_type"]
        self.assertEqual(sorted(by_type), ["llm_error", "timeout"])
        self.assertEqual({k: by_type["timeout"][k] for k in ("failures", "attempted", "repaired", "escalated")},
                         {"failures": 1, "attempted": 1, "repaired": 1, "escalated": 0})
        self.assertAlmostEqual(by_type["timeout"]["mttr_s"], 12.0, delta=5.0)
        self.assertEqual(by_type["llm_error"]["recovery_rate"], 0.0)
        self.assertEqual(out["failures"]["by_type"], {"llm_error": 1, "timeout": 1})

    def test_empty_store(self):
        out = self.run_action(GetSystemMetrics)
        self.assertEqual(out["errors"], {})
        self.assertEqual(out["recoveries"]["all"], {"failures": 0, "attempted": 0, "repaired": 0, "escalated": 0,
                                                    "planned": 0, "recovery_rate": None, "mttr_s": None})
        self.assertEqual(out["recoveries"]["totals"], [])
        self.assertEqual(out["cron"], {"available": True, "jobs": [], "backoff": 0, "disabled": 0})
        text = self.run_action(GetSystemMetrics, format="prometheus")["text"]
        self.assert_promtool_accepts(text)

    def test_textfile_written_atomically(self):
        self.script()
        directory = tempfile.mkdtemp(prefix="synthralos-textfile-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "synthralos.prom")
        with open(path, "w") as handle:
            handle.write("old content\n")
        out = self.run_action(GetSystemMetrics, write_to=path)
        self.assertEqual(out["format"], "prometheus")
        self.assertEqual(out["written"], {"path": path, "bytes": len(out["text"].encode("utf-8"))})
        with open(path) as handle:
            self.assertEqual(handle.read(), out["text"])
        self.assertEqual(os.listdir(directory), ["synthralos.prom"])  # no temp file left behind
        self.assertEqual(oct(os.stat(path).st_mode & 0o777), "0o644")
        with self.assertRaises(ValueError) as ctx:
            self.run_action(GetSystemMetrics, write_to=os.path.join(directory, "synthralos.txt"))
        self.assertIn("must name a .prom file", str(ctx.exception))
        with self.assertRaises(OSError):
            self.run_action(GetSystemMetrics, write_to=os.path.join(directory, "missing", "x.prom"))
        self.assertEqual(os.listdir(directory), ["synthralos.prom"])


class MetricsOnRedis(object):
    """Only in RedisMetricsTest."""

    def test_store_down_every_part_reported(self):
        config = dict(self.config(), redis={"url": "redis://127.0.0.1:%d/0" % free_port()})
        action = GetSystemMetrics(config=config, action_service=self.action_service)
        with self.assertLogs(action.logger, level="INFO") as logs:
            out = action.run(format="prometheus")
        # Breakers fail open without their store, so the circuits part still answers.
        self.assertEqual(sorted(out["errors"]), ["cron", "events", "recoveries", "recovery_totals", "sensors", "storm"])
        self.assertIn('synthralos_metrics_part_up{part="events"} 0', out["text"].splitlines())
        self.assertIn('synthralos_metrics_part_up{part="cron"} 0', out["text"].splitlines())
        messages = [r.getMessage() for r in logs.records]
        self.assertEqual(len(messages), len(out["errors"]))
        self.assertTrue(all(m.startswith("[Observability] metrics part ") for m in messages), messages)
        self.assert_promtool_accepts(out["text"])


on_both_backends(MetricsContract, "{backend}MetricsTest", redis=MetricsOnRedis)
