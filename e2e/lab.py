"""The live-st2 lab for the e2e tier and bench/recovery_st2.py: real st2 services on loopback.

The services come from ../shared/st2lab (scripts that build st2 master + Orquesta 1.6 from
the vendored source and run the ten st2 services with a MongoDB emulator, RabbitMQ and Redis
on fixed loopback ports). This module only RUNS those scripts; it adds the pack-side steps:

    python e2e/lab.py up      # build the lab venv (cached), start, register st2's packs, install the pack
    python e2e/lab.py down    # stop every lab service (the lab's own pid files)

and, for the tests and the bench, `Lab` (paths, pack config, sensor restart) and `St2API`
(a small client of st2's REST API with a token from st2auth).

Installing the pack is what `st2 pack install` does: copy it to <packs_base_path>/synthralos,
`st2 run packs.setup_virtualenv packs=synthralos`, `st2-register-content --register-pack
... --register-all`; the pack config goes to <base>/configs/synthralos.yaml and is loaded
with `--register-configs`. Sensors read the config when they start, so a config change ends
with a restart of st2sensorcontainer.

Environment: SYNTHRALOS_ST2LAB_SCRIPTS (default <repo>/../shared/st2lab), ST2LAB (the
lab's state, default ~/.cache/st2lab, as the scripts use).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = "synthralos"
ST2_USER = "st2admin"
ST2_PASSWORD = "Ch@ngeMe"
AUTH_URL = "http://127.0.0.1:9100"
API_URL = "http://127.0.0.1:9101/v1"
LAB_REDIS = "redis://127.0.0.1:6379"
# st2's own use of the lab Redis is its coordination backend in db 0 (keys under the namespace
# _st2lab). The pack's state and streams live in db 1 (flushed by each run); the BullMQ queues
# in db 0 (tests/bullmq's scripts connect to db 0) under a queue name unique to the run.
PACK_REDIS_DB = 1
BULLMQ_REDIS_DB = 0
# What is left out of the copy `st2 pack install` makes (it clones the repo without .git).
COPY_EXCLUDES = (".git", ".venv", "node_modules", "__pycache__", ".hypothesis", ".pytest_cache", ".nox")


def scripts_dir():
    """SYNTHRALOS_ST2LAB_SCRIPTS, else ../shared/st2lab beside the checkout (for a git worktree,
    beside its main checkout too)."""
    if os.environ.get("SYNTHRALOS_ST2LAB_SCRIPTS"):
        return os.environ["SYNTHRALOS_ST2LAB_SCRIPTS"]
    roots = [REPO_ROOT]
    try:
        common = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30).stdout.decode().strip()
        if common:
            roots.append(os.path.dirname(common))
    except (OSError, subprocess.SubprocessError):
        pass
    candidates = [os.path.normpath(os.path.join(root, "..", "shared", "st2lab")) for root in roots]
    return next((c for c in candidates if os.path.isdir(c)), candidates[0])


def lab_dir():
    return os.environ.get("ST2LAB") or os.path.join(os.path.expanduser("~"), ".cache", "st2lab")


def log(message):
    sys.stderr.write("[e2e-lab] %s\n" % message)
    sys.stderr.flush()


class Lab(object):
    """Paths of the lab and the pack-side steps on it."""

    def __init__(self, scripts=None, root=None):
        self.scripts = scripts or scripts_dir()
        self.root = root or lab_dir()
        self.venv = os.path.join(self.root, "venv")
        self.conf = os.path.join(self.root, "st2.conf")
        self.cli_conf = os.path.join(self.root, "cli", "config")
        self.pack_dir = os.path.join(self.root, "packs", PACK)
        self.config_path = os.path.join(self.root, "base", "configs", PACK + ".yaml")
        self.pack_venv = os.path.join(self.root, "base", "virtualenvs", PACK)

    def available(self):
        return all(os.path.isfile(os.path.join(self.scripts, f)) for f in ("build-env.sh", "services.sh"))

    def bin(self, name):
        return os.path.join(self.venv, "bin", name)

    def _run(self, argv, what, timeout=900):
        started = time.monotonic()
        done = subprocess.run(argv, cwd=self.root if os.path.isdir(self.root) else None,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        output = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            raise RuntimeError("%s failed (exit %d):\n%s" % (what, done.returncode, output[-4000:]))
        log("%s: %.1f s" % (what, time.monotonic() - started))
        return output

    def services(self, *args, **kwargs):
        return self._run(["bash", os.path.join(self.scripts, "services.sh")] + list(args),
                         "services.sh " + " ".join(args), **kwargs)

    def pid_alive(self, name):
        try:
            with open(os.path.join(self.root, "pids", name + ".pid")) as f:
                os.kill(int(f.read().strip()), 0)
            return True
        except (OSError, ValueError):
            return False

    def running(self):
        """True when every service the tier uses is up (started by an earlier `up`)."""
        names = ("mongo", "rabbitmq", "redis", "st2auth", "st2api", "st2actionrunner", "st2scheduler",
                 "st2workflowengine", "st2rulesengine", "st2sensorcontainer", "st2notifier")
        return all(self.pid_alive(n) for n in names)

    # -- up / down ---------------------------------------------------------------------

    def build_env(self):
        if os.path.exists(os.path.join(self.root, ".env-ready")) and os.path.isfile(self.bin("python")):
            log("lab venv cached: %s" % self.venv)
            return
        self._run(["bash", os.path.join(self.scripts, "build-env.sh")], "build-env.sh", timeout=1800)

    def register(self, *args):
        # cwd: not a source tree (its component dirs would shadow st2's packages)
        return self._run([self.bin("st2-register-content"), "--config-file", self.conf] + list(args),
                         "st2-register-content " + " ".join(os.path.basename(a) for a in args))

    def st2(self, *args):
        return self._run([self.bin("st2"), "--config-file", self.cli_conf] + list(args), "st2 " + " ".join(args))

    def copy_pack(self, source, dest):
        """A fresh copy of a pack at `dest` (the checkout, without VCS and caches)."""
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.makedirs(dest)

        def keep(info):
            parts = info.name.split("/")
            return None if any(p in COPY_EXCLUDES for p in parts) else info

        tmp = os.path.join(self.root, "pack-copy.tar")
        with tarfile.open(tmp, "w") as tar:
            for name in sorted(os.listdir(source)):
                if name not in COPY_EXCLUDES:
                    tar.add(os.path.join(source, name), arcname=name, filter=keep)
        with tarfile.open(tmp) as tar:
            tar.extractall(dest)
        os.remove(tmp)

    def install_pack(self, source=REPO_ROOT, extra_packs=()):
        """What `st2 pack install` does, from a local checkout: copy, virtualenv, register.
        `extra_packs`: directories of packs with no python actions (copied and registered)."""
        self.copy_pack(source, self.pack_dir)
        # update=true: keep a virtualenv built by an earlier run, pip only adds what is missing
        # (and creates it when there is none)
        out = self.st2("run", "packs.setup_virtualenv", "packs=" + PACK, "update=true")
        if "succeeded" not in out:
            raise RuntimeError("packs.setup_virtualenv did not succeed:\n" + out[-3000:])
        self.register("--register-pack", self.pack_dir, "--register-all", "--register-fail-on-failure")
        for path in extra_packs:
            dest = os.path.join(self.root, "packs", os.path.basename(os.path.normpath(path)))
            self.copy_pack(path, dest)
            self.register("--register-pack", dest, "--register-all", "--register-fail-on-failure")

    def up(self, source=REPO_ROOT, extra_packs=()):
        self.build_env()
        self.services("start")
        if not self.running():
            raise RuntimeError("st2 services did not all start: see %s/logs" % self.root)
        self.register("--register-all")  # st2's system packs (core, packs, linux, ...): empty DB on start
        self.install_pack(source, extra_packs)

    def down(self):
        self.services("stop")

    # -- pack config -------------------------------------------------------------------

    def write_config(self, config, restart_sensors=True):
        """Write and load the pack config; restart the sensor container (sensors read it at start)."""
        import yaml

        os.makedirs(os.path.dirname(self.config_path), exist_ok=True)
        with open(self.config_path, "w") as f:
            yaml.safe_dump(config, f, default_flow_style=False, sort_keys=True)
        self.register("--register-configs", "--register-fail-on-failure")
        if restart_sensors:
            self.services("restart-st2", "st2sensorcontainer")


def pack_config(agent_api_url, agent_api_key, sink_url, write_key, bullmq_queues=(), **overrides):
    """The pack config the tier and the bench run with: lab Redis (db 1), local agent API and sink."""
    config = {
        "redis": {"url": "%s/%d" % (LAB_REDIS, PACK_REDIS_DB), "key_prefix": "synthralos:"},
        "agent_api": {"base_url": agent_api_url, "api_key": agent_api_key, "timeout_s": 10, "verify_tls": False},
        "rudderstack": {"write_key": write_key, "data_plane_url": sink_url, "flush_interval_ms": 1000,
                        "batch_size": 20, "max_retries": 3, "retry_delay_ms": 200, "request_timeout_s": 5,
                        "gzip": True},
        "agent_failure_stream": {"enabled": True, "block_ms": 500, "claim_idle_ms": 60000},
        "bullmq": {"enabled": bool(bullmq_queues), "redis_url": "%s/%d" % (LAB_REDIS, BULLMQ_REDIS_DB),
                   "prefix": "bull", "queues": list(bullmq_queues), "block_ms": 500},
        "cron_backoff": {"max_consecutive_failures": 2, "initial_backoff_ms": 0},
    }
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    return config


class St2API(object):
    """st2's REST API with a token from st2auth (requests)."""

    def __init__(self, user=ST2_USER, password=ST2_PASSWORD):
        import requests

        self.http = requests.Session()
        reply = self.http.post(AUTH_URL + "/tokens", auth=(user, password), json={"ttl": 86400}, timeout=30)
        reply.raise_for_status()
        self.token = reply.json()["token"]
        self.http.headers["X-Auth-Token"] = self.token

    def get(self, path, **params):
        reply = self.http.get(API_URL + path, params=params, timeout=60)
        reply.raise_for_status()
        return reply.json()

    def post(self, path, body):
        reply = self.http.post(API_URL + path, json=body, timeout=60)
        reply.raise_for_status()
        return reply.json()

    def put(self, path, body):
        reply = self.http.put(API_URL + path, json=body, timeout=60)
        reply.raise_for_status()
        return reply.json()

    def run(self, action, parameters):
        """Start an execution (like `st2 run`); returns it (status requested/scheduled)."""
        return self.post("/executions", {"action": action, "parameters": parameters})

    def execution(self, execution_id):
        return self.get("/executions/" + execution_id)

    def executions(self, action=None, limit=100, **params):
        if action:
            params["action"] = action
        return self.get("/executions", limit=limit, **params)

    def children(self, execution_id):
        return self.get("/executions", parent=execution_id, limit=100)

    def trigger_instances(self, trigger, limit=100):
        return self.get("/triggerinstances", trigger=trigger, limit=limit)

    def set_rule_enabled(self, ref, enabled):
        rule = self.get("/rules/" + ref)
        if rule["enabled"] != enabled:
            rule["enabled"] = enabled
            rule = self.put("/rules/" + rule["id"], rule)
        return rule


DONE = ("succeeded", "failed", "timeout", "canceled", "abandoned")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("up", "down", "available"))
    args = parser.parse_args(argv)
    lab = Lab()
    if args.command == "available":
        return 0 if lab.available() else 1
    if not lab.available():
        log("no st2lab scripts at %s" % lab.scripts)
        return 1
    if args.command == "up":
        lab.up()
    else:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
