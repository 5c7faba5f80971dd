"""Import cost of every action module, with the pack library it pulls in.

st2 runs each python-script action in a new process (python_action_wrapper),
so an action module's import time is paid on every execution. For each
action (every `actions/*.yaml` whose entry point is a .py file), in a fresh
subprocess per run:

1. import what st2's python_action_wrapper has already imported before it
   loads the action (the wrapper module itself when the python runner is
   installed, else st2common's log, config, runners.base_action,
   runners.utils, util.loader; six; orjson), so that is not charged to the
   action;
2. `import <action module>` under `python -X importtime`, and sum the
   cumulative time of the top-level imports after the marker: the module,
   the pack library it pulls and any third-party module not yet loaded.

The figure per action is the median of `--runs` runs (default 5). Goal:
<= 150 ms each. Results go to bench/results/imports.json:
{"slowest_ms": .., "modules": {"<action>": ms, ...}, ...}.

    <venv>/bin/python bench/imports.py     # the interpreter running it (<venv>: a test virtualenv, CONTRIBUTING.md)
    python3 bench/imports.py <venv>/bin/python --runs 3   # or the one named

The python given must have StackStorm (st2common) importable.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ACTIONS = os.path.join(ROOT, "actions")
DEFAULT_PYTHON = sys.executable  # the interpreter running this script
GOAL_MS = 150.0
MARKER = "--synthralos-import-bench--"

PRELOAD = """
import sys, os
sys.path[:0] = [{actions!r}, {lib!r}]
import st2common.runners.base_action  # noqa
try:  # what st2 itself has loaded when it imports the action (st2's own python runner)
    import python_runner.python_action_wrapper  # noqa
except ImportError:
    pass
for name in ("six", "orjson", "st2common.log", "st2common.config", "st2common.runners.base_action",
             "st2common.runners.utils", "st2common.util.loader", "st2common.constants.action",
             "st2common.constants.keyvalue", "st2common.constants.runners"):
    try:
        __import__(name)
    except ImportError:
        pass
sys.stderr.write({marker!r} + "\\n")
sys.stderr.flush()
import {module}
"""


def action_modules():
    """{action name: module name} for every python-script action."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ACTIONS, "*.yaml"))):
        with open(path) as handle:
            meta = yaml.safe_load(handle) or {}
        entry = meta.get("entry_point") or ""
        if meta.get("runner_type") == "python-script" and entry.endswith(".py") and "/" not in entry:
            found[meta["name"]] = entry[:-3]
    return found


def parse_importtime(stderr):
    """Sum of the cumulative microseconds of top-level imports after the marker, in ms."""
    seen_marker = False
    total_us = 0
    for line in stderr.splitlines():
        if line.strip() == MARKER:
            seen_marker = True
            continue
        if not seen_marker or not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # one space: a top-level import
            total_us += int(parts[1].strip())
    if not seen_marker:
        raise RuntimeError("the preload did not finish:\n" + stderr[-2000:])
    return total_us / 1000.0


def measure(python, module, runs):
    code = PRELOAD.format(actions=ACTIONS, lib=os.path.join(ACTIONS, "lib"),
                          marker=MARKER, module=module)
    samples = []
    for _ in range(runs):
        proc = subprocess.run([python, "-X", "importtime", "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=ROOT, timeout=120)
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise RuntimeError("importing %s failed:\n%s" % (module, stderr[-3000:]))
        samples.append(parse_importtime(stderr))
    return round(statistics.median(samples), 1), [round(s, 1) for s in samples]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("python", nargs="?", default=DEFAULT_PYTHON, help="interpreter to measure (default %(default)s)")
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per module (median reported)")
    parser.add_argument("--output", default=os.path.join(HERE, "results", "imports.json"))
    args = parser.parse_args(argv)

    version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                             stdout=subprocess.PIPE, check=True).stdout.decode().strip()
    modules, samples = {}, {}
    for action, module in sorted(action_modules().items()):
        modules[action], samples[action] = measure(args.python, module, args.runs)
    ranked = sorted(modules.items(), key=lambda item: -item[1])
    result = {
        "slowest_ms": ranked[0][1] if ranked else None,
        "modules": modules,
        "slowest_three": [{"action": a, "ms": ms} for a, ms in ranked[:3]],
        "goal_ms": GOAL_MS,
        "over_goal": [a for a, ms in ranked if ms > GOAL_MS],
        "python": args.python,
        "python_version": version,
        "runs": args.runs,
        "samples_ms": samples,
        "method": "python -X importtime, fresh process per run, st2 wrapper's imports preloaded; "
                  "sum of cumulative top-level imports of the action module; median of runs",
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2, sort_keys=True)
        handle.write("\n")
    print("%-28s %10s" % ("action", "import ms"))
    for action, ms in ranked:
        print("%-28s %10.1f%s" % (action, ms, "  > goal" if ms > GOAL_MS else ""))
    print("slowest: %s (goal <= %.0f ms); written to %s" % (
        ", ".join("%s %.1f ms" % (a, ms) for a, ms in ranked[:3]), GOAL_MS, os.path.relpath(args.output, ROOT)))
    return 1 if result["over_goal"] else 0


if __name__ == "__main__":
    sys.exit(main())
