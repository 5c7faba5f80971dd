"""Failure history: a bounded, newest-first list of failures and recovery outcomes per agent.

Kept in the pack's store (`failures.<agent_id>`), so it works on the st2
datastore and on Redis alike. Entries expire with the list after
`HISTORY_TTL_S` without a new failure.

Redis down does not lose a failure: `record_with_fallback` writes to the st2
datastore instead and says so (`store`, `fallback_reason`);
`read_with_fallback` reads the datastore copy when Redis cannot be read.
"""

import json
import logging
import time

from synthralos_lib.state.shapes import bounded, finite_number
from synthralos_lib.state.store import StoreError
from synthralos_lib.state.validation import MAX_ID_CHARS, check_text

LOG = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 100
MAX_ENTRIES_LIMIT = 1000
HISTORY_TTL_S = 30 * 24 * 3600
# coalesced: joined a recovery already running for the same agent and failure signature;
# over_budget: the storm budget was spent (healing/storm.py).
OUTCOMES = ("repaired", "escalated", "no_failure", "planned", "recorded", "coalesced", "over_budget")
MAX_ATTEMPTS = 50
# An entry is kept small: MAX_ENTRIES_LIMIT of them fit in one datastore value / Redis list.
_ENTRY_ITEMS, _ENTRY_STRING = 20, 1000


def check_agent_id(agent_id):
    """`agent_id` stripped: a string, not empty or only whitespace, at most 256 characters (else ValueError)."""
    return check_text(agent_id, "agent_id", MAX_ID_CHARS, allow_empty=False, strip=True, required=True)


def history_key(agent_id):
    """The store key of the agent's history."""
    return "failures." + check_agent_id(agent_id)


def check_entry_inputs(agent_id, execution_id=None, failure=None, outcome="recorded", repaired_by=None, attempts=None,
                       plan_source=None, trace_context=None, started_at=None, now=None, secrets=(), storm=None):
    """The history entry for record_failure's parameters, each checked (ValueError naming the field),
    bounded and scrubbed."""
    history_key(agent_id)
    for name, value in (("execution_id", execution_id), ("repaired_by", repaired_by), ("plan_source", plan_source)):
        if value is not None and not isinstance(value, str):
            raise ValueError("%s must be a string" % name)
    if outcome not in OUTCOMES:
        raise ValueError("outcome must be one of %s" % ", ".join(OUTCOMES))
    if failure is not None and not isinstance(failure, dict):
        raise ValueError("failure must be an object (the result of synthralos.detect_failure)")
    if attempts is not None and not (isinstance(attempts, list) and all(isinstance(a, dict) for a in attempts)):
        raise ValueError("attempts must be a list of objects")
    if trace_context is not None and not isinstance(trace_context, dict):
        raise ValueError("trace_context must be an object")
    if storm is not None and not isinstance(storm, dict):
        raise ValueError("storm must be an object")
    now = time.time() if now is None else now
    if started_at is not None:
        if finite_number(started_at) is None or not 0 <= started_at <= now + 86400:
            raise ValueError("started_at must be a finite epoch time in seconds, not in the future")
    failure = failure or {}
    failure_type = failure.get("failure_type")
    summary = failure.get("summary")
    evidence = failure.get("evidence")
    entry = {
        "execution_id": execution_id,
        "failure_type": failure_type if isinstance(failure_type, str) else None,
        "summary": summary if isinstance(summary, str) else None,
        "evidence": evidence if isinstance(evidence, list) else [],
        "outcome": outcome,
        "repaired_by": repaired_by or None,
        "attempts": (attempts or [])[:MAX_ATTEMPTS],
        "plan_source": plan_source or None,
        "trace_context": trace_context or {},
        "duration_s": round(now - started_at, 3) if started_at else None,
    }
    if storm:  # why a failure was not recovered on its own (coalesced / over_budget): signature, joined_to, budget
        entry["storm"] = storm
    return bounded(entry, secrets, max_items=max(_ENTRY_ITEMS, MAX_ATTEMPTS), max_string=_ENTRY_STRING)


def record_failure(store, agent_id, entry, max_entries=DEFAULT_MAX_ENTRIES, clock=time.time):
    """Prepend `entry` (a JSON-able dict) to the agent's history; return the stored entry."""
    if not isinstance(entry, dict):
        raise ValueError("a failure history entry must be an object")
    max_entries = _bound(max_entries)
    stored = dict(entry)
    stored["agent_id"] = agent_id
    stored.setdefault("outcome", "recorded")
    if stored["outcome"] not in OUTCOMES:
        raise ValueError("outcome must be one of %s" % ", ".join(OUTCOMES))
    stored["recorded_at"] = clock()
    store.list_push(history_key(agent_id), stored, max_len=max_entries, ttl=HISTORY_TTL_S)
    return stored


def get_failure_history(store, agent_id, limit=20):
    """The agent's latest `limit` entries, newest first."""
    return store.list_range(history_key(agent_id), 0, _bound(limit) - 1)


def _bound(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("the number of entries must be a positive integer")
    return min(value, MAX_ENTRIES_LIMIT)


def record_with_fallback(store, fallback, agent_id, entry, max_entries=DEFAULT_MAX_ENTRIES, clock=time.time):
    """Record in `store`; when it fails and a `fallback` store is given, record there.

    Returns `{"entry", "store", "fallback_reason"}`; raises StoreError only when no store took it.
    """
    try:
        return {"entry": record_failure(store, agent_id, entry, max_entries, clock), "store": store.name,
                "fallback_reason": None}
    except StoreError as exc:
        if fallback is None:
            raise
        reason = "%s unavailable (%s); recorded in %s" % (store.name, exc, fallback.name)
        LOG.warning("[Self-Healing] failure history: %s", reason)
        return {"entry": record_failure(fallback, agent_id, entry, max_entries, clock), "store": fallback.name,
                "fallback_reason": reason}


def record_outcome(store, fallback, agent_id, max_entries=DEFAULT_MAX_ENTRIES, now=None, secrets=(), **fields):
    """Check, record (with fallback) and count one failure and its outcome: what record_failure does.

    `fields` are check_entry_inputs' (execution_id, failure, outcome, ...). Returns
    `{"entry", "duration_s", "store", "fallback_reason"}`; the recovery metrics
    (ops.recovery_stats) are best-effort and never fail the record.
    """
    from synthralos_lib.ops import recovery_stats

    now = time.time() if now is None else now
    entry = check_entry_inputs(agent_id=agent_id, now=now, secrets=secrets, **fields)
    recorded = record_with_fallback(store, fallback, agent_id.strip(), entry, max_entries=max_entries)
    LOG.info("[Self-Healing] recorded %s for agent %s (%s) in %s", entry["outcome"], agent_id.strip(),
             entry["failure_type"], recorded["store"])
    try:
        recovery_stats.record(store, entry["failure_type"], entry["outcome"], entry["duration_s"])
    except Exception as exc:
        LOG.warning("[Observability] recovery metrics not updated: %s: %s", type(exc).__name__, exc)
    return {"entry": recorded["entry"], "duration_s": entry["duration_s"], "store": recorded["store"],
            "fallback_reason": recorded["fallback_reason"]}


MAX_RESULT_BYTES = 1024 * 1024


def within_budget(entries, max_bytes=MAX_RESULT_BYTES):
    """`(entries, truncated)`: the newest entries whose JSON fits in `max_bytes` (st2 results stay small)."""
    kept, used = [], 2
    for entry in entries:
        used += len(json.dumps(entry, default=str)) + 2
        if used > max_bytes:
            return kept, True
        kept.append(entry)
    return kept, False


def read_with_fallback(store, fallback, agent_id, limit=20):
    """`{"entries", "store", "fallback_reason"}`: `store`'s entries, or `fallback`'s when `store` fails."""
    try:
        return {"entries": get_failure_history(store, agent_id, limit), "store": store.name, "fallback_reason": None}
    except StoreError as exc:
        if fallback is None:
            raise
        reason = "%s unavailable (%s); showing what %s holds" % (store.name, exc, fallback.name)
        LOG.warning("[Self-Healing] failure history: %s", reason)
        return {"entries": get_failure_history(fallback, agent_id, limit), "store": fallback.name,
                "fallback_reason": reason}
