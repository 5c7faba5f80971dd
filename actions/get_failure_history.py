from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.healing.history import get_failure_history


class GetFailureHistoryAction(SynthralosAction):
    """An agent's latest failures and recovery outcomes, newest first."""

    def run(self, agent_id, limit=20):
        entries = get_failure_history(self.store, agent_id, limit=limit)
        return {"agent_id": agent_id, "count": len(entries), "entries": self.scrub(entries), "store": self.store.name}
