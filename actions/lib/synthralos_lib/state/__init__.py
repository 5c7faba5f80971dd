"""Pack state: the config loader (defaults, validation), the store
interface over the st2 datastore and Redis, and the one redaction function.
"""
