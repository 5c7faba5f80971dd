"""The one redaction path: configured secrets and credential shapes, scrubbed before any cut."""

import unittest

import synthralos_tests  # noqa: F401  (import paths and the st2 stand-in first)

from synthralos_lib.state.redaction import scrub, scrub_and_cap, scrub_text


class CredentialShapesTest(unittest.TestCase):
    CASES = [
        ("Authorization: Bearer sk-live-4f9a8b7c6d", "Authorization: Bearer ***"),
        ("retry with bearer eyJhbGciOiJIUzI1NiJ9.payload", "retry with bearer ***"),
        ("redis://default:hunter2pass@cache:6379/0", "redis://default:***@cache:6379/0"),
        ("GET /v1?api_key=abcd1234efgh&page=2", "GET /v1?api_key=***&page=2"),
        ('{"write_key": "2Xyzzy9PlughQ"}', '{"write_key": "***"}'),
        # The closing bracket of the surrounding text is not part of the key.
        ("API key refused (401 invalid x-api-key: sk-ant-9f8e7d6c)", "API key refused (401 invalid x-api-key: ***)"),
        ("[password=swordfish99]", "[password=***]"),
        ("nothing secret here: 42 tokens", "nothing secret here: 42 tokens"),
    ]

    def test_shapes(self):
        self.assertEqual([scrub_text(text) for text, _ in self.CASES], [expected for _, expected in self.CASES])

    def test_scrubbing_scrubbed_text_changes_nothing(self):
        # A log line can pass several handlers' redacting filters.
        once = [scrub_text(text) for text, _ in self.CASES]
        self.assertEqual([scrub_text(text) for text in once], once)
        self.assertEqual(scrub_text("Authorization: Basic ***, authorization=token ***"),
                         "Authorization: Basic ***, authorization=token ***")

    def test_configured_secrets_and_dict_keys(self):
        self.assertEqual(scrub({"s3cr3t-value": ["x s3cr3t-value y", 7]}, ["s3cr3t-value"]), {"***": ["x *** y", 7]})

    def test_scrubbed_before_it_is_cut(self):
        secret = "wk_2Xyzzy9PlughQ0123456789"
        capped = scrub_and_cap("refused: " + secret + " (401)", 20, [secret])
        self.assertEqual(capped, "refused: *** (401)")
        self.assertEqual(scrub_and_cap("x" * 50 + secret, 30, [secret]), "x" * 27 + "...")
        self.assertNotIn(secret[:6], scrub_and_cap(secret * 3, 10, [secret]))


if __name__ == "__main__":
    unittest.main()
