"""Cron backoff under concurrency: this pack's Redis store (WATCH/MULTI) vs a naive GET/SET.

Several OS processes (as st2 runs every action in its own process) record
failures of one job at the same time, each through its own Redis client:

* ours: `CronBackoff.record` over `RedisStore.update` (WATCH/MULTI, retried on conflict);
* naive_get_set: the same decision code over a read-then-write store, what a
  straight port of the seed's CronBackoffService onto Redis would do.

Figures: failures recorded vs counted (lost = recorded - counted), records/s
over all processes, and p50/p95 of one record call.

    python bench/cron_backoff.py            # needs redis-server on PATH and redis-py
    python bench/cron_backoff.py --quick
"""

import argparse
import importlib.util
import json
import multiprocessing
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "actions", "lib"))

from synthralos_lib.cron.backoff import CronBackoff  # noqa: E402
from synthralos_lib.state.store import KEEP, RedisStore  # noqa: E402


def _redis_server_class():
    # The test harness's redis-server launcher, loaded alone: the synthralos_tests
    # package would import st2tests, which monkey-patches the process with eventlet.
    path = os.path.join(ROOT, "tests", "synthralos_tests", "redis_server.py")
    spec = importlib.util.spec_from_file_location("bench_redis_server", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RedisServer

SETTINGS = {"max_consecutive_failures": 10 ** 9}  # count, never disable


class NaiveRedisStore(RedisStore):
    """read -> decide -> write, no WATCH: concurrent writers overwrite each other."""

    def update(self, key, fn, ttl=None):
        new, result = fn(self.get(key))
        if new is None:
            self.delete(key)
        elif new is not KEEP:
            self.set(key, new, ttl=ttl)
        return result


def worker(args):
    url, variant, records, start_at = args
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    store = (RedisStore if variant == "ours" else NaiveRedisStore)(url, client=client)
    backoff = CronBackoff(store, SETTINGS)
    while time.time() < start_at:
        time.sleep(0.001)
    timings = []
    for _ in range(records):
        t0 = time.perf_counter()
        backoff.record("nightly-report", False, "boom")
        timings.append((time.perf_counter() - t0) * 1000.0)
    return timings


def pct(values, p):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))], 3)


def run(url, variant, processes, records):
    flushall(url)
    start_at = time.time() + 0.5
    with multiprocessing.Pool(processes) as pool:
        t0 = time.time()
        results = pool.map(worker, [(url, variant, records, start_at)] * processes)
        elapsed = time.time() - max(t0, start_at)
    timings = [t for r in results for t in r]
    counted = CronBackoff(RedisStore(url), SETTINGS).status("nightly-report")["consecutive_failures"]
    recorded = processes * records
    return {"variant": variant, "processes": processes, "recorded": recorded, "counted": counted,
            "lost": recorded - counted, "records_per_s": round(recorded / elapsed, 1),
            "record_p50_ms": pct(timings, 50), "record_p95_ms": pct(timings, 95)}


def flushall(url):
    import redis

    redis.Redis.from_url(url).flushall()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records per process")
    parser.add_argument("--processes", type=int, default=8)
    args = parser.parse_args()
    records = 50 if args.quick else 250
    rows = []
    with _redis_server_class()() as server:
        for variant in ("ours", "naive_get_set"):
            rows.append(run(server.url, variant, args.processes, records))
    columns = ["variant", "processes", "recorded", "counted", "lost", "records_per_s", "record_p50_ms", "record_p95_ms"]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    out = os.path.join(ROOT, "bench", "results", "cron_backoff.json")
    with open(out, "w") as handle:
        json.dump({"quick": args.quick, "rows": rows}, handle, indent=2)
    print("wrote", os.path.relpath(out, ROOT))


if __name__ == "__main__":
    main()
