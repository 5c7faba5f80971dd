"""Base of the cron_backoff_* actions: the CronBackoff of this execution."""

import time

from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.cron.backoff import CronBackoff


class CronBackoffAction(SynthralosAction):
    #: Wall clock of the backoff decisions (tests substitute a controllable one).
    clock = staticmethod(time.time)

    def backoff(self):
        return CronBackoff.from_config(self.settings, self.store, clock=self.clock)
