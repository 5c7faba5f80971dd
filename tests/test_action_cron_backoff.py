"""cron_backoff_check / record / reset / status actions on both store backends, with a
controllable clock; their events reach the RudderStack sink with deterministic ids."""

import synthralos_tests  # noqa: F401

import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.cron_clock import HOUR, T0, Clock
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

from cron_backoff_check import CronBackoffCheck
from cron_backoff_record import CronBackoffRecord
from cron_backoff_reset import CronBackoffReset
from cron_backoff_status import CronBackoffStatus
from flush_events import FlushEvents
from synthralos_lib.cron.backoff import iso
from synthralos_lib.events.builders import message_id


class CronBackoffActionsContract(StoreBackendMixin):
    maxDiff = None

    def setUp(self):
        super(CronBackoffActionsContract, self).setUp()
        self.sink = RudderStackSink().start()
        self.addCleanup(self.sink.stop)
        self.clock = Clock()

    def config(self, **sections):
        sections.setdefault("rudderstack", {"write_key": DEFAULT_WRITE_KEY, "data_plane_url": self.sink.url,
                                            "max_retries": 0})
        return self.make_config(**sections)

    def run_action(self, cls, config=None, **params):
        clock = self.clock
        timed = type(cls.__name__, (cls,), {"clock": staticmethod(lambda: clock.now)})
        return timed(config=config or self.config(), action_service=self.action_service).run(**params)

    def record(self, succeeded, **params):
        return self.run_action(CronBackoffRecord, job_id=params.pop("job_id", "job-1"), succeeded=succeeded, **params)

    def events(self):
        if self.backend == "redis":
            FlushEvents(config=self.config(), action_service=self.action_service).run(force=True, max_batches=10)
        return self.sink.accepted

    def disable(self, job_id="job-1"):
        for _ in range(10):
            result = self.record(False, job_id=job_id, error="boom")
        return result

    def test_record_forwards_the_disable_event(self):
        result = self.disable()
        self.assertEqual((result["outcome"], result["disabled_now"], len(result["events"])), ("disabled", True, 1))
        report = result["events"][0]
        self.assertEqual((report["event"], report["forwarded"]), ("cron_job_disabled", True))
        episode = "job-1@%d" % (T0 * 1000)
        self.assertEqual(report["message_id"], message_id("cron_job:job-1", "cron_job_disabled", episode))
        [event] = self.events()
        self.assertEqual(event["anonymousId"], "synthralos")
        self.assertEqual({k: event["properties"][k] for k in ("job_id", "consecutive_failures", "last_error",
                                                              "disabled_at", "next_probe_at", "quiet_period_s")},
                         {"job_id": "job-1", "consecutive_failures": 10, "last_error": "boom",
                          "disabled_at": iso(T0), "next_probe_at": iso(T0 + HOUR), "quiet_period_s": HOUR})

    def test_record_takes_the_error_from_the_run_result_and_scrubs_it(self):
        config = self.config(agent_api={"api_key": "agent-secret-42"})
        result = self.run_action(CronBackoffRecord, config=config, job_id="job-1", succeeded=False, result={
            "result": "None", "exit_code": 1, "stderr": "Traceback\nValueError: key agent-secret-42 refused\n"})
        self.assertEqual(result["state"]["last_error"], "ValueError: key *** refused")
        self.assertEqual(result["events"], [])

    def test_reset_forwards_the_reenable_event_and_status_lists_jobs(self):
        self.disable("job-b")
        self.record(False, job_id="job-a", error="once")
        self.clock.now += 30
        listed = self.run_action(CronBackoffStatus)
        self.assertEqual((listed["enabled"], listed["count"], listed["disabled"]), (True, 2, 1))
        self.assertEqual([(j["job_id"], j["status"], j["next_allowed_run"]) for j in listed["jobs"]],
                         [("job-a", "backoff", iso(T0 + 60)), ("job-b", "disabled", iso(T0 + HOUR))])
        one = self.run_action(CronBackoffStatus, job_id="job-b")
        self.assertEqual((one["status"], one["consecutive_failures"], one["wait_s"]), ("disabled", 10, HOUR - 30))
        reset = self.run_action(CronBackoffReset, job_id="job-b")
        self.assertEqual((reset["was_disabled"], reset["state"]["status"], [e["event"] for e in reset["events"]]),
                         (True, "healthy", ["cron_job_reenabled"]))
        self.assertEqual([(e["event"], e["properties"].get("via")) for e in self.events()],
                         [("cron_job_disabled", None), ("cron_job_reenabled", "reset")])
        self.assertEqual(self.run_action(CronBackoffCheck, job_id="job-b")["reason"], "no_failures")
        self.assertEqual([j["job_id"] for j in self.run_action(CronBackoffStatus)["jobs"]], ["job-a"])

    def test_telemetry_down_never_fails_a_record(self):
        self.sink.outage(503)
        result = self.disable()
        self.assertEqual((result["outcome"], result["disabled_now"]), ("disabled", True))
        self.assertEqual(len(result["events"]), 1)
        if self.backend == "datastore":
            self.assertEqual((result["events"][0]["forwarded"], result["events"][0]["status"]), (True, "pending_retry"))  # kept in the datastore queue for the flusher
        no_key = self.run_action(CronBackoffReset, config=self.config(rudderstack={}), job_id="job-1")
        self.assertEqual([(e["status"], e["forwarded"]) for e in no_key["events"]], [("skipped", False)])

    def test_bad_job_ids_fail_the_execution(self):
        for cls, params in ((CronBackoffCheck, {}), (CronBackoffRecord, {"succeeded": True}),
                            (CronBackoffReset, {}), (CronBackoffStatus, {})):
            ok, result = self.run_action(cls, job_id="no spaces allowed", **params)
            self.assertEqual((ok, result["job_id"]), (False, "no spaces allowed"))
            self.assertIn("job_id must be 1-128 characters", result["error"])

    def test_feature_off(self):
        config = self.config(features={"enable_cron_backoff": False})
        self.assertEqual(self.run_action(CronBackoffCheck, config=config, job_id="job-1")["reason"], "feature_off")
        result = self.run_action(CronBackoffRecord, config=config, job_id="job-1", succeeded=False, error="boom")
        self.assertEqual((result["recorded"], result["events"]), (False, []))
        self.assertEqual(self.run_action(CronBackoffStatus, config=config),
                         {"enabled": False, "count": 0, "disabled": 0, "jobs": [], "corrupt": []})


on_both_backends(CronBackoffActionsContract, "{backend}CronBackoffActionsTest")


if __name__ == "__main__":
    unittest.main()
