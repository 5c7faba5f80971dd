"""Input checks the action metadata's JSON schema cannot express, each naming the field.

st2 validates parameters against the metadata (types, minimum/maximum, enums),
but a JSON schema lets NaN through every bound, accepts Infinity where the
runtime parses it, and cannot say "not only whitespace". These helpers raise
ValueError with the field's name and never echo the value.
"""

import math
import re

MAX_ID_CHARS = 256
_CONTROL = re.compile(r"[\x00-\x1f]")


def _absent(value, field, required):
    """Whether `value` is None, which only a `required` field refuses."""
    if value is None and required:
        raise ValueError("%s is required" % field)
    return value is None


def check_number(value, field, minimum=None, maximum=None, integer=False, required=False):
    """`value` if it is a finite number within [minimum, maximum] (None allowed unless `required`)."""
    if _absent(value, field, required):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError("%s must be %s" % (field, "an integer" if integer else "a number"))
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("%s must be a finite number (not NaN or Infinity)" % field)
    if minimum is not None and value < minimum:
        raise ValueError("%s must be at least %s" % (field, minimum))
    if maximum is not None and value > maximum:
        raise ValueError("%s must be at most %s" % (field, maximum))
    return value


def check_numbers(values, field, minimum=None, maximum=None):
    """A list (or tuple) of finite numbers (e.g. an embedding vector); None passes."""
    if values is None:
        return None
    if not isinstance(values, (list, tuple)):
        raise ValueError("%s must be a list of numbers" % field)
    for index, value in enumerate(values):
        check_number(value, "%s[%d]" % (field, index), minimum, maximum)
    return values


def check_text(value, field, max_chars=None, ascii_only=False, allow_empty=True, strip=False, printable=False,
               required=False):
    """A string that is not only whitespace (empty allowed when `allow_empty`); None passes unless `required`.

    `strip`: the surrounding whitespace is dropped (the bound applies to, and
    the result is, the stripped text). `printable`: no control characters.
    `ascii_only`: printable ASCII without spaces.
    """
    if _absent(value, field, required):
        return None
    if not isinstance(value, str):
        raise ValueError("%s must be a string" % field)
    if not value:
        if allow_empty:
            return value
        raise ValueError("%s must not be empty" % field)
    if not value.strip():
        raise ValueError("%s must not be only whitespace" % field)
    text = value.strip() if strip else value
    if max_chars is not None and len(text) > max_chars:
        raise ValueError("%s must be at most %d characters" % (field, max_chars))
    if printable and _CONTROL.search(text):
        raise ValueError("%s must not contain control characters" % field)
    if ascii_only and not all(0x20 < ord(ch) < 0x7F for ch in text):
        raise ValueError("%s must be printable ASCII without spaces" % field)
    return text


def check_id(value, field, max_chars=MAX_ID_CHARS, ascii_only=False, path_segment=False):
    """An id (agent, execution, job) as stripped text; ValueError naming `field` if it is not usable.

    A string or an integer (JSON ids come as either), not empty or only
    whitespace, at most `max_chars` characters, no control characters.
    `ascii_only` and `path_segment` (not '.', '..', no '/') for ids that go
    into a URL path or an HTTP header.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = check_text(value, field, max_chars, ascii_only, allow_empty=False, strip=True, printable=True,
                      required=True)
    if path_segment and (text in (".", "..") or "/" in text):
        raise ValueError("%s must not be '.' or '..' or contain '/'" % field)
    return text
