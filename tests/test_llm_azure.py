"""Azure OpenAI (`kind: azure_openai`) against the provider server answering in Azure's formats,
rerouting across Azure regions and an OpenAI fallback, and account-wide quota circuits,
on both store backends."""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import json
import unittest

from synthralos_tests.backends import on_both_backends
from synthralos_tests.base import StoreBackendMixin
from synthralos_tests.llm_provider import ProviderServerMixin

from synthralos_lib.llm import errors as E
from synthralos_lib.llm import fastpath
from synthralos_lib.llm.breaker import Breakers
from synthralos_lib.llm.client import account_of, call_llm
from synthralos_lib.llm.routing import make_policy, resolve_chain
from synthralos_lib.state.config import ConfigError, load_config

EAST_KEY = "az-east-key-0a1b2c3d4e5f"
WEST_KEY = "az-west-key-9f8e7d6c5b4a"
OPENAI_KEY = "sk-fallback-openai-7777"
AD_TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.entra-token-1234"
USER = [{"role": "user", "content": "Say hello"}]


class AzureClientTest(ProviderServerMixin, unittest.TestCase):
    def setUp(self):
        super(AzureClientTest, self).setUp()
        self.server.add_endpoint("east", "azure_openai", EAST_KEY, region="eastus", models=["gpt-4o", "mini"],
                                 ad_token=AD_TOKEN)

    def call(self, fault=None, **overrides):
        if fault is not None:
            self.server.script("east", [fault])
        target = dict(self.server.target("east"), **overrides)
        return call_llm(target, USER, max_tokens=16, system="Be brief.")

    def test_deployments_path_with_api_version_and_api_key(self):
        out = self.call()
        self.assertEqual((out["ok"], out["status"], out["content"], out["provider"], out["region"]),
                         (True, 200, "Reply from east (gpt-4o).", "azure_openai", "eastus"))
        (request,) = self.server.requests()
        self.assertEqual(request.path, "/east/openai/deployments/gpt-4o/chat/completions")
        self.assertEqual(request.query, {"api-version": ["2024-10-21"]})
        self.assertEqual(request.headers.get("api-key"), EAST_KEY)
        self.assertNotIn("authorization", {k.lower() for k in request.headers})
        body = json.loads(request.body.decode("utf-8"))
        self.assertEqual(body["messages"][0], {"role": "system", "content": "Be brief."})

    def test_deployment_differs_from_model_and_resource_root_is_cleaned(self):
        out = self.call(deployment="mini", api_version="2024-06-01",
                        base_url=self.server.target("east")["base_url"] + "/openai/")
        self.assertEqual((out["ok"], out["model"]), (True, "gpt-4o"))
        (request,) = self.server.requests()
        self.assertEqual((request.path, request.query), ("/east/openai/deployments/mini/chat/completions",
                                                         {"api-version": ["2024-06-01"]}))

    def test_v1_path_sends_the_deployment_as_model(self):
        out = self.call(azure_path="v1", deployment="mini")
        self.assertEqual((out["ok"], out["content"]), (True, "Reply from east (mini)."))
        (request,) = self.server.requests()
        self.assertEqual((request.path, request.query), ("/east/openai/v1/chat/completions", {}))
        self.assertEqual(json.loads(request.body.decode("utf-8"))["model"], "mini")

    def test_entra_id_token_when_there_is_no_key(self):
        out = self.call(api_key=None, azure_ad_token=AD_TOKEN)
        self.assertTrue(out["ok"], out)
        self.assertEqual(self.server.requests()[0].headers.get("authorization"), "Bearer " + AD_TOKEN)
        wrong = self.call(api_key=None, azure_ad_token="not-the-token-5678")
        self.assertEqual((wrong["status"], wrong["error_class"]), (401, E.AUTH_CONFIG))
        self.assertNotIn("not-the-token-5678", json.dumps(wrong))

    def test_errors_in_azures_words(self):
        cases = [
            ("auth", dict(api_key="az-wrong-key-000000"), 401, E.AUTH_CONFIG,
             "HTTP 401 401: Access denied due to invalid subscription key or wrong API endpoint."),
            (None, dict(deployment="nope"), 404, E.AUTH_CONFIG,
             "HTTP 404 DeploymentNotFound: The API deployment for this resource does not exist."),
            (None, dict(api_version="1999-01-01"), 404, E.AUTH_CONFIG, "HTTP 404 404: Resource not found"),
            ("content_filter", {}, 400, E.CONTENT_POLICY, "HTTP 400 ResponsibleAIPolicyViolation/content_filter: "
                                                          "The response was filtered"),
            ("filtered_output", {}, 200, E.CONTENT_POLICY, "the model stopped with 'content_filter'"),
            ({"fault": "rate_limit", "retry_after": 6}, {}, 429, E.RATE_LIMITED, "HTTP 429 429: Requests to the "
                                                                                 "ChatCompletions_Create Operation"),
            ("server_error", {}, 500, E.TRANSIENT, "HTTP 500 InternalServerError: "),
            ("context_overflow", {}, 400, E.CONTEXT_OVERFLOW, "HTTP 400 invalid_request_error/context_length_exceeded"),
            ("quota", {}, 429, E.QUOTA_EXHAUSTED, "HTTP 429 insufficient_quota"),
        ]
        for fault, overrides, status, klass, message in cases:
            with self.subTest(fault=fault, overrides=overrides):
                self.server.reset()
                self.setUp()
                out = self.call(fault, **overrides)
                self.assertEqual((out["ok"], out["status"], out["error_class"]), (False, status, klass))
                self.assertTrue(out["error_message"].startswith(message), out["error_message"])
                self.assertNotIn("az-wrong-key-000000", json.dumps(out))

    def test_the_429_wait_from_headers_or_the_message(self):
        out = self.call({"fault": "rate_limit", "retry_after": 6, "headers": {"x-ms-retry-after-ms": "5250"}})
        self.assertEqual(out["retry_after_s"], 5.25)
        out = self.call({"fault": "rate_limit", "retry_after": 6, "retry_after_ms": 6000})
        self.assertEqual(out["retry_after_s"], 6.0)
        out = self.call({"fault": "rate_limit", "message_wait_s": 17})  # no header: Azure's prose says it
        self.assertEqual(out["retry_after_s"], 17.0)

    def test_a_target_without_root_or_with_a_bad_path(self):
        out = self.call(base_url=None)
        self.assertEqual((out["status"], out["error_class"]), (None, E.AUTH_CONFIG))
        self.assertEqual(out["error_message"], "target 'east' has neither base_url nor resource")
        out = self.call(azure_path="v2")
        self.assertEqual(out["error_message"], "target 'east' has azure_path 'v2' (expected deployments or v1)")
        self.assertEqual(self.server.requests(), [])

    def test_health_check_lists_the_models_on_either_path(self):
        from synthralos_lib.ops.health import check_llm_target

        for overrides, url in (({}, "/east/openai/models?api-version=2024-10-21"),
                               ({"azure_path": "v1"}, "/east/openai/v1/models")):
            result = check_llm_target(dict(self.server.target("east"), **overrides), 2)
            self.assertEqual((result["status"], result["details"]["url"], result["details"]["model_listed"]),
                             ("ok", self.server.url + url, True))
        refused = check_llm_target(dict(self.server.target("east"), api_key="az-wrong-key-111111"), 2)
        self.assertEqual((refused["status"], refused["details"]["http_status"]), ("misconfigured", 401))
        self.assertNotIn("az-wrong-key-111111", json.dumps(refused))
        self.assertEqual([r.header("api-key") for r in self.server.requests("GET")][:2], [EAST_KEY, EAST_KEY])

    def test_resource_names_the_endpoint(self):
        target = {"name": "r", "kind": "azure_openai", "resource": "contoso-eu", "api_key": EAST_KEY, "model": "m"}
        self.assertTrue(account_of(target).startswith("contoso-eu.openai.azure.com#"))
        with self.assertRaises(ConfigError) as ctx:
            load_config({"llm_targets": [{"name": "x", "kind": "azure_openai", "model": "gpt-4o"}]})
        self.assertIn("llm_targets.0: base_url is required (azure_openai: base_url or resource)", str(ctx.exception))
        load_config({"llm_targets": [target]})


class AccountTest(unittest.TestCase):
    def test_the_default_account_is_host_and_key_hash_never_the_key(self):
        a = {"kind": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-secret-abcdef123456"}
        same_key_other_model = dict(a, model="gpt-4o")
        other_key = dict(a, api_key="sk-secret-zzzzzz999999")
        self.assertEqual(account_of(a), account_of(same_key_other_model))
        self.assertNotEqual(account_of(a), account_of(other_key))
        self.assertTrue(account_of(a).startswith("api.openai.com#"))
        for piece in (a["api_key"][i:i + 6] for i in range(len(a["api_key"]) - 5)):
            self.assertNotIn(piece, account_of(a))
        self.assertEqual(account_of(dict(a, account="acme-prod")), "acme-prod")
        self.assertEqual(account_of({"kind": "openai", "base_url": "http://h:1/v1"}), "h:1#nokey")


class AzureRerouteContract(ProviderServerMixin, StoreBackendMixin):
    """Two Azure regions (two resources) and an OpenAI fallback, as docs/llm.md configures them."""

    def setUp(self):
        super(AzureRerouteContract, self).setUp()
        self.server.add_endpoint("east", "azure_openai", EAST_KEY, region="eastus", models=["gpt-4o", "gpt-4o-mini"])
        self.server.add_endpoint("west", "azure_openai", WEST_KEY, region="westeurope", models=["gpt-4o"])
        self.server.add_endpoint("oa", "openai", OPENAI_KEY, region="us")
        self.base_config = {
            "llm_targets": [
                dict(self.server.target("east", name="azure-eastus"), priority=1, timeout_s=5),
                dict(self.server.target("east", name="azure-eastus-mini", model="gpt-4o-mini"), priority=2,
                     timeout_s=5),
                dict(self.server.target("west", name="azure-westeurope"), priority=3, timeout_s=5),
                dict(self.server.target("oa", name="openai"), priority=4, timeout_s=5),
            ],
            "retry": {"max_attempts": 3, "base_delay_s": 1, "max_delay_s": 4, "jitter": "none",
                      "retry_after_cap_s": 30, "quota_after_s": 3600},
        }
        self.settings = self.make_settings()
        self.store = self.make_store()
        self.slept = []

    def serve(self, targets=None):
        chain = resolve_chain(self.settings, targets)

        def call(name):
            return call_llm(self.settings.llm_target(name), USER, max_tokens=16)

        self.log = []
        return fastpath.serve(self.settings, self.store, chain, make_policy(self.settings), call,
                              sleep=self.slept.append, log=self.log.append)

    def breakers(self):
        return Breakers(self.store, self.settings.section("circuit_breaker"))

    def test_a_regional_429_over_the_cap_moves_to_the_next_region_at_once(self):
        self.server.script("east", [{"fault": "rate_limit", "retry_after": 300}])
        result = self.serve(["azure-eastus", "azure-westeurope", "openai"])
        self.assertEqual((result["served_by"], result["calls"], self.slept, result["alerts"]),
                         ("azure-westeurope", 2, [], []))
        self.assertTrue(280 < self.breakers().status("azure-eastus")["cooling_for_s"] <= 300)
        # The next request skips the cooling region without calling it.
        again = self.serve(["azure-eastus", "azure-westeurope", "openai"])
        self.assertEqual((again["served_by"], again["skipped"][0]["target"]), ("azure-westeurope", "azure-eastus"))
        self.assertEqual(len(self.server.calls("east")), 1)

    def test_a_wait_over_the_cap_with_no_region_left_gives_up_without_waiting(self):
        self.server.script("east", [{"fault": "rate_limit", "retry_after": 300}])
        first = self.serve(["azure-eastus"])
        self.assertEqual((first["action"], first["calls"], first["handed_back"], self.slept), ("give_up", 1, False, []))
        # The next request neither calls the cooling region nor waits 300 s for it.
        second = self.serve(["azure-eastus"])
        self.assertEqual((second["action"], second["calls"], second["handed_back"]), ("give_up", 0, False))
        self.assertTrue(second["skipped"][0]["why"].startswith("cooling down (rate_limited) for "))

    def test_a_short_azure_429_is_waited_out_in_the_same_region(self):
        self.server.script("east", [{"fault": "rate_limit", "retry_after": 2, "retry_after_ms": 1500}])
        result = self.serve()
        self.assertEqual((result["served_by"], self.slept), ("azure-eastus", [1.5]))

    def test_deployment_not_found_fails_over_and_alerts(self):
        self.server.script("east", [{"fault": "not_found"}])
        result = self.serve(["azure-eastus", "azure-westeurope"])
        self.assertEqual(result["served_by"], "azure-westeurope")
        (alert,) = result["alerts"]
        self.assertEqual((alert["target"], alert["error_class"], alert["provider"]),
                         ("azure-eastus", "auth_config", "azure_openai"))

    def test_quota_opens_every_target_of_the_account_at_once(self):
        # Both eastus targets are deployments on one resource and key: one account.
        self.server.script("east", ["quota"])
        result = self.serve()
        self.assertEqual((result["served_by"], len(self.server.calls("east"))), ("azure-westeurope", 1))
        (alert,) = result["alerts"]
        account = account_of(self.settings.llm_target("azure-eastus"))
        self.assertEqual((alert["account"], alert["account_targets_opened"]), (account, ["azure-eastus-mini"]))
        self.assertNotIn(EAST_KEY, json.dumps(result))
        for name in ("azure-eastus", "azure-eastus-mini"):
            status = self.breakers().status(name)
            self.assertEqual(status["state"], "open", name)
        self.assertEqual(self.breakers().status("azure-westeurope")["state"], "closed")
        # A request for the mini deployment does not burn a call on the exhausted account.
        mini = self.serve(["azure-eastus-mini", "openai"])
        self.assertEqual((mini["served_by"], mini["calls"]), ("openai", 1))
        self.assertTrue(mini["skipped"][0]["why"].startswith(
            "circuit open (quota_exhausted on azure-eastus (account %s))" % account))
        self.assertEqual(len(self.server.calls("east")), 1)

    def test_a_spend_cap_429_with_a_wait_of_days_is_a_quota_for_that_long(self):
        days = 3 * 86400
        self.server.script("east", [{"fault": "rate_limit", "retry_after": days}])
        result = self.serve()
        self.assertEqual(result["served_by"], "azure-westeurope")
        (alert,) = result["alerts"]
        self.assertEqual(alert["error_class"], "quota_exhausted")
        self.assertTrue(self.log[0].startswith("[Retry] attempt 1 target=azure-eastus ok=False status=429 "
                                               "class=quota_exhausted -> next_target"), self.log[0])
        self.assertTrue(alert["error_message"].startswith("asked to wait 259200s, over quota_after_s 3600s: a quota; "
                                                          "HTTP 429 429: Requests to the"), alert["error_message"])
        for name in ("azure-eastus", "azure-eastus-mini"):
            status = self.breakers().status(name)
            self.assertEqual(status["state"], "open")
            self.assertTrue(days - 60 < status["open_for_s"] <= days, status)

    def test_an_explicit_account_groups_targets_across_resources(self):
        config = self.make_config()
        for target in config["llm_targets"][:3]:
            target["account"] = "contoso-azure"
        self.settings = load_config(config)
        self.server.script("east", ["auth"])
        result = self.serve()
        self.assertEqual((result["served_by"], result["alerts"][0]["account"]), ("openai", "contoso-azure"))
        self.assertEqual(result["alerts"][0]["account_targets_opened"], ["azure-eastus-mini", "azure-westeurope"])
        self.assertEqual(len(self.server.calls("west")), 0)


on_both_backends(AzureRerouteContract, "{backend}AzureRerouteTest")


if __name__ == "__main__":
    unittest.main()
