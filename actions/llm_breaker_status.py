from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.llm.breaker import Breakers


class LLMBreakerStatus(SynthralosAction):
    """Read-only view of the LLM targets' circuit breakers."""

    def run(self, targets=None):
        names = list(targets or [t["name"] for t in self.settings.llm_targets()])
        for name in names:
            self.settings.llm_target(name)  # unknown names fail with a clear ConfigError
        breakers = Breakers(self.store, self.settings.section("circuit_breaker"))
        return {"store": self.store.name, "targets": [breakers.status(name) for name in names]}
