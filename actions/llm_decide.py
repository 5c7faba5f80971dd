from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.llm.routing import check_outcome, make_policy, next_step, resolve_chain


class LLMDecide(SynthralosAction):
    """Record the outcome in the breaker and decide the next step of an LLM request."""

    def run(self, targets=None, outcome=None, history=None, policy=None, one_attempt_per_target=False, record=True,
            total_delay_s=0):
        chain = resolve_chain(self.settings, targets)
        effective = make_policy(self.settings, policy, one_attempt_per_target)
        outcome = check_outcome(outcome or None, chain)
        decision = next_step(self.settings, self.store, chain, outcome, history or [], effective, record=record,
                             total_delay_s=total_delay_s)
        self.logger.info(
            "[Retry] decision=%s target=%s wait=%ss attempts=%d reason=%s"
            % (decision["action"], decision["target"], decision["wait_s"], decision["attempts"], decision["reason"]))
        for skipped in decision["skipped"]:
            self.logger.info("[Retry] skipped target=%s: %s" % (skipped["target"], skipped["why"]))
        return decision
