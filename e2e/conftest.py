"""Fixtures of the live-st2 tier. e2e/run.sh has started the lab and installed the pack;
the session's Harness starts the local agent platform and RudderStack sink, writes the pack
config pointing at them and restarts the sensor container."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Harness  # noqa: E402
from lab import Lab, St2API  # noqa: E402


@pytest.fixture(scope="session")
def lab():
    lab = Lab()
    if not lab.running():
        pytest.fail("the st2 lab is not running: run the tier with e2e/run.sh")
    return lab


@pytest.fixture(scope="session")
def api(lab):
    return St2API()


@pytest.fixture(scope="session")
def harness(lab, api):
    with Harness(lab, api) as h:
        yield h
