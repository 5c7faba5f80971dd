"""pytest setup: importing ``synthralos_tests`` puts the pack's import paths on
``sys.path`` and, only when StackStorm itself is not importable, the st2
stand-in (see ``tests/synthralos_tests/__init__.py``).

Tests are unittest-style so nose (``st2-run-pack-tests``) runs them too; the
fixtures below are optional conveniences for pytest-only use.
"""

import pytest

import synthralos_tests  # noqa: F401  (sets up sys.path on import)


@pytest.fixture
def redis_server():
    """The shared real redis-server of this test process, flushed."""
    from synthralos_tests.redis_server import get_redis_server

    server = get_redis_server()
    server.flushall()
    return server


@pytest.fixture
def http_stub():
    """A started ``StubHTTPServer``; stopped after the test."""
    from synthralos_tests.http_server import StubHTTPServer

    server = StubHTTPServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
