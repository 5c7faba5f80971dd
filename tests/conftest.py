"""pytest setup: importing ``synthralos_tests`` puts the pack's import paths on
``sys.path`` and stops the run at collection when StackStorm or Orquesta does
not import (see ``tests/synthralos_tests/__init__.py``).

Tests are unittest-style so nose (``st2-run-pack-tests``) runs them too; the
fixtures below are optional conveniences for pytest-only use.
"""

import re

import pytest

import synthralos_tests  # noqa: F401  (sets up sys.path on import)

from hypothesis import HealthCheck, settings

# st2 3.8's st2tests builds on unittest2. pytest >= 8.2 makes one throwaway instance
# of every TestCase class with the method name "runTest", which the standard
# library's TestCase accepts on any class and unittest2's refuses unless the class
# has that attribute ("no such test method ... runTest"). None: there is one, and
# pytest collects no runTest item from it.
try:
    import unittest2
except ImportError:  # st2 >= 3.9: the standard library's unittest
    pass
else:
    unittest2.TestCase.runTest = None

# The CI box is a busy 2-core machine: no per-example deadline, no "too slow to
# generate" failure; a property fails only when the property does.
settings.register_profile("synthralos", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("synthralos")

# Skips that mean "st2 / Orquesta is missing": a failure where the real StackStorm is expected.
_MISSING_ST2 = re.compile(r"orquesta|st2|stackstorm|stand-in", re.IGNORECASE)
_missing_st2_skips = []


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if _MISSING_ST2.search(str(reason)):
            _missing_st2_skips.append("%s: %s" % (report.nodeid, reason))


def pytest_terminal_summary(terminalreporter):
    if _missing_st2_skips:
        terminalreporter.section("skipped for lack of st2 / Orquesta (the suite runs on the real StackStorm)")
        for line in _missing_st2_skips:
            terminalreporter.line(line)


def pytest_sessionfinish(session, exitstatus):
    if _missing_st2_skips and exitstatus == 0:
        session.exitstatus = 1


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
