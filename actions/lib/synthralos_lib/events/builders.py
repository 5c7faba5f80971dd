"""Build RudderStack `track` events for everything the pack forwards.

Every event has the RudderStack track shape:

    {"type": "track", "event": <name>, "userId" | "anonymousId": ..,
     "properties": {..}, "context": {..}, "timestamp": ISO-8601, "messageId": ..}

and its `properties` always carry the correlation fields (`trace_id`,
`workspace_id`, `organization_id`, `st2_execution_id`, `st2_trace_tag`, and
`traceparent` / `langfuse_trace_url` when known), so a warehouse can join
events to st2 executions and traces without digging into `context`.

`messageId` is a UUIDv5 over (source id, event name, discriminator). The
source id is the st2 execution the event describes; the discriminator tells
apart several events of one kind from one execution (repair attempt number,
LLM call id). Resending the same source therefore yields the same messageId
and the copy can be recognised (RudderStack drops it only with its dedup enabled; the warehouse
models in analytics/ drop it always: docs/events.md, "Duplicates"). Events without a source id hash their
own content instead, so they are deterministic too.

An event must serialise to at most 32 KB. A bigger one has its longest
string properties trimmed (recorded in `context.synthralos.trimmed`); if that
is not enough it is refused with `EventTooLarge`. It is never sent oversize.
"""

import copy
import hashlib
import json
import re
import uuid
from datetime import datetime, timezone

from synthralos_lib.events import pricing, similarity
from synthralos_lib.state.redaction import ELLIPSIS, scrub_and_cap
from synthralos_lib.state.validation import check_number, check_numbers

MAX_EVENT_BYTES = 32 * 1024
MIN_TRIM_CHARS = 256  # ids and short fields are never trimmed
TEXT_LIMIT = 1000  # prompt and flagged content in similarity events
LIBRARY = {"name": "synthralos-stackstorm", "version": "0.1.0"}
# Fixed namespace so every installation derives the same ids from the same source.
MESSAGE_ID_NAMESPACE = uuid.UUID("0b6f3c52-8f1e-5b8e-9a51-3e2f5d0c7a11")

EVENT_AGENT_EXECUTION = "agent_execution"
EVENT_AGENT_REPAIR = "agent_repair"
EVENT_AGENT_FAILURE = "agent_failure"
EVENT_LLM_COST = "llm_cost_logged"
EVENT_PROMPT_SIMILARITY = "prompt_similarity_logged"
BUILTIN_EVENTS = (EVENT_AGENT_EXECUTION, EVENT_AGENT_REPAIR, EVENT_AGENT_FAILURE, EVENT_LLM_COST, EVENT_PROMPT_SIMILARITY)

SIMILARITY_ACTIONS = ("blocked", "allowed", "flagged", "warned")
_EVENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.: -]{0,127}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


class EventError(ValueError):
    """The event cannot be built from the given input."""


class EventTooLarge(EventError):
    """The event exceeds MAX_EVENT_BYTES even after trimming."""


class Correlation(object):
    """Who and what an event is about; shared by every builder.

    `defaults` is the `observability` config section (workspace/organization
    fallbacks and the Langfuse base URL).
    """

    FIELDS = (
        "trace_id",
        "workspace_id",
        "organization_id",
        "st2_execution_id",
        "st2_trace_tag",
        "traceparent",
        "langfuse_trace_url",
        "agent_id",
        "user_id",
    )

    def __init__(self, defaults=None, **values):
        unknown = set(values) - set(self.FIELDS)
        if unknown:
            raise EventError("unknown correlation field(s): %s" % ", ".join(sorted(unknown)))
        defaults = defaults or {}
        self.values = {k: (values.get(k) or None) for k in self.FIELDS}
        self.values["workspace_id"] = self.values["workspace_id"] or defaults.get("workspace_id") or None
        self.values["organization_id"] = self.values["organization_id"] or defaults.get("organization_id") or None
        traceparent = self.values["traceparent"]
        if traceparent:
            match = _TRACEPARENT.match(traceparent.strip().lower())
            if not match:
                raise EventError("traceparent is not a W3C trace context header (version-traceid-spanid-flags)")
            self.values["traceparent"] = match.group(0)
            # The OpenTelemetry trace id is the natural trace_id when none is given.
            self.values["trace_id"] = self.values["trace_id"] or match.group(1)
        base = (defaults.get("langfuse_base_url") or "").rstrip("/")
        if not self.values["langfuse_trace_url"] and base and self.values["trace_id"]:
            self.values["langfuse_trace_url"] = "%s/trace/%s" % (base, self.values["trace_id"])

    #: What goes into an event's properties: the trace fields (agent and user are the event's own).
    PROPERTY_FIELDS = FIELDS[:7]

    def properties(self):
        return {k: self.values[k] for k in self.PROPERTY_FIELDS}

    def identity(self):
        """RudderStack needs userId or anonymousId: the user when known, else the agent, else the pack."""
        if self.values["user_id"]:
            return {"userId": str(self.values["user_id"])}
        if self.values["agent_id"]:
            return {"anonymousId": "agent:%s" % self.values["agent_id"]}
        return {"anonymousId": "synthralos"}


def now_iso():
    return iso_timestamp(datetime.now(timezone.utc))


def iso_timestamp(value):
    """Normalise a datetime or ISO-8601 string to UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`."""
    if value is None:
        return now_iso()
    if isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise EventError("timestamp %r is not ISO-8601" % scrub_and_cap(value, 40))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (value.microsecond // 1000)


def message_id(source_id, event_name, discriminator=""):
    """Deterministic messageId: the same source, event and discriminator always give the same id."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, "%s|%s|%s" % (source_id, event_name, discriminator)))


def _content_digest(event_name, properties, timestamp):
    canonical = json.dumps([event_name, properties, timestamp], sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def build_event(event_name, properties, correlation, timestamp=None, discriminator="", source_id=None):
    """A track event for `event_name` with `properties` (dict) and `correlation` (Correlation)."""
    if not isinstance(event_name, str) or not _EVENT_NAME.match(event_name):
        raise EventError("event name must start with a letter and use letters, digits, _ . : - or spaces (max 128)")
    if not isinstance(properties, dict):
        raise EventError("properties must be an object")
    try:
        # A JSON round trip both copies (the caller's dict is never mutated) and
        # proves the properties serialise; it is faster than copy.deepcopy.
        props = json.loads(json.dumps(properties, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise EventError("event properties are not JSON-serialisable: %s" % exc)
    props.update(correlation.properties())
    ts = iso_timestamp(timestamp)
    source = source_id or correlation.values["st2_execution_id"] or _content_digest(event_name, props, ts)
    event = {"type": "track", "event": event_name}
    event.update(correlation.identity())
    event.update(
        {
            "properties": props,
            "context": {"library": dict(LIBRARY), "synthralos": {"source_id": source}},
            "timestamp": ts,
            "messageId": message_id(source, event_name, discriminator),
        }
    )
    if correlation.values["traceparent"]:
        event["context"]["traceparent"] = correlation.values["traceparent"]
    return enforce_size(event)


def event_size(event):
    try:
        return len(json.dumps(event, separators=(",", ":"), allow_nan=False).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise EventError("event properties are not JSON-serialisable: %s" % exc)


def enforce_size(event, limit=MAX_EVENT_BYTES):
    """Return `event` if it fits in `limit` bytes, else a trimmed copy; raise EventTooLarge if trimming cannot help."""
    size = event_size(event)
    if size <= limit:
        return event
    event = copy.deepcopy(event)
    trimmed = []
    # Longest strings first: they are free text (outputs, errors) and carry the least per byte.
    texts = [(path, text) for path, text in _strings(event["properties"], ()) if len(text) > MIN_TRIM_CHARS]
    for path, text in sorted(texts, key=lambda item: -len(item[1].encode("utf-8"))):
        excess = event_size(event) - limit
        if excess <= 0:
            break
        keep = max(0, len(text) - excess - 64)
        head = scrub_and_cap(text, keep + len(ELLIPSIS))  # scrubbed, then cut (ends in "...")
        _set_path(event["properties"], path, head + "[trimmed %d chars]" % (len(text) - keep))
        trimmed.append(".".join(str(p) for p in path))
        event["context"]["synthralos"]["trimmed"] = trimmed
    size = event_size(event)
    if size > limit:
        raise EventTooLarge(
            "event %r is %d bytes after trimming %d text field(s); the limit is %d bytes"
            % (event["event"], size, len(trimmed), limit)
        )
    return event


def _strings(node, path):
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            for found in _strings(value, path + (key,)):
                yield found
    elif isinstance(node, list):
        for index, value in enumerate(node):
            for found in _strings(value, path + (index,)):
                yield found


def _set_path(node, path, value):
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


# ---------------------------------------------------------------------------
# Builders for the pack's own events.


def _duration_ms(started_at, ended_at):
    if not started_at or not ended_at:
        return None
    start = datetime.fromisoformat(iso_timestamp(started_at).replace("Z", "+00:00"))
    end = datetime.fromisoformat(iso_timestamp(ended_at).replace("Z", "+00:00"))
    return int(round((end - start).total_seconds() * 1000))


def agent_event(event_name, correlation, status, started_at=None, ended_at=None, details=None, discriminator=""):
    """agent_execution / agent_repair / agent_failure from an execution's outcome."""
    if event_name not in (EVENT_AGENT_EXECUTION, EVENT_AGENT_REPAIR, EVENT_AGENT_FAILURE):
        raise EventError("not an agent event: %r" % event_name)
    if not status:
        raise EventError("status is required for %s" % event_name)
    properties = {
        "agent_id": correlation.values["agent_id"],
        "status": status,
        "started_at": iso_timestamp(started_at) if started_at else None,
        "ended_at": iso_timestamp(ended_at) if ended_at else None,
        "duration_ms": _duration_ms(started_at, ended_at),
    }
    properties.update(details or {})
    # The event happens when the execution ends; without an end time (st2's actiontrigger
    # carries none) it is stamped now, right after the completion that fired the rule.
    return build_event(event_name, properties, correlation, timestamp=ended_at, discriminator=discriminator)


def llm_cost_event(correlation, provider, model, input_tokens, output_tokens, prices, node_id=None,
                   workflow_execution_id=None, timestamp=None, discriminator="", input_price_per_1k=None,
                   output_price_per_1k=None, target=None):
    """llm_cost_logged: tokens, USD cost and the per-1k rates used (see pricing.py for the lookup order)."""
    if not provider or not model:
        raise EventError("provider and model are required for llm_cost_logged")
    cost = pricing.cost(
        model,
        input_tokens,
        output_tokens,
        prices,
        input_price_per_1k=input_price_per_1k,
        output_price_per_1k=output_price_per_1k,
        target=target,
    )
    properties = {
        "provider": provider,
        "model": model,
        "agent_id": correlation.values["agent_id"],
        "workflow_execution_id": workflow_execution_id,
        "node_id": node_id,
    }
    properties.update(cost)
    return build_event(EVENT_LLM_COST, properties, correlation, timestamp=timestamp, discriminator=discriminator)


def check_similarity(threshold, score=None, vector_a=None, vector_b=None):
    """The numbers of a similarity event: threshold and score in 0..1, vectors of finite numbers.

    EventError naming the field (NaN and Infinity included), before any work.
    """
    try:
        check_number(threshold, "threshold", 0, 1, required=True)
        check_number(score, "score", 0, 1)
        check_numbers(vector_a, "vector_a")
        check_numbers(vector_b, "vector_b")
    except ValueError as exc:
        raise EventError(str(exc))


def similarity_event(correlation, threshold, method="cosine", score=None, vector_a=None, vector_b=None,
                     action_taken=None, prompt=None, flagged_content=None, timestamp=None, discriminator="",
                     guardrail=None):
    """prompt_similarity_logged: score 0..1 (given, or computed from the two vectors), percent, threshold, action."""
    if method not in similarity.METHODS:
        raise EventError("method must be one of %s" % ", ".join(similarity.METHODS))
    check_similarity(threshold, score, vector_a, vector_b)
    threshold = float(threshold)
    if score is None:
        if vector_a is None or vector_b is None:
            raise EventError("give either score or both vectors")
        try:
            score = similarity.score(method, vector_a, vector_b)
        except similarity.SimilarityError as exc:
            raise EventError(str(exc))
        computed = True
    else:
        score = float(score)
        computed = False
    if action_taken is None:
        action_taken = "flagged" if score >= threshold else "allowed"
    if action_taken not in SIMILARITY_ACTIONS:
        raise EventError("action_taken must be one of %s" % ", ".join(SIMILARITY_ACTIONS))
    score = round(score, 6)
    properties = {
        "agent_id": correlation.values["agent_id"],
        "score": score,
        "percent": round(score * 100, 2),
        "threshold": threshold,
        "above_threshold": score >= threshold,
        "method": method,
        "score_computed": computed,
        "action_taken": action_taken,
        "prompt": _truncate(prompt),
        "flagged_content": _truncate(flagged_content),
    }
    if guardrail:
        properties["guardrail"] = guardrail
    return build_event(EVENT_PROMPT_SIMILARITY, properties, correlation, timestamp=timestamp, discriminator=discriminator)


def _truncate(text, limit=TEXT_LIMIT):
    if text is None:
        return None
    text = str(text)
    return scrub_and_cap(text, limit)


def custom_event(event_name, properties, correlation, timestamp=None, discriminator=""):
    """Any other event; the built-in names are reserved for their builders' schemas."""
    if event_name in BUILTIN_EVENTS:
        raise EventError("%r is a built-in event; use its own action" % event_name)
    return build_event(event_name, properties or {}, correlation, timestamp=timestamp, discriminator=discriminator)
