"""agent_recovery's end as events, forwarded by the task that records it.

A recovery ends in the task that records its final outcome: begin_recovery
when the first step settles it, else record_failure. That task forwards the
recovery's `agent_execution` event, plus `agent_repair` when it repaired the
agent or `agent_failure` when it escalated (the workflow then fails), the
way the forwarding rules forward an llm_retry run: the same builder, the
same properties (`workflow`, `result: {"output": ...}`, `dry_run` for a
rehearsal) and the same messageId (the recovery's st2 execution id and the
event name).

Why here and not by a rule on st2's actiontrigger: each rule firing is one
more python execution (a process, 1.5-4 s on a small box), two per repaired
recovery, competing with the next recoveries of a burst. Only the
ends st2 decides itself (timeout, cancel, abandon: no task of the pack runs
then) are left to the `forward_interrupted_recovery*` rules.

With Redis the events are queued for the flusher sensor, never sent inline,
so a slow data plane adds nothing to the recovery (without Redis: one inline
attempt of at most 1 s, then the datastore queue, as forward_event does).
Forwarding never raises: telemetry must not fail a recovery.
"""

import datetime
import logging
import time

LOG = logging.getLogger(__name__)

WORKFLOW = "synthralos.agent_recovery"
SUCCEEDED, FAILED = "succeeded", "failed"


def recovery_output(outcome, failure, plan, attempt_log, repaired_by, duration_s, storm):
    """What agent_recovery's `output:` block gives for this outcome."""
    attempt_log = attempt_log or []
    return {
        "outcome": outcome,
        "repaired": outcome == "repaired",
        "repaired_by": repaired_by,
        "attempts": len(attempt_log),
        "attempt_log": attempt_log,
        "duration_s": duration_s,
        "plan": plan,
        "failure": failure,
        "storm": storm,
    }


def end_events(status, output, dry_run=False):
    """The events of a recovery that ended with `status` (st2's) and `output`."""
    names = ["agent_execution"]
    if status == SUCCEEDED and output.get("repaired") and not dry_run:
        names.append("agent_repair")
    if status == FAILED:
        names.append("agent_failure")
    return names


def forward_recovery_end(settings, store, service, recovery_id, agent_id, status, output, started_at,
                         trace_context=None, dry_run=False, clock=time.time):
    """Queue the end events of recovery `recovery_id`; returns {event: what happened to it}."""
    from synthralos_lib.events.builders import agent_event
    from synthralos_lib.events.forwarding import correlation, forward
    from synthralos_lib.state.shapes import bounded

    trace_id = trace_context.get("trace_id") if isinstance(trace_context, dict) else None
    # JSON-able (NaN/Infinity -> None), scrubbed and capped: one odd value must not lose the event.
    details = {"workflow": WORKFLOW, "result": {"output": bounded(output, settings.secrets())}}
    if dry_run:  # analytics must tell a rehearsal from a real run
        details["dry_run"] = True
    done = {}
    for name in end_events(status, output, dry_run):
        try:
            corr = correlation(settings, source_execution_id=recovery_id, agent_id=agent_id,
                               trace_id=trace_id if isinstance(trace_id, str) else None)
            event = agent_event(name, corr, status, started_at=_utc(started_at), ended_at=_utc(clock()),
                                details=details)
            done[name] = forward(settings, store, event, service=service, inline_flush=False)["status"]
        except Exception as exc:  # telemetry never fails the recovery; the reason is in the result
            LOG.warning("[RudderStack] %s of recovery %s not forwarded: %s", name, recovery_id, type(exc).__name__)
            done[name] = "error: %s" % type(exc).__name__
    return done


def _utc(epoch):
    """An epoch time (what the recovery's tasks carry) as the builders' datetime; None for None or a
    value no datetime holds (the event then has no start, rather than no event)."""
    try:
        return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
