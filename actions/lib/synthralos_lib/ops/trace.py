"""Log boundary: while an action runs (or a sensor lives), every line the pack writes is
scrubbed of secrets and, when the execution carries a trace id, ends with ``trace_id=<id>``.

The filters go on the *handlers* that emit, not on loggers: a logger's filters do not apply
to its child loggers, and library modules imported inside a function (``ops.metrics.collect``
imports four) create their loggers after ``run`` has started. Every record of a logger that
propagates, whenever it was created, reaches the same handlers: the action's or sensor's
logger's, the ``synthralos_lib`` logger's, and the root logger's (or ``logging.lastResort``
when there are none, as in st2's python runner process, where only the action logger has one).
"""

import logging

from synthralos_lib.state.redaction import RedactingFilter, hold_secrets, release_secrets, scrub_and_cap

LIBRARY_LOGGER = "synthralos_lib"

# Where an execution's parameters carry the trace id, in order.
_TRACE_HOLDERS = ("trace_context", "failure")
MAX_TRACE_ID_CHARS = 128  # a W3C trace id is 32 hex digits; anything longer is cut (after scrubbing)


def trace_id_of(parameters):
    """The trace id an action's parameters carry (trace_id, trace_context.trace_id, or the
    failure's trace_context), else None."""
    direct = parameters.get("trace_id")
    if isinstance(direct, str) and direct.strip():
        return direct.strip()
    for holder in _TRACE_HOLDERS:
        value = parameters.get(holder)
        if holder == "failure" and isinstance(value, dict):
            value = value.get("trace_context")
        if isinstance(value, dict) and isinstance(value.get("trace_id"), str) and value["trace_id"].strip():
            return value["trace_id"].strip()
    return None


class TraceLogFilter(logging.Filter):
    """Appends ``trace_id=<id>`` to each record's message (arguments merged first). The id comes from
    outside (an execution's parameters): it is scrubbed and capped once, here, as the redacting
    filter has already run when the suffix is added."""

    def __init__(self, trace_id, secrets=()):
        super(TraceLogFilter, self).__init__()
        self.suffix = " trace_id=%s" % scrub_and_cap(trace_id, MAX_TRACE_ID_CHARS, secrets)

    def filter(self, record):
        message = record.getMessage()
        if not message.endswith(self.suffix):
            record.msg, record.args = message + self.suffix, ()
        return True


class guarded_logs(object):
    """Redacting filter (and a TraceLogFilter with a trace id) on every handler that emits the lines of
    `logger`, of the pack library's loggers (existing or created later) and of any logger that propagates
    to the root; while open, the secrets are in force for `redaction.scrub_and_cap` too. `open()` (or
    ``with``) puts them on, `close()` takes them off again; opening again replaces them (a sensor's
    `setup()` may run twice)."""

    def __init__(self, logger, secrets, trace_id=None):
        self.logger = logger
        self.trace_id = trace_id
        self.secrets = secrets
        self.filters, self.handlers, self.held = [], [], []

    def open(self, secrets=None):
        """Put the filters on; `secrets` (when given) replaces the secrets to scrub from now on."""
        self.close()
        if secrets is not None:
            self.secrets = secrets
        self.held = hold_secrets(self.secrets)  # scrub_and_cap scrubs them wherever it is called meanwhile
        self.filters = [RedactingFilter(self.secrets)] + (
            [TraceLogFilter(self.trace_id, self.secrets)] if self.trace_id else [])
        registry = logging.Logger.manager.loggerDict
        self.handlers = emitting_handlers([self.logger, logging.getLogger(LIBRARY_LOGGER)] + [
            registry[name] for name in list(registry) if name.startswith(LIBRARY_LOGGER + ".")
        ])  # library loggers with handlers of their own (assertLogs puts one there) count too
        for handler in self.handlers:
            for log_filter in self.filters:  # scrub first: the trace filter merges the arguments too
                handler.addFilter(log_filter)
        return self

    def close(self):
        for handler in self.handlers:
            for log_filter in self.filters:
                handler.removeFilter(log_filter)
        self.handlers = []
        release_secrets(self.held)
        self.held = []

    __enter__ = open

    def __exit__(self, *exc_info):
        self.close()
        return False


def emitting_handlers(loggers):
    """The handlers records of `loggers` reach (as Logger.callHandlers walks), each once."""
    handlers = []
    for logger in loggers:
        found = False
        # Not a Logger (a PlaceHolder, st2tests' Mock(spec=RootLogger) sensor logger): nothing to walk.
        while isinstance(logger, logging.Logger) and isinstance(getattr(logger, "handlers", None), list):
            found = found or bool(logger.handlers)
            handlers.extend(h for h in logger.handlers if h not in handlers)
            logger = logger.parent if logger.propagate else None
        if not found and logging.lastResort is not None and logging.lastResort not in handlers:
            handlers.append(logging.lastResort)
    return handlers
