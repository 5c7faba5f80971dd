"""Waiting, in a test, for something another thread, green thread or process does.

`wait_until` is the one poll loop of the suite: it checks, then sleeps between
checks. Under st2tests everything is eventlet monkey-patched, so `time.sleep`
yields to the green threads doing the work (a sensor's run loop, a stub
server); a loop that never slept would starve them and wait out its timeout.
"""

import time


# Generous by default: a wait that succeeds returns as soon as the condition holds,
# and the CI box is a busy 2-core machine (load 15-20 seen) where a sensor's green
# thread or a child process can stall for seconds.
DEFAULT_TIMEOUT_S = 60.0


def wait_until(condition, what, timeout=DEFAULT_TIMEOUT_S, interval=0.02):
    """Call `condition()` until it returns something true and return that value.

    Sleeps `interval` seconds between calls; after `timeout` seconds raises
    AssertionError naming `what` (e.g. "three dispatches").
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout, what))
        time.sleep(interval)
