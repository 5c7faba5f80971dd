"""The pack's metadata, validated by the StackStorm that is installed (the head
and floor runs: st2 master and v3.8.1) with st2's own code, as
``st2-register-content --register-pack`` runs it.

Each resource is found by st2's registrars (``st2common.bootstrap.*registrar``:
which directories, which extensions), loaded by their ``MetaLoader``, and put
through the steps ``_register_*`` takes before it writes to MongoDB: the API
model's ``validate()`` and ``to_model()`` (``PackAPI``, ``ConfigSchemaAPI``,
``ActionAPI``, ``ActionAliasAPI``, ``RuleAPI``, ``PolicyAPI``,
``SensorTypeAPI``, ``TriggerTypeAPI``), ``validate_action`` with the runner type st2 registers
from the installed runner's metadata, ``validate_criteria`` and
``validate_trigger_parameters``, the policy type's parameters schema from
``st2common/policies/meta``, ``validate_config_against_schema``. There is no
MongoDB here: where st2 would read a registered runner type, policy type or
trigger type back from the database, the same object is built from the file st2
registers it from. The live tier (``e2e/``) registers the pack in real st2
services.

The last classes are the pack's own rules (a description on every parameter,
secrets marked secret, ...), and checks that st2's validators, as called here,
do refuse bad content.
"""

import copy
import glob
import os
import re
import shutil
import tempfile
import unittest

import synthralos_tests  # noqa: F401  (import paths, and st2 must import)

import jsonschema
import yaml
from oslo_config import cfg

import st2common.policies.meta as st2_policy_meta
from st2common.bootstrap.actionsregistrar import ActionsRegistrar
from st2common.bootstrap.aliasesregistrar import AliasesRegistrar
from st2common.bootstrap.policiesregistrar import PolicyRegistrar
from st2common.bootstrap.rulesregistrar import RulesRegistrar
from st2common.bootstrap.sensorsregistrar import SensorsRegistrar
from st2common.bootstrap.triggersregistrar import TriggersRegistrar
from st2common.content.loader import MetaLoader
from st2common.content.utils import get_relative_path_to_pack_file
from st2common.models.api.action import ActionAliasAPI, ActionAPI, RunnerTypeAPI
from st2common.models.api.base import BaseAPI
from st2common.models.api.pack import ConfigAPI, ConfigSchemaAPI, PackAPI
from st2common.models.api.policy import PolicyAPI, PolicyTypeAPI
from st2common.models.api.sensor import SensorTypeAPI
from st2common.models.api.trigger import TriggerTypeAPI
from st2common.models.utils.sensor_type_utils import get_sensor_entry_point
from st2common.runners.base import get_runner_module, get_metadata as get_runner_metadata
from st2common.util import jinja as jinja_utils
from st2common.util import schema as util_schema
from st2common.util.pack import get_pack_metadata, get_pack_ref_from_metadata, validate_config_against_schema
from st2common.validators.api import action as action_validator

from synthralos_tests import PACK_ROOT
from synthralos_tests.st2_python_runner import PACK, StackStormLayout
from synthralos_tests.st2_rules import check_rule, validate_rule

EXAMPLE_CONFIG = os.path.join(PACK_ROOT, "synthralos.yaml.example")


# --------------------------------------------------------------- what st2 reads from its database


def runner_type_db(name):
    """The RunnerTypeDB st2's runnersregistrar.register_runner builds from the installed runner."""
    runner_type = copy.deepcopy(get_runner_metadata(get_runner_module(name).__name__.split(".")[0]))
    if isinstance(runner_type, list):  # a runner package may ship several runner types
        runner_type = [r for r in runner_type if r["name"] == name or name in r.get("aliases", [])][0]
    for attribute in ("experimental", "aliases"):
        runner_type.pop(attribute, None)
    runner_type["name"] = name
    runner_type.setdefault("runner_package", runner_type["runner_module"])
    api = RunnerTypeAPI(**runner_type)
    api.validate()
    return RunnerTypeAPI.to_model(api)


def policy_type_dbs():
    """{ref: PolicyTypeDB} as policiesregistrar.register_policy_types(st2common) loads them."""
    found = {}
    for directory in st2_policy_meta.__path__:
        for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
            model = PolicyTypeAPI.to_model(PolicyTypeAPI(**MetaLoader().load(path)))
            found[model.ref] = model
    return found


# --------------------------------------------------------------- registration, minus the database


class Registration(object):
    """What ``st2-register-content --register-pack`` does with the pack in ``<base>/packs``, up to
    the database writes: each resource method raises what st2 would raise for one file, and
    ``each(paths, method)`` collects ``{metadata file: error}`` for the files st2 would refuse."""

    def __init__(self, base):
        self.base = base
        self.pack_dir = os.path.join(base, "packs", PACK)
        self.loader = MetaLoader()
        self._runner_types = {}
        self.trigger_types = {}  # ref -> TriggerTypeAPI, from triggers/ and sensors/

    def files(self, registrar, content_type):
        directory = registrar._pack_loader.get_content_from_pack(pack_dir=self.pack_dir, content_type=content_type)
        if not directory:
            return []
        if isinstance(registrar, ActionsRegistrar):
            return registrar._get_actions_from_pack(actions_dir=directory)
        return registrar.get_resources_from_pack(resources_dir=directory)

    def load(self, path):
        """MetaLoader content with "pack" and "metadata_file" filled in, as every registrar does."""
        content = self.loader.load(path)
        pack_field = content.get("pack") or PACK
        if pack_field != PACK:
            raise ValueError('Model is in pack "%s" but field "pack" is different: %s' % (PACK, pack_field))
        content["pack"] = pack_field
        content["metadata_file"] = get_relative_path_to_pack_file(pack_ref=PACK, file_path=path)
        return content

    def each(self, paths, register):
        errors = {}
        for path in paths:
            try:
                register(path)
            except Exception as e:  # what the registrar reports with fail_on_failure
                message = e.message if isinstance(e, jsonschema.ValidationError) else str(e)  # without the schema
                errors[os.path.relpath(path, self.pack_dir)] = "%s: %s" % (type(e).__name__, message)
        return errors

    def runner_type(self, name):
        if name not in self._runner_types:
            try:
                self._runner_types[name] = runner_type_db(name)
            except Exception:
                # st2 says so when the runner type is not registered (action_validator.get_runner_model).
                raise ValueError("RunnerType %s is not found (installed runners only)" % name)
        return self._runner_types[name]

    # -- pack.yaml and config.schema.yaml: ResourceRegistrar._register_pack

    def pack(self):
        content = get_pack_metadata(pack_dir=self.pack_dir)
        content["ref"] = get_pack_ref_from_metadata(metadata=content, pack_directory_name=PACK)
        content["path"] = self.pack_dir
        api = PackAPI(**content)
        api.validate()
        return PackAPI.to_model(api)

    def config_schema(self):
        values = self.loader.load(os.path.join(self.pack_dir, "config.schema.yaml"))
        api = ConfigSchemaAPI(pack=PACK, attributes=values).validate()
        return ConfigSchemaAPI.to_model(api)

    def config(self, values, path):
        """ConfigsRegistrar._register_config_for_pack: ConfigAPI.validate(validate_against_schema=True)."""
        ConfigAPI(pack=PACK, values=values).validate()  # the model; the schema half reads the DB:
        schema = self.loader.load(os.path.join(self.pack_dir, "config.schema.yaml"))
        return validate_config_against_schema(schema, values, path, pack_name=PACK)

    # -- actions: ActionsRegistrar._register_action

    def action(self, path):
        api = ActionAPI(**self.load(path))
        api.validate()
        runner = self.runner_type(api.runner_type)
        action_validator.validate_action(api, runner_type_db=runner)
        model = ActionAPI.to_model(api)
        self.check_parameter_defaults(model, runner)
        return model

    def check_parameter_defaults(self, action_db, runner):
        """At execution st2 fills in defaults and validates the parameters against the merged
        runner + action schema (get_schema_for_action_parameters): every static default must pass.
        Jinja defaults are rendered first, and required values come from the caller."""
        schema = util_schema.modify_schema_allow_default_none(
            util_schema.get_schema_for_action_parameters(action_db, runner))
        instance = util_schema.assign_default_values({}, schema)
        instance = {k: v for k, v in instance.items() if "{{" not in yaml.safe_dump(v)}
        errors = [e for e in util_schema.CustomValidator(schema).iter_errors(instance) if e.validator != "required"]
        if errors:
            raise jsonschema.ValidationError("default of %s: %s" % (list(errors[0].path), errors[0].message))

    # -- aliases: AliasesRegistrar._get_action_alias_db

    def alias(self, path):
        api = ActionAliasAPI(**self.load(path))
        api.validate()
        return ActionAliasAPI.to_model(api)

    # -- triggers and sensors: TriggersRegistrar / SensorsRegistrar

    def trigger_type(self, content):
        api = TriggerTypeAPI(**content)
        api.validate()
        # Payloads (validate_trigger_payload) and trigger parameters are validated with
        # jsonschema under CustomValidator, which first checks the schema itself.
        for key in ("payload_schema", "parameters_schema"):
            if getattr(api, key, None):
                util_schema.CustomValidator.check_schema(getattr(api, key))
        model = TriggerTypeAPI.to_model(api)
        self.trigger_types[model.get_reference().ref] = api
        return model

    def trigger(self, path):
        return self.trigger_type(self.load(path))

    def sensor(self, path):
        content = self.load(path)
        if not content.get("entry_point"):
            raise ValueError("Sensor definition missing entry_point")
        content["artifact_uri"] = "file://%s" % os.path.join(os.path.dirname(path), content["entry_point"])
        api = SensorTypeAPI(**content)
        api.validate()
        # sensor_type_utils.to_sensor_db_model, without its trigger type writes:
        get_sensor_entry_point(api)
        poll_interval = getattr(api, "poll_interval", None)
        if poll_interval and poll_interval < 4:  # constants.sensors.MINIMUM_POLL_INTERVAL
            raise ValueError("Minimum possible poll_interval is 4 seconds")
        for trigger_type in getattr(api, "trigger_types", None) or []:
            self.trigger_type(dict(trigger_type, pack=PACK, metadata_file=content["metadata_file"]))
        return api

    # -- rules: RulesRegistrar._register_rules_from_pack

    def rule(self, path):
        return validate_rule(self.load(path), self.trigger_types)

    # -- policies: PolicyRegistrar._register_policy

    def policy(self, path, policy_types=None):
        api = PolicyAPI(**self.load(path))
        # PolicyAPI.validate: the model, then the parameters against the policy type's schema
        # (the policy type comes from the DB in st2, from its meta file here).
        cleaned = BaseAPI.validate(api)
        policy_types = policy_types or policy_type_dbs()
        if cleaned.policy_type not in policy_types:
            raise ValueError('Referenced policy_type "%s" doesnt exist' % cleaned.policy_type)
        schema = util_schema.get_schema_for_resource_parameters(
            parameters_schema=policy_types[cleaned.policy_type].parameters)
        cleaned.parameters = util_schema.validate(getattr(cleaned, "parameters", {}), schema,
                                                  util_schema.get_validator(), use_default=True,
                                                  allow_default_none=True)
        return PolicyAPI.to_model(cleaned)


class _RegistrationTestCase(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.layout = StackStormLayout().__enter__()
        cls.registration = Registration(cls.layout.base)

    @classmethod
    def tearDownClass(cls):
        cls.layout.__exit__(None, None, None)

    def assertRegisters(self, errors, minimum=1, paths=None):
        self.assertEqual(errors, {}, "st2 refuses:\n  " + "\n  ".join("%s: %s" % kv for kv in errors.items()))
        if paths is not None:
            self.assertGreaterEqual(len(paths), minimum, "nothing found to register")

    def register_all(self, registrar, content_type, method, minimum=1):
        """Every file of ``content_type`` registers; at least ``minimum`` were found."""
        paths = self.registration.files(registrar, content_type)
        self.assertRegisters(self.registration.each(paths, method), minimum, paths)
        return paths


# --------------------------------------------------------------- the pack's files, as st2 registers them


class PackRegistrationTest(_RegistrationTestCase):
    def test_pack_yaml(self):
        self.assertEqual(self.registration.pack().ref, PACK)

    def test_config_schema(self):
        self.assertEqual(self.registration.config_schema().pack, PACK)

    def test_example_config_validates_against_the_schema(self):
        # Installed where st2 reads pack configs (ConfigsRegistrar: <base_path>/configs/<pack>.yaml).
        path = os.path.join(self.layout.base, "configs", PACK + ".yaml")
        os.makedirs(os.path.dirname(path))
        shutil.copy(EXAMPLE_CONFIG, path)
        self.registration.config(self.registration.loader.load(path), path)

    def test_no_config_at_all_validates_with_the_defaults(self):
        self.registration.config({}, "(none)")


class ActionRegistrationTest(_RegistrationTestCase):
    def test_every_action(self):
        paths = self.register_all(ActionsRegistrar(), "actions", self.registration.action, minimum=20)
        names = [self.registration.loader.load(p)["name"] for p in paths]
        self.assertEqual(len(names), len(set(names)), "two metadata files declare the same action")


class AliasRegistrationTest(_RegistrationTestCase):
    def test_every_alias(self):  # the pack has none today
        self.register_all(AliasesRegistrar(), "aliases", self.registration.alias, minimum=0)


class TriggerSensorRuleRegistrationTest(_RegistrationTestCase):
    # st2-register-content registers triggers, then sensors, then rules (content/bootstrap.py).

    def test_triggers_then_sensors_then_rules(self):
        self.register_all(TriggersRegistrar(), "triggers", self.registration.trigger)
        self.register_all(SensorsRegistrar(), "sensors", self.registration.sensor)
        self.register_all(RulesRegistrar(), "rules", self.registration.rule)


class PolicyRegistrationTest(_RegistrationTestCase):
    def test_every_policy(self):
        types = policy_type_dbs()
        self.assertIn("action.concurrency", types)  # the stock types were found
        self.register_all(PolicyRegistrar(), "policies", lambda p: self.registration.policy(p, types))


# --------------------------------------------------------------- the pack's own rules


def _pack_yaml(*patterns):
    paths = sorted(set(p for pattern in patterns for p in glob.glob(os.path.join(PACK_ROOT, pattern))))
    return [(os.path.relpath(p, PACK_ROOT), yaml.safe_load(open(p))) for p in paths]


def _actions():
    return [(rel, meta) for rel, meta in _pack_yaml("actions/*.yaml") if isinstance(meta, dict)]


_SECRET_NAME = re.compile(r"(^|_)(password|secret|token|api_key|write_key|credentials?)$")


class PackConventionsTest(unittest.TestCase):
    """What the pack promises StackStorm operators beyond what st2 enforces."""

    def test_every_action_and_parameter_has_a_description(self):
        missing = ["%s: %s" % (rel, name) for rel, meta in _actions()
                   for name, spec in (meta.get("parameters") or {}).items() if not (spec or {}).get("description")]
        missing += [rel for rel, meta in _actions() if not meta.get("description")]
        self.assertEqual(missing, [])

    def test_secret_looking_parameters_and_config_items_are_secret(self):
        items = [("%s: %s" % (rel, name), spec) for rel, meta in _actions()
                 for name, spec in (meta.get("parameters") or {}).items()]
        schema = yaml.safe_load(open(os.path.join(PACK_ROOT, "config.schema.yaml")))

        def walk(prefix, properties):
            for name, spec in (properties or {}).items():
                spec = spec or {}
                items.append(("config.schema.yaml: %s%s" % (prefix, name), spec))
                for nested in (spec, spec.get("items"), spec.get("additionalProperties")):
                    if isinstance(nested, dict):
                        walk("%s%s." % (prefix, name), nested.get("properties"))

        walk("", schema)
        secret_looking = [(where, spec) for where, spec in items
                          if _SECRET_NAME.search(where.rsplit(" ", 1)[-1].rsplit(".", 1)[-1])]
        self.assertGreaterEqual(len(secret_looking), 3, "the pattern finds the pack's secrets")
        self.assertEqual([where for where, spec in secret_looking if not (spec or {}).get("secret")], [])

    def test_python_actions_log_at_info_unless_asked(self):
        """st2's python runner logs at DEBUG by default; the web UI shows those lines in the box
        it labels "error". Each python action overrides the runner's log_level default."""
        levels = runner_type_db("python-script").runner_parameters["log_level"]["enum"]
        python = [(rel, meta) for rel, meta in _actions() if meta.get("runner_type") == "python-script"]
        self.assertGreaterEqual(len(python), 20)
        wrong = [rel for rel, meta in python
                 if ((meta.get("parameters") or {}).get("log_level") or {}).get("default") != "INFO"]
        self.assertEqual(wrong, [])
        self.assertIn("INFO", levels)

    def test_enums_hold_their_default(self):
        wrong = ["%s: %s" % (rel, name) for rel, meta in _actions()
                 for name, spec in (meta.get("parameters") or {}).items()
                 if (spec or {}).get("enum") and spec.get("default") is not None
                 and spec["default"] not in spec["enum"]]
        self.assertEqual(wrong, [])

    def test_entry_points_exist_and_every_workflow_has_its_orquesta_action(self):
        missing = [rel for rel, meta in _actions() if meta.get("entry_point")
                   and not os.path.isfile(os.path.join(PACK_ROOT, "actions", meta["entry_point"]))]
        self.assertEqual(missing, [])
        used = {meta.get("entry_point") for _, meta in _actions() if meta.get("runner_type") == "orquesta"}
        for path in glob.glob(os.path.join(PACK_ROOT, "actions", "workflows", "*.yaml")):
            self.assertIn("workflows/" + os.path.basename(path), used)

    def test_rules_and_policies_name_existing_actions_and_triggers(self):
        actions = {"%s.%s" % (PACK, meta["name"]) for _, meta in _actions()}
        triggers = {"%s.%s" % (PACK, meta["name"]) for _, meta in _pack_yaml("triggers/*.yaml")}
        refs = [(rel, meta["action"]["ref"]) for rel, meta in _pack_yaml("rules/*.yaml")]
        refs += [(rel, meta["resource_ref"]) for rel, meta in _pack_yaml("policies/*.yaml")]
        self.assertEqual([r for r in refs if r[1].startswith(PACK + ".") and r[1] not in actions], [])
        trigger_refs = [(rel, meta["trigger"]["type"]) for rel, meta in _pack_yaml("rules/*.yaml")]
        self.assertEqual([r for r in trigger_refs if r[1].startswith(PACK + ".") and r[1] not in triggers], [])

    def test_example_config_secrets_do_not_use_decrypt_kv(self):
        # st2 decrypts "secret: true" values itself; it refuses decrypt_kv there only at the top level,
        # and for a nested item the loader would decrypt the plaintext again at run time.
        schema = yaml.safe_load(open(os.path.join(PACK_ROOT, "config.schema.yaml")))
        example = yaml.safe_load(open(EXAMPLE_CONFIG)) or {}
        wrong = []

        def walk(values, properties, prefix):
            for key, value in (values or {}).items():
                spec = (properties or {}).get(key) or {}
                if isinstance(value, dict):
                    walk(value, spec.get("properties"), prefix + key + ".")
                elif spec.get("secret") and jinja_utils.is_jinja_expression(value) and "decrypt_kv" in value:
                    wrong.append(prefix + key)

        walk(example, schema, "")
        self.assertEqual(wrong, [])


# --------------------------------------------------------------- st2's validators, as called here, refuse


GOOD_ACTION = {
    "name": "example",
    "runner_type": "python-script",
    "entry_point": "health_check.py",
    "description": "Example.",
    "enabled": True,
    "parameters": {
        "target": {"type": "string", "description": "Target.", "required": True, "position": 0},
        "count": {"type": "integer", "default": 3, "position": 1},
        "timeout": {"default": 120},
    },
}


class RefusalsTest(unittest.TestCase):
    """Content st2 refuses is refused by the calls above (each on the installed st2). The
    content is written to a scratch pack directory st2 is pointed at, never to this pack."""

    @classmethod
    def setUpClass(cls):
        cls.base = tempfile.mkdtemp(prefix="synthralos-refusals-")
        for kind in ("actions", "aliases", "rules", "policies", "sensors", "triggers"):
            os.makedirs(os.path.join(cls.base, "packs", PACK, kind))
        for name in ("pack.yaml", "config.schema.yaml", os.path.join("actions", "health_check.py")):
            shutil.copy(os.path.join(PACK_ROOT, name), os.path.join(cls.base, "packs", PACK, name))
        cfg.CONF.set_override(name="packs_base_paths", override=os.path.join(cls.base, "packs"), group="content")
        cls.registration = Registration(cls.base)

    @classmethod
    def tearDownClass(cls):
        cfg.CONF.clear_override(name="packs_base_paths", group="content")
        shutil.rmtree(cls.base, ignore_errors=True)

    def write(self, kind, content):
        path = os.path.join(self.registration.pack_dir, kind, "content.yaml")
        with open(path, "w") as handle:
            yaml.safe_dump(content, handle)
        return path

    def refused(self, method, kind, content, *fragments):
        errors = self.registration.each([self.write(kind, content)], method)
        self.assertEqual(len(errors), 1, "st2 accepted %r" % (content,))
        message = list(errors.values())[0]
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_a_good_action_registers(self):
        self.assertEqual(self.registration.each([self.write("actions", GOOD_ACTION)], self.registration.action), {})

    def test_actions(self):
        def action(**changes):
            meta = copy.deepcopy(GOOD_ACTION)
            for key, value in changes.items():
                meta["parameters"][key] = value
            return meta

        self.refused(self.registration.action, "actions", dict(GOOD_ACTION, timeout=30), "timeout")
        self.refused(self.registration.action, "actions", action(timeout={"type": "number"}),
                     'The attribute "type" for the runner parameter "timeout"')
        self.refused(self.registration.action, "actions", action(**{"bad-name": {"type": "string"}}), "bad-name")
        self.refused(self.registration.action, "actions", action(count={"type": "integer", "position": 2}),
                     "not contiguous")
        self.refused(self.registration.action, "actions", action(flag={"type": "boolean", "immutable": True}),
                     "Immutable param flag requires a default value")
        self.refused(self.registration.action, "actions", action(count={"type": "integer", "default": "three"}),
                     "default of ['count']")
        self.refused(self.registration.action, "actions", dict(GOOD_ACTION, runner_type="no-such-runner"),
                     "RunnerType no-such-runner")

    def test_rules(self):
        rule = {"name": "r", "trigger": {"type": "core.st2.IntervalTimer", "parameters": {"unit": "seconds", "delta": 5}},
                "criteria": {}, "action": {"ref": "core.noop", "parameters": {}}}
        self.assertEqual(self.registration.each([self.write("rules", rule)], self.registration.rule), {})
        self.refused(self.registration.rule, "rules", dict(rule, trigger={"type": "core.st2.IntervalTimer",
                                                                          "parameters": {"unit": "fortnights", "delta": 1}}),
                     "fortnights")
        self.refused(self.registration.rule, "rules", dict(rule, criteria={"trigger.x": {"type": "equal", "pattern": 1}}),
                     "operator equal not in list")
        self.refused(self.registration.rule, "rules", dict(rule, criteria={"trigger.y": {"type": "exists"}}),
                     "no pattern specified")
        self.refused(self.registration.rule, "rules", dict(rule, action={"ref": "core.noop", "params": {}}), "params")
        # check_rule, for rules outside rules/ (docs/rules): the same checks, as error strings.
        self.assertEqual(check_rule(rule, "docs.yaml"), [])
        self.assertIn("operator equal", check_rule(dict(rule, criteria={"t.x": {"type": "equal", "pattern": 1}}),
                                                   "docs.yaml")[0])

    def test_policies(self):
        policy = {"name": "p", "resource_ref": "core.noop", "policy_type": "action.retry",
                  "parameters": {"retry_on": "failure", "max_retry_count": 2}}
        self.assertEqual(self.registration.each([self.write("policies", policy)], self.registration.policy), {})
        self.refused(self.registration.policy, "policies", dict(policy, parameters={"retry_on": "error"}), "error")
        self.refused(self.registration.policy, "policies", dict(policy, parameters={"retry_on": "failure",
                                                                                    "backoff": 3}), "backoff")
        self.refused(self.registration.policy, "policies", dict(policy, policy_type="action.ratelimit"),
                     "doesnt exist")

    def test_sensors_and_trigger_types(self):
        self.refused(self.registration.sensor, "sensors", {"class_name": "S", "name": "s", "entry_point": "s.py"}, "name")
        self.refused(self.registration.sensor, "sensors", {"class_name": "S"}, "missing entry_point")
        self.refused(self.registration.trigger, "triggers", {"name": "t", "payload_schema": {
            "type": "object", "properties": {"a": {"type": "string", "required": ["a"]}}}}, "required")
        self.refused(self.registration.trigger, "triggers", {"name": "t", "payload": {}}, "payload")

    def test_aliases(self):
        alias = {"name": "a", "action_ref": "synthralos.health_check", "formats": ["health"]}
        self.assertEqual(self.registration.each([self.write("aliases", alias)], self.registration.alias), {})
        self.refused(self.registration.alias, "aliases", dict(alias, formats="health"), "is not of type")
        self.refused(self.registration.alias, "aliases", dict(alias, reply="x"), "reply")

    def test_pack_metadata_and_config(self):
        with self.assertRaises(jsonschema.ValidationError):
            PackAPI(name="synthralos", ref="synthralos", description="d", version="0.1", author="a").validate()
        with self.assertRaises(jsonschema.ValidationError):
            PackAPI(name="synthralos", ref="synthralos", description="d", version="0.1.0", author="a",
                    python_versions=["3.8"]).validate()
        with self.assertRaises(jsonschema.ValidationError):
            ConfigSchemaAPI(pack=PACK, attributes={"bad-key": {"type": "string"}}).validate()
        with self.assertRaises(jsonschema.ValidationError):
            ConfigSchemaAPI(pack=PACK, attributes={"x": {"type": "string", "secret": "yes"}}).validate()
        schema = {"token": {"type": "string", "secret": True, "required": True}}
        with self.assertRaises(jsonschema.ValidationError):
            validate_config_against_schema(schema, {}, "memory.yaml", PACK)
        with self.assertRaises(Exception) as caught:
            validate_config_against_schema(schema, {"token": "{{ st2kv.system.t | decrypt_kv }}"}, "memory.yaml", PACK)
        self.assertIn("decrypt_kv", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
