"""AgentFailureSensor benchmark: sustained events/s and XADD-to-dispatch latency.

The real sensor class (sensors/agent_failure_sensor.py) reads a real
redis-server through its consumer group; every entry is a failed agent
execution, so each one goes XREADGROUP -> decode -> detect_failure -> payload
build (scrub, caps) -> dispatch to st2tests' MockSensorService (the test
sensor service; a minimal one of the same shape without st2) -> XACK.

* events_per_s: a backlog of N entries is XADDed first, then the sensor
  starts; N divided by the time from its start until the last entry was
  dispatched and acked (median of 3 runs).
* p50_latency_ms / p95_latency_ms: a producer process XADDs at a fixed
  offered rate (default 1000/s, in 5 ms ticks) while the sensor runs; each
  entry carries its send time and the dispatch records now - send time.
* bullmq_events_per_s / bullmq_p95_latency_ms: from bench/bullmq_sensor_bench.py's
  measure(quick) when that module exists (the BullMQ sensor's own bench), else null.

    python bench/sensor.py --quick          # under 2 minutes
    python bench/sensor.py --rate 2000      # another offered rate

Needs redis-server on PATH and requirements.txt installed in the Python that
runs it (st2's own libraries are used when importable, as in the 3.11 test venv).
Writes bench/results/sensor.json (the figures) and sensor_detail.json (per run).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "sensors"), os.path.join(ROOT, "actions", "lib")]
RESULTS = os.path.join(HERE, "results")
STREAM = "synthralos:agent_executions"
GROUP = "synthralos"
REPS = 3


def _sensor_service():
    from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper  # monkey-patches with eventlet, like st2

    return MockSensorService(MockSensorWrapper(pack="synthralos", class_name="AgentFailureSensor")), "st2tests"


def _entry(n, sent_at):
    return {"agent_id": "agent-%d" % (n % 50), "execution_id": "exec-%d" % n,
            "result": json.dumps({"status": "failed", "error": "tool call failed: HTTP 503", "duration_ms": 1234,
                                  "provider": "openai", "model": "gpt-4o", "sent_at": sent_at}),
            "trace_id": "trace-%d" % n}


class Run(object):
    """One sensor on `url` with a recording sensor service."""

    def __init__(self, url, consumer="bench-1"):
        import synthralos_tests  # noqa: F401
        from agent_failure_sensor import AgentFailureSensor

        self.service, self.service_kind = _sensor_service()
        self.latencies = []
        self.count = 0
        self.done = threading.Event()
        self.expected = None
        original = self.service.dispatch

        def dispatch(trigger, payload=None, trace_tag=None):
            original(trigger=trigger, payload=payload, trace_tag=trace_tag)
            self.latencies.append(time.time() - payload["raw"]["sent_at"])
            self.count += 1
            if self.count % 1000 == 0:  # st2 keeps no payloads in the sensor; the mock's list would grow
                del self.service.dispatched_triggers[:]
            if self.expected is not None and self.count >= self.expected:
                self.done.set()

        self.service.dispatch = dispatch
        config = {"redis": {"url": url}, "agent_failure_stream": {"enabled": True, "consumer": consumer,
                                                                 "block_ms": 1000, "batch": 200}}
        self.sensor = AgentFailureSensor(self.service, config)
        self.sensor.setup()
        self.thread = None

    def start(self):
        self.thread = threading.Thread(target=self.sensor.run)
        self.thread.daemon = True
        self.thread.start()

    def stop(self):
        self.sensor.cleanup()
        self.thread.join(10)


def _wait_acked(client, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.xpending(STREAM, GROUP)["pending"] == 0:
            return
        time.sleep(0.005)
    raise RuntimeError("entries still pending after %d s" % timeout)


def throughput(server, n):
    server.flushall()
    client = server.client()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(STREAM, _entry(i, 0.0))
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    run = Run(server.url)
    run.expected = n
    started, cpu_started = time.time(), time.process_time()
    run.start()
    if not run.done.wait(300):
        raise RuntimeError("only %d of %d dispatched" % (run.count, n))
    _wait_acked(client)
    elapsed, cpu = time.time() - started, time.process_time() - cpu_started
    run.stop()
    client.connection_pool.disconnect()
    # CPU seconds of this process (the sensor; Redis is another process): what one free core would do.
    return {"entries": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed, 1),
            "cpu_seconds": round(cpu, 3), "events_per_cpu_s": round(n / cpu, 1), "loadavg_1m": os.getloadavg()[0],
            "dispatched": run.count, "service": run.service_kind}


def latency(server, rate, seconds):
    server.flushall()
    run = Run(server.url)
    run.start()
    client = server.client()
    deadline = time.time() + 10
    while not client.exists(STREAM) and time.time() < deadline:  # the sensor created its group
        time.sleep(0.01)
    total = int(rate * seconds)
    run.expected = total
    producer = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--produce", server.url, str(rate), str(total)])
    producer.wait()
    if not run.done.wait(60):
        raise RuntimeError("only %d of %d dispatched" % (run.count, total))
    _wait_acked(client)
    run.stop()
    client.connection_pool.disconnect()
    values = sorted(v * 1000.0 for v in run.latencies)
    return {"offered_rate": rate, "entries": total, "seconds": seconds, "loadavg_1m": os.getloadavg()[0],
            "p50_latency_ms": round(_pct(values, 50), 3), "p95_latency_ms": round(_pct(values, 95), 3),
            "p99_latency_ms": round(_pct(values, 99), 3), "max_latency_ms": round(values[-1], 3)}


def produce(url, rate, total):
    """Producer process: XADD `total` entries at `rate`/s in 5 ms ticks, each stamped when sent."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    tick = 0.005
    started = time.time()
    sent = 0
    while sent < total:
        due = min(total, int((time.time() - started) * rate) + 1)
        if due > sent:
            pipe = client.pipeline(transaction=False)
            now = time.time()
            for n in range(sent, due):
                pipe.xadd(STREAM, _entry(n, now))
            pipe.execute()
            sent = due
        time.sleep(max(0.0, started + (sent / float(rate)) - time.time()) or tick / 5)


def _pct(values, p):
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def bullmq(quick):
    path = os.path.join(HERE, "bullmq_sensor_bench.py")
    if not os.path.exists(path):
        return {"bullmq_events_per_s": None, "bullmq_p95_latency_ms": None}, "bench/bullmq_sensor_bench.py not present"
    sys.path.insert(0, HERE)
    import bullmq_sensor_bench

    figures = bullmq_sensor_bench.measure(quick)
    return {k: figures.get(k) for k in ("bullmq_events_per_s", "bullmq_p95_latency_ms")}, "bench/bullmq_sensor_bench.py"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small runs, under 2 minutes")
    parser.add_argument("--rate", type=int, default=1000, help="offered rate of the latency run (entries/s)")
    parser.add_argument("--produce", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        produce(args.produce[0], int(args.produce[1]), int(args.produce[2]))
        return
    import synthralos_tests  # noqa: F401
    from synthralos_tests.redis_server import RedisServer

    backlog, seconds = (20000, 10) if args.quick else (100000, 30)
    with RedisServer() as server:
        runs = [throughput(server, backlog) for _ in range(REPS)]
        lat = latency(server, args.rate, seconds)
    bullmq_figures, bullmq_source = bullmq(args.quick)
    figures = {
        "events_per_s": statistics.median(r["events_per_s"] for r in runs),
        "p50_latency_ms": lat["p50_latency_ms"],
        "p95_latency_ms": lat["p95_latency_ms"],
        "offered_rate": args.rate,
    }
    figures.update(bullmq_figures)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "sensor.json"), "w") as handle:
        json.dump(figures, handle, indent=2)
        handle.write("\n")
    with open(os.path.join(RESULTS, "sensor_detail.json"), "w") as handle:
        json.dump({"quick": args.quick, "python": sys.version.split()[0], "throughput_runs": runs, "latency_run": lat,
                   "bullmq_source": bullmq_source}, handle, indent=2)
        handle.write("\n")
    print("| metric | AgentFailureSensor | goal |")
    print("|---|---|---|")
    print("| events/s (backlog of %d, median of %d) | %.0f | >= 5000 |" % (backlog, REPS, figures["events_per_s"]))
    print("| events per CPU-second of the sensor process (median) | %.0f | |"
          % statistics.median(r["events_per_cpu_s"] for r in runs))
    print("| XADD->dispatch p50 at %d/s | %.2f ms | |" % (args.rate, figures["p50_latency_ms"]))
    print("| XADD->dispatch p95 at %d/s | %.2f ms | <= 10 ms |" % (args.rate, figures["p95_latency_ms"]))
    print("| BullMQ events/s | %s | (%s) |" % (figures["bullmq_events_per_s"], bullmq_source))
    print("| BullMQ p95 | %s ms | |" % (figures["bullmq_p95_latency_ms"],))


if __name__ == "__main__":
    main()
