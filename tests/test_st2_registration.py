"""What `st2-validate-pack` and `st2ctl reload --register-all` will enforce.

st2common is not installable here, so the constraints StackStorm (>= 3.8,
checked against both the v3.8-era sources and master where they differ)
applies to pack content at validation / registration time are transcribed
below as Draft-4 JSON schemas plus a few procedural checks. Every rule names
the upstream file (repository StackStorm/st2) it comes from.

Only PyYAML and jsonschema (2.6 on Python 3.8, 3.2 / 4.x on 3.11) are needed;
the tests are plain unittest.TestCase classes (runnable by pytest or nose) and
do not use tests/conftest.py. Pack files are globbed at test time, so actions,
rules, policies, sensors, triggers and aliases added later are all checked.

Notes on how st2 validates (st2common/st2common/util/schema/__init__.py):
  * st2's CustomValidator is Draft 4 except that ``properties`` uses the
    Draft-3 rule, so ``required: true`` sits on each property. The schemas
    here are written in real Draft 4 (``required: [...]`` lists) and pack
    schemas are converted the same way (_to_draft4) before validation.
  * An action parameter / config schema item is checked against
    util/schema/action_params.json (additionalProperties: false, ``type`` a
    single simple type, ``required``/``secret``/``immutable`` booleans,
    ``position`` >= 0). Sub-schemas inside it (items, properties, ...) are
    reached through ``$ref: "#"`` under that file's ``id`` (the draft-04 URL),
    which resolves to the meta-schema CustomValidator registered for that id,
    util/schema/custom.json with additionalProperties removed: unknown
    keywords are allowed there, ``type`` may be a list, and ``required`` must
    still be a boolean (a Draft-4 ``required: [a, b]`` list is rejected).
"""

import copy
import glob
import os
import re
import unittest

import jsonschema
import yaml

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_REF = "synthralos"

# ---------------------------------------------------------------------------
# Generic helpers
# ---------------------------------------------------------------------------


def _rel(path):
    return os.path.relpath(path, PACK_ROOT)


def _load_yaml(path):
    with open(path) as handle:
        return yaml.safe_load(handle)


def _pack_files(*patterns):
    found = set()
    for pattern in patterns:
        found.update(glob.glob(os.path.join(PACK_ROOT, pattern)))
    return sorted(found)


def _format_path(parts):
    """Render a jsonschema error path like st2-validate-pack does: a.b[0].c"""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += "[%d]" % part
        else:
            out += (".%s" % part) if out else str(part)
    return out or "<root>"


def _join(prefix, suffix):
    if not prefix:
        return suffix
    if not suffix or suffix == "<root>":
        return prefix
    if suffix.startswith("["):
        return prefix + suffix
    return prefix + "." + suffix


def _schema_errors(schema, instance, where, prefix=""):
    """All Draft-4 validation errors as 'file: path: message' strings."""
    validator = jsonschema.Draft4Validator(schema)
    errors = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        path = _join(prefix, _format_path(list(error.absolute_path)))
        errors.append("%s: %s: %s" % (where, path or "<root>", error.message))
    return errors


def _is_jinja(value):
    # st2common/st2common/util/jinja.py is_jinja_expression: a string holding
    # "{{" or "{%" markers.
    return isinstance(value, str) and ("{{" in value or "{%" in value)


# ---------------------------------------------------------------------------
# Meta-schemas for parameter / config-schema items
# ---------------------------------------------------------------------------

# Source: st2common/st2common/util/schema/action_params.json and custom.json
# (definitions.simpleTypes, which adds st2's "raw_string").
SIMPLE_TYPES = ["array", "boolean", "integer", "null", "number", "object", "string", "raw_string"]


def _keyword_properties(ref, allow_type_list):
    """Keywords a (sub-)schema may use. Source: action_params.json / custom.json."""
    sub = {"$ref": ref}
    pos_int = {"type": "integer", "minimum": 0}
    schema_array = {"type": "array", "minItems": 1, "items": sub}
    simple = {"enum": SIMPLE_TYPES}
    if allow_type_list:
        # custom.json: type may also be a unique, non-empty list of simple types.
        type_schema = {"anyOf": [simple, {"type": "array", "items": simple, "minItems": 1, "uniqueItems": True}]}
    else:
        # action_params.json: "doesn't allow parameter "type" attribute to be array".
        type_schema = {"anyOf": [simple]}
    return {
        "id": {"type": "string"},
        "$schema": {"type": "string"},
        "title": {"type": "string"},
        "description": {"type": "string"},
        "default": {},
        "multipleOf": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
        "maximum": {"type": "number"},
        "exclusiveMaximum": {"type": "boolean"},
        "minimum": {"type": "number"},
        "exclusiveMinimum": {"type": "boolean"},
        "maxLength": pos_int,
        "minLength": pos_int,
        "pattern": {"type": "string"},
        "additionalItems": {"anyOf": [{"type": "boolean"}, sub]},
        "items": {"anyOf": [sub, schema_array]},
        "maxItems": pos_int,
        "minItems": pos_int,
        "uniqueItems": {"type": "boolean"},
        "maxProperties": pos_int,
        "minProperties": pos_int,
        # st2 extension: Draft-3 style boolean "required" (not a Draft-4 list).
        "required": {"type": "boolean"},
        # st2 extension: mask / auto-decrypt the value.
        "secret": {"type": "boolean"},
        "additionalProperties": {"anyOf": [{"type": "boolean"}, sub]},
        "definitions": {"type": "object", "additionalProperties": sub},
        "properties": {"type": "object", "additionalProperties": sub},
        "patternProperties": {"type": "object", "additionalProperties": sub},
        "dependencies": {
            "type": "object",
            "additionalProperties": {
                "anyOf": [sub, {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True}]
            },
        },
        "enum": {"type": "array", "minItems": 1, "uniqueItems": True},
        "type": type_schema,
        # st2 extensions: positional CLI argument index and immutable parameters.
        "position": {"type": "number", "minimum": 0},
        "immutable": {"type": "boolean"},
        "allOf": schema_array,
        "anyOf": schema_array,
        "oneOf": schema_array,
        "not": sub,
    }


_DEPENDENCIES = {"exclusiveMaximum": ["maximum"], "exclusiveMinimum": ["minimum"]}

DEFINITIONS = {
    # custom.json with additionalProperties removed (what "$ref": "#" reaches).
    "nested": {
        "type": "object",
        "properties": _keyword_properties("#/definitions/nested", True),
        "dependencies": _DEPENDENCIES,
    },
    # action_params.json itself: a top-level parameter / config item.
    "param": {
        "type": "object",
        "properties": _keyword_properties("#/definitions/nested", False),
        "dependencies": _DEPENDENCIES,
        "additionalProperties": False,
    },
}

# Source: st2common/st2common/models/api/notification.py (NotificationSubSchemaAPI).
NOTIFY_SUB_SCHEMA = {
    "type": "object",
    "properties": {
        "message": {"type": "string"},
        "data": {"type": "object"},
        "routes": {"type": "array"},
        "channels": {"type": "array"},
    },
    "additionalProperties": False,
}

# ---------------------------------------------------------------------------
# Resource schemas (Draft-4 transcriptions of the st2 API models)
# ---------------------------------------------------------------------------

# Source: st2common/st2common/constants/pack.py
PACK_REF_WHITELIST_REGEX = r"^[a-z0-9_]+$"
PACK_VERSION_REGEX = (
    r"^(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)"
    r"(?:-[\da-z\-]+(?:\.[\da-z\-]+)*)?(?:\+[\da-z\-]+(?:\.[\da-z\-]+)*)?$"
)
ST2_VERSION_REGEX = r"^((>?>|>=|=|<=|<?<)\s*[0-9]+\.[0-9]+\.[0-9]+?(\s*,)?\s*)+$"
RESERVED_PACK_LIST = ["_global"]
PACK_RESERVED_CHARACTERS = ["."]

# Source: st2common/st2common/models/api/pack.py (PackAPI.schema).
PACK_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "null"]},
        "name": {"type": "string"},
        "ref": {"type": "string", "pattern": PACK_REF_WHITELIST_REGEX},
        "uid": {"type": "string"},
        "description": {"type": "string"},
        "keywords": {"type": "array", "items": {"type": "string"}},
        "version": {"type": "string", "pattern": PACK_VERSION_REGEX},
        "stackstorm_version": {"type": "string", "pattern": ST2_VERSION_REGEX},
        "python_versions": {
            "type": "array",
            "items": {"type": "string", "enum": ["2", "3"]},
            "minItems": 1,
            "maxItems": 2,
            "uniqueItems": True,
        },
        "author": {"type": "string"},
        "email": {"type": "string"},
        "contributors": {"type": "array", "items": {"type": "string", "maxLength": 100}},
        "files": {"type": "array", "items": {"type": "string"}},
        "dependencies": {"type": "array", "items": {"type": "string"}},
        "system": {"type": "object"},
        "path": {"type": "string"},
    },
    "required": ["name", "description", "version", "author"],
    # PackAPI allows unknown keys on purpose ("gracefully add new attributes").
    "additionalProperties": True,
}

# Source: st2common/st2common/models/api/pack.py (ConfigSchemaAPI.schema
# "attributes": patternProperties ^\w+$ -> get_action_parameters_schema()).
CONFIG_SCHEMA_SCHEMA = {
    "definitions": DEFINITIONS,
    "type": "object",
    "patternProperties": {r"^\w+$": {"$ref": "#/definitions/param"}},
    "additionalProperties": False,
}

# Source: st2common/st2common/models/api/action.py (ActionAPI.schema).
# output_schema: v3.8 accepts only the "legacy" shape (patternProperties
# ^\w+$ -> a schema per output key, additionalProperties false; see the
# comment quoted in st2common/st2common/util/output_schema.py); master also
# accepts a full JSON schema, but a full schema ({type: object, ...}) fails
# on 3.8 ("object" is not an object), so only the legacy shape works on both.
ACTION_SCHEMA = {
    "definitions": DEFINITIONS,
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": "string"},
        "enabled": {"type": "boolean"},
        "runner_type": {"type": "string"},
        "entry_point": {"type": "string"},
        "pack": {"type": "string"},
        "parameters": {
            "type": "object",
            "patternProperties": {r"^\w+$": {"$ref": "#/definitions/param"}},
            "additionalProperties": False,
        },
        "output_schema": {
            "type": "object",
            "patternProperties": {r"^\w+$": {"$ref": "#/definitions/nested"}},
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "object"}},
        "notify": {
            "type": "object",
            "properties": {
                "on-complete": NOTIFY_SUB_SCHEMA,
                "on-failure": NOTIFY_SUB_SCHEMA,
                "on-success": NOTIFY_SUB_SCHEMA,
            },
            "additionalProperties": False,
        },
        "metadata_file": {"type": "string"},
    },
    "required": ["name", "runner_type"],
    "additionalProperties": False,
}

# Source: st2common/st2common/models/api/action.py (ActionAliasAPI.schema).
ALIAS_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string"},
        "pack": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "enabled": {"type": "boolean"},
        "action_ref": {"type": "string"},
        "formats": {
            "type": "array",
            "items": {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "properties": {
                            "display": {"type": "string"},
                            "representation": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                ]
            },
        },
        "ack": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "format": {"type": "string"},
                "extra": {"type": "object"},
                "append_url": {"type": "boolean"},
            },
        },
        "result": {
            "type": "object",
            "properties": {
                "enabled": {"type": "boolean"},
                "format": {"type": "string"},
                "extra": {"type": "object"},
            },
        },
        "extra": {"type": "object"},
        "immutable_parameters": {"type": "object"},
        "metadata_file": {"type": "string"},
    },
    # "pack" is required too, but the registrar fills it in from the directory.
    "required": ["name", "action_ref"],
    "additionalProperties": False,
}

# Source: st2common/st2common/models/api/rule.py (RuleTypeSpec, RuleAPI.schema).
RULE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "null"]},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string"},
        "pack": {"type": "string"},
        "description": {"type": "string"},
        "type": {
            "type": "object",
            "properties": {"ref": {"type": "string"}, "parameters": {"type": "object"}},
            "required": ["ref"],
            "additionalProperties": False,
        },
        "trigger": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
                "ref": {"type": "string"},
            },
            "required": ["type"],
            "additionalProperties": True,
        },
        "criteria": {"type": "object"},
        "action": {
            "type": "object",
            "properties": {
                "ref": {"type": "string"},
                "description": {"type": "string"},
                "parameters": {"type": "object"},
            },
            "required": ["ref"],
            "additionalProperties": False,
        },
        "enabled": {"type": "boolean"},
        "context": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "object"}},
        "metadata_file": {"type": "string"},
    },
    "required": ["name", "trigger", "action"],
    "additionalProperties": False,
}

# Source: st2common/st2common/models/api/policy.py (PolicyAPI.schema). Only the
# keys present in every 3.8+ version are allowed.
POLICY_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "null"]},
        "name": {"type": "string"},
        "pack": {"type": "string"},
        "ref": {"type": "string"},
        "description": {"type": "string"},
        "enabled": {"type": "boolean"},
        "resource_ref": {"type": "string"},
        "policy_type": {"type": "string"},
        "parameters": {
            "type": "object",
            "patternProperties": {
                r"^\w+$": {
                    "anyOf": [
                        {"type": "array"},
                        {"type": "boolean"},
                        {"type": "integer"},
                        {"type": "number"},
                        {"type": "object"},
                        {"type": "string"},
                    ]
                }
            },
        },
    },
    "required": ["name", "resource_ref", "policy_type"],
    "additionalProperties": False,
}

# Source: st2common/st2common/models/api/trigger.py (TriggerTypeAPI.schema).
TRIGGER_TYPE_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "null"]},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "name": {"type": "string"},
        "pack": {"type": "string"},
        "description": {"type": "string"},
        "payload_schema": {"type": "object"},
        "parameters_schema": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "object"}},
        "metadata_file": {"type": "string"},
    },
    "required": ["name"],
    "additionalProperties": False,
}

# Source: st2common/st2common/models/api/sensor.py (SensorTypeAPI.schema;
# master's read-only runtime status fields are not part of a sensor file).
SENSOR_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": ["string", "null"]},
        "ref": {"type": "string"},
        "uid": {"type": "string"},
        "class_name": {"type": "string"},
        "pack": {"type": "string"},
        "description": {"type": "string"},
        "artifact_uri": {"type": "string"},
        "entry_point": {"type": "string"},
        "enabled": {"type": "boolean"},
        "trigger_types": {"type": "array", "items": TRIGGER_TYPE_SCHEMA},
        "poll_interval": {"type": "number"},
        "metadata_file": {"type": "string"},
    },
    "required": ["class_name"],
    "additionalProperties": False,
}

# ---------------------------------------------------------------------------
# Runners, policy types, operators, system triggers
# ---------------------------------------------------------------------------

# Source: contrib/runners/python_runner/python_runner/runner.yaml and
# contrib/runners/orquesta_runner/orquesta_runner/runner.yaml.
RUNNER_PARAMETERS = {
    "python-script": {
        "debug": {"type": "boolean", "required": False, "default": False},
        "content_version": {"type": "string", "required": False},
        "env": {"type": "object"},
        "timeout": {"type": "integer", "default": 600},
        "log_level": {
            "type": "string",
            "default": "DEBUG",
            "enum": ["AUDIT", "CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"],
        },
    },
    "orquesta": {},
}
# Runners a stock st2 install registers (contrib/runners/*); parameters of the
# ones not used by this pack are not transcribed, so their override rules are
# not checked.
STOCK_RUNNERS = {
    "python-script", "orquesta", "action-chain", "local-shell-cmd", "local-shell-script",
    "remote-shell-cmd", "remote-shell-script", "http-request", "noop", "inquirer", "announcement",
    "winrm-cmd", "winrm-ps-cmd", "winrm-ps-script",
}

# Source: st2common/st2common/util/schema/__init__.py (RUNNER_PARAM_OVERRIDABLE_ATTRS).
RUNNER_PARAM_OVERRIDABLE_ATTRS = ["default", "description", "enum", "immutable", "required"]

# Source: st2common/st2common/policies/meta/concurrency.yaml, retry.yaml and
# st2actions/st2actions/policies/meta/concurrency_by_attr.yaml (parameters
# schemas of the stock policy types; ref = <resource_type>.<name>).
POLICY_TYPE_PARAMETERS = {
    "action.concurrency": {
        "threshold": {"type": "integer", "required": True},
        "action": {"type": "string", "default": "delay", "enum": ["delay", "cancel"]},
    },
    "action.concurrency.attr": {
        "threshold": {"type": "integer", "required": True},
        "action": {"type": "string", "default": "delay", "enum": ["delay", "cancel"]},
        "attributes": {"type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1}},
    },
    "action.retry": {
        "retry_on": {"type": "string", "required": True, "enum": ["failure", "timeout"]},
        "max_retry_count": {"type": "integer", "required": True, "minimum": 1, "maximum": 5, "default": 2},
        "delay": {"type": "number", "required": False, "minimum": 0, "maximum": 120},
    },
}

# Source: st2common/st2common/operators.py (the ``operators`` lookup table).
CRITERIA_OPERATORS = {
    "matchwildcard", "matchregex", "regex", "iregex", "eq", "equals", "neq", "nequals",
    "ieq", "iequals", "contains", "icontains", "ncontains", "incontains", "startswith",
    "istartswith", "endswith", "iendswith", "lt", "lessthan", "gt", "greaterthan",
    "td_lt", "timediff_lt", "td_gt", "timediff_gt", "exists", "nexists", "inside", "in",
    "ninside", "nin", "search",
}

_CRON_FIELD = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
# Source: st2common/st2common/constants/triggers.py (SYSTEM_TRIGGER_TYPES and the
# timer parameters schemas, validated by validators/api/reactor.py
# validate_trigger_parameters for system triggers).
SYSTEM_TRIGGER_PARAMETERS = {
    "core.st2.IntervalTimer": {
        "type": "object",
        "properties": {
            "timezone": {"type": "string"},
            "unit": {"enum": ["weeks", "days", "hours", "minutes", "seconds"]},
            "delta": {"type": "integer"},
        },
        "required": ["unit", "delta"],
        "additionalProperties": False,
    },
    "core.st2.DateTimer": {
        "type": "object",
        "properties": {"timezone": {"type": "string"}, "date": {"type": "string"}},
        "required": ["date"],
        "additionalProperties": False,
    },
    "core.st2.CronTimer": {
        "type": "object",
        "properties": dict(
            {"timezone": {"type": "string"}},
            **{k: _CRON_FIELD for k in ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")}
        ),
        "additionalProperties": False,
    },
    "core.st2.webhook": {
        "type": "object",
        "properties": {"url": {"type": "string"}},
        "required": ["url"],
        "additionalProperties": False,
    },
}
SYSTEM_TRIGGER_TYPES = set(SYSTEM_TRIGGER_PARAMETERS) | {
    "core.st2.generic.actiontrigger", "core.st2.generic.notifytrigger", "core.st2.action.file_written",
    "core.st2.generic.inquiry", "core.st2.key_value_pair.create", "core.st2.key_value_pair.update",
    "core.st2.key_value_pair.value_change", "core.st2.key_value_pair.delete",
    "core.st2.sensor.process_spawn", "core.st2.sensor.process_exit",
}

# ---------------------------------------------------------------------------
# st2-style schema -> Draft 4, defaults, jinja rendering
# ---------------------------------------------------------------------------


def _to_draft4(schema, allow_default_none=False):
    """Convert an st2 parameters-style schema (Draft-3 boolean ``required`` on
    properties, "raw_string") into plain Draft 4.

    With allow_default_none, optional properties and properties whose default
    is None also accept null - st2common/util/schema/__init__.py
    modify_schema_allow_default_none, used by validate(allow_default_none=True)
    for configs, policies and trigger parameters.
    """
    if isinstance(schema, list):
        return [_to_draft4(item, allow_default_none) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "required" and isinstance(value, bool):
            continue
        if key in ("properties", "patternProperties", "definitions") and isinstance(value, dict):
            out[key] = {name: _to_draft4(sub, allow_default_none) for name, sub in value.items()}
        elif key in ("items", "additionalItems", "additionalProperties", "not", "anyOf", "oneOf", "allOf"):
            out[key] = _to_draft4(value, allow_default_none)
        elif key == "dependencies" and isinstance(value, dict):
            out[key] = {k: _to_draft4(v, allow_default_none) for k, v in value.items()}
        elif key == "type":
            out[key] = [("string" if t == "raw_string" else t) for t in value] if isinstance(value, list) else (
                "string" if value == "raw_string" else value
            )
        else:
            out[key] = value
    properties = schema.get("properties")
    if isinstance(properties, dict):
        required = [name for name, sub in properties.items() if isinstance(sub, dict) and sub.get("required") is True]
        if required:
            out["required"] = sorted(set(required) | set(out.get("required") or []))
        if allow_default_none:
            for name, sub in properties.items():
                if not isinstance(sub, dict):
                    continue
                optional = not sub.get("required", False)
                if (("default" in sub) or optional) and sub.get("default") is None:
                    _allow_null(out["properties"][name])
    return out


def _allow_null(schema):
    if "anyOf" in schema:
        schema["anyOf"] = list(schema["anyOf"]) + [{"type": "null"}]
    elif "oneOf" in schema:
        schema["oneOf"] = list(schema["oneOf"]) + [{"type": "null"}]
    elif isinstance(schema.get("type"), list):
        if "null" not in schema["type"]:
            schema["type"] = list(schema["type"]) + ["null"]
    elif "type" in schema:
        if schema["type"] != "null":
            schema["type"] = [schema["type"], "null"]
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = list(schema["enum"]) + [None]


def _resource_parameters_schema(parameters, allow_additional_properties):
    """st2common/util/schema/__init__.py get_schema_for_resource_parameters:
    an object whose properties are the parameter items; an empty item means
    "any type"."""
    any_type = {"anyOf": [{"type": t} for t in ("array", "boolean", "integer", "number", "object", "string")]}
    properties = {name: (item if item else any_type) for name, item in (parameters or {}).items()}
    if not properties:
        return {}
    return {"type": "object", "properties": properties, "additionalProperties": allow_additional_properties}


def _assign_defaults(instance, schema):
    """st2common/util/schema/__init__.py assign_default_values: fill in
    defaults of absent / None properties (recursing into objects and arrays)
    before validating."""
    if isinstance(instance, dict) and isinstance(schema, dict):
        for name, sub in (schema.get("properties") or {}).items():
            if not isinstance(sub, dict):
                continue
            if "default" in sub and instance.get(name) is None:
                instance[name] = copy.deepcopy(sub["default"])
            if instance.get(name) is not None:
                instance[name] = _assign_defaults(instance[name], sub)
    elif isinstance(instance, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        return [_assign_defaults(item, schema["items"]) if item is not None else item for item in instance]
    return instance


def _validate_st2_parameters(parameters_schema, values, where, prefix, allow_additional_properties):
    """Validate values the way st2 validates config / policy / trigger
    parameters: resource schema, defaults assigned, None allowed for optional
    items, Draft-3 required."""
    schema = _resource_parameters_schema(parameters_schema, allow_additional_properties)
    if not schema:
        return []
    schema = _to_draft4(schema, allow_default_none=True)
    values = _assign_defaults(copy.deepcopy(values if values is not None else {}), schema)
    return _schema_errors(schema, values, where, prefix)


def _object_properties_schema(object_schema, keys):
    """st2common/util/config_loader.py _get_object_properties_schema: the
    schema of each key from properties, then patternProperties, then an
    additionalProperties schema."""
    object_schema = object_schema if isinstance(object_schema, dict) else {}
    result = {}
    properties = object_schema.get("properties") or {}
    patterns = object_schema.get("patternProperties") or {}
    additional = object_schema.get("additionalProperties")
    for key in keys:
        if key in properties:
            result[key] = properties[key]
            continue
        matched = {}
        for pattern, sub in patterns.items():
            if re.search(pattern, key):
                matched.update(sub)
        if matched:
            result[key] = matched
        elif isinstance(additional, dict):
            result[key] = additional
        else:
            result[key] = {}
    return result


def _walk_config(values, item_schema, path):
    """Yield (path, value, schema_item) for every leaf of a config, pairing
    each value with its schema item the way the config loader does."""
    if isinstance(values, dict):
        schemas = _object_properties_schema(item_schema, list(values.keys()))
        for key, value in values.items():
            for leaf in _walk_config(value, schemas.get(key) or {}, _join(path, str(key))):
                yield leaf
    elif isinstance(values, list):
        items = (item_schema or {}).get("items") if isinstance(item_schema, dict) else None
        for index, value in enumerate(values):
            if isinstance(items, list):
                sub = items[index] if index < len(items) else (item_schema.get("additionalItems") or {})
            else:
                sub = items or {}
            for leaf in _walk_config(value, sub if isinstance(sub, dict) else {}, "%s[%d]" % (path, index)):
                yield leaf
    else:
        yield path, values, item_schema or {}


def _plausible_value(schema):
    """A value of the right type, standing in for a rendered {{ st2kv... }}."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = [k for k in kind if k != "null"][0] if [k for k in kind if k != "null"] else "null"
    return {
        "string": "rendered-value",
        "raw_string": "rendered-value",
        "integer": max(1, int(schema.get("minimum", 1))),
        "number": float(max(1, schema.get("minimum", 1))),
        "boolean": True,
        "object": {},
        "array": [],
        "null": None,
    }.get(kind, "rendered-value")


def _render_config(values, config_schema):
    """Replace every jinja string by a plausible value for its schema item."""
    top = {"type": "object", "properties": config_schema, "additionalProperties": True}

    def render(value, item_schema):
        if isinstance(value, dict):
            schemas = _object_properties_schema(item_schema, list(value.keys()))
            return {k: render(v, schemas.get(k) or {}) for k, v in value.items()}
        if isinstance(value, list):
            items = item_schema.get("items") if isinstance(item_schema, dict) else None
            out = []
            for index, item in enumerate(value):
                if isinstance(items, list):
                    sub = items[index] if index < len(items) else {}
                else:
                    sub = items or {}
                out.append(render(item, sub))
            return out
        if _is_jinja(value):
            return _plausible_value(item_schema or {})
        return value

    return render(values, top)


# ---------------------------------------------------------------------------
# Checks (each returns a list of error strings)
# ---------------------------------------------------------------------------


def check_pack_metadata(meta, where):
    if not isinstance(meta, dict):
        return ["%s: <root>: pack metadata must be a mapping" % where]
    meta = dict(meta)
    # PackAPI.__init__ casts an unquoted version to str.
    if meta.get("version") is not None:
        meta["version"] = str(meta["version"])
    errors = _schema_errors(PACK_SCHEMA, meta, where)
    # st2common/st2common/util/pack.py get_pack_ref_from_metadata: without
    # "ref", "name" must itself be a valid ref.
    ref = meta.get("ref") or meta.get("name")
    if not meta.get("ref") and isinstance(ref, str) and not re.match(PACK_REF_WHITELIST_REGEX, ref):
        errors.append('%s: name: no "ref" and name "%s" is not a valid pack ref' % (where, ref))
    # st2common/st2common/constants/pack.py RESERVED_PACK_LIST / PACK_RESERVED_CHARACTERS.
    if isinstance(ref, str):
        if ref in RESERVED_PACK_LIST:
            errors.append('%s: ref: "%s" is a reserved pack name' % (where, ref))
        for char in PACK_RESERVED_CHARACTERS:
            if char in ref:
                errors.append('%s: ref: "%s" contains reserved character "%s"' % (where, ref, char))
    return errors


def check_config_schema(config_schema, where):
    """config.schema.yaml: ConfigSchemaAPI + every default valid for its item."""
    if config_schema is None:
        return []
    if not isinstance(config_schema, dict):
        return ["%s: <root>: config schema must be a mapping" % where]
    errors = _schema_errors(CONFIG_SCHEMA_SCHEMA, config_schema, where)
    if errors:
        return errors
    # Defaults are assigned by the config loader / validate_config_against_schema
    # and then validated, so each must fit its own item.
    errors.extend(_check_defaults(config_schema, where, ""))
    # An absent config (all defaults) must validate too.
    errors.extend(check_config_values(config_schema, {}, where + " (defaults only)"))
    return errors


def _check_defaults(items, where, prefix):
    errors = []
    for name, item in (items or {}).items():
        if not isinstance(item, dict):
            continue
        path = _join(prefix, name)
        if "default" in item and item["default"] is not None and not _is_jinja(item["default"]):
            sub = _to_draft4(item)
            defaulted = _assign_defaults(copy.deepcopy(item["default"]), sub)
            errors.extend(
                "%s (default of %s)" % (e, path) for e in _schema_errors(sub, defaulted, where, path + ".default")
            )
        if isinstance(item.get("properties"), dict):
            errors.extend(_check_defaults(item["properties"], where, path + ".properties"))
        if isinstance(item.get("items"), dict) and isinstance(item["items"].get("properties"), dict):
            errors.extend(_check_defaults(item["items"]["properties"], where, path + ".items.properties"))
        if isinstance(item.get("additionalProperties"), dict) and isinstance(
            item["additionalProperties"].get("properties"), dict
        ):
            errors.extend(
                _check_defaults(item["additionalProperties"]["properties"], where, path + ".additionalProperties.properties")
            )
    return errors


def check_config_values(config_schema, values, where):
    """st2common/st2common/util/pack.py validate_config_against_schema, as run by
    st2common/bootstrap/configsregistrar.py (ConfigAPI.validate(
    validate_against_schema=True)): the raw values - jinja strings unrendered -
    against the schema, additional top-level keys allowed."""
    if not isinstance(values, dict):
        return ["%s: <root>: config must be a mapping" % where]
    return _validate_st2_parameters(config_schema, values, where, "", allow_additional_properties=True)


def check_config_rendered(config_schema, values, where):
    """The same after {{ st2kv... }} strings are rendered (config_loader.py)."""
    rendered = _render_config(values, config_schema)
    return _validate_st2_parameters(config_schema, rendered, where + " (rendered)", "", True)


def check_config_secret_decrypt(config_schema, values, where):
    """A ``secret: true`` item is decrypted by st2 itself
    (config_loader.py _get_datastore_value_for_expression ->
    services/config.py deserialize_key_value(secret=True)), so its value must
    not use the decrypt_kv filter: validate_config_against_schema rejects it at
    registration ('Use of "decrypt_kv" jinja filter is not allowed for such
    values', top-level keys) and for nested items the loader would try to
    decrypt the already decrypted plaintext at run time."""
    errors = []
    top = {"type": "object", "properties": config_schema, "additionalProperties": True}
    for path, value, item in _walk_config(values, top, ""):
        if _is_jinja(value) and "decrypt_kv" in value and isinstance(item, dict) and item.get("secret"):
            errors.append(
                '%s: %s: "secret: true" values are decrypted automatically; drop "| decrypt_kv" from %r'
                % (where, path, value)
            )
    return errors


def check_action(meta, where, actions_dir):
    if not isinstance(meta, dict):
        return ["%s: <root>: action metadata must be a mapping" % where]
    errors = []
    # st2common/st2common/bootstrap/actionsregistrar.py: "pack" must match.
    if meta.get("pack") not in (None, PACK_REF):
        errors.append('%s: pack: Model is in pack "%s" but field "pack" is different: %s' % (where, PACK_REF, meta["pack"]))
    errors.extend(_schema_errors(ACTION_SCHEMA, meta, where))
    if errors:
        return errors
    runner = meta["runner_type"]
    # st2common/st2common/validators/api/action.py get_runner_model.
    if runner not in STOCK_RUNNERS:
        errors.append("%s: runner_type: RunnerType %s is not found" % (where, runner))
    parameters = meta.get("parameters") or {}
    errors.extend(_check_parameters(parameters, RUNNER_PARAMETERS.get(runner), where))
    errors.extend(_check_parameter_defaults(parameters, RUNNER_PARAMETERS.get(runner) or {}, where))
    errors.extend(_check_output_schema(meta.get("output_schema") or {}, where))
    entry_point = meta.get("entry_point", "")
    if runner == "orquesta":
        if not (isinstance(entry_point, str) and re.match(r"^workflows/[^/]+\.ya?ml$", entry_point)):
            errors.append("%s: entry_point: an orquesta action's entry_point must be workflows/<file>.yaml, got %r"
                          % (where, entry_point))
        elif not os.path.isfile(os.path.join(actions_dir, entry_point)):
            errors.append("%s: entry_point: %s does not exist under actions/" % (where, entry_point))
    elif runner == "python-script":
        if not entry_point:
            errors.append("%s: entry_point: a python-script action needs an entry_point" % where)
        elif not os.path.isfile(os.path.join(actions_dir, entry_point)):
            errors.append("%s: entry_point: %s does not exist under actions/" % (where, entry_point))
    return errors


def _check_parameters(parameters, runner_parameters, where):
    """st2common/st2common/validators/api/action.py _validate_parameters."""
    errors = []
    positions = {}
    for name, item in parameters.items():
        path = "parameters.%s" % name
        if runner_parameters is not None and name in runner_parameters:
            runner_item = runner_parameters[name]
            for attr, value in item.items():
                # util/schema/__init__.py validate_runner_parameter_attribute_override
                if attr not in RUNNER_PARAM_OVERRIDABLE_ATTRS and value != runner_item.get(attr):
                    errors.append(
                        '%s: %s.%s: The attribute "%s" for the runner parameter "%s" cannot be overridden '
                        "(runner has %r)" % (where, path, attr, attr, name, runner_item.get(attr))
                    )
        if "position" in item:
            pos = item["position"]
            if pos in positions:
                errors.append("%s: %s.position: Parameters %s and %s have same position %s. Position values "
                              "have to be unique." % (where, path, name, positions[pos], pos))
            else:
                positions[pos] = name
        if "immutable" in item:
            runner_item = (runner_parameters or {}).get(name)
            if runner_item is not None:
                if "immutable" in runner_item:
                    errors.append("%s: %s.immutable: Param %s is declared immutable in runner. Cannot override "
                                  "in action." % (where, path, name))
                if "default" not in item and "default" not in runner_item:
                    errors.append("%s: %s: Immutable param %s requires a default value." % (where, path, name))
            elif "default" not in item:
                errors.append("%s: %s: Immutable param %s requires a default value." % (where, path, name))
    # _validate_position_values_contiguous
    if positions:
        ordered = sorted(positions)
        if ordered != list(range(int(min(ordered)), int(max(ordered)) + 1)):
            errors.append("%s: parameters: Positions supplied %s for parameters are not contiguous." % (where, ordered))
    return errors


def _check_parameter_defaults(parameters, runner_parameters, where):
    """At execution st2 merges runner + action parameters
    (util/schema/__init__.py get_schema_for_action_parameters), assigns
    defaults and validates them, so a static default must fit its parameter.
    Jinja defaults are rendered first and are skipped here."""
    errors = []
    for name, item in parameters.items():
        merged = dict(runner_parameters.get(name) or {})
        merged.update(item)
        if "default" not in merged or merged["default"] is None or _is_jinja(merged["default"]):
            continue
        if isinstance(merged["default"], (dict, list)) and "{{" in yaml.safe_dump(merged["default"]):
            continue
        sub = _to_draft4(merged)
        value = _assign_defaults(copy.deepcopy(merged["default"]), sub)
        errors.extend(_schema_errors(sub, value, where, "parameters.%s.default" % name))
    return errors


# Draft-4 keywords; master treats an output_schema holding "type" as a full
# schema, so legacy output keys named like keywords would be misread.
_SCHEMA_KEYWORDS = set(_keyword_properties("#", True)) | {"$ref", "format"}


def _check_output_schema(output_schema, where):
    errors = []
    for key in output_schema:
        if key in _SCHEMA_KEYWORDS:
            errors.append('%s: output_schema.%s: output key "%s" is a JSON-schema keyword; st2 master would read '
                          "output_schema as a full schema" % (where, key, key))
    return errors


def check_workflow_has_action(workflow_path, actions):
    """Each actions/workflows/<file> needs an orquesta action pointing at it."""
    entry = "workflows/%s" % os.path.basename(workflow_path)
    for meta in actions.values():
        if isinstance(meta, dict) and meta.get("entry_point") == entry:
            if meta.get("runner_type") != "orquesta":
                return ["%s: action %s uses it with runner_type %r, not orquesta"
                        % (_rel(workflow_path), meta.get("name"), meta.get("runner_type"))]
            return []
    return ["%s: no actions/*.yaml has runner_type orquesta and entry_point %s" % (_rel(workflow_path), entry)]


def check_rule(meta, where, known_triggers=None, known_actions=None):
    if not isinstance(meta, dict):
        return ["%s: <root>: rule must be a mapping" % where]
    errors = []
    # st2common/st2common/bootstrap/rulesregistrar.py: "pack" must match.
    if meta.get("pack") not in (None, PACK_REF):
        errors.append('%s: pack: Model is in pack "%s" but field "pack" is different: %s' % (where, PACK_REF, meta["pack"]))
    errors.extend(_schema_errors(RULE_SCHEMA, meta, where))
    if errors:
        return errors
    # st2common/st2common/validators/api/reactor.py validate_criteria.
    criteria = meta.get("criteria") or {}
    for key, value in criteria.items():
        path = "criteria.%s" % key
        if not isinstance(value, dict):
            errors.append("%s: %s: criterion must be a mapping with type and pattern" % (where, path))
            continue
        operator = value.get("type")
        if operator is None:
            errors.append("%s: %s: Operator not specified for field: %s" % (where, path, key))
        elif operator not in CRITERIA_OPERATORS:
            errors.append("%s: %s.type: operator %s not in list of allowed operators" % (where, path, operator))
        if value.get("pattern") is None:
            errors.append("%s: %s.pattern: no pattern specified for operator %s (st2 requires one, even for "
                          "exists/nexists)" % (where, path, operator))
    # validate_trigger_parameters for system triggers.
    trigger_type = meta["trigger"]["type"]
    trigger_params = meta["trigger"].get("parameters") or {}
    if trigger_type in SYSTEM_TRIGGER_PARAMETERS:
        errors.extend(_schema_errors(SYSTEM_TRIGGER_PARAMETERS[trigger_type], trigger_params, where, "trigger.parameters"))
    # References must resolve (RuleAPI.to_model creates the trigger from its type).
    if trigger_type.startswith("core.st2.") and trigger_type not in SYSTEM_TRIGGER_TYPES:
        errors.append("%s: trigger.type: %s is not a system trigger type" % (where, trigger_type))
    if known_triggers is not None and trigger_type.startswith(PACK_REF + ".") and trigger_type not in known_triggers:
        errors.append("%s: trigger.type: %s is not declared in triggers/ or sensors/" % (where, trigger_type))
    action_ref = meta["action"]["ref"]
    if known_actions is not None and action_ref.startswith(PACK_REF + ".") and action_ref not in known_actions:
        errors.append("%s: action.ref: %s is not an action of this pack" % (where, action_ref))
    return errors


def check_policy(meta, where, known_actions=None):
    if not isinstance(meta, dict):
        return ["%s: <root>: policy must be a mapping" % where]
    errors = []
    # st2common/st2common/bootstrap/policiesregistrar.py: "pack" must match.
    if meta.get("pack") not in (None, PACK_REF):
        errors.append('%s: pack: Model is in pack "%s" but field "pack" is different: %s' % (where, PACK_REF, meta["pack"]))
    errors.extend(_schema_errors(POLICY_SCHEMA, meta, where))
    if errors:
        return errors
    # PolicyAPI.validate: the policy type must exist; parameters validated
    # against its parameters schema (no additional properties).
    policy_type = meta["policy_type"]
    if policy_type not in POLICY_TYPE_PARAMETERS:
        errors.append('%s: policy_type: Referenced policy_type "%s" doesnt exist (stock: %s)'
                      % (where, policy_type, ", ".join(sorted(POLICY_TYPE_PARAMETERS))))
    else:
        errors.extend(_validate_st2_parameters(POLICY_TYPE_PARAMETERS[policy_type], meta.get("parameters") or {},
                                               where, "parameters", allow_additional_properties=False))
    resource_ref = meta["resource_ref"]
    if known_actions is not None and resource_ref.startswith(PACK_REF + ".") and resource_ref not in known_actions:
        errors.append("%s: resource_ref: %s is not an action of this pack" % (where, resource_ref))
    return errors


def _check_trigger_type_schemas(meta, where, prefix):
    """payload_schema / parameters_schema are not meta-validated at
    registration, but st2 validates payloads and trigger parameters with
    util_schema.validate(..., cls=CustomValidator) (validators/api/reactor.py
    validate_trigger_payload / validate_trigger_parameters), and
    jsonschema.validate first runs check_schema against CustomValidator's
    meta-schema (custom.json): e.g. a Draft-4 ``required: [..]`` list there
    raises SchemaError at dispatch time. Use ``required: true`` per property."""
    errors = []
    for key in ("payload_schema", "parameters_schema"):
        value = meta.get(key)
        if value:
            errors.extend(_schema_errors({"definitions": DEFINITIONS, "$ref": "#/definitions/nested"}, value,
                                         where, _join(prefix, key)))
    return errors


def check_trigger_type(meta, where):
    if not isinstance(meta, dict):
        return ["%s: <root>: trigger type must be a mapping" % where]
    errors = []
    # st2common/st2common/bootstrap/triggersregistrar.py: "pack" must match.
    if meta.get("pack") not in (None, PACK_REF):
        errors.append('%s: pack: Model is in pack "%s" but field "pack" is different: %s' % (where, PACK_REF, meta["pack"]))
    errors.extend(_schema_errors(TRIGGER_TYPE_SCHEMA, meta, where))
    if not errors:
        errors.extend(_check_trigger_type_schemas(meta, where, ""))
    return errors


def check_sensor(meta, where, sensors_dir):
    if not isinstance(meta, dict):
        return ["%s: <root>: sensor must be a mapping" % where]
    errors = []
    # st2common/st2common/bootstrap/sensorsregistrar.py: "pack" must match and
    # entry_point is required ("Sensor definition missing entry_point").
    if meta.get("pack") not in (None, PACK_REF):
        errors.append('%s: pack: Model is in pack "%s" but field "pack" is different: %s' % (where, PACK_REF, meta["pack"]))
    errors.extend(_schema_errors(SENSOR_SCHEMA, meta, where))
    if errors:
        return errors
    entry_point = meta.get("entry_point")
    if not entry_point:
        errors.append("%s: entry_point: Sensor definition missing entry_point" % where)
    elif not os.path.isfile(os.path.join(sensors_dir, entry_point)):
        errors.append("%s: entry_point: %s does not exist under sensors/" % (where, entry_point))
    for index, trigger in enumerate(meta.get("trigger_types") or []):
        errors.extend(_check_trigger_type_schemas(trigger, where, "trigger_types[%d]" % index))
    return errors


def check_alias(meta, where, known_actions=None):
    if not isinstance(meta, dict):
        return ["%s: <root>: alias must be a mapping" % where]
    errors = []
    # st2common/st2common/bootstrap/aliasesregistrar.py: "pack" must match.
    if meta.get("pack") not in (None, PACK_REF):
        errors.append('%s: pack: Model is in pack "%s" but field "pack" is different: %s' % (where, PACK_REF, meta["pack"]))
    errors.extend(_schema_errors(ALIAS_SCHEMA, meta, where))
    if not errors and known_actions is not None:
        ref = meta["action_ref"]
        if ref.startswith(PACK_REF + ".") and ref not in known_actions:
            errors.append("%s: action_ref: %s is not an action of this pack" % (where, ref))
    return errors


# ---------------------------------------------------------------------------
# Pack inventory
# ---------------------------------------------------------------------------


def _load_all(*patterns):
    loaded = {}
    for path in _pack_files(*patterns):
        loaded[path] = _load_yaml(path)
    return loaded


def _pack_actions():
    return _load_all("actions/*.yaml", "actions/*.yml")


def _known_action_refs():
    refs = set()
    for meta in _pack_actions().values():
        if isinstance(meta, dict) and meta.get("name"):
            refs.add("%s.%s" % (PACK_REF, meta["name"]))
    return refs


def _known_trigger_refs():
    refs = set()
    for meta in _load_all("triggers/*.yaml", "triggers/*.yml").values():
        if isinstance(meta, dict) and meta.get("name"):
            refs.add("%s.%s" % (PACK_REF, meta["name"]))
    for meta in _load_all("sensors/*.yaml", "sensors/*.yml").values():
        if isinstance(meta, dict):
            for trigger in meta.get("trigger_types") or []:
                if isinstance(trigger, dict) and trigger.get("name"):
                    refs.add("%s.%s" % (PACK_REF, trigger["name"]))
    return refs


def _config_schema():
    path = os.path.join(PACK_ROOT, "config.schema.yaml")
    return _load_yaml(path) if os.path.isfile(path) else None


# ---------------------------------------------------------------------------
# Tests on the pack's files
# ---------------------------------------------------------------------------


class _Base(unittest.TestCase):
    maxDiff = None

    def assertNoErrors(self, errors):
        if errors:
            self.fail("%d problem(s):\n  %s" % (len(errors), "\n  ".join(errors)))


class PackYamlTest(_Base):
    def test_pack_yaml_matches_pack_api(self):
        path = os.path.join(PACK_ROOT, "pack.yaml")
        self.assertTrue(os.path.isfile(path), "pack.yaml is missing")
        self.assertNoErrors(check_pack_metadata(_load_yaml(path), _rel(path)))

    def test_pack_ref(self):
        meta = _load_yaml(os.path.join(PACK_ROOT, "pack.yaml"))
        self.assertEqual(meta.get("ref") or meta.get("name"), PACK_REF)


class ConfigTest(_Base):
    example = os.path.join(PACK_ROOT, "synthralos.yaml.example")

    def test_config_schema_matches_config_schema_api(self):
        path = os.path.join(PACK_ROOT, "config.schema.yaml")
        if not os.path.isfile(path):
            self.skipTest("no config.schema.yaml")
        self.assertNoErrors(check_config_schema(_load_yaml(path), _rel(path)))

    def _example(self):
        if not os.path.isfile(self.example) or _config_schema() is None:
            self.skipTest("no example config or no config schema")
        return _load_yaml(self.example) or {}

    def test_example_config_validates_as_registered(self):
        self.assertNoErrors(check_config_values(_config_schema(), self._example(), _rel(self.example)))

    def test_example_config_validates_after_rendering(self):
        self.assertNoErrors(check_config_rendered(_config_schema(), self._example(), _rel(self.example)))

    def test_example_config_secret_items_do_not_use_decrypt_kv(self):
        self.assertNoErrors(check_config_secret_decrypt(_config_schema(), self._example(), _rel(self.example)))


class ActionsTest(_Base):
    def test_action_metadata(self):
        actions_dir = os.path.join(PACK_ROOT, "actions")
        errors = []
        names = {}
        for path, meta in _pack_actions().items():
            errors.extend(check_action(meta, _rel(path), actions_dir))
            if isinstance(meta, dict) and meta.get("name"):
                if meta["name"] in names:
                    errors.append("%s: name: action %s also defined in %s" % (_rel(path), meta["name"], names[meta["name"]]))
                names[meta["name"]] = _rel(path)
        self.assertNoErrors(errors)

    def test_every_workflow_has_an_orquesta_action(self):
        actions = _pack_actions()
        errors = []
        for path in _pack_files("actions/workflows/*.yaml", "actions/workflows/*.yml"):
            errors.extend(check_workflow_has_action(path, actions))
        self.assertNoErrors(errors)


class RulesTest(_Base):
    def test_rules(self):
        triggers, actions = _known_trigger_refs(), _known_action_refs()
        errors = []
        for path, meta in _load_all("rules/*.yaml", "rules/*.yml").items():
            errors.extend(check_rule(meta, _rel(path), triggers, actions))
        self.assertNoErrors(errors)


class PoliciesTest(_Base):
    def test_policies(self):
        actions = _known_action_refs()
        errors = []
        for path, meta in _load_all("policies/*.yaml", "policies/*.yml").items():
            errors.extend(check_policy(meta, _rel(path), actions))
        self.assertNoErrors(errors)


class SensorsAndTriggersTest(_Base):
    def test_sensors(self):
        sensors_dir = os.path.join(PACK_ROOT, "sensors")
        errors = []
        for path, meta in _load_all("sensors/*.yaml", "sensors/*.yml").items():
            errors.extend(check_sensor(meta, _rel(path), sensors_dir))
        self.assertNoErrors(errors)

    def test_trigger_types(self):
        errors = []
        for path, meta in _load_all("triggers/*.yaml", "triggers/*.yml").items():
            errors.extend(check_trigger_type(meta, _rel(path)))
        self.assertNoErrors(errors)


class AliasesTest(_Base):
    def test_aliases(self):
        actions = _known_action_refs()
        errors = []
        for path, meta in _load_all("aliases/*.yaml", "aliases/*.yml").items():
            errors.extend(check_alias(meta, _rel(path), actions))
        self.assertNoErrors(errors)


# ---------------------------------------------------------------------------
# The checks catch real mistakes (in-memory content, not pack files)
# ---------------------------------------------------------------------------

GOOD_ACTION = {
    "name": "example",
    "runner_type": "python-script",
    "entry_point": "__missing_on_purpose__.py",
    "description": "Example.",
    "enabled": True,
    "parameters": {
        "target": {"type": "string", "description": "Target.", "required": True, "position": 0},
        "count": {"type": "integer", "default": 3, "position": 1},
        "timeout": {"default": 120},
        "options": {
            "type": "object",
            "properties": {"mode": {"type": ["string", "null"], "required": True}},
            "additionalProperties": False,
        },
    },
    "output_schema": {"result": {"type": "object"}},
}


def _errors_for(meta):
    return check_action(meta, "memory.yaml", os.path.join(PACK_ROOT, "actions"))


def _without_entry_point_errors(errors):
    return [e for e in errors if "entry_point" not in e]


class NegativeChecksTest(_Base):
    def test_good_action_passes(self):
        self.assertEqual(_without_entry_point_errors(_errors_for(copy.deepcopy(GOOD_ACTION))), [])

    def test_unknown_top_level_key(self):
        meta = copy.deepcopy(GOOD_ACTION)
        meta["timeout"] = 30
        errors = _errors_for(meta)
        self.assertTrue(any("Additional properties" in e and "timeout" in e for e in errors), errors)

    def test_runner_parameter_type_override(self):
        meta = copy.deepcopy(GOOD_ACTION)
        meta["parameters"]["timeout"] = {"type": "number", "default": 30}
        errors = _errors_for(meta)
        self.assertTrue(any('"type" for the runner parameter "timeout"' in e for e in errors), errors)

    def test_parameter_keys_and_names(self):
        meta = copy.deepcopy(GOOD_ACTION)
        meta["parameters"]["bad-name"] = {"type": "string"}
        meta["parameters"]["count"]["format"] = "int32"
        meta["parameters"]["target"]["type"] = ["string", "null"]
        meta["parameters"]["options"]["properties"]["mode"]["required"] = ["x"]
        errors = "\n".join(_errors_for(meta))
        self.assertIn("bad-name", errors)
        self.assertIn("format", errors)
        self.assertIn("parameters.target.type", errors)
        self.assertIn("parameters.options.properties.mode.required", errors)

    def test_positions_and_defaults(self):
        meta = copy.deepcopy(GOOD_ACTION)
        meta["parameters"]["count"]["position"] = 2
        meta["parameters"]["count"]["default"] = "three"
        meta["parameters"]["flag"] = {"type": "boolean", "immutable": True}
        errors = "\n".join(_errors_for(meta))
        self.assertIn("not contiguous", errors)
        self.assertIn("parameters.count.default", errors)
        self.assertIn("Immutable param flag requires a default value", errors)

    def test_full_json_output_schema_rejected(self):
        meta = copy.deepcopy(GOOD_ACTION)
        meta["output_schema"] = {"type": "object", "properties": {"x": {"type": "string"}}}
        self.assertTrue(any(e.startswith("memory.yaml: output_schema") for e in _errors_for(meta)))

    def test_orquesta_entry_point(self):
        meta = {"name": "wf", "runner_type": "orquesta", "entry_point": "wf.yaml"}
        self.assertTrue(any("workflows/<file>.yaml" in e for e in _errors_for(meta)))

    def test_rule_unknown_operator_and_missing_pattern(self):
        rule = {
            "name": "r",
            "enabled": True,
            "trigger": {"type": "core.st2.IntervalTimer", "parameters": {"unit": "fortnights", "delta": 1}},
            "criteria": {"trigger.x": {"type": "equal", "pattern": 1}, "trigger.y": {"type": "exists"}},
            "action": {"ref": "core.noop", "parameters": {}},
        }
        errors = "\n".join(check_rule(rule, "memory.yaml"))
        self.assertIn("operator equal not in list", errors)
        self.assertIn("criteria.trigger.y.pattern", errors)
        self.assertIn("trigger.parameters.unit", errors)

    def test_rule_shape(self):
        rule = {"name": "r", "trigger": {"type": "core.st2.webhook", "parameters": {"url": "x"}},
                "action": {"ref": "core.noop", "params": {}}}
        self.assertTrue(any("params" in e for e in check_rule(rule, "memory.yaml")))

    def test_policy_parameters(self):
        policy = {"name": "p", "resource_ref": "core.noop", "policy_type": "action.retry",
                  "parameters": {"retry_on": "error", "max_retry_count": 2, "backoff": 3}}
        errors = "\n".join(check_policy(policy, "memory.yaml"))
        self.assertIn("parameters.retry_on", errors)
        self.assertIn("backoff", errors)
        policy = {"name": "p", "resource_ref": "core.noop", "policy_type": "action.concurrency",
                  "parameters": {"action": "delay"}}
        self.assertTrue(any("threshold" in e for e in check_policy(policy, "memory.yaml")))
        policy["policy_type"] = "action.ratelimit"
        self.assertTrue(any("doesnt exist" in e for e in check_policy(policy, "memory.yaml")))

    def test_config_checks(self):
        schema = {
            "token": {"type": "string", "secret": True, "required": True},
            "nested": {"type": "object", "properties": {"key": {"type": "string", "secret": True},
                                                         "port": {"type": "integer", "default": 1}}},
        }
        values = {"token": "{{ st2kv.system.t | decrypt_kv }}", "nested": {"key": "{{ st2kv.system.k | decrypt_kv }}",
                                                                         "port": "{{ st2kv.system.port }}"}}
        self.assertEqual(len(check_config_secret_decrypt(schema, values, "memory.yaml")), 2)
        # Registration validates the raw (unrendered) string against "integer".
        self.assertTrue(any("nested.port" in e for e in check_config_values(schema, values, "memory.yaml")))
        self.assertEqual(check_config_rendered(schema, values, "memory.yaml"), [])
        self.assertTrue(any("token" in e for e in check_config_values(schema, {}, "memory.yaml")))
        bad_schema = {"bad-key": {"type": "string"}, "x": {"type": "string", "secret": "yes", "default": 3}}
        errors = "\n".join(check_config_schema(bad_schema, "memory.yaml"))
        self.assertIn("bad-key", errors)
        self.assertIn("x.secret", errors)

    def test_pack_metadata(self):
        errors = "\n".join(check_pack_metadata(
            {"name": "Syn-thral", "description": "d", "version": "0.1", "author": "a",
             "python_versions": ["3.8"], "stackstorm_version": "3.8"}, "memory.yaml"))
        for fragment in ("version", "python_versions[0]", "stackstorm_version", "name"):
            self.assertIn("memory.yaml: %s" % fragment, errors)

    def test_sensor_and_trigger(self):
        errors = check_sensor({"class_name": "S", "name": "s", "entry_point": "s.py"}, "memory.yaml",
                              os.path.join(PACK_ROOT, "sensors"))
        self.assertTrue(any("name" in e for e in errors), errors)
        errors = check_trigger_type({"name": "t", "payload_schema": {"type": "object", "properties": {
            "a": {"type": "string", "required": ["a"]}}}, "payload": {}}, "memory.yaml")
        self.assertTrue(any("payload" in e for e in errors), errors)


if __name__ == "__main__":
    unittest.main()
