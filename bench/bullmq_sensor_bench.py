"""BullMQFailureSensor benchmark on failures made by the real BullMQ library.

A real redis-server, BullMQ 6.7.0 run with node (tests/bullmq: Queue.addBulk
plus a Worker, concurrency 50, that throws), and the pack's sensor class with
a minimal sensor service whose dispatch() records the time:

* bullmq_events_per_s: sustained throughput. N jobs are failed by BullMQ
  while the sensor is stopped (its cursor set before), then the sensor is
  started and drains the backlog: failures dispatched / seconds from start
  until the last dispatch. Each failure is ~6 events-stream entries (added,
  waiting, active, failed, retries-exhausted, ...), all read; the entry rate
  is reported as stream_entries_per_s. Median of 3 runs.
* bullmq_p95_latency_ms (and p50): failure-to-dispatch latency with the
  sensor running while BullMQ fails jobs at a fixed offered rate: dispatch
  time minus the job's finishedOn (BullMQ's timestamp, taken by the Worker
  just before its moveToFinished script). Same host clock.

    python bench/bullmq_sensor_bench.py [--quick]     # prints JSON, writes bench/results/bullmq_sensor.json

bench/sensor.py imports measure(quick). Needs redis-server, node and npm
(tests/bullmq/node_modules is installed by npm ci on first use), and the
pack's requirements in the running Python.
"""

import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "sensors"), os.path.join(ROOT, "actions", "lib")]

import synthralos_tests  # noqa: E402,F401  (import paths; st2 must import)

from synthralos_tests import bullmq_node  # noqa: E402
from synthralos_tests.redis_server import RedisServer  # noqa: E402

REPS = 3


class _Logger(object):
    def debug(self, *args, **kwargs):
        pass

    info = warning = error = exception = debug


class _Service(object):
    """What the sensor uses of st2's SensorService: a logger and dispatch()."""

    def __init__(self):
        self.times = []
        self.finished_on = []
        self.lock = threading.Lock()

    def get_logger(self, name):
        return _Logger()

    def dispatch(self, trigger, payload=None, trace_tag=None):
        now = time.time() * 1000.0
        with self.lock:
            self.times.append(now)
            self.finished_on.append(payload["raw"].get("finishedOn"))


def _sensor(server, service, queue):
    from bullmq_failure_sensor import BullMQFailureSensor

    sensor = BullMQFailureSensor(service, config={"bullmq": {"enabled": True, "queues": [queue], "block_ms": 100,
                                                             "dedup_window": 100000},
                                                  "redis": {"url": server.url}})
    sensor.setup()
    return sensor


def _jobs(count, tag):
    return [{"name": "agent-%d" % (i % 10), "data": {"agent_id": "agent-%d" % (i % 10), "execution_id": "%s-%d" % (tag, i),
                                                      "error": "Request timed out after 30000 ms"},
             "opts": {"removeOnComplete": True}} for i in range(count)]


def _wait(service, count, timeout):
    deadline = time.time() + timeout
    while len(service.times) < count and time.time() < deadline:
        time.sleep(0.01)
    return len(service.times)


def _run_sensor(sensor):
    thread = threading.Thread(target=sensor.run, daemon=True)
    thread.start()
    return thread


def throughput(server, count):
    server.flushall()
    service = _Service()
    queue = "bench-tput"
    sensor = _sensor(server, service, queue)
    sensor._watcher.start()  # first start: cursor at the (empty) stream's end
    bullmq_node.run_script("fail_jobs.js", {"port": server.port, "queue": queue, "jobs": _jobs(count, "t"),
                                            "concurrency": 50, "summary": True, "max_events": count * 10,
                                            "timeout_ms": 300000}, timeout=600)
    entries = server.client().xlen("bull:%s:events" % queue)
    started = time.time() * 1000.0
    thread = _run_sensor(sensor)
    got = _wait(service, count, 300)
    sensor.cleanup()
    thread.join(5)
    elapsed_s = (service.times[-1] - started) / 1000.0 if service.times else float("inf")
    return {"failures": got, "expected": count, "seconds": elapsed_s, "failures_per_s": got / elapsed_s,
            "stream_entries_per_s": entries / elapsed_s}


def latency(server, count, rate):
    server.flushall()
    service = _Service()
    queue = "bench-latency"
    sensor = _sensor(server, service, queue)
    sensor._watcher.start()
    thread = _run_sensor(sensor)
    bullmq_node.run_script("fail_jobs.js", {"port": server.port, "queue": queue, "jobs": _jobs(count, "l"),
                                            "concurrency": 50, "summary": True, "rate": rate,
                                            "max_events": count * 10, "timeout_ms": 300000}, timeout=600)
    got = _wait(service, count, 60)
    sensor.cleanup()
    thread.join(5)
    lat = sorted(t - f for t, f in zip(service.times, service.finished_on) if f is not None)
    return {"failures": got, "expected": count, "offered_rate": rate,
            "p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95), "max_ms": lat[-1] if lat else None}


def _pct(values, pct):
    if not values:
        return None
    index = min(len(values) - 1, int(round(pct / 100.0 * (len(values) - 1))))
    return round(values[index], 2)


def measure(quick=False, detail=None):
    """`{"bullmq_events_per_s", "bullmq_p95_latency_ms"}`; `detail` (a dict) receives the per-run figures."""
    bullmq_node.ensure_node_modules()
    count = 2000 if quick else 10000
    lat_count, rate = (1000, 200) if quick else (5000, 500)
    with RedisServer() as server:
        runs = [throughput(server, count) for _ in range(REPS)]
        lat = latency(server, lat_count, rate)
    if detail is not None:
        detail.update({"throughput_runs": runs, "latency": lat})
    lost = [r for r in runs if r["failures"] != r["expected"]] + ([lat] if lat["failures"] != lat["expected"] else [])
    if lost:
        raise RuntimeError("the sensor missed failures: %s" % json.dumps(lost))
    return {
        "bullmq_events_per_s": round(statistics.median(r["failures_per_s"] for r in runs), 1),
        "bullmq_p95_latency_ms": lat["p95_ms"],
    }


def main(argv):
    quick = "--quick" in argv
    detail = {}
    result = measure(quick, detail)
    report = {"quick": quick, "result": result, "detail": detail}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "bullmq_sensor.json"), "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
