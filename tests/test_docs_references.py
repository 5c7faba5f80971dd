"""What README.md, CONTRIBUTING.md and docs/*.md name exists.

Checked in every page:
- links `[text](target#anchor)` to the repository: the file exists, and an anchor into a
  markdown page is one of its headings (GitHub's slugs);
- file paths in code (`healing/detection.py`, `rules/cron_backoff_example.yaml`,
  `llm_errors.py`): a path resolves from the repository root, the page's folder, `actions/` or
  the library (`actions/lib/synthralos_lib/`); a bare file name exists somewhere in the
  repository;
- module names (`synthralos_lib.state.redaction`, `state.shapes.bounded`, `detection.FAILURE_TYPES`):
  the module exists and the attribute named after it is defined there;
- config keys (`retry.fast_path_max_wait_s`, `llm_targets[].api_key`, and every key of a YAML
  example whose top-level keys are config sections) are in config.schema.yaml;
- `synthralos.<name>` references name an action, trigger, rule, policy or sensor of the pack.

NOT_THE_PACKS lists the few names that belong to other software, each with why.
"""

import synthralos_tests  # noqa: F401  (puts actions/lib on sys.path, also under nose)

import glob
import os
import re
import unittest

import yaml

from synthralos_tests import PACK_ROOT

LIB = os.path.join(PACK_ROOT, "actions", "lib", "synthralos_lib")
PAGES = ["README.md", "CONTRIBUTING.md"] + sorted(
    os.path.relpath(p, PACK_ROOT) for p in glob.glob(os.path.join(PACK_ROOT, "docs", "*.md")))
EXTENSIONS = ("py", "yaml", "yml", "md", "json", "sh", "txt", "ini", "sql")

# Names the pages mention that are not the pack's, with why.
NOT_THE_PACKS = {
    "python_action_wrapper.py": "st2's python runner (st2 source), which runs every python action",
    "tests/bullmq/node_modules": "installed by `npm ci` when the BullMQ tests run, not kept in the repository",
    "config.yaml": "rudder-server's own config file, where its dedup is switched on (docs/events.md)",
}


def _read(page):
    with open(os.path.join(PACK_ROOT, page)) as handle:
        return handle.read()


def _repo_files():
    found = set()
    for folder, dirs, files in os.walk(PACK_ROOT):
        dirs[:] = [d for d in dirs if d not in (".git", "node_modules", ".venv", ".hypothesis", "__pycache__")]
        found.update(files)
    return found


def slug(heading):
    """GitHub's anchor for a heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def headings(text):
    body = re.sub(r"```.*?```", "", text, flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", body, re.M)}


def code_texts(text):
    """Inline code spans and fenced blocks, the places where names are written."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    rest = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", rest) + blocks


def yaml_blocks(text):
    return re.findall(r"```ya?ml\n(.*?)```", text, re.S)


def tokens(code):
    for token in re.split(r"[\s'\"(),;={}|]+", code):
        token = token.strip(".:!?`[]")
        if token:
            yield token


def pack_names():
    names = set()
    for pattern in ("actions/*.yaml", "triggers/*.yaml", "rules/*.yaml", "policies/*.yaml"):
        for path in glob.glob(os.path.join(PACK_ROOT, pattern)):
            with open(path) as handle:
                meta = yaml.safe_load(handle) or {}
            if meta.get("name"):
                names.add(meta["name"])
    for path in glob.glob(os.path.join(PACK_ROOT, "sensors", "*.yaml")):
        with open(path) as handle:
            names.add((yaml.safe_load(handle) or {}).get("class_name"))
    return names


def config_schema():
    with open(os.path.join(PACK_ROOT, "config.schema.yaml")) as handle:
        return yaml.safe_load(handle)


def config_key_problem(schema, dotted):
    """None when `section.key[.key]` (with `[]` for list items) is in the schema, else why not."""
    parts = dotted.split(".")
    node = {"properties": schema}
    for part in parts:
        if part == "*":
            return None
        is_list = part.endswith("[]")
        props = node.get("properties")
        if props is None:
            return None  # a free-form object (model_prices): any key
        name = part[:-2] if is_list else part
        if name not in props:
            return "%s: no %r" % (dotted, name)
        node = props[name]
        if is_list or node.get("type") == "array":
            node = node.get("items") or {}
    return None


def module_problem(dotted):
    """None when a `synthralos_lib.`/library dotted name resolves to a module (and attribute)."""
    parts = dotted.split(".")
    if parts[0] == "synthralos_lib":
        parts = parts[1:]
    path, i = LIB, 0
    while i < len(parts) and (os.path.isdir(os.path.join(path, parts[i]))
                              or os.path.isfile(os.path.join(path, parts[i] + ".py"))):
        path = os.path.join(path, parts[i])
        i += 1
    if i == 0:
        return "%s: no such module in actions/lib/synthralos_lib" % dotted
    rest = parts[i:]
    if not rest:
        return None
    source = path + ".py" if os.path.isfile(path + ".py") else os.path.join(path, "__init__.py")
    with open(source) as handle:
        code = handle.read()
    if not re.search(r"^(?:class|def)\s+%s\b|^%s\s*[:=]|^\s+def\s+%s\b" % ((re.escape(rest[0]),) * 3), code, re.M):
        return "%s: %s is not defined in %s" % (dotted, rest[0], os.path.relpath(source, PACK_ROOT))
    return None


LIB_PACKAGES = {d for d in os.listdir(LIB) if os.path.isdir(os.path.join(LIB, d)) and not d.startswith("_")}
LIB_MODULES = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(LIB, "*", "*.py"))} - {"__init__"}
TOP_LEVEL = set(os.listdir(PACK_ROOT)) | {"noxfile.py", "e2e", "analytics", "dashboards"}


def path_problem(token, page, files):
    page_dir = os.path.dirname(os.path.join(PACK_ROOT, page))
    if "/" in token and token.split("/", 1)[0] in LIB_PACKAGES and "." in token.rsplit("/", 1)[1] \
            and token.rsplit(".", 1)[-1] not in EXTENSIONS:
        return module_problem(token.replace("/", "."))  # healing/failure_trigger.build_failure
    if "/" in token:
        first = token.split("/", 1)[0]
        roots = [PACK_ROOT, page_dir, os.path.join(PACK_ROOT, "actions"), LIB]
        if first not in TOP_LEVEL and first not in LIB_PACKAGES and first not in ("..", "lib", "workflows") \
                and not os.path.exists(os.path.join(page_dir, first)):
            return None  # not a repository path (application/json, owner/repo, ...)
        if any(os.path.exists(os.path.normpath(os.path.join(root, token))) for root in roots):
            return None
        return "%s: no such path (from the repository root, %s, actions/ or the library)" % (
            token, os.path.relpath(page_dir, PACK_ROOT))
    if token.rsplit(".", 1)[-1] in EXTENSIONS and "." in token:
        return None if token in files else "%s: no file of that name in the repository" % token
    return None


def problems_in(page, names, schema, files, text=None):
    text = _read(page) if text is None else text
    found = []

    def report(name, why):
        name = name.rstrip("/")
        if name not in NOT_THE_PACKS:
            found.append("%s: %s" % (page, why))

    page_dir = os.path.dirname(os.path.join(PACK_ROOT, page))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor not in headings(text):
                report(page, "link %s: no heading with that anchor on this page" % target)
            continue
        full = os.path.normpath(os.path.join(page_dir, path))
        rel = os.path.relpath(full, PACK_ROOT)
        if not os.path.exists(full):
            report(rel, "link %s: %s does not exist" % (target, rel))
        elif anchor and full.endswith(".md") and anchor not in headings(open(full).read()):
            report(rel, "link %s: %s has no heading with that anchor" % (target, rel))

    for code in code_texts(text):
        for token in tokens(code):
            if re.search(r"[<>*$~{}]", token) or token.startswith("/") or "://" in token:
                continue  # placeholders, globs, variables, absolute host paths
            problem = path_problem(token, page, files)
            if problem:
                report(token, problem)
                continue
            dotted = re.match(r"^([a-z_][a-z0-9_]*(?:\[\])?(?:\.[A-Za-z0-9_]+(?:\[\])?)+)$", token)
            if not dotted or token.rsplit(".", 1)[-1] in EXTENSIONS:
                continue
            head = token.split(".")[0].replace("[]", "")
            if head in schema:
                problem = config_key_problem(schema, token)
            elif head == "synthralos_lib" or (head in LIB_PACKAGES and token.split(".")[1] in LIB_MODULES):
                problem = module_problem(token)
            elif head in LIB_MODULES and re.match(r"^[A-Z]", token.split(".")[1]):
                # detection.FAILURE_TYPES; a lower-case tail is too often a field (policy.max_delay_s)
                problem = module_problem("%s.%s" % (_package_of(head), token))
            else:
                problem = None
            if problem:
                report(token, problem)

    for block in yaml_blocks(text):
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and set(data) & set(schema) and set(data) <= set(schema):
            for section, value in data.items():
                for key in (value or {}) if isinstance(value, dict) else ():
                    problem = config_key_problem(schema, "%s.%s" % (section, key))
                    if problem:
                        report(key, "config example: " + problem)

    for match in re.finditer(r"(?<![\w/.:-])synthralos\.([A-Za-z_]\w*)((?:\.\w+)*)(\.?<)?", text):
        name, more, placeholder = match.group(1), match.group(2), match.group(3)
        if placeholder or name in names or (name + more) in names:
            continue
        if more and name not in ("yaml",):
            continue  # a datastore key (synthralos.failures.agent-1) or a file name
        if name == "yaml":
            continue  # synthralos.yaml, the pack's config file
        report("synthralos." + name, "synthralos.%s: no action, trigger, rule, policy or sensor of that name" % name)
    return found


def _package_of(module):
    for path in glob.glob(os.path.join(LIB, "*", module + ".py")):
        return os.path.basename(os.path.dirname(path))
    return "?"


class DocsReferencesTest(unittest.TestCase):
    def test_every_name_the_pages_mention_exists(self):
        names, schema, files = pack_names(), config_schema(), _repo_files()
        problems = []
        for page in PAGES:
            problems += problems_in(page, names, schema, files)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_allowlisted_names_are_mentioned_and_justified(self):
        text = "".join(_read(page) for page in PAGES)
        for name, why in NOT_THE_PACKS.items():
            self.assertTrue(name in text, "%s is no longer mentioned: drop it from NOT_THE_PACKS" % name)
            self.assertTrue(why)


class CheckerTest(unittest.TestCase):
    """The checks find what they are for (each would pass vacuously otherwise)."""

    def setUp(self):
        self.names, self.schema, self.files = pack_names(), config_schema(), _repo_files()

    def problems(self, markdown):
        return problems_in("docs/probe.md", self.names, self.schema, self.files, text=markdown)

    def test_good_names_pass(self):
        self.assertEqual(self.problems(
            "# T\n\nSee [events](events.md#delivery), [me](#t), `healing/detection.py`, "
            "`actions/lib/synthralos_lib/llm/policy.py`, `synthralos_lib.state.redaction`, "
            "`state.shapes.bounded`, `detection.FAILURE_TYPES`, `retry.fast_path_max_wait_s`, "
            "`llm_targets[].api_key`, `model_prices.gpt-4o`, `rudderstack.*`, "
            "`synthralos.yaml.example`, `application/json`, `/var/log/st2/x.log`, "
            "`synthralos.failures.<agent>`, `st2 key list --prefix synthralos.`.\n\n"
            "```sh\nst2 run synthralos.health_check\nst2 run synthralos.flush_events_scheduled.concurrency\n```\n\n"
            "```yaml\nredis: {url: x}\nretry: {max_attempts: 3}\n```\n"), [])

    def test_each_kind_of_stale_name_is_found(self):
        found = self.problems(
            "# T\n\n[gone](nowhere.md), [anchor](events.md#no-such-heading), `healing/llm_errors.py`, "
            "`llm_errors.py`, `synthralos_lib.state.nothing`, `state.redaction.no_such_function`, "
            "`retry.no_such_key`, `llm_targets[].no_such_field`, `synthralos.no_such_action`, "
            "`detection.NO_SUCH_TABLE`.\n\n"
            "```yaml\nagent_failure_stream: {enabled: true, no_such_key: 1}\n```\n")
        for needle in ("nowhere.md", "no-such-heading", "healing/llm_errors.py", "llm_errors.py: no file",
                       "synthralos_lib.state.nothing", "no_such_function", "retry.no_such_key",
                       "no_such_field", "synthralos.no_such_action", "no_such_key", "NO_SUCH_TABLE"):
            self.assertTrue(any(needle in p for p in found), (needle, found))

    def test_slugs_follow_github(self):
        self.assertEqual(slug("Benchmark (`bench/retry.py --quick`)"), "benchmark-benchretrypy---quick")
        self.assertEqual(slug("State: st2 datastore by default, Redis when configured"),
                         "state-st2-datastore-by-default-redis-when-configured")


if __name__ == "__main__":
    unittest.main()
