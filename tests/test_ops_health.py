"""health_check against real local servers: up, refused, bad credentials, slow beyond the timeout."""

import synthralos_tests  # noqa: F401

import json
import socket

from st2tests.mocks.action import MockActionService, MockActionWrapper

from health_check import HealthCheck
from synthralos_tests.agent_api_server import AgentPlatformServer
from synthralos_tests.base import SynthralosActionTestCase
from synthralos_tests.http_server import hang
from synthralos_tests.llm_provider import LLMProviderServer
from synthralos_tests.http_server import free_port
from synthralos_tests.redis_server import RedisServer
from synthralos_tests.rudderstack_sink import DEFAULT_WRITE_KEY, RudderStackSink

AGENT_KEY = "agent-health-key-1111"
OA_KEY = "sk-oa-health-2222"
AN_KEY = "sk-ant-health-3333"
REDIS_USER, REDIS_PASS = "ops", "right-pass-4444"
ALL_CHECKS = ["redis", "st2_datastore", "rudderstack", "agent_api", "llm:oa", "llm:an"]


class FailingDatastore(MockActionService):
    def set_value(self, *args, **kwargs):
        raise RuntimeError("st2api answered 503")


class HealthCheckTest(SynthralosActionTestCase):
    action_cls = HealthCheck

    @classmethod
    def setUpClass(cls):
        super(HealthCheckTest, cls).setUpClass()
        # A Redis with AOF on, and an ACL user, so the "up" case is really ok.
        cls.aof_redis = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "everysec"]).start()
        client = cls.aof_redis.client()
        client.execute_command("ACL", "SETUSER", REDIS_USER, "on", ">" + REDIS_PASS, "~*", "+@all")
        client.connection_pool.disconnect()

    @classmethod
    def tearDownClass(cls):
        cls.aof_redis.stop()
        super(HealthCheckTest, cls).tearDownClass()

    def setUp(self):
        super(HealthCheckTest, self).setUp()
        self.sink = RudderStackSink(disabled_write_keys=["disabled-key"]).start()
        self.addCleanup(self.sink.stop)
        self.agents = AgentPlatformServer(api_key=AGENT_KEY).start()
        self.addCleanup(self.agents.stop)
        self.llm = LLMProviderServer()
        self.addCleanup(self.llm.close)
        self.llm.add_endpoint("oa", "openai", OA_KEY)
        self.llm.add_endpoint("an", "anthropic", AN_KEY)

    def redis_url(self, password=REDIS_PASS):
        return "redis://%s:%s@127.0.0.1:%d/0" % (REDIS_USER, password, self.aof_redis.port)

    def config(self, redis_url=None, write_key=DEFAULT_WRITE_KEY, agent_key=AGENT_KEY, oa_key=OA_KEY, an_key=AN_KEY,
               sink_url=None, agent_url=None, llm_url=None):
        targets = [self.llm.target("oa", api_key=oa_key), self.llm.target("an", api_key=an_key)]
        if llm_url:
            for target in targets:
                target["base_url"] = llm_url
        return {
            "redis": {"url": redis_url if redis_url is not None else self.redis_url()},
            "rudderstack": {"write_key": write_key, "data_plane_url": sink_url or self.sink.url},
            "agent_api": {"base_url": agent_url or self.agents.base_url, "api_key": agent_key},
            "llm_targets": targets,
        }

    def check(self, config, **params):
        params.setdefault("probe_timeout_s", 2)
        action = self.get_action_instance(config=config)
        with self.assertLogs(action.logger, level="INFO") as logs:
            report = action.run(**params)
        self.logs = [r.getMessage() for r in logs.records]
        for line in self.logs:
            self.assertTrue(line.startswith("[Observability] "), line)
        json.dumps(report)  # JSON-able
        return report, {d["name"]: d for d in report["dependencies"]}

    def statuses(self, deps):
        return {name: (d["status"], d["error"]) for name, d in deps.items()}

    # -- up ------------------------------------------------------------------

    def test_everything_up(self):
        report, deps = self.check(self.config())
        self.assertEqual(report["status"], "ok")
        self.assertEqual(report["problems"], [])
        self.assertEqual(report["store"], "redis")
        self.assertEqual([d["name"] for d in report["dependencies"]], ALL_CHECKS)
        self.assertEqual(self.statuses(deps), {name: ("ok", None) for name in ALL_CHECKS})
        for dep in report["dependencies"]:
            self.assertIsInstance(dep["latency_ms"], float)
        redis_details = deps["redis"]["details"]
        self.assertEqual({k: redis_details[k] for k in ("aof_enabled", "appendonly", "appendfsync", "save",
                                                          "aof_last_write_status", "loading")},
                         {"aof_enabled": True, "appendonly": "yes", "appendfsync": "everysec", "save": "",
                          "aof_last_write_status": "ok", "loading": False})
        self.assertEqual(deps["rudderstack"]["details"]["http_status"], 400)  # the empty probe batch, after auth
        self.assertEqual(deps["rudderstack"]["details"]["answer"], "Empty batch payload")
        self.assertEqual(self.sink.accepted, [])
        self.assertEqual(deps["llm:oa"]["details"], {
            "url": self.llm.url + "/oa/v1/models", "http_status": 200, "models_listed": 2, "model_listed": True,
            "target": "oa", "provider": "openai", "model": "gpt-4o-mini"})
        self.assertEqual(deps["llm:an"]["details"]["model_listed"], True)
        # The right credentials went to each service, and nothing else was called.
        models = self.llm.requests("GET")
        self.assertEqual(sorted(r.path for r in models), ["/an/v1/models", "/oa/v1/models"])
        by_path = {r.path: r for r in models}
        self.assertEqual(by_path["/oa/v1/models"].bearer_token(), OA_KEY)
        self.assertEqual((by_path["/an/v1/models"].header("x-api-key"),
                          by_path["/an/v1/models"].header("anthropic-version")), (AN_KEY, "2023-06-01"))
        self.assertEqual([(r.method, r.path, r.bearer_token()) for r in self.agents.requests()],
                         [("GET", "/api/health", AGENT_KEY)])
        self.assertEqual(self.sink.statuses(), [400])
        self.assertEqual(self.logs, ["[Observability] health ok (6 dependencies checked)"])
        # The datastore probe cleaned up after itself.
        self.assertIsNone(self.action_service.get_value("synthralos.ops.health_probe", local=False))

    def test_include_filters_checks(self):
        report, deps = self.check(self.config(), include=["llm", "rudderstack"])
        self.assertEqual(list(deps), ["rudderstack", "llm:oa", "llm:an"])
        report, deps = self.check(self.config(), include=["llm:an"])
        self.assertEqual(list(deps), ["llm:an"])

    def test_not_configured(self):
        config = self.config(redis_url="", write_key="")
        report, deps = self.check(config, include=["redis", "st2_datastore", "rudderstack"])
        self.assertEqual(report["status"], "ok")
        self.assertEqual(report["store"], "st2_datastore")
        self.assertEqual(self.statuses(deps), {
            "redis": ("not_configured", "redis.url is not set; state lives in the st2 datastore"),
            "st2_datastore": ("ok", None),
            "rudderstack": ("not_configured", "rudderstack.write_key is not set; events are not sent"),
        })
        self.assertIsNone(deps["redis"]["latency_ms"])

    # -- degraded ----------------------------------------------------------------

    def test_degraded(self):
        shared = self.redis  # the suite's Redis: no AOF, no RDB
        if shared is None:
            from synthralos_tests.redis_server import get_redis_server
            shared = get_redis_server()
        self.sink.outage(503)
        self.llm.script("oa", ["rate_limit"])
        self.llm.script("an", ["overloaded"])
        self.agents.script("GET", self.agents.prefix + r"/health", (503, {"status": "draining"}))
        report, deps = self.check(self.config(redis_url=shared.url))
        self.assertEqual(report["status"], "degraded")
        self.assertEqual(self.statuses(deps), {
            "redis": ("degraded", "appendonly is off: the event outbox and breaker state do not survive a Redis restart"),
            "st2_datastore": ("ok", None),
            "rudderstack": ("degraded", "data plane answered 503 scripted failure"),
            "agent_api": ("degraded", 'agent platform answered 503 {"status": "draining"}'),
            "llm:oa": ("degraded", "provider answered (429 Rate limit reached for requests)"),
            "llm:an": ("degraded", "provider answered (529 Overloaded)"),
        })
        self.assertEqual(report["problems"][0], "redis: degraded (appendonly is off: the event outbox and breaker "
                                                "state do not survive a Redis restart)")
        self.assertEqual(len(report["problems"]), 5)
        self.assertEqual(self.logs[-1], "[Observability] health degraded (6 dependencies checked)")
        self.assertEqual(self.logs[:-1], ["[Observability] health: " + p for p in report["problems"]])

    # -- down -----------------------------------------------------------------------

    def test_refused(self):
        port = free_port()  # nothing listens there: connections are refused
        dead = "http://127.0.0.1:%d" % port
        config = self.config(redis_url="redis://127.0.0.1:%d/0" % port, sink_url=dead, agent_url=dead + "/api",
                             llm_url=dead + "/v1")
        report, deps = self.check(config)
        self.assertEqual(report["status"], "down")  # the state store (Redis) is down
        statuses = self.statuses(deps)
        self.assertEqual(statuses.pop("st2_datastore"), ("ok", None))
        self.assertEqual(statuses.pop("redis")[0], "down")
        self.assertIn("unreachable: ", deps["redis"]["error"])
        self.assertEqual(statuses, {name: ("down", "connection failed: refused")
                                    for name in ("rudderstack", "agent_api", "llm:oa", "llm:an")})

    def test_slow_beyond_timeout(self):
        blackhole = socket.socket()  # accepts connections (backlog) and never answers
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(8)
        self.addCleanup(blackhole.close)
        self.sink.script("POST", r"/v1/batch", hang(3))
        self.agents.script("GET", self.agents.prefix + r"/health", hang(3))
        self.llm.script("oa", [{"fault": "hang", "delay_s": 3}])
        self.llm.script("an", [{"fault": "slow", "delay_s": 3}])
        config = self.config(redis_url="redis://127.0.0.1:%d/0" % blackhole.getsockname()[1])
        report, deps = self.check(config, probe_timeout_s=0.5)
        self.assertEqual(report["status"], "down")
        statuses = self.statuses(deps)
        self.assertEqual(statuses.pop("st2_datastore"), ("ok", None))
        self.assertEqual(statuses, {
            "redis": ("down", "no answer within 0.5s (TimeoutError)"),
            "rudderstack": ("down", "no answer within 0.5s (ReadTimeout)"),
            "agent_api": ("down", "no answer within 0.5s (ReadTimeout)"),
            "llm:oa": ("down", "no answer within 0.5s (ReadTimeout)"),
            "llm:an": ("down", "no answer within 0.5s (ReadTimeout)"),
        })

    def test_datastore_down_without_redis(self):
        wrapper = MockActionWrapper(pack="synthralos", class_name="HealthCheckTest")
        self.action_service = FailingDatastore(action_wrapper=wrapper)
        report, deps = self.check(self.config(redis_url=""), include=["redis", "st2_datastore"])
        self.assertEqual(report["status"], "down")
        self.assertEqual(self.statuses(deps)["st2_datastore"],
                         ("down", "round trip failed: st2 datastore write of 'ops.health_probe' failed: "
                                  "st2api answered 503"))

    # -- bad credentials ------------------------------------------------------------

    def test_bad_credentials(self):
        wrong = dict(write_key="wrong-write-key-5555", agent_key="wrong-agent-key-6666", oa_key="sk-wrong-7777",
                     an_key="sk-ant-wrong-8888")
        config = self.config(redis_url=self.redis_url(password="wrong-pass-9999"), **wrong)
        report, deps = self.check(config)
        self.assertEqual(report["status"], "down")  # Redis refuses us: the state store is unusable
        statuses = self.statuses(deps)
        self.assertEqual(statuses.pop("st2_datastore"), ("ok", None))
        self.assertEqual(statuses.pop("redis")[0], "misconfigured")
        self.assertIn("authentication failed: ", deps["redis"]["error"])
        self.assertEqual(statuses, {
            "rudderstack": ("misconfigured", "write key refused (401 Invalid Write Key)"),
            "agent_api": ("misconfigured", "agent_api.api_key refused (401)"),
            # Both providers echo the wrong key; it is scrubbed.
            "llm:oa": ("misconfigured", "API key refused (401 Incorrect API key provided: ***. You can find your "
                                        "API key at https://platform.openai.com/account/api-keys.)"),
            "llm:an": ("misconfigured", "API key refused (401 invalid x-api-key: ***)"),
        })
        text = json.dumps(report) + "\n".join(self.logs)
        for secret in list(wrong.values()) + ["wrong-pass-9999"]:
            self.assertNotIn(secret, text)

    def test_disabled_source_is_told_from_bad_key(self):
        report, deps = self.check(self.config(write_key="disabled-key"), include=["rudderstack"])
        self.assertEqual(report["status"], "degraded")
        self.assertEqual(self.statuses(deps), {
            "rudderstack": ("misconfigured", "source disabled or wrong data_plane_url (404 Source is disabled)")})

    def test_agent_platform_without_health_endpoint(self):
        report, deps = self.check(self.config(agent_url=self.agents.url + "/elsewhere"), include=["agent_api"])
        self.assertEqual(deps["agent_api"]["status"], "misconfigured")
        self.assertTrue(deps["agent_api"]["error"].startswith("no GET /health at agent_api.base_url (404)"))
