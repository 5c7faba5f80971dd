from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.llm.client import call_llm


class LLMCall(SynthralosAction):
    """One attempt against one LLM target; the outcome decides what the workflow does next."""

    def run(self, target, messages, system=None, max_tokens=1024, temperature=None, call_timeout_s=None,
            fail_on_error=False, timeout_s=None):
        call_timeout_s = self.renamed("call_timeout_s", call_timeout_s, "timeout_s", timeout_s)
        entry = self.settings.llm_target(target)
        outcome = call_llm(entry, messages, timeout_s=call_timeout_s, max_tokens=max_tokens, temperature=temperature,
                           system=system, secrets=self.secrets())
        self.logger.info(
            "[Retry] llm_call target=%s model=%s ok=%s status=%s class=%s latency=%.3fs%s",
            target, outcome["model"], outcome["ok"], outcome["status"], outcome["error_class"],
            outcome["latency_s"], "" if outcome["ok"] else " error=%s" % outcome["error_message"])
        if fail_on_error and not outcome["ok"]:
            return False, outcome
        return outcome
