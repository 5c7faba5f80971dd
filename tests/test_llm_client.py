"""Integration tests of `call_llm` against the fault-injecting provider server on loopback."""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import json
import socket
import unittest

import requests
from hypothesis import given, settings, strategies as st

from synthralos_lib.llm import errors as E
from synthralos_lib.llm.client import call_llm, normalize_messages
from synthralos_tests.llm_provider import ProviderServerMixin

OPENAI_KEY = "sk-test-openai-5f1c0a9e"
ANTHROPIC_KEY = "sk-ant-test-77d2b4c1"
USER = [{"role": "user", "content": "Say hello"}]


class ProviderTestCase(ProviderServerMixin, unittest.TestCase):
    def setUp(self):
        super(ProviderTestCase, self).setUp()
        self.server.add_endpoint("oa", "openai", OPENAI_KEY, region="us-east")
        self.server.add_endpoint("an", "anthropic", ANTHROPIC_KEY, region="eu-west")

    def call(self, endpoint, fault=None, **kwargs):
        if fault is not None:
            self.server.script(endpoint, [fault])
        target = self.server.target(endpoint)
        target.update(kwargs.pop("target_overrides", {}))
        return call_llm(target, kwargs.pop("messages", USER), **kwargs)

    def assertNoKey(self, outcome, key):
        self.assertNotIn(key, json.dumps(outcome))


class SuccessTest(ProviderTestCase):
    def test_openai_success(self):
        out = self.call("oa", system="Be brief.", max_tokens=64, temperature=0.2)
        self.assertEqual(out["ok"], True)
        self.assertEqual(out["content"], "Reply from oa (gpt-4o-mini).")
        self.assertEqual(out["status"], 200)
        self.assertIsNone(out["error_class"])
        self.assertIsNone(out["error_message"])
        self.assertIsNone(out["retry_after_s"])
        # prompt "Be brief.Say hello" = 18 chars -> 4 tokens; reply 28 chars -> 7 tokens
        self.assertEqual(out["usage"], {"input_tokens": 4, "output_tokens": 7, "total_tokens": 11})
        self.assertEqual((out["target"], out["provider"], out["model"], out["region"]),
                         ("oa", "openai", "gpt-4o-mini", "us-east"))
        self.assertGreater(out["latency_s"], 0)
        self.assertEqual(self.server.faults_served("oa"), ["ok"])

    def test_anthropic_success_sends_system_separately(self):
        messages = [{"role": "system", "content": "Be brief."}] + USER
        out = self.call("an", messages=messages)
        self.assertEqual(out["ok"], True, out)
        self.assertEqual(out["content"], "Reply from an (claude-3-5-haiku-latest).")
        self.assertEqual(out["usage"], {"input_tokens": 4, "output_tokens": 10, "total_tokens": 14})
        self.assertEqual((out["provider"], out["region"]), ("anthropic", "eu-west"))

    def test_exact_keys(self):
        out = self.call("oa")
        self.assertEqual(sorted(out), sorted([
            "ok", "content", "usage", "latency_s", "status", "error_class", "error_message", "retry_after_s",
            "should_retry", "target", "provider", "model", "region", "account"]))


class ProviderErrorTest(ProviderTestCase):
    def test_error_table(self):
        cases = [
            # endpoint, fault, status, class
            ("oa", {"fault": "rate_limit", "retry_after": 2, "retry_after_ms": 1500}, 429, E.RATE_LIMITED),
            ("oa", "quota", 429, E.QUOTA_EXHAUSTED),
            ("oa", "server_error", 500, E.TRANSIENT),
            ("oa", "bad_gateway", 502, E.TRANSIENT),
            ("oa", "unavailable", 503, E.TRANSIENT),
            ("oa", "gateway_timeout", 504, E.TRANSIENT),
            ("oa", "overloaded", 503, E.OVERLOADED),
            ("oa", "auth", 401, E.AUTH_CONFIG),
            ("oa", "forbidden", 403, E.AUTH_CONFIG),
            ("oa", "not_found", 404, E.AUTH_CONFIG),
            ("oa", "context_overflow", 400, E.CONTEXT_OVERFLOW),
            ("oa", "content_filter", 400, E.CONTENT_POLICY),
            ("oa", "refusal", 200, E.CONTENT_POLICY),
            ("oa", "bad_request", 400, E.BAD_REQUEST),
            ("oa", "malformed", 200, E.INVALID_OUTPUT),
            ("oa", "empty", 200, E.INVALID_OUTPUT),
            ("an", {"fault": "rate_limit", "retry_after": 3}, 429, E.RATE_LIMITED),
            ("an", "quota", 400, E.QUOTA_EXHAUSTED),
            ("an", "overloaded", 529, E.OVERLOADED),
            ("an", "server_error", 500, E.TRANSIENT),
            ("an", "auth", 401, E.AUTH_CONFIG),
            ("an", "forbidden", 403, E.AUTH_CONFIG),
            ("an", "not_found", 404, E.AUTH_CONFIG),
            ("an", "context_overflow", 400, E.CONTEXT_OVERFLOW),
            ("an", "refusal", 200, E.CONTENT_POLICY),
            ("an", "bad_request", 400, E.BAD_REQUEST),
            ("an", "malformed", 200, E.INVALID_OUTPUT),
            ("an", "empty", 200, E.INVALID_OUTPUT),
        ]
        for endpoint, fault, status, klass in cases:
            with self.subTest(endpoint=endpoint, fault=fault):
                out = self.call(endpoint, fault)
                self.assertEqual((out["ok"], out["status"], out["error_class"]), (False, status, klass))
                self.assertTrue(out["error_message"])

    def test_retry_after_ms_wins_for_openai(self):
        out = self.call("oa", {"fault": "rate_limit", "retry_after": 2, "retry_after_ms": 1500})
        self.assertEqual(out["retry_after_s"], 1.5)
        self.assertEqual(out["error_message"], "HTTP 429 requests/rate_limit_exceeded: Rate limit reached for requests")

    def test_retry_after_seconds_for_anthropic(self):
        out = self.call("an", {"fault": "rate_limit", "retry_after": 3})
        self.assertEqual(out["retry_after_s"], 3.0)
        self.assertEqual(out["error_message"], "HTTP 429 rate_limit_error: This request would exceed your "
                                               "organization's rate limit. Please try again later.")

    def test_rate_limit_without_retry_after(self):
        out = self.call("oa", "rate_limit")
        self.assertEqual((out["error_class"], out["retry_after_s"]), (E.RATE_LIMITED, None))

    def test_real_rate_limit_enforced_by_server(self):
        self.server.set_rate_limit("oa", 2, 60)
        results = [self.call("oa") for _ in range(3)]
        self.assertEqual([r["ok"] for r in results], [True, True, False])
        self.assertEqual(results[2]["error_class"], E.RATE_LIMITED)
        self.assertGreater(results[2]["retry_after_s"], 55)
        self.assertLessEqual(results[2]["retry_after_s"], 60)

    def test_quota_message_names_the_code(self):
        out = self.call("oa", "quota")
        self.assertEqual(out["error_message"], "HTTP 429 insufficient_quota: You exceeded your current quota, please "
                                               "check your plan and billing details.")


class CredentialTest(ProviderTestCase):
    def test_wrong_openai_key_401_and_never_echoed(self):
        wrong = "sk-wrong-key-0123456789"
        out = self.call("oa", target_overrides={"api_key": wrong})
        self.assertEqual((out["ok"], out["status"], out["error_class"]), (False, 401, E.AUTH_CONFIG))
        # The server echoes the presented key in its message; the client scrubs it.
        self.assertEqual(out["error_message"], "HTTP 401 invalid_request_error/invalid_api_key: Incorrect API key "
                                               "provided: ***. You can find your API key at "
                                               "https://platform.openai.com/account/api-keys.")
        self.assertNoKey(out, wrong)
        self.assertEqual(self.server.faults_served("oa"), ["auth"])

    def test_wrong_anthropic_key_401_and_never_echoed(self):
        wrong = "sk-ant-wrong-99999999"
        out = self.call("an", target_overrides={"api_key": wrong})
        self.assertEqual((out["status"], out["error_class"]), (401, E.AUTH_CONFIG))
        self.assertEqual(out["error_message"], "HTTP 401 authentication_error: invalid x-api-key: ***")
        self.assertNoKey(out, wrong)

    def test_missing_key(self):
        out = self.call("oa", target_overrides={"api_key": ""})
        self.assertEqual((out["status"], out["error_class"]), (401, E.AUTH_CONFIG))

    def test_a_key_straddling_the_500_character_cut_leaks_no_piece(self):
        # A proxy's non-JSON error page echoing the key around character 500: scrubbed before the cut.
        key, other_secret = "sk-9Qz4Lm2Xv7Rt5Wp8Kd3Jh6Nb1Fc0Ys", "ag-3Hd8Pq1Zr6Tm4Vx9Lc2Wn7Bk5"
        self.server.add_endpoint("leaky", "openai", key)
        for secret, extra in ((key, ()), (other_secret, (other_secret,))):
            for offset in range(470, 506, 3):
                with self.subTest(secret=secret, offset=offset):
                    page = "<html><body>" + "x" * (offset - 12) + secret + " trailing text " * 10 + "</body></html>"
                    self.server.script("leaky", [{"fault": "raw", "status": 503, "body": page}])
                    out = call_llm(self.server.target("leaky"), USER, secrets=extra)
                    self.assertEqual((out["status"], out["error_class"]), (503, E.TRANSIENT))
                    self.assertLessEqual(len(out["error_message"]), 500)
                    text = json.dumps(out)
                    leaked = [secret[i:i + 6] for i in range(len(secret) - 5) if secret[i:i + 6] in text]
                    self.assertEqual(leaked, [])

    def test_content_echoing_the_key_is_scrubbed(self):
        out = self.call("oa", {"fault": "ok", "content": "your key is %s" % OPENAI_KEY})
        self.assertEqual(out["content"], "your key is ***")
        self.assertNoKey(out, OPENAI_KEY)


class NetworkFaultTest(ProviderTestCase):
    def test_hang_past_timeout(self):
        out = self.call("oa", {"fault": "hang", "delay_s": 10}, timeout_s=0.5)
        self.assertEqual((out["ok"], out["status"], out["error_class"]), (False, None, E.TRANSIENT))
        self.assertEqual(out["error_message"], "read timed out after 0.5s")
        self.assertGreaterEqual(out["latency_s"], 0.45)
        self.assertLess(out["latency_s"], 5)

    def test_target_timeout_is_the_default(self):
        out = self.call("an", {"fault": "hang", "delay_s": 10}, target_overrides={"timeout_s": 0.5})
        self.assertEqual(out["error_class"], E.TRANSIENT)
        self.assertLess(out["latency_s"], 5)

    def test_slow_answer_within_timeout_succeeds(self):
        out = self.call("oa", {"fault": "slow", "delay_s": 0.2}, timeout_s=5)
        self.assertEqual(out["ok"], True)
        self.assertGreaterEqual(out["latency_s"], 0.2)

    def test_dropped_connection(self):
        out = self.call("oa", "drop")
        self.assertEqual((out["ok"], out["status"], out["error_class"]), (False, None, E.TRANSIENT))
        self.assertTrue(out["error_message"].startswith("connection failed: "), out["error_message"])

    def test_hang_then_drop(self):
        out = self.call("an", {"fault": "hang", "delay_s": 0.2, "then": "drop"}, timeout_s=5)
        self.assertEqual((out["status"], out["error_class"]), (None, E.TRANSIENT))

    def test_connection_refused(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there now
        target = self.server.target("oa")
        target["base_url"] = "http://127.0.0.1:%d/v1" % port
        out = call_llm(target, USER, timeout_s=2)
        self.assertEqual((out["ok"], out["status"], out["error_class"]), (False, None, E.TRANSIENT))
        self.assertTrue(out["error_message"].startswith("connection failed: "))

    def test_malformed_json(self):
        out = self.call("oa", "malformed")
        self.assertEqual(out["error_message"], "HTTP 200 with a body that is not JSON")
        self.assertIsNone(out["content"])

    def test_outage_window(self):
        self.server.add_outage("oa", 0, 3600, "unavailable")
        out = self.call("oa")
        self.assertEqual((out["status"], out["error_class"]), (503, E.TRANSIENT))
        self.server.reset_clock()
        self.server.add_outage("an", -10, -5, "unavailable")  # already over
        self.assertEqual(self.call("an")["ok"], True)


class BadInputTest(ProviderTestCase):
    def test_bad_messages_fail_without_a_request(self):
        for messages in ([], [{"role": "tool", "content": "x"}], [{"role": "user", "content": 5}], " \n",
                         [{"role": "system", "content": "only system"}], {"role": "user"}, "[1, 2]",
                         '{"role": "robot", "content": "x"}', 7, None, USER * 1001):
            with self.subTest(messages=messages):
                out = self.call("oa", messages=messages)
                self.assertEqual((out["ok"], out["status"], out["error_class"]), (False, None, E.BAD_REQUEST))
        self.assertEqual(self.server.requests(), [])

    def test_a_person_may_give_plain_text_or_one_message(self):
        """What st2's web UI and CLI send for the untyped `messages` field: text, or JSON as text."""
        one = {"role": "user", "content": "Say hello"}
        for given in ("Say hello", one, json.dumps(one), json.dumps([one]), [one]):
            with self.subTest(given=given):
                self.assertEqual(self.call("oa", messages=given)["ok"], True)
                self.assertEqual(self.server.last_request().json["messages"], [one])
        for text in ("{name}, say hello", "[draft] say hello"):  # brackets, not JSON: still text
            self.assertEqual(self.call("an", messages=text)["ok"], True)
            self.assertEqual(self.server.last_request().json["messages"], [{"role": "user", "content": text}])

    def test_target_without_base_url_or_with_unknown_kind(self):
        out = self.call("oa", target_overrides={"base_url": ""})
        self.assertEqual((out["error_class"], out["error_message"]), (E.AUTH_CONFIG, "target 'oa' has no base_url"))
        out = self.call("oa", target_overrides={"kind": "cohere"})
        self.assertEqual(out["error_class"], E.AUTH_CONFIG)
        self.assertEqual(out["provider"], "cohere")

    def test_malformed_base_url(self):
        out = self.call("oa", target_overrides={"base_url": "api.example.com/v1"})
        self.assertEqual((out["status"], out["error_class"]), (None, E.AUTH_CONFIG))

    def test_unknown_model_is_404(self):
        self.server.reset()
        self.server.add_endpoint("oa", "openai", OPENAI_KEY, models=["gpt-4o"])
        out = self.call("oa")  # asks for gpt-4o-mini
        self.assertEqual((out["status"], out["error_class"]), (404, E.AUTH_CONFIG))
        self.assertEqual(out["error_message"], "HTTP 404 invalid_request_error/model_not_found: The model "
                                               "`gpt-4o-mini` does not exist or you do not have access to it.")


class ProviderServerTest(ProviderTestCase):
    """The fault-injecting server itself enforces what the real APIs enforce."""

    def post(self, endpoint, path, body, headers):
        return requests.post("%s/%s/v1/%s" % (self.server.url, endpoint, path), json=body, headers=headers, timeout=5)

    def test_anthropic_checks_version_header_and_system_role(self):
        key = {"x-api-key": ANTHROPIC_KEY}
        body = {"model": "claude-3-5-haiku-latest", "max_tokens": 10, "messages": USER}
        resp = self.post("an", "messages", body, key)
        self.assertEqual((resp.status_code, resp.json()), (400, {"type": "error", "error": {
            "type": "invalid_request_error", "message": "anthropic-version: header is required"}}))
        with_system = dict(body, messages=[{"role": "system", "content": "x"}] + USER)
        resp = self.post("an", "messages", with_system, dict(key, **{"anthropic-version": "2023-06-01"}))
        self.assertEqual(resp.status_code, 400)
        self.assertTrue(resp.json()["error"]["message"].startswith('messages: Unexpected role "system"'))
        resp = self.post("an", "messages", dict(body, max_tokens=None), dict(key, **{"anthropic-version": "2023-06-01"}))
        self.assertEqual(resp.json()["error"]["message"], "max_tokens: Field required")

    def test_openai_error_body_shape_and_headers(self):
        self.server.script("oa", [{"fault": "rate_limit", "retry_after": 2, "retry_after_ms": 1500}])
        resp = self.post("oa", "chat/completions", {"model": "m", "messages": USER},
                         {"authorization": "Bearer " + OPENAI_KEY})
        self.assertEqual(resp.status_code, 429)
        self.assertEqual(resp.json(), {"error": {"message": "Rate limit reached for requests", "type": "requests",
                                                 "param": None, "code": "rate_limit_exceeded"}})
        self.assertEqual((resp.headers["retry-after"], resp.headers["retry-after-ms"]), ("2", "1500"))
        self.assertTrue(resp.headers["x-request-id"].startswith("req_"))

    def test_wrong_route_and_unknown_endpoint(self):
        resp = self.post("oa", "messages", {}, {"authorization": "Bearer " + OPENAI_KEY})
        self.assertEqual(resp.status_code, 404)
        resp = self.post("nope", "chat/completions", {}, {})
        self.assertEqual(resp.status_code, 404)
        self.assertEqual(self.server.faults_served(), ["unknown_route", "unknown_endpoint"])
        self.assertEqual(len(self.server.requests()), 2)  # the stub server's raw request log

    def test_seeded_error_rate_is_reproducible(self):
        def run():
            self.server.reset()
            self.server.add_endpoint("oa", "openai", OPENAI_KEY)
            self.server.set_error_rate("oa", 0.3, ["server_error", "bad_gateway"], seed=3)
            return [self.call("oa")["status"] for _ in range(20)]

        first, second = run(), run()
        self.assertEqual(first, second)
        self.assertEqual(sorted(set(first)), [200, 500, 502])

    def test_unknown_fault_is_rejected(self):
        with self.assertRaises(ValueError):
            self.server.script("oa", ["explode"])


if __name__ == "__main__":
    unittest.main()


class NormalizeMessagesProperties(unittest.TestCase):
    @settings(max_examples=300, deadline=None, database=None)
    @given(st.text(max_size=200))
    def test_any_text_is_one_user_message_or_a_clear_error(self, text):
        try:
            messages = normalize_messages(text)
        except ValueError as exc:  # blank, or JSON that is not messages
            self.assertTrue(not text.strip() or text.lstrip()[:1] in "[{", (text, exc))
            return
        if text.lstrip()[:1] not in ("[", "{"):
            self.assertEqual(messages, [{"role": "user", "content": text}])
        for msg in messages:
            self.assertIn(msg["role"], ("user", "assistant", "system"))
            self.assertIsInstance(msg["content"], str)

    @settings(max_examples=200, deadline=None, database=None)
    @given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=12))
    def test_any_json_value_is_messages_or_a_clear_error(self, value):
        for given in (value, json.dumps(value)):
            try:
                messages = normalize_messages(given)
            except ValueError as exc:
                self.assertTrue(str(exc).startswith("messages"), exc)
                continue
            self.assertIsInstance(messages, list)
            self.assertTrue(messages)
