"""The test harness itself: the pack's import paths, and the real Redis and HTTP
test servers do what tests built on them rely on. unittest-style, so nose runs
it too."""

import ast
import glob
import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
import unittest

import synthralos_tests

import redis
import requests

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.http_server import Reply, StubHTTPServer, drop, hang, malformed_json
from synthralos_tests.redis_server import RedisServer, get_redis_server


class ImportSetupTest(unittest.TestCase):
    def test_pack_paths_added_once(self):
        synthralos_tests.add_pack_import_paths()
        synthralos_tests.add_pack_import_paths()
        for path in synthralos_tests.pack_import_paths():
            self.assertEqual(sys.path.count(path), 1, path)
        self.assertIn(os.path.join(synthralos_tests.PACK_ROOT, "actions", "lib"), sys.path)

    def test_without_st2_the_run_stops_at_import_naming_the_test_command(self):
        # st2tests made unimportable (None in sys.modules) in a fresh interpreter.
        code = ("import sys; sys.modules['st2tests'] = None; sys.path.insert(0, %r); import synthralos_tests"
                % synthralos_tests.TESTS_DIR)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("ImportError", done.stderr)
        self.assertIn("real StackStorm", done.stderr)
        self.assertIn(synthralos_tests.TEST_COMMAND, done.stderr)


# ------------------------------------------------------------------------ Redis


class RedisServerTest(unittest.TestCase):
    def test_shared_server_serves_real_commands(self):
        server = get_redis_server()
        self.assertIs(get_redis_server(), server)
        server.flushall()
        client = server.client()
        client.set("k", "v")
        self.assertEqual(client.get("k"), "v")
        self.assertEqual(client.xadd("s", {"f": "1"}).count("-"), 1)
        self.assertEqual(redis.Redis.from_url(server.url, decode_responses=True).get("k"), "v")
        self.assertEqual(client.config_get("save"), {"save": ""})
        self.assertEqual(client.config_get("appendonly"), {"appendonly": "no"})
        server.flushall()
        self.assertIsNone(client.get("k"))

    def test_kill_and_restart(self):
        with RedisServer() as server:
            url = server.url
            client = server.client(socket_timeout=1, socket_connect_timeout=1)
            client.set("k", "v")
            server.kill()
            self.assertFalse(server.is_running())
            with self.assertRaises(redis.ConnectionError):
                client.get("k")
            server.restart()
            self.assertEqual(server.url, url)
            self.assertTrue(client.ping())
            self.assertIsNone(client.get("k"))  # no persistence

    def test_shared_server_comes_back_after_a_kill(self):
        server = get_redis_server()
        server.kill()
        self.assertIs(get_redis_server(), server)
        self.assertTrue(server.is_running())
        self.assertTrue(server.client().ping())


# ------------------------------------------------------------------------- HTTP


class EchoStub(StubHTTPServer):
    def setup_routes(self):
        self.add_route("GET", r"/items/(?P<item_id>[^/]+)", self.get_item)
        self.add_route("POST", r"/v1/batch", lambda request: (200, {"X-Stub": "1"}, {"ok": True}))

    def get_item(self, request):
        return 200, {"id": request.params["item_id"], "q": request.query.get("q")}


class HTTPServerTest(unittest.TestCase):
    def setUp(self):
        self.server = EchoStub().start()
        self.addCleanup(self.server.stop)

    def test_routes_and_request_log(self):
        before = time.time()
        response = requests.get(self.server.url + "/items/a1?q=x", headers={"X-Trace": "t"}, timeout=5)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"id": "a1", "q": ["x"]})
        request = self.server.last_request("GET", r"/items/.*")
        self.assertEqual((request.method, request.path, request.status), ("GET", "/items/a1", 200))
        self.assertEqual(request.header("X-TRACE"), "t")
        self.assertEqual(request.headers["x-trace"], "t")
        self.assertGreaterEqual(request.timestamp, before)

        response = requests.post(self.server.url + "/v1/batch", json={"batch": [1]}, timeout=5)
        self.assertEqual((response.status_code, response.headers["X-Stub"]), (200, "1"))
        self.assertEqual(self.server.last_request("POST").json, {"batch": [1]})
        self.assertEqual(len(self.server.requests()), 2)

        self.assertEqual(requests.get(self.server.url + "/nope", timeout=5).status_code, 404)

    def test_script_is_fifo_then_falls_back_to_the_handler(self):
        self.server.script(
            "POST", r"/v1/batch", Reply(503, {"error": "busy"}), (429, {"Retry-After": "2"}, {"e": 1}),
            lambda request: (201, {"seen": request.json}),
        )
        self.assertEqual(self.server.pending_script("POST", r"/v1/batch"), 3)
        statuses = []
        for _ in range(4):
            response = requests.post(self.server.url + "/v1/batch", json={"i": 1}, timeout=5)
            statuses.append(response.status_code)
        self.assertEqual(statuses, [503, 429, 201, 200])
        self.assertEqual(self.server.pending_script("POST", r"/v1/batch"), 0)
        self.assertEqual(self.server.requests("POST", r"/v1/batch")[2].status, 201)

    def test_script_without_handler_on_a_new_route(self):
        self.server.script("*", r"/any/.*", Reply(200, "plain"))
        self.assertEqual(requests.put(self.server.url + "/any/x", timeout=5).text, "plain")
        self.assertEqual(requests.put(self.server.url + "/any/x", timeout=5).status_code, 404)

    def test_hang_before_responding(self):
        self.server.script("GET", r"/items/.*", hang(0.6), hang(0.2, then=(202, {"late": True})))
        with self.assertRaises(requests.exceptions.ReadTimeout):
            requests.get(self.server.url + "/items/1", timeout=0.2)
        started = time.monotonic()
        response = requests.get(self.server.url + "/items/1", timeout=5)
        self.assertGreaterEqual(time.monotonic() - started, 0.2)
        self.assertEqual((response.status_code, response.json()), (202, {"late": True}))

    def test_drop_connection_without_response(self):
        self.server.script("POST", r"/v1/batch", drop(), drop(reset=True))
        for _ in range(2):
            with self.assertRaises(requests.exceptions.ConnectionError):
                requests.post(self.server.url + "/v1/batch", data=b"{}", timeout=5)
        self.assertEqual([r.outcome for r in self.server.requests()], ["dropped", "dropped"])
        self.assertEqual([r.status for r in self.server.requests()], [None, None])

        # A plain drop is a clean close (FIN); reset=True is a TCP RST. Told
        # apart on an unpatched socket: eventlet's green recv() reports a
        # reset as a clean EOF.
        self.server.script("POST", r"/v1/batch", drop(), drop(reset=True))
        outcomes = [self._raw_post_outcome("/v1/batch") for _ in range(2)]
        self.assertEqual(outcomes, ["eof", "reset"])

    def _raw_post_outcome(self, path):
        blocking_socket = socket
        if "eventlet" in sys.modules and sys.modules["eventlet"].patcher.is_monkey_patched("socket"):
            blocking_socket = sys.modules["eventlet"].patcher.original("socket")
        sock = blocking_socket.create_connection(("127.0.0.1", self.server.port), timeout=5)
        try:
            sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            sock.setblocking(False)  # and poll, so a green server thread gets to run
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(1024)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                except ConnectionResetError:
                    return "reset"
                return "eof" if data == b"" else "data"
            return "timeout"
        finally:
            sock.close()

    def test_malformed_json_and_cut_body(self):
        self.server.script("GET", r"/items/.*", malformed_json(), Reply(200, {"long": "x" * 100}, cut_body_at=10))
        response = requests.get(self.server.url + "/items/1", timeout=5)
        self.assertEqual(response.headers["Content-Type"], "application/json")
        with self.assertRaises(ValueError):
            response.json()
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        conn.request("GET", "/items/1")
        reply = conn.getresponse()
        with self.assertRaises(http.client.IncompleteRead):
            reply.read()
        conn.close()

    def test_gzip_and_chunked_bodies_are_decoded(self):
        payload = {"batch": [{"event": "agent_execution", "messageId": "m1"}]}
        raw = gzip.compress(json.dumps(payload).encode("utf-8"))
        requests.post(
            self.server.url + "/v1/batch", data=raw, timeout=5,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        request = self.server.last_request()
        self.assertEqual(request.raw_body, raw)
        self.assertEqual(request.json, payload)
        self.assertIsNone(request.decode_error)

        requests.post(self.server.url + "/v1/batch", data=b"not gzip", headers={"Content-Encoding": "gzip"}, timeout=5)
        self.assertIn("gzip", self.server.last_request().decode_error)

        requests.post(self.server.url + "/v1/batch", data=iter([b'{"a": ', b"1}"]), timeout=5)
        request = self.server.last_request()
        self.assertEqual(request.header("transfer-encoding"), "chunked")
        self.assertEqual(request.json, {"a": 1})

    def test_auth_helpers(self):
        requests.post(self.server.url + "/v1/batch", auth=("write-key", ""), timeout=5)
        self.assertEqual(self.server.last_request().basic_auth(), ("write-key", ""))
        requests.post(self.server.url + "/v1/batch", headers={"Authorization": "Bearer sk-1"}, timeout=5)
        self.assertEqual(self.server.last_request().bearer_token(), "sk-1")
        self.assertIsNone(self.server.last_request().basic_auth())

    def test_handler_errors_become_500_and_are_kept(self):
        def broken(request):
            raise RuntimeError("boom")

        self.server.add_route("GET", r"/broken", broken)
        self.assertEqual(requests.get(self.server.url + "/broken", timeout=5).status_code, 500)
        self.assertIn("RuntimeError: boom", self.server.errors[0])

    def test_wait_for_requests(self):
        timer = threading.Timer(0.1, lambda: requests.post(self.server.url + "/v1/batch", timeout=5))
        timer.start()
        self.addCleanup(timer.cancel)
        found = self.server.wait_for_requests(1, "POST", r"/v1/batch", timeout=5)
        self.assertEqual(len(found), 1)
        with self.assertRaises(AssertionError):
            self.server.wait_for_requests(5, "POST", timeout=0.1)

    def test_stop_is_fast_with_hung_and_idle_connections(self):
        self.server.script("GET", r"/items/.*", hang(30))
        outcome = {}

        def client():
            try:
                requests.get(self.server.url + "/items/1", timeout=30)
                outcome["result"] = "answered"
            except requests.exceptions.RequestException as exc:
                outcome["result"] = type(exc).__name__

        thread = threading.Thread(target=client)
        thread.daemon = True
        thread.start()
        self.server.wait_for_requests(1, "GET", timeout=5)
        idle = socket.create_connection(("127.0.0.1", self.server.port), timeout=5)  # keep-alive, no request
        self.addCleanup(idle.close)

        started = time.monotonic()
        self.server.stop()
        self.assertLess(time.monotonic() - started, 1.0)
        thread.join(5)
        self.assertEqual(outcome.get("result"), "ConnectionError")
        with self.assertRaises(requests.exceptions.ConnectionError):
            requests.get("http://127.0.0.1:%d/items/1" % self.server.port, timeout=1)

    def test_context_manager(self):
        with StubHTTPServer() as server:
            server.add_route("GET", r"/ping", lambda request: {"pong": True})
            self.assertEqual(requests.get(server.url + "/ping", timeout=5).json(), {"pong": True})
        with self.assertRaises(requests.exceptions.ConnectionError):
            requests.get(server.url + "/ping", timeout=1)


class SuiteLayoutTest(unittest.TestCase):
    """How the suite is put together: shared helpers live in synthralos_tests, and one contract
    runs on both store backends through synthralos_tests.backends."""

    def test_no_test_file_imports_another_test_file(self):
        paths = glob.glob(os.path.join(synthralos_tests.TESTS_DIR, "test_*.py"))
        test_modules = {os.path.basename(p)[:-3] for p in paths}
        found = []
        for name in sorted(test_modules):
            path = os.path.join(synthralos_tests.TESTS_DIR, name + ".py")
            with open(path) as handle:
                tree = ast.parse(handle.read(), path)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    imported = [node.module]
                else:
                    continue
                found.extend("%s.py:%d imports %s" % (name, node.lineno, module) for module in imported
                             if module.split(".")[0] in test_modules)
        self.assertEqual(found, [], "shared test helpers belong in tests/synthralos_tests/")

    def test_on_both_backends_defines_both_classes_in_the_contract_module(self):
        module = types.ModuleType("synthralos_backend_probe")
        sys.modules[module.__name__] = module
        self.addCleanup(sys.modules.pop, module.__name__)

        class ProbeContract(StoreBackendMixin):
            __module__ = module.__name__
            marker = "contract"

            def test_backend_is_set_up(self):
                self.assertEqual(self.redis is not None, self.backend == "redis")
                self.assertEqual(self.make_store().atomic, self.backend == "redis")

        class ProbeOnRedis(object):
            marker = "redis"

        def tag(cls):
            cls.tagged = True
            return cls

        made = on_both_backends(ProbeContract, "{backend}ProbeTest", redis=ProbeOnRedis, decorators=(tag,),
                                limit=3)
        self.assertEqual([(c.__name__, c.__qualname__, c.__module__, c.backend) for c in made],
                         [("DatastoreProbeTest", "DatastoreProbeTest", module.__name__, "datastore"),
                          ("RedisProbeTest", "RedisProbeTest", module.__name__, "redis")])
        self.assertEqual((module.DatastoreProbeTest, module.RedisProbeTest), made)
        self.assertEqual([(c.marker, c.tagged, c.limit, issubclass(c, unittest.TestCase)) for c in made],
                         [("contract", True, 3, True), ("redis", True, 3, True)])
        result = unittest.TestResult()
        unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromModule(module)).run(result)
        self.assertEqual((result.testsRun, result.errors, result.failures), (2, [], []))
        with self.assertRaises(ValueError):  # defined twice
            on_both_backends(ProbeContract, "{backend}ProbeTest")
        with self.assertRaises(TypeError):  # a backend's own tests as a TestCase would also run alone
            on_both_backends(ProbeContract, "{backend}OtherProbeTest", redis=unittest.TestCase)
        with self.assertRaises(TypeError):  # no backend set-up at all
            on_both_backends(type("Bare", (object,), {"__module__": module.__name__}), "{backend}BareTest")


if __name__ == "__main__":
    unittest.main()
