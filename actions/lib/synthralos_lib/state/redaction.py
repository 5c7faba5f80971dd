"""Keep secrets out of results, logs and events."""

REDACTED = "***"


def scrub(value, secrets):
    """Return `value` (str, dict, list or scalar) with every secret string replaced by ***."""
    # Longest first, so a secret that contains another is replaced whole.
    secrets = sorted((s for s in secrets if s), key=len, reverse=True)
    if not secrets:
        return value
    return _scrub(value, secrets)


def _scrub(value, secrets):
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    return value
