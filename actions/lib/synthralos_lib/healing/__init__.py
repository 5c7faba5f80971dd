"""Self-healing: failure detection, rule-based and LLM repair plans, repair
execution against the agent platform API, and failure history.
"""
