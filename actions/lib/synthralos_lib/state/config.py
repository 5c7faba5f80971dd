"""Pack configuration: schema defaults, validation and feature flags.

st2 fills top-level defaults from config.schema.yaml when it loads a pack
config, but not always nested ones (and not at all when an action is run by
tests with a partial config), so every action goes through `load_config`,
which applies the schema's defaults at every depth and validates the result.
The schema file is the one place where defaults live.
"""

import copy
import os
import re
import threading

import yaml

from synthralos_lib.state.schema_check import iter_errors

PACK_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", ".."))
SCHEMA_PATH = os.path.join(PACK_ROOT, "config.schema.yaml")

FEATURE_FLAGS = (
    "enable_reroute",
    "enable_cron_backoff",
    "track_model_costs",
    "enable_similarity_logging",
    "enable_guardrails_tracing",
    "enable_llm_repair_plans",
)

_schema_cache = {}
# PyYAML's libyaml safe loader when it has one (same documents, ~30x faster: the pure-Python one takes
# ~0.1 s of every action process on config.schema.yaml); its pure-Python SafeLoader otherwise.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_schema_lock = threading.Lock()


class ConfigError(ValueError):
    """The pack config does not match config.schema.yaml."""


def load_st2_schema(path=SCHEMA_PATH):
    """Return the pack's config schema as st2 reads it (a mapping of top-level keys)."""
    with _schema_lock:
        if path not in _schema_cache:
            with open(path) as handle:
                _schema_cache[path] = yaml.load(handle, Loader=SAFE_LOADER)
        return _schema_cache[path]


def schema_defaults(section, schema_path=SCHEMA_PATH):
    """{key: default} of one config section (of one item, for a list such as llm_targets), as
    config.schema.yaml declares them (None where it declares none).

    The one home of every default: code that needs one reads it here (or from a
    PackConfig, whose sections have them filled in) instead of repeating the value.
    """
    node = load_st2_schema(schema_path)[section]
    properties = (node.get("items") or node)["properties"]
    return {name: copy.deepcopy(spec.get("default")) for name, spec in properties.items()}


def with_defaults(section, values):
    """A section's values (a PackConfig section, or a partial dict a caller built) over the schema's defaults;
    a value of None counts as unset."""
    merged = schema_defaults(section)
    merged.update({key: value for key, value in (values or {}).items() if value is not None})
    return merged


def to_json_schema(st2_schema):
    """Convert st2's config schema dialect into a plain Draft 4 JSON schema.

    st2 writes `required: true` on the property itself (draft 3 style) and
    adds `secret`; Draft 4 wants a `required` list on the parent object.
    """
    return _convert({"type": "object", "properties": st2_schema, "additionalProperties": False})


def _convert(node):
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("secret", "required") and not isinstance(value, list):
            continue
        if key == "properties":
            out["properties"] = {name: _convert(sub) for name, sub in value.items()}
            required = sorted(n for n, sub in value.items() if isinstance(sub, dict) and sub.get("required") is True)
            if required:
                out["required"] = required
        elif key in ("items", "additionalProperties"):
            out[key] = _convert(value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_defaults(schema, value):
    """Return a copy of `value` with schema defaults filled in at every depth."""
    if value is None and "default" in schema:
        value = copy.deepcopy(schema["default"])
    if isinstance(value, dict) and "properties" in schema:
        value = dict(value)
        for name, sub in schema["properties"].items():
            if name in value or "default" in sub:
                filled = apply_defaults(sub, value.get(name))
                if filled is not None:
                    value[name] = filled
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        value = [apply_defaults(schema["items"], item) for item in value]
    return value


def secret_paths(schema, prefix=""):
    """Yield the dotted paths of every `secret: true` field (list items as `[]`)."""
    for name, sub in (schema.get("properties") or {}).items():
        path = prefix + name
        if sub.get("secret"):
            yield path
        for nested in secret_paths(sub, path + "."):
            yield nested
        if isinstance(sub.get("items"), dict):
            for nested in secret_paths(sub["items"], path + "[]."):
                yield nested


class PackConfig(object):
    """A validated pack config with defaults applied."""

    def __init__(self, values, st2_schema):
        self.values = values
        self._st2_schema = st2_schema

    def section(self, name):
        return self.values.get(name) or {}

    def flag(self, name):
        if name not in FEATURE_FLAGS:
            raise KeyError("unknown feature flag %r" % name)
        return bool(self.section("features").get(name))

    @property
    def redis_url(self):
        return self.section("redis").get("url") or ""

    def llm_targets(self):
        """LLM targets in the order they are tried (ascending priority, then config order)."""
        targets = self.values.get("llm_targets") or []
        return [t for _, t in sorted(enumerate(targets), key=lambda it: (it[1]["priority"], it[0]))]

    def llm_target(self, name):
        for target in self.values.get("llm_targets") or []:
            if target.get("name") == name:
                return target
        raise ConfigError("no llm_targets entry named %r" % (name,))

    def secrets(self):
        """Every secret string in this config, so callers can scrub them from text."""
        found = []
        for path in secret_paths({"properties": self._st2_schema}):
            found.extend(_values_at(self.values, path.split(".")))
        found.append(_redis_password(self.redis_url))
        found.append(_redis_password(self.section("bullmq").get("redis_url") or ""))
        return [s for s in found if isinstance(s, str) and s]


def _values_at(node, parts):
    if not parts:
        return [node]
    name, rest = parts[0], parts[1:]
    if name.endswith("[]"):
        items = node.get(name[:-2]) if isinstance(node, dict) else None
        return [v for item in items or [] for v in _values_at(item, rest)]
    if isinstance(node, dict) and name in node:
        return _values_at(node[name], rest)
    return []


def _redis_password(url):
    if "@" not in url or "//" not in url:
        return None
    userinfo = url.split("//", 1)[1].split("@", 1)[0]
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


def load_config(raw, schema_path=SCHEMA_PATH):
    """Apply defaults to `raw` (the dict st2 passes as `self.config`) and validate it.

    Raises ConfigError naming every offending path; values are never echoed,
    so a misplaced secret cannot leak into an execution result.
    """
    st2_schema = load_st2_schema(schema_path)
    json_schema = to_json_schema(st2_schema)
    values = apply_defaults(json_schema, dict(raw or {}))
    errors = sorted(iter_errors(json_schema, values), key=lambda e: list(e.path))
    if errors:
        problems = ["%s: %s" % (_path(e), _describe(e)) for e in errors]
        raise ConfigError("invalid synthralos config: " + "; ".join(problems))
    names = [t.get("name") for t in values.get("llm_targets") or []]
    duplicates = sorted(set(n for n in names if names.count(n) > 1))
    if duplicates:
        raise ConfigError("invalid synthralos config: llm_targets: duplicate name(s) %s (each name must be unique)"
                          % ", ".join(repr(n) for n in duplicates))
    for i, target in enumerate(values.get("llm_targets") or []):
        if not target.get("base_url") and not (target.get("kind") == "azure_openai" and target.get("resource")):
            raise ConfigError("invalid synthralos config: llm_targets.%d: base_url is required (azure_openai: base_url "
                              "or resource)" % i)
    return PackConfig(values, st2_schema)


def _path(error):
    parts = [str(p) if isinstance(p, int) or _KEY_NAME.match(str(p)) else "<key>" for p in error.path]
    return ".".join(parts) or "(top level)"


# A key name is echoed only when it reads like one (lower-case snake_case, short, not
# credential-shaped): a secret pasted where a key name belongs is never repeated.
_KEY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_CREDENTIAL_SHAPE = re.compile(r"^(sk|pk|rk|xox[a-z]?|ghp|glpat|key|tok)[_-]|[0-9]{5,}")


def safe_key_name(name):
    """`name` quoted if it is safe to echo in an error, else a placeholder."""
    if isinstance(name, str) and _KEY_NAME.match(name) and not _CREDENTIAL_SHAPE.search(name):
        return repr(name)
    return "a key that is not a valid name (not shown)"


def raw_secrets(raw):
    """The secret values in an unvalidated config (for scrubbing when the config itself is invalid)."""
    found = []
    if isinstance(raw, dict):
        for path in secret_paths({"properties": load_st2_schema()}):
            found.extend(_values_at(raw, path.split(".")))
        redis_url = (raw.get("redis") or {}).get("url") if isinstance(raw.get("redis"), dict) else None
        if isinstance(redis_url, str):
            found.append(_redis_password(redis_url))
    return [s for s in found if isinstance(s, str) and s]


def config_secrets(raw):
    """The secrets of a raw pack config: the validated config's, else (invalid) what raw_secrets finds."""
    try:
        return load_config(raw).secrets()
    except Exception:
        return raw_secrets(raw)


def _describe(error):
    # Say what was expected without quoting the offending value; key names only when safe.
    if error.validator == "additionalProperties":
        allowed = set((error.schema.get("properties") or {}).keys())
        extra = sorted(k for k in (error.instance or {}) if k not in allowed) if isinstance(error.instance, dict) else []
        names = ", ".join(safe_key_name(k) for k in extra) or "unknown key(s)"
        return "Additional properties are not allowed (%s %s unexpected)" % (names, "was" if len(extra) == 1 else "were")
    if error.validator == "required":
        return error.message
    if error.validator in ("type", "enum", "minimum", "maximum", "minItems", "maxItems"):
        return "expected %s %s" % (error.validator, error.validator_value)
    return "fails %s" % error.validator
