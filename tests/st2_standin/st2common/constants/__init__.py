"""Stand-in for ``st2common.constants`` (see ``st2common/__init__.py``)."""
