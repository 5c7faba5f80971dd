"""What the e2e tests and bench/recovery_st2.py run beside the lab: the local agent platform
and RudderStack sink of tests/synthralos_tests, the pack config pointing at them, the lab
Redis, and waits on st2 state.

    with Harness(lab, St2API()) as h:      # servers up, config written, sensors restarted
        h.add_failed_execution("agent-1", "exec-1")
        h.xadd_failure("agent-1", "exec-1")
        h.wait_recovery("agent-1", "exec-1")  # the agent_recovery execution, ended
"""

import json
import os
import sys
import time
import types
import uuid

from lab import DONE, LAB_REDIS, PACK_REDIS_DB, REPO_ROOT, pack_config

TESTS_SUPPORT = os.path.join(REPO_ROOT, "tests", "synthralos_tests")


def _import_test_servers():
    """tests/synthralos_tests' server modules, without the package __init__ (which sets up the
    unit tests' st2 imports; the e2e process talks to st2 over HTTP only)."""
    if "synthralos_tests" not in sys.modules:
        package = types.ModuleType("synthralos_tests")
        package.__path__ = [TESTS_SUPPORT]
        sys.modules["synthralos_tests"] = package
    from synthralos_tests.agent_api_server import AgentPlatformServer
    from synthralos_tests.rudderstack_sink import RudderStackSink

    return AgentPlatformServer, RudderStackSink


AGENT_API_KEY = "e2e-agent-api-key"
WRITE_KEY = "e2e-write-key"
STREAM = "synthralos:agent_executions"
GROUP = "synthralos"


def wait_until(condition, what, timeout, interval=0.5):
    """The suite's one poll loop (tests/synthralos_tests/polling.py), polling st2 twice a second."""
    _import_test_servers()
    from synthralos_tests.polling import wait_until as poll

    return poll(condition, what, timeout, interval)


def unique(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


class Harness(object):
    def __init__(self, lab, api, bullmq=True, config_overrides=None):
        import redis

        AgentPlatformServer, RudderStackSink = _import_test_servers()
        self.lab = lab
        self.api = api
        self.agents = AgentPlatformServer(api_key=AGENT_API_KEY, agents=())
        self.sink = RudderStackSink(write_keys=(WRITE_KEY,))
        self.bullmq_queue = unique("e2e-agent-runs") if bullmq else None
        self.config_overrides = config_overrides or {}
        self.redis = redis.Redis.from_url("%s/%d" % (LAB_REDIS, PACK_REDIS_DB), decode_responses=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        self.agents.start()
        self.sink.start()
        self.redis.flushdb()  # a clean slate in the pack's db (never db 0: st2's coordination)
        queues = [self.bullmq_queue] if self.bullmq_queue else []
        config = pack_config(self.agents.base_url, AGENT_API_KEY, self.sink.url, WRITE_KEY,
                             bullmq_queues=queues, **self.config_overrides)
        self.lab.write_config(config)
        self.wait_sensors_ready()

    def stop(self):
        self.agents.stop()
        self.sink.stop()

    def wait_sensors_ready(self, timeout=120):
        """The stream sensor has created its consumer group: it runs with this config."""
        def group_exists():
            try:
                return any(g["name"] == GROUP for g in self.redis.xinfo_groups(STREAM))
            except Exception:  # no stream yet
                return False

        wait_until(group_exists, "AgentFailureSensor's consumer group on %s" % STREAM, timeout)

    # -- failures in -------------------------------------------------------------------

    def add_failed_execution(self, agent_id, execution_id, **fields):
        execution = dict({"id": execution_id, "status": "failed", "input": "summarise the report",
                          "error": "tool crashed"}, **fields)
        return self.agents.add_execution(agent_id, execution)

    def failure_result(self, **fields):
        return dict({"status": "failed", "error": "Error: upstream tool crashed", "duration_ms": 1200}, **fields)

    def xadd_failure(self, agent_id, execution_id, **result_fields):
        """The platform's XADD of one failed execution (docs/agent_failure_stream.md); returns (entry_id, t)."""
        fields = {"agent_id": agent_id, "execution_id": execution_id,
                  "result": json.dumps(self.failure_result(**result_fields))}
        t = time.time()
        return self.redis.xadd(STREAM, fields), t

    # -- st2 state ---------------------------------------------------------------------

    def recoveries(self, agent_id, limit=100):
        executions = self.api.executions("synthralos.agent_recovery", limit=limit)
        return [e for e in executions if e.get("parameters", {}).get("agent_id") == agent_id]

    def wait_recovery(self, agent_id, timeout=240):
        """The agent's agent_recovery execution once it has ended (the first one found)."""
        def ended():
            found = [e for e in self.recoveries(agent_id) if e["status"] in DONE]
            return found[0] if found else None

        return wait_until(ended, "agent_recovery of %s to end" % agent_id, timeout, interval=1.0)

    def reruns(self, agent_id):
        """Re-run POSTs the agent platform accepted for this agent."""
        return [r for r in self.agents.runs() if "/agents/%s/" % agent_id in r.path]

    def wait_rerun(self, agent_id, timeout=240):
        return wait_until(lambda: self.reruns(agent_id), "a re-run POST for %s" % agent_id, timeout)

    def fail_bullmq_job(self, agent_id, execution_id, error="agent run crashed: tool timeout"):
        """Add one job and fail it for good with a real bullmq Worker (tests/bullmq/fail_jobs.js)."""
        from synthralos_tests.bullmq_node import run_script

        job = {"name": agent_id, "data": {"agent_id": agent_id, "execution_id": execution_id, "error": error},
               "opts": {"attempts": 1}}
        return run_script("fail_jobs.js", {"port": 6379, "queue": self.bullmq_queue, "jobs": [job]}, timeout=180)
