"""The real BullMQ library, run with node, for the BullMQ tests and benchmark.

``tests/bullmq`` pins bullmq (package.json + package-lock.json); its
``node_modules`` is installed on first use with ``npm ci`` (git-ignored,
reused afterwards). Without node or npm the caller gets ``BullMQNodeError``,
which fails the test with what to install: the BullMQ tests are not skipped.

    run_script("fail_jobs.js", {"port": 6379, "queue": "q", "jobs": [...]})  # -> parsed JSON
    finish_script(name, start_script(name, spec))                            # the same, in two steps

Waiting polls with short sleeps, so under eventlet the sensor under test keeps running.
"""

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

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
    text = json.dumps(spec)
    if len(text) > 64 * 1024:  # beyond what a command line safely carries: "@<file>"
        handle = tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bullmq-spec-", delete=False)
        with handle:
            handle.write(text)
        atexit.register(_remove, handle.name)
        text = "@" + handle.name
    return [node_binary(), os.path.join(BULLMQ_DIR, script), text]


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def run_script(script, spec, timeout=120):
    """Run tests/bullmq/<script> with the JSON `spec`; return its last stdout line, parsed."""
    return finish_script(script, start_script(script, spec), timeout)


def start_script(script, spec):
    """Start a script; its output goes to temporary files, so a full pipe never stalls it."""
    stdout, stderr = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    process = subprocess.Popen(_command(script, spec), stdout=stdout, stderr=stderr, cwd=BULLMQ_DIR)
    process.output_files = (stdout, stderr)
    return process


def finish_script(script, process, timeout=120):
    """Wait for a started script by polling with short sleeps: under eventlet (st2tests, the sensor
    container) a blocking wait would stall every green thread, the sensor under test included."""
    deadline = time.time() + timeout
    while process.poll() is None:
        if time.time() > deadline:
            process.kill()
            process.wait()
            raise BullMQNodeError("node %s did not finish within %s s" % (script, timeout))
        time.sleep(0.02)
    outputs = []
    for handle in process.output_files:
        handle.seek(0)
        outputs.append(handle.read())
        handle.close()
    return _result(script, process.returncode, outputs[0], outputs[1])


def _result(script, returncode, stdout, stderr):
    if returncode != 0:
        raise BullMQNodeError("node %s exited %s:\n%s" % (script, returncode, stderr.decode(errors="replace")[-3000:]))
    lines = [line for line in stdout.decode().splitlines() if line.strip()]
    if not lines:
        raise BullMQNodeError("node %s printed nothing" % script)
    return json.loads(lines[-1])
