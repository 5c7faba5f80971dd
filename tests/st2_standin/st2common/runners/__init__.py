"""Stand-in for ``st2common.runners`` (see ``st2common/__init__.py``)."""
