"""bullmq_add_job against the real BullMQ library (node, tests/bullmq).

Two checks: the Redis state our action writes equals what BullMQ's own
Queue.add writes for the same jobs (hashes, lists, sorted sets, counters,
events), and a real BullMQ Worker processes our jobs with their options
honoured (attempts, fixed / exponential backoff, delay, priority, jobId).
"""

import synthralos_tests  # noqa: F401

import json

from bullmq_add_job import BullMQAddJob
from synthralos_tests import bullmq_node
from synthralos_tests.base import SynthralosActionTestCase

# (action parameters, the same job for Queue.add)
SPECS = [
    ({"job_name": "plain", "data": {"agent_id": "a-1"}}, {"name": "plain", "data": {"agent_id": "a-1"}, "opts": {}}),
    ({"job_name": "retry", "data": {"x": [1, 2]}, "attempts": 3, "backoff_type": "exponential", "backoff_delay_ms": 100,
      "remove_on_complete": 0, "remove_on_fail": 50},
     {"name": "retry", "data": {"x": [1, 2]},
      "opts": {"attempts": 3, "backoff": {"type": "exponential", "delay": 100}, "removeOnComplete": 0,
               "removeOnFail": 50}}),
    ({"job_name": "keyed", "job_id": "run-42", "data": {"k": "v"}},
     {"name": "keyed", "data": {"k": "v"}, "opts": {"jobId": "run-42"}}),
    ({"job_name": "keyed", "job_id": "run-42", "data": {"k": "again"}},
     {"name": "keyed", "data": {"k": "again"}, "opts": {"jobId": "run-42"}}),
    ({"job_name": "later", "delay_ms": 60000}, {"name": "later", "opts": {"delay": 60000}}),
    ({"job_name": "later2", "delay_ms": 60000}, {"name": "later2", "opts": {"delay": 60000}}),
    ({"job_name": "urgent", "priority": 3}, {"name": "urgent", "opts": {"priority": 3}}),
    ({"job_name": "urgent2", "priority": 3, "remove_on_complete": 10},
     {"name": "urgent2", "opts": {"priority": 3, "removeOnComplete": 10}}),
    ({"job_name": "stack", "lifo": True, "backoff_type": "fixed", "backoff_delay_ms": 5},
     {"name": "stack", "opts": {"lifo": True, "backoff": 5}}),
]


class BullMQAddJobTest(SynthralosActionTestCase):
    action_cls = BullMQAddJob
    backend = "redis"

    def setUp(self):
        super(BullMQAddJobTest, self).setUp()
        bullmq_node.ensure_node_modules()
        self.client = self.redis.client()

    def add(self, **params):
        return self.action(bullmq={"redis_url": self.redis.url}).run(**params)

    def snapshot(self, queue):
        """Every key of `queue`, with the parts that depend on the clock made relative."""
        base = "bull:%s:" % queue
        state = {}
        for key in sorted(self.client.keys(base + "*")):
            short = key[len(base):]
            kind = self.client.type(key)
            if kind == "hash" and short != "meta":
                job = self.client.hgetall(key)
                job["opts"] = json.loads(job["opts"])
                job["data"] = json.loads(job["data"])
                job["timestamp"] = "T"
                state[short] = job
            elif kind == "hash":
                state[short] = {k: v for k, v in self.client.hgetall(key).items() if k != "version"}
            elif kind == "list":
                state[short] = self.client.lrange(key, 0, -1)
            elif kind == "zset":
                items = self.client.zrange(key, 0, -1, withscores=True)
                if short == "delayed":
                    # score = due * 4096 + seq: keep the delay from the job's timestamp and the seq
                    items = [(m, (int(s) // 4096 - int(self.client.hget(base + m, "timestamp")), int(s) % 4096))
                             for m, s in items]
                elif short == "marker":
                    items = [(m, 0 if s == 0 else "due") for m, s in items]
                state[short] = items
            elif kind == "stream":
                events = []
                for _, fields in self.client.xrange(key):
                    if fields.get("event") == "delayed":
                        fields["delay"] = str(int(fields["delay"]) - int(self.client.hget(base + fields["jobId"],
                                                                                          "timestamp")))
                    events.append(fields)
                state[short] = events
            else:
                state[short] = self.client.get(key)
        return state

    def test_same_redis_state_as_queue_add(self):
        ref = bullmq_node.run_script("add_jobs.js", {"port": self.redis.port, "queue": "ref",
                                                     "jobs": [spec for _, spec in SPECS]})
        ours = [self.add(queue="ours", **params) for params, _ in SPECS]
        self.assertEqual([r["job_id"] for r in ours], ref["ids"])
        self.assertEqual([r["state"] for r in ours], ["waiting", "waiting", "waiting", "duplicated", "delayed",
                                                      "delayed", "prioritized", "prioritized", "waiting"])
        self.assertEqual([r["created"] for r in ours], [True, True, True, False, True, True, True, True, True])
        expected = self.snapshot("ref")
        self.assertEqual(self.snapshot("ours"), expected)
        # The comparison covered every structure Queue.add touches.
        self.assertEqual(sorted(k for k in expected if not k[0].isdigit() and not k.startswith("run-")),
                         ["delayed", "events", "id", "marker", "meta", "pc", "prioritized", "wait"])
        self.assertEqual(expected["run-42"]["data"], {"k": "v"})  # the second add changed nothing

    def test_paused_queue_gets_no_marker(self):
        self.client.hset("bull:held:meta", "paused", "1")
        self.assertEqual(self.add(queue="held", job_name="n")["state"], "waiting")
        self.assertEqual(self.client.lrange("bull:held:wait", 0, -1), ["1"])
        self.assertFalse(self.client.exists("bull:held:marker"))

    def test_real_worker_processes_our_jobs_with_their_options(self):
        results = [
            self.add(queue="work", job_name="flaky", data={"fail_times": 2, "agent_id": "a-7"}, attempts=3,
                     backoff_type="fixed", backoff_delay_ms=200),
            self.add(queue="work", job_name="doomed", data={"fail_times": 9, "error": "still broken"}, attempts=2,
                     backoff_type="exponential", backoff_delay_ms=100),
            self.add(queue="work", job_name="later", data={"n": 1}, delay_ms=300),
            self.add(queue="work", job_name="once", job_id="rerun-exec-9", data={"first": True}),
            self.add(queue="work", job_name="once", job_id="rerun-exec-9", data={"first": False}),
        ]
        self.assertEqual([r["created"] for r in results], [True, True, True, True, False])
        got = bullmq_node.run_script("consume_jobs.js", {"port": self.redis.port, "queue": "work", "expect": 4,
                                                         "timeout_ms": 20000})
        attempts = {}
        for attempt in got["attempts"]:
            attempts.setdefault(attempt["id"], []).append(attempt)
        self.assertEqual(sorted(attempts), ["1", "2", "3", "rerun-exec-9"])  # one job for the repeated jobId

        flaky = attempts["1"]
        self.assertEqual([a["attemptsMade"] for a in flaky], [0, 1, 2])
        self.assertEqual({(a["name"], json.dumps(a["data"], sort_keys=True)) for a in flaky},
                         {("flaky", '{"agent_id": "a-7", "fail_times": 2}')})
        self.assertEqual(flaky[0]["opts"], {"attempts": 3, "backoff": {"type": "fixed", "delay": 200}})
        # BullMQ waited the fixed backoff before each retry.
        self.assertTrue(all(b["startedAt"] - a["startedAt"] >= 200 for a, b in zip(flaky, flaky[1:])), flaky)
        self.assertEqual(got["finished"]["1"]["state"], "completed")
        self.assertEqual(got["finished"]["1"]["attemptsMade"], 3)
        self.assertEqual(got["finished"]["1"]["returnvalue"], {"ok": True, "attempt": 3})

        doomed = attempts["2"]
        self.assertEqual([a["attemptsMade"] for a in doomed], [0, 1])
        self.assertGreaterEqual(doomed[1]["startedAt"] - doomed[0]["startedAt"], 100)
        self.assertEqual(got["finished"]["2"]["state"], "failed")
        self.assertEqual(got["finished"]["2"]["attemptsMade"], 2)
        self.assertEqual(got["finished"]["2"]["failedReason"], "still broken")
        self.assertEqual(self.client.zrange("bull:work:failed", 0, -1), ["2"])

        later = attempts["3"]
        self.assertEqual(len(later), 1)
        self.assertEqual(later[0]["opts"], {"attempts": 0, "delay": 300})
        self.assertGreaterEqual(later[0]["startedAt"], later[0]["timestamp"] + 300)  # not before its delay

        once = attempts["rerun-exec-9"]
        self.assertEqual([(a["name"], a["data"], a["opts"]) for a in once],
                         [("once", {"first": True}, {"attempts": 0, "jobId": "rerun-exec-9"})])
        self.assertEqual(self.client.get("bull:work:id"), "5")  # the counter moves on every add, as in BullMQ

    def test_priority_order_honoured_by_worker(self):
        self.add(queue="prio", job_name="low", priority=10)
        self.add(queue="prio", job_name="high", priority=1)
        self.add(queue="prio", job_name="none")
        got = bullmq_node.run_script("consume_jobs.js", {"port": self.redis.port, "queue": "prio", "expect": 3})
        self.assertEqual([a["name"] for a in got["attempts"]], ["none", "high", "low"])

    def test_options_bullmq_refuses_fail_the_execution(self):
        cases = [
            ({"job_id": "42"}, "a custom job id cannot be an integer (BullMQ keeps those for its own ids)"),
            ({"job_id": "0"}, "a job id cannot be empty, '0' or start with '0:'"),
            ({"job_id": "a:b"}, "a custom job id cannot contain ':'"),
            ({"backoff_type": "fixed"}, "backoff needs a delay: a whole number of milliseconds >= 0"),
            ({"backoff_delay_ms": 5}, "backoff type must be 'fixed' or 'exponential'"),
            ({"priority": 2097152}, "priority must be a whole number between 0 and 2097151"),
            ({"remove_on_fail": -1}, "remove_on_fail must be true, false, a count >= 0 or {age, count}"),
            ({"queue": "bad:queue"}, "a BullMQ queue name must be non-empty and contain no ':' (got 'bad:queue')"),
        ]
        for params, error in cases:
            args = {"queue": "q", "job_name": "n"}
            args.update(params)
            self.assertEqual(self.add(**args), (False, {"error": error}), params)
        self.assertEqual(self.client.keys("bull:*"), [])

    def test_redis_down_fails_without_leaking_the_password(self):
        action = self.action(bullmq={"redis_url": "redis://:hunter2-secret@127.0.0.1:1/0"})
        ok, result = action.run(queue="q", job_name="n")
        self.assertFalse(ok)
        self.assertTrue(result["error"].startswith("could not add the job: ConnectionError"), result)
        self.assertNotIn("hunter2-secret", json.dumps(result))

    def test_falls_back_to_redis_url_and_config_prefix(self):
        result = self.action(bullmq={"prefix": "platform"}).run(queue="q", job_name="n")
        self.assertEqual(result["key"], "platform:q:1")
        self.assertEqual(self.client.hget("platform:q:1", "name"), "n")
