"""Benchmark: time to repair inside live StackStorm services (issue 19), against a baseline
measured in the same run.

    ~/.cache/st2lab/venv/bin/python bench/recovery_st2.py --quick

Runs on the live-st2 lab of the e2e tier (e2e/lab.py: ../shared/st2lab's real st2 services,
MongoDB emulator, RabbitMQ, Redis on loopback). It starts the lab when it is not running
(and stops it at the end), installs the pack from this checkout as `st2 pack install` does
plus bench/synthralos_bench (the baseline workflow, never part of the pack), writes the pack
config of the tier (e2e/harness.py: lab Redis db 1, a local agent platform and RudderStack
sink) and leaves the pack's rules and policies as shipped.

Measured, each time from the XADD of a failed execution to the agent stream:
* to_rerun_s: until the local agent platform receives the re-run POST;
* to_repaired_s: until the agent_recovery execution ends (its st2 end_timestamp), repaired;
* executions: the workflow's child executions; executions_before_rerun: those started
  before the re-run POST;
* stages (st2's own timestamps): sensor dispatch -> trigger instance (occurrence_time),
  rule -> workflow execution created (start_timestamp), workflow running (its log), and
  each task's start and end; and the workflow's stages (WORKFLOW_STAGES: created -> running
  -> first task requested -> scheduled -> running -> ended -> workflow ended, plus the first
  task's running -> re-run POST), reported the same way for the baseline, stage by stage.
Baseline: synthralos_bench.one_task, a one-task Orquesta workflow running one python action
of the pack (end_timestamp - start_timestamp); every time is also a ratio to its median.
Bursts of 10 and 50 failures of distinct agents: p50/p95, the drain time (last recovery end
- first XADD), and a check that every agent ended repaired with exactly one recovery and
one re-run.
CPU: the lab's idle load (cores busy with nothing running, over 10 s), then the CPU seconds of
the lab's processes (st2 services, sensors, MongoDB emulator, RabbitMQ, Redis; a python
action's process through st2actionrunner) per baseline run, per single recovery and per
recovery of a burst, less that idle load; and a burst's CPU-bound drain: all its CPU on the
cores the idle load leaves, no waiting. Not measured when the idle load leaves under half a
core (the lab as shipped: e2e/README.md, "The emulator's hello loop").
Read ratios, not seconds. Writes bench/results/recovery_st2.json and prints a table.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "e2e"))

from harness import Harness, unique, wait_until  # noqa: E402
from lab import DONE, Lab, St2API, lab_dir  # noqa: E402

BENCH_PACK = os.path.join(HERE, "synthralos_bench")
RECOVERY = "synthralos.agent_recovery"


def ts(text):
    """st2's ISO timestamp (UTC) -> epoch seconds."""
    if not text:
        return None
    text = text.replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(text).timestamp()


def pct(values, q):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return round(values[lo] + (values[hi] - values[lo]) * (k - lo), 3)


def r3(x):
    return None if x is None else round(x, 3)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_WINDOW_S = 10.0
MIN_SPARE_CORES = 0.5


def lab_cpu_s():
    """{pid: CPU seconds so far} of the lab's processes: those whose command line or working
    directory is under the lab's root (the st2 services, the sensor processes, the emulated
    MongoDB, RabbitMQ, Redis), not this one (the lab's python runs it). A python action's
    process is counted when st2actionrunner reaps it (its children's time)."""
    root, me = lab_dir(), str(os.getpid())
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmdline = f.read().decode("utf-8", "replace")
            cwd = os.readlink("/proc/%s/cwd" % pid)
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone, or not ours to read
            continue
        if root in cmdline or cwd.startswith(root):
            found[pid] = sum(int(x) for x in fields[11:15]) / CLOCK_TICKS  # utime stime cutime cstime
    return found


class CpuMeter(object):
    """The lab's CPU seconds and the wall time between start() and stop(), less what the lab
    burns with nothing to do (`idle_cores`, measured by idle_cores())."""

    def __init__(self, idle_cores=0.0):
        self.idle_cores = idle_cores

    def start(self):
        self.before, self.t0 = lab_cpu_s(), time.monotonic()
        return self

    def stop(self):
        after, wall = lab_cpu_s(), time.monotonic() - self.t0
        used = sum(cpu - self.before.get(pid, 0.0) for pid, cpu in after.items())
        return used - self.idle_cores * wall, wall


def idle_cores():
    """Cores the lab keeps busy while nothing runs (st2's own polling, the emulator)."""
    meter = CpuMeter().start()
    time.sleep(IDLE_WINDOW_S)  # a measurement window, not a synchronisation
    used, wall = meter.stop()
    return used / wall


def wait_done(api, execution_id, timeout=300):
    def done():
        e = api.execution(execution_id)
        return e if e["status"] in DONE else None
    return wait_until(done, "execution %s to end" % execution_id, timeout, interval=0.5)


def status_time(e, status):
    """When the execution first reached `status` (its st2 log), epoch seconds."""
    return next((ts(entry["timestamp"]) for entry in e.get("log") or [] if entry["status"] == status), None)


def since(later, earlier):
    return r3(later - earlier) if later is not None and earlier is not None else None


# The stages of one workflow execution, the same for the baseline and agent_recovery (s, st2's own
# timestamps): workflow created -> running (st2scheduler, policies, the orquesta runner's request in
# st2actionrunner), running -> first task requested (st2workflowengine: first task rendered, its
# execution created), the first task's requested -> scheduled (st2scheduler), scheduled -> running
# (st2actionrunner picks it up), running -> end (the python action process), its end -> workflow end.
WORKFLOW_STAGES = ("wf_created_to_running_s", "wf_running_to_task_requested_s", "task_requested_to_scheduled_s",
                   "task_scheduled_to_running_s", "task_running_to_end_s", "task_end_to_wf_end_s")


def workflow_stages(api, e, rerun_t=None):
    """WORKFLOW_STAGES of workflow execution `e` (fetched with its log), from its first task; with the
    re-run POST's time, also the first task's running -> re-run POST."""
    children = sorted(api.children(e["id"]), key=lambda c: c["start_timestamp"])
    first = api.execution(children[0]["id"]) if children else {}
    created, running, end = ts(e["start_timestamp"]), status_time(e, "running"), ts(e.get("end_timestamp"))
    t_req, t_sched = ts(first.get("start_timestamp")), status_time(first, "scheduled")
    t_run, t_end = status_time(first, "running"), ts(first.get("end_timestamp"))
    stages = dict(zip(WORKFLOW_STAGES, (since(running, created), since(t_req, running), since(t_sched, t_req),
                                        since(t_run, t_sched), since(t_end, t_run), since(end, t_end))))
    stages["total_s"] = since(end, created)
    if rerun_t is not None:
        stages["task_running_to_rerun_s"] = since(rerun_t, t_run)
    return stages


def baseline(api, runs, idle=0.0):
    """(times, stages, CPU s) of `runs` one_task executions: end - start, their WORKFLOW_STAGES, and
    the lab's CPU from the request to the end (the stage queries after it not included; None when
    not measurable, see spare_cores)."""
    times, stages, cpu = [], [], []
    for _ in range(runs):
        meter = CpuMeter(idle).start()
        e = wait_done(api, api.run("synthralos_bench.one_task", {"job_id": unique("bench")})["id"])
        cpu.append(measured_cpu(meter.stop()[0], idle))
        assert e["status"] == "succeeded", e.get("result")
        times.append(ts(e["end_timestamp"]) - ts(e["start_timestamp"]))
        stages.append(workflow_stages(api, e))
    return times, stages, cpu


def median_stages(stages):
    keys = [k for k in stages[0]] if stages else []
    return {k: pct([s[k] for s in stages], 0.5) for k in keys}


def recoveries_by_agent(api, agent_ids):
    rows = api.executions(RECOVERY, limit=max(200, 4 * len(agent_ids)), include_attributes="id,status,parameters")
    found = {}
    for row in rows:
        found.setdefault(row["parameters"].get("agent_id"), []).append(row)
    return {a: found.get(a, []) for a in agent_ids}


def recovery_record(api, h, agent_id, t0, found):
    """Everything measured about one agent's recovery, from st2's and the agent platform's records."""
    assert len(found) == 1, "agent %s: %d agent_recovery executions" % (agent_id, len(found))
    e = api.execution(found[0]["id"])
    reruns = h.reruns(agent_id)
    rerun_t = reruns[0].timestamp if reruns else None
    children = sorted(api.children(e["id"]), key=lambda c: c["start_timestamp"])
    occurred = ts((e.get("trigger_instance") or {}).get("occurrence_time"))
    created = ts(e["start_timestamp"])
    running = next((ts(entry["timestamp"]) for entry in e.get("log", []) if entry["status"] == "running"), None)
    end = ts(e.get("end_timestamp"))
    output = (e.get("result") or {}).get("output") or {}
    tasks = []
    for c in children:
        name = (c.get("context", {}).get("orquesta") or {}).get("task_name") or c["action"]["ref"]
        start, stop = ts(c.get("start_timestamp")), ts(c.get("end_timestamp"))
        tasks.append({"task": name, "action": c["action"]["ref"], "start_s": r3(start - t0),
                      "end_s": r3(stop - t0) if stop else None, "status": c["status"]})
    return {
        "agent_id": agent_id,
        "status": e["status"],
        "outcome": output.get("outcome"),
        "repaired": output.get("repaired") is True,
        "reruns": len(reruns),
        "to_rerun_s": r3(rerun_t - t0) if rerun_t else None,
        "to_repaired_s": r3(end - t0) if end else None,
        "executions": len(children),
        "executions_before_rerun": sum(1 for c in children if rerun_t and ts(c["start_timestamp"]) < rerun_t),
        "stages": {
            "sensor_dispatch_s": r3(occurred - t0) if occurred else None,
            "rule_to_workflow_created_s": r3(created - occurred) if occurred else None,
            "workflow_created_to_running_s": r3(running - created) if running else None,
            "tasks": tasks,
            "workflow": workflow_stages(api, e, rerun_t),
        },
    }


def fire(h, n, tag):
    agents = []
    for i in range(n):
        agent_id, execution_id = unique("%s-%02d" % (tag, i)), unique("exec")
        h.add_failed_execution(agent_id, execution_id)
        agents.append((agent_id, execution_id))
    sent = []
    for agent_id, execution_id in agents:
        _, t = h.xadd_failure(agent_id, execution_id)
        sent.append((agent_id, t))
    return sent


def wait_all(api, h, sent, timeout):
    ids = [a for a, _ in sent]

    def ended():
        found = recoveries_by_agent(api, ids)
        return found if all(rows and all(r["status"] in DONE for r in rows) for rows in found.values()) else None
    return wait_until(ended, "%d recoveries to end" % len(ids), timeout, interval=2.0)


def run_single(api, h, base, idle):
    meter = CpuMeter(idle).start()
    sent = fire(h, 1, "single")
    found = wait_all(api, h, sent, 600)
    cpu_s, _ = meter.stop()
    rec = recovery_record(api, h, sent[0][0], sent[0][1], found[sent[0][0]])
    assert rec["repaired"] and rec["reruns"] == 1, rec
    rec["cpu_s"] = measured_cpu(cpu_s, idle)
    return rec


def summarize(records, sent, base):
    first = min(t for _, t in sent)
    ends = [r["to_repaired_s"] + t for r, (_, t) in zip(records, sent) if r["to_repaired_s"] is not None]
    to_rerun = [r["to_rerun_s"] for r in records]
    to_repaired = [r["to_repaired_s"] for r in records]
    drain = max(ends) - first if ends else None
    summary = {
        "n": len(records),
        "to_rerun_s": {"p50": pct(to_rerun, 0.5), "p95": pct(to_rerun, 0.95)},
        "to_repaired_s": {"p50": pct(to_repaired, 0.5), "p95": pct(to_repaired, 0.95)},
        "drain_s": r3(drain),
        "executions": {"p50": pct([r["executions"] for r in records], 0.5),
                       "max": max(r["executions"] for r in records)},
        "executions_before_rerun": {"max": max(r["executions_before_rerun"] for r in records)},
        "repaired": sum(1 for r in records if r["repaired"]),
        "each_exactly_once": all(r["reruns"] == 1 for r in records),
        "stages_p50": {
            k: pct([r["stages"][k] for r in records], 0.5)
            for k in ("sensor_dispatch_s", "rule_to_workflow_created_s", "workflow_created_to_running_s")
        },
        "workflow_stages_p50": median_stages([r["stages"]["workflow"] for r in records]),
        "workflow_stages_p95": {k: pct([r["stages"]["workflow"][k] for r in records], 0.95)
                                for k in records[0]["stages"]["workflow"]},
    }
    summary["ratio_to_baseline"] = {
        "to_rerun_p50": r3(summary["to_rerun_s"]["p50"] / base) if summary["to_rerun_s"]["p50"] else None,
        "to_rerun_p95": r3(summary["to_rerun_s"]["p95"] / base) if summary["to_rerun_s"]["p95"] else None,
        "to_repaired_p50": r3(summary["to_repaired_s"]["p50"] / base),
        "to_repaired_p95": r3(summary["to_repaired_s"]["p95"] / base),
        "drain": r3(drain / base) if drain else None,
    }
    return summary


def run_burst(api, h, n, base, timeout, idle):
    meter = CpuMeter(idle).start()
    sent = fire(h, n, "burst%d" % n)
    found = wait_all(api, h, sent, timeout)
    cpu_s, _ = meter.stop()
    records = [recovery_record(api, h, a, t, found[a]) for a, t in sent]
    summary = summarize(records, sent, base)
    summary.update(cpu_summary(cpu_s, n, idle, base))
    summary["outcomes"] = sorted({r["outcome"] for r in records if r["outcome"]})
    summary["records"] = records
    return summary


def spare_cores(idle):
    """The cores the lab's idle burn leaves, or None when under MIN_SPARE_CORES: then the work only
    displaces the burn and the lab's CPU cannot be split between them."""
    spare = (os.cpu_count() or 1) - idle
    return spare if spare >= MIN_SPARE_CORES else None


def measured_cpu(cpu_s, idle):
    return r3(cpu_s) if spare_cores(idle) else None


def median_or_none(values):
    return None if None in values else r3(statistics.median(values))


def cpu_summary(cpu_s, n, idle, base):
    """CPU per recovery, and the drain a burst of n cannot beat on this box: all of its CPU
    spread over the cores the lab's idle burn leaves, with no waiting at all."""
    spare = spare_cores(idle)
    if not spare:
        return {"cpu_s_per_recovery": None, "cpu_bound_drain_s": None, "cpu_bound_drain_ratio": None}
    return {"cpu_s_per_recovery": r3(cpu_s / n), "cpu_bound_drain_s": r3(cpu_s / spare),
            "cpu_bound_drain_ratio": r3(cpu_s / spare / base)}


def git_commit():
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], stdout=subprocess.PIPE,
                              timeout=30).stdout.decode().strip()
    except (OSError, subprocess.SubprocessError):
        return None


def table(result):
    base = result["baseline_s"]

    def cell(seconds, ratio):
        return "%7.1fs %5.1fx" % (seconds, ratio) if seconds is not None else "%14s" % "-"

    lines = ["baseline (one-task Orquesta workflow, one python action): %.2f s (runs: %s)"
             % (base, ", ".join("%.2f" % t for t in result["baseline_runs"])),
             "%-8s %14s %14s %14s %14s %14s %7s %9s" % (
                 "case", "rerun p50", "repaired p50", "rerun p95", "repaired p95", "drain", "execs", "repaired")]
    s = result["single"]
    r = s["ratio_to_baseline"]
    lines.append("%-8s %s %s %14s %14s %14s %7s %9s" % (
        "single", cell(s["to_rerun_s"], r["to_rerun"]), cell(s["to_repaired_s"], r["to_repaired"]), "-", "-", "-",
        "%d/%d" % (s["executions"], s["executions_before_rerun"]), "1/1" if s["repaired"] else "0/1"))
    for key in ("burst10", "burst50"):
        b = result.get(key)
        if not b:
            continue
        rb = b["ratio_to_baseline"]
        lines.append("%-8s %s %s %s %s %s %7s %9s" % (
            key, cell(b["to_rerun_s"]["p50"], rb["to_rerun_p50"]), cell(b["to_repaired_s"]["p50"], rb["to_repaired_p50"]),
            cell(b["to_rerun_s"]["p95"], rb["to_rerun_p95"]), cell(b["to_repaired_s"]["p95"], rb["to_repaired_p95"]),
            cell(b["drain_s"], rb["drain"]), "%g/%d" % (b["executions"]["p50"], b["executions_before_rerun"]["max"]),
            "%d/%d" % (b["repaired"], b["n"])))
    lines.append("times from the XADD, x = ratio to the baseline; execs: child executions per recovery (p50) / "
                 "most started before the re-run POST")
    st = s["stages"]
    lines.append("single, stages (s from the XADD): sensor dispatch -> trigger instance %s; rule -> workflow created +%s; "
                 "-> running +%s; tasks: %s" % (
                     st["sensor_dispatch_s"], st["rule_to_workflow_created_s"], st["workflow_created_to_running_s"],
                     ", ".join("%s %s-%s" % (t["task"], t["start_s"], t["end_s"]) for t in st["tasks"])))
    lines.append("workflow stages (s, st2 timestamps)            baseline  agent_recovery (single)")
    for key in WORKFLOW_STAGES + ("total_s", "task_running_to_rerun_s"):
        b, a = result["baseline_stages"].get(key), st["workflow"].get(key)
        lines.append("  %-44s %8s  %8s" % (key, "-" if b is None else "%.3f" % b, "-" if a is None else "%.3f" % a))
    if result["baseline_cpu_s"] is None:
        lines.append("CPU: not measured; with nothing running the lab keeps %.2f of %d cores busy, so the work only "
                     "displaces that burn" % (result["lab_idle_cores"], result["cores"]))
        return "\n".join(lines)
    lines.append("CPU of the lab's processes (s), less its idle burn of %.2f of %d cores: baseline %.2f per run, "
                 "single recovery %.2f" % (result["lab_idle_cores"], result["cores"], result["baseline_cpu_s"],
                                           s["cpu_s_per_recovery"]))
    for key in ("burst10", "burst50"):
        b = result.get(key)
        if b:
            lines.append("  %s: %.2f per recovery; all of it on the spare cores, no waiting: drain %.1f s (%.1fx)" % (
                key, b["cpu_s_per_recovery"], b["cpu_bound_drain_s"], b["cpu_bound_drain_ratio"]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time to repair in live st2 services, against a baseline.")
    parser.add_argument("--quick", action="store_true", help="3 baseline runs, 2 single recoveries, one burst each")
    parser.add_argument("--no-install", action="store_true", help="the pack is installed already (lab running)")
    parser.add_argument("--keep-lab", action="store_true", help="leave a lab this run started running")
    parser.add_argument("--skip-burst50", action="store_true")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "recovery_st2.json"))
    args = parser.parse_args(argv)
    baseline_runs, singles, bursts = (3, 2, 1) if args.quick else (5, 3, 2)
    started_at = time.monotonic()

    lab = Lab()
    if not lab.available():
        sys.exit("no st2lab scripts at %s (set SYNTHRALOS_ST2LAB_SCRIPTS)" % lab.scripts)
    we_started = not lab.running()
    try:
        if we_started:
            lab.up(REPO, extra_packs=[BENCH_PACK])
        elif not args.no_install:
            lab.install_pack(REPO, extra_packs=[BENCH_PACK])
        api = St2API()
        with Harness(lab, api, bullmq=False) as h:
            # one warm-up of each kind: the first python execution of a fresh pack venv is slower
            baseline(api, 1)
            idle = idle_cores()
            base_runs, base_stages, base_cpu = baseline(api, baseline_runs, idle)
            base = statistics.median(base_runs)
            single_runs = [run_single(api, h, base, idle) for _ in range(singles)]
            pick = sorted(single_runs, key=lambda r: r["to_repaired_s"])[len(single_runs) // 2]
            result = {
                "lab_idle_cores": r3(idle),
                "cores": os.cpu_count(),
                "baseline_cpu_s": median_or_none(base_cpu),
                "baseline_s": r3(base),
                "baseline_runs": [r3(t) for t in base_runs],
                "baseline_stages": median_stages(base_stages),
                "baseline_stages_runs": base_stages,
                "single": {
                    "to_rerun_s": pick["to_rerun_s"], "to_repaired_s": pick["to_repaired_s"],
                    "executions": pick["executions"], "executions_before_rerun": pick["executions_before_rerun"],
                    "repaired": pick["repaired"],
                    "cpu_s_per_recovery": median_or_none([r["cpu_s"] for r in single_runs]),
                    "ratio_to_baseline": {"to_rerun": r3(pick["to_rerun_s"] / base),
                                          "to_repaired": r3(pick["to_repaired_s"] / base)},
                    "stages": pick["stages"], "runs": single_runs,
                },
            }
            sizes = [10] if args.skip_burst50 else [10, 50]
            for n in sizes:
                rounds = [run_burst(api, h, n, base, 300 + 30 * n, idle) for _ in range(bursts)]
                result["burst%d" % n] = rounds[len(rounds) // 2] if len(rounds) == 1 else dict(
                    rounds[-1], rounds=[{k: v for k, v in r.items() if k != "records"} for r in rounds])
            result["meta"] = {
                "commit": git_commit(), "quick": args.quick, "date": datetime.datetime.utcnow().isoformat() + "Z",
                "loadavg_end": os.getloadavg(), "wall_s": round(time.monotonic() - started_at, 1),
                "command": "bench/recovery_st2.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            }
    finally:
        if we_started and not args.keep_lab:
            lab.down()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)
    print(table(result))
    for key in ("burst10", "burst50"):
        b = result.get(key)
        if b and (b["repaired"] != b["n"] or not b["each_exactly_once"]):
            print("NOT every recovery of %s ended repaired exactly once: %s" % (key, b["outcomes"]))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
