"""Pack structure: what `st2 pack install` and the web UI will meet.

Every action's entry point exists and its class loads; every parameter has a
description and a type; rules reference existing actions and declared
triggers; policies reference existing actions and valid policy types; the
example config validates against the schema; every workflow passes
Orquesta's own inspection.
"""

import glob
import importlib.util
import inspect
import json
import os
import unittest

import jsonschema
import yaml

from synthralos_tests.orquesta_runner import ORQUESTA_AVAILABLE, inspect_workflow, skip_unless_orquesta

from synthralos_lib.state.config import PACK_ROOT, load_config, load_st2_schema, secret_paths, to_json_schema

PACK = "synthralos"
ST2_PARAMETER_TYPES = {"string", "integer", "number", "boolean", "object", "array", "null"}
# Trigger types st2 itself provides that rules may use.
ST2_BUILTIN_TRIGGERS = {
    "core.st2.generic.actiontrigger",
    "core.st2.generic.notifytrigger",
    "core.st2.action.file_written",
    "core.st2.generic.inquiry",
    "core.st2.IntervalTimer",
    "core.st2.DateTimer",
    "core.st2.CronTimer",
    "core.st2.webhook",
    "core.st2.key_value_pair.create",
    "core.st2.key_value_pair.update",
    "core.st2.key_value_pair.value_change",
    "core.st2.key_value_pair.delete",
    "core.st2.sensor.process_spawn",
    "core.st2.sensor.process_exit",
}
# Policy types registered by a stock st2 install.
ST2_POLICY_TYPES = {"action.concurrency", "action.concurrency.attr", "action.retry"}
# Actions from st2's own packs that this pack's workflows and rules may call.
ST2_BUILTIN_ACTIONS = {"core.noop", "core.echo", "core.inject_trigger", "core.local", "core.http"}
RUNNERS = {"python-script", "orquesta"}
# JSON parameters that only an earlier result fills (no example to type), each with why.
FILLED_BY_A_TASK = {
    "llm_request: resume": "the previous llm_request result's `resume`, handed back by the workflow",
}
# Parameters without a type, each with why: a value of several JSON types that st2 passes as given.
UNTYPED_PARAMETERS = {
    "messages": "plain text, one message object or a list of them (llm.client.normalize_messages)",
}


def _load_yaml(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def _metadata(folder):
    return {path: _load_yaml(path) for path in sorted(glob.glob(os.path.join(PACK_ROOT, folder, "*.yaml")))}


def _pack_actions():
    return {meta["name"]: meta for meta in _metadata("actions").values()}


def _declared_triggers():
    triggers = set()
    for meta in _metadata("triggers").values():
        triggers.add("%s.%s" % (PACK, meta["name"]))
    for meta in _metadata("sensors").values():
        for trigger in meta.get("trigger_types") or []:
            triggers.add("%s.%s" % (PACK, trigger["name"]))
    return triggers


class PackMetadataTest(unittest.TestCase):
    def test_pack_yaml(self):
        pack = _load_yaml(os.path.join(PACK_ROOT, "pack.yaml"))
        self.assertEqual(pack["ref"], PACK)
        self.assertRegex(pack["version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual(pack["python_versions"], ["3"])
        self.assertEqual(pack["stackstorm_version"], ">=3.8.0")
        for field in ("name", "description", "keywords", "author", "email"):
            self.assertTrue(pack.get(field), field)

    def test_icon_is_64x64_png(self):
        with open(os.path.join(PACK_ROOT, "icon.png"), "rb") as handle:
            header = handle.read(24)
        self.assertEqual(header[:8], b"\x89PNG\r\n\x1a\n")
        self.assertEqual((int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")), (64, 64))

    def test_config_schema_credentials_are_secret(self):
        # The Redis URL may carry a password, so it is a credential too.
        credentials = {"llm_targets[].api_key", "llm_targets[].azure_ad_token", "agent_api.api_key", "rudderstack.write_key", "redis.url",
                       "bullmq.redis_url"}
        self.assertEqual(set(secret_paths({"properties": load_st2_schema()})), credentials)

    def test_config_schema_nested_objects_forbid_unknown_keys(self):
        for name, section in load_st2_schema().items():
            if section.get("type") == "object" and "properties" in section:
                self.assertIs(section.get("additionalProperties"), False, name)
            self.assertTrue(section.get("description"), name)

    def test_example_config_validates(self):
        example = _load_yaml(os.path.join(PACK_ROOT, "synthralos.yaml.example"))
        config = load_config(example)
        self.assertEqual(config.section("rudderstack")["batch_size"], 20)

    def test_empty_config_gets_the_seed_defaults(self):
        config = load_config({})
        self.assertEqual(
            config.section("cron_backoff"),
            {
                "max_consecutive_failures": 10,
                "initial_backoff_ms": 60000,
                "max_backoff_ms": 86400000,
                "backoff_multiplier": 2,
                "probe_quiet_period_ms": 3600000,
                "max_probe_quiet_period_ms": 86400000,
                "probe_lease_ms": 3600000,
            },
        )
        self.assertEqual(config.section("rudderstack")["data_plane_url"], "https://hosted.rudderlabs.com")
        self.assertEqual(config.section("rudderstack")["max_retries"], 3)
        self.assertEqual(config.section("rudderstack")["retry_delay_ms"], 1000)
        self.assertEqual(config.section("rudderstack")["flush_interval_ms"], 10000)
        self.assertIsInstance(to_json_schema(load_st2_schema()), dict)


class ActionMetadataTest(unittest.TestCase):
    def test_every_action_is_complete(self):
        actions = _metadata("actions")
        self.assertTrue(actions, "the pack has no actions")
        for path, meta in actions.items():
            where = os.path.relpath(path, PACK_ROOT)
            self.assertEqual(os.path.basename(path), meta["name"] + ".yaml", where)
            self.assertIn(meta.get("runner_type"), RUNNERS, where)
            self.assertTrue(meta.get("description"), where)
            self.assertIs(meta.get("enabled"), True, where)
            entry_point = os.path.join(PACK_ROOT, "actions", meta["entry_point"])
            self.assertTrue(os.path.isfile(entry_point), "%s: missing %s" % (where, meta["entry_point"]))
            for name, param in (meta.get("parameters") or {}).items():
                self.assertTrue(param.get("description"), "%s: parameter %s has no description" % (where, name))
                if param.get("immutable") and "default" in param:
                    continue
                if name in UNTYPED_PARAMETERS:  # its action reads every form it accepts
                    self.assertNotIn("type", param, where)
                    continue
                self.assertIn(param.get("type"), ST2_PARAMETER_TYPES, "%s: parameter %s type" % (where, name))

    def test_every_json_parameter_shows_an_example_that_fits(self):
        """st2's web UI shows a JSON field as an empty box: its description ends with a one-line
        example ("e.g. {...}") that the parameter's own schema accepts."""
        from synthralos_lib.llm.client import normalize_messages

        checked = 0
        for path, meta in _metadata("actions").items():
            for name, param in (meta.get("parameters") or {}).items():
                where = "%s: %s" % (meta["name"], name)
                if param.get("type") not in ("object", "array") and name not in UNTYPED_PARAMETERS:
                    continue
                if where in FILLED_BY_A_TASK:
                    continue
                text = " ".join(param["description"].split())
                self.assertIn(", e.g. ", text, where)
                example, end = json.JSONDecoder().raw_decode(text, text.index(", e.g. ") + len(", e.g. "))
                self.assertEqual(text[end:], "", "%s: the example ends the description" % where)
                if name in UNTYPED_PARAMETERS:
                    normalize_messages(example)
                else:
                    schema = {k: v for k, v in param.items() if k not in ("required", "description", "default")}
                    jsonschema.Draft4Validator(schema).validate(example)
                checked += 1
        self.assertGreaterEqual(checked, 35)
        self.assertLessEqual(set(FILLED_BY_A_TASK), {"%s: %s" % (m["name"], n) for m in _metadata("actions").values()
                                                     for n in (m.get("parameters") or {})})

    def test_python_entry_points_define_one_action_class(self):
        from st2common.runners.base import get_metadata
        from st2common.runners.base_action import Action

        runner_parameters = get_metadata("python_runner")[0]["runner_parameters"]
        self.assertIn("log_level", runner_parameters)

        for path, meta in _metadata("actions").items():
            if meta["runner_type"] != "python-script":
                continue
            module_path = os.path.join(PACK_ROOT, "actions", meta["entry_point"])
            spec = importlib.util.spec_from_file_location("synthralos_action_" + meta["name"], module_path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            classes = [
                obj
                for obj in vars(module).values()
                if inspect.isclass(obj) and issubclass(obj, Action) and obj.__module__ == module.__name__
            ]
            self.assertEqual(len(classes), 1, "%s must define exactly one Action subclass" % meta["entry_point"])
            run_params = inspect.signature(classes[0].run).parameters
            for name in meta.get("parameters") or {}:
                if name in runner_parameters:  # st2 hands these to the runner, not to run()
                    continue
                self.assertTrue(
                    name in run_params or any(p.kind == p.VAR_KEYWORD for p in run_params.values()),
                    "%s.run does not accept parameter %s" % (meta["name"], name),
                )

    def test_workflow_actions_point_at_workflows(self):
        for path, meta in _metadata("actions").items():
            if meta["runner_type"] == "orquesta":
                self.assertTrue(meta["entry_point"].startswith("workflows/"), path)


class RuleAndPolicyTest(unittest.TestCase):
    def _action_refs(self):
        return {"%s.%s" % (PACK, name) for name in _pack_actions()} | ST2_BUILTIN_ACTIONS

    def test_rules_reference_existing_actions_and_triggers(self):
        actions = self._action_refs()
        triggers = _declared_triggers() | ST2_BUILTIN_TRIGGERS
        for path, rule in _metadata("rules").items():
            where = os.path.relpath(path, PACK_ROOT)
            self.assertEqual(rule.get("pack"), PACK, where)
            self.assertTrue(rule.get("description"), where)
            self.assertIn(rule["trigger"]["type"], triggers, where)
            self.assertIn(rule["action"]["ref"], actions, where)

    def test_policies_reference_existing_actions(self):
        actions = self._action_refs()
        for path, policy in _metadata("policies").items():
            where = os.path.relpath(path, PACK_ROOT)
            self.assertIn(policy["resource_ref"], actions, where)
            self.assertIn(policy["policy_type"], ST2_POLICY_TYPES, where)
            self.assertIn("threshold", policy.get("parameters") or {}, where)

    def test_triggers_declare_payload_schemas(self):
        for path, meta in list(_metadata("triggers").items()) + [
            (path, trigger) for path, sensor in _metadata("sensors").items() for trigger in sensor.get("trigger_types") or []
        ]:
            schema = meta.get("payload_schema")
            self.assertIsInstance(schema, dict, path)
            self.assertEqual(schema.get("type"), "object", path)
            self.assertTrue(meta.get("description"), path)
            json.dumps(schema)


class WorkflowInspectionTest(unittest.TestCase):
    @skip_unless_orquesta
    def test_every_workflow_passes_orquesta_inspection(self):
        self.assertTrue(ORQUESTA_AVAILABLE)
        workflows = sorted(glob.glob(os.path.join(PACK_ROOT, "actions", "workflows", "*.yaml")))
        for path in workflows:
            self.assertEqual(inspect_workflow(path), [], os.path.relpath(path, PACK_ROOT))

    def test_every_workflow_has_an_action(self):
        entry_points = {meta["entry_point"] for meta in _pack_actions().values()}
        for path in glob.glob(os.path.join(PACK_ROOT, "actions", "workflows", "*.yaml")):
            self.assertIn("workflows/" + os.path.basename(path), entry_points, path)
