"""Every retry signal a provider sends, table-driven, in the providers' own answer shapes.

Each row is a real answer (status, headers, body as the provider's docs and
issue trackers show it) served by the provider server on loopback; `call_llm`
reads it, and `llm_policy.decide` turns it into a decision on a two-target
chain. `x-should-retry` is the server's verdict over the status code (the
official OpenAI and Anthropic SDKs obey it the same way); waits come from
`retry-after-ms`, `x-ms-retry-after-ms`, `Retry-After` (seconds or HTTP-date)
or, failing those, from the message; a wait over `retry_after_cap_s` moves on
at once, a wait over `quota_after_s` is a quota.
"""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import email.utils
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from synthralos_lib.llm import errors as E
from synthralos_lib.llm import policy as P
from synthralos_lib.llm.client import call_llm
from synthralos_tests.llm_provider import ProviderServerMixin

USER = [{"role": "user", "content": "Say hello"}]
DAYS_3_MS = str(3 * 86400 * 1000)

_ANTHROPIC_RATE = {"type": "error", "error": {
    "type": "rate_limit_error",
    "message": "This request would exceed the rate limit for your organization of 50,000 input tokens per minute. "
               "For details, refer to: https://docs.claude.com/en/api/rate-limits."}}
_OPENAI_TPM = {"error": {
    "message": "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used "
               "29876, Requested 1200. Please try again in 2.152s. Visit https://platform.openai.com/account/"
               "rate-limits to learn more.",
    "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}
_GROQ_TPM = {"error": {
    "message": "Rate limit reached for model `llama-3.3-70b-versatile` in organization `org_01` service tier "
               "`on_demand` on tokens per minute (TPM): Limit 12000, Used 11800, Requested 1300. Please try again "
               "in 1m30s. Need more tokens? Upgrade to Dev Tier today at https://console.groq.com/settings/billing",
    "type": "tokens", "code": "rate_limit_exceeded"}}
_AZURE_429 = {"error": {
    "code": "429",
    "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have "
               "exceeded token rate limit of your current AIServices S0 pricing tier. Please retry after 20 "
               "seconds. Please contact Azure support service if you would like to further increase the default "
               "rate limit."}}

# (name, endpoint, status, headers, body, class, retry_after_s, should_retry, decision on [endpoint, spare])
TABLE = [
    ("openai TPM: the wait only in the message", "oa", 429, {}, _OPENAI_TPM,
     E.RATE_LIMITED, 2.152, None, ("retry", 2.152)),
    ("openai retry-after-ms wins over retry-after", "oa", 429, {"retry-after": "2", "retry-after-ms": "1500"},
     _OPENAI_TPM, E.RATE_LIMITED, 1.5, None, ("retry", 1.5)),
    ("openai insufficient_quota", "oa", 429, {"x-should-retry": "false"}, {"error": {
        "message": "You exceeded your current quota, please check your plan and billing details. For more "
                   "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}},
     E.QUOTA_EXHAUSTED, None, False, ("next_target", 0.0)),
    ("openai 500 with x-should-retry: false moves on", "oa", 500, {"x-should-retry": "false"}, {"error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error", "param": None, "code": None}},
     E.TRANSIENT, None, False, ("next_target", 0.0)),
    ("openai 400 with x-should-retry: true is retried", "oa", 400, {"x-should-retry": "true"}, {"error": {
        "message": "Invalid value for 'temperature'.", "type": "invalid_request_error", "param": "temperature",
        "code": None}},
     E.BAD_REQUEST, None, True, ("retry", 1.0)),
    ("groq: 1m30s in the message", "oa", 429, {}, _GROQ_TPM, E.RATE_LIMITED, 90.0, None, ("retry", 90.0)),
    ("anthropic 429 retry-after + x-should-retry: true", "an", 429,
     {"retry-after": "15", "x-should-retry": "true", "anthropic-ratelimit-input-tokens-remaining": "0"},
     _ANTHROPIC_RATE, E.RATE_LIMITED, 15.0, True, ("retry", 15.0)),
    ("anthropic spend cap: rate_limit_error with retry-after-ms of days", "an", 429,
     {"retry-after-ms": DAYS_3_MS, "retry-after": str(3 * 86400)}, _ANTHROPIC_RATE,
     E.RATE_LIMITED, 3 * 86400.0, None, ("next_target", 0.0, E.QUOTA_EXHAUSTED)),
    ("anthropic 400 usage limits", "an", 400, {"x-should-retry": "false"}, {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "You have reached your specified API usage limits. You will regain access on 2027-01-01 at "
                   "00:00 UTC."}},
     E.QUOTA_EXHAUSTED, None, False, ("next_target", 0.0)),
    ("anthropic 529 overloaded, x-should-retry: true", "an", 529, {"x-should-retry": "true"},
     {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
     E.OVERLOADED, None, True, ("retry", 1.0)),
    ("anthropic 500 api_error, x-should-retry: false", "an", 500, {"x-should-retry": "false"},
     {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}},
     E.TRANSIENT, None, False, ("next_target", 0.0)),
    ("openrouter 402 insufficient credits", "oa", 402, {}, {"error": {
        "code": 402, "message": "This request requires more credits, or fewer max_tokens. You requested up to 4096 "
                                "tokens, but can only afford 1234. To increase, visit https://openrouter.ai/settings/"
                                "credits and upgrade to a paid account"}},
     E.QUOTA_EXHAUSTED, None, None, ("next_target", 0.0)),
    ("azure 429: retry-after + retry-after-ms", "az", 429, {"retry-after": "20", "retry-after-ms": "19500"},
     _AZURE_429, E.RATE_LIMITED, 19.5, None, ("retry", 19.5)),
    ("azure 429: x-ms-retry-after-ms only", "az", 429, {"x-ms-retry-after-ms": "5500"}, _AZURE_429,
     E.RATE_LIMITED, 5.5, None, ("retry", 5.5)),
    ("azure 429: the wait only in the message", "az", 429, {}, _AZURE_429, E.RATE_LIMITED, 20.0, None,
     ("retry", 20.0)),
    ("azure 429 over the cap: cool and move on at once", "az", 429, {"retry-after": "300"}, _AZURE_429,
     E.RATE_LIMITED, 300.0, None, ("next_target", 0.0)),
    ("azure DeploymentNotFound", "az", 404, {}, {"error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the deployment within the "
                   "last 5 minutes, please wait a moment and try again."}},
     E.AUTH_CONFIG, None, None, ("next_target", 0.0)),
    ("azure content filter", "az", 400, {}, {"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                   "policy. Please modify your prompt and retry.",
        "type": None, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation",
                       "content_filter_result": {"violence": {"filtered": True, "severity": "medium"}}}}},
     E.CONTENT_POLICY, None, None, ("next_target", 0.0)),
    ("a proxy's 503 HTML with Retry-After seconds", "oa", 503, {"retry-after": "7"},
     "<html><body><h1>503 Service Unavailable</h1></body></html>", E.TRANSIENT, 7.0, None, ("retry", 7.0)),
]


class SignalTableTest(ProviderServerMixin, unittest.TestCase):
    def setUp(self):
        super(SignalTableTest, self).setUp()
        self.server.add_endpoint("oa", "openai", "sk-sig-openai-1111")
        self.server.add_endpoint("an", "anthropic", "sk-ant-sig-2222")
        self.server.add_endpoint("az", "azure_openai", "az-sig-key-3333")

    def answer(self, endpoint, status, headers, body):
        self.server.script(endpoint, [{"fault": "raw", "status": status, "headers": headers, "body": body}])
        return call_llm(self.server.target(endpoint), USER, max_tokens=16)

    def test_the_table(self):
        policy = P.make_policy(overrides={"jitter": "none"})
        for name, endpoint, status, headers, body, klass, wait, verdict, decision in TABLE:
            with self.subTest(name):
                out = self.answer(endpoint, status, headers, body)
                self.assertEqual((out["status"], out["error_class"], out["should_retry"]), (status, klass, verdict))
                if wait is None:
                    self.assertIsNone(out["retry_after_s"])
                else:
                    self.assertAlmostEqual(out["retry_after_s"], wait, places=3)
                d = P.decide([], out, policy, [endpoint, "spare"], rand=1.0)
                self.assertEqual((d["action"], d["delay_s"]), decision[:2], d["reason"])
                if len(decision) > 2:
                    self.assertEqual(d["error_class"], decision[2])
                self.assertEqual(d["alert"], d["error_class"] in (E.QUOTA_EXHAUSTED, E.AUTH_CONFIG))

    def test_retry_after_as_an_http_date(self):
        self.server.script("oa", [{"fault": "unavailable", "retry_after_date": 30}])
        out = call_llm(self.server.target("oa"), USER, max_tokens=16)
        self.assertEqual(out["error_class"], E.TRANSIENT)
        self.assertTrue(27 <= out["retry_after_s"] <= 30, out["retry_after_s"])  # whole-second dates, a busy box

    def test_the_server_adds_x_should_retry_to_its_own_faults(self):
        self.server.script("an", [{"fault": "overloaded", "should_retry": False}])
        out = call_llm(self.server.target("an"), USER, max_tokens=16)
        self.assertEqual((out["status"], out["error_class"], out["should_retry"]), (529, E.OVERLOADED, False))
        d = P.decide([], out, P.make_policy(), ["an", "spare"])
        self.assertEqual((d["action"], d["target"]), ("next_target", "spare"))
        self.assertEqual(d["reason"], "overloaded on an, x-should-retry: false; next target spare")


_HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)


class HostileAnswerTest(ProviderServerMixin, unittest.TestCase):
    """Whatever a provider (or a proxy in front of it) answers, the outcome is well-formed and the
    decision is one of the four, with a finite, bounded wait."""

    def setUp(self):
        super(HostileAnswerTest, self).setUp()
        self.server.add_endpoint("oa", "openai", "sk-hostile-9z8y7x")

    @settings(max_examples=60, deadline=None)
    @given(st.integers(400, 599),
           st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms", "x-ms-retry-after-ms",
                                            "x-should-retry"]), _HEADER_TEXT, max_size=4),
           st.one_of(st.text(max_size=300), st.fixed_dictionaries({"error": st.fixed_dictionaries({
               "message": st.text(max_size=200), "code": st.one_of(st.none(), st.text(max_size=20)),
               "type": st.one_of(st.none(), st.text(max_size=20))})})))
    def test_any_error_answer(self, status, headers, body):
        self.server.script("oa", [{"fault": "raw", "status": status, "headers": headers, "body": body}])
        out = call_llm(self.server.target("oa"), USER, max_tokens=16)
        self.assertEqual((out["ok"], out["status"]), (False, status))
        self.assertIn(out["error_class"], E.ERROR_CLASSES)
        self.assertIn(out["should_retry"], (None, True, False))
        wait = out["retry_after_s"]
        self.assertTrue(wait is None or 0 <= wait <= E.MAX_WAIT_S, wait)
        self.assertLessEqual(len(out["error_message"]), 500)
        d = P.decide([], out, P.make_policy(), ["oa", "spare"], rand=0.5)
        self.assertIn(d["action"], ("retry", "next_target", "give_up"))
        self.assertTrue(0 <= d["delay_s"] <= 120, d)


class WaitParsingTest(unittest.TestCase):
    def test_messages(self):
        for message, wait in [
            ("Please try again in 5.289s.", 5.289),
            ("Please try again in 6ms.", 0.006),
            ("Please retry after 20 seconds.", 20.0),
            ("Please try again in 1m30s", 90.0),
            ("Rate limit. Please try again in 1m49.44s. Visit x", 109.44),
            ("Please retry in 37.892s", 37.892),
            ("retry after 2 minutes", 120.0),
            ("Try again in 2 hours", 7200.0),
            ("try again in 3 days", 259200.0),
            ("please wait a moment and try again.", None),
            ("try again later", None),
            ("wait 5 months", None),
            ("", None),
            (None, None),
        ]:
            with self.subTest(message):
                self.assertEqual(E.wait_in_message(message), wait)

    def test_header_precedence_and_garbage(self):
        now = 1_800_000_000.0
        date = email.utils.formatdate(now + 42, usegmt=True)
        cases = [
            ({"retry-after-ms": "250", "x-ms-retry-after-ms": "900", "retry-after": "3"}, 0.25),
            ({"x-ms-retry-after-ms": "900", "retry-after": "3"}, 0.9),
            ({"Retry-After": "3"}, 3.0),
            ({"retry-after": date}, 42.0),
            ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past
            ({"retry-after-ms": "NaN", "retry-after": "nonsense"}, None),
            ({"x-ms-retry-after-ms": "-5"}, 0.0),
            ({}, None),
        ]
        for headers, wait in cases:
            with self.subTest(headers):
                self.assertEqual(E.parse_retry_after(headers, now=now), wait)

    def test_an_absurd_wait_is_capped_at_a_year(self):
        wait, verdict = E.retry_signals({"retry-after-ms": "1e20"}, "")
        self.assertEqual((wait, verdict), (E.MAX_WAIT_S, None))
        self.assertEqual(E.retry_signals({}, "Please try again in 99999999999 days")[0], E.MAX_WAIT_S)

    def test_should_retry_header(self):
        for value, verdict in [("true", True), ("false", False), ("TRUE", True), (" false ", False), ("1", None),
                               ("", None), (None, None)]:
            headers = {} if value is None else {"X-Should-Retry": value}
            self.assertEqual(E.should_retry_header(headers), verdict, value)

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=300))
    def test_any_message_gives_a_finite_non_negative_wait_or_none(self, text):
        wait = E.wait_in_message(text)
        self.assertTrue(wait is None or (0 <= wait < float("inf")), wait)


def _fail(klass, should_retry=None, retry_after=None, target="a"):
    return {"target": target, "ok": False, "error_class": klass, "retry_after_s": retry_after,
            "should_retry": should_retry}


class VerdictPolicyTest(unittest.TestCase):
    """The server's verdict, as properties over every class and wait."""

    classes = st.sampled_from(E.ERROR_CLASSES)
    waits = st.one_of(st.none(), st.floats(0, 10 ** 6, allow_nan=False))

    @settings(max_examples=300, deadline=None)
    @given(classes, waits, st.floats(0, 1))
    def test_false_never_retries_the_same_target(self, klass, wait, rand):
        d = P.decide([], _fail(klass, False, wait), P.make_policy(), ["a", "b"], rand=rand)
        self.assertNotEqual(d["action"], "retry")
        self.assertEqual(d["target"], None if klass == E.BAD_REQUEST else "b")  # a bad request fails anywhere

    @settings(max_examples=300, deadline=None)
    @given(classes, st.one_of(st.none(), st.floats(0, 120, allow_nan=False)), st.floats(0, 1))
    def test_true_retries_the_same_target_within_max_attempts(self, klass, wait, rand):
        policy = P.make_policy()
        d = P.decide([], _fail(klass, True, wait), policy, ["a", "b"], rand=rand)
        if klass in (E.OVERLOADED, E.INVALID_OUTPUT):  # their own, shorter attempt limits still hold
            self.assertIn(d["action"], ("retry", "next_target"))
        else:
            self.assertEqual((d["action"], d["target"]), ("retry", "a"))
        history = [_fail(klass, True)] * (policy["max_attempts"] - 1)
        last = P.decide(history, _fail(klass, True, wait), policy, ["a", "b"], rand=rand)
        self.assertEqual((last["action"], last["target"]), ("next_target", "b"))

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from([E.RATE_LIMITED, E.OVERLOADED, E.TRANSIENT]), st.floats(0, 10 ** 7, allow_nan=False))
    def test_waits_by_length(self, klass, wait):
        policy = P.make_policy(overrides={"retry_after_cap_s": 120, "quota_after_s": 3600})
        d = P.decide([], _fail(klass, None, wait), policy, ["a", "b"], rand=0.5)
        if wait <= 120:
            self.assertEqual((d["action"], d["delay_s"]), ("retry", wait))
        else:
            self.assertEqual((d["action"], d["target"], d["delay_s"]), ("next_target", "b", 0.0))
        quota = wait > 3600 and klass != E.TRANSIENT  # a 503 announcing hours of maintenance is no quota
        self.assertEqual(d["error_class"], E.QUOTA_EXHAUSTED if quota else klass)
        self.assertEqual(d["alert"], quota)


if __name__ == "__main__":
    unittest.main()
