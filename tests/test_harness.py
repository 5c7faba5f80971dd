"""The test harness itself: the st2 stand-in (or real st2tests) behaves like
upstream's mocks, and the real Redis and HTTP test servers do what tests
built on them rely on. unittest-style, so nose runs it too."""

import gzip
import http.client
import json
import os
import socket
import sys
import threading
import time
import unittest

import synthralos_tests  # noqa: F401  (import paths and the st2 stand-in first)

import redis
import requests

from st2common.constants.keyvalue import FULL_SYSTEM_SCOPE, FULL_USER_SCOPE, SYSTEM_SCOPE, USER_SCOPE
from st2common.runners.base_action import Action
from st2reactor.sensor.base import PollingSensor, Sensor
from st2tests.base import BaseActionTestCase, BaseSensorTestCase
from st2tests.mocks.action import MockActionService, MockActionWrapper
from st2tests.mocks.sensor import MockSensorService, MockSensorWrapper

from synthralos_tests.http_server import Reply, StubHTTPServer, drop, hang, malformed_json
from synthralos_tests.redis_server import RedisServer, get_redis_server


# ----------------------------------------------------------------- st2 classes


class EchoAction(Action):
    def run(self, **kwargs):
        return {"config": dict(self.config), "kwargs": kwargs}


class TickSensor(PollingSensor):
    """Dispatches one trigger per poll, numbered."""

    def setup(self):
        self.count = 0

    def poll(self):
        self.count += 1
        self.sensor_service.dispatch(
            trigger="synthralos.tick", payload={"n": self.count}, trace_tag="tick-%d" % self.count
        )

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass


class WatchSensor(Sensor):
    def setup(self):
        pass

    def run(self):
        pass

    def cleanup(self):
        pass

    def add_trigger(self, trigger):
        pass

    def update_trigger(self, trigger):
        pass

    def remove_trigger(self, trigger):
        pass


class ImportSetupTest(unittest.TestCase):
    def test_standin_only_when_st2_is_missing(self):
        import st2tests

        from_standin = os.path.abspath(st2tests.__file__).startswith(synthralos_tests.STANDIN_DIR + os.sep)
        self.assertEqual(from_standin, synthralos_tests.using_st2_standin())

    def test_pack_paths_added_once(self):
        synthralos_tests.add_pack_import_paths()
        synthralos_tests.add_pack_import_paths()
        for path in synthralos_tests.pack_import_paths():
            self.assertEqual(sys.path.count(path), 1, path)
        self.assertIn(os.path.join(synthralos_tests.PACK_ROOT, "actions", "lib"), sys.path)

    def test_scope_constants_match_upstream(self):
        self.assertEqual((SYSTEM_SCOPE, USER_SCOPE), ("system", "user"))
        self.assertEqual((FULL_SYSTEM_SCOPE, FULL_USER_SCOPE), ("st2kv.system", "st2kv.user"))


class DatastoreMockTest(unittest.TestCase):
    """Key naming and listing as st2's datastore service does them."""

    def setUp(self):
        self.service = MockActionService(MockActionWrapper(pack="synthralos", class_name="Probe"))

    def names(self, items):
        return sorted(item.name for item in items)

    def test_local_keys_are_prefixed_with_pack_and_class(self):
        self.assertTrue(self.service.set_value("counter", "1"))
        self.assertEqual(self.service.get_value("counter"), "1")
        self.assertEqual(self.service.get_value("synthralos.Probe:counter", local=False), "1")
        self.assertIsNone(self.service.get_value("counter", local=False))
        self.assertEqual(self.names(self.service.list_values(local=False)), ["synthralos.Probe:counter"])

    def test_global_keys_are_used_as_given(self):
        self.service.set_value("synthralos.breaker.a", "open", local=False)
        self.assertEqual(self.service.get_value("synthralos.breaker.a", local=False), "open")
        self.assertIsNone(self.service.get_value("synthralos.breaker.a"))
        self.assertEqual(self.service.list_values(local=True), [])

    def test_list_values_filters_on_the_full_prefix(self):
        self.service.set_value("alpha", "1")
        self.service.set_value("beta", "2")
        self.service.set_value("synthralos.cb.x", "3", local=False)
        self.service.set_value("other.key", "4", local=False)

        self.assertEqual(self.names(self.service.list_values()), ["synthralos.Probe:alpha", "synthralos.Probe:beta"])
        self.assertEqual(self.names(self.service.list_values(prefix="al")), ["synthralos.Probe:alpha"])
        self.assertEqual(
            self.names(self.service.list_values(local=False, prefix="synthralos.cb")), ["synthralos.cb.x"]
        )
        # A global prefix is a plain startswith on full names, so it also sees the
        # pack's local keys ("synthralos.<Class>:..."), as on a real st2.
        self.assertEqual(
            self.names(self.service.list_values(local=False, prefix="synthralos.")),
            ["synthralos.Probe:alpha", "synthralos.Probe:beta", "synthralos.cb.x"],
        )
        self.assertEqual(len(self.service.list_values(local=False)), 4)
        item = [kv for kv in self.service.list_values(local=False) if kv.name == "other.key"][0]
        self.assertEqual(item.value, "4")

    def test_delete_reports_whether_the_key_existed(self):
        self.service.set_value("gone", "x", local=False)
        self.assertTrue(self.service.delete_value("gone", local=False))
        self.assertFalse(self.service.delete_value("gone", local=False))
        self.assertIsNone(self.service.get_value("gone", local=False))

    def test_ttl_is_accepted_but_not_enforced(self):
        self.service.set_value("lease", "held", ttl=1, local=False)
        self.assertEqual(self.service.get_value("lease", local=False), "held")
        stored = [kv for kv in self.service.list_values(local=False) if kv.name == "lease"][0]
        self.assertEqual(stored.ttl, 1)
        self.assertTrue(self.service._logger.warning.called)

    def test_scope_and_crypto_flags_are_accepted(self):
        self.service.set_value("secret", "s3", local=False, scope=SYSTEM_SCOPE, encrypt=True)
        self.assertEqual(self.service.get_value("secret", local=False, scope=SYSTEM_SCOPE, decrypt=True), "s3")
        self.assertTrue(self.service.delete_value("secret", local=False, scope=SYSTEM_SCOPE))

    def test_values_are_kept_as_given(self):
        # Upstream's mock does not str() values (a live st2 does): store strings.
        self.service.set_value("n", 5, local=False)
        self.assertEqual(self.service.get_value("n", local=False), 5)

    def test_sensor_service_uses_its_class_for_local_keys(self):
        sensor_service = MockSensorService(MockSensorWrapper(pack="synthralos", class_name="Watch"))
        sensor_service.set_value("cursor", "0-1")
        self.assertEqual(sensor_service.get_value("cursor"), "0-1")
        self.assertEqual(sensor_service.get_value("synthralos.Watch:cursor", local=False), "0-1")
        self.assertIsNone(sensor_service.get_value("cursor", local=False))
        self.assertTrue(sensor_service.delete_value("cursor"))
        self.assertFalse(sensor_service.delete_value("cursor"))


class ActionTestCaseTest(BaseActionTestCase):
    action_cls = EchoAction

    def test_instance_gets_config_service_and_logger(self):
        action = self.get_action_instance(config={"redis": {"url": "redis://x"}})
        self.assertIs(action.action_service, self.action_service)
        self.assertEqual(action.config, {"redis": {"url": "redis://x"}})
        self.assertEqual(action.logger.name, "st2.actions.python.EchoAction")
        self.assertEqual(action.run(a=1), {"config": {"redis": {"url": "redis://x"}}, "kwargs": {"a": 1}})

    def test_missing_config_key_raises_value_error(self):
        action = self.get_action_instance(config=None)
        self.assertEqual(action.config, {})
        self.assertIsNone(action.config.get("absent"))
        # st2 raises ValueError naming the config file (its message needs st2's
        # own config loaded, so with real st2 only "it raises" is checked).
        with self.assertRaises(Exception) as caught:
            action.config["absent"]
        if synthralos_tests.using_st2_standin():
            self.assertIsInstance(caught.exception, ValueError)
            self.assertIn('"tests" is missing key "absent"', str(caught.exception))

    def test_action_service_is_a_datastore(self):
        self.action_service.set_value("k", "v")
        self.assertEqual(self.action_service.get_value("tests.EchoAction:k", local=False), "v")

    def test_fixture_paths_resolve_from_the_pack_root(self):
        with open(os.path.join(synthralos_tests.PACK_ROOT, "pack.yaml")) as handle:
            expected = handle.read()
        self.assertEqual(self.get_fixture_content("../../pack.yaml"), expected)

    def test_abstract_run_is_enforced(self):
        class NoRun(Action):
            pass

        with self.assertRaises(TypeError):
            NoRun(config={})


class SensorTestCaseTest(BaseSensorTestCase):
    sensor_cls = TickSensor

    def test_instance_gets_service_config_and_poll_interval(self):
        sensor = self.get_sensor_instance(config={"redis": {}}, poll_interval=7)
        self.assertIs(sensor.sensor_service, self.sensor_service)
        self.assertEqual(sensor.config, {"redis": {}})
        self.assertEqual(sensor.get_poll_interval(), 7)
        sensor.set_poll_interval(2)
        self.assertEqual(sensor.get_poll_interval(), 2)
        self.assertEqual(self.get_sensor_instance().get_poll_interval(), 5)

    def test_dispatches_are_recorded_in_order(self):
        sensor = self.get_sensor_instance()
        sensor.setup()
        sensor.poll()
        sensor.poll()
        dispatched = self.get_dispatched_triggers()
        self.assertEqual([item["payload"] for item in dispatched], [{"n": 1}, {"n": 2}])
        last = self.get_last_dispatched_trigger()
        self.assertEqual(last["trigger"], "synthralos.tick")
        self.assertEqual(last["trace_context"].trace_tag, "tick-2")

    def test_assert_trigger_dispatched_matches_and_fails(self):
        sensor = self.get_sensor_instance()
        sensor.setup()
        with self.assertRaises(AssertionError):
            self.assertTriggerDispatched(trigger="synthralos.tick")
        sensor.poll()
        self.assertTrue(self.assertTriggerDispatched(trigger="synthralos.tick"))
        self.assertTrue(self.assertTriggerDispatched(trigger="synthralos.tick", payload={"n": 1}))
        with self.assertRaises(AssertionError):
            self.assertTriggerDispatched(trigger="synthralos.tick", payload={"n": 2})
        with self.assertRaises(AssertionError):
            self.assertTriggerDispatched(trigger="synthralos.other")

    def test_dispatch_with_context_keeps_the_context(self):
        context = object()
        self.sensor_service.dispatch_with_context("synthralos.tick", payload={"n": 9}, trace_context=context)
        self.assertTrue(self.assertTriggerDispatched("synthralos.tick", payload={"n": 9}, trace_context=context))
        with self.assertRaises(AssertionError):
            self.assertTriggerDispatched("synthralos.tick", trace_context=object())

    def test_logger_accepts_calls(self):
        logger = self.sensor_service.get_logger("TickSensor")
        logger.info("[Test] hello %s", "world")
        logger.info.assert_called_with("[Test] hello %s", "world")

    def test_passive_sensor_and_abstract_methods(self):
        sensor = WatchSensor(sensor_service=self.sensor_service)
        self.assertEqual(sensor.config, {})

        class Incomplete(PollingSensor):
            def setup(self):
                pass

        with self.assertRaises(TypeError):
            Incomplete(sensor_service=self.sensor_service)


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


if __name__ == "__main__":
    unittest.main()
