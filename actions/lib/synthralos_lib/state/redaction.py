"""Keep secrets out of results, logs and events: the pack's one redaction path.

`scrub` replaces every configured secret (config values marked `secret: true`)
and every credential-shaped string (an `Authorization: Bearer ...` token, the
`user:password@` of a URL) with ***, in strings, dicts and lists alike.
`scrub_and_cap` scrubs BEFORE it truncates: a secret cut in half by a length
limit is no longer recognisable, so truncating first would leak its prefix.
Every length limit in the pack goes through it. `RedactingFilter` applies the
same scrubbing to log records.
"""

import json
import logging
import re

REDACTED = "***"
ELLIPSIS = "..."

# Credentials recognised by their shape, whatever their value.
_PATTERNS = (
    # Authorization headers and bearer/basic tokens quoted in error text (the scheme word itself is
    # never taken for the token: scrubbing scrubbed text changes nothing, as a line may be filtered twice).
    (re.compile(r"(?i)\b(authorization\s*[:=]\s*(?:bearer|basic|token)?\s*)(?!(?:bearer|basic|token)\b)"
                r"[A-Za-z0-9._~+/=-]{6,}"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1" + REDACTED),
    # The password of a URL's userinfo: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s/:@]*):[^\s/@]+@"), r"\1:" + REDACTED + "@"),
    # key=value / "key": "value" pairs whose key names a credential.
    (
        re.compile(
            r"(?i)([\"']?\b(?:api[_-]?key|x-api-key|write[_-]?key|password|passwd|secret|access[_-]?token)"
            r"[\"']?\s*[:=]\s*[\"']?)([^\s\"',;&})\]]{4,})"
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
    return _scrub(value, secrets, 0)


def _scrub(value, secrets, depth):
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if depth > 64:  # deeper than any legitimate result: keep nothing of it
        return REDACTED if isinstance(value, (dict, list, tuple)) else value
    if isinstance(value, dict):
        return {_scrub(k, secrets, depth + 1): _scrub(v, secrets, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets, depth + 1) for v in value]
    return value


def scrub_text(text, secrets=()):
    """`text` with the given secrets and credential-shaped substrings replaced by ***."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def scrub_and_cap(text, limit, secrets=()):
    """`text` as a string, scrubbed, then cut to at most `limit` characters (ending in "...")."""
    text = scrub_text(text if isinstance(text, str) else _as_text(text), sorted(
        set(s for s in secrets if isinstance(s, str) and s), key=len, reverse=True))
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ELLIPSIS))] + ELLIPSIS


def _as_text(value):
    try:
        return str(value)
    except (RecursionError, ValueError):
        return "<%s>" % type(value).__name__


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs each record's message (arguments merged first)."""

    def __init__(self, secrets=()):
        super(RedactingFilter, self).__init__()
        self.secrets = list(secrets)

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what we can, scrubbed
            message = _as_text(record.msg)
        record.msg = scrub_text(message, sorted(set(self.secrets), key=len, reverse=True))
        record.args = ()
        return True

