"""A one-step recovery in st2 action processes: four executions (before issue 19) vs begin_recovery.

Every python action runs as st2 runs it: through st2's python_action_wrapper in a new
process (tests/synthralos_tests/st2_python_runner.py: st2's argv, PYTHONPATH, environment
and output parsing), with a real redis-server as the pack's store and a local agent
platform (docs/agent_api.md). Side by side, for the same timed-out run:

* four: detect_failure -> generate_repair_plan -> execute_repair_step -> record_failure,
  each result fed to the next as agent_recovery's tasks did;
* begin: begin_recovery alone (trusts nothing: it is given the bare result, so it detects too).

Figures per variant (median and max of --runs): seconds from the first process start to the
agent platform receiving the re-run POST, to the outcome recorded, and processes spent.
This is the process cost only; st2's scheduler, workflow engine and database add to each
execution in live services (bench/recovery_st2.py measures those).

    python bench/recovery_processes.py            # the real-st2 venv (st2's python runner importable)
    python bench/recovery_processes.py --runs 3
"""

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import synthralos_tests  # noqa: E402,F401  (the pack's import paths; st2tests' eventlet patching)
from synthralos_tests.agent_api_server import AgentPlatformServer  # noqa: E402
from synthralos_tests.redis_server import RedisServer  # noqa: E402
from synthralos_tests.st2_api_server import St2ApiServer  # noqa: E402
from synthralos_tests.st2_python_runner import WRAPPER_AVAILABLE, StackStormLayout  # noqa: E402

KEY = "agent-key-bench-recovery"
RUN = {"id": "exec-1", "status": "timeout", "input": "Summarise ticket 1234", "duration_ms": 300000,
       "timeout_ms": 300000, "max_iterations": 10, "provider": "openai", "model": "gpt-4o"}
RESULT_PATH = os.path.join(ROOT, "bench", "results", "recovery_processes.json")


def succeeded(st2, entry_point, parameters, config):
    status, output = st2.run(entry_point, parameters, config)
    if status != "succeeded":
        raise RuntimeError("%s %s: %s" % (entry_point, status, output.get("stderr", "")[-500:]))
    return output["result"]


def four(st2, config, agent_id):
    params = {"agent_id": agent_id, "execution_id": "exec-1"}
    failure = succeeded(st2, "detect_failure.py", dict(params, result=RUN), config)
    plan = succeeded(st2, "generate_repair_plan.py", {"failure": failure}, config)
    step = succeeded(st2, "execute_repair_step.py", dict(params, step=plan["steps"][0], failure=failure, attempt=1,
                                                       wait_s=5), config)
    assert step["repaired"], step
    succeeded(st2, "record_failure.py", dict(params, failure=failure, outcome="repaired", repaired_by=step["action"],
                                              attempts=[step["attempt_record"]], plan_source=plan["source"],
                                              started_at=failure["checked_at"]), config)
    return 4


def begin(st2, config, agent_id):
    started = succeeded(st2, "begin_recovery.py", {"agent_id": agent_id, "execution_id": "exec-1", "result": RUN,
                                                   "wait_s": 5}, config)
    assert started["outcome"] == "repaired" and started["recorded"]["error"] is None, started
    return 1


def measure(variant, st2, platform, redis_url, runs):
    figures = []
    for n in range(runs):
        agent_id = "%s-agent-%d" % (variant.__name__, n)
        platform.add_execution(agent_id, RUN)
        config = {"redis": {"url": redis_url},
                  "agent_api": {"base_url": platform.base_url, "api_key": KEY, "timeout_s": 5}}
        before = len(platform.runs())
        start = time.time()
        processes = variant(st2, config, agent_id)
        done = time.time() - start
        rerun = platform.runs()[before]
        figures.append({"to_rerun_s": rerun.timestamp - start, "to_recorded_s": done, "processes": processes})
    return {
        "processes": figures[0]["processes"],
        "to_rerun_s": {"median": round(statistics.median(f["to_rerun_s"] for f in figures), 3),
                       "max": round(max(f["to_rerun_s"] for f in figures), 3)},
        "to_recorded_s": {"median": round(statistics.median(f["to_recorded_s"] for f in figures), 3),
                          "max": round(max(f["to_recorded_s"] for f in figures), 3)},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", default=RESULT_PATH)
    args = parser.parse_args()
    if not WRAPPER_AVAILABLE:
        sys.exit("st2's python runner is not importable here: run with the real-st2 virtualenv")
    redis = RedisServer().start()
    platform = AgentPlatformServer(api_key=KEY).start()
    api = St2ApiServer(token="bench-token").start()
    try:
        with StackStormLayout(api_url=api.api_url, auth_token=api.token) as st2:
            results = {"runs": args.runs, "python": "%d.%d" % sys.version_info[:2]}
            for variant in (four, begin):  # alternate order would not matter: each run is its own agent
                results[variant.__name__] = measure(variant, st2, platform, redis.url, args.runs)
    finally:
        api.stop()
        platform.stop()
        redis.stop()
    results["ratio_to_rerun"] = round(results["begin"]["to_rerun_s"]["median"] / results["four"]["to_rerun_s"]["median"], 3)
    results["ratio_to_recorded"] = round(
        results["begin"]["to_recorded_s"]["median"] / results["four"]["to_recorded_s"]["median"], 3)
    print("%-8s %9s %14s %14s" % ("variant", "processes", "to re-run s", "to recorded s"))
    for name in ("four", "begin"):
        r = results[name]
        print("%-8s %9d %14.3f %14.3f" % (name, r["processes"], r["to_rerun_s"]["median"], r["to_recorded_s"]["median"]))
    print("begin / four: re-run %.2fx, recorded %.2fx (medians of %d runs)"
          % (results["ratio_to_rerun"], results["ratio_to_recorded"], args.runs))
    with open(args.out, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
        handle.write("\n")


if __name__ == "__main__":
    main()
