"""Trace context in log lines: while an execution that carries a trace id runs, every
line its logger and the pack library log ends with ``trace_id=<id>``.
"""

import logging

# Where an execution's parameters carry the trace id, in order.
_TRACE_HOLDERS = ("trace_context", "failure")


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
    """Appends ``trace_id=<id>`` to each record's message (arguments merged first)."""

    def __init__(self, trace_id):
        super(TraceLogFilter, self).__init__()
        self.suffix = " trace_id=%s" % trace_id

    def filter(self, record):
        message = record.getMessage()
        if not message.endswith(self.suffix):
            record.msg, record.args = message + self.suffix, ()
        return True


class traced_logs(object):
    """Context manager: a TraceLogFilter on `loggers` for the duration (nothing without a trace id)."""

    def __init__(self, loggers, trace_id):
        self.loggers = [logger for logger in loggers if isinstance(logger, logging.Logger)] if trace_id else []
        self.filter = TraceLogFilter(trace_id) if trace_id else None

    def __enter__(self):
        for logger in self.loggers:
            logger.addFilter(self.filter)
        return self

    def __exit__(self, *exc_info):
        for logger in self.loggers:
            logger.removeFilter(self.filter)
        return False
