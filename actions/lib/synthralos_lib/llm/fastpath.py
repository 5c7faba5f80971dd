"""The attempt loop of one LLM request, run in-process (the `llm_request` action).

In st2 every action execution is a new process (1-3 s each on a small box), so
a request that retried through one workflow task per attempt paid seconds per
attempt for waits of milliseconds. `serve` runs the whole loop inside ONE
execution: call -> `routing.next_step` (record the outcome in the shared
breaker, `policy.decide`, breaker check) -> sleep the short wait -> call ...,
the same decisions the workflow's slow path takes, from the same modules.

It hands control back to the workflow (result `handed_back: true`, action
`retry` / `next_target`, `wait_s`, and a `resume` state to pass back in)
only when

* the next wait is longer than `fast_path_max_wait_s` (a long Retry-After, a
  target cooling down for everyone, a long backoff): the workflow then waits
  in a task `delay:` that st2 persists, so the wait survives restarts and
  holds no worker; or
* the call after the wait could end past the execution's own time budget
  (`fast_path_budget_s`, kept under the python runner's timeout).

Otherwise it ends with `done` or `give_up`. Quota/auth failures are returned
as `alerts` (trigger payloads, naming the account and the sibling targets
whose circuits opened with it) for the workflow to dispatch.
"""

import time

from synthralos_lib.llm import policy as llm_policy
from synthralos_lib.llm.routing import make_breakers, next_step
from synthralos_lib.state.config import schema_defaults
from synthralos_lib.state.validation import check_number

DEFAULT_MAX_WAIT_S = float(schema_defaults("retry")["fast_path_max_wait_s"])
DEFAULT_BUDGET_S = float(schema_defaults("retry")["fast_path_budget_s"])
_CONTINUE = (llm_policy.RETRY, llm_policy.NEXT_TARGET)
_OUTCOME_FIELDS = ("content", "provider", "model", "region", "usage")


def limits(settings):
    """(max_wait_s, budget_s) of the fast path from the pack config's `retry` section."""
    section = settings.section("retry")
    return float(section["fast_path_max_wait_s"]), float(section["fast_path_budget_s"])


def alert_payload(entry, decision):
    """The synthralos.llm_target_alert payload for a quota/auth failure (history `entry`)."""
    return {
        "target": entry.get("target"),
        "provider": entry.get("provider"),
        "model": entry.get("model"),
        "region": entry.get("region"),
        "account": entry.get("account"),
        "account_targets_opened": list(decision.get("account_opened") or []),
        "error_class": decision.get("error_class"),
        "error_message": entry.get("error_message"),
        "status": entry.get("status"),
        "breaker": decision.get("breaker"),
        "next_action": decision.get("action"),
        "next_target": decision.get("target"),
    }


def serve(settings, store, chain, policy, call, resume=None, max_wait_s=DEFAULT_MAX_WAIT_S,
          budget_s=DEFAULT_BUDGET_S, sleep=time.sleep, clock=time.monotonic, log=None):
    """Run one request until it is served, given up, or handed back (see the module doc).

    `call(target_name) -> outcome` makes one attempt (`client.call_llm`).
    `resume` is the `resume` of a previous hand-back: its pending decision is
    carried out at once (the workflow has already waited). Returns a JSON-able
    result: action, target, reason, wait_s, handed_back, resume, the last
    outcome's content/provider/model/region/usage, served_by, attempts,
    attempt_count, total_delay_s, skipped, alerts, calls (made by this
    execution) and breaker_warning.
    """
    log = log or (lambda message: None)
    started = clock()
    breakers = make_breakers(settings, store, chain)
    alerts, calls, outcome, waited = [], 0, {}, False
    if resume:
        _check_resume(resume, chain)
        decision = dict(resume["pending"])
        history = [dict(a) for a in resume.get("history") or []]
        skipped = list(resume.get("skipped") or [])
        total = float(resume.get("total_delay_s") or 0)
        waited = True
    else:
        decision = next_step(settings, store, chain, None, [], policy, breakers=breakers)
        history, skipped, total = [], list(decision["skipped"]), 0.0

    while decision["action"] in _CONTINUE:
        delay = 0.0 if waited else float(decision["delay_s"])
        timeout = float(settings.llm_target(decision["target"])["timeout_s"])  # load_config filled the default
        over_bound = delay > max_wait_s
        over_budget = calls > 0 and clock() - started + delay + timeout > budget_s
        if over_bound or over_budget:
            why = ("wait %.3fs is over the fast path's %gs bound" % (delay, max_wait_s) if over_bound
                   else "the next call could end past the %gs budget" % budget_s)
            log("[Retry] handing back to the workflow: %s; it waits %ds in a task delay" % (why, decision["wait_s"]))
            total += decision["wait_s"]
            if history:
                history[-1]["wait_after_s"] = decision["wait_s"]
            pending = {k: decision[k] for k in ("action", "target", "delay_s", "wait_s", "reason", "error_class",
                                                "alert")}
            resume_state = {"pending": pending, "history": history, "skipped": skipped,
                            "total_delay_s": round(total, 3)}
            return _result(decision, outcome, history, skipped, alerts, calls, total, breakers, resume_state)
        if delay:
            sleep(delay)
            total += delay
            if history:
                history[-1]["wait_after_s"] = round(delay, 3)
        waited = False
        outcome = call(decision["target"])
        calls += 1
        decision = next_step(settings, store, chain, outcome, history, policy, breakers=breakers)
        history = decision["history"]
        skipped.extend(decision["skipped"])
        log("[Retry] attempt %d target=%s ok=%s status=%s class=%s -> %s %s wait=%.3fs"
            % (len(history), outcome.get("target"), outcome.get("ok"), outcome.get("status"),
               history[-1]["error_class"], decision["action"], decision["target"] or "-", decision["delay_s"]))
        if decision["alert"]:
            alerts.append(alert_payload(history[-1], decision))
    return _result(decision, outcome, history, skipped, alerts, calls, total, breakers, None)


def _check_resume(resume, chain):
    """`resume` must be what a hand-back returned (it travels through workflow ctx)."""
    pending = resume.get("pending") if isinstance(resume, dict) else None
    if not isinstance(pending, dict) or pending.get("action") not in _CONTINUE:
        raise ValueError("resume.pending must be the pending decision of a handed-back llm_request")
    if pending.get("target") not in chain:
        raise ValueError("resume.pending.target %r is not in the target chain (%s)"
                         % (pending.get("target"), ", ".join(chain)))
    for key in ("delay_s", "wait_s"):
        check_number(pending.get(key), "resume.pending.%s" % key, required=True)
    check_number(resume.get("total_delay_s"), "resume.total_delay_s")
    if not isinstance(resume.get("history") or [], list) or not isinstance(resume.get("skipped") or [], list):
        raise ValueError("resume.history and resume.skipped must be lists")


def _result(decision, outcome, history, skipped, alerts, calls, total, breakers, resume_state):
    result = {field: (outcome or {}).get(field) for field in _OUTCOME_FIELDS}
    result.update({
        "action": decision["action"],
        "target": decision["target"],
        "reason": decision["reason"],
        "error_class": decision.get("error_class"),
        "wait_s": decision["wait_s"] if resume_state else 0,
        "handed_back": resume_state is not None,
        "resume": resume_state,
        "served_by": decision["target"] if decision["action"] == llm_policy.DONE else None,
        "attempts": history,
        "attempt_count": len(history),
        "total_delay_s": round(total, 3),
        "skipped": skipped,
        "alerts": alerts,
        "calls": calls,
        "breaker_warning": breakers.degraded,
    })
    return result
