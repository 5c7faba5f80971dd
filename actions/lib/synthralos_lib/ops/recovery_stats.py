"""Recovery outcomes kept for metrics: a bounded, newest-first log in the pack's store.

`record_failure` (the action agent_recovery ends with) calls `record` for
every failure it records, so the metrics can say, over a window and by
failure type, how many recoveries were attempted, repaired and escalated,
the recovery rate and the mean time to recovery, and how many failures of
each type came in. Keys:

* `ops.recoveries`                 newest-first list of {t, failure_type, outcome, duration_s}
                                   (at most `LOG_MAX_LEN`, expires `LOG_TTL_S` after the last write)
* `ops.recoveries.total.<type>.<outcome>`  lifetime counters (Prometheus counters)
* `ops.recoveries.index`          the (type, outcome) pairs that have a counter

On Redis the list append and the counters are atomic; on the st2 datastore
they are best-effort (see state/store.py), which is good enough for metrics.
"""

import time

LOG_KEY = "ops.recoveries"
INDEX_KEY = "ops.recoveries.index"
LOG_MAX_LEN = 2000
LOG_TTL_S = 30 * 24 * 3600
UNKNOWN_TYPE = "unknown"
# Outcomes that end a recovery attempt; "planned" is a dry run, "recorded" a bare record,
# "coalesced" / "over_budget" a failure storm control kept from a recovery of its own (healing/storm.py).
ATTEMPT_OUTCOMES = ("repaired", "escalated")
FAILURE_OUTCOMES = ("repaired", "escalated", "planned", "recorded", "coalesced", "over_budget")


def _label(value):
    text = str(value or UNKNOWN_TYPE).strip() or UNKNOWN_TYPE
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in text)[:64]


def total_key(failure_type, outcome):
    return "ops.recoveries.total.%s.%s" % (_label(failure_type), _label(outcome))


def record(store, failure_type, outcome, duration_s=None, clock=time.time):
    """Add one outcome to the log and the lifetime counters; returns the logged item.

    `no_failure` (detection found nothing) is not a failure and is not logged (returns None).
    """
    if outcome not in FAILURE_OUTCOMES:
        return None
    item = {
        "t": clock(),
        "failure_type": _label(failure_type),
        "outcome": _label(outcome),
        "duration_s": float(duration_s) if isinstance(duration_s, (int, float)) and duration_s >= 0 else None,
    }
    store.list_push(LOG_KEY, item, max_len=LOG_MAX_LEN, ttl=LOG_TTL_S)
    store.incr(total_key(item["failure_type"], item["outcome"]))
    pair = [item["failure_type"], item["outcome"]]
    index = store.get(INDEX_KEY, default=[]) or []
    if pair not in index:
        store.set(INDEX_KEY, sorted(index + [pair]))
    return item


def totals(store):
    """Lifetime counts: {(failure_type, outcome): n}."""
    out = {}
    for failure_type, outcome in store.get(INDEX_KEY, default=[]) or []:
        out[(failure_type, outcome)] = int(store.get(total_key(failure_type, outcome), default=0) or 0)
    return out


def summarize(items, window_s, now):
    """Window statistics, overall and by failure type, from logged items (newest first).

    Returns {"all": stats, "by_type": {failure_type: stats}}; stats are failures,
    attempted (repaired + escalated), repaired, escalated, planned (dry runs),
    recovery_rate (repaired / attempted) and mttr_s (mean duration of repaired ones).
    """
    since = now - window_s
    overall = _empty()
    by_type = {}
    for item in items:
        if item.get("t", 0) <= since:
            continue
        for stats in (overall, by_type.setdefault(item.get("failure_type") or UNKNOWN_TYPE, _empty())):
            outcome = item.get("outcome")
            if outcome in FAILURE_OUTCOMES:
                stats["failures"] += 1
            if outcome in ATTEMPT_OUTCOMES:
                stats["attempted"] += 1
            if outcome in ("repaired", "escalated", "planned"):
                stats[outcome] += 1
            if outcome == "repaired" and item.get("duration_s") is not None:
                stats["_durations"].append(item["duration_s"])
    for stats in [overall] + list(by_type.values()):
        durations = stats.pop("_durations")
        stats["recovery_rate"] = round(stats["repaired"] / float(stats["attempted"]), 4) if stats["attempted"] else None
        stats["mttr_s"] = round(sum(durations) / len(durations), 3) if durations else None
    return {"all": overall, "by_type": by_type}


def _empty():
    return {"failures": 0, "attempted": 0, "repaired": 0, "escalated": 0, "planned": 0, "_durations": []}


def window_stats(store, window_s, clock=time.time):
    return summarize(store.list_range(LOG_KEY), window_s, clock())
