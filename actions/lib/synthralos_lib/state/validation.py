"""Input checks the action metadata's JSON schema cannot express, each naming the field.

st2 validates parameters against the metadata (types, minimum/maximum, enums),
but a JSON schema lets NaN through every bound, accepts Infinity where the
runtime parses it, and cannot say "not only whitespace". These helpers raise
ValueError with the field's name and never echo the value.
"""

import math


def check_number(value, field, minimum=None, maximum=None, integer=False, required=False):
    """`value` if it is a finite number within [minimum, maximum] (None allowed unless `required`)."""
    if value is None:
        if required:
            raise ValueError("%s is required" % field)
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
    """A list of finite numbers (e.g. an embedding vector); None passes."""
    if values is None:
        return None
    if not isinstance(values, list):
        raise ValueError("%s must be a list of numbers" % field)
    for index, value in enumerate(values):
        check_number(value, "%s[%d]" % (field, index), minimum, maximum)
    return values


def check_text(value, field, max_chars=None, ascii_only=False, allow_empty=True):
    """A string that is not only whitespace (empty allowed when `allow_empty`), optionally printable ASCII."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("%s must be a string" % field)
    if not value:
        if allow_empty:
            return value
        raise ValueError("%s must not be empty" % field)
    if not value.strip():
        raise ValueError("%s must not be only whitespace" % field)
    if max_chars is not None and len(value) > max_chars:
        raise ValueError("%s must be at most %d characters" % (field, max_chars))
    if ascii_only and not all(0x20 < ord(ch) < 0x7F for ch in value):
        raise ValueError("%s must be printable ASCII without spaces" % field)
    return value
