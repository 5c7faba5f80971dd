"""Stand-in for ``st2common.models.api.trace.TraceContext``.

Mirrors upstream's API (``id_`` and ``trace_tag``, no equality of its own);
used only when st2 is not importable.
"""

__all__ = ["TraceContext"]


class TraceContext(object):
    """Identifies the trace a dispatched trigger belongs to."""

    def __init__(self, id_=None, trace_tag=None):
        self.id_ = id_
        self.trace_tag = trace_tag

    def __str__(self):
        return str({"id": self.id_, "trace_tag": self.trace_tag})

    def __json__(self):
        return vars(self)
