"""The pack's test sessions (run them with `bash scripts/run-tests.sh`, which brings nox).

  floor      the whole suite on the oldest StackStorm the pack supports: st2 v3.8.1 +
             Orquesta v1.6.0 on Python 3.8, with the LOWEST version of every range
             in requirements.txt / requirements-tests.txt.
  head       the whole suite on st2 master (c2eaf56b) + Orquesta 1.6 on Python 3.11.
  e2e        `bash e2e/run.sh`: the pack in live st2 services.
  analytics  `bash analytics/run-tests.sh`.

floor and head build a virtualenv from st2's own requirements.txt (minus its git-URL
lines), Orquesta from source in the same resolve, then st2's components
(`pip install --no-deps --no-build-isolation -e`). Sources, first that works:
an env var (a checkout or a tarball), ../shared/vendor/ beside the repository,
a git clone of the pinned commit. Sources and virtualenvs are cached OUTSIDE the
checkout, under ~/.cache/synthralos (SYNTHRALOS_CACHE_DIR), a virtualenv keyed on
everything it is built from, so a fresh clone reuses them.

e2e / analytics: a missing entry script is a loud skip on a user's machine and an
error under CI=true. Every session ends in one summary (printed at exit) whose last
line is `summary: N passed, N failed` (tests, plus sessions that failed before a
test ran).
"""

import atexit
import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import nox

ROOT = os.path.dirname(os.path.abspath(__file__))
CACHE_DIR = os.environ.get("SYNTHRALOS_CACHE_DIR") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "synthralos")
VENDOR_DIR = os.path.abspath(os.environ.get("SYNTHRALOS_VENDOR_DIR") or os.path.join(ROOT, "..", "shared", "vendor"))
IN_CI = os.environ.get("CI", "").lower() == "true"
# Bump when the way a virtualenv is built changes (its cache key includes this).
RECIPE = 3

# st2 components installed editable, without dependencies, into both virtualenvs.
ST2_COMPONENTS = ["st2common", "st2tests", "st2reactor", "st2actions", "st2client",
                  "contrib/runners/python_runner", "contrib/runners/orquesta_runner", "contrib/runners/noop_runner"]
PACK_REQUIREMENTS = ["requirements.txt", "requirements-tests.txt"]


class Source(object):
    """One upstream tree: where to look for it and the commit it must be."""

    def __init__(self, name, env_var, tarball, commit, git_url):
        self.name, self.env_var, self.tarball, self.commit, self.git_url = name, env_var, tarball, commit, git_url


class Stack(object):
    """What a unit session runs on: a Python, st2 and Orquesta, and how pip is pinned."""

    def __init__(self, python, st2, orquesta, pip, lowest_pack_requirements):
        self.python, self.st2, self.orquesta = python, st2, orquesta
        self.pip = pip  # the pip / setuptools the virtualenv gets before anything else
        self.lowest_pack_requirements = lowest_pack_requirements


ST2_GIT = os.environ.get("SYNTHRALOS_ST2_GIT_URL", "https://github.com/StackStorm/st2")
ORQUESTA_GIT = os.environ.get("SYNTHRALOS_ORQUESTA_GIT_URL", "https://github.com/StackStorm/orquesta")
STACKS = {
    # st2 3.8 pins pip/setuptools of its time; newer setuptools cannot build some of its pins.
    "floor": Stack(
        "3.8",
        Source("st2", "ST2_FLOOR_SOURCE", "st2-v3.8.1-e590679a.tar.gz", "e590679aaf58ae4e58e08a753361c1179d0cd012", ST2_GIT),
        Source("orquesta", "ORQUESTA_FLOOR_SOURCE", "orquesta-v1.6.0-a225905f.tar.gz",
               "a225905fdc0ceedc587078adff66c36b90047455", ORQUESTA_GIT),
        ["pip<24", "setuptools<60", "wheel"], lowest_pack_requirements=True),
    "head": Stack(
        "3.11",
        Source("st2", "ST2_SOURCE", "st2-c2eaf56b.tar.gz", "c2eaf56b339bdb8184b5c2161714bce50eee4534", ST2_GIT),
        Source("orquesta", "ORQUESTA_SOURCE", "orquesta-8c67ef31.tar.gz", "8c67ef31f8af8e1e03465b7f44a315a32d1e1e02",
               ORQUESTA_GIT),
        ["pip", "setuptools", "wheel"], lowest_pack_requirements=False),
}

nox.options.sessions = ["floor", "head", "e2e", "analytics"]
nox.options.error_on_missing_interpreters = True

RESULTS = []  # one dict per session that ran, for the summary at exit


def log(message):
    print("[tests] %s" % message, flush=True)


def loud(*lines):
    bar = "#" * 72
    for line in (bar,) + lines + (bar,):
        log(line)


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_python(version):
    """pythonX.Y on PATH, else pyenv's newest X.Y.* (a pyenv shim may exist and not run)."""
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates = [shutil.which("python%s" % version)]
    candidates += sorted(glob.glob(os.path.join(pyenv, "versions", version + ".*", "bin", "python")), reverse=True)
    for candidate in candidates:
        if candidate and subprocess.call([candidate, "-c", ""], stderr=subprocess.DEVNULL) == 0:
            return candidate
    raise RuntimeError("Python %s not found (looked on PATH and in %s/versions)" % (version, pyenv))


def git_head(path):
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    return out[1] if os.path.realpath(out[0]) == os.path.realpath(path) else None


# ---- sources ---------------------------------------------------------------------

class Tree(object):
    """A resolved source: directory, commit (or why unknown), where it came from, cache key."""

    def __init__(self, path, commit, origin, key):
        self.path, self.commit, self.origin, self.key = path, commit, origin, key


def resolve(source):
    """The tree for `source`: its env var, the vendor tarball, a git clone; first that works."""
    given = os.environ.get(source.env_var)
    if given:
        tree = given_tree(source, given)
        if tree:
            return tree
        log("WARNING: %s=%s is not a checkout or tarball; trying the next source" % (source.env_var, given))
    tarball = os.path.join(VENDOR_DIR, source.tarball)
    if os.path.isfile(tarball):
        return tarball_tree(source, tarball)
    tree = clone_tree(source)
    if tree:
        return tree
    raise RuntimeError("no %s source worked: %s unset or unusable, %s missing, git clone of %s failed"
                       % (source.name, source.env_var, tarball, source.git_url))


def given_tree(source, path):
    if os.path.isfile(path):
        return tarball_tree(source, os.path.abspath(path))
    if not os.path.isdir(path):
        return None
    path = os.path.abspath(path)
    commit = git_head(path)
    if commit:
        dirty = subprocess.run("git status --porcelain && git diff HEAD", shell=True, cwd=path,
                               capture_output=True).stdout
        key = "git:%s:%s" % (commit, hashlib.sha256(dirty).hexdigest()[:16])
    else:
        listing = []
        for base, _, files in os.walk(path):
            if "/.git" not in base:
                listing += ["%s %d %d" % (os.path.join(base, f), os.path.getsize(os.path.join(base, f)),
                                          os.path.getmtime(os.path.join(base, f))) for f in files]
        key = "dir:" + hashlib.sha256("\n".join(sorted(listing)).encode()).hexdigest()[:16]
        commit = "unknown (not a git checkout)"
    return Tree(path, commit, "checkout %s" % path, key)


def tarball_tree(source, tarball):
    """Extracted once into CACHE_DIR/src/<name>-<sha256 prefix>; the commit is the pinned one
    when the file name carries its prefix (st2-v3.8.1-e590679a.tar.gz), else unknown."""
    sha = sha256_file(tarball)[:16]
    dest = os.path.join(CACHE_DIR, "src", "%s-%s" % (source.name, sha))
    marker = os.path.join(dest, ".synthralos-source")
    if not os.path.isfile(marker):
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".extract.", dir=os.path.dirname(dest))
        with tarfile.open(tarball) as archive:
            archive.extractall(tmp)
        entries = os.listdir(tmp)
        top = os.path.join(tmp, entries[0]) if len(entries) == 1 and os.path.isdir(os.path.join(tmp, entries[0])) else tmp
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(top, dest)
        shutil.rmtree(tmp, ignore_errors=True)
        suffix = re.sub(r"\.(tar\.gz|tgz)$", "", os.path.basename(tarball)).rsplit("-", 1)[-1]
        known = len(suffix) >= 7 and re.match(r"^[0-9a-f]+$", suffix) and source.commit.startswith(suffix)
        with open(marker, "w") as handle:
            handle.write("commit=%s\nsha256=%s\ntarball=%s\n" % (source.commit if known else "unknown", sha, tarball))
    with open(marker) as handle:
        commit = re.search(r"^commit=(.*)$", handle.read(), re.M).group(1)
    if commit == "unknown":
        commit = "unknown (tarball sha256 %s...)" % sha
    return Tree(dest, commit, "tarball %s" % tarball, "tarball:" + sha)


def clone_tree(source):
    dest = os.path.join(CACHE_DIR, "src", "%s-git-%s" % (source.name, source.commit[:12]))
    if git_head(dest) != source.commit:
        if not shutil.which("git"):
            return None
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".clone.", dir=os.path.dirname(dest))
        log("cloning %s at %s" % (source.git_url, source.commit[:12]))
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        # A shallow fetch of the one commit; a full clone where the server refuses that.
        shallow = ["git init -q", "git fetch -q --depth 1 %s %s" % (source.git_url, source.commit),
                   "git checkout -q FETCH_HEAD"]
        if subprocess.call(" && ".join(shallow), shell=True, cwd=tmp, **quiet) != 0:
            shutil.rmtree(tmp)
            if subprocess.call(["git", "clone", "-q", source.git_url, tmp], **quiet) != 0 or subprocess.call(
                    ["git", "-C", tmp, "checkout", "-q", source.commit], **quiet) != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                log("git clone of %s failed" % source.git_url)
                return None
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    return Tree(dest, source.commit, "git clone of %s" % source.git_url, "git:" + source.commit)


# ---- virtualenvs -------------------------------------------------------------------

def lowest_versions(paths):
    """`name==X` for every `name>=X` requirement in `paths`: the floor of each declared range."""
    pins = []
    for path in paths:
        with open(os.path.join(ROOT, path)) as handle:
            for line in handle:
                match = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,;\s]+)", line.split("#", 1)[0])
                if match:
                    pins.append("%s==%s" % (re.sub(r"\[.*\]", "", match.group(1)), match.group(2)))
    return pins


def pip_install(python, build_log, *args):
    command = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"] + list(args)
    with open(build_log, "a") as out:
        out.write("\n$ %s\n" % " ".join(command))
        out.flush()
        if subprocess.call(command, stdout=out, stderr=subprocess.STDOUT) != 0:
            with open(build_log) as handle:
                tail = handle.read().splitlines()[-60:]
            raise RuntimeError("pip install failed (log %s); last lines:\n%s" % (build_log, "\n".join(tail)))


def prune_unused_venvs(venvs, name, keep, days=14):
    """Old inputs leave old virtualenvs behind: drop this session's unused for `days`."""
    for path in glob.glob(os.path.join(venvs, name + "-*")):
        ready = os.path.join(path, ".synthralos-ready")
        if path != keep and os.path.isdir(path) and os.path.isfile(ready) \
                and time.time() - os.path.getmtime(ready) > days * 86400:
            log("removing %s (unused for %d days)" % (path, days))
            shutil.rmtree(path, ignore_errors=True)


def ensure_venv(name, stack, python, st2, orquesta):
    """The cached virtualenv for `stack`: CACHE_DIR/venvs/<name>-<hash of its inputs>.
    Returns (venv directory, seconds spent building; 0 when cached)."""
    lowest = lowest_versions(PACK_REQUIREMENTS) if stack.lowest_pack_requirements else []
    parts = ["recipe %d" % RECIPE, subprocess.check_output([python, "-VV"], text=True), python,
             " ".join(stack.pip), st2.key, orquesta.key, " ".join(lowest)]
    for path in [os.path.join(ROOT, p) for p in PACK_REQUIREMENTS] + [
            os.path.join(st2.path, "requirements.txt"), os.path.join(st2.path, "test-requirements.txt")]:
        if os.path.isfile(path):
            with open(path) as handle:
                parts.append(handle.read())
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    venvs = os.path.join(CACHE_DIR, "venvs")
    venv = os.path.join(venvs, "%s-%s" % (name, key))
    ready = os.path.join(venv, ".synthralos-ready")
    os.makedirs(venvs, exist_ok=True)
    with open(venv + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it once
        prune_unused_venvs(venvs, name, keep=venv)
        if os.path.isfile(ready):
            os.utime(ready)  # in use: not pruned
            return venv, 0
        started = time.time()
        build_log = venv + ".build.log"
        log("building %s (Python %s, st2 %s, orquesta %s; log %s)" % (venv, stack.python, st2.path, orquesta.path, build_log))
        shutil.rmtree(venv, ignore_errors=True)
        if os.path.exists(build_log):
            os.remove(build_log)
        subprocess.check_call([python, "-m", "venv", venv])
        vpython = os.path.join(venv, "bin", "python")
        pip_install(vpython, build_log, "--upgrade", *stack.pip)
        requirements = os.path.join(venv, "st2-requirements.txt")
        with open(os.path.join(st2.path, "requirements.txt")) as src, open(requirements, "w") as dst:
            # st2 names orquesta and optional backends by git URL: orquesta comes from its tree instead.
            dst.writelines(line for line in src if "git+" not in line)
        ujson = "ujson"
        test_requirements = os.path.join(st2.path, "test-requirements.txt")
        if os.path.isfile(test_requirements):
            with open(test_requirements) as handle:
                ujson = next((l.strip() for l in handle if re.match(r"^ujson([=<>!~ ]|$)", l)), ujson)
        constraints = os.path.join(venv, "lowest-pack-requirements.txt")
        with open(constraints, "w") as handle:
            handle.write("".join(pin + "\n" for pin in lowest))
        # One resolve: st2's pins, Orquesta with its dependencies, the pack's ranges
        # (on the floor held at their lowest versions).
        pip_install(vpython, build_log, "-r", requirements, orquesta.path, ujson, "virtualenv",
                    "-r", os.path.join(ROOT, "requirements.txt"), "-r", os.path.join(ROOT, "requirements-tests.txt"),
                    "-c", constraints)
        editable = []
        for component in ST2_COMPONENTS:
            editable += ["-e", os.path.join(st2.path, component)]
        pip_install(vpython, build_log, "--no-deps", "--no-build-isolation", *editable)
        with open(ready, "w") as handle:
            handle.write("\n".join(parts[:7]) + "\n")
        return venv, time.time() - started


# ---- running and the summary -------------------------------------------------------------

SUMMARY_LINE = re.compile(r"^=*\s*(.*\b(passed|failed|error|errors|skipped|no tests ran)\b.* in [0-9.]+s\b.*?)\s*=*$")


def run_streamed(command, env=None):
    """Run `command` with its output passed through; returns (exit code, pytest's last summary line)."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    last = None
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace")
        sys.stdout.write(line)
        sys.stdout.flush()
        match = SUMMARY_LINE.match(line.strip())
        if match:
            last = match.group(1)
    return process.wait(), last


def counts(line):
    """(passed, failed + errors) from a pytest summary line."""
    found = dict((word, int(n)) for n, word in re.findall(r"(\d+) (passed|failed|errors?)", line or ""))
    return found.get("passed", 0), found.get("failed", 0) + found.get("error", 0) + found.get("errors", 0)


def record(name, ok, detail, line=None, venv_s=None, suite_s=None, stack="", skipped_tier=False):
    passed, failed = counts(line)
    RESULTS.append({"name": name, "ok": ok, "skipped_tier": skipped_tier, "detail": detail, "line": line,
                    "venv_s": venv_s, "suite_s": suite_s, "stack": stack, "passed": passed, "failed": failed})


def print_summary():
    if not RESULTS:
        return
    log("=" * 72)
    total_passed = total_failed = 0
    for r in RESULTS:
        times = []
        if r["venv_s"] is not None:
            times.append("venv %s" % ("cached" if r["venv_s"] == 0 else "built in %.0fs" % r["venv_s"]))
        if r["suite_s"] is not None:
            times.append("suite %.0fs" % r["suite_s"])
        result = "SKIPPED" if r["skipped_tier"] else "passed" if r["ok"] else "FAILED"
        log("%-9s %s -- %s%s%s" % (r["name"], result, r["detail"],
                                  " -- " + r["line"] if r["line"] else "", " -- " + ", ".join(times) if times else ""))
        if r["stack"]:
            log("          %s" % r["stack"])
        total_passed += r["passed"]
        # A session that failed with no failing test counted (venv, collection, missing script) is one failure.
        total_failed += r["failed"] or (0 if r["ok"] else 1)
    print("summary: %d passed, %d failed" % (total_passed, total_failed), flush=True)


atexit.register(print_summary)


def pytest_targets(posargs):
    """The whole suite (tests/) unless the arguments name test files or ids themselves: pytest
    would collect a file named beside tests/ twice."""
    names_paths = any(not a.startswith("-") and os.path.exists(os.path.join(ROOT, a.split("::")[0]))
                      for a in posargs)
    return list(posargs) if names_paths else ["tests"] + list(posargs)


def unit_session(session, name):
    stack = STACKS[name]
    started = time.time()
    try:
        python = find_python(stack.python)
        st2, orquesta = resolve(stack.st2), resolve(stack.orquesta)
        venv, venv_s = ensure_venv(name, stack, python, st2, orquesta)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        record(name, False, "virtualenv not built: %s" % str(exc).splitlines()[0])
        session.error(str(exc))
    vpython = os.path.join(venv, "bin", "python")
    versions = subprocess.check_output(
        [vpython, "-c", "import st2common, orquesta, redis; print(st2common.__version__, orquesta.__version__,"
                        " redis.__version__)"], text=True).split()
    stack_line = "st2 %s (st2common %s, %s); orquesta %s (%s, %s); redis-py %s" % (
        st2.commit, versions[0], st2.origin, orquesta.commit, versions[1], orquesta.origin, versions[2])
    log("%s: Python %s in %s (%s)" % (name, stack.python, venv, "cached" if venv_s == 0 else "built in %.0fs" % venv_s))
    log("%s: %s" % (name, stack_line))
    env = dict(os.environ, SYNTHRALOS_EXPECT_REAL_ST2="1", SYNTHRALOS_ST2_COMMIT=st2.commit,
               SYNTHRALOS_ORQUESTA_COMMIT=orquesta.commit, SYNTHRALOS_ST2_SOURCE_DIR=st2.path,
               SYNTHRALOS_ORQUESTA_SOURCE_DIR=orquesta.path)
    suite_started = time.time()
    rc, line = run_streamed([vpython, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs",
                             "-o", "faulthandler_timeout=300"] + pytest_targets(session.posargs), env=env)
    detail = {0: "pytest exit 0", 5: "pytest collected no tests (exit 5)"}.get(rc, "pytest exit %d" % rc)
    record(name, rc == 0, detail, line, venv_s, time.time() - suite_started, stack_line)
    log("%s: %s in %.0fs" % (name, detail, time.time() - started))
    if rc != 0:
        session.error(detail)


def tier_session(session, name, script):
    """A test tier with its own entry script: it installs/starts what it needs and cleans up."""
    if not os.path.isfile(os.path.join(ROOT, script)):
        if IN_CI:
            record(name, False, "%s is missing (an error under CI=true)" % script)
            session.error("%s is missing" % script)
        loud("%s: SKIPPED, %s is not in this checkout" % (name, script))
        record(name, True, "%s is not in this checkout" % script, skipped_tier=True)
        return
    started = time.time()
    rc, line = run_streamed(["bash", script] + list(session.posargs))
    detail = "%s exit %d" % (script, rc)
    record(name, rc == 0, detail, line, None, time.time() - started)
    if rc != 0:
        session.error(detail)


@nox.session(venv_backend="none")
def floor(session):
    """Whole suite: st2 v3.8.1 + Orquesta v1.6.0, Python 3.8, lowest declared requirements."""
    unit_session(session, "floor")


@nox.session(venv_backend="none")
def head(session):
    """Whole suite: st2 master c2eaf56b + Orquesta 1.6, Python 3.11."""
    unit_session(session, "head")


@nox.session(venv_backend="none")
def e2e(session):
    """The pack in live st2 services: bash e2e/run.sh."""
    tier_session(session, "e2e", "e2e/run.sh")


@nox.session(venv_backend="none")
def analytics(session):
    """bash analytics/run-tests.sh."""
    tier_session(session, "analytics", "analytics/run-tests.sh")
