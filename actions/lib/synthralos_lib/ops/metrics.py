"""System metrics, computed from the pack's store (never from st2's database).

`collect` gathers, each part on its own so one broken part is reported and
the others still come out:

* events: the outbox's stats (depth, oldest age, in-flight, delivered,
  retries, dead letters, ...), from `events.forwarding.open_outbox(...).stats()`;
* llm_circuits: every configured LLM target's breaker (`llm.breaker.Breakers.status`);
* cron: jobs in backoff or disabled, read through `cron_job_states` (below);
* recoveries: attempted / repaired / escalated, recovery rate and mean time
  to recovery over `window_s`, overall and by failure type, plus lifetime
  counters (`ops.recovery_stats`);
* failures: failures by type over the window;
* sensors: each sensor's heartbeat record and judgement (`ops.sensor_health.report`):
  up/down, heartbeat age, last read and dispatch, dispatched, dead-lettered,
  reconnects, consumer-group lag, pending and the oldest pending entry's age.
* storm: storm control's lifetime counters (failures coalesced onto a running
  recovery, failures over the budget, budget escalations), `healing.storm.totals`.

`to_prometheus` renders that as the Prometheus text exposition format
(version 0.0.4): `synthralos_` names, HELP and TYPE lines, labels `target`,
`state`, `failure_type`, `outcome`, `sensor`; counters end in `_total`.

Cron jobs are read through the cron backoff library
(`cron.backoff.CronBackoff.status`), which owns their keys.
"""

import logging
import math
import os
import tempfile
import time

from synthralos_lib.state.redaction import scrub

LOG = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 3600
# The cron library's statuses, folded into the two states the metrics count.
_CRON_STATE = {"backoff": "backoff", "retry_due": "backoff",
               "disabled": "disabled", "probe_due": "disabled", "probing": "disabled"}


def cron_job_states(store, settings):
    """{"available", "jobs": [...], "backoff": n, "disabled": n}: the jobs in backoff or disabled."""
    from synthralos_lib.cron.backoff import CronBackoff

    jobs = []
    for view in CronBackoff.from_config(settings, store).status():
        state = _CRON_STATE.get(view["status"])
        if state:
            jobs.append({"job": view["job_id"], "state": state, "consecutive_failures": view["consecutive_failures"],
                         "next_allowed_at": view["next_allowed_at"]})
    return {
        "available": True,
        "jobs": jobs,
        "backoff": sum(1 for j in jobs if j["state"] == "backoff"),
        "disabled": sum(1 for j in jobs if j["state"] == "disabled"),
    }


def _part(errors, name, fn):
    try:
        return fn()
    except Exception as exc:
        LOG.warning("[Observability] metrics part %s unavailable: %s", name, type(exc).__name__)
        errors[name] = "%s: %s" % (type(exc).__name__, exc)
        return None


def collect(settings, store, window_s=DEFAULT_WINDOW_S, clock=time.time, secrets=()):
    """The metrics as a JSON-able dict (see the module doc); `errors` names the parts that failed.
    Scrubbed of `secrets` (and credential shapes): it may be written to a file (`write_textfile`)."""
    from synthralos_lib.events.forwarding import open_outbox
    from synthralos_lib.llm.breaker import Breakers
    from synthralos_lib.healing import storm as storm_control
    from synthralos_lib.ops import recovery_stats, sensor_health

    errors = {}
    now = clock()
    events = _part(errors, "events", lambda: open_outbox(settings, store).stats())
    breakers = Breakers(store, settings.section("circuit_breaker"), clock=clock)
    circuits = _part(errors, "llm_circuits", lambda: [breakers.status(t["name"]) for t in settings.llm_targets()])
    cron = _part(errors, "cron", lambda: cron_job_states(store, settings))
    window = _part(errors, "recoveries", lambda: recovery_stats.summarize(
        store.list_range(recovery_stats.LOG_KEY), window_s, now))
    totals = _part(errors, "recovery_totals", lambda: recovery_stats.totals(store))
    sensors = _part(errors, "sensors", lambda: sensor_health.report(
        store, sensor_health.sensor_health_settings(settings), now))
    storm = _part(errors, "storm", lambda: storm_control.totals(store))
    recoveries = None
    failures = None
    if window is not None:
        recoveries = dict(window, window_s=window_s)
        failures = {"window_s": window_s, "total": window["all"]["failures"],
                    "by_type": {t: s["failures"] for t, s in sorted(window["by_type"].items())}}
    if totals is not None:
        recoveries = dict(recoveries or {}, totals=[
            {"failure_type": ft, "outcome": oc, "count": n} for (ft, oc), n in sorted(totals.items())])
    return scrub({
        "collected_at": now,
        "store": store.name,
        "events": events,
        "llm_circuits": circuits,
        "cron": cron,
        "recoveries": recoveries,
        "failures": failures,
        "sensors": sensors,
        "storm": storm,
        "errors": errors,
    }, secrets)


# -- Prometheus text exposition ---------------------------------------------------

CIRCUIT_STATES = ("closed", "open", "half_open")
EVENT_GAUGES = (
    ("outbox_depth", "depth", "Events in the outbox (waiting and in flight)."),
    ("outbox_in_flight", "pending", "Outbox events read by a flusher and not yet acknowledged."),
    ("outbox_oldest_age_seconds", "oldest_age_s", "Age of the oldest event in the outbox."),
    ("outbox_dead_letters", "dead_letters", "Events in the dead-letter queue now."),
)
EVENT_COUNTERS = (
    ("events_enqueued_total", "enqueued", "Events put into the outbox."),
    ("events_delivered_total", "delivered", "Events the data plane accepted."),
    ("events_retries_total", "retries", "Retried requests to the data plane."),
    ("events_dead_lettered_total", "dead_lettered", "Events moved to the dead-letter queue."),
    ("events_replayed_total", "replayed", "Dead letters moved back for delivery."),
    ("events_overflow_rejected_total", "overflow_rejected", "Events refused because the outbox was full."),
    ("events_overflow_dropped_total", "overflow_dropped", "Oldest events trimmed because the outbox was full."),
    ("events_config_errors_total", "config_errors", "Batches refused for the write key or source (401/404)."),
)
RECOVERY_WINDOW = (
    ("recoveries_window", None, "Recoveries that ended in the window, by failure type and outcome."),
    ("recovery_rate", "recovery_rate", "Repaired / attempted recoveries in the window."),
    ("recovery_mttr_seconds", "mttr_s", "Mean time to recovery of repaired failures in the window."),
    ("failures_window", "failures", "Failures recorded in the window, by failure type."),
)


class _Exposition(object):
    def __init__(self):
        self.lines = []

    def family(self, name, kind, help_text, samples):
        """samples: [(labels dict, value)]; a family with no samples is still declared."""
        full = "synthralos_" + name
        self.lines.append("# HELP %s %s" % (full, help_text))
        self.lines.append("# TYPE %s %s" % (full, kind))
        for labels, value in samples:
            if value is None:
                continue
            self.lines.append("%s%s %s" % (full, _labels(labels), _number(value)))

    def text(self):
        return "\n".join(self.lines) + "\n"


def _labels(labels):
    if not labels:
        return ""
    parts = ['%s="%s"' % (k, _escape(v)) for k, v in sorted(labels.items())]
    return "{" + ",".join(parts) + "}"


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def to_prometheus(metrics):
    """The metrics dict from `collect` as Prometheus text exposition format."""
    out = _Exposition()
    out.family("metrics_collected_timestamp_seconds", "gauge", "When these metrics were computed (Unix time).",
               [({}, metrics["collected_at"])])
    out.family("metrics_part_up", "gauge", "1 when that part of the metrics could be read from the store.",
               [({"part": p}, 0 if p in metrics["errors"] else 1)
                for p in ("events", "llm_circuits", "cron", "recoveries", "recovery_totals", "sensors", "storm")])

    events = metrics.get("events") or {}
    backend = {"backend": events.get("backend")} if events else {}
    for name, key, help_text in EVENT_GAUGES:
        out.family(name, "gauge", help_text, [(backend, events.get(key))] if events else [])
    for name, key, help_text in EVENT_COUNTERS:
        out.family(name, "counter", help_text, [(backend, events.get(key))] if events else [])

    circuits = metrics.get("llm_circuits") or []
    out.family("llm_circuit_state", "gauge", "1 for the state each LLM target's circuit is in (closed, open, half_open).",
               [({"target": c["target"], "state": s}, 1 if c["state"] == s else 0)
                for c in circuits for s in CIRCUIT_STATES])
    out.family("llm_circuit_failure_rate", "gauge", "Failure rate in the breaker's window, per LLM target.",
               [({"target": c["target"]}, c["failure_rate"]) for c in circuits])
    out.family("llm_circuit_window_requests", "gauge", "Outcomes in the breaker's window, per LLM target.",
               [({"target": c["target"]}, c["window_requests"]) for c in circuits])

    cron = metrics.get("cron") or {}
    out.family("cron_backoff_available", "gauge", "1 when the cron backoff library's job states could be read.",
               [({}, 1 if cron.get("available") else 0)])
    out.family("cron_jobs", "gauge", "Cron jobs in backoff or disabled.",
               [({"state": s}, cron.get(s, 0)) for s in ("backoff", "disabled")] if cron.get("available") else [])

    recoveries = metrics.get("recoveries") or {}
    totals = recoveries.get("totals") or []
    out.family("recoveries_total", "counter", "Recorded failures by failure type and outcome, since the store began.",
               [({"failure_type": t["failure_type"], "outcome": t["outcome"]}, t["count"]) for t in totals])
    by_type = recoveries.get("by_type") or {}
    window = []
    for failure_type, stats in sorted(by_type.items()):
        for outcome in ("repaired", "escalated", "planned"):
            window.append(({"failure_type": failure_type, "outcome": outcome}, stats[outcome]))
    name, _, help_text = RECOVERY_WINDOW[0]
    out.family(name, "gauge", help_text, window)
    for name, key, help_text in RECOVERY_WINDOW[1:]:
        out.family(name, "gauge", help_text,
                   [({"failure_type": t}, s[key]) for t, s in sorted(by_type.items())])
    _sensor_families(out, metrics.get("sensors") or [])
    storm = metrics.get("storm") or {}
    out.family("recovery_storm_total", "counter",
               "Failures not recovered on their own (coalesced onto a running recovery, over_budget) and "
               "budget escalations (budget_escalations), since the store began.",
               [({"reason": reason}, storm[reason]) for reason in sorted(storm)])
    out.family("metrics_window_seconds", "gauge", "Length of the window the *_window, rate and MTTR metrics cover.",
               [({}, recoveries.get("window_s"))] if recoveries.get("window_s") else [])
    return out.text()


SENSOR_GAUGES = (
    ("sensor_heartbeat_age_seconds", "heartbeat_age_s", "Seconds since the sensor's last heartbeat."),
    ("sensor_last_read_timestamp_seconds", "last_read_at", "When the sensor last read entries (Unix time)."),
    ("sensor_last_dispatch_timestamp_seconds", "last_dispatch_at", "When the sensor last dispatched (Unix time)."),
    ("sensor_stream_lag", "lag", "Entries of the stream not yet delivered to the consumer group (Redis 7)."),
    ("sensor_stream_pending", "pending", "Entries delivered to the consumer group and not yet acknowledged."),
    ("sensor_oldest_pending_age_seconds", "oldest_pending_age_s", "Age of the oldest unacknowledged entry."),
)
SENSOR_COUNTERS = (
    ("sensor_dispatched_total", "dispatched", "Triggers the sensor dispatched since it started."),
    ("sensor_dead_lettered_total", "dead_lettered", "Entries or jobs the sensor dead-lettered since it started."),
    ("sensor_reconnects_total", "reconnects", "Reconnections to Redis since the sensor started."),
)


def _sensor_families(out, sensors):
    running = [s for s in sensors if s.get("status") != "stopped"]
    out.family("sensor_up", "gauge", "1 while the sensor's heartbeat is fresh and nothing waits too long.",
               [({"sensor": s["sensor"]}, 1 if s["status"] == "up" else 0) for s in running])
    for name, key, help_text in SENSOR_GAUGES + SENSOR_COUNTERS:
        kind = "counter" if name.endswith("_total") else "gauge"
        out.family(name, kind, help_text, [({"sensor": s["sensor"]}, s.get(key)) for s in running
                                           if isinstance(s.get(key), (int, float))])


def write_textfile(path, text):
    """Write `text` to `path` atomically (temp file in the same directory, then rename).

    node_exporter's textfile collector reads only `*.prom` files and may read
    while we write; the rename makes it see the old or the new file, never half.
    """
    if not path.endswith(".prom"):
        raise ValueError("write_to must name a .prom file (node_exporter's textfile collector reads only those)")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".synthralos-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return {"path": os.path.abspath(path), "bytes": len(text.encode("utf-8"))}
