from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.llm import fastpath
from synthralos_lib.llm.client import call_llm
from synthralos_lib.llm.routing import make_policy, resolve_chain


class LLMRequest(SynthralosAction):
    """A whole LLM request in one execution (the fast path of llm_retry / reroute_request)."""

    def run(self, messages, targets=None, policy=None, system=None, max_tokens=1024, temperature=None,
            call_timeout_s=None, one_attempt_per_target=False, resume=None, timeout_s=None):
        call_timeout_s = self.renamed("call_timeout_s", call_timeout_s, "timeout_s", timeout_s)
        chain = resolve_chain(self.settings, targets)
        effective = make_policy(self.settings, policy, one_attempt_per_target)
        max_wait_s, budget_s = fastpath.limits(self.settings)

        secrets = self.secrets()

        def call(name):
            return call_llm(self.settings.llm_target(name), messages, timeout_s=call_timeout_s, max_tokens=max_tokens,
                            temperature=temperature, system=system, secrets=secrets)

        result = fastpath.serve(self.settings, self.store, chain, effective, call, resume=resume or None,
                                max_wait_s=max_wait_s, budget_s=budget_s,
                                log=self.logger.info)
        if result["breaker_warning"]:
            self.logger.warning("[Retry] %s", result["breaker_warning"])
        self.logger.info("[Retry] llm_request %s target=%s calls=%d attempts=%d total_delay=%ss reason=%s",
                         result["action"], result["target"], result["calls"], result["attempt_count"],
                         result["total_delay_s"], result["reason"])
        return result
