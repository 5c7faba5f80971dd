"""The start of a recovery: from a failure to its first repair re-run in ONE st2 execution.

Every python action execution in st2 is a new process (1.5-4 s on a small
box), far more than the pack's own work. `start_recovery` (the
`begin_recovery` action, agent_recovery's first task) therefore does in one
process what used to take four executions:

1. **Detection.** A failure from the `synthralos.agent_failure` trigger was
   already classified by the sensor or the webhook; its verdict (`detection`:
   the trigger's failure_type and evidence) is trusted and only the facts a
   plan needs (provider, model, max_iterations, input, Retry-After) are read
   from the run. A caller with a bare result gets `detection.detect_failure`.
   A `detection` that is not a usable verdict is ignored (the run is judged
   here, and the failure says so in `detected_by`).
2. **Storm control** (`healing.storm`): the failure may join a running
   recovery (`coalesced`) or be over the window's budget (`over_budget`);
   either way it is recorded and nothing is planned or re-run.
3. **Planning** (`plans.plan_repair`, rules or a validated LLM plan).
4. **The first step**, when its wait is at most `inline_delay_max_s`
   (a retry_with_backoff `delay_s`; every other step waits 0): applied with
   `execution.execute_step`, the same function execute_repair_step uses.
   A longer wait is left to the workflow's `execute_step` task `delay:`.
5. **Recording**, when the outcome is final (repaired; escalated because
   there was no step, the only step failed, or detection/planning broke):
   `history.record_outcome`, the function record_failure uses.

The result tells the workflow where to go (`next`): nothing (the outcome is
final), `execute_step` (from step `next_index`) or `escalate`. dry_run plans
and returns: no storm check, no re-run, no record. Detection or planning that
raises is recorded and escalated with the reason, never lost.
"""

import logging
import time

from synthralos_lib.healing import detection, execution, history, storm
from synthralos_lib.healing.plans import plan_repair
from synthralos_lib.state.redaction import scrub_and_cap

LOG = logging.getLogger(__name__)

NO_FAILURE, PLANNED, REPAIRED, ESCALATED = "no_failure", "planned", "repaired", "escalated"
EXECUTE_STEP, ESCALATE = "execute_step", "escalate"
DEFAULT_INLINE_DELAY_MAX_S = 5
_REASON_CHARS = 300
# The fields of detect_failure's evidence items and failed tools (what the trigger's evidence carries).
_CHECK_KEYS = ("check", "field", "detail")
_TOOL_KEYS = ("tool", "status", "error", "tool_call_id")


def trusted_failure(detected, result, secrets=()):
    """detect_failure's result shape from a trigger's verdict (`{"failure_type", "evidence"}`) plus
    the run's facts; ValueError when the verdict is not usable."""
    if not isinstance(detected, dict):
        raise ValueError("detection must be an object")
    failure_type = detected.get("failure_type")
    if failure_type not in detection.FAILURE_TYPES:
        raise ValueError("detection.failure_type must be one of %s" % ", ".join(detection.FAILURE_TYPES))
    evidence = detected.get("evidence") or {}
    if not isinstance(evidence, dict):
        raise ValueError("detection.evidence must be an object")
    checks = evidence.get("checks") or []
    tools = evidence.get("failed_tools") or []
    if not (isinstance(checks, list) and all(isinstance(c, dict) for c in checks)):
        raise ValueError("detection.evidence.checks must be a list of objects")
    if not (isinstance(tools, list) and all(isinstance(t, dict) and isinstance(t.get("tool"), str) for t in tools)):
        raise ValueError("detection.evidence.failed_tools must be a list of objects with a string tool")
    llm_class = evidence.get("llm_error_class")
    if failure_type == detection.LLM_ERROR and llm_class not in detection.LLM_ERROR_CLASSES:
        llm_class = None
    summary = evidence.get("summary")
    failure = {
        "failed": True,
        "failure_type": failure_type,
        "evidence": [_scrubbed(c, _CHECK_KEYS, secrets) for c in checks[: detection.MAX_EVIDENCE]],
        "summary": scrub_and_cap(summary if isinstance(summary, str) and summary else failure_type, 500, secrets),
        "llm_error_class": llm_class if failure_type == detection.LLM_ERROR else None,
        "failed_tools": [_scrubbed(t, _TOOL_KEYS, secrets) for t in tools[: detection.MAX_FAILED_TOOLS]],
    }
    failure.update(detection.execution_facts(result, secrets))
    return failure


def _scrubbed(item, keys, secrets):
    """The known `keys` of one evidence item, texts scrubbed then capped (anything else is dropped)."""
    return {k: scrub_and_cap(item[k], _REASON_CHARS, secrets) if isinstance(item.get(k), str) else None
            for k in keys if k in item}


def judge(result, detected=None, secrets=(), detector=detection.detect_failure):
    """The failure: the trusted verdict when one is given and usable, else detection's."""
    note = None
    if detected:
        try:
            failure = trusted_failure(detected, result, secrets)
            failure["detected_by"] = "trigger"
            return failure
        except ValueError as exc:
            note = "the given detection was not used (%s)" % exc
    failure = detector(result, secrets)
    failure["detected_by"] = "begin_recovery" + (": " + note if note else "")
    return failure


def _crash_reason(stage, exc, secrets):
    return scrub_and_cap("%s failed: %s: %s" % (stage, type(exc).__name__, exc), _REASON_CHARS, secrets)


def start_recovery(agent_id, execution_id, result, settings, store, client, detected=None, trace_context=None,
                   dry_run=False, llm_target=None, wait_s=300, max_history=history.DEFAULT_MAX_ENTRIES,
                   inline_delay_max_s=DEFAULT_INLINE_DELAY_MAX_S, recovery_id=None, fallback=None,
                   detector=detection.detect_failure, planner=plan_repair, clock=time.time, sleep=time.sleep,
                   secrets=()):
    """Run the start of agent_recovery (see the module doc); returns what the workflow publishes:

    `outcome` (no_failure, planned, repaired, escalated, coalesced, over_budget; None while steps
    remain), `next` (None, "execute_step" from step `next_index`, or "escalate" with
    `escalation_reason`), `failure`, `plan`, `steps`, `delays`, `attempt_log`, `repaired_by`,
    `started_at`, `duration_s`, `storm` (the StormControl decision, with the marker to release
    when the recovery ends) and `recorded` ({store, fallback_reason, error} once recorded).
    """
    if not isinstance(result, dict):
        raise ValueError("result must be the agent execution as an object")
    agent_id = history.check_agent_id(agent_id)  # stripped: the same agent in the history and the storm keys
    started_at = clock()
    control = storm.StormControl(store, settings.section("storm_control"), clock=clock)
    out = {"outcome": None, "next": None, "next_index": 0, "failure": None, "plan": None, "steps": [],
           "delays": [], "attempt_log": [], "repaired_by": None, "escalation_reason": None, "started_at": started_at,
           "duration_s": 0, "storm": None, "recorded": None}

    def record(outcome, **fields):
        try:
            done = history.record_outcome(
                store, fallback, agent_id, max_entries=max_history, now=clock(), secrets=secrets,
                execution_id=execution_id, failure=out["failure"], outcome=outcome, attempts=out["attempt_log"],
                plan_source=(out["plan"] or {}).get("source"), trace_context=trace_context, started_at=started_at,
                **fields)
            out["recorded"] = {"store": done["store"], "fallback_reason": done["fallback_reason"], "error": None}
            out["duration_s"] = done["duration_s"]
        except Exception as exc:  # the outcome stands even when no store took the record
            out["recorded"] = {"store": None, "fallback_reason": None,
                               "error": scrub_and_cap("%s: %s" % (type(exc).__name__, exc), _REASON_CHARS, secrets)}
            out["duration_s"] = round(clock() - started_at, 3)
        release()
        out["outcome"] = outcome
        return out

    def release():
        marker = (out["storm"] or {}).get("marker")
        if marker:
            try:
                control.release(marker)
            except Exception as exc:  # it expires with its TTL
                LOG.warning("[Self-Healing] running-recovery marker not released: %s", exc)

    def renew(ttl):
        marker = (out["storm"] or {}).get("marker")
        if marker:
            try:
                control.renew(marker, ttl)
            except Exception as exc:  # the shorter TTL stands: an identical failure may start its own recovery
                LOG.warning("[Self-Healing] running-recovery marker not renewed: %s", exc)

    def escalate(reason):
        out.update(next=ESCALATE, escalation_reason=reason)
        return record(ESCALATED)

    try:
        out["failure"] = judge(result, detected, secrets, detector)
    except Exception as exc:
        reason = _crash_reason("failure detection", exc, secrets)
        out["failure"] = {"failed": True, "failure_type": None, "summary": reason, "evidence": []}
        return escalate(reason)
    out["failure"].update(agent_id=agent_id, execution_id=execution_id, checked_at=started_at)
    if not out["failure"]["failed"]:
        out["outcome"] = NO_FAILURE
        return out

    if not dry_run:
        signed = storm.signature(out["failure"]["failure_type"], storm.error_text(result, out["failure"]), secrets)
        # Long enough for planning and one step; renewed below once the plan says how long it can run.
        out["storm"] = control.admit(agent_id, signed, recovery_id or execution_id, storm.marker_ttl([0], wait_s))
        decision = out["storm"]["decision"]
        if decision in (storm.COALESCED, storm.OVER_BUDGET):
            if out["storm"]["escalate"]:
                out.update(next=ESCALATE, escalation_reason=storm.budget_reason(out["storm"]["budget"]))
            fields = {k: out["storm"][k] for k in ("signature", "fingerprint", "joined_to", "budget")}
            return record(decision, storm=fields)

    try:
        out["plan"] = planner(out["failure"], settings, llm_target=llm_target or None, clock=clock)
    except Exception as exc:
        return escalate(_crash_reason("repair planning", exc, secrets))
    out["steps"], out["delays"] = out["plan"]["steps"], out["plan"]["delays"]
    if dry_run:
        out["outcome"] = PLANNED
        out["duration_s"] = round(out["plan"]["planned_at"] - started_at, 3)
        return out
    if not out["steps"]:
        return escalate("no repair step applies to this failure")
    if len(out["steps"]) > 1 or out["delays"][0]:
        renew(storm.marker_ttl(out["delays"], wait_s))
    if out["delays"][0] > inline_delay_max_s:
        out["next"] = EXECUTE_STEP  # a long wait: the workflow's task delay, persisted by st2
        return out

    if out["delays"][0] > 0:
        sleep(out["delays"][0])
    attempt = first_attempt(client, agent_id, execution_id, out["steps"][0], out["failure"], wait_s, clock, secrets)
    out["attempt_log"] = [attempt]
    if attempt["repaired"]:
        out["repaired_by"] = attempt["action"]
        return record(REPAIRED, repaired_by=attempt["action"])
    if len(out["steps"]) > 1:
        out.update(next=EXECUTE_STEP, next_index=1)
        return out
    return escalate("every repair step failed")


def first_attempt(client, agent_id, execution_id, step, failure, wait_s, clock, secrets):
    """The attempt record of step 1; a step that raises counts as a failed attempt (as in the workflow)."""
    try:
        record = execution.execute_step(client, agent_id, execution_id, step, failure=failure, attempt=1,
                                        wait_s=wait_s, clock=clock, secrets=secrets)["attempt_record"]
    except Exception as exc:
        record = {"attempt": 1, "action": step.get("action"), "repaired": False, "error_class": "action_failed",
                  "error_message": _crash_reason("execute_step", exc, secrets)}
    if record["repaired"]:
        LOG.info("[Self-Healing] agent %s repaired by %s (new execution %s)", agent_id, record["action"],
                 record["new_execution_id"])
    else:
        LOG.info("[Self-Healing] agent %s: %s did not repair it: %s", agent_id, record["action"],
                 record["error_message"] or record.get("failure_type"))
    return record
