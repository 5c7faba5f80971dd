"""The real BullMQ library, run with node, for the BullMQ tests and benchmark.

``tests/bullmq`` pins bullmq (package.json + package-lock.json); its
``node_modules`` is installed on first use with ``npm ci`` (git-ignored,
reused afterwards). Without node or npm the caller gets ``BullMQNodeError``,
which fails the test with what to install: the BullMQ tests are not skipped.

    run_script("fail_jobs.js", {"port": 6379, "queue": "q", "jobs": [...]})  # -> parsed JSON
    start_script(...)  # a Popen, for scripts that run alongside a sensor
"""

import json
import os
import shutil
import subprocess
import threading

BULLMQ_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bullmq")

_MISSING = (
    "%s was not found on PATH. The BullMQ tests run the real bullmq npm package with node: install "
    "Node.js 18+ with npm (e.g. Debian/Ubuntu: apt-get install nodejs npm), then run the tests again; "
    "tests/bullmq/node_modules is installed by the tests themselves (npm ci --prefix tests/bullmq)."
)

_lock = threading.Lock()
_ready = False


class BullMQNodeError(AssertionError):
    """node/npm missing, npm ci failed, or a script failed."""


def node_binary():
    path = shutil.which("node")
    if not path:
        raise BullMQNodeError(_MISSING % "node")
    return path


def ensure_node_modules():
    """Install tests/bullmq's locked dependencies when missing (or older than the lock file)."""
    global _ready
    with _lock:
        if _ready:
            return
        node_binary()
        marker = os.path.join(BULLMQ_DIR, "node_modules", ".package-lock.json")
        lock = os.path.join(BULLMQ_DIR, "package-lock.json")
        if not os.path.exists(marker) or os.path.getmtime(marker) < os.path.getmtime(lock):
            npm = shutil.which("npm")
            if not npm:
                raise BullMQNodeError(_MISSING % "npm")
            done = subprocess.run(
                [npm, "ci", "--prefix", BULLMQ_DIR, "--no-audit", "--no-fund", "--loglevel=error"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600,
            )
            if done.returncode != 0:
                raise BullMQNodeError("npm ci --prefix tests/bullmq failed:\n%s" % done.stdout.decode(errors="replace")[-3000:])
        _ready = True


def _command(script, spec):
    ensure_node_modules()
    return [node_binary(), os.path.join(BULLMQ_DIR, script), json.dumps(spec)]


def run_script(script, spec, timeout=120):
    """Run tests/bullmq/<script> with the JSON `spec`; return its last stdout line, parsed."""
    done = subprocess.run(_command(script, spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          cwd=BULLMQ_DIR)
    return _result(script, done.returncode, done.stdout, done.stderr)


def start_script(script, spec):
    return subprocess.Popen(_command(script, spec), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=BULLMQ_DIR)


def finish_script(script, process, timeout=120):
    stdout, stderr = process.communicate(timeout=timeout)
    return _result(script, process.returncode, stdout, stderr)


def _result(script, returncode, stdout, stderr):
    if returncode != 0:
        raise BullMQNodeError("node %s exited %s:\n%s" % (script, returncode, stderr.decode(errors="replace")[-3000:]))
    lines = [line for line in stdout.decode().splitlines() if line.strip()]
    if not lines:
        raise BullMQNodeError("node %s printed nothing" % script)
    return json.loads(lines[-1])
