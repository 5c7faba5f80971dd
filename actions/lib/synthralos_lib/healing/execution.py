"""Repair execution: apply one plan step through the agent API and judge the re-run.

Each of the seven repair actions becomes one agent API call
(docs/agent_api.md):

| action                | call                         | what changes                                  |
|-----------------------|------------------------------|-----------------------------------------------|
| retry_execution       | POST executions              | nothing                                       |
| retry_with_backoff    | POST executions              | nothing (the workflow waited `delay_s` first) |
| reduce_max_iterations | POST executions              | overrides.max_iterations                      |
| simplify_query        | POST executions              | input: the original, simplified               |
| regenerate_output     | POST executions              | overrides.output_instructions                 |
| switch_provider       | POST executions              | overrides.provider, overrides.model           |
| retry_tool            | POST executions/{id}/tool-retries | re-runs one tool and resumes             |

A re-run repaired the agent only if the API call succeeded, the new
execution is finished, and failure detection finds nothing wrong with it
(a "succeeded" run with empty output is still a failure).
"""

import re
import time

from synthralos_lib.healing import agent_api
from synthralos_lib.healing.detection import detect_failure
from synthralos_lib.healing.plans import RETRY_TOOL, SIMPLIFY_QUERY, PlanRejected, repair_context, validate_step

# Fixed instructions per regenerate_output format: the text the platform adds
# to the agent's prompt is always ours, never an LLM planner's.
OUTPUT_INSTRUCTIONS = {
    "non_empty": "Your previous answer was empty or an error message. Answer the request fully; never reply with "
    "an empty answer or an error notice.",
    "json": "Your previous answer was not valid output. Reply with one valid JSON document only, no prose, "
    "no code fences.",
    "plain_text": "Your previous answer was not valid output. Reply in plain text only, with no error notices.",
}

_SENTENCE_END = re.compile(r"[.!?](?=\s)")


class StepInvalid(ValueError):
    """The step given to execute_step is not a valid plan step."""


def check_step(step):
    """The step, validated against the plan schema (the same rules an LLM plan passes)."""
    try:
        return validate_step(step)
    except PlanRejected as exc:
        raise StepInvalid("invalid repair step: %s" % exc)


def simplify_query(text, max_chars):
    """Collapse whitespace and cut at the last sentence end (else word) within `max_chars`."""
    text = " ".join((text or "").split())
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    ends = [m.end() for m in _SENTENCE_END.finditer(head + " ")]
    if ends and ends[-1] >= max_chars // 2:
        return head[: ends[-1]]
    cut = head.rfind(" ")
    return head[:cut] if cut >= max_chars // 2 else head


def build_request(step, original_input=None):
    """`(call, kwargs)` for the agent API: call is "reexecute" or "retry_tool"."""
    action, params = step["action"], step["params"]
    if action == RETRY_TOOL:
        return "retry_tool", {"tool": params["tool"], "tool_call_id": params.get("tool_call_id")}
    overrides, new_input = {}, None
    if action == "reduce_max_iterations":
        overrides["max_iterations"] = params["max_iterations"]
    elif action == SIMPLIFY_QUERY:
        new_input = simplify_query(original_input, params["max_chars"])
    elif action == "regenerate_output":
        overrides["output_instructions"] = OUTPUT_INSTRUCTIONS[params["format"]]
    elif action == "switch_provider":
        overrides["provider"], overrides["model"] = params["provider"], params["model"]
    return "reexecute", {"input": new_input, "overrides": overrides}


def execute_step(
    client, agent_id, execution_id, step, failure=None, attempt=1, wait_s=300, clock=time.time, secrets=()
):
    """Apply `step` to the failed execution; return what happened (never raises for API trouble)."""
    step = check_step(step)
    try:
        agent_id = agent_api.check_id(agent_id, "agent_id")
        execution_id = agent_api.check_id(execution_id, "execution_id")
    except ValueError as exc:
        raise StepInvalid(str(exc))
    if failure is not None and not isinstance(failure, dict):
        raise StepInvalid("failure must be the result of synthralos.detect_failure (an object)")
    started = clock()
    outcome = {
        "repaired": False,
        "action": step["action"],
        "step": step,
        "attempt": attempt,
        "request": None,
        "new_execution_id": None,
        "execution": None,
        "failure": None,
        "error": None,
    }
    original_input = (failure or {}).get("input")
    original_input = original_input if isinstance(original_input, str) else None
    if step["action"] == SIMPLIFY_QUERY and not original_input:
        found = client.get_execution(agent_id, execution_id)
        if not found.ok:
            return _done(outcome, _error(found), started, clock)
        original_input = found.body.get("input") if isinstance(found.body.get("input"), str) else None
        if not original_input:
            outcome["error"] = {"class": "no_input", "message": "the failed execution has no text input to simplify"}
            return _done(outcome, None, started, clock)
    call, kwargs = build_request(step, original_input)
    context = repair_context(failure, step["action"], secrets)  # regenerate/simplify/reduce say what went wrong
    if context is not None and call == "reexecute":
        kwargs["repair_context"] = context
    reason = "synthralos repair: %s (%s)" % (step["action"], step["reason"])
    key = "synthralos:%s:%s:%s" % (execution_id, attempt, step["action"])
    outcome["request"] = {
        "call": call,
        "overrides": kwargs.get("overrides") or {},
        "input": kwargs.get("input"),
        "tool": kwargs.get("tool"),
        "repair_context": kwargs.get("repair_context"),
    }
    if call == "retry_tool":
        result = client.retry_tool(agent_id, execution_id, reason=reason, idempotency_key=key, **kwargs)
    else:
        result = client.reexecute(agent_id, execution_id, reason=reason, idempotency_key=key, **kwargs)
    if result.ok and not agent_api.is_terminal(result.body):
        result = client.wait_for(agent_id, result, wait_s)
    if not result.ok:
        return _done(outcome, _error(result), started, clock)
    execution = result.body
    outcome["new_execution_id"] = execution.get("id")
    outcome["execution"] = execution
    if not agent_api.is_terminal(execution):
        outcome["error"] = {"class": "still_running", "message": "the re-run did not finish within %s s" % wait_s}
        return _done(outcome, None, started, clock)
    judged = detect_failure(execution, secrets)
    outcome["failure"] = judged if judged["failed"] else None
    outcome["repaired"] = not judged["failed"]
    return _done(outcome, None, started, clock)


def _error(result):
    return {
        "class": result["error_class"],
        "message": result["error_message"],
        "status": result["status"],
        "retry_after_s": result["retry_after_s"],
    }


def _done(outcome, error, started, clock):
    if error is not None:
        outcome["error"] = error
    now = clock()
    outcome["duration_s"] = round(now - started, 3)
    outcome["finished_at"] = now
    # The compact record agent_recovery keeps per attempt (the full execution stays in this result).
    outcome["attempt_record"] = {
        "attempt": outcome["attempt"],
        "action": outcome["action"],
        "params": outcome["step"]["params"],
        "repaired": outcome["repaired"],
        "new_execution_id": outcome["new_execution_id"],
        "error_class": (outcome["error"] or {}).get("class"),
        "error_message": (outcome["error"] or {}).get("message"),
        "failure_type": (outcome["failure"] or {}).get("failure_type"),
        "duration_s": outcome["duration_s"],
    }
    return outcome
