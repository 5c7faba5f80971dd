"""Agent execution entries on a Redis Stream (the platform's contract, docs/agent_failure_stream.md).

An entry's fields are flat strings. `agent_id` and `execution_id` are
required; the execution is either one `result` field holding a JSON object,
or flat fields (`status`, `error`, `output`, `duration_ms`, ... with
`tool_results` and `llm_error` as JSON). Trace context is a `trace_context`
JSON object or the flat `trace_id`, `traceparent`, `langfuse_trace_url`,
`workspace_id`, `organization_id`. Other fields are ignored.
"""

import json

from synthralos_lib.healing.failure_trigger import TRACE_KEYS, MalformedFailure
from synthralos_lib.state.redaction import scrub_and_cap

STRING_FIELDS = ("status", "error", "output", "provider", "model", "input")
NUMBER_FIELDS = ("duration_ms", "timeout_ms", "max_iterations")
JSON_FIELDS = {"tool_results": list, "llm_error": (dict, str)}
BOOLEAN_FIELDS = ("timed_out",)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def decode_entry(fields):
    """`{"agent_id", "execution_id", "result", "trace_context"}` from an entry's fields.

    Raises MalformedFailure naming the field at fault.
    """
    if not isinstance(fields, dict) or not fields:
        raise MalformedFailure("the entry has no fields")
    for name in ("agent_id", "execution_id"):
        if not fields.get(name):
            raise MalformedFailure("field %s is missing" % name)
    if "result" in fields:
        result = _json(fields, "result", dict)
    else:
        result = _flat_result(fields)
    if "trace_context" in fields:
        trace_context = _json(fields, "trace_context", dict)
    else:
        trace_context = {key: fields[key] for key in TRACE_KEYS if fields.get(key)}
    return {"agent_id": fields["agent_id"], "execution_id": fields["execution_id"], "result": result,
            "trace_context": trace_context}


def _flat_result(fields):
    if "status" not in fields:
        raise MalformedFailure("the entry has neither a result field nor a status field")
    result = {name: fields[name] for name in STRING_FIELDS if name in fields}
    for name in NUMBER_FIELDS:
        if name in fields:
            result[name] = _number(fields, name)
    for name in BOOLEAN_FIELDS:
        if name in fields:
            value = _BOOLEANS.get(str(fields[name]).strip().lower())
            if value is None:
                raise MalformedFailure("field %s must be true or false" % name)
            result[name] = value
    for name, kind in JSON_FIELDS.items():
        if name in fields:
            result[name] = _json(fields, name, kind)
    return result


def _json(fields, name, kind):
    try:
        value = json.loads(fields[name])
    except (TypeError, ValueError):
        raise MalformedFailure("field %s is not valid JSON" % name)
    except RecursionError:
        raise MalformedFailure("field %s is JSON nested too deep to read" % name)
    if not isinstance(value, kind):
        raise MalformedFailure("field %s must hold a JSON %s" % (name, "object" if kind is dict else "array"
                                                                 if kind is list else "object or string"))
    return value


def _number(fields, name):
    text = str(fields[name]).strip()
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise MalformedFailure("field %s must be a number" % name)
        if value != value or value in (float("inf"), float("-inf")):
            raise MalformedFailure("field %s must be a finite number" % name)
    return value


def prepare_entry(entry_id, fields, secrets=(), now=None):
    """The `synthralos.agent_failure` dispatch (`{"payload", "trace_tag"}`) for one stream entry,
    None when the execution did not fail; MalformedFailure when the entry breaks the contract."""
    from synthralos_lib.healing.failure_trigger import build_failure

    record = decode_entry(fields)
    return build_failure(record["agent_id"], record["execution_id"], record["result"], "redis_stream", entry_id,
                         trace_context=record["trace_context"], secrets=secrets, now=now)  # raw: the result


class Undecodable(ValueError):
    """Bytes read from Redis (a stream entry, a BullMQ key) that are not UTF-8."""


def strict_utf8(value, what):
    """`value` decoded when it is bytes; Undecodable naming `what` and the offending byte when
    it is not UTF-8 (the sensors read Redis as bytes so that one bad byte costs one entry)."""
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Undecodable("%s is not valid UTF-8 (byte 0x%02x at offset %d)"
                          % (scrub_and_cap(what, 80), value[exc.start], exc.start))
