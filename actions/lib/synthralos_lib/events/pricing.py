"""LLM prices (USD per 1,000 tokens) and the cost of one call.

Where a rate comes from, first match wins:

1. rates passed explicitly with the call (`input_price_per_1k`, `output_price_per_1k`);
2. the `llm_targets[]` entry of the target used (by name, or else the first
   target whose `model` is this model) when it sets its own rates;
3. the config's `model_prices` table;
4. the built-in table below.

Tables are matched on the exact model name first, then on the longest
prefix, so dated snapshots (`gpt-4o-2024-08-06`) get their family's price.
Prices change; the built-in table is a sensible default as of late 2024 and
is meant to be overridden in config. An unknown model is not an error: its
cost is null and `price_source` says "unknown".
"""

from decimal import ROUND_HALF_UP, Decimal

from synthralos_lib.state.validation import check_number

# USD per 1k tokens: (input, output). Public list prices.
BUILTIN_PRICES = {
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4-turbo": (0.01, 0.03),
    "gpt-4": (0.03, 0.06),
    "gpt-3.5-turbo": (0.0005, 0.0015),
    "o1": (0.015, 0.06),
    "o1-mini": (0.003, 0.012),
    "o3-mini": (0.0011, 0.0044),
    "claude-3-5-sonnet": (0.003, 0.015),
    "claude-3-7-sonnet": (0.003, 0.015),
    "claude-3-5-haiku": (0.0008, 0.004),
    "claude-3-opus": (0.015, 0.075),
    "claude-3-sonnet": (0.003, 0.015),
    "claude-3-haiku": (0.00025, 0.00125),
    "gemini-1.5-pro": (0.00125, 0.005),
    "gemini-1.5-flash": (0.000075, 0.0003),
    "mistral-large": (0.002, 0.006),
}
MAX_TOKENS = 100000000  # tokens of one call
MAX_CALL_PRICE_PER_1K = 1000  # USD, for a rate given with the call (log_llm_cost's bound)
RATE_FIELDS = ("input_price_per_1k", "output_price_per_1k")


class PricingError(ValueError):
    pass


def _checked(value, field, minimum, maximum, integer=False, required=False):
    try:
        return check_number(value, field, minimum, maximum, integer=integer, required=required)
    except ValueError as exc:
        raise PricingError(str(exc))


def check_call(input_tokens, output_tokens, input_price_per_1k=None, output_price_per_1k=None):
    """The token counts and rates of one call (NaN, Infinity, bounds); PricingError naming the field."""
    for name, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        _checked(value, name, 0, MAX_TOKENS, integer=True, required=True)
    for name, value in zip(RATE_FIELDS, (input_price_per_1k, output_price_per_1k)):
        _checked(value, name, 0, MAX_CALL_PRICE_PER_1K)


def price_table(config_prices=None):
    """The built-in table with the config's `model_prices` merged over it: {model: (in, out)}."""
    table = dict(BUILTIN_PRICES)
    for model, entry in (config_prices or {}).items():
        base = table.get(model, (None, None))
        table[model] = (entry.get("input_per_1k", base[0]), entry.get("output_per_1k", base[1]))
    return table


def lookup(model, table):
    """(input, output, matched_name) for `model`: exact name, else longest prefix; None if unknown."""
    if model in table:
        return table[model] + (model,)
    candidates = [name for name in table if model.startswith(name)]
    if not candidates:
        return None
    best = max(candidates, key=len)
    return table[best] + (best,)


def _target_rates(model, targets, target_name):
    chosen = None
    for target in targets or []:
        if target_name and target.get("name") == target_name:
            chosen = target
            break
    if chosen is None and not target_name:
        chosen = next((t for t in targets or [] if t.get("model") == model), None)
    if chosen is None:
        return None
    return chosen.get("input_price_per_1k"), chosen.get("output_price_per_1k"), chosen.get("name")


def resolve_rates(model, prices, input_price_per_1k=None, output_price_per_1k=None, target=None):
    """(input_rate, output_rate, source) following the order in the module doc.

    `prices` is {"model_prices": {...}, "llm_targets": [...]} from the config.
    Each rate is resolved on its own, so a target may override just one.
    """
    rates = [input_price_per_1k, output_price_per_1k]
    sources = ["call" if r is not None else None for r in rates]
    from_target = _target_rates(model, prices.get("llm_targets"), target)
    if from_target:
        for i in (0, 1):
            if rates[i] is None and from_target[i] is not None:
                rates[i], sources[i] = from_target[i], "llm_target:%s" % from_target[2]
    config_table = prices.get("model_prices") or {}
    found = lookup(model, price_table(config_table))
    if found:
        entry = config_table.get(found[2]) or {}
        for i, key in ((0, "input_per_1k"), (1, "output_per_1k")):
            if rates[i] is None and found[i] is not None:
                rates[i] = found[i]
                sources[i] = ("model_prices:%s" if key in entry else "builtin:%s") % found[2]
    for i, name in enumerate(RATE_FIELDS):  # a finite rate >= 0, wherever it came from
        _checked(rates[i], name if sources[i] == "call" else "%s of %s" % (name, sources[i]), 0, None)
    if rates[0] is None or rates[1] is None:
        return None, None, "unknown"
    source = sources[0] if sources[0] == sources[1] else "%s,%s" % (sources[0], sources[1])
    return rates[0], rates[1], source


def _usd(value, places="0.00000001"):
    return float(Decimal(value).quantize(Decimal(places), rounding=ROUND_HALF_UP))


def cost(model, input_tokens, output_tokens, prices, input_price_per_1k=None, output_price_per_1k=None, target=None):
    """Token counts, rates and cost of one call, as event properties."""
    check_call(input_tokens, output_tokens, input_price_per_1k, output_price_per_1k)
    counts = [input_tokens, output_tokens]
    in_rate, out_rate, source = resolve_rates(model, prices, input_price_per_1k, output_price_per_1k, target)
    result = {
        "input_tokens": counts[0],
        "output_tokens": counts[1],
        "total_tokens": counts[0] + counts[1],
        "input_price_per_1k": in_rate,
        "output_price_per_1k": out_rate,
        "price_source": source,
        "input_cost_usd": None,
        "output_cost_usd": None,
        "cost_usd": None,
        "cost_usd_cents": None,
    }
    if in_rate is None:
        return result
    # Decimal arithmetic so 1234 tokens at $0.0025/1k is exactly $0.003085.
    in_cost = Decimal(counts[0]) * Decimal(str(in_rate)) / Decimal(1000)
    out_cost = Decimal(counts[1]) * Decimal(str(out_rate)) / Decimal(1000)
    total = in_cost + out_cost
    result.update(
        {
            "input_cost_usd": _usd(in_cost),
            "output_cost_usd": _usd(out_cost),
            "cost_usd": _usd(total),
            "cost_usd_cents": _usd(total * 100, "0.000001"),
        }
    )
    return result
