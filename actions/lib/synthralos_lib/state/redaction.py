"""Keep secrets out of results, logs and events."""

REDACTED = "***"


def scrub(value, secrets):
    """Return `value` (str, dict, list or scalar) with every secret string replaced by ***."""
    # Longest first, so a secret that contains another is replaced whole.
    secrets = sorted((s for s in secrets if s), key=len, reverse=True)
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secrets) for v in value]
    return value
