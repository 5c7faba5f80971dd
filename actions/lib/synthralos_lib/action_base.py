"""Base class for the pack's python-script actions."""

import decimal
import functools
import os

from st2common.runners.base_action import Action

from synthralos_lib.deprecated import renamed_parameter
from synthralos_lib.ops.trace import guarded_logs, trace_id_of
from synthralos_lib.state.config import load_config, raw_secrets
from synthralos_lib.state.redaction import scrub_and_cap, scrub_result
from synthralos_lib.state.store import DatastoreStore, get_store

# Errors that mean "the code broke", never a message a user should decode. Raised by the call of
# `run` itself (a parameter it does not take), they are the input's fault; from deeper, the pack's.
_INTERNAL_ERRORS = (KeyError, TypeError, OverflowError, AttributeError, IndexError, RecursionError,
                    decimal.InvalidOperation)
# Every string in a result is cut to this (after scrubbing; a cut string says so): an input echoed
# back (a 10 MB job id) must not make the execution's result bigger than MongoDB's 16 MB document.
MAX_RESULT_STRING_CHARS = 65536
MAX_MESSAGE_CHARS = 500


class ActionInputError(ValueError):
    """The parameters do not fit the action (one it does not take, one missing)."""


class ActionInternalError(RuntimeError):
    """The pack failed while processing valid input (a bug): says where (module:function:line)."""


class SynthralosAction(Action):
    """Gives every action its validated config, its store, and secret scrubbing.

    The config is validated on first use, not in the constructor, so a bad
    config fails the execution with a clear ConfigError instead of a
    traceback from the runner's wrapper.

    Every subclass's `run` is guarded (the redaction boundary): its result is
    scrubbed of configured secrets and credential shapes and every string in it
    capped at MAX_RESULT_STRING_CHARS (`redaction.scrub_result`), every log line written
    while it runs (its own, the pack library's, even from loggers created inside
    `run`) goes through a redacting filter on the handlers that emit it
    (`ops.trace.guarded_logs`, taken off again when `run` ends), and an exception leaves
    with a scrubbed message. A raw KeyError/TypeError/IndexError/... raised by the call
    of `run` (a parameter it does not take) becomes an `ActionInputError`; raised from
    inside the pack, an `ActionInternalError` that says where (module:function:line):
    a bug to report, not an input to fix. Validation errors (ValueError) keep their
    message. While it runs with a trace id in its parameters, every log line ends
    with ``trace_id=<id>``.
    """

    def __init__(self, config=None, action_service=None):
        super(SynthralosAction, self).__init__(config=config, action_service=action_service)
        self._settings = None
        self._store = None

    def __init_subclass__(cls, **kwargs):
        super(SynthralosAction, cls).__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and not getattr(run, "_synthralos_guarded", False):
            cls.run = _guarded(run)

    @property
    def settings(self):
        if self._settings is None:
            self._settings = load_config(self.config)
        return self._settings

    @property
    def store(self):
        if self._store is None:
            self._store = get_store(self.settings, self.action_service)
        return self._store

    def fallback_store(self):
        """The st2 datastore when the main store is Redis (for state that must survive a Redis outage)."""
        if self.store.name == DatastoreStore.name or self.action_service is None:
            return None
        return DatastoreStore(self.action_service)

    def secrets(self):
        """The configured secrets; from the raw config when it does not validate."""
        try:
            return self.settings.secrets()
        except Exception:
            return raw_secrets(self.config)

    def renamed(self, new_name, new_value, old_name, old_value, default=None, required=False):
        """A renamed parameter's value (`deprecated.renamed_parameter`): the new name, else the old one
        with one warning line; both with different values (or neither, when `required`) are refused."""
        return renamed_parameter(new_name, new_value, old_name, old_value, logger=getattr(self, "logger", None),
                                 default=default, required=required)


def _guarded(run):
    @functools.wraps(run)
    def guarded_run(self, *args, **kwargs):
        secrets = self.secrets()
        try:
            with guarded_logs(getattr(self, "logger", None), secrets, trace_id_of(kwargs)):
                result = run(self, *args, **kwargs)
        except _INTERNAL_ERRORS as exc:
            where = _where(exc)
            cause = "%s: %s" % (type(exc).__name__, _message(exc, secrets))
            if where is None:
                raise ActionInputError("%s could not take its parameters (%s)" % (type(self).__name__, cause))
            raise ActionInternalError("%s failed inside the pack at %s (%s); this is a bug in the pack, not a "
                                      "problem with the input" % (type(self).__name__, where, cause))
        except Exception as exc:
            exc.args = tuple(scrub_result(a, secrets, MAX_RESULT_STRING_CHARS) for a in exc.args)
            raise
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], bool):
            return result[0], scrub_result(result[1], secrets, MAX_RESULT_STRING_CHARS)
        return scrub_result(result, secrets, MAX_RESULT_STRING_CHARS)

    guarded_run._synthralos_guarded = True
    return guarded_run


def _message(exc, secrets):
    try:
        text = str(exc)
    except Exception:
        text = type(exc).__name__
    return scrub_and_cap(text, MAX_MESSAGE_CHARS, secrets)


def _where(exc):
    """"module:function:line" of the frame that raised `exc`, or None when `guarded_run`'s own call of
    `run` raised it (the parameters did not fit). Names come from code, not input; capped all the same."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next
    if len(frames) < 2:
        return None
    frame = frames[-1].tb_frame
    module = frame.f_globals.get("__name__") or os.path.basename(frame.f_code.co_filename)
    return scrub_and_cap("%s:%s:%d" % (module, frame.f_code.co_name, frames[-1].tb_lineno), 200)
