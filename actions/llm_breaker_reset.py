from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.llm.breaker import Breakers
from synthralos_lib.llm.routing import accounts


class LLMBreakerReset(SynthralosAction):
    """Close one target's circuit breaker (or every breaker of its account)."""

    def run(self, target, whole_account=False):
        self.settings.llm_target(target)
        breakers = Breakers(self.store, self.settings.section("circuit_breaker"), accounts=accounts(self.settings))
        before = breakers.status(target)
        others = breakers.account_targets(target)[1:] if whole_account else []
        for name in [target] + others:
            breakers.reset(name)
        self.logger.info("[Retry] breaker of %s reset by hand (was %s)%s" % (
            target, before["state"], "; with its account: %s" % ", ".join(others) if others else ""))
        return {"target": target, "before": before, "after": breakers.status(target), "also_reset": others}
