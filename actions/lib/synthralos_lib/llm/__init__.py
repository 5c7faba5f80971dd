"""LLM calls: the HTTP client (OpenAI-compatible, Anthropic), error
classification, the retry/reroute policy, shared circuit breakers and the routing loop.
"""
