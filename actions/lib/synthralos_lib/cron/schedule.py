"""The cron backoff schedule: pure arithmetic, no state, no clock.

After the n-th consecutive failure a job may run again
`min(initial * multiplier^(n-1), max)` after that failure (seed defaults:
60 s, x2, 24 h, so the cap is reached at the 12th failure: 60 * 2^11 s =
34 h > 24 h). A job is disabled at `max_consecutive_failures` (10). While it
is disabled, one probe run is allowed after a quiet period
(`probe_quiet_period_ms`, 1 h), multiplied by the same multiplier after each
failed probe and capped at `max_probe_quiet_period_ms` (24 h, never below the first quiet
period); a quiet period of 0 turns probing off.
"""

from synthralos_lib import backoff
from synthralos_lib.state.config import with_defaults


def settings_from(section):
    """The `cron_backoff` config section with the schema's defaults filled in (config.schema.yaml holds them)."""
    return with_defaults("cron_backoff", section)


def _capped(base_ms, multiplier, exponent, cap_ms):
    """min(base * multiplier^exponent, cap) in seconds; 0 for a negative exponent or a base of 0."""
    return backoff.capped_exponential(exponent + 1, base_ms, cap_ms, multiplier=multiplier) / 1000.0


def backoff_s(failures, settings):
    """Seconds a job waits after its `failures`-th consecutive failure (0 for none)."""
    if failures <= 0:
        return 0.0
    return _capped(settings["initial_backoff_ms"], settings["backoff_multiplier"], failures - 1,
                   settings["max_backoff_ms"])


def quiet_period_s(failed_probes, settings):
    """Seconds a disabled job stays quiet before its next probe; None when probing is off."""
    if settings["probe_quiet_period_ms"] <= 0:
        return None
    return _capped(settings["probe_quiet_period_ms"], settings["backoff_multiplier"], failed_probes,
                   max(settings["max_probe_quiet_period_ms"], settings["probe_quiet_period_ms"]))


def disables(failures, settings):
    """Whether `failures` consecutive failures disable the job."""
    return failures >= settings["max_consecutive_failures"]
