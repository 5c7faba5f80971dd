"""guarded_run through the real Orquesta conductor with the real cron_backoff actions, the
real store (st2 datastore and Redis), a controllable clock and the RudderStack sink: run,
skip, disable, probe (success and failure), feature off, store down; and the example
CronTimer rule through st2's own rule matcher and parameter rendering."""

import synthralos_tests  # noqa: F401

import copy
import os
import unittest

import jsonschema
import yaml

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.cron_clock import HOUR, T0, Clock
from synthralos_tests.orquesta_runner import (
    ACTIONS_DIR, ActionParameterError, outcomes, python_action, python_failure, python_result, run_workflow,
    skip_unless_orquesta,
)
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from cron_backoff_check import CronBackoffCheck
from cron_backoff_record import CronBackoffRecord
from flush_events import FlushEvents
from synthralos_lib.cron.backoff import CronBackoff, iso
from synthralos_lib.events.builders import message_id
from synthralos_lib.state.config import PACK_ROOT

JOB_REF = "reports.nightly"
JOB_PARAMS = {"region": "eu", "since": "2026-11-30"}
JOB_OK = python_result({"rows": 120})
JOB_FAILED = python_failure({"error": "warehouse refused the token s3cr3t-wh"})


def load_yaml(*parts):
    with open(os.path.join(PACK_ROOT, *parts)) as handle:
        return yaml.safe_load(handle)


@skip_unless_orquesta
class GuardedRunContract(StoreBackendMixin):
    maxDiff = None

    def setUp(self):
        super(GuardedRunContract, self).setUp()
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)
        self.clock = Clock()
        clock = self.clock
        # The real actions, with the test's clock instead of the wall clock.
        self.check_cls = type("CheckAt", (CronBackoffCheck,), {"clock": staticmethod(lambda: clock.now)})
        self.record_cls = type("RecordAt", (CronBackoffRecord,), {"clock": staticmethod(lambda: clock.now)})
        self.features = {}

    def config(self):
        return self.make_config(
            rudderstack={"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url, "max_retries": 0},
            features=dict(self.features),
            llm_targets=[{"name": "wh", "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m",
                          "api_key": "s3cr3t-wh"}],
        )

    def guard(self, job=JOB_OK, service=None, **inputs):
        config = self.config()
        service = service or self.action_service
        self.job = outcomes(job)
        actions = {
            "synthralos.cron_backoff_check": python_action(self.check_cls, config, service),
            "synthralos.cron_backoff_record": python_action(self.record_cls, config, service),
            JOB_REF: self.job,
        }
        params = {"job_id": "nightly-report", "action_ref": JOB_REF, "parameters": JOB_PARAMS}
        params.update(inputs)
        return run_workflow("guarded_run", params, actions=actions, action_meta_dir=ACTIONS_DIR, config=config)

    def events(self):
        if self.backend == "redis":
            FlushEvents(config=self.config(), action_service=self.action_service).run(force=True, max_batches=10)
        return self.sink.accepted

    def fail_until_disabled(self):
        """Nine failures recorded by earlier runs, each after its backoff; returns the tenth (disabling) run."""
        earlier = CronBackoff(self.make_store(), {}, clock=self.clock)
        for _ in range(9):
            earlier.record("nightly-report", False, "warehouse refused the token ***")
            self.clock.now = earlier.status("nightly-report")["next_allowed_at"]
        return self.guard(JOB_FAILED)

    # -- run -------------------------------------------------------------------
    def test_a_healthy_job_runs_and_nothing_is_kept(self):
        run = self.guard()
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["check", "run_job", "record"])
        self.assertEqual(self.job.calls, [JOB_PARAMS])
        output = dict(run.output)
        self.assertEqual(output.pop("backoff")["status"], "healthy")
        self.assertEqual(output, {
            "job_id": "nightly-report", "skipped": False, "reason": "no_failures", "message": "no recent failures",
            "next_allowed_run": None, "probe": False, "job_status": "succeeded", "job_result": JOB_OK[1],
            "outcome": "ok", "record_error": None,
        })
        self.assertEqual(run.task("record").parameters["succeeded"], True)
        self.assertEqual(run.injected_triggers, [])
        self.assertIsNone(self.make_store().get("cron.nightly-report"))
        self.assertEqual(self.events(), [])

    def test_a_failed_job_is_recorded_then_fails_the_guard(self):
        run = self.guard(JOB_FAILED)
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence, ["check", "run_job", "record"])
        self.assertEqual(run.state_sequence[-1], "fail")
        record = run.task("record").parameters
        self.assertEqual((record["succeeded"], record["result"]), (False, JOB_FAILED[1]))
        backoff = run.output["backoff"]
        self.assertEqual({k: backoff[k] for k in ("status", "consecutive_failures", "last_error", "next_allowed_run")},
                         {"status": "backoff", "consecutive_failures": 1,
                          "last_error": "warehouse refused the token ***", "next_allowed_run": iso(T0 + 60)})
        self.assertEqual((run.output["job_status"], run.output["outcome"]), ("failed", "failed"))

    # -- skip ------------------------------------------------------------------
    def test_runs_are_skipped_during_the_backoff(self):
        self.guard(JOB_FAILED)
        self.clock.now += 59
        run = self.guard()
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["check"])
        self.assertEqual(self.job.calls, [])
        output = dict(run.output)
        self.assertEqual(output.pop("backoff")["wait_s"], 1.0)
        self.assertEqual(output, {
            "job_id": "nightly-report", "skipped": True, "reason": "in_backoff",
            "message": "backing off after 1 consecutive failure(s) until %s" % iso(T0 + 60),
            "next_allowed_run": iso(T0 + 60), "probe": False, "job_status": None, "job_result": None,
            "outcome": None, "record_error": None,
        })
        self.clock.now += 1
        run = self.guard()
        self.assertEqual((run.status, run.task_sequence, run.output["outcome"]),
                         ("succeeded", ["check", "run_job", "record"], "recovered"))

    # -- disable -----------------------------------------------------------------
    def test_the_tenth_failure_disables_and_alerts(self):
        run = self.fail_until_disabled()
        t_dis = self.clock.now
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence, ["check", "run_job", "record", "alert"])
        self.assertEqual(run.state_sequence[-1], "fail")
        self.assertEqual(run.output["outcome"], "disabled")
        payload = {"job_id": "nightly-report", "consecutive_failures": 10,
                   "last_error": "warehouse refused the token ***", "disabled_at": iso(t_dis),
                   "next_probe_at": iso(t_dis + HOUR)}
        self.assertEqual(run.injected_triggers, [
            {"trigger": "synthralos.cron_job_disabled", "payload": payload, "trace_tag": "nightly-report"}])
        jsonschema.Draft4Validator(load_yaml("triggers", "cron_job_disabled.yaml")["payload_schema"]).validate(payload)
        events = self.events()
        self.assertEqual([e["event"] for e in events], ["cron_job_disabled"])
        self.assertEqual(events[0]["messageId"],
                         message_id("cron_job:nightly-report", "cron_job_disabled", "nightly-report@%d" % (t_dis * 1000)))
        self.assertEqual({k: events[0]["properties"][k] for k in payload}, payload)
        self.assertEqual(events[0]["timestamp"], iso(t_dis))
        # Disabled: skipped until the quiet period is over.
        self.clock.now += HOUR - 1
        skipped = self.guard()
        self.assertEqual((skipped.status, skipped.task_sequence, skipped.output["reason"],
                          skipped.output["next_allowed_run"]), ("succeeded", ["check"], "disabled", iso(t_dis + HOUR)))

    # -- probes ------------------------------------------------------------------
    def test_a_successful_probe_reenables(self):
        self.fail_until_disabled()
        t_dis = self.clock.now
        self.clock.now += HOUR
        run = self.guard()
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["check", "run_job", "record"])
        self.assertEqual((run.output["probe"], run.output["reason"], run.output["outcome"], run.output["backoff"]["status"]),
                         (True, "probe", "reenabled", "healthy"))
        self.assertEqual(run.injected_triggers, [])
        events = self.events()
        episode = "nightly-report@%d" % (t_dis * 1000)
        self.assertEqual([(e["event"], e["messageId"]) for e in events], [
            ("cron_job_disabled", message_id("cron_job:nightly-report", "cron_job_disabled", episode)),
            ("cron_job_probe", message_id("cron_job:nightly-report", "cron_job_probe", episode + "#1")),
            ("cron_job_reenabled", message_id("cron_job:nightly-report", "cron_job_reenabled", episode)),
        ])
        self.assertEqual((events[1]["properties"]["outcome"], events[2]["properties"]["via"]), ("succeeded", "probe"))
        self.assertIsNone(self.make_store().get("cron.nightly-report"))

    def test_a_failed_probe_extends_the_quiet_period(self):
        self.fail_until_disabled()
        self.clock.now += HOUR
        run = self.guard(JOB_FAILED)
        t_probe = self.clock.now
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence, ["check", "run_job", "record"])  # no second alert
        self.assertEqual(run.injected_triggers, [])
        backoff = run.output["backoff"]
        self.assertEqual((run.output["outcome"], backoff["status"], backoff["failed_probes"], backoff["quiet_period_s"],
                          backoff["next_probe_at"]), ("probe_failed", "disabled", 1, 2 * HOUR, iso(t_probe + 2 * HOUR)))
        probe_events = [e for e in self.events() if e["event"] == "cron_job_probe"]
        self.assertEqual([(e["properties"]["outcome"], e["properties"]["probe_number"], e["properties"]["next_probe_at"])
                          for e in probe_events], [("failed", 1, iso(t_probe + 2 * HOUR))])
        self.clock.now += 2 * HOUR - 1
        self.assertEqual(self.guard().output["reason"], "disabled")


class BrokenDatastore(object):
    """An action service whose datastore calls fail (the st2 API is down)."""

    def __getattr__(self, name):
        def broken(*args, **kwargs):
            raise IOError("st2 API unreachable")
        return broken


class GuardedRunOnDatastore(object):
    """Only in DatastoreGuardedRunTest."""

    # -- flag and faults ---------------------------------------------------------
    def test_feature_off_always_runs_and_records_nothing(self):
        self.features = {"enable_cron_backoff": False}
        for _ in range(2):  # back to back: with the flag on, the second would be skipped
            run = self.guard(JOB_FAILED)
            self.assertEqual(run.task_sequence, ["check", "run_job", "record"])
            self.assertEqual((run.status, run.output["reason"], run.output["outcome"], run.output["backoff"]),
                             ("failed", "feature_off", "feature_off", None))
        self.assertEqual(len(self.job.calls), 1)  # outcomes() is rebuilt per run
        self.assertIsNone(self.make_store().get("cron.nightly-report"))
        self.assertEqual(self.events(), [])

    def test_parameters_are_checked_as_st2_does(self):
        with self.assertRaises(ActionParameterError):
            self.guard(parameters=["not", "an", "object"])
        with self.assertRaises(ActionParameterError):
            self.guard(action_ref=None, job_id=None)  # both required

    def test_a_job_whose_action_cannot_be_found_fails_the_guard(self):
        run = self.guard(action_ref="")
        self.assertEqual(run.status, "failed", run)
        self.assertEqual(run.task_sequence, ["check", "run_job"])  # st2 fails the workflow at the request

    def test_the_job_runs_unguarded_when_the_state_cannot_be_read(self):
        run = self.guard(service=BrokenDatastore())
        self.assertEqual(run.status, "succeeded", run)
        self.assertEqual(run.task_sequence, ["check", "run_job", "record"])
        self.assertEqual(self.job.calls, [JOB_PARAMS])
        self.assertEqual(run.output["reason"], "check_failed")
        self.assertEqual(run.output["message"], "backoff state unavailable, the job runs unguarded; "
                         "st2 datastore read of 'cron.nightly-report' failed: st2 API unreachable")
        self.assertEqual(run.output["record_error"]["result"]["error"],
                         "st2 datastore read of 'cron.nightly-report' failed: st2 API unreachable")
        failed = self.guard(JOB_FAILED, service=BrokenDatastore())
        self.assertEqual((failed.status, failed.task_sequence), ("failed", ["check", "run_job", "record"]))


on_both_backends(GuardedRunContract, "{backend}GuardedRunTest", datastore=GuardedRunOnDatastore)


import bson
from st2common.models.db.action import ActionDB
from st2common.models.db.rule import ActionExecutionSpecDB, RuleDB
from st2common.models.db.runner import RunnerTypeDB
from st2common.util import schema as st2_schema
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.util import param as st2_param
from st2reactor.rules.matcher import RulesMatcher


@skip_unless_orquesta
class CronRuleTest(StoreBackendMixin, unittest.TestCase):
    """The example rule: a core.st2.CronTimer firing, matched by st2's RulesMatcher, its parameters
    rendered by st2's render_live_params, then guarded_run with them."""

    backend = "datastore"
    EXECUTED_AT = "2026-12-01 02:00:00.000417+00:00"

    def setUp(self):
        super(CronRuleTest, self).setUp()
        self.rule = load_yaml("rules", "cron_backoff_example.yaml")

    def fire(self, rule):
        """What st2's timer dispatches for a CronTimer (st2reactor/timer/base.py) and the rules that match it."""
        trigger = {"id": "5f0000000000000000000001", "name": "cron-0200", "pack": "core",
                   "type": "core.st2.CronTimer", "parameters": rule["trigger"]["parameters"]}
        instance = TriggerInstanceDB(trigger="core.cron-0200", occurrence_time=None,
                                     payload={"executed_at": self.EXECUTED_AT, "schedule": None})
        rule_db = RuleDB(id=bson.ObjectId(), pack=rule["pack"], name=rule["name"], trigger=rule["trigger"]["type"],
                         criteria=rule.get("criteria") or {}, enabled=rule["enabled"],
                         action=ActionExecutionSpecDB(ref=rule["action"]["ref"], parameters=rule["action"]["parameters"]))
        return instance, RulesMatcher(instance, trigger, [rule_db]).get_matching_rules()

    def test_the_shipped_example_is_disabled(self):
        self.assertIs(self.rule["enabled"], False)
        self.assertEqual(self.fire(self.rule)[1], [])

    def test_an_enabled_copy_runs_the_guard_with_rendered_parameters(self):
        self.assertEqual(self.rule["trigger"], {"type": "core.st2.CronTimer",
                                                "parameters": {"timezone": "UTC", "hour": 2, "minute": 0, "second": 0}})
        enabled = dict(copy.deepcopy(self.rule), enabled=True)
        instance, matched = self.fire(enabled)
        self.assertEqual([r.ref for r in matched], ["synthralos.cron_backoff_example"])
        guard_meta = load_yaml("actions", "guarded_run.yaml")
        runner = {"notify": {"type": "array", "default": []}}  # the orquesta runner's runner_parameters
        params = st2_param.render_live_params(runner, guard_meta["parameters"], matched[0].action.parameters,
                                              {"pack": "synthralos", "user": "stanley"},
                                              {"trigger": instance.payload})
        self.assertEqual(params, {"job_id": "nightly-report", "action_ref": "core.local", "parameters": {
            "cmd": '/opt/reports/nightly.sh --since "%s"' % self.EXECUTED_AT, "timeout": 3600}})
        # st2's request validation (st2common/services/action.py create_request)
        schema = st2_schema.get_schema_for_action_parameters(
            ActionDB(pack="synthralos", name="guarded_run", runner_type={"name": "orquesta"},
                     parameters=guard_meta["parameters"]),
            RunnerTypeDB(name="orquesta", runner_parameters=runner))
        st2_schema.validate(params, schema, st2_schema.get_validator(), use_default=True, allow_default_none=True)
        with self.assertRaises(jsonschema.ValidationError):
            st2_schema.validate(dict(params, job_id="nightly report"), schema, st2_schema.get_validator(),
                                use_default=True, allow_default_none=True)
        config = self.make_config()
        job = outcomes(python_result({"failed": False, "succeeded": True, "return_code": 0, "stdout": "done",
                                      "stderr": ""}))
        run = run_workflow("guarded_run", params, action_meta_dir=ACTIONS_DIR, config=config, actions={
            "synthralos.cron_backoff_check": python_action(CronBackoffCheck, config, self.action_service),
            "synthralos.cron_backoff_record": python_action(CronBackoffRecord, config, self.action_service),
            "core.local": job,
        })
        self.assertEqual((run.status, run.task_sequence), ("succeeded", ["check", "run_job", "record"]))
        self.assertEqual(job.calls, [params["parameters"]])


if __name__ == "__main__":
    unittest.main()
