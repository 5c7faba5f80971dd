"""One step of the llm_retry / reroute_request loop: record, decide, pick a target.

Workflows call this (through the `llm_decide` action) before the first call
and after every call. It

1. records the latest outcome into the target's shared circuit breaker;
2. asks `llm_policy.decide` what to do (the one decision function);
3. checks the chosen target's breaker (open circuits are skipped, a half-open
   one is probed by exactly one caller) and decides again without it when it
   is not usable;
4. returns the decision, the attempt history with this outcome appended, and
   the total delay so far.
"""

import random

from synthralos_lib.llm import policy as llm_policy
from synthralos_lib.state.config import ConfigError
from synthralos_lib.llm.breaker import COOL_CLASSES, Breakers

# What of a call outcome is kept in the attempt history (and so in workflow output).
HISTORY_FIELDS = ("target", "provider", "model", "region", "ok", "status", "error_class", "error_message",
                  "retry_after_s", "latency_s")


def resolve_chain(settings, targets=None):
    """Target names to try, in order: `targets` if given (each must be configured), else every
    configured target by priority. With `features.enable_reroute` off, only the first."""
    configured = [t["name"] for t in settings.llm_targets()]
    if targets:
        unknown = [name for name in targets if name not in configured]
        if unknown:
            raise ConfigError("unknown llm target(s): %s (configured: %s)" % (", ".join(unknown),
                                                                               ", ".join(configured) or "none"))
        chain = list(dict.fromkeys(targets))
    else:
        chain = configured
    if not chain:
        raise ConfigError("no llm_targets are configured")
    if not settings.flag("enable_reroute"):
        chain = chain[:1]
    return chain


def make_policy(settings, overrides=None, one_attempt_per_target=False):
    overrides = dict(overrides or {})
    if one_attempt_per_target:
        overrides.update(max_attempts=1, overloaded_max_attempts=1, invalid_output_max_attempts=1)
    return llm_policy.make_policy(settings.section("retry"), settings.section("reroute"), overrides)


def next_step(settings, store, chain, outcome=None, history=None, policy=None, record=True, rand=None, clock=None,
              total_delay_s=0):
    """The decision after `outcome` (None before the first call), with breakers applied.

    Returns the decision dict of `llm_policy.decide` plus `history` (with this
    outcome and the wait that follows it appended), `attempts`,
    `total_delay_s` (the `total_delay_s` given, from the previous step, plus
    this step's wait), `chain`, `skipped` ([{target, why}]) and `breaker` (the
    status of the outcome's target after recording, or None).
    """
    history = [dict(a) for a in history or []]
    policy = policy or make_policy(settings)
    rng = random.Random() if rand is None else None
    kwargs = {"clock": clock} if clock is not None else {}
    timeouts = [settings.llm_target(name).get("timeout_s") or 60 for name in chain]
    breakers = Breakers(store, settings.section("circuit_breaker"), probe_ttl_s=max(timeouts) + 30, **kwargs)

    breaker = None
    if outcome is not None and record and outcome.get("target") in chain:
        cool_s = None
        if not outcome.get("ok") and outcome.get("error_class") in COOL_CLASSES:
            failures = 1 + sum(1 for a in history if a.get("target") == outcome.get("target"))
            cool_s = outcome.get("retry_after_s") or llm_policy.backoff_delay(failures, dict(policy, jitter="none"), 1)
        breaker = breakers.record(outcome["target"], bool(outcome.get("ok")), outcome.get("error_class"), cool_s)

    skip, skipped = set(), []
    while True:
        draw = rand if rand is not None else rng.random()
        decision = llm_policy.decide(history, outcome, policy, chain, skip, draw)
        if decision["action"] not in (llm_policy.RETRY, llm_policy.NEXT_TARGET):
            break
        allowed, why = breakers.try_acquire(decision["target"], retrying=decision["action"] == llm_policy.RETRY)
        if allowed:
            break
        skip.add(decision["target"])
        skipped.append({"target": decision["target"], "why": why})
    if decision["action"] == llm_policy.GIVE_UP and skipped:
        decision = _wait_for_cooled_target(breakers, history, outcome, policy, chain, skip, skipped, decision)

    if outcome is not None:
        entry = {field: outcome.get(field) for field in HISTORY_FIELDS}
        entry["wait_after_s"] = decision["wait_s"]
        history.append(entry)
    decision.update({
        "history": history,
        "attempts": len(history),
        "total_delay_s": (total_delay_s or 0) + decision["wait_s"],
        "chain": chain,
        "skipped": skipped,
        "breaker": breaker,
    })
    return decision


def _wait_for_cooled_target(breakers, history, outcome, policy, chain, skip, skipped, decision):
    """Every usable target is only cooling down (429/overloaded), none is broken:
    rather than give up, wait for the one whose cooldown ends first."""
    cooled = []
    for item in skipped:
        left = breakers.status(item["target"])["cooling_for_s"]
        if item["why"].startswith("cooling down") and left > 0:
            cooled.append((left, item["target"]))
    for left, name in sorted(cooled):
        alternative = llm_policy.decide(history, outcome, policy, chain, skip - {name}, 0.0)
        if alternative["target"] == name:
            delay = max(alternative["delay_s"], left)
            alternative.update(delay_s=delay, wait_s=llm_policy.whole_seconds(delay),
                               reason=alternative["reason"] + "; every usable target is cooling down, "
                               "waiting %.1fs for %s" % (left, name))
            return alternative
    return decision
