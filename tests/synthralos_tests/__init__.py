"""Test support for the synthralos pack: import paths, bases, and real local
servers (``redis_server``, ``http_server``).

Importing this package (``tests/conftest.py`` does it for pytest; a test module
run by nose must ``import synthralos_tests`` before any ``st2tests`` import):

* appends the pack's import directories to ``sys.path`` once each
  (``add_pack_import_paths()``): ``sensors/``, ``actions/``, ``etc/`` (what
  ``st2-run-pack-tests`` puts on PYTHONPATH), ``actions/lib/`` (what the Python
  runner adds for actions), ``lib/`` (the pack's common lib directory), then the
  repository root;
* requires StackStorm itself (``st2common``, ``st2reactor``, ``st2tests``, the
  python and orquesta runners) and Orquesta: the suite runs only on a real st2,
  so a missing one stops the run here, at collection, naming the test command.

Nothing heavy is imported here: servers and bases live in submodules.
"""

import os
import sys

__all__ = ["PACK_ROOT", "TESTS_DIR", "pack_import_paths", "add_pack_import_paths", "require_st2"]

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_ROOT = os.path.dirname(TESTS_DIR)

TEST_COMMAND = "bash scripts/run-tests.sh"  # the README's test command


def pack_import_paths():
    """The directories ``add_pack_import_paths()`` puts on ``sys.path``, in order."""
    return [
        os.path.join(PACK_ROOT, "sensors"),
        os.path.join(PACK_ROOT, "actions"),
        os.path.join(PACK_ROOT, "etc"),
        os.path.join(PACK_ROOT, "actions", "lib"),
        os.path.join(PACK_ROOT, "lib"),
        PACK_ROOT,
    ]


def _on_path(path):
    normalized = os.path.normcase(os.path.abspath(path))
    return any(os.path.normcase(os.path.abspath(entry or os.curdir)) == normalized for entry in sys.path)


def add_pack_import_paths():
    """Append the pack's import directories to ``sys.path`` (each once)."""
    for path in pack_import_paths():
        if not _on_path(path):
            sys.path.append(path)


def require_st2():
    """Import StackStorm and Orquesta, or stop with what to run instead."""
    try:
        import orquesta.conducting  # noqa: F401
        import orquesta_runner  # noqa: F401
        import python_runner  # noqa: F401
        import st2common.runners.base_action  # noqa: F401
        import st2reactor.sensor.base  # noqa: F401
        import st2tests.base  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "The synthralos tests run on a real StackStorm (st2common, st2reactor, st2tests, the python "
            "and orquesta runners) and Orquesta, and this Python (%s) cannot import them: %s. Run the "
            "suite with `%s`, which builds virtualenvs with st2 and Orquesta and runs it there."
            % (sys.executable, e, TEST_COMMAND)
        )


add_pack_import_paths()
require_st2()
