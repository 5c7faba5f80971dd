"""Test support for the synthralos pack: import paths, the st2 stand-in,
bases, and real local servers (``redis_server``, ``http_server``).

Importing this package (``tests/conftest.py`` does it for pytest; a test module
run by nose must ``import synthralos_tests`` before any ``st2tests`` import)
makes two idempotent changes to ``sys.path``:

* ``add_pack_import_paths()``: the pack's ``sensors/``, ``actions/``, ``etc/``
  (what ``st2-run-pack-tests`` puts on PYTHONPATH), ``actions/lib/`` (what
  the Python runner adds for actions) and ``lib/`` (the pack's common lib
  directory), then the repository root, appended after what is already there,
  as ``st2-run-pack-tests`` does.
* ``activate_st2_standin()``: if StackStorm's own ``st2common``, ``st2reactor``
  and ``st2tests`` import, nothing; only on ``ImportError`` is
  ``tests/st2_standin`` put first on ``sys.path``.

Nothing heavy is imported here: servers and bases live in submodules.
"""

import os
import sys

__all__ = [
    "PACK_ROOT",
    "TESTS_DIR",
    "STANDIN_DIR",
    "pack_import_paths",
    "add_pack_import_paths",
    "activate_st2_standin",
    "using_st2_standin",
    "real_st2_expected",
]

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_ROOT = os.path.dirname(TESTS_DIR)
STANDIN_DIR = os.path.join(TESTS_DIR, "st2_standin")

# Top-level packages the stand-in provides (and the probe may half-import).
_ST2_PACKAGES = ("st2common", "st2reactor", "st2tests")

_standin_active = None  # None: not decided yet; then True / False


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


def _probe_real_st2():
    import st2common.runners.base_action  # noqa: F401
    import st2reactor.sensor.base  # noqa: F401
    import st2tests.base  # noqa: F401


def activate_st2_standin():
    """Use ``tests/st2_standin`` for st2 imports, but only if the real st2 does
    not import. Returns True when the stand-in is in use."""
    global _standin_active
    if _standin_active is not None:
        return _standin_active
    before = set(sys.modules)
    try:
        _probe_real_st2()
    except ImportError:
        # Forget anything the failed probe half-imported (say st2common from an
        # unrelated install without st2tests), so the stand-in is used whole.
        for name in set(sys.modules) - before:
            if name.split(".", 1)[0] in _ST2_PACKAGES:
                del sys.modules[name]
        if not _on_path(STANDIN_DIR):
            sys.path.insert(0, STANDIN_DIR)
        _standin_active = True
    else:
        _standin_active = False
    return _standin_active


def using_st2_standin():
    """True when the st2 classes in use are the stand-in's, not StackStorm's."""
    return activate_st2_standin()


def real_st2_expected():
    """Whether this run must use the real StackStorm and Orquesta 1.6 (no stand-in,
    nothing skipped for lack of them): ``SYNTHRALOS_EXPECT_REAL_ST2`` (1 / 0, set by
    ``scripts/run-tests.sh``) when set, else True on Python >= 3.10, where PyPI's
    Orquesta does not import and only the real-st2 run makes sense."""
    value = os.environ.get("SYNTHRALOS_EXPECT_REAL_ST2", "").strip()
    if value in ("0", "1"):
        return value == "1"
    return sys.version_info >= (3, 10)


add_pack_import_paths()
activate_st2_standin()
