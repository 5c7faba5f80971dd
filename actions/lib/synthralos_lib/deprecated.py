"""Renamed action parameters: the old name is still accepted for one release.

An action whose parameter was renamed keeps the old name in its metadata (not required, no
default, described "Deprecated: use <new> (removed in the next release).") and in its `run`
signature, and resolves the two with `renamed_parameter` (through `SynthralosAction.renamed`):
the new name wins; the old one alone is used with one warning line; both with different values
are refused, naming both.

st2 fills in a parameter's metadata default when the caller leaves it out, so the action cannot
tell "not given" from "given as the default": a new value equal to `default` counts as not given
when the old name is given (``health_check timeout_s=2`` is run with probe_timeout_s=5 filled in).
"""

WARNING = "[Deprecated] parameter %s is deprecated: use %s (%s is removed in the next release)"


class RenamedParameterError(ValueError):
    """Both names of a renamed parameter given with different values, or neither when it is needed."""


def renamed_parameter(new_name, new_value, old_name, old_value, logger=None, default=None, required=False):
    """The value of the parameter `new_name` (renamed from `old_name`).

    None means "not given" for either name. The old value alone is returned after one warning on
    `logger`; the new and the old both given (the new one not its `default`) with different values
    raise RenamedParameterError, as does neither when `required`.
    """
    new_given = new_value is not None and not (default is not None and new_value == default and old_value is not None)
    if old_value is None:
        if new_value is None and required:
            raise RenamedParameterError("%s is required (%s is its deprecated old name)" % (new_name, old_name))
        return new_value
    if new_given and new_value != old_value:
        raise RenamedParameterError(
            "%s and %s were both given, with different values: %s replaces %s (the old name is removed in the "
            "next release); give %s only" % (new_name, old_name, new_name, old_name, new_name))
    if logger is not None:
        logger.warning(WARNING, old_name, new_name, old_name)
    return old_value
