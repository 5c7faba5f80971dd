"""The agent API client against a real local server implementing docs/agent_api.md."""

import unittest

from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.http_server import Reply, drop, free_port, hang, malformed_json

from synthralos_lib.healing.agent_api import AgentApiClient

KEY = "agent-key-7f3a9c"
FAILED = {
    "id": "exec-1",
    "status": "failed",
    "input": "Summarise ticket 1234",
    "error": "boom",
    "max_iterations": 10,
    "provider": "openai",
    "model": "gpt-4o",
    "tool_results": [{"tool": "search_tickets", "tool_call_id": "call_1", "status": "failed", "error": "502"}],
}



class AgentApiClientTest(unittest.TestCase):
    def setUp(self):
        self.server = AgentPlatformServer(api_key=KEY, agents=["agent-1"]).start()
        self.addCleanup(self.server.stop)
        self.server.add_execution("agent-1", FAILED)
        self.client = self.make_client()

    def make_client(self, **section):
        config = {"base_url": self.server.base_url + "/", "api_key": KEY, "timeout_s": 1}
        config.update(section)
        client = AgentApiClient(config, poll_s=0.05)
        self.addCleanup(client._session.close)
        return client

    def test_get_execution(self):
        result = self.client.get_execution("agent-1", "exec-1")
        self.assertTrue(result.ok)
        self.assertEqual(result["status"], 200)
        self.assertEqual(result.body, dict(FAILED, agent_id="agent-1"))
        self.assertIsNone(result["error_class"])
        request = self.server.last_request("GET")
        self.assertEqual(request.path, "/api/agents/agent-1/executions/exec-1")
        self.assertEqual(request.header("authorization"), "Bearer " + KEY)

    def test_reexecute_sends_the_documented_body(self):
        result = self.client.reexecute(
            "agent-1", "exec-1", input="Short", overrides={"max_iterations": 5}, reason="why", idempotency_key="k-1"
        )
        self.assertTrue(result.ok, result)
        self.assertEqual(result.body["status"], "succeeded")
        self.assertEqual(result.body["retry_of"], "exec-1")
        self.assertEqual(result.body["max_iterations"], 5)
        self.assertEqual(result.body["input"], "Short")
        request = self.server.last_request("POST")
        self.assertEqual(
            request.json,
            {"retry_of": "exec-1", "input": "Short", "overrides": {"max_iterations": 5}, "reason": "why", "wait": True},
        )
        self.assertEqual(request.header("idempotency-key"), "k-1")

    def test_idempotency_key_replays_the_same_run(self):
        first = self.client.reexecute("agent-1", "exec-1", idempotency_key="same")
        second = self.client.reexecute("agent-1", "exec-1", idempotency_key="same")
        self.assertEqual(first.body["id"], second.body["id"])
        self.assertEqual(len([e for e in self.server.executions if e.startswith("exec-r")]), 1)

    def test_retry_tool(self):
        result = self.client.retry_tool("agent-1", "exec-1", "search_tickets", tool_call_id="call_1")
        self.assertTrue(result.ok)
        self.assertEqual(
            self.server.last_request("POST").json, {"tool": "search_tickets", "tool_call_id": "call_1", "wait": True}
        )
        unknown = self.client.retry_tool("agent-1", "exec-1", "send_email")
        self.assertEqual((unknown["status"], unknown["error_class"]), (422, "rejected"))
        self.assertEqual(unknown["error_message"], "HTTP 422: tool must be one of the execution's tools")

    def test_auth_errors(self):
        for client in (self.make_client(api_key="wrong"), self.make_client(api_key=None)):
            result = client.get_execution("agent-1", "exec-1")
            self.assertEqual((result.ok, result["status"], result["error_class"]), (False, 401, "auth"))
            self.assertEqual(result["error_message"], "HTTP 401: missing or invalid bearer token")
        self.assertIsNone(self.server.last_request().header("authorization"))

    def test_not_found(self):
        agent = self.client.get_execution("nope", "exec-1")
        self.assertEqual((agent["status"], agent["error_class"], agent["error_message"]), (404, "not_found", "HTTP 404: no agent nope"))
        execution = self.client.reexecute("agent-1", "exec-404")
        self.assertEqual((execution["status"], execution["error_class"]), (422, "rejected"))
        missing = self.client.get_execution("agent-1", "exec-404")
        self.assertEqual(missing["error_message"], "HTTP 404: no execution exec-404")

    def test_unknown_override_is_rejected_by_the_platform(self):
        result = self.client.reexecute("agent-1", "exec-1", overrides={"shell": "rm -rf /"})
        self.assertEqual((result["status"], result["error_class"]), (422, "rejected"))

    def test_scripted_status_codes(self):
        path = self.server.EXECUTIONS
        self.server.script(
            "POST",
            path,
            Reply(500, {"error": "internal"}),
            Reply(503, "Service Unavailable"),
            Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "7"}),
            Reply(409, {"error": {"code": "busy", "message": "a run is in progress"}}),
            Reply(400, {"message": "bad"}),
        )
        seen = [self.client.reexecute("agent-1", "exec-1") for _ in range(5)]
        self.assertEqual(
            [(r["status"], r["error_class"], r["error_message"]) for r in seen],
            [
                (500, "server_error", "HTTP 500: internal"),
                (503, "server_error", "HTTP 503: Service Unavailable"),
                (429, "rate_limited", "HTTP 429: slow down"),
                (409, "conflict", "HTTP 409: a run is in progress"),
                (400, "rejected", "HTTP 400: bad"),
            ],
        )
        self.assertEqual(seen[2]["retry_after_s"], 7.0)

    def test_timeout(self):
        self.server.script("GET", self.server.EXECUTION, hang(3))
        result = self.client.get_execution("agent-1", "exec-1")
        self.assertEqual((result.ok, result["status"], result["error_class"]), (False, None, "timeout"))
        self.assertEqual(result["error_message"], "no response within 1.0 s")
        self.assertLess(result["latency_s"], 2.9)

    def test_malformed_responses(self):
        path = self.server.EXECUTION
        self.server.script("GET", path, malformed_json(), Reply(200, [1, 2]), Reply(200, b"", {"Content-Type": "application/json"}))
        results = [self.client.get_execution("agent-1", "exec-1") for _ in range(3)]
        self.assertEqual([r["error_class"] for r in results], ["malformed_response"] * 3)
        self.assertEqual([r["status"] for r in results], [200, 200, 200])
        self.assertTrue(results[0]["error_message"].startswith("the body is not JSON"))
        self.assertEqual(results[1]["error_message"], "the body is JSON list, not an object")

    def test_unreachable(self):
        for client in (self.make_client(base_url="http://127.0.0.1:%d" % free_port()),):
            result = client.get_execution("agent-1", "exec-1")
            self.assertEqual((result["status"], result["error_class"]), (None, "unreachable"))
        self.server.script("GET", self.server.EXECUTION, drop(reset=True))
        self.assertEqual(self.client.get_execution("agent-1", "exec-1")["error_class"], "unreachable")

    def test_api_key_never_in_results(self):
        self.server.script("GET", self.server.EXECUTION, Reply(403, {"error": "key %s is revoked" % KEY}))
        result = self.client.get_execution("agent-1", "exec-1")
        self.assertEqual(result["error_message"], "HTTP 403: key *** is revoked")
        self.assertNotIn(KEY, repr(result))

    def test_ids_cannot_escape_their_path_segment(self):
        for bad in ("../admin", "a/b", "", ".."):
            with self.assertRaises(ValueError):
                self.client.get_execution("agent-1", bad)
        self.server.add_execution("agent 1?x", dict(FAILED, id="e#1"))
        self.assertTrue(self.client.get_execution("agent 1?x", "e#1").ok)

    def test_async_run_is_polled_until_finished(self):
        self.server.on_rerun({}, {"status": "succeeded", "output": "done", "async_polls": 2})
        started = self.client.reexecute("agent-1", "exec-1")
        self.assertEqual((started["status"], started.body["status"]), (202, "running"))
        finished = self.client.wait_for("agent-1", started, wait_s=10)
        self.assertEqual((finished["status"], finished.body["status"], finished.body["output"]), (200, "succeeded", "done"))
        self.assertEqual(len(self.server.requests("GET")), 3)
