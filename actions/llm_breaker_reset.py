from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.llm.breaker import Breakers


class LLMBreakerReset(SynthralosAction):
    """Close one target's circuit breaker."""

    def run(self, target):
        self.settings.llm_target(target)
        breakers = Breakers(self.store, self.settings.section("circuit_breaker"))
        before = breakers.status(target)
        breakers.reset(target)
        self.logger.info("[Retry] breaker of %s reset by hand (was %s)" % (target, before["state"]))
        return {"target": target, "before": before, "after": breakers.status(target)}
