"""Draft 4 validation of the pack config without importing jsonschema.

Every action validates its config, and st2 starts a new process per
execution: importing jsonschema 4 (referencing, attrs, rpds, the bundled
metaschemas) costs ~100 ms of every call. The config schema only uses a small
subset of Draft 4 (type, enum, minimum, maximum, minItems, maxItems,
minLength, maxLength, pattern, properties, additionalProperties, required,
items), checked here with the same
error shape as jsonschema's (`path`, `validator`, `validator_value`,
`message`). A schema using any other keyword is handed to jsonschema itself,
so a new keyword in config.schema.yaml is never silently ignored.
"""

import re

SUPPORTED = frozenset(["type", "enum", "minimum", "maximum", "minItems", "maxItems", "minLength", "maxLength",
                       "pattern", "properties", "additionalProperties", "required", "items", "default",
                       "description", "title"])
_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


class SchemaError(object):
    """One failed check, shaped like jsonschema.ValidationError for the fields the config loader reads."""

    def __init__(self, schema, instance, path, validator, validator_value, message):
        self.schema = schema
        self.instance = instance
        self.path = list(path)
        self.validator = validator
        self.validator_value = validator_value
        self.message = message


def supported(schema):
    """True when every keyword of `schema`, at every depth, is in SUPPORTED."""
    if not isinstance(schema, dict):
        return True
    for key, value in schema.items():
        if key not in SUPPORTED:
            return False
        if key == "properties" and not all(supported(sub) for sub in value.values()):
            return False
        if key in ("items", "additionalProperties") and isinstance(value, dict) and not supported(value):
            return False
        if key == "type" and not all(t in _TYPES for t in (value if isinstance(value, list) else [value])):
            return False
    return True


def iter_errors(schema, value):
    """The errors of `value` against the Draft 4 `schema` (jsonschema's when the subset does not cover it)."""
    if not supported(schema):
        import jsonschema

        return list(jsonschema.Draft4Validator(schema).iter_errors(value))
    errors = []
    _check(schema, value, [], errors)
    return errors


def _numeric(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _same(a, b):
    """JSON equality: true/false are not 1/0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _length(schema, value, path, errors, low, high):
    if low in schema and len(value) < schema[low]:
        errors.append(SchemaError(schema, value, path, low, schema[low], "too short"))
    if high in schema and len(value) > schema[high]:
        errors.append(SchemaError(schema, value, path, high, schema[high], "too long"))


def _check(schema, value, path, errors):
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_TYPES[k](value) for k in kinds):
            errors.append(SchemaError(schema, value, path, "type", kind, "value is not of type %r" % (kind,)))
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        errors.append(SchemaError(schema, value, path, "enum", schema["enum"], "value is not one of %r" % (schema["enum"],)))
    if _numeric(value):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(SchemaError(schema, value, path, "minimum", schema["minimum"], "less than the minimum"))
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(SchemaError(schema, value, path, "maximum", schema["maximum"], "greater than the maximum"))
    if isinstance(value, str):
        _length(schema, value, path, errors, "minLength", "maxLength")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(SchemaError(schema, value, path, "pattern", schema["pattern"], "does not match the pattern"))
    if isinstance(value, list):
        _length(schema, value, path, errors, "minItems", "maxItems")
        if isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                _check(schema["items"], item, path + [index], errors)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(SchemaError(schema, value, path, "required", schema["required"], "%r is a required property" % (name,)))
        for name, sub in properties.items():
            if name in value:
                _check(sub, value[name], path + [name], errors)
        extra = [name for name in value if name not in properties]
        additional = schema.get("additionalProperties", True)
        if additional is False and extra:
            verb = "was" if len(extra) == 1 else "were"
            errors.append(SchemaError(schema, value, path, "additionalProperties", False, "Additional properties are not allowed "
                                      "(%s %s unexpected)" % (", ".join(repr(n) for n in sorted(extra)), verb)))
        elif isinstance(additional, dict):
            for name in extra:
                _check(additional, value[name], path + [name], errors)
