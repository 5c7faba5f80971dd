"""One step of llm_request's loop: record, decide, pick a target.

`fastpath.run_request` calls this before the first call and after every call. It

1. records the latest outcome into the target's shared circuit breaker (a
   quota or auth failure opens every target of the same account; a wait the
   provider asked for cools the target for that long);
2. asks `llm_policy.decide` what to do (the one decision function);
3. checks the chosen target's breaker (open circuits are skipped, a half-open
   one is probed by exactly one caller) and decides again without it when it
   is not usable;
4. returns the decision, the attempt history with this outcome appended, and
   the total delay so far.
"""

import random

from synthralos_lib.llm import errors as E
from synthralos_lib.llm import policy as llm_policy
from synthralos_lib.state.config import ConfigError
from synthralos_lib.llm.breaker import COOL_CLASSES, OPEN_AT_ONCE, Breakers
from synthralos_lib.llm.client import account_of

# What of a call outcome is kept in the attempt history (and so in workflow output).
HISTORY_FIELDS = ("target", "provider", "model", "region", "account", "ok", "status", "error_class",
                  "error_message", "retry_after_s", "should_retry", "latency_s")


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


def accounts(settings):
    """Every configured target's account (target name -> account), for account-wide circuits."""
    return {t["name"]: account_of(t) for t in settings.llm_targets()}


def make_breakers(settings, store, chain, clock=None):
    """The breakers of `chain`'s targets (a probe lock outlives the slowest target's call); a quota or
    auth failure opens every configured target of the same account."""
    kwargs = {"clock": clock} if clock is not None else {}
    timeouts = [settings.llm_target(name)["timeout_s"] for name in chain]  # load_config filled the default
    return Breakers(store, settings.section("circuit_breaker"), probe_ttl_s=max(timeouts) + 30,
                    accounts=accounts(settings), **kwargs)


def reached_provider(outcome):
    """False for an outcome refused before any request (bad input): it says nothing about the target."""
    return not (outcome.get("status") is None and outcome.get("error_class") == E.BAD_REQUEST)


def next_step(settings, store, chain, outcome=None, history=None, policy=None, record=True, rand=None, clock=None,
              total_delay_s=0, breakers=None):
    """The decision after `outcome` (None before the first call), with breakers applied.

    Returns the decision dict of `llm_policy.decide` plus `history` (with this
    outcome and the wait that follows it appended), `attempts`,
    `total_delay_s` (the `total_delay_s` given, from the previous step, plus
    this step's wait), `chain`, `skipped` ([{target, why}]), `breaker` (the
    status of the outcome's target after recording, or None) and
    `breaker_warning` (why the breakers failed open, or None). `breakers`
    lets a loop keep one `Breakers` (and its fail-open state) across steps.
    """
    history = [dict(a) for a in history or []]
    policy = policy or make_policy(settings)
    rng = random.Random() if rand is None else None
    breakers = breakers or make_breakers(settings, store, chain, clock)

    breaker = None
    outcome = llm_policy.effective_outcome(outcome, policy)  # a wait of hours is a quota
    if outcome is not None and record and outcome.get("target") in chain and reached_provider(outcome):
        cool_s = None
        if not outcome.get("ok") and outcome.get("error_class") in COOL_CLASSES:
            failures = 1 + sum(1 for a in history if a.get("target") == outcome.get("target"))
            cool_s = outcome.get("retry_after_s") or llm_policy.backoff_delay(failures, dict(policy, jitter="none"), 1)
        elif not outcome.get("ok") and outcome.get("error_class") in OPEN_AT_ONCE:
            cool_s = outcome.get("retry_after_s")  # a quota that names its reset stays open until then
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
        "breaker_warning": breakers.degraded,
        "account_opened": _account_opened(breakers, outcome, breaker),
    })
    return decision


def _account_opened(breakers, outcome, breaker):
    """The other targets a quota/auth failure opened with the failing one (its account's), else []."""
    if not outcome or outcome.get("ok") or outcome.get("error_class") not in OPEN_AT_ONCE or breaker is None:
        return []
    return breakers.account_targets(outcome["target"])[1:]


def _wait_for_cooled_target(breakers, history, outcome, policy, chain, skip, skipped, decision):
    """Every usable target is only cooling down (429/overloaded), none is broken:
    rather than give up, wait for the one whose cooldown ends first."""
    cooled = []
    for item in skipped:
        left = breakers.status(item["target"])["cooling_for_s"]
        # A cooldown over the cap is a wait the policy refuses to sit out (see llm_policy).
        if item["why"].startswith("cooling down") and 0 < left <= policy["retry_after_cap_s"]:
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
