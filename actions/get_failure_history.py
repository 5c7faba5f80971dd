from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.history import check_agent_id, read_with_fallback, within_budget


class GetFailureHistoryAction(SynthralosAction):
    """An agent's latest failures and recovery outcomes, newest first."""

    def run(self, agent_id, limit=20):
        agent_id = check_agent_id(agent_id)  # before any store is touched
        found = read_with_fallback(self.store, self.fallback_store(), agent_id, limit=limit)
        entries, truncated = within_budget(found["entries"])
        return {
            "agent_id": agent_id,
            "count": len(entries),
            "truncated": truncated,
            "entries": entries,
            "store": found["store"],
            "fallback_reason": found["fallback_reason"],
        }
