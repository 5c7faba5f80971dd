"""Table-driven tests of the LLM error classification (llm/errors.py; docs/llm.md, "Classification").

Each row is a real provider answer: status code and the error body the
provider documents (OpenAI `{"error": {...}}`, Anthropic `{"type": "error",
"error": {...}}`), or a network exception.
"""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import socket
import unittest

import requests

from synthralos_lib.llm import errors as E


def openai(message, type_, code=None, param=None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic(type_, message):
    return {"type": "error", "error": {"type": type_, "message": message}}


HTTP_CASES = [
    # (name, status, body, expected class)
    # OpenAI
    ("openai 429 rate limit", 429, openai("Rate limit reached for gpt-4o in organization org-x on requests per min "
                                          "(RPM): Limit 500, Used 500.", "requests", "rate_limit_exceeded"),
     E.RATE_LIMITED),
    ("openai 429 tokens rate limit", 429, openai("Rate limit reached ... on tokens per min (TPM)", "tokens",
                                                 "rate_limit_exceeded"), E.RATE_LIMITED),
    ("openai 429 insufficient_quota", 429, openai("You exceeded your current quota, please check your plan and "
                                                  "billing details.", "insufficient_quota", "insufficient_quota"),
     E.QUOTA_EXHAUSTED),
    ("openai 400 billing hard limit", 400, openai("Billing hard limit has been reached", "invalid_request_error",
                                                  "billing_hard_limit_reached"), E.QUOTA_EXHAUSTED),
    ("openai 401 invalid key", 401, openai("Incorrect API key provided: sk-abc.", "invalid_request_error",
                                           "invalid_api_key"), E.AUTH_CONFIG),
    ("openai 403 region", 403, openai("Country, region, or territory not supported", "request_forbidden",
                                      "unsupported_country_region_territory"), E.AUTH_CONFIG),
    ("openai 404 model not found", 404, openai("The model `gpt-9` does not exist or you do not have access to it.",
                                               "invalid_request_error", "model_not_found"), E.AUTH_CONFIG),
    ("openai 400 context length", 400, openai("This model's maximum context length is 128000 tokens. However, your "
                                              "messages resulted in 130000 tokens.", "invalid_request_error",
                                              "context_length_exceeded", "messages"), E.CONTEXT_OVERFLOW),
    ("openai-compatible 400 context in prose only", 400, openai("This model's maximum context length is 8192 "
                                                                "tokens", "invalid_request_error"),
     E.CONTEXT_OVERFLOW),
    ("azure 400 content_filter", 400, openai("The response was filtered due to the prompt triggering Azure OpenAI's "
                                             "content management policy.", "invalid_request_error",
                                             "content_filter", "prompt"), E.CONTENT_POLICY),
    ("openai 400 content policy violation", 400, openai("Your request was rejected as a result of our safety "
                                                        "system.", "invalid_request_error",
                                                        "content_policy_violation"), E.CONTENT_POLICY),
    ("openai 400 invalid param", 400, openai("Invalid value for 'temperature'", "invalid_request_error", None,
                                             "temperature"), E.BAD_REQUEST),
    ("openai 422 unprocessable", 422, openai("Unprocessable entity", "invalid_request_error"), E.BAD_REQUEST),
    ("openai 500 server error", 500, openai("The server had an error while processing your request.",
                                            "server_error"), E.TRANSIENT),
    ("openai 503 overloaded", 503, openai("That model is currently overloaded with other requests.",
                                          "server_error"), E.OVERLOADED),
    ("openai 503 unavailable", 503, openai("The service is temporarily unavailable.", "server_error"), E.TRANSIENT),
    ("openai 502 html from proxy", 502, "<html><body>502 Bad Gateway</body></html>", E.TRANSIENT),
    ("openai 504", 504, None, E.TRANSIENT),
    ("408 request timeout", 408, None, E.TRANSIENT),
    ("409 conflict", 409, openai("Conflict", "invalid_request_error"), E.TRANSIENT),
    ("402 payment required", 402, openai("Payment required", "billing_error"), E.QUOTA_EXHAUSTED),
    ("418 other 4xx", 418, None, E.BAD_REQUEST),
    ("599 other 5xx", 599, None, E.TRANSIENT),
    # Anthropic
    ("anthropic 429 rate_limit_error", 429, anthropic("rate_limit_error", "This request would exceed your "
                                                      "organization's rate limit."), E.RATE_LIMITED),
    ("anthropic 529 overloaded_error", 529, anthropic("overloaded_error", "Overloaded"), E.OVERLOADED),
    ("anthropic 500 overloaded_error", 500, anthropic("overloaded_error", "Overloaded"), E.OVERLOADED),
    ("anthropic 500 api_error", 500, anthropic("api_error", "Internal server error"), E.TRANSIENT),
    ("anthropic 504 timeout_error", 504, anthropic("timeout_error", "Request timed out"), E.TRANSIENT),
    ("anthropic 401 authentication_error", 401, anthropic("authentication_error", "invalid x-api-key"),
     E.AUTH_CONFIG),
    ("anthropic 403 permission_error", 403, anthropic("permission_error", "Your API key does not have permission "
                                                      "to use the specified resource."), E.AUTH_CONFIG),
    ("anthropic 404 not_found_error", 404, anthropic("not_found_error", "model: claude-9"), E.AUTH_CONFIG),
    ("anthropic 400 credit balance", 400, anthropic("invalid_request_error", "Your credit balance is too low to "
                                                    "access the Anthropic API. Please go to Plans & Billing to "
                                                    "upgrade or purchase credits."), E.QUOTA_EXHAUSTED),
    ("anthropic 402 billing_error", 402, anthropic("billing_error", "Billing issue"), E.QUOTA_EXHAUSTED),
    ("anthropic 400 prompt too long", 400, anthropic("invalid_request_error", "prompt is too long: 210000 tokens > "
                                                     "200000 maximum"), E.CONTEXT_OVERFLOW),
    ("anthropic 400 context limit", 400, anthropic("invalid_request_error", "input length and `max_tokens` exceed "
                                                   "context limit: 199000 + 8192 > 200000"), E.CONTEXT_OVERFLOW),
    ("anthropic 413 request_too_large", 413, anthropic("request_too_large", "Request exceeds the maximum allowed "
                                                       "number of bytes."), E.CONTEXT_OVERFLOW),
    ("anthropic 400 invalid request", 400, anthropic("invalid_request_error", "max_tokens: Field required"),
     E.BAD_REQUEST),
    ("anthropic 400 max_tokens too big is not context", 400, anthropic("invalid_request_error",
                                                                       "max_tokens: 100000 > 8192, which is the "
                                                                       "maximum allowed number of output tokens"),
     E.BAD_REQUEST),
]


class HttpClassificationTest(unittest.TestCase):
    def test_table(self):
        for name, status, body, expected in HTTP_CASES:
            with self.subTest(name):
                self.assertEqual(E.classify_http(status, body), expected)

    def test_every_class_but_invalid_output_is_reachable_from_http(self):
        reached = {expected for _, _, _, expected in HTTP_CASES}
        self.assertEqual(reached, set(E.ERROR_CLASSES) - {E.INVALID_OUTPUT})

    def test_provider_error_shapes(self):
        self.assertEqual(E.provider_error(openai("m", "t", "c")), ("t", "c", "m"))
        self.assertEqual(E.provider_error(anthropic("overloaded_error", "Overloaded")),
                         ("overloaded_error", "", "Overloaded"))
        self.assertEqual(E.provider_error({"error": "plain string"}), ("", "", "plain string"))
        self.assertEqual(E.provider_error(b"  <html>bad</html> "), ("", "", "<html>bad</html>"))
        self.assertEqual(E.provider_error(None), ("", "", ""))
        self.assertEqual(E.provider_error({"detail": "x"}), ("", "", ""))


class ExceptionClassificationTest(unittest.TestCase):
    def test_table(self):
        cases = [
            (requests.exceptions.ConnectTimeout("connect timed out"), E.TRANSIENT),
            (requests.exceptions.ReadTimeout("read timed out"), E.TRANSIENT),
            (requests.exceptions.ConnectionError(ConnectionResetError(104, "Connection reset by peer")), E.TRANSIENT),
            (requests.exceptions.ConnectionError("Connection refused"), E.TRANSIENT),
            (requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"), E.TRANSIENT),
            (requests.exceptions.SSLError("CERTIFICATE_VERIFY_FAILED"), E.AUTH_CONFIG),
            (requests.exceptions.SSLError("The read operation timed out"), E.TRANSIENT),
            (requests.exceptions.MissingSchema("Invalid URL 'api.openai.com/v1'"), E.AUTH_CONFIG),
            (requests.exceptions.InvalidURL("Invalid URL"), E.AUTH_CONFIG),
            (requests.exceptions.InvalidSchema("No connection adapters"), E.AUTH_CONFIG),
            (socket.timeout("timed out"), E.TRANSIENT),
        ]
        for exc, expected in cases:
            with self.subTest(type(exc).__name__ + ": " + str(exc)):
                self.assertEqual(E.classify_exception(exc), expected)


class RetryAfterTest(unittest.TestCase):
    def test_table(self):
        now = 1700000000.0  # 2023-11-14T22:13:20Z
        cases = [
            (None, None),
            ({}, None),
            ({"Retry-After": "7"}, 7.0),
            ({"retry-after": "1.5"}, 1.5),
            ({"retry-after": " 20 "}, 20.0),
            ({"retry-after": "-3"}, 0.0),
            ({"retry-after-ms": "250"}, 0.25),
            ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
            ({"Retry-After-Ms": "bogus", "Retry-After": "2"}, 2.0),
            ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),
            ({"retry-after": "Tue, 14 Nov 2023 22:13:50 -0000"}, 30.0),
            ({"retry-after": "Tue, 14 Nov 2023 22:00:00 GMT"}, 0.0),  # in the past
            ({"retry-after": "soon"}, None),
            ({"retry-after": "nan"}, None),
            ({"retry-after": "inf"}, None),
        ]
        for headers, expected in cases:
            with self.subTest(headers=headers):
                self.assertEqual(E.parse_retry_after(headers, now=now), expected)

    def test_requests_case_insensitive_headers(self):
        headers = requests.structures.CaseInsensitiveDict({"Retry-After": "3"})
        self.assertEqual(E.parse_retry_after(headers), 3.0)


if __name__ == "__main__":
    unittest.main()
