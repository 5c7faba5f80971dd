"""Keep secrets out of results, logs and events: the pack's one redaction path.

`scrub` replaces every configured secret (config values marked `secret: true`)
and every credential-shaped string (an `Authorization: Bearer ...` token, the
`user:password@` of a URL) with ***, in strings, dicts and lists alike.
`scrub_and_cap` is THE function for text from outside (HTTP bodies, provider
errors, exception messages, stream fields, trace context, config values quoted
in errors): it scrubs BEFORE it cuts, since a secret cut in half by a length
limit is no longer recognisable, so cutting first would leak its prefix. Every
cut of such text in the pack goes through it (tests/test_one_scrub.py walks
the sources for cuts that do not). It also scrubs the secrets "in force": the
configured secrets of the action or sensor running now (put in force by
`ops.trace.guarded_logs`), so a caller that has no secrets at hand still never
cuts one in half. `scrub_result` applies it to every string of an action
result. `RedactingFilter` applies the same scrubbing to log records.
"""

import json
import logging
import re
import threading

REDACTED = "***"
ELLIPSIS = "..."
CUT_NOTE = "... [cut: %d characters in all]"  # ends a string `scrub_result` cut, so a reader knows

# Credentials recognised by their shape, whatever their value. A name counts after anything but a letter
# or digit: `openai_api_key=...` and `x_Bearer ...` too (\b would not see a name after "_").
_PATTERNS = (
    # Authorization headers and bearer/basic tokens quoted in error text (the scheme word itself is
    # never taken for the token: scrubbing scrubbed text changes nothing, as a line may be filtered twice).
    (re.compile(r"(?i)(?<![a-z0-9])(authorization\s*[:=]\s*(?:bearer|basic|token)?\s*)(?!(?:bearer|basic|token)\b)"
                r"[A-Za-z0-9._~+/=-]{6,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)(?<![a-z0-9])(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1" + REDACTED),
    # The password of a URL's userinfo: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*):[^\s/@]+@"), r"\1:" + REDACTED + "@"),
    # key=value / "key": "value" pairs whose key names a credential. A value that is one word of
    # letters (lowercase, or a capital then lowercase) is prose, not a credential: "write_key: expected
    # type string" and "invalid_api_key: Incorrect API key" keep their words. Configured secrets are
    # masked by value whatever their shape.
    (
        re.compile(
            r"(?i)([\"']?(?<![a-z0-9])(?:api[_-]?key|x-api-key|write[_-]?key|password|passwd|secret|access[_-]?token)"
            r"[\"']?\s*[:=]\s*[\"']?)(?!(?-i:[A-Z]?[a-z]+)(?:[\s\"',;&})\]]|$))([^\s\"',;&})\]]{4,})"
        ),
        r"\1" + REDACTED,
    ),
)


# Text without any of these (case folded as re does) matches none of _PATTERNS.
_MARKERS = ("authorization", "bearer", "://", "api", "write", "passw", "secret", "access")
_PATTERN_MARKERS = re.compile("(?i)" + "|".join(re.escape(m) for m in _MARKERS))


def _has_marker(text):
    if text.isascii():  # str.lower() folds ASCII exactly as re's IGNORECASE does, and much faster
        lowered = text.lower()
        return any(marker in lowered for marker in _MARKERS)
    return _PATTERN_MARKERS.search(text) is not None


def scrub_if_needed(value, secrets=()):
    """`scrub(value, secrets)`, skipping the walk when the value's JSON text holds no secret and no
    credential marker (one C-level search instead of a walk of every string: the common case).
    A secret that JSON would escape (quote, backslash, control character) always takes the walk."""
    secrets = [s for s in secrets if isinstance(s, str) and s]
    if any('"' in s or "\\" in s or not s.isprintable() for s in secrets):
        return scrub(value, secrets)
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return scrub(value, secrets)
    if _has_marker(text) or any(s in text for s in secrets):
        return scrub(value, secrets)
    return value


def scrub(value, secrets=()):
    """Return `value` (str, dict, list or scalar) with every secret string replaced by ***.

    Dict keys are scrubbed too (a secret pasted where a key name belongs).
    """
    # Longest first, so a secret that contains another is replaced whole.
    secrets = sorted(set(s for s in secrets if isinstance(s, str) and s), key=len, reverse=True)
    return _walk(value, lambda text: scrub_text(text, secrets), 0)


def scrub_text(text, secrets=()):
    """`text` with the given secrets and credential-shaped substrings replaced by ***."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# The secrets of every action run / sensor now guarding its logs (a secret -> how many hold it).
_IN_FORCE = {}
_IN_FORCE_LOCK = threading.Lock()


def hold_secrets(secrets):
    """Put `secrets` in force (scrub_and_cap scrubs them even when its caller passes none); returns
    what `release_secrets` takes back."""
    held = [s for s in set(secrets or ()) if isinstance(s, str) and s]
    with _IN_FORCE_LOCK:
        for secret in held:
            _IN_FORCE[secret] = _IN_FORCE.get(secret, 0) + 1
    return held


def release_secrets(held):
    with _IN_FORCE_LOCK:
        for secret in held:
            left = _IN_FORCE.get(secret, 0) - 1
            if left > 0:
                _IN_FORCE[secret] = left
            else:
                _IN_FORCE.pop(secret, None)


def scrub_and_cap(text, limit, secrets=(), note_cut=False):
    """The one scrub-then-cap for text from outside: `text` as a string, scrubbed of `secrets`, of the
    secrets in force and of credential shapes, THEN cut to at most `limit` characters, ending in "..."
    (`note_cut`: in CUT_NOTE, which gives the length before the cut)."""
    wanted = set(s for s in secrets if isinstance(s, str) and s)
    if _IN_FORCE:
        with _IN_FORCE_LOCK:
            wanted.update(_IN_FORCE)
    text = scrub_text(text if isinstance(text, str) else _as_text(text), sorted(wanted, key=len, reverse=True))
    if len(text) <= limit:
        return text
    tail = CUT_NOTE % len(text) if note_cut else ELLIPSIS
    if len(tail) > limit:  # no room to say it was cut
        tail = ELLIPSIS if len(ELLIPSIS) <= limit else ""
    return text[: max(0, limit - len(tail))] + tail


def scrub_result(value, secrets=(), max_chars=65536):
    """An action result (or any JSON-able value) with every string, dict keys too, through
    `scrub_and_cap(s, max_chars, secrets, note_cut=True)`: same shape, no secret, no string over
    `max_chars` (an input echoed back is bounded), and a cut string says so."""
    secrets = sorted(set(s for s in secrets if isinstance(s, str) and s), key=len, reverse=True)
    return _walk(value, lambda text: scrub_and_cap(text, max_chars, secrets, note_cut=True), 0)


def _walk(value, on_text, depth):
    if isinstance(value, str):
        return on_text(value)
    if depth > 64:  # deeper than any legitimate result: keep nothing of it
        return REDACTED if isinstance(value, (dict, list, tuple)) else value
    if isinstance(value, dict):
        return {_walk(k, on_text, depth + 1): _walk(v, on_text, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, on_text, depth + 1) for v in value]
    return value


def _as_text(value):
    try:
        return str(value)
    except (RecursionError, ValueError):
        return "<%s>" % type(value).__name__


MAX_LOG_CHARS = 32768  # a log line quoting a huge body is cut (after scrubbing), saying so


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs each record's message (arguments merged first), then cuts it to
    MAX_LOG_CHARS: `scrub_and_cap`, as for any outside text."""

    def __init__(self, secrets=()):
        super(RedactingFilter, self).__init__()
        self.secrets = list(secrets)

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what we can, scrubbed
            message = _as_text(record.msg)
        record.msg = scrub_and_cap(message, MAX_LOG_CHARS, self.secrets, note_cut=True)
        record.args = ()
        return True

