"""The controllable clock of the cron backoff tests (library, actions and the guarded_run workflow)."""

from datetime import datetime, timezone

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc).timestamp()
HOUR, DAY = 3600.0, 86400.0


class Clock(object):
    """A clock that stands still at `now` (seconds) until a test moves it."""

    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now
