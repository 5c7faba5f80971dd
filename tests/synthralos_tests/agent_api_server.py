"""A local agent platform that implements docs/agent_api.md, for tests.

    server = AgentPlatformServer(api_key="k", agents=["agent-1"]).start()
    base_url = server.base_url                   # server.url + "/api"
    server.add_execution("agent-1", {"id": "exec-1", "status": "failed", "input": "..."})
    # How re-runs end, chosen by what the request asks for (first match wins):
    server.on_rerun({"overrides": {"max_iterations": 5}}, {"status": "timeout", "timed_out": True})
    server.on_rerun({}, {"status": "succeeded", "output": "done"})
    # Faults, first in first out, before any handler: 5xx, hangs, malformed JSON
    server.script("POST", server.EXECUTIONS, Reply(503), hang(3), malformed_json())

It enforces what the contract documents (`GET /health` included): Bearer auth (401), unknown agent or
execution (404), a body that is not a JSON object or has unknown or mistyped
fields (400 / 422), a retried tool that is not part of the execution (422),
Idempotency-Key replays (same key -> same execution, not a second run), and
asynchronous runs (202 + polling) when an outcome says `"async_polls": N`.
"""

import copy
import itertools
import threading
from urllib.parse import unquote

from synthralos_tests.http_server import Reply, StubHTTPServer

OVERRIDE_TYPES = {"max_iterations": int, "provider": str, "model": str, "output_instructions": str}
RERUN_FIELDS = {"retry_of", "input", "overrides", "reason", "wait", "repair_context"}
TOOL_RETRY_FIELDS = {"tool", "tool_call_id", "reason", "wait"}


def _error(status, code, message):
    return Reply(status, {"error": {"code": code, "message": message}})


def _matches(expected, actual):
    """True when `expected` is a subset of `actual` (nested dicts compared recursively)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _matches(v, actual[k]) for k, v in expected.items())
    return expected == actual


class AgentPlatformServer(StubHTTPServer):
    EXECUTION = r"/agents/(?P<agent>[^/]+)/executions/(?P<execution>[^/]+)"
    EXECUTIONS = r"/agents/(?P<agent>[^/]+)/executions"
    TOOL_RETRIES = r"/agents/(?P<agent>[^/]+)/executions/(?P<execution>[^/]+)/tool-retries"

    def __init__(self, api_key="agent-api-test-key", agents=("agent-1",), prefix="/api", **kwargs):
        # Route regexes under the base path (configure agent_api.base_url as server.url + prefix).
        self.prefix = prefix
        self.EXECUTION = prefix + AgentPlatformServer.EXECUTION
        self.EXECUTIONS = prefix + AgentPlatformServer.EXECUTIONS
        self.TOOL_RETRIES = prefix + AgentPlatformServer.TOOL_RETRIES
        self.api_key = api_key
        self.agents = set(agents)
        self.executions = {}
        self.rerun_rules = []
        self.default_outcome = {"status": "succeeded", "output": "repaired output"}
        self.rerun_fields = set(RERUN_FIELDS)  # drop "repair_context" to act as a platform built before it
        self._ids = itertools.count(1)
        self._idempotency = {}
        self._polls_left = {}
        self._state = threading.RLock()
        super(AgentPlatformServer, self).__init__(**kwargs)

    @property
    def base_url(self):
        return self.url + self.prefix

    # -- test controls ------------------------------------------------------

    def add_execution(self, agent_id, execution):
        with self._state:
            self.agents.add(agent_id)
            stored = dict(execution, agent_id=agent_id)
            self.executions[stored["id"]] = stored
            return stored

    def on_rerun(self, match, outcome):
        """Re-runs whose request body contains `match` end as `outcome` (fields of the new execution)."""
        with self._state:
            self.rerun_rules.append((match, outcome))

    def runs(self):
        """The POSTs that started a run (re-executions and tool retries), oldest first."""
        return [r for r in self.requests("POST") if r.status in (200, 201, 202)]

    # -- the contract -------------------------------------------------------

    def setup_routes(self):
        self.add_route("GET", self.prefix + r"/health", self._health)
        self.add_route("GET", self.EXECUTION, self._get_execution)
        self.add_route("POST", self.EXECUTIONS, self._reexecute)
        self.add_route("POST", self.TOOL_RETRIES, self._retry_tool)

    def _check(self, request, with_execution=True):
        if request.bearer_token() != self.api_key:
            return None, Reply(
                401,
                {"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}},
                {"WWW-Authenticate": 'Bearer realm="agents"'},
            )
        # Path segments arrive percent-encoded, as a web framework would see them.
        agent = unquote(request.params["agent"])
        if agent not in self.agents:
            return None, _error(404, "agent_not_found", "no agent %s" % agent)
        if not with_execution:
            return None, None
        execution_id = unquote(request.params["execution"])
        execution = self.executions.get(execution_id)
        if execution is None or execution["agent_id"] != agent:
            return None, _error(404, "execution_not_found", "no execution %s" % execution_id)
        return execution, None

    def _health(self, request):
        if request.bearer_token() != self.api_key:
            return Reply(401, {"error": {"code": "unauthorized", "message": "missing or invalid bearer token"}},
                         {"WWW-Authenticate": 'Bearer realm="agents"'})
        return 200, {"status": "ok"}

    def _get_execution(self, request):
        with self._state:
            execution, problem = self._check(request)
            if problem:
                return problem
            if self._polls_left.get(execution["id"], 0) > 0:
                self._polls_left[execution["id"]] -= 1
                return 200, dict(execution, status="running", output=None)
            return 200, copy.deepcopy(execution)

    def _body(self, request, allowed):
        if request.json_error or not isinstance(request.json, dict):
            return None, _error(400, "invalid_json", "the body must be a JSON object")
        unknown = sorted(set(request.json) - allowed)
        if unknown:
            return None, _error(422, "unknown_field", "unknown field(s): %s" % ", ".join(unknown))
        return request.json, None

    def _reexecute(self, request):
        with self._state:
            _, problem = self._check(request, with_execution=False)
            if problem:
                return problem
            body, problem = self._body(request, self.rerun_fields)
            if problem:
                return problem
            original = self.executions.get(body.get("retry_of"))
            if original is None or original["agent_id"] != unquote(request.params["agent"]):
                return _error(422, "invalid_retry_of", "retry_of must name an execution of this agent")
            if "input" in body and not isinstance(body["input"], str):
                return _error(422, "invalid_input", "input must be a string")
            if "repair_context" in body and not isinstance(body["repair_context"], dict):
                return _error(422, "invalid_repair_context", "repair_context must be an object")
            overrides = body.get("overrides") or {}
            if not isinstance(overrides, dict):
                return _error(422, "invalid_overrides", "overrides must be an object")
            for name, value in overrides.items():
                wanted = OVERRIDE_TYPES.get(name)
                if wanted is None or not isinstance(value, wanted) or isinstance(value, bool):
                    return _error(422, "invalid_override", "override %s is unknown or mistyped" % name)
            base = dict(original, input=body.get("input", original.get("input")))
            base.update(overrides)
            return self._start_run(request, base, body)

    def _retry_tool(self, request):
        with self._state:
            original, problem = self._check(request)
            if problem:
                return problem
            body, problem = self._body(request, TOOL_RETRY_FIELDS)
            if problem:
                return problem
            tools = [t.get("tool") for t in original.get("tool_results") or []]
            if not isinstance(body.get("tool"), str) or body["tool"] not in tools:
                return _error(422, "unknown_tool", "tool must be one of the execution's tools")
            return self._start_run(request, dict(original), body)

    def _start_run(self, request, base, body):
        key = request.header("idempotency-key")
        if key and key in self._idempotency:
            return 200, copy.deepcopy(self.executions[self._idempotency[key]])
        outcome = self.default_outcome
        for match, candidate in self.rerun_rules:
            if _matches(match, body):
                outcome = candidate
                break
        outcome = dict(outcome)
        polls = outcome.pop("async_polls", 0)
        execution = {k: v for k, v in base.items() if k in ("agent_id", "input", "max_iterations", "provider", "model")}
        execution.update(
            id="exec-r%d" % next(self._ids),
            retry_of=base.get("id"),
            status="succeeded",
            output=None,
            error=None,
            tool_results=[],
        )
        execution.update(outcome)
        self.executions[execution["id"]] = execution
        if key:
            self._idempotency[key] = execution["id"]
        if polls:
            self._polls_left[execution["id"]] = polls
            return 202, {"id": execution["id"], "agent_id": execution["agent_id"], "status": "running"}
        return 200, copy.deepcopy(execution)
