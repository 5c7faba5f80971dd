"""Stand-in for ``st2tests.mocks`` (see ``st2tests/__init__.py``)."""
