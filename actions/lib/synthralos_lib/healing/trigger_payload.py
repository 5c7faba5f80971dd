"""Will st2 accept and store this trigger payload? Checked BEFORE a sensor dispatches and acks.

A sensor that dispatches, then acks, has handed the failure to st2; if st2
then refuses the payload (its trigger payload validation raises, or MongoDB
cannot store the trigger instance) the failure is gone. So every
`synthralos.agent_failure` payload is

* bounded first (`bounded`): nesting deeper than MAX_DEPTH is cut to a marker
  string, an integer outside int64 becomes its decimal text, a NaN or
  infinite float becomes null, a key that is not a string becomes one;
* then checked (`refusal`) with st2's own code: the schema validation that
  `st2common.validators.api.reactor.validate_trigger_payload` runs (its core,
  `st2common.util.schema.validate`: st2's `CustomValidator` on the trigger
  type's payload_schema from triggers/ as `modify_schema_allow_default_none`
  makes it; the full function needs the trigger type from MongoDB), and the
  serialisation the trigger instance's `payload` field does on save
  (`TriggerInstanceDB.payload.to_mongo`, orjson in st2 3.8 and master)
  inside a BSON document under MongoDB's 16 MB limit. The validator is built
  (and its schema checked) once: `util_schema.validate` re-checks the schema
  on every call, 5 ms a payload, which would cap a sensor near 200 failures/s.

Where st2 is not importable (a unit of the library used outside st2) the
check falls back to JSON serialisation and the int64 range.
"""

import json
import math
import os

MAX_DEPTH = 32  # levels of the payload (st2's orjson stops at 255; copy.deepcopy far earlier under eventlet)
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
BSON_DOCUMENT_LIMIT = 16 * 1024 * 1024 - 64 * 1024  # MongoDB's 16 MB, less room for the instance's other fields
_HUGE_INT_BITS = 4096  # str() of a wider int is slow (and refused by Python 3.11+ beyond 4300 digits)

_TRIGGERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "triggers")
_schemas = {}


def bounded(value, max_depth=MAX_DEPTH):
    """`value` (dicts, lists, scalars) as st2 can validate and store it; see the module docstring.
    The same object when nothing needed changing (the common case copies nothing)."""
    return _bounded(value, max_depth, 0)


def _bounded(value, max_depth, depth):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return value
        if value.bit_length() > _HUGE_INT_BITS:
            return "<integer of %d bits>" % value.bit_length()
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dict, list, tuple)):
        if depth >= max_depth:
            return "<nested deeper than %d levels: cut>" % max_depth
        if isinstance(value, dict):
            items = [(k if isinstance(k, str) else str(k), _bounded(v, max_depth, depth + 1)) for k, v in value.items()]
            same = all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items()))
            return value if same else dict(items)
        items = [_bounded(v, max_depth, depth + 1) for v in value]
        return value if isinstance(value, list) and all(a is b for a, b in zip(items, value)) else items
    return str(value)


def payload_schema(trigger_name):
    """The payload_schema of triggers/<trigger_name>.yaml (read once)."""
    schema = _schemas.get(trigger_name)
    if schema is None:
        import yaml

        with open(os.path.join(_TRIGGERS_DIR, trigger_name + ".yaml")) as handle:
            schema = _schemas[trigger_name] = yaml.safe_load(handle)["payload_schema"]
    return schema


def refusal(payload, trigger_name="agent_failure"):
    """None when st2 validates and stores `payload` for the trigger; else why not (one line)."""
    try:
        _validate(payload, trigger_name)
    except RecursionError:
        return "st2's trigger payload validation recursed too deep"
    except Exception as exc:
        return "st2's trigger payload validation refuses it: %s" % _first_line(exc)
    try:
        size = _stored_size(payload)
    except RecursionError:
        return "st2 cannot serialise it for MongoDB: nested too deep"
    except Exception as exc:
        return "st2 cannot serialise it for MongoDB: %s" % _first_line(exc)
    if size > BSON_DOCUMENT_LIMIT:
        return "stored, it would be %d bytes, over MongoDB's document limit" % size
    return None


_validators = {}


def _validate(payload, trigger_name):
    validator = _validators.get(trigger_name)
    if validator is None:
        try:
            from st2common.util import schema as st2_schema
        except ImportError:
            validator = False
        else:
            # What util_schema.validate(use_default=True, allow_default_none=True) validates against.
            schema = st2_schema.modify_schema_allow_default_none(schema=payload_schema(trigger_name))
            st2_schema.CustomValidator.check_schema(schema)
            validator = st2_schema.CustomValidator(schema)
        _validators[trigger_name] = validator
    if validator is False:
        json.dumps(payload, allow_nan=False)
        return
    validator.validate(payload)


def _stored_size(payload):
    try:
        import bson
        from st2common.models.db.trigger import TriggerInstanceDB
    except ImportError:
        _check_ints(payload, 0)
        return len(json.dumps(payload, allow_nan=False))
    stored = TriggerInstanceDB._fields["payload"].to_mongo(payload)
    return len(bson.BSON.encode({"payload": stored}))


def _check_ints(value, depth):
    if depth > MAX_DEPTH:
        raise ValueError("nested deeper than %d levels" % MAX_DEPTH)
    if isinstance(value, dict):
        for item in value.values():
            _check_ints(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_ints(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("an integer outside the 64-bit range")


def _first_line(exc):
    text = (str(exc) or type(exc).__name__).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
