"""Event forwarding: event builders, pricing and similarity, the Redis
outbox, the RudderStack client and the forwarding entry points used by actions.
"""
