"""Stand-in for ``st2common.models.api`` (see ``st2common/__init__.py``)."""
