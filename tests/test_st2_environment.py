"""Which StackStorm and Orquesta this run tests against, and the pack's workflows
on that Orquesta.

The test command sets the st2 / orquesta commits and source directories it built
the virtualenv from (``SYNTHRALOS_ST2_*``, ``SYNTHRALOS_ORQUESTA_*``); a bare
``pytest`` checks only what it can see.
"""

import glob
import os
import re
import subprocess
import unittest

import synthralos_tests  # noqa: F401  (import paths, and st2 must import)

import yaml

from synthralos_tests import PACK_ROOT
from synthralos_tests.orquesta_runner import (
    ACTIONS_DIR,
    ORQUESTA_AVAILABLE,
    ORQUESTA_VERSION,
    inspect_workflow,
    skip_unless_orquesta,
)

WORKFLOWS = sorted(glob.glob(os.path.join(PACK_ROOT, "actions", "workflows", "*.yaml")))
# The context keys st2's orquesta runner hands to inspect() (st2common/services/workflows.py).
ST2_CTX = {"st2": {"action_execution_id": "0123456789abcdef01234567", "api_url": "http://127.0.0.1:9101/v1",
                   "user": "stanley", "pack": "synthralos"}, "parent": {}}


def _version(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def source_commit(tree):
    """The commit of a source tree: git HEAD, or what run-tests.sh recorded when it
    extracted a tarball (``.synthralos-source``); None when neither says."""
    try:
        out = subprocess.run(["git", "-C", tree, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and os.path.realpath(
            subprocess.run(["git", "-C", tree, "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                           timeout=30).stdout.strip()
        ) == os.path.realpath(tree):
            return out.stdout.strip()
    except OSError:
        pass
    marker = os.path.join(tree, ".synthralos-source")
    if os.path.exists(marker):
        with open(marker) as handle:
            for line in handle:
                if line.startswith("commit=") and line.strip() != "commit=unknown":
                    return line.strip().split("=", 1)[1]
    return None


def _st2_tree():
    import st2common

    # <tree>/st2common/st2common/__init__.py
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(st2common.__file__))))


class StackStormInUseTest(unittest.TestCase):
    def test_st2_is_3_8_or_newer(self):
        import st2common

        self.assertRegex(st2common.__version__, r"^3\.\d+")
        self.assertGreaterEqual(_version(st2common.__version__), (3, 8))

    def test_real_runners_and_components_import(self):
        import noop_runner.noop_runner  # noqa: F401
        import orquesta_runner.orquesta_runner  # noqa: F401
        import python_runner.python_action_wrapper  # noqa: F401
        import st2actions  # noqa: F401
        import st2client  # noqa: F401
        from st2common.runners.base_action import Action
        from st2reactor.sensor.base import PollingSensor, Sensor

        self.assertEqual([c.__module__ for c in (Action, Sensor, PollingSensor)],
                         ["st2common.runners.base_action", "st2reactor.sensor.base", "st2reactor.sensor.base"])

    def test_the_st2_source_and_commit_are_the_ones_the_run_built_from(self):
        import orquesta
        import st2common

        tree = _st2_tree()
        with open(os.path.join(tree, "st2common", "st2common", "__init__.py")) as handle:
            self.assertIn('__version__ = "%s"' % st2common.__version__, handle.read())
        source = os.environ.get("SYNTHRALOS_ST2_SOURCE_DIR")
        if source:  # set by run-tests.sh
            self.assertEqual(os.path.realpath(tree), os.path.realpath(source))
        commit = os.environ.get("SYNTHRALOS_ST2_COMMIT", "")
        if re.match(r"^[0-9a-f]{40}$", commit):
            self.assertEqual(source_commit(tree), commit)
        orquesta_source = os.environ.get("SYNTHRALOS_ORQUESTA_SOURCE_DIR")
        if orquesta_source:
            # Installed from that tree (not editable): the same version as the tree's.
            with open(os.path.join(orquesta_source, "orquesta", "__init__.py")) as handle:
                self.assertIn('__version__ = "%s"' % orquesta.__version__, handle.read())
            orquesta_commit = os.environ.get("SYNTHRALOS_ORQUESTA_COMMIT", "")
            if re.match(r"^[0-9a-f]{40}$", orquesta_commit):
                self.assertEqual(source_commit(orquesta_source), orquesta_commit)


class OrquestaInUseTest(unittest.TestCase):
    def test_orquesta_imports_and_is_the_expected_version(self):
        self.assertTrue(ORQUESTA_AVAILABLE)
        self.assertGreaterEqual(_version(ORQUESTA_VERSION), (1, 6, 0))


class WorkflowSpecInspectionTest(unittest.TestCase):
    """Every workflow, as st2's orquesta runner loads it: the native spec module
    instantiated from the file's text, then ``inspect()`` with st2's context."""

    def test_there_are_workflows(self):
        self.assertGreaterEqual(len(WORKFLOWS), 4)

    @skip_unless_orquesta
    def test_every_workflow_passes_the_native_spec_inspection(self):
        from orquesta.specs import loader

        spec_module = loader.get_spec_module("native")
        for path in WORKFLOWS:
            name = os.path.relpath(path, PACK_ROOT)
            with open(path) as handle:
                text = handle.read()
            spec = spec_module.instantiate(text)
            self.assertEqual(spec.get_catalog(), "native", name)
            errors = spec.inspect(app_ctx=ST2_CTX, raise_exception=False)
            self.assertEqual({kind: found for kind, found in errors.items() if found}, {}, name)
            self.assertEqual(sorted(yaml.safe_load(text)["tasks"]), sorted(spec.tasks.keys()), name)

    @skip_unless_orquesta
    def test_every_workflow_passes_st2s_task_content_checks(self):
        # Action refs registered in this pack (or core), required inputs given, no unknown inputs.
        for path in WORKFLOWS:
            self.assertEqual(inspect_workflow(path, action_meta_dir=ACTIONS_DIR), [], os.path.relpath(path, PACK_ROOT))

    @skip_unless_orquesta
    def test_an_invalid_workflow_is_reported(self):
        from orquesta.specs import loader

        spec = loader.get_spec_module("native").instantiate(
            "version: 1.0\ninput: [a]\ntasks:\n  t1:\n    action: core.noop\n    next:\n      - when: <% ctx(b) %>\n        do: ghost\n"
        )
        errors = spec.inspect(app_ctx=ST2_CTX, raise_exception=False)
        self.assertTrue(errors.get("context") or errors.get("semantics"), errors)


if __name__ == "__main__":
    unittest.main()
