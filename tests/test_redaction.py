"""The one redaction path: configured secrets and credential shapes, scrubbed before any cut."""

import logging
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

import synthralos_tests  # noqa: F401  (import paths)

from synthralos_lib.ops.trace import guarded_logs
from synthralos_lib.state.redaction import (MAX_LOG_CHARS, RedactingFilter, hold_secrets, release_secrets, scrub,
                                            scrub_and_cap, scrub_result, scrub_text)

SECRET = "QxZ7wk9vLp3R"  # no character of it is in FILLER
FILLER = st.text(alphabet="ab cd.-_:/\n", max_size=400)


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
        # A name after "_" (where \b sees no word start) is still a credential's name.
        ("OPENAI_API_KEY=sk-abcd1234efgh", "OPENAI_API_KEY=***"),
        ("x_Bearer eyJhbGciOiJIUzI1NiJ9", "x_Bearer ***"),
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


class SecretsInForceTest(unittest.TestCase):
    def test_a_caller_without_secrets_still_scrubs_those_in_force(self):
        text = "x" * 20 + SECRET + "y" * 20
        self.assertIn(SECRET[:6], scrub_and_cap(text, 32))  # nothing in force: only shapes are known
        held = hold_secrets([SECRET])
        try:
            self.assertEqual(scrub_and_cap(text, 28), "x" * 20 + "***" + "yy...")
            again = hold_secrets([SECRET])  # a second holder (a nested guard)
            release_secrets(again)
            self.assertEqual(scrub_and_cap(text, 100), "x" * 20 + "***" + "y" * 20)
        finally:
            release_secrets(held)
        self.assertIn(SECRET[:6], scrub_and_cap(text, 32))

    def test_guarded_logs_holds_the_secrets_while_open(self):
        guard = guarded_logs(logging.getLogger("test_redaction"), [SECRET], trace_id="tr-" + SECRET)
        with guard:
            self.assertEqual(scrub_and_cap("k " + SECRET, 50), "k ***")
            self.assertEqual([f.suffix for f in guard.filters if hasattr(f, "suffix")], [" trace_id=tr-***"])
        self.assertEqual(scrub_and_cap("k " + SECRET, 50), "k " + SECRET)


class RedactingFilterTest(unittest.TestCase):
    def test_a_huge_line_is_scrubbed_then_cut(self):
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, "body: %s", ("b" * 40000 + SECRET,), None)
        RedactingFilter([SECRET[2:]]).filter(record)
        self.assertEqual(len(record.getMessage()), MAX_LOG_CHARS)
        self.assertTrue(record.getMessage().endswith("... [cut: %d characters in all]" % (6 + 40000 + 5)))
        record = logging.LogRecord("x", logging.WARNING, __file__, 1, "key %s here", (SECRET,), None)
        RedactingFilter([SECRET]).filter(record)
        self.assertEqual(record.getMessage(), "key *** here")


class ScrubThenCapPropertyTest(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(before=FILLER, after=FILLER, limit=st.integers(min_value=0, max_value=500),
           how=st.sampled_from(["configured", "bearer", "api_key=", "url"]))
    def test_no_piece_of_a_secret_survives_any_cut(self, before, after, limit, how):
        secret = {"configured": SECRET, "bearer": "Bearer " + SECRET, "api_key=": "api_key=" + SECRET,
                  "url": "https://bob:" + SECRET + "@host/x"}[how]
        # A configured secret is found anywhere; a credential shape after a word's end (a space here).
        sep = "" if how == "configured" else " "
        out = scrub_and_cap(before + sep + secret + sep + after, limit, [SECRET] if how == "configured" else ())
        self.assertLessEqual(len(out), max(limit, 0))
        for start in range(len(SECRET) - 5):
            self.assertNotIn(SECRET[start:start + 6], out)

    @settings(max_examples=100, deadline=None)
    @given(value=st.recursive(st.one_of(st.none(), st.integers(), FILLER, st.just(SECRET * 3)),
                              lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(FILLER, inner, max_size=4)), max_leaves=20),
           limit=st.integers(min_value=8, max_value=200))
    def test_a_result_keeps_its_shape_and_every_string_is_bounded(self, value, limit):
        out = scrub_result(value, [SECRET], limit)

        def walk(a, b):
            if isinstance(a, str):
                self.assertLessEqual(len(b), limit)
                self.assertNotIn(SECRET[:6], b)
            elif isinstance(a, dict):
                self.assertEqual(len(a), len(b))
                for (ka, va), (kb, vb) in zip(a.items(), b.items()):
                    walk(ka, kb)
                    walk(va, vb)
            elif isinstance(a, list):
                self.assertEqual(len(a), len(b))
                for va, vb in zip(a, b):
                    walk(va, vb)
            else:
                self.assertEqual(a, b)

        walk(value, out)


if __name__ == "__main__":
    unittest.main()
