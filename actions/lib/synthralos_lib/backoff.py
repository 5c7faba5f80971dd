"""Capped exponential backoff: the one formula every retry loop of the pack uses.

After the n-th consecutive failure (1-based) the wait is
`base * multiplier^(n-1)`, at most `cap` (the ceiling), then jittered:

* none:  the ceiling itself;
* full:  anywhere in [0, ceiling] (writers that keep colliding spread out; an
  immediate retry is possible);
* equal: anywhere in [ceiling / 2, ceiling] (half fixed, half random: retries
  spread out but never come at once).

`draw` is the random number in [0, 1] that places the wait in that range
(clamped; None draws one from `random`), so tests and callers that record
their draws get the same delay every time. n < 1 (no failure yet) and a
base of 0 wait 0.
A long streak never overflows: the power is a float, so it turns into the cap.

Who uses it, with which jitter: LLM retries (llm.policy, configurable),
RudderStack retries and the flusher's idle backoff (equal), cron jobs and their
probes (cron.schedule: none, milliseconds, the configured multiplier), the
stream consumer's reconnects (equal), the sensors' restart and reconnect loops
(none), the store's optimistic-update retries (full).
"""

import random

NONE = "none"
FULL = "full"
EQUAL = "equal"
JITTERS = (FULL, EQUAL, NONE)


def capped_exponential(n, base, cap, jitter=NONE, draw=None, multiplier=2):
    """Wait after the n-th consecutive failure: min(cap, base * multiplier^(n-1)), jittered."""
    if jitter not in JITTERS:
        raise ValueError("jitter must be one of %s, not %r" % (", ".join(JITTERS), jitter))
    if n < 1 or base <= 0:
        return 0.0
    try:
        grown = base * float(multiplier) ** (n - 1)
    except OverflowError:  # a long streak: far past any cap
        grown = float("inf")
    ceiling = float(min(grown, cap))
    if jitter == NONE:
        return ceiling
    draw = min(max(float(random.random() if draw is None else draw), 0.0), 1.0)
    if jitter == FULL:
        return ceiling * draw
    return ceiling / 2.0 + (ceiling / 2.0) * draw
