"""Cron backoff library: the schedule table, the job life cycle (backoff, disable at 10,
probes, reset, status) on both store backends with a controllable clock, and the race
of two concurrent records on Redis."""

import synthralos_tests  # noqa: F401

import threading
import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.cron_clock import DAY, HOUR, T0, Clock

from synthralos_lib.cron import schedule
from synthralos_lib.cron.backoff import CronBackoff, InvalidJobId, describe_failure, iso
from synthralos_lib.state.store import KEEP, RedisStore, StoreError

DEFAULTS = schedule.settings_from({})

# n-th consecutive failure -> backoff in seconds (60 s x2, capped at 24 h from the 12th).
SCHEDULE = [
    (1, 60.0), (2, 120.0), (3, 240.0), (4, 480.0), (5, 960.0), (6, 1920.0), (7, 3840.0), (8, 7680.0),
    (9, 15360.0), (10, 30720.0), (11, 61440.0), (12, DAY), (13, DAY), (20, DAY), (1000, DAY), (5000, DAY),
]


class ScheduleTest(unittest.TestCase):
    def test_seed_schedule_table(self):
        self.assertEqual([(n, schedule.backoff_s(n, DEFAULTS)) for n, _ in SCHEDULE], SCHEDULE)

    def test_cap_is_first_reached_at_the_twelfth_failure(self):
        capped = [n for n in range(1, 30) if schedule.backoff_s(n, DEFAULTS) == DAY]
        self.assertEqual(capped[0], 12)
        self.assertLess(schedule.backoff_s(11, DEFAULTS), DAY)

    def test_no_failure_no_backoff_and_other_settings(self):
        self.assertEqual(schedule.backoff_s(0, DEFAULTS), 0.0)
        odd = schedule.settings_from({"initial_backoff_ms": 500, "backoff_multiplier": 1.5, "max_backoff_ms": 2000})
        self.assertEqual([schedule.backoff_s(n, odd) for n in range(1, 6)], [0.5, 0.75, 1.125, 1.6875, 2.0])
        flat = schedule.settings_from({"backoff_multiplier": 1})
        self.assertEqual({schedule.backoff_s(n, flat) for n in (1, 5, 500)}, {60.0})
        self.assertEqual(schedule.backoff_s(3, schedule.settings_from({"initial_backoff_ms": 0})), 0.0)
        self.assertEqual(schedule.backoff_s(2000, odd), 2.0)  # float overflow is the cap

    def test_disable_threshold_and_quiet_periods(self):
        self.assertEqual([n for n in range(1, 15) if schedule.disables(n, DEFAULTS)][0], 10)
        self.assertEqual([schedule.quiet_period_s(k, DEFAULTS) for k in range(7)],
                         [HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, 16 * HOUR, DAY, DAY])
        self.assertIsNone(schedule.quiet_period_s(0, schedule.settings_from({"probe_quiet_period_ms": 0})))
        # the cap never cuts below the first quiet period
        low_cap = schedule.settings_from({"probe_quiet_period_ms": 7200000, "max_probe_quiet_period_ms": 1000})
        self.assertEqual([schedule.quiet_period_s(k, low_cap) for k in range(3)], [7200.0] * 3)


class DescribeFailureTest(unittest.TestCase):
    def test_error_from_each_runner_shape(self):
        table = [
            (None, "the job failed without a result"),
            ("plain text", "plain text"),
            ({"output": None, "errors": [{"message": "task a failed"}, {"message": "bad"}]}, "task a failed; bad"),
            ({"result": {"error": "report bucket missing"}, "exit_code": 0, "stderr": ""}, "report bucket missing"),
            ({"result": "None", "exit_code": 1, "stderr": "Traceback...\n  File x\nKeyError: 'day'\n"}, "KeyError: 'day'"),
            ({"failed": True, "return_code": 2, "stdout": "", "stderr": ""}, "exit code 2"),
            ({"failed": True, "return_code": 1, "stderr": "nightly.sh: no such file\n"}, "nightly.sh: no such file"),
            ({"result": "quota gone", "exit_code": 1, "stderr": ""}, "quota gone"),
            ({"weird": 1}, '{"weird": 1}'),
            ([1, 2], "[1, 2]"),
        ]
        self.assertEqual([(r, describe_failure(r)) for r, _ in table], table)


class CronBackoffContract(StoreBackendMixin):
    maxDiff = None
    settings = {}

    def setUp(self):
        super(CronBackoffContract, self).setUp()
        self.clock = Clock()
        self.backoff = self.other_process()

    def other_process(self, **settings):
        """A CronBackoff over a fresh store object: it shares state only through the backend."""
        merged = dict(self.settings, **settings)
        return CronBackoff(self.make_store(), merged, clock=self.clock, secrets=["s3cr3t-token"])

    def fail_times(self, times, job="job-1", backoff=None):
        result = None
        for i in range(times):
            result = (backoff or self.backoff).record(job, False, "boom %d" % (i + 1))
        return result

    def test_schedule_table_on_the_store(self):
        backoff = self.other_process(max_consecutive_failures=100)
        seen = []
        for n in range(1, 15):
            self.clock.now += 1
            result = backoff.record("job-1", False, "boom")
            state = result["state"]
            seen.append((n, state["consecutive_failures"], state["backoff_s"], state["next_allowed_at"] - self.clock.now,
                         state["status"]))
        delays = dict(SCHEDULE)
        self.assertEqual(seen, [(n, n, delays.get(n, DAY), delays.get(n, DAY), "backoff") for n in range(1, 15)])

    def test_backoff_skips_until_the_next_allowed_run(self):
        self.assertEqual(self.backoff.check("job-1")["reason"], "no_failures")
        failed = self.backoff.record("job-1", False, {"result": {"error": "db down"}, "exit_code": 0, "stderr": ""})
        self.assertEqual((failed["outcome"], failed["disabled_now"], failed["transitions"]), ("failed", False, []))
        self.assertEqual(failed["state"]["last_error"], "db down")
        self.clock.now += 59
        check = self.other_process().check("job-1")
        self.assertEqual(
            {k: check[k] for k in ("allowed", "skipped", "probe", "reason", "message", "next_allowed_at", "next_allowed_run")},
            {"allowed": False, "skipped": True, "probe": False, "reason": "in_backoff",
             "message": "backing off after 1 consecutive failure(s) until 2026-12-01T02:01:00.000Z",
             "next_allowed_at": T0 + 60, "next_allowed_run": "2026-12-01T02:01:00.000Z"},
        )
        self.assertEqual(check["state"]["wait_s"], 1.0)
        self.clock.now += 1
        check = self.backoff.check("job-1")
        self.assertEqual((check["allowed"], check["reason"], check["next_allowed_run"]), (True, "backoff_elapsed", None))
        self.assertEqual(check["state"]["status"], "retry_due")
        self.clock.now += 10
        second = self.backoff.record("job-1", False, "db down again")
        self.assertEqual(second["state"]["next_allowed_run"], iso(T0 + 70 + 120))
        ok = self.backoff.record("job-1", True)
        self.assertEqual((ok["outcome"], ok["transitions"], ok["state"]["status"]), ("recovered", [], "healthy"))
        self.assertIsNone(self.make_store().get("cron.job-1"))  # reset on success: nothing left
        self.assertEqual(self.backoff.record("job-1", True)["outcome"], "ok")

    def test_disabled_at_the_tenth_failure(self):
        ninth = self.fail_times(9)
        self.assertEqual((ninth["outcome"], ninth["state"]["status"], ninth["disabled_now"]), ("failed", "backoff", False))
        self.clock.now += 100000
        tenth = self.backoff.record("job-1", False, "token s3cr3t-token rejected " + "x" * 2000)
        t_dis = self.clock.now
        self.assertEqual((tenth["outcome"], tenth["disabled_now"], tenth["probe"]), ("disabled", True, False))
        last_error = tenth["state"]["last_error"]
        self.assertEqual(len(last_error), 1000)
        self.assertTrue(last_error.startswith("token *** rejected xxx") and last_error.endswith("..."))
        self.assertEqual(tenth["alert"], {
            "job_id": "job-1", "consecutive_failures": 10, "last_error": last_error,
            "disabled_at": iso(t_dis), "next_probe_at": iso(t_dis + HOUR),
        })
        self.assertEqual(tenth["transitions"], [{
            "event": "cron_job_disabled", "job_id": "job-1", "at": t_dis, "discriminator": "job-1@%d" % (t_dis * 1000),
            "properties": dict(tenth["alert"], quiet_period_s=HOUR, max_consecutive_failures=10),
        }])
        state = tenth["state"]
        self.assertEqual({k: state[k] for k in ("status", "disabled", "consecutive_failures", "failed_probes",
                                                "quiet_period_s", "next_probe_at", "next_allowed_run", "wait_s")},
                         {"status": "disabled", "disabled": True, "consecutive_failures": 10, "failed_probes": 0,
                          "quiet_period_s": HOUR, "next_probe_at": iso(t_dis + HOUR),
                          "next_allowed_run": iso(t_dis + HOUR), "wait_s": HOUR})
        self.clock.now += HOUR - 1
        check = self.other_process().check("job-1")
        self.assertEqual((check["allowed"], check["reason"], check["next_allowed_run"]), (False, "disabled", iso(t_dis + HOUR)))
        self.assertEqual(check["message"], "disabled after 10 consecutive failures; next probe at %s" % iso(t_dis + HOUR))

    def disable(self):
        self.fail_times(10)
        return self.clock.now

    def test_probe_success_reenables(self):
        t_dis = self.disable()
        self.clock.now = t_dis + HOUR
        probe = self.backoff.check("job-1")
        self.assertEqual((probe["allowed"], probe["probe"], probe["reason"]), (True, True, "probe"))
        self.assertEqual(probe["state"]["status"], "probing")
        # Only one run probes; the others are skipped until the lease ends.
        other = self.other_process().check("job-1")
        self.assertEqual((other["allowed"], other["reason"], other["next_allowed_run"]),
                         (False, "probe_in_progress", iso(t_dis + 2 * HOUR)))
        self.clock.now += 30
        done = self.backoff.record("job-1", True)
        self.assertEqual((done["outcome"], done["reenabled_now"], done["probe"]), ("reenabled", True, True))
        self.assertEqual([t["event"] for t in done["transitions"]], ["cron_job_probe", "cron_job_reenabled"])
        probe_t, reenabled = done["transitions"]
        self.assertEqual(probe_t["properties"], {
            "job_id": "job-1", "outcome": "succeeded", "probe_number": 1, "consecutive_failures": 10,
            "last_error": None, "disabled_at": iso(t_dis), "probe_started_at": iso(t_dis + HOUR),
            "quiet_period_s": None, "next_probe_at": None})
        self.assertEqual(probe_t["discriminator"], "job-1@%d#1" % (t_dis * 1000))
        self.assertEqual(reenabled["properties"], {"job_id": "job-1", "via": "probe", "consecutive_failures": 10,
                                                   "failed_probes": 0, "disabled_at": iso(t_dis),
                                                   "disabled_for_s": HOUR + 30})
        self.assertEqual(self.backoff.check("job-1")["reason"], "no_failures")

    def test_probe_failure_extends_the_quiet_period_up_to_the_cap(self):
        t_dis = self.disable()
        quiet_periods, numbers = [], []
        for _ in range(7):
            self.clock.now = self.backoff.status("job-1")["next_allowed_at"]
            self.assertEqual(self.backoff.check("job-1")["reason"], "probe")
            self.clock.now += 5
            failed = self.backoff.record("job-1", False, "still broken")
            self.assertEqual((failed["outcome"], failed["disabled_now"], failed["probe"]), ("probe_failed", False, True))
            props = failed["transitions"][0]["properties"]
            quiet_periods.append(props["quiet_period_s"])
            numbers.append(props["probe_number"])
            self.assertEqual(props["next_probe_at"], iso(self.clock.now + props["quiet_period_s"]))
            self.assertEqual(failed["state"]["status"], "disabled")
        self.assertEqual(quiet_periods, [2 * HOUR, 4 * HOUR, 8 * HOUR, 16 * HOUR, DAY, DAY, DAY])
        self.assertEqual(numbers, [1, 2, 3, 4, 5, 6, 7])
        state = self.backoff.status("job-1")
        self.assertEqual((state["consecutive_failures"], state["failed_probes"], state["disabled_at"]), (17, 7, iso(t_dis)))
        self.clock.now += DAY - 1
        self.assertEqual(self.backoff.check("job-1")["reason"], "disabled")
        # The eighth probe succeeds.
        self.clock.now += 1
        self.assertEqual(self.backoff.check("job-1")["reason"], "probe")
        done = self.backoff.record("job-1", True)
        self.assertEqual([(t["event"], t["properties"].get("probe_number"), t["properties"].get("via"))
                          for t in done["transitions"]],
                         [("cron_job_probe", 8, None), ("cron_job_reenabled", None, "probe")])

    def test_a_lost_probe_is_retried_after_its_lease(self):
        t_dis = self.disable()
        self.clock.now = t_dis + HOUR
        self.assertTrue(self.backoff.check("job-1")["probe"])
        self.clock.now += HOUR  # the probe run never recorded anything
        self.assertEqual(self.backoff.check("job-1")["reason"], "probe")

    def test_a_failure_outside_a_probe_is_counted_only(self):
        t_dis = self.disable()
        result = self.backoff.record("job-1", False, "ran by hand")
        self.assertEqual((result["outcome"], result["transitions"], result["state"]["next_probe_at"]),
                         ("failed_while_disabled", [], iso(t_dis + HOUR)))
        self.assertEqual(result["state"]["consecutive_failures"], 11)
        # A success outside a probe still re-enables.
        done = self.backoff.record("job-1", True)
        self.assertEqual([(t["event"], t["properties"]["via"]) for t in done["transitions"]],
                         [("cron_job_reenabled", "success")])

    def test_reset_reenables_at_once(self):
        t_dis = self.disable()
        self.clock.now += 10
        reset = self.other_process().reset("job-1")
        self.assertEqual((reset["reset"], reset["was_disabled"], reset["previous"]["status"], reset["state"]["status"]),
                         (True, True, "disabled", "healthy"))
        self.assertEqual(reset["transitions"], [{
            "event": "cron_job_reenabled", "job_id": "job-1", "at": t_dis + 10,
            "discriminator": "job-1@%d" % (t_dis * 1000),
            "properties": {"job_id": "job-1", "via": "reset", "consecutive_failures": 10, "failed_probes": 0,
                           "disabled_at": iso(t_dis), "disabled_for_s": 10.0},
        }])
        self.assertEqual(self.backoff.check("job-1")["reason"], "no_failures")
        again = self.backoff.reset("job-1")
        self.assertEqual((again["reset"], again["was_disabled"], again["previous"], again["transitions"]),
                         (False, False, None, []))
        self.fail_times(2)
        self.assertEqual(self.backoff.reset("job-1")["transitions"], [])  # in backoff, not disabled: no event

    def test_no_probes_when_the_quiet_period_is_zero(self):
        backoff = self.other_process(probe_quiet_period_ms=0, max_consecutive_failures=2)
        result = self.fail_times(2, backoff=backoff)
        self.assertEqual((result["alert"]["next_probe_at"], result["state"]["next_allowed_run"], result["state"]["wait_s"]),
                         (None, None, None))
        self.clock.now += 365 * DAY
        check = backoff.check("job-1")
        self.assertEqual((check["allowed"], check["reason"], check["message"]),
                         (False, "disabled", "disabled after 2 consecutive failures; cron_backoff_reset re-enables it"))

    def test_status_lists_jobs_in_backoff_or_disabled(self):
        self.fail_times(10, job="b-disabled")
        self.fail_times(1, job="a-backoff")
        self.fail_times(1, job="c-recovered")
        self.backoff.record("c-recovered", True)
        self.make_store().set("breaker.other", {"unrelated": True})
        self.clock.now += 60
        listed = self.other_process().status()
        self.assertEqual([(j["job_id"], j["status"], j["consecutive_failures"]) for j in listed],
                         [("a-backoff", "retry_due", 1), ("b-disabled", "disabled", 10)])
        self.assertEqual(self.backoff.status("c-recovered")["status"], "healthy")

    def test_feature_off_always_allows_and_records_nothing(self):
        self.disable()
        off = CronBackoff(self.make_store(), {}, enabled=False, clock=self.clock)
        check = off.check("job-1")
        self.assertEqual((check["allowed"], check["reason"], check["state"]), (True, "feature_off", None))
        self.assertEqual(off.record("new-job", False, "boom"), {
            "job_id": "new-job", "recorded": False, "outcome": "feature_off", "disabled_now": False,
            "reenabled_now": False, "probe": False, "alert": None, "transitions": [], "state": None})
        self.assertIsNone(self.make_store().get("cron.new-job"))

    def test_job_ids_are_checked(self):
        for bad in ("", "-leading-dash", "has space", "a" * 129, "slash/no", None, 7):
            with self.assertRaises(InvalidJobId):
                self.backoff.check(bad)
        self.assertEqual(self.backoff.check("ns:job_1.daily-2")["reason"], "no_failures")


class StoreUpdateContract(StoreBackendMixin):
    def test_update_writes_deletes_or_keeps(self):
        store = self.make_store()
        self.assertEqual(store.update("doc", lambda cur: ({"n": 1}, cur)), None)
        self.assertEqual(store.update("doc", lambda cur: (dict(cur, n=cur["n"] + 1), "bumped")), "bumped")
        self.assertEqual(store.get("doc"), {"n": 2})
        self.assertEqual(store.update("doc", lambda cur: (KEEP, cur)), {"n": 2})
        self.assertEqual(store.get("doc"), {"n": 2})
        self.assertEqual(store.update("doc", lambda cur: (None, "gone")), "gone")
        self.assertIsNone(store.get("doc"))
        self.assertEqual(store.update("doc", lambda cur: (None, cur)), None)  # deleting nothing is fine

    def test_scan_by_prefix(self):
        store = self.make_store()
        for key in ("cron.b", "cron.a", "cron[x].c", "crone", "other.cron.z"):
            store.set(key, {"k": key})
        self.assertEqual(store.scan("cron."), [("cron.a", {"k": "cron.a"}), ("cron.b", {"k": "cron.b"})])
        self.assertEqual(store.scan("cron["), [("cron[x].c", {"k": "cron[x].c"})])  # glob characters are literal
        self.assertEqual(store.scan("nothing."), [])


class CronBackoffOnRedis(object):
    """Only in RedisCronBackoffTest."""

    def test_state_lives_in_redis_under_the_prefix(self):
        self.fail_times(1)
        self.assertEqual(self.redis.client().keys("synthralos:cron.*"), ["synthralos:cron.job-1"])


on_both_backends(CronBackoffContract, "{backend}CronBackoffTest", redis=CronBackoffOnRedis)


class StoreUpdateOnDatastore(object):
    """Only in DatastoreStoreUpdateTest."""

    def test_scan_pages_through_the_datastore(self):
        store = self.make_store()
        for n in range(25):
            store.set("cron.job-%02d" % n, n)
        # st2tests' mock ignores limit/offset (a live st2 pages): both end with each key once
        self.assertEqual([v for _, v in store.scan("cron.", page_size=10)], list(range(25)))


on_both_backends(StoreUpdateContract, "{backend}StoreUpdateTest", datastore=StoreUpdateOnDatastore)


class RaceHelpers(StoreBackendMixin):
    """Runs of one job that hit the store at the same moment, each through its own store object."""

    def racing_processes(self, count=2, now=T0):
        """`count` CronBackoffs, each with its own connection pool, whose clock waits at a barrier
        the first time each calls it, so every one has read the state before any writes."""
        barrier = threading.Barrier(count, timeout=10)
        local = threading.local()
        clock = Clock(now)

        def racing_clock():
            if not getattr(local, "waited", False):
                local.waited = True
                barrier.wait()
            return clock.now

        if self.backend == "redis":
            stores = [RedisStore(self.redis.url, client=self.redis.client()) for _ in range(count)]
            self.assertEqual(len({id(s.client.connection_pool) for s in stores}), count)
        else:
            stores = [self.make_store() for _ in range(count)]
        return [CronBackoff(store, {}, clock=racing_clock) for store in stores]

    def run_together(self, fns):
        results, errors = [None] * len(fns), []

        def call(i):
            try:
                results[i] = fns[i]()
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(fns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        self.assertEqual(errors, [])
        return results



class RedisRaceTest(RaceHelpers, unittest.TestCase):
    """On Redis (each run with its own client and connection pool) nothing is lost."""

    backend = "redis"

    def test_two_concurrent_failures_count_two(self):
        first, second = self.racing_processes()
        results = self.run_together([lambda: first.record("job-1", False, "a"), lambda: second.record("job-1", False, "b")])
        self.assertEqual(sorted(r["state"]["consecutive_failures"] for r in results), [1, 2])
        self.assertEqual(CronBackoff(self.make_store(), {}, clock=Clock()).status("job-1")["consecutive_failures"], 2)

    def test_ten_concurrent_failures_disable_once(self):
        processes = self.racing_processes(10)
        results = self.run_together([(lambda p=p: p.record("job-1", False, "boom")) for p in processes])
        self.assertEqual(sorted(r["state"]["consecutive_failures"] for r in results), list(range(1, 11)))
        self.assertEqual([r["outcome"] for r in results].count("disabled"), 1)

    def test_one_probe_among_concurrent_checks(self):
        setup = CronBackoff(self.make_store(), {}, clock=Clock())
        for _ in range(10):
            setup.record("job-1", False, "boom")
        processes = self.racing_processes(5, now=T0 + HOUR)
        results = self.run_together([(lambda p=p: p.check("job-1")) for p in processes])
        self.assertEqual(sorted(r["reason"] for r in results), ["probe"] + ["probe_in_progress"] * 4)

    def test_update_gives_up_after_endless_contention(self):
        store = RedisStore(self.redis.url, client=self.redis.client())
        store.UPDATE_ATTEMPTS = 3
        meddler = self.redis.client()

        def interfere(current):
            meddler.set(store.key("doc"), '"changed"')  # another writer, every time
            return "mine", None

        with self.assertRaises(StoreError) as raised:
            store.update("doc", interfere)
        self.assertIn("lost the race 3 times", str(raised.exception))


class DatastoreRaceTest(RaceHelpers, unittest.TestCase):
    """The st2 datastore has no compare-and-set: what the module doc says can be lost, is."""

    backend = "datastore"

    def test_two_concurrent_failures_can_count_one(self):
        first, second = self.racing_processes()
        self.run_together([lambda: first.record("job-1", False, "a"), lambda: second.record("job-1", False, "b")])
        self.assertEqual(CronBackoff(self.make_store(), {}, clock=Clock()).status("job-1")["consecutive_failures"], 1)

    def test_two_concurrent_checks_can_both_probe(self):
        setup = CronBackoff(self.make_store(), {}, clock=Clock())
        for _ in range(10):
            setup.record("job-1", False, "boom")
        processes = self.racing_processes(2, now=T0 + HOUR)
        results = self.run_together([(lambda p=p: p.check("job-1")) for p in processes])
        self.assertEqual([r["reason"] for r in results], ["probe", "probe"])


if __name__ == "__main__":
    unittest.main()
