"""Event pipeline benchmark: this pack's Redis outbox + flushers vs rudder-sdk-python.

Both run against the same local RudderStack-compatible sink
(tests/synthralos_tests/rudderstack_sink.py), in one run, each producer in
its own process:

Throughput and latency figures are the median of 3 runs.

* events_per_s: events delivered, divided by the time from the first hand-off
  until the sink has accepted all N (or, when the producer's queue refused
  some, all it accepted; the refusals are reported as refused_at_enqueue).
* enqueue_p50_ms / enqueue_p95_ms: time of one hand-off call. Ours: building
  the event (events.build_event) + RedisOutbox.enqueue (one Lua XADD round
  trip). The SDK: Client.track() (builds the message, puts it on its
  in-memory queue).
* lost_on_kill: the producer is killed with SIGKILL mid-stream (ours: one of
  the flusher processes too, while it holds a batch); events whose hand-off
  had returned but that the sink never accepted. Ours then runs one fresh
  flusher, which reclaims what the dead one held.
* lost_on_503: the sink answers 503 to everything for a window while the
  producer keeps sending, then recovers; events handed off but not accepted
  within a deadline after recovery.

Ours uses the pack defaults except batch_size 100 (the SDK's default upload
size, so both send equally large requests), retry_delay_ms 200 and a 1 s
reclaim timeout (a real deployment derives ~2 min from its timeouts; the
bench only waits less). Two flusher processes drain the outbox at nice 10
(background work should not take CPU from producers on this 2-core box;
BENCH_FLUSHERS / BENCH_NICE change that). rudder_sdk uses the SDK's defaults; the SDK with
upload_size 20 is reported in the table and in bench/results/events_detail.json.

* Fault run (`--faults`, also part of every full run): forward_event's own
  latency (building the event + `events.forwarding.forward`, exactly what the
  action's run() does after parsing its parameters) while the data plane
  hangs (every request held 30 s) and while it refuses connections (a closed
  port), in Redis mode and in direct mode (no Redis: the st2 datastore queue;
  the datastore is an in-process stand-in, so its st2 API round trips are
  not in the figure but counted per event as datastore_calls_per_event).
  Calls are paced (FAULT_RATE per second for the run's duration) with pack
  defaults and no flusher running, so every inline attempt an action makes
  shows up: the first one waits out the 1 s inline timeout, then the shared
  unhealthy mark (30 s) makes the following calls queue without trying.
  Reported: p50 / p95 / max latency, inline attempts the data plane saw, and
  what the results said (queued / pending_retry).

    python bench/events.py --quick      # under 2 minutes; without --quick: larger runs
    python bench/events.py --faults --quick   # only the fault run

Needs redis-server on PATH, and requirements.txt + bench/requirements-events.txt
installed in the Python that runs it (its own venv, not the test venvs).
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "actions", "lib"), os.path.join(ROOT, "tests")]

WRITE_KEY = "bench-write-key"
RESULTS = os.path.join(HERE, "results")
REPS = 3  # throughput and enqueue latency: median of this many runs (the box is shared and noisy)
FLUSHERS = int(os.environ.get("BENCH_FLUSHERS", "2"))
NICE = int(os.environ.get("BENCH_NICE", "10"))  # flushers are background work: lower CPU priority


# ---------------------------------------------------------------------------
# Worker roles (run as subprocesses of this same file).


def _event(seq, run):
    from synthralos_lib.events.builders import Correlation, build_event

    corr = Correlation({}, st2_execution_id="%s-%d" % (run, seq), agent_id="bench-agent")
    return build_event("agent_execution", {"seq": seq, "run": run, "status": "succeeded"}, corr)


def _rudder(url, extra=None):
    rudder = {
        "write_key": WRITE_KEY,
        "data_plane_url": url,
        "batch_size": 100,
        "retry_delay_ms": 200,
        "max_retries": 3,
        "request_timeout_s": 5,
        "max_queue_length": 100000,
        "overflow_policy": "reject_new",
    }
    rudder.update(extra or {})
    return rudder


def role_ours_producer(args):
    import redis

    from synthralos_lib.events.outbox import RedisOutbox

    client = redis.Redis.from_url(args.redis, decode_responses=True)
    outbox = RedisOutbox(client, "bench:", _rudder(args.sink))
    _produce(args, lambda seq: outbox.enqueue(_event(seq, args.run))["queued"])


def _produce(args, send):
    """Send events 0..count-1 with `send(seq)` (True: accepted), timing each call; report each
    accepted number on stdout when asked (the parent kills us mid-run and counts them)."""
    latencies = []
    out = sys.stdout
    args.accepted = 0
    args.t0 = time.time()
    for seq in range(args.count):
        start = time.perf_counter()
        accepted = send(seq)
        latencies.append((time.perf_counter() - start) * 1000)
        args.accepted += 1 if accepted else 0
        if accepted and args.report_each:
            out.write("%d\n" % seq)
            out.flush()
        if args.pace:
            time.sleep(args.pace)
    _write_latencies(args, latencies)


def role_ours_flusher(args):
    import redis

    from synthralos_lib.events.outbox import RedisOutbox
    from synthralos_lib.events.rudderstack import RudderStackClient

    client = redis.Redis.from_url(args.redis, decode_responses=True)
    rudder = _rudder(args.sink)
    outbox = RedisOutbox(client, "bench:", rudder, reclaim_idle_ms=1000)
    rs = RudderStackClient.from_settings(rudder)
    if NICE:
        os.nice(NICE)
    deadline = time.time() + args.seconds
    while time.time() < deadline:
        report = outbox.flush(rs, force=True, max_batches=10)
        if args.until_empty and client.xlen(outbox.stream) == 0:
            return
        if not report["delivered"] and not report["dead_lettered"]:
            time.sleep(0.02)


def role_sdk_producer(args):
    from rudderstack.analytics import Client

    kwargs = {"write_key": WRITE_KEY, "host": args.sink}
    if args.upload_size:
        kwargs["upload_size"] = args.upload_size
    client = Client(**kwargs)
    # track() answers (False, msg) when the SDK's in-memory queue was full and dropped the event.
    _produce(args, lambda seq: client.track(anonymous_id="agent:bench-agent", event="agent_execution",
                                            properties={"seq": seq, "run": args.run, "status": "succeeded"})[0])
    if args.wait_flush:
        client.flush()


def _write_latencies(args, latencies):
    if args.latency_file:
        # Written once the producer is done handing off (atomically: the driver polls for it).
        with open(args.latency_file + ".tmp", "w") as handle:
            json.dump({"t0": args.t0, "latencies": latencies, "accepted": args.accepted}, handle)
        os.replace(args.latency_file + ".tmp", args.latency_file)


# ---------------------------------------------------------------------------
# The driver.


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis(object):
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        self.url = "redis://127.0.0.1:%d/0" % self.port
        import redis

        self.client = redis.Redis.from_url(self.url, decode_responses=True)
        for _ in range(100):
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def spawn(role, sink, redis_url, run, *extra, stdout=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--role", role, "--sink", sink, "--redis", redis_url or "", "--run", run]
    return subprocess.Popen(cmd + [str(x) for x in extra], stdout=stdout, text=True)


def wait_for(predicate, timeout, interval=0.01):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


_seen = {}


def delivered_seqs(sink, run):
    """Seqs of `run` the sink accepted (scans only events accepted since the last call)."""
    index, seqs = _seen.get(run, (0, set()))
    fresh = sink.accepted[index:]
    for event in fresh:
        props = event.get("properties") or {}
        if props.get("run") == run:
            seqs.add(props["seq"])
    _seen[run] = (index + len(fresh), seqs)
    return set(seqs)


def percentile(values, pct):
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(pct / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[index]


def throughput(system, sink, redis, count, tmp, upload_size=None, rep=0):
    run = "tp-%s-%s-%d" % (system, upload_size or "default", rep)
    latency_file = os.path.join(tmp, run + ".json")
    flushers = []
    if system == "ours":
        flushers = [spawn("ours-flusher", sink.url, redis.url, run, "--seconds", 120) for _ in range(FLUSHERS)]
        time.sleep(1.0)  # let the flushers start, as the SDK's consumer thread starts in Client()
        producer = spawn("ours-producer", sink.url, redis.url, run, "--count", count, "--latency-file", latency_file)
    else:
        extra = ["--count", count, "--latency-file", latency_file, "--wait-flush"]
        if upload_size:
            extra += ["--upload-size", upload_size]
        producer = spawn("sdk-producer", sink.url, "", run, *extra)

    def all_delivered():
        # Every event handed off, or (once the producer is done) every one it could hand off.
        delivered = len(delivered_seqs(sink, run))
        if delivered >= count:
            return True
        if not os.path.exists(latency_file):
            return False
        with open(latency_file) as handle:
            return delivered >= json.load(handle)["accepted"]

    wait_for(all_delivered, 120, interval=0.02)
    finished = time.time()
    producer.wait(30)
    for proc in flushers:
        proc.kill()
        proc.wait()
    with open(latency_file) as handle:
        timing = json.load(handle)
    latencies = timing["latencies"]
    delivered = len(delivered_seqs(sink, run))
    return {
        # From the first hand-off to the sink holding every event (all N, or what arrived in 90 s).
        "events_per_s": round(delivered / (finished - timing["t0"]), 1),
        "enqueue_p50_ms": round(statistics.median(latencies), 4),
        "enqueue_p95_ms": round(percentile(latencies, 95), 4),
        "delivered": delivered,
        "sent": count,
        "refused_at_enqueue": count - timing["accepted"],  # SDK: queue full (max_queue_size); ours: outbox full
    }


def _accepted_reader(proc, accepted):
    for line in proc.stdout:
        line = line.strip()
        if line:
            accepted.add(int(line))


def _start_producer(system, sink, redis, run, count, pace, upload_size=None, sdk_wait_flush=False):
    """Start one producer of `count` numbered events (ours: plus FLUSHERS flushers) and a thread
    collecting the numbers it reports accepted. Returns (flushers, producer, reader, accepted)."""
    accepted = set()
    flushers = []
    extra = ["--count", count, "--report-each", "--pace", pace]
    if system == "ours":
        flushers = [spawn("ours-flusher", sink.url, redis.url, run, "--seconds", 120) for _ in range(FLUSHERS)]
        producer = spawn("ours-producer", sink.url, redis.url, run, *extra, stdout=subprocess.PIPE)
    else:
        if upload_size:
            extra += ["--upload-size", upload_size]
        if sdk_wait_flush:
            extra += ["--wait-flush"]
        producer = spawn("sdk-producer", sink.url, "", run, *extra, stdout=subprocess.PIPE)
    reader = threading.Thread(target=_accepted_reader, args=(producer, accepted), daemon=True)
    reader.start()
    return flushers, producer, reader, accepted


def lost_on_kill(system, sink, redis, count, kill_after, upload_size=None):
    run = "kill-%s-%s" % (system, upload_size or "default")
    flushers, producer, reader, accepted = _start_producer(system, sink, redis, run, count, 0.0005, upload_size)
    wait_for(lambda: len(accepted) >= kill_after, 60)
    if system == "ours":
        # Make a flusher hold a batch the sink has accepted but not answered yet, then kill every flusher.
        sink.delay_next(3.0)
        time.sleep(0.3)
        for proc in flushers:
            os.kill(proc.pid, signal.SIGKILL)
    os.kill(producer.pid, signal.SIGKILL)
    producer.wait()
    reader.join(5)
    for proc in flushers:
        proc.kill()
        proc.wait()
    if system == "ours":
        recovery = spawn("ours-flusher", sink.url, redis.url, run, "--seconds", 30, "--until-empty")
        recovery.wait(40)
    else:
        time.sleep(1.0)  # anything the SDK had in flight has landed by now
    delivered = delivered_seqs(sink, run)
    return {"lost_on_kill": len(accepted - delivered), "accepted_before_kill": len(accepted),
            "duplicates": _duplicates(sink, run)}


def lost_on_503(system, sink, redis, count, window_s, upload_size=None):
    run = "503-%s-%s" % (system, upload_size or "default")
    flushers, producer, reader, accepted = _start_producer(system, sink, redis, run, count, 0.002, upload_size,
                                                           sdk_wait_flush=True)
    time.sleep(0.3)
    sink.outage(503)
    time.sleep(window_s)
    sink.recover()
    wait_for(lambda: len(accepted) >= count or producer.poll() is not None, 60, interval=0.05)
    reader.join(1)
    wait_for(lambda: accepted <= delivered_seqs(sink, run), 30, interval=0.05)
    for proc in flushers + [producer]:
        proc.kill()
        proc.wait()
    return {"lost_on_503": len(accepted - delivered_seqs(sink, run)), "accepted": len(accepted)}


def _duplicates(sink, run):
    ids = [e["messageId"] for e in sink.events() if e.get("properties", {}).get("run") == run]
    seqs = [e["properties"]["seq"] for e in sink.events() if e.get("properties", {}).get("run") == run]
    return {"extra_copies": len(ids) - len(set(ids)), "same_message_id": len(seqs) - len(set(seqs)) == len(ids) - len(set(ids))}


# ---------------------------------------------------------------------------
# Fault run: forward_event latency while the data plane hangs or refuses.

FAULT_RATE = 20.0  # forward_event calls per second


class CountingDatastore(object):
    """In-process stand-in for st2's datastore service (get/set/delete/list_values), counting calls."""

    class _Kvp(object):
        def __init__(self, name, value):
            self.name, self.value = name, value

    def __init__(self):
        self.items, self.calls = {}, 0

    def get_value(self, name, local=True, scope=None, decrypt=False):
        self.calls += 1
        return self.items.get(name)

    def set_value(self, name, value, ttl=None, local=True, scope=None, encrypt=False):
        self.calls += 1
        self.items[name] = value
        return True

    def delete_value(self, name, local=True, scope=None):
        self.calls += 1
        return self.items.pop(name, None) is not None

    def list_values(self, local=True, prefix=None, limit=None, offset=0):
        self.calls += 1
        found = sorted((k for k in self.items if k.startswith(prefix or "")))
        found = found[offset or 0:][: limit or None]
        return [self._Kvp(k, self.items[k]) for k in found]


def fault_scenario(mode, fault, sink, redis, seconds):
    """forward() latencies for one (mode, fault) pair; see the module doc."""
    from synthralos_lib.events.builders import Correlation, agent_event
    from synthralos_lib.events.forwarding import forward
    from synthralos_lib.state.config import load_config
    from synthralos_lib.state.store import get_store

    url = sink.url if fault == "hang" else "http://127.0.0.1:%d" % free_port()
    config = {"rudderstack": {"write_key": WRITE_KEY, "data_plane_url": url}}
    if mode == "redis":
        redis.client.flushall()
        config["redis"] = {"url": redis.url}
    sink.reset()
    if fault == "hang":
        sink.hang(30)
    service = CountingDatastore()
    latencies, outcomes = [], {}
    run = "fault-%s-%s" % (mode, fault)
    count = int(seconds * FAULT_RATE)
    started = time.perf_counter()
    for seq in range(count):
        due = started + seq / FAULT_RATE
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        t0 = time.perf_counter()
        settings = load_config(config)  # what the action does on first use
        store = get_store(settings, service)
        corr = Correlation(settings.section("observability"), st2_execution_id="%s-%d" % (run, seq), agent_id="a")
        event = agent_event("agent_execution", corr, "succeeded", details={"seq": seq, "run": run})
        result = forward(settings, store, event, service=service)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        outcomes[result["status"]] = outcomes.get(result["status"], 0) + 1
    sink.recover()
    attempts = len(sink.requests("POST", r"/v1/batch")) if fault == "hang" else None
    return {
        "calls": count,
        "p50_ms": round(percentile(latencies, 50), 3),
        "p95_ms": round(percentile(latencies, 95), 3),
        "max_ms": round(max(latencies), 3),
        "over_150ms": sum(1 for l in latencies if l > 150),
        "inline_attempts_seen_by_sink": attempts,
        "outcomes": outcomes,
        "datastore_calls_per_event": round(service.calls / float(count), 2),
    }


def fault_run(sink, redis, quick):
    seconds = 12.0 if quick else 40.0
    results = {}
    for mode in ("redis", "direct"):
        for fault in ("hang", "refuse"):
            results["%s_%s" % (mode, fault)] = fault_scenario(mode, fault, sink, redis, seconds)
            print("[bench] fault %s/%s done" % (mode, fault), file=sys.stderr)
    keys = ("calls", "p50_ms", "p95_ms", "max_ms", "over_150ms", "inline_attempts_seen_by_sink", "outcomes",
            "datastore_calls_per_event")
    print("| forward_event under fault | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in results.items():
        print("| %s | %s |" % (name, " | ".join(str(row[k]) for k in keys)))
    return {"seconds": seconds, "rate_per_s": FAULT_RATE, "results": results}


def write_fault_results(faults, quick):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "events_faults.json"), "w") as handle:
        json.dump(dict(faults, mode="quick" if quick else "full"), handle, indent=2)
        handle.write("\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (under 2 minutes)")
    parser.add_argument("--role")
    parser.add_argument("--sink")
    parser.add_argument("--redis")
    parser.add_argument("--run", default="run")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--pace", type=float, default=0)
    parser.add_argument("--upload-size", type=int, default=0)
    parser.add_argument("--latency-file")
    parser.add_argument("--report-each", action="store_true")
    parser.add_argument("--wait-flush", action="store_true")
    parser.add_argument("--until-empty", action="store_true")
    parser.add_argument("--faults", action="store_true", help="only the fault run (forward_event under a hung / refusing data plane)")
    args = parser.parse_args()
    if args.role:
        {"ours-producer": role_ours_producer, "ours-flusher": role_ours_flusher, "sdk-producer": role_sdk_producer}[
            args.role
        ](args)
        return

    import tempfile

    from synthralos_tests.rudderstack_sink import RudderStackSink

    count = 3000 if args.quick else 20000
    kill_count, kill_after = (4000, 1500) if args.quick else (20000, 8000)
    outage_count, window = (1500, 3.0) if args.quick else (4000, 8.0)
    started = time.time()
    redis = Redis()
    sink = RudderStackSink(write_keys=(WRITE_KEY,)).start()
    tmp = tempfile.mkdtemp(prefix="bench-events-")
    results = {}
    if args.faults:
        try:
            write_fault_results(fault_run(sink, redis, args.quick), args.quick)
        finally:
            sink.stop()
            redis.stop()
        return
    try:
        for name, system, upload in (("ours", "ours", None), ("rudder_sdk", "sdk", None), ("rudder_sdk_batch20", "sdk", 20)):
            reps = [throughput(system, sink, redis, count, tmp, upload, rep) for rep in range(REPS)]
            row = {k: statistics.median(r[k] for r in reps) for k in ("events_per_s", "enqueue_p50_ms", "enqueue_p95_ms")}
            row["throughput_runs"] = reps
            row.update(lost_on_kill(system, sink, redis, kill_count, kill_after, upload))
            row.update(lost_on_503(system, sink, redis, outage_count, window, upload))
            results[name] = row
            print("[bench] %s done (%.0fs)" % (name, time.time() - started), file=sys.stderr)
        faults = fault_run(sink, redis, args.quick)
    finally:
        sink.stop()
        redis.stop()
    keys = ("events_per_s", "enqueue_p50_ms", "enqueue_p95_ms", "lost_on_kill", "lost_on_503")
    print("| system | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in results.items():
        print("| %s | %s |" % (name, " | ".join(str(row[k]) for k in keys)))
    print("wall time: %.1fs (%s)" % (time.time() - started, "quick" if args.quick else "full"))
    write_fault_results(faults, args.quick)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "events.json"), "w") as handle:
        json.dump({name: {k: results[name][k] for k in keys} for name in ("ours", "rudder_sdk")}, handle, indent=2)
        handle.write("\n")
    with open(os.path.join(RESULTS, "events_detail.json"), "w") as handle:
        json.dump({"mode": "quick" if args.quick else "full", "results": results}, handle, indent=2)
        handle.write("\n")


if __name__ == "__main__":
    main()
