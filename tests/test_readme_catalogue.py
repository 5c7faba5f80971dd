"""README.md's catalogue block is what scripts/readme_catalogue.py makes of the metadata."""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import glob
import importlib.util
import os
import re
import shutil
import tempfile
import textwrap
import unittest

import yaml
from hypothesis import given, settings, strategies as st

from synthralos_tests import PACK_ROOT

_SPEC = importlib.util.spec_from_file_location("readme_catalogue", os.path.join(PACK_ROOT, "scripts", "readme_catalogue.py"))
catalogue = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(catalogue)

REGENERATE = "python3 scripts/readme_catalogue.py"


def _readme_block():
    with open(os.path.join(PACK_ROOT, "README.md")) as handle:
        return catalogue.split_readme(handle.read())[1]


def _metadata(pattern):
    found = {}
    for path in glob.glob(os.path.join(PACK_ROOT, pattern)):
        with open(path) as handle:
            meta = yaml.safe_load(handle)
        found[meta.get("name") or meta.get("class_name")] = meta
    return found


class CatalogueInReadmeTest(unittest.TestCase):
    def test_the_block_matches_the_metadata(self):
        block = _readme_block()
        fresh = "\n".join(catalogue.render())
        if block != fresh:
            old, new = set(block.splitlines()), set(fresh.splitlines())
            self.fail("README.md's catalogue differs from the metadata; regenerate it with `%s`.\n"
                      "lines only in README: %s\nlines only in the metadata: %s"
                      % (REGENERATE, sorted(old - new)[:5], sorted(new - old)[:5]))

    def test_the_readme_stays_one_short_page(self):
        with open(os.path.join(PACK_ROOT, "README.md")) as handle:
            count = len(handle.read().splitlines())
        self.assertLessEqual(count, 250, "README.md has %d lines; it is the operator's page (at most 250): "
                                         "move reference text to docs/ and link it" % count)

    def test_every_item_is_listed_once(self):
        block = _readme_block()
        for pattern, fmt in (("actions/*.yaml", "`%s`"), ("rules/*.yaml", "| `%s` |"),
                             ("policies/*.yaml", "| `%s` |"), ("sensors/*.yaml", "| `%s` |"),
                             ("triggers/*.yaml", "| `synthralos.%s` |")):
            for name in _metadata(pattern):
                self.assertEqual(len(re.findall(re.escape(fmt % name) + r"[ ,.|]", block)), 1, (pattern, name))

    def test_on_and_off_follow_the_metadata(self):
        block = _readme_block()
        for name, rule in _metadata("rules/*.yaml").items():
            mark = "on" if rule.get("enabled", False) else "**off**"
            self.assertTrue("| `%s` | %s |" % (name, mark) in block, "rule %s should be %s; regenerate with `%s`"
                            % (name, mark, REGENERATE))
        for name, policy in _metadata("policies/*.yaml").items():
            mark = "on" if policy.get("enabled", True) else "**off**"
            self.assertTrue("| `%s` | %s |" % (name, mark) in block, "policy %s should be %s; regenerate with `%s`"
                            % (name, mark, REGENERATE))

    def test_operator_actions_come_before_the_internal_steps(self):
        block = _readme_block()
        internal_at = block.index("**Internal steps**")
        callees = catalogue.workflow_callees()
        self.assertTrue(callees and callees <= set(_metadata("actions/*.yaml")), callees)
        for name in _metadata("actions/*.yaml"):
            at = block.index("`%s`" % name)
            if name in callees and name not in catalogue.ALSO_BY_HAND:
                self.assertGreater(at, internal_at, name)
        self.assertLess(block.index("`health_check`"), internal_at)
        self.assertLess(block.index("`agent_recovery`"), internal_at)

    def test_the_hand_kept_lists_name_existing_actions(self):
        actions = set(_metadata("actions/*.yaml"))
        self.assertLessEqual(set(catalogue.ALSO_BY_HAND), actions)
        self.assertTrue(all(catalogue.ALSO_BY_HAND.values()))

    def test_internal_steps_say_so_where_the_web_ui_cuts(self):
        """st2's web UI lists each action with about 55 characters of its description: an
        internal step starts "Step of <what runs it>: <verb>", and the header stays short."""
        callees = catalogue.workflow_callees()
        for name, meta in _metadata("actions/*.yaml").items():
            text = " ".join(meta["description"].split())
            if name in callees and name not in catalogue.ALSO_BY_HAND:
                self.assertRegex(text[:50], r"^Step of [\w /]+: \w+", name)
            if name in catalogue.ALSO_BY_HAND:
                self.assertFalse(text.startswith("Step of"), name)
            sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", text)
            self.assertLessEqual(len(sentences), 3, "%s: the first sentence and two short ones at most" % name)
            self.assertLessEqual(len(text), 360, name)

class GeneratorTest(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.root)
        for folder in ("actions/workflows", "rules", "sensors", "triggers", "policies"):
            os.makedirs(os.path.join(self.root, folder))

    def write(self, path, text):
        with open(os.path.join(self.root, path), "w") as handle:
            handle.write(textwrap.dedent(text))

    def test_defaults_and_grouping_from_minimal_metadata(self):
        self.write("actions/flow.yaml", """\
            name: flow
            runner_type: orquesta
            description: Do the thing. Then more details follow here.
            """)
        self.write("actions/inner.yaml", "name: inner\nrunner_type: python-script\ndescription: Does a part.\n")
        self.write("actions/step.yaml", "name: step\nrunner_type: python-script\ndescription: 'Step of flow: x'\n")
        self.write("actions/bare.yaml", "runner_type: python-script\n")  # no name, no description
        self.write("actions/shell.yaml", "name: shell\nrunner_type: local-shell-cmd\ndescription: Run it.\n")
        self.write("actions/workflows/flow.yaml", "tasks:\n  a:\n    action: synthralos.inner\n")
        self.write("rules/r.yaml", "name: r\ntrigger: {type: t.x}\naction: {ref: synthralos.flow}\n")
        self.write("policies/p.yaml", "name: p\npolicy_type: action.concurrency\nresource_ref: synthralos.flow\n")
        self.write("sensors/s.yaml", "class_name: S\nenabled: false\ndescription: Watches | pipes.\n")
        self.write("triggers/t.yaml", "name: t\n")
        lines = catalogue.render(self.root)
        text = "\n".join(lines)
        self.assertEqual((lines[0], lines[-1]), (catalogue.BEGIN, catalogue.END))
        internal = text.index("**Internal steps**")
        self.assertLess(text.index("| `flow` | workflow | Do the thing |"), internal)
        self.assertLess(text.index("| `bare` | python |  |"), internal)
        self.assertGreater(text.index("`inner`"), internal)
        self.assertGreater(text.index("`step`"), internal)
        self.assertIn("| `r` | **off** |", text)  # st2's RuleAPI: a rule without `enabled` is off
        self.assertIn("| `p` | on |", text)
        self.assertIn("| `S` | **off** | Watches \\| pipes |", text)
        self.assertIn("| `synthralos.t` |  |", text)
        self.assertIn("| `shell` | local-shell-cmd | Run it |", text)

    def test_rewrite_keeps_the_rest_of_the_readme(self):
        before, after = "# title\n\ntext\n", "\n\n## after\n"
        text = before + catalogue.BEGIN + "\nold\n" + catalogue.END + after
        head, block, tail = catalogue.split_readme(text)
        self.assertEqual((head, tail), (before, after))
        with self.assertRaises(ValueError):
            catalogue.split_readme("no markers here")

    @settings(max_examples=200, deadline=None, database=None)
    @given(st.text(max_size=400))
    def test_first_sentence_is_one_short_line(self, text):
        line = catalogue.first_sentence(text)
        self.assertNotIn("\n", line)
        self.assertLessEqual(len(line.replace("\\|", "|")), catalogue.CUT + 4)
        self.assertNotRegex(line.replace("\\|", ""), r"\|")


if __name__ == "__main__":
    unittest.main()
