"""Failure history: a bounded, newest-first list of failures and recovery outcomes per agent.

Kept in the pack's store (`failures.<agent_id>`), so it works on the st2
datastore and on Redis alike. Entries expire with the list after
`HISTORY_TTL_S` without a new failure.
"""

import time

DEFAULT_MAX_ENTRIES = 100
MAX_ENTRIES_LIMIT = 1000
HISTORY_TTL_S = 30 * 24 * 3600
OUTCOMES = ("repaired", "escalated", "no_failure", "planned", "recorded")


def history_key(agent_id):
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise ValueError("agent_id must be a non-empty string")
    return "failures." + agent_id.strip()


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
