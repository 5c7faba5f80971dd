"""Stand-in for ``st2reactor.sensor`` (see ``st2reactor/__init__.py``)."""
