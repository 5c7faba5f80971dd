"""What to do after an LLM call: the one decision function, and its backoff.

`decide(history, outcome, policy, chain, skip, rand)` is pure: given the
attempts made so far for one request, the outcome of the latest one (a
`call_llm` dict), the retry policy, the ordered chain of target names, the
targets that may not be used now (open circuits) and a random number for the
jitter, it answers one of

* `done`        the call succeeded;
* `retry`       call the same target again after `delay_s`;
* `next_target` call `target` (the next usable one in the chain) now;
* `give_up`     nothing left to try (or the request itself is bad).

Per class (the same table as docs/llm.md, "Decision"):

| class            | same target                                  | then            |
|------------------|----------------------------------------------|-----------------|
| transient        | backoff, up to max_attempts                  | next target     |
| rate_limited     | wait Retry-After if <= retry_after_cap_s,    | next target     |
|                  | else backoff; up to max_attempts             |                 |
| overloaded       | backoff, up to overloaded_max_attempts       | next target     |
| quota_exhausted  | never                                        | next target     |
| auth_config      | never                                        | next target     |
| context_overflow | never (a larger-context model may fit)       | next target     |
| content_policy   | never                                        | next target     |
| bad_request      | never                                        | give up         |
| invalid_output   | regenerate at once, up to invalid_output_... | next target     |

The provider's own signals come first (`llm_errors.retry_signals` reads them):

* `x-should-retry: false` (`should_retry` False) never retries the same target,
  whatever the class: the request moves on (or gives up). `x-should-retry:
  true` retries the same target (backoff or the provider's wait, within
  `max_attempts`) even for a class that would not, e.g. a 400; a target whose
  circuit is open is still skipped.
* A wait (`retry_after_s`, from the headers or the message) up to
  `retry_after_cap_s` is waited on the same target. A longer one is not worth
  waiting: the target cools for that long (routing records it) and the request
  moves on at once, or gives up when no target is left.
* A wait longer than `quota_after_s` (default 1 h) is a quota, whatever the
  status said (Anthropic has answered a monthly spend cap with a 429
  `rate_limit_error` and a retry-after-ms of days): `effective_outcome` turns
  it into quota_exhausted, which alerts and opens the account's circuits for
  that long.

Backoff is exponential
(`base_delay_s * 2^(n-1)` for the n-th failure on a target), capped at
`max_delay_s`, with full, equal or no jitter. Every delay is >= 0, backoff
delays are <= max_delay_s, Retry-After delays are <= retry_after_cap_s.
"""

import math
import random

from synthralos_lib import backoff
from synthralos_lib.llm import errors as E
from synthralos_lib.state.config import schema_defaults
from synthralos_lib.state.redaction import scrub_and_cap
from synthralos_lib.state.validation import check_number

DONE = "done"
RETRY = "retry"
NEXT_TARGET = "next_target"
GIVE_UP = "give_up"

_RETRY_KEYS = ("max_attempts", "base_delay_s", "max_delay_s", "jitter", "retry_after_cap_s", "quota_after_s")
# The config's `retry` and `reroute` defaults (config.schema.yaml), plus two keys only a request can override.
DEFAULT_POLICY = dict(
    {key: schema_defaults("retry")[key] for key in _RETRY_KEYS},
    max_targets=schema_defaults("reroute")["max_targets"],
    overloaded_max_attempts=2,
    invalid_output_max_attempts=2,
)

_INT_KEYS = ("max_attempts", "max_targets", "overloaded_max_attempts", "invalid_output_max_attempts")
_FLOAT_KEYS = ("base_delay_s", "max_delay_s", "retry_after_cap_s", "quota_after_s")
JITTERS = backoff.JITTERS

# Classes that never retry the same target, and where they go instead.
_SWITCH_AT_ONCE = frozenset([E.QUOTA_EXHAUSTED, E.AUTH_CONFIG, E.CONTEXT_OVERFLOW, E.CONTENT_POLICY])
_GIVE_UP_AT_ONCE = frozenset([E.BAD_REQUEST])
# Classes operators should hear about: they need a human (billing, keys, config).
ALERT_CLASSES = frozenset([E.QUOTA_EXHAUSTED, E.AUTH_CONFIG])


class PolicyError(ValueError):
    """A policy override is unknown or out of range."""


def make_policy(retry_section=None, reroute_section=None, overrides=None):
    """The effective policy: defaults, then the pack config's `retry`/`reroute`, then per-request overrides."""
    policy = dict(DEFAULT_POLICY)
    for key, value in (retry_section or {}).items():
        if key in policy:
            policy[key] = value
    if reroute_section and "max_targets" in reroute_section:
        policy["max_targets"] = reroute_section["max_targets"]
    unknown = sorted(set(overrides or {}) - set(DEFAULT_POLICY))
    if unknown:
        raise PolicyError("unknown policy keys: %s (known: %s)" % (", ".join(unknown), ", ".join(sorted(DEFAULT_POLICY))))
    policy.update(overrides or {})
    return validate_policy(policy)


def validate_policy(policy):
    out = dict(policy)
    try:
        for key in _INT_KEYS:
            check_number(out[key], "policy." + key, minimum=1, integer=True, required=True)
        for key in _FLOAT_KEYS:
            out[key] = float(check_number(out[key], "policy." + key, minimum=0, required=True))
    except ValueError as exc:
        raise PolicyError(str(exc))
    if out["jitter"] not in JITTERS:
        raise PolicyError("policy.jitter must be one of %s" % ", ".join(JITTERS))
    return out


def backoff_delay(failures, policy, rand):
    """Delay before the retry that follows the `failures`-th failure on a target (1-based)."""
    return backoff.capped_exponential(max(failures, 1), policy["base_delay_s"], policy["max_delay_s"],
                                      jitter=policy["jitter"], draw=rand)


def whole_seconds(delay_s):
    """An Orquesta `delay:` is whole seconds: round up, so we never call before a Retry-After ends."""
    return int(math.ceil(max(0.0, delay_s)))


def _decision(action, target, delay_s, reason, outcome, alert=False):
    return {
        "action": action,
        "target": target,
        "delay_s": delay_s,
        "wait_s": whole_seconds(delay_s),
        "reason": reason,
        "error_class": outcome.get("error_class") if outcome else None,
        "alert": bool(alert),
    }


def effective_outcome(outcome, policy):
    """`outcome`, or a copy classed quota_exhausted when a rate limit or overload asked for a wait longer
    than `quota_after_s` (a wait of hours or days is a spending or usage cap, not a rate limit)."""
    if not outcome or outcome.get("ok") or outcome.get("error_class") not in (E.RATE_LIMITED, E.OVERLOADED):
        return outcome  # a 503 announcing hours of maintenance is an outage, not a quota
    wait = outcome.get("retry_after_s")
    if wait is None or wait <= policy["quota_after_s"]:
        return outcome
    quota = dict(outcome, error_class=E.QUOTA_EXHAUSTED)
    quota["error_message"] = scrub_and_cap("asked to wait %gs, over quota_after_s %gs: a quota; %s" % (
        wait, policy["quota_after_s"], outcome.get("error_message") or outcome.get("error_class")), 500)
    return quota


def next_target(history, current, chain, skip, policy):
    """The first target after `current` in `chain` not tried yet and not skipped, or None."""
    tried = [a.get("target") for a in history]
    if current is not None:
        tried.append(current)
    distinct = len(set(tried))
    if distinct >= policy["max_targets"]:
        return None
    start = chain.index(current) + 1 if current in chain else 0
    for name in chain[start:]:
        if name not in tried and name not in skip:
            return name
    return None


def decide(history, outcome, policy, chain, skip=(), rand=None):
    """The decision after `outcome` (None before the first call). See the module doc.

    `history` lists earlier attempts of this request (dicts with at least
    `target`), not including `outcome`. `skip` names targets that may not be
    called now (open circuits). `rand` in [0, 1] drives the jitter.
    """
    if rand is None:
        rand = random.random()
    skip = set(skip)
    if outcome is None:
        first = next_target(history, None, chain, skip, policy)
        if first is None:
            return _decision(GIVE_UP, None, 0.0, "no usable target (all skipped or none configured)", None)
        return _decision(NEXT_TARGET, first, 0.0, "first attempt", None)

    current = outcome.get("target")
    if outcome.get("ok"):
        return _decision(DONE, current, 0.0, "served by %s" % current, outcome)

    outcome = effective_outcome(outcome, policy)
    klass = outcome.get("error_class") or E.TRANSIENT
    alert = klass in ALERT_CLASSES
    failures = 1 + sum(1 for a in history if a.get("target") == current)

    def switch(reason):
        target = next_target(history, current, chain, skip, policy)
        if target is None:
            return _decision(GIVE_UP, None, 0.0, reason + "; no target left", outcome, alert)
        return _decision(NEXT_TARGET, target, 0.0, reason + "; next target " + target, outcome, alert)

    verdict = outcome.get("should_retry")
    if verdict is False:
        if klass in _GIVE_UP_AT_ONCE:
            return _decision(GIVE_UP, None, 0.0, "%s: the request itself is invalid" % klass, outcome, alert)
        return switch("%s on %s, x-should-retry: false" % (klass, current))
    if verdict is not True:
        if klass in _GIVE_UP_AT_ONCE:
            return _decision(GIVE_UP, None, 0.0, "%s: the request itself is invalid" % klass, outcome, alert)
        if klass in _SWITCH_AT_ONCE:
            return switch("%s on %s" % (klass, current))

    if klass == E.OVERLOADED:
        limit = min(policy["max_attempts"], policy["overloaded_max_attempts"])
    elif klass == E.INVALID_OUTPUT:
        limit = min(policy["max_attempts"], policy["invalid_output_max_attempts"])
    else:
        limit = policy["max_attempts"]
    if failures >= limit:
        return switch("%s on %s, %d of %d attempts used" % (klass, current, failures, limit))
    if current in skip:
        return switch("%s on %s and its circuit is open" % (klass, current))

    if klass == E.INVALID_OUTPUT:
        return _decision(RETRY, current, 0.0, "invalid_output: regenerate (%d of %d)" % (failures + 1, limit),
                         outcome, alert)

    why = "%s%s" % (klass, ", x-should-retry: true" if verdict is True else "")
    retry_after = outcome.get("retry_after_s")
    if retry_after is not None and retry_after >= 0:
        if retry_after <= policy["retry_after_cap_s"]:
            return _decision(RETRY, current, float(retry_after),
                             "%s: provider asked to wait %gs" % (why, retry_after), outcome, alert)
        return switch("%s: the provider's wait %gs is over the %gs cap, %s cools for it"
                      % (why, retry_after, policy["retry_after_cap_s"], current))
    delay = backoff_delay(failures, policy, rand)
    return _decision(RETRY, current, delay, "%s: backoff %.3fs (attempt %d of %d)" % (why, delay, failures + 1, limit),
                     outcome, alert)
