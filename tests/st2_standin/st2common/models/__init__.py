"""Stand-in for ``st2common.models`` (see ``st2common/__init__.py``)."""
