"""Bounded shapes: JSON-able copies of untrusted values, capped well under st2's result size.

st2 stores every action result in MongoDB (16 MB per document, and the
workflow engine copies results into the workflow's context), so anything the
pack echoes from outside (agent API bodies, detection evidence, inputs,
failure lists) goes through `bounded` first. Strings are scrubbed before they
are cut (`redaction.scrub_and_cap`).
"""

import math

from synthralos_lib.state.redaction import scrub_and_cap

MAX_DEPTH = 8
MAX_ITEMS = 50
MAX_STRING = 2000
TRUNCATED = "<truncated>"


def bounded(value, secrets=(), max_depth=MAX_DEPTH, max_items=MAX_ITEMS, max_string=MAX_STRING):
    """A JSON-able copy of `value`: strings scrubbed and capped, lists/dicts cut to `max_items`,
    nesting below `max_depth` replaced by "<truncated>", NaN/Infinity by None."""
    return _bounded(value, tuple(secrets), max_depth, max_items, max_string)


def _bounded(value, secrets, depth, max_items, max_string):
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2 ** 63 else "<integer of %d bits>" % value.bit_length()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return scrub_and_cap(value, max_string, secrets)
    if depth <= 0:
        return TRUNCATED
    if isinstance(value, dict):
        out = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= max_items:
                out[TRUNCATED] = "%d more key(s)" % (len(value) - max_items)
                break
            key = scrub_and_cap(key if isinstance(key, str) else str(key), 200, secrets)
            out[key] = _bounded(item, secrets, depth - 1, max_items, max_string)
        return out
    if isinstance(value, (list, tuple)):
        items = [_bounded(item, secrets, depth - 1, max_items, max_string) for item in list(value)[:max_items]]
        if len(value) > max_items:
            items.append("%s %d more item(s)" % (TRUNCATED, len(value) - max_items))
        return items
    return "<%s>" % type(value).__name__


def finite_number(value):
    """`value` when it is a real, finite int/float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
