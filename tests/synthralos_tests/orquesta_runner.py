"""Run a pack workflow through the real Orquesta conductor, the way st2 does.

``run_workflow()`` loads an Orquesta workflow (``actions/workflows/*.yaml``),
inspects it like st2's workflow service does before it starts an execution,
and then drives ``orquesta.conducting.WorkflowConductor`` to completion,
synchronously, doing what st2's workflow engine does between conductor calls:

* it marks every task returned by ``get_next_tasks()`` as running, then
  requests its action execution(s): one per task, one per item for
  ``with items`` tasks (fed back as ``TaskItemActionExecutionEvent`` with the
  accumulated item results, as st2 does);
* task action input goes through st2's parameter handling before the action
  sees it: Jinja in parameter values is rendered (``{{ }}`` / ``{% %}``, with
  ``config_context`` and ``action_context``), live values are cast to the
  declared type, defaults fill missing / null values, immutable parameters
  keep their default, the parameters are validated (unknown, missing
  required, wrong type) and every declared parameter is passed (``None`` when
  it has neither value nor default).  A failure there fails the workflow at
  once, without running the task's transitions, as in st2;
* results come back in st2's shapes: ``{"result", "exit_code", "stdout",
  "stderr"}`` for python-script actions, ``{"output": ..., "errors": ...}`` for
  Orquesta subworkflows, the noop / local-shell runner shapes for ``core.*``;
* the conductor is serialized to JSON and restored between rounds, like st2
  does through its database, so non-JSON data in results or context fails
  here rather than in production;
* ``delay`` is never slept: the value Orquesta rendered for each task (or each
  retry) is recorded on the task record.

Orquesta is imported, never re-implemented.  PyPI's orquesta 1.2.0 imports on
old Pythons only; on others ``ORQUESTA_AVAILABLE`` is False and tests decorated
with ``skip_unless_orquesta`` are skipped with the reason.

The module needs st2 only when the caller hands it a python-script action
class (which itself subclasses st2's ``Action``).
"""

from __future__ import absolute_import

import contextlib
import copy
import inspect
import io
import json
import os
import re
import sys
import traceback
import unittest

import yaml

try:  # Orquesta 1.2.0 (PyPI) or 1.6 (shipped by st2); same conductor API.
    import orquesta as _orquesta
    from orquesta import conducting as _conducting
    from orquesta import events as _events
    from orquesta import statuses as _statuses
    from orquesta.specs.native.v1 import models as _native_models

    ORQUESTA_AVAILABLE = True
    ORQUESTA_VERSION = getattr(_orquesta, "__version__", "unknown")
    ORQUESTA_IMPORT_ERROR = None
except Exception as _exc:  # ImportError, or AttributeError on collections.Mapping
    ORQUESTA_AVAILABLE = False
    ORQUESTA_VERSION = None
    ORQUESTA_IMPORT_ERROR = "%s: %s" % (type(_exc).__name__, _exc)

__all__ = [
    "ORQUESTA_AVAILABLE",
    "ORQUESTA_VERSION",
    "ORQUESTA_SKIP_REASON",
    "skip_unless_orquesta",
    "run_workflow",
    "inspect_workflow",
    "python_action",
    "python_result",
    "python_failure",
    "outcomes",
    "WorkflowRun",
    "TaskRecord",
    "WorkflowRunnerError",
    "UnknownActionError",
    "WorkflowDefinitionError",
    "WorkflowInspectionError",
    "WorkflowStepLimitExceeded",
    "ActionParameterError",
    "PACK_ROOT",
    "WORKFLOWS_DIR",
    "ACTIONS_DIR",
]

ORQUESTA_SKIP_REASON = (
    "orquesta is not importable on Python %s (%s); PyPI's orquesta 1.2.0 needs an "
    "older Python: run the workflow tests with Python 3.8"
    % (".".join(str(p) for p in sys.version_info[:3]), ORQUESTA_IMPORT_ERROR)
)

#: ``unittest.skipUnless`` decorator for test classes / methods that need Orquesta.
skip_unless_orquesta = unittest.skipUnless(ORQUESTA_AVAILABLE, ORQUESTA_SKIP_REASON)

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACTIONS_DIR = os.path.join(PACK_ROOT, "actions")
WORKFLOWS_DIR = os.path.join(ACTIONS_DIR, "workflows")

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMEOUT = "timeout"
CANCELED = "canceled"
ABANDONED = "abandoned"
ACTION_END_STATUSES = (SUCCEEDED, FAILED, TIMEOUT, CANCELED, ABANDONED)
ABENDED = (FAILED, TIMEOUT, ABANDONED)
ENGINE_COMMANDS = ("continue", "fail", "noop", "retry")

DEFAULT_USER = "stanley"
DEFAULT_API_URL = "http://127.0.0.1:9101/v1"
MAX_DEPTH = 10


# --------------------------------------------------------------------------- errors


class WorkflowRunnerError(Exception):
    """Base class of the driver's own errors (bugs in a workflow or a test)."""


class UnknownActionError(WorkflowRunnerError):
    """A task names an action ref the driver was not told how to run."""


class WorkflowDefinitionError(WorkflowRunnerError):
    """The workflow file is missing, is not YAML, or has duplicate keys."""


class WorkflowInspectionError(WorkflowRunnerError):
    """st2 would refuse to start the workflow (Orquesta or st2 inspection errors)."""

    def __init__(self, path, errors):
        self.path = path
        self.errors = errors
        lines = ["%s: %s (%s)" % (e.get("type"), e.get("message"), e.get("spec_path")) for e in errors]
        super(WorkflowInspectionError, self).__init__(
            "workflow %s fails inspection:\n  %s" % (path, "\n  ".join(lines))
        )


class WorkflowStepLimitExceeded(WorkflowRunnerError):
    """More action executions than ``max_steps``: most likely an endless loop."""


class ActionParameterError(WorkflowRunnerError):
    """Parameters st2 would reject for the top-level workflow execution request."""


class ParamException(Exception):
    """Same name as st2's st2common.exceptions.param.ParamException (messages mirror st2's)."""


class ValidationError(Exception):
    """Same name as jsonschema's ValidationError, which st2 raises for bad parameters."""


class InvalidActionReferencedException(Exception):
    """Same name as st2's exception for a task whose action ref renders to nothing usable."""


# --------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects duplicate mapping keys (orquesta >= 1.4 does too)."""


def _construct_unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found duplicate key %r" % (key,),
                key_node.start_mark,
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _load_yaml_file(path):
    try:
        with open(path) as handle:
            text = handle.read()
    except (IOError, OSError) as e:
        raise WorkflowDefinitionError("cannot read %s: %s" % (path, e))
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        raise WorkflowDefinitionError("%s is not valid YAML: %s" % (path, e))


def resolve_workflow_path(path):
    """An absolute path for ``path``: as given, or under the pack root, or actions/workflows/."""
    candidates = [path]
    if not os.path.isabs(path):
        candidates += [
            os.path.join(PACK_ROOT, path),
            os.path.join(WORKFLOWS_DIR, path),
            os.path.join(WORKFLOWS_DIR, path + ".yaml"),
        ]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise WorkflowDefinitionError(
        "workflow %r not found; looked at: %s" % (path, ", ".join(candidates))
    )


# --------------------------------------------------------------------------- action metadata

# Runner parameters (from each runner's runner.yaml in st2).  They are accepted
# in task input, get their defaults, and are not passed to a python action's run().
RUNNER_PARAMETERS = {
    "python-script": {
        "debug": {"type": "boolean", "default": False},
        "content_version": {"type": "string"},
        "env": {"type": "object"},
        "timeout": {"type": "integer", "default": 600},
        "log_level": {
            "type": "string",
            "default": "DEBUG",
            "enum": ["AUDIT", "CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"],
        },
    },
    "local-shell-cmd": {
        "cmd": {"type": "string"},
        "cwd": {"type": "string"},
        "env": {"type": "object"},
        "kwarg_op": {"type": "string", "default": "--"},
        "sudo": {"type": "boolean", "default": False},
        "sudo_password": {"type": "string", "default": None, "secret": True},
        "timeout": {"type": "integer", "default": 60},
    },
    "orquesta": {},
    "noop": {},
}

# The core pack's actions the driver runs itself (metadata as in st2's contrib/core).
CORE_ACTIONS = {
    "core.noop": {"name": "noop", "pack": "core", "runner_type": "noop", "parameters": {}},
    "core.echo": {
        "name": "echo",
        "pack": "core",
        "runner_type": "local-shell-cmd",
        "parameters": {
            "message": {"type": "string", "required": True},
            "cmd": {"type": "string", "default": 'echo "{{message}}"', "immutable": True},
            "kwarg_op": {"immutable": True},
            "sudo": {"default": False, "immutable": True},
            "sudo_password": {"immutable": True},
        },
    },
    "core.inject_trigger": {
        "name": "inject_trigger",
        "pack": "core",
        "runner_type": "python-script",
        "parameters": {
            "trigger": {"type": "string", "required": True},
            "payload": {"type": "object"},
            "trace_tag": {"type": "string", "required": False},
        },
    },
}

# Parameter attributes that are st2 metadata rather than JSON schema.
_ST2_PARAM_KEYS = ("required", "immutable", "secret", "position", "default", "description")


def _pack_name_for(meta_dir, default):
    pack_yaml = os.path.join(os.path.dirname(os.path.abspath(meta_dir)), "pack.yaml")
    try:
        with open(pack_yaml) as handle:
            data = yaml.safe_load(handle) or {}
        return data.get("ref") or data.get("name") or default
    except (IOError, OSError, yaml.YAMLError):
        return default


def load_action_metadata(action_meta_dir, pack=None):
    """{ref: metadata dict} for the action metadata files directly in ``action_meta_dir``.

    Each dict gets ``_path`` (the metadata file) and ``_ref``.  Like st2's
    registrar, the action name comes from the file's ``name``, not the file name.
    """
    pack = pack or _pack_name_for(action_meta_dir, "synthralos")
    index = {}
    for entry in sorted(os.listdir(action_meta_dir)):
        path = os.path.join(action_meta_dir, entry)
        if not os.path.isfile(path) or not entry.endswith((".yaml", ".yml", ".json")):
            continue
        with open(path) as handle:
            try:
                data = yaml.safe_load(handle)
            except yaml.YAMLError:
                continue
        if not isinstance(data, dict) or "name" not in data or "runner_type" not in data:
            continue
        ref = "%s.%s" % (data.get("pack") or pack, data["name"])
        data = dict(data)
        data["_path"] = path
        data["_ref"] = ref
        data["parameters"] = data.get("parameters") or {}
        index[ref] = data
    return index


def _merged_parameter_schema(meta):
    """Runner parameters overlaid with the action's own (st2 deep-merges per parameter)."""
    merged = copy.deepcopy(RUNNER_PARAMETERS.get(meta.get("runner_type"), {}))
    for name, spec in (meta.get("parameters") or {}).items():
        merged.setdefault(name, {})
        merged[name].update(copy.deepcopy(spec or {}))
    return merged


# --------------------------------------------------------------------------- st2 parameter handling

_JINJA_MARKERS = ("{{", "{%")


def _is_jinja(value):
    return isinstance(value, str) and any(m in value for m in _JINJA_MARKERS)


class _NoDatastore(object):
    """Stands where st2 puts ``st2kv``: the driver has no datastore to look values up in."""

    def __getattr__(self, name):
        raise ParamException("st2kv lookups are not available in the workflow test driver")

    __getitem__ = __getattr__


def _jinja_env():
    import jinja2

    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters.setdefault("to_complex", json.dumps)
    return env


def _cast(value, pschema):
    """st2's casts (st2common/util/casts.py) for one declared type."""
    if value is None or not pschema:
        return value
    ptype = pschema.get("type")
    if ptype in ("array", "object"):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                import ast

                return ast.literal_eval(value)
        return value
    if ptype == "boolean":
        if isinstance(value, str):
            import ast

            return ast.literal_eval(value.capitalize())
        return value
    if ptype == "integer":
        return int(value)
    if ptype == "number":
        return float(value)
    if ptype == "string":
        if not isinstance(value, str):
            raise ValueError(
                'Value "%s" must either be a string or None. Got "%s".' % (value, type(value).__name__)
            )
        return value
    return value


_TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}


def _schema_only(pschema):
    """The JSON-schema part of a parameter spec, without st2's draft-3 style ``required``."""
    if isinstance(pschema, dict):
        return {
            k: _schema_only(v)
            for k, v in pschema.items()
            if k not in _ST2_PARAM_KEYS and not (k == "required" and isinstance(v, bool))
        }
    if isinstance(pschema, list):
        return [_schema_only(v) for v in pschema]
    return pschema


def _validate_value(name, value, pschema, nullable):
    schema = _schema_only(pschema)
    if not schema:
        return
    if value is None and nullable:
        return
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        errors = list(jsonschema.Draft4Validator(schema).iter_errors(value))
        if errors:
            raise ValidationError("%s (parameter \"%s\")" % (errors[0].message, name))
        return
    types = schema.get("type")
    if types:
        types = types if isinstance(types, list) else [types]
        if not any(_TYPE_CHECKS.get(t, lambda v: True)(value) for t in types):
            raise ValidationError(
                "%r is not of type %s (parameter \"%s\")" % (value, ", ".join(repr(t) for t in types), name)
            )
    if "enum" in schema and value not in schema["enum"]:
        raise ValidationError("%r is not one of %r (parameter \"%s\")" % (value, schema["enum"], name))


class _ParamRenderer(object):
    """st2's render_live_params / render_final_params and request validation, for one request."""

    def __init__(self, schema, runner_type, config, action_context, render_jinja=True):
        self.schema = schema  # None: no metadata known, parameters pass through rendered
        self.runner_type = runner_type
        self.config = config or {}
        self.action_context = action_context or {}
        self.render_jinja = render_jinja

    def _render_all(self, values):
        """Render Jinja in ``values`` (name -> raw value) against each other and the contexts."""
        specials = {
            "st2kv": _NoDatastore(),
            "action_context": self.action_context,
            "config_context": self.config,
        }
        templates = {}
        resolved = {}
        if not self.render_jinja:
            return dict(values)
        for name, value in values.items():
            complex_str = str(value) if isinstance(value, (list, dict)) else None
            if _is_jinja(value) or _is_jinja(complex_str):
                templates[name] = value
            else:
                resolved[name] = value
        if not templates:
            return resolved
        from jinja2 import meta as jinja_meta
        from jinja2 import exceptions as jinja_exc

        env = _jinja_env()
        deps = {}
        for name, template in list(templates.items()):
            try:
                ast_ = env.parse(template if isinstance(template, str) else str(template))
            except jinja_exc.TemplateSyntaxError:
                resolved[name] = templates.pop(name)  # st2: "not jinja after all"
                continue
            deps[name] = jinja_meta.find_undeclared_variables(ast_)
        known = set(values) | set(specials)
        for name in sorted(deps):
            for dep in sorted(deps[name]):
                if dep not in known:
                    raise ParamException('Dependency unsatisfied in variable "%s"' % dep)
        while templates:
            ready = [n for n in sorted(templates) if not (deps[n] & set(templates))]
            if not ready:
                raise ParamException(
                    "Cyclic dependency found in the following variables: %s. Likely the "
                    "variable is referencing itself" % ", ".join(sorted(templates))
                )
            for name in ready:
                template = templates.pop(name)
                context = dict(resolved)
                context.update(specials)
                try:
                    if isinstance(template, (list, dict)):
                        text = json.dumps(template)
                        text = re.sub(r'"{{([A-Za-z0-9_-]+)}}"', r"{{\1 | to_complex}}", text)
                        resolved[name] = json.loads(env.from_string(text).render(context))
                    else:
                        resolved[name] = env.from_string(template).render(context)
                except Exception as e:
                    raise ParamException('Failed to render parameter "%s": %s' % (name, e))
        return resolved

    def prepare(self, live):
        """(all parameters, parameters for the action's run()) for the live input ``live``."""
        live = dict(live or {})
        if self.schema is None:
            rendered = self._render_all(live)
            return rendered, rendered
        schema = self.schema
        # render_live_params: immutable and unset parameters take their default.
        values = dict(live)
        for name, pschema in schema.items():
            if name not in values or values[name] is None or pschema.get("immutable"):
                values[name] = pschema.get("default")
        rendered = self._render_all(values)
        live_params = {name: _cast(rendered[name], schema.get(name, {})) for name in live}
        for name, pschema in schema.items():
            if name not in live and _is_jinja(pschema.get("default")) and not pschema.get("immutable"):
                live_params[name] = _cast(rendered[name], pschema)
        # Request validation (use_default=True, allow_default_none=True).
        unexpected = sorted(set(live_params) - set(schema))
        if unexpected:
            raise ValidationError(
                "Additional properties are not allowed (%s %s unexpected)"
                % (", ".join(repr(u) for u in unexpected), "was" if len(unexpected) == 1 else "were")
            )
        instance = dict(live_params)
        for name, pschema in schema.items():
            if "default" in pschema and instance.get(name) is None:
                instance[name] = pschema["default"]
        for name in sorted(schema):
            pschema = schema[name]
            if name not in instance:
                if pschema.get("required"):
                    raise ValidationError("'%s' is a required property" % name)
                continue
            nullable = ("default" in pschema or not pschema.get("required")) and pschema.get(
                "default"
            ) is None
            _validate_value(name, instance[name], pschema, nullable)
        # render_final_params: every declared parameter, defaults rendered and cast.
        final = {}
        for name, pschema in schema.items():
            final[name] = _cast(live_params[name] if name in live_params else rendered[name], pschema)
        runner_names = set(RUNNER_PARAMETERS.get(self.runner_type, {}))
        action_params = {k: v for k, v in final.items() if k not in runner_names}
        return final, action_params


# --------------------------------------------------------------------------- action helpers


def _json_roundtrip(value):
    """What st2 stores: JSON in, JSON out (tuples become lists, keys become strings)."""
    return json.loads(json.dumps(value))


def _python_shape(value, exit_code=0, stdout="", stderr=""):
    return {"result": value, "exit_code": exit_code, "stdout": stdout, "stderr": stderr}


def python_result(value):
    """(``succeeded``, st2 python-script result) for a run() that returned ``value``."""
    return SUCCEEDED, _python_shape(_json_roundtrip(value))


def python_failure(value):
    """(``failed``, st2 python-script result) for a run() that returned ``(False, value)``."""
    return FAILED, _python_shape(_json_roundtrip(value))


def _instantiate_action(action_cls, config, action_service):
    # Like st2's get_action_class_instance: old actions may not take action_service.
    try:
        return action_cls(config=config, action_service=action_service)
    except TypeError as e:
        if "action_service" not in str(e):
            raise
        instance = action_cls(config=config)
        setattr(instance, "action_service", action_service)
        return instance


class _PythonAction(object):
    """A python-script action class wrapped as ``fn(**params) -> (status, result)``."""

    python_script = True

    def __init__(self, action_cls, config=None, action_service=None):
        self.action_cls = action_cls
        self.config = config
        self.action_service = action_service
        self.calls = []

    def __call__(self, **params):
        self.calls.append(copy.deepcopy(params))
        stdout = io.StringIO()
        try:
            with contextlib.redirect_stdout(stdout):
                instance = _instantiate_action(self.action_cls, self.config or {}, self.action_service)
                output = instance.run(**params)
        except Exception:
            # The wrapper process dies with a traceback on stderr and exit code 1; the
            # runner finds no result delimiter and stores the string "None".
            return FAILED, _python_shape("None", 1, stdout.getvalue(), traceback.format_exc())
        if isinstance(output, tuple) and len(output) == 2:
            status, value = output
        else:
            status, value = None, output
        if status is not None and not isinstance(status, bool):
            return FAILED, {
                "error": "Status returned from the action run() method must either be True or "
                "False, got: %s" % (status,),
                "traceback": "",
            }
        try:
            value = _json_roundtrip(value)
        except (TypeError, ValueError, OverflowError):
            value = str(value)
        final = FAILED if status is False else SUCCEEDED
        return final, _python_shape(value, 0, stdout.getvalue(), "")

    def __repr__(self):
        return "python_action(%s)" % self.action_cls.__name__


def python_action(action_cls, config=None, action_service=None):
    """Wrap a python-script action class (an st2 ``Action`` subclass) for ``actions=``.

    Each call instantiates the class with ``config`` and ``action_service`` (as the
    python runner does in its fresh process), calls ``run(**params)`` and converts
    the return value: plain value or ``(True, v)`` -> succeeded; ``(False, v)`` ->
    failed; an exception -> failed with exit_code 1, the traceback in ``stderr`` and
    ``result`` the string ``"None"`` (what st2 records).  ``.calls`` lists the
    parameters of each call.
    """
    return _PythonAction(action_cls, config=config, action_service=action_service)


class _Outcomes(object):
    def __init__(self, items):
        if not items:
            raise ValueError("outcomes() needs at least one (status, result)")
        self.items = list(items)
        self.calls = []

    def __call__(self, **params):
        index = min(len(self.calls), len(self.items) - 1)
        self.calls.append(copy.deepcopy(params))
        item = self.items[index]
        return item(**params) if callable(item) else item


def outcomes(*items):
    """A fake action returning the given ``(status, result)`` tuples in turn (the last repeats).

    An item may itself be a callable ``fn(**params) -> (status, result)``.
    ``.calls`` records the parameters of every call.
    """
    return _Outcomes(items)


# --------------------------------------------------------------------------- records


class TaskRecord(object):
    """One task execution, as st2's TaskExecution records it.

    ``name``/``route``, ``action`` (rendered ref), ``input`` (task input as Orquesta
    rendered it), ``parameters`` (what the action received after st2's parameter
    handling: defaults filled, values cast, runner parameters split off), ``delay`` (the
    rendered task delay, or the retry delay; None when the task has none),
    ``retry`` (True when Orquesta re-ran the task for its ``retry`` spec),
    ``status`` and ``result`` (what the conductor got), ``items`` (with items
    tasks: one dict per item with input/parameters/delay/status/result),
    ``task_status`` (the conductor's status for the task afterwards),
    ``published`` (variables published by the transition taken), ``subrun``
    (WorkflowRun of a subworkflow) and ``error`` (why the request failed).
    """

    def __init__(self, name, route, action=None, input=None, delay=None, retry=False):
        self.name = name
        self.route = route
        self.action = action
        self.input = input
        self.parameters = None
        self.delay = delay
        self.retry = retry
        self.status = None
        self.result = None
        self.items = None
        self.task_status = None
        self.published = {}
        self.subrun = None
        self.error = None

    def as_dict(self):
        data = {
            "name": self.name,
            "route": self.route,
            "action": self.action,
            "input": self.input,
            "parameters": self.parameters,
            "delay": self.delay,
            "retry": self.retry,
            "status": self.status,
            "result": self.result,
            "task_status": self.task_status,
            "published": self.published,
        }
        if self.items is not None:
            data["items"] = self.items
        if self.error is not None:
            data["error"] = self.error
        return data

    def __repr__(self):
        return "<TaskRecord %s route=%s action=%s status=%s delay=%s>" % (
            self.name,
            self.route,
            self.action,
            self.status,
            self.delay,
        )


class WorkflowRun(object):
    """The outcome of ``run_workflow()``.

    ``status`` (Orquesta status string), ``output`` (rendered output dict, None
    when empty, as st2 stores it), ``errors`` (the conductor's error log),
    ``tasks`` (TaskRecord list in execution order), ``task_sequence`` (their
    names), ``state_sequence`` (Orquesta's own task sequence, engine commands
    like ``fail`` included), ``context`` (the terminal workflow context),
    ``injected_triggers`` (``{trigger, payload, trace_tag}`` from
    ``core.inject_trigger``, subworkflows included), ``log`` (one entry per
    requested action execution, with its delay), ``executions`` (how many action
    executions st2 would create, subworkflows' included), ``restarts`` (one entry
    per simulated engine restart: the tasks the restored conductor scheduled
    next, with their re-rendered delays) and ``conductor`` (the final
    WorkflowConductor).
    """

    def __init__(self, path, inputs):
        self.workflow_path = path
        self.inputs = copy.deepcopy(inputs)
        self.parameters = None
        self.status = None
        self.output = None
        self.errors = []
        self.tasks = []
        self.injected_triggers = []
        self.log = []
        self.context = {}
        self.state_sequence = []
        self.conductor = None
        self.st2_context = None
        self.restarts = []

    @property
    def executions(self):
        """Action executions st2 creates for this run: one per task action (per item for
        ``with items``), a subworkflow's own execution plus everything it ran."""
        count = sum(1 for entry in self.log if entry["action"] and entry["outcome"] in ACTION_END_STATUSES)
        return count + sum(t.subrun.executions for t in self.tasks if t.subrun is not None)

    @property
    def task_sequence(self):
        return [t.name for t in self.tasks]

    @property
    def succeeded(self):
        return self.status == SUCCEEDED

    @property
    def result(self):
        """The result st2's orquesta runner stores for this workflow execution."""
        result = {"output": self.output or None}
        if self.status in ABENDED:
            result["errors"] = copy.deepcopy(self.errors)
        return result

    def records_for(self, task_name):
        return [t for t in self.tasks if t.name == task_name]

    def task(self, task_name, index=-1):
        """The ``index``-th execution record of ``task_name`` (default: the last)."""
        records = self.records_for(task_name)
        if not records:
            raise KeyError("task %r never ran; sequence: %s" % (task_name, self.task_sequence))
        return records[index]

    def delays_for(self, task_name):
        """The rendered delay of each execution of ``task_name`` (None where it had none)."""
        return [t.delay for t in self.records_for(task_name)]

    def inputs_for(self, task_name):
        """The rendered input of each action execution of ``task_name`` (items flattened)."""
        inputs = []
        for record in self.records_for(task_name):
            if record.items is None:
                inputs.append(record.input)
            else:
                inputs.extend(item["input"] for item in record.items if item is not None)
        return inputs

    def parameters_for(self, task_name):
        """What each action execution of ``task_name`` received after st2's parameter handling."""
        params = []
        for record in self.records_for(task_name):
            if record.items is None:
                params.append(record.parameters)
            else:
                params.extend(item["parameters"] for item in record.items if item is not None)
        return params

    def results_for(self, task_name):
        return [t.result for t in self.records_for(task_name)]

    def __repr__(self):
        return "<WorkflowRun %s status=%s sequence=%s errors=%s>" % (
            os.path.basename(self.workflow_path or "?"),
            self.status,
            self.task_sequence,
            [e.get("message") for e in self.errors],
        )


# --------------------------------------------------------------------------- inspection


def _format_inspection(result):
    """Orquesta's inspect() dict flattened the way st2's workflow service reports it."""
    categories = {
        "contents": "content",
        "context": "context",
        "expressions": "expression",
        "semantics": "semantic",
        "syntax": "syntax",
    }
    errors = []
    for category, entries in result.items():
        for entry in entries:
            entry = dict(entry)
            if category in ("context", "expressions") and "language" not in entry:
                entry["language"] = entry.pop("type", None)
            entry["type"] = categories.get(category, category)
            errors.append(entry)
    return errors


def _inspect_task_contents(spec, registry):
    """st2's extra checks: action refs well formed and known, required/unexpected input."""
    errors = []
    schema_path = "properties.tasks.patternProperties.^\\w+$"
    for task_name, task_spec in spec.tasks.items():
        ref = getattr(task_spec, "action", None)
        if not ref or _has_expression(ref):
            continue
        spec_path = "tasks.%s" % task_name
        if "." not in ref.strip(".") or ref.startswith(".") or ref.endswith("."):
            errors.append(
                {
                    "type": "content",
                    "message": 'The action reference "%s" is not formatted correctly.' % ref,
                    "spec_path": spec_path + ".action",
                    "schema_path": schema_path + ".properties.action",
                }
            )
            continue
        if not registry.is_registered(ref):
            errors.append(
                {
                    "type": "content",
                    "message": 'The action "%s" is not registered in the database.' % ref,
                    "spec_path": spec_path + ".action",
                    "schema_path": schema_path + ".properties.action",
                }
            )
            continue
        schema = registry.parameter_schema(ref)
        params = getattr(task_spec, "input", None) or {}
        if schema is None or not isinstance(params, dict):
            continue
        required = set(n for n, p in schema.items() if p.get("required") and "default" not in p)
        for name in sorted(required - set(params)):
            errors.append(
                {
                    "type": "content",
                    "message": 'Action "%s" is missing required input "%s".' % (ref, name),
                    "spec_path": spec_path + ".input",
                    "schema_path": schema_path + ".properties.input",
                }
            )
        for name in sorted(set(params) - set(schema)):
            errors.append(
                {
                    "type": "content",
                    "message": 'Action "%s" has unexpected input "%s".' % (ref, name),
                    "spec_path": spec_path + ".input." + name,
                    "schema_path": schema_path + ".properties.input.patternProperties.^\\w+$",
                }
            )
    return errors


def _static_action_refs(definition):
    """Action refs written literally in the tasks (``action: pack.name k=v`` included)."""
    refs = []
    for task in (definition.get("tasks") or {}).values():
        ref = task.get("action") if isinstance(task, dict) else None
        if isinstance(ref, str) and ref.strip() and not _has_expression(ref):
            refs.append(ref.split()[0])
    return refs


def _has_expression(value):
    return isinstance(value, str) and ("<%" in value or "{{" in value or "{%" in value)


def _st2_app_ctx():
    # st2 inspects with its st2 context, so ctx(st2) and ctx(parent) are known variables.
    return {"st2": {}, "parent": {}}


def _require_orquesta():
    if not ORQUESTA_AVAILABLE:
        raise WorkflowRunnerError(ORQUESTA_SKIP_REASON)


def inspect_workflow(path, action_meta_dir=None, actions=None, subworkflows=None, app_ctx=None):
    """Every problem st2 would report before starting ``path`` (an empty list when none).

    Runs ``WorkflowSpec(definition).inspect(app_ctx=..., raise_exception=False)`` (by
    default with st2's context keys ``st2`` and ``parent``), flattens the result as
    st2 does (``type`` is syntax / semantic / expression / context / content) and
    adds YAML errors (duplicate keys included).  With ``action_meta_dir`` (or
    ``actions`` / ``subworkflows``) it also runs st2's task content checks: action
    refs must be known, required inputs present, no unexpected inputs.
    """
    _require_orquesta()
    try:
        path = resolve_workflow_path(path)
        definition = _load_yaml_file(path)
    except WorkflowDefinitionError as e:
        return [{"type": "syntax", "message": str(e), "spec_path": None, "schema_path": None}]
    if not isinstance(definition, dict):
        return [
            {
                "type": "syntax",
                "message": "%s does not hold a YAML mapping" % path,
                "spec_path": None,
                "schema_path": None,
            }
        ]
    registry = None
    if action_meta_dir or actions or subworkflows:
        registry = _Registry(actions or {}, subworkflows or {}, action_meta_dir, None, None, None)
    return _inspect_definition(definition, registry, app_ctx if app_ctx is not None else _st2_app_ctx())


def _inspect_definition(definition, registry, app_ctx):
    try:
        spec = _native_models.WorkflowSpec(copy.deepcopy(definition))
    except Exception as e:
        return [
            {
                "type": "syntax",
                "message": "%s: %s" % (type(e).__name__, e),
                "spec_path": None,
                "schema_path": None,
            }
        ]
    errors = _format_inspection(spec.inspect(app_ctx=app_ctx, raise_exception=False))
    if registry is not None and not errors:
        errors += _inspect_task_contents(spec, registry)
    return sorted(
        errors,
        key=lambda e: (e.get("type") or "", e.get("schema_path") or "", e.get("spec_path") or ""),
    )


# --------------------------------------------------------------------------- action registry


class _Registry(object):
    """Which callable / workflow / builtin runs an action ref, and with which metadata."""

    def __init__(self, actions, subworkflows, action_meta_dir, config, action_service, pack):
        self.actions = dict(actions or {})
        self.subworkflows = dict(subworkflows or {})
        self.action_meta_dir = action_meta_dir
        self.config = config
        self.action_service = action_service
        self.meta = {}
        if action_meta_dir:
            self.meta = load_action_metadata(action_meta_dir, pack=pack)
        if not pack:
            pack = _pack_name_for(action_meta_dir, "synthralos") if action_meta_dir else "synthralos"
        self.pack = pack
        self._wrapped = {}

    def metadata(self, ref):
        if ref in CORE_ACTIONS:
            return CORE_ACTIONS[ref]
        return self.meta.get(ref)

    def parameter_schema(self, ref):
        meta = self.metadata(ref)
        return _merged_parameter_schema(meta) if meta is not None else None

    def runner_type(self, ref):
        meta = self.metadata(ref)
        return meta.get("runner_type") if meta else None

    def is_registered(self, ref):
        """st2 knows the action: it has metadata or the caller says how to run it."""
        return ref in self.meta or self.can_run(ref)

    def can_run(self, ref):
        return (
            ref in self.actions
            or ref in self.subworkflows
            or ref in CORE_ACTIONS
            or self._meta_workflow(ref) is not None
        )

    def _meta_workflow(self, ref):
        meta = self.meta.get(ref)
        if meta and meta.get("runner_type") in ("orquesta", "orchestra") and meta.get("entry_point"):
            return os.path.join(os.path.dirname(meta["_path"]), meta["entry_point"])
        return None

    def workflow_for_path(self, path):
        """The metadata whose entry point is ``path`` (the workflow's own parameters)."""
        path = os.path.abspath(path)
        for ref, meta in self.meta.items():
            wf = self._meta_workflow(ref)
            if wf and os.path.abspath(wf) == path:
                return meta
        return None

    def handler(self, ref):
        """('callable', fn) or ('workflow', path) or ('builtin', name) for ``ref``."""
        if ref in self.actions:
            target = self.actions[ref]
            if isinstance(target, str):
                return "workflow", target
            if inspect.isclass(target):
                if ref not in self._wrapped:
                    self._wrapped[ref] = python_action(target, self.config, self.action_service)
                return "callable", self._wrapped[ref]
            if callable(target):
                return "callable", target
            raise WorkflowRunnerError(
                "actions[%r] is neither callable, a class nor a path: %r" % (ref, target)
            )
        if ref in self.subworkflows:
            return "workflow", self.subworkflows[ref]
        if ref in CORE_ACTIONS:
            return "builtin", ref
        wf = self._meta_workflow(ref)
        if wf is not None:
            return "workflow", wf
        known = sorted(set(self.actions) | set(self.subworkflows) | set(CORE_ACTIONS))
        raise UnknownActionError(
            "no handler for action %r; pass it in actions= (callable or python-script "
            "class) or subworkflows= (workflow path); known refs: %s" % (ref, ", ".join(known))
        )


# --------------------------------------------------------------------------- the driver


class _RequestFailed(Exception):
    """st2 could not request the action execution (bad parameters): the workflow fails."""

    def __init__(self, error):
        super(_RequestFailed, self).__init__(str(error))
        self.error = error


class _IdSequence(object):
    def __init__(self):
        self.counter = 0

    def next(self):
        self.counter += 1
        return "5f%022x" % self.counter


def _action_delay(task, action, itemized):
    """st2's eval_action_execution_delay: which action executions get the task delay."""
    delay = task.get("delay")
    concurrency = task.get("concurrency")
    if delay and not itemized:
        return delay
    if delay and itemized and not concurrency:
        return delay
    if delay and itemized and action.get("item_id") is not None and action["item_id"] < concurrency:
        return delay
    return None


class _Driver(object):
    def __init__(self, registry, max_steps, render_jinja, user, execution_context, st2_context, restart=None):
        self.restart = restart
        self.registry = registry
        self.max_steps = max_steps
        self.render_jinja = render_jinja
        self.user = user
        self.execution_context = execution_context
        self.st2_context = st2_context
        self.ids = _IdSequence()

    # -- parameters -------------------------------------------------------------

    def prepare_parameters(self, ref, live, action_context):
        renderer = _ParamRenderer(
            self.registry.parameter_schema(ref),
            self.registry.runner_type(ref),
            self._config_for(ref),
            action_context,
            render_jinja=self.render_jinja,
        )
        return renderer.prepare(live)

    def _config_for(self, ref):
        return (self.registry.config or {}) if ref.split(".", 1)[0] == self.registry.pack else {}

    # -- workflow ----------------------------------------------------------------

    def run(self, path, params, depth, parent_context=None, top_level=False):
        _require_orquesta()
        if depth > MAX_DEPTH:
            raise WorkflowRunnerError("subworkflows nested deeper than %d: %s" % (MAX_DEPTH, path))
        path = resolve_workflow_path(path)
        run = WorkflowRun(path, params)
        definition = _load_yaml_file(path)
        if not isinstance(definition, dict):
            raise WorkflowDefinitionError("%s does not hold a YAML mapping" % path)

        execution_id = self.ids.next()
        exec_ctx = parent_context if parent_context is not None else self.execution_context
        if exec_ctx is None:
            exec_ctx = {"user": self.user, "pack": self.registry.pack}
        st2_ctx = {
            "st2": {
                "action_execution_id": execution_id,
                "api_url": DEFAULT_API_URL,
                "user": exec_ctx.get("user", self.user),
                "pack": exec_ctx.get("pack", self.registry.pack),
            }
        }
        if exec_ctx:
            st2_ctx["parent"] = copy.deepcopy(exec_ctx)
        if self.st2_context and top_level:
            st2_ctx["st2"].update(copy.deepcopy(self.st2_context))
        run.st2_context = st2_ctx

        errors = _inspect_definition(definition, self.registry, st2_ctx)
        unknown = sorted(
            set(
                ref
                for ref in _static_action_refs(definition)
                if "." in ref and not self.registry.can_run(ref)
            )
        )
        if unknown:
            raise UnknownActionError(
                "%s uses actions the driver has no handler for: %s; pass them in actions= "
                "(callable or python-script class) or subworkflows= (workflow path)"
                % (path, ", ".join(unknown))
            )
        if errors:
            raise WorkflowInspectionError(path, errors)

        if top_level:
            meta = self.registry.workflow_for_path(path)
            if meta is not None:
                action_ctx = {"user": self.user, "pack": self.registry.pack}
                try:
                    params, _ = self.prepare_parameters(meta["_ref"], params, action_ctx)
                except (ParamException, ValidationError, ValueError, TypeError) as e:
                    raise ActionParameterError(
                        "st2 would reject the execution of %s: %s: %s" % (meta["_ref"], type(e).__name__, e)
                    )
        run.parameters = copy.deepcopy(params)

        spec = _native_models.WorkflowSpec(copy.deepcopy(definition))
        conductor = _conducting.WorkflowConductor(spec, context=st2_ctx, inputs=params or {})
        conductor.serialize()  # renders input and vars, as st2's request() does
        st2_ctx["st2"]["workflow_execution_id"] = self.ids.next()
        if conductor.get_workflow_status() not in _statuses.COMPLETED_STATUSES:
            conductor.request_workflow_status(_statuses.REQUESTED)
            conductor.workflow_state.contexts[0].setdefault("st2", {})
            conductor.workflow_state.contexts[0]["st2"]["workflow_execution_id"] = st2_ctx["st2"][
                "workflow_execution_id"
            ]
            conductor = self._conduct(run, conductor, execution_id, depth)
        self._finish(run, conductor)
        return run

    def _roundtrip(self, conductor, run):
        try:
            data = json.loads(json.dumps(conductor.serialize()))
        except (TypeError, ValueError) as e:
            raise WorkflowRunnerError(
                "the workflow state of %s is not JSON serializable (st2 persists it): %s"
                % (run.workflow_path, e)
            )
        return _conducting.WorkflowConductor.deserialize(data)

    def _conduct(self, run, conductor, execution_id, depth):
        steps = 0
        open_items = {}
        conductor = self._roundtrip(conductor, run)
        if conductor.get_workflow_status() in (_statuses.REQUESTED, _statuses.SCHEDULED):
            conductor.request_workflow_status(_statuses.RUNNING)
        next_tasks = conductor.get_next_tasks()
        while next_tasks:
            batch = []
            for task in next_tasks:
                key = (task["id"], task["route"])
                itemized = task["spec"].has_items()
                record = open_items.get(key) if itemized else None
                if record is None:
                    staged = conductor.workflow_state.get_staged_task(task["id"], task["route"])
                    record = TaskRecord(
                        task["id"],
                        task["route"],
                        action=getattr(task["spec"], "action", None),
                        delay=task.get("delay"),
                        retry=bool(staged and staged.get("retry")),
                    )
                    if itemized:
                        record.items = [None] * task.get("items_count", 0)
                        record.input = getattr(task["spec"], "input", None)
                        if task.get("items_count"):
                            open_items[key] = record
                    elif task["actions"]:
                        record.action = task["actions"][0]["action"]
                        record.input = copy.deepcopy(task["actions"][0]["input"])
                    run.tasks.append(record)
                if itemized and task.get("items_count") == 0:
                    conductor.update_task_state(
                        task["id"], task["route"], _events.ActionExecutionEvent(_statuses.RUNNING)
                    )
                for action in task["actions"]:
                    if action.get("item_id") is None:
                        event = _events.ActionExecutionEvent(_statuses.RUNNING)
                    else:
                        event = _events.TaskItemActionExecutionEvent(action["item_id"], _statuses.RUNNING)
                    conductor.update_task_state(task["id"], task["route"], event)
                batch.append((task, record))

            request_failed = False
            for task, record in batch:
                itemized = task["spec"].has_items()
                if getattr(task["spec"], "action", None) is None or (
                    itemized and task.get("items_count") == 0
                ):
                    # Action-less task, or with items over an empty list: succeeds at once.
                    steps = self._step(run, steps)
                    record.status = SUCCEEDED
                    record.result = [] if itemized else None
                    self._log(run, record, None, None, "no action")
                    conductor.update_task_state(
                        task["id"], task["route"], _events.ActionExecutionEvent(_statuses.SUCCEEDED)
                    )
                    self._after(conductor, task, record, open_items)
                    continue
                for action in task["actions"]:
                    steps = self._step(run, steps)
                    delay = _action_delay(task, action, itemized)
                    try:
                        status, result, params, subrun = self._execute(
                            run, task, action, execution_id, depth
                        )
                    except _RequestFailed as failure:
                        # request_task_execution raised: st2 fails the workflow right away.
                        error = failure.error
                        record.status = FAILED
                        record.error = "%s: %s" % (type(error).__name__, error)
                        self._log(run, record, action, delay, record.error)
                        conductor.request_workflow_status(_statuses.FAILED)
                        conductor.log_error(error, task_id=task["id"], route=task["route"])
                        request_failed = True
                        break
                    self._log(run, record, action, delay, status)
                    if action.get("item_id") is None:
                        record.parameters = params
                        record.status = status
                        record.result = result
                        record.subrun = subrun
                        event = _events.ActionExecutionEvent(status, result=result)
                    else:
                        item_id = action["item_id"]
                        record.items[item_id] = {
                            "input": copy.deepcopy(action["input"]),
                            "parameters": params,
                            "delay": delay,
                            "status": status,
                            "result": result,
                            "subrun": subrun,
                        }
                        accumulated = [i["result"] if i else None for i in record.items]
                        event = _events.TaskItemActionExecutionEvent(
                            item_id, status, result=result, accumulated_result=accumulated
                        )
                        if all(i is not None for i in record.items):
                            record.status = (
                                SUCCEEDED if all(i["status"] == SUCCEEDED for i in record.items) else FAILED
                            )
                        record.result = accumulated
                    conductor.update_task_state(task["id"], task["route"], event)
                if request_failed:
                    break
                self._after(conductor, task, record, open_items)
            conductor = self._roundtrip(conductor, run)
            if request_failed:
                break
            restarted = self.restart is not None and self.restart(run, conductor)
            if restarted:
                conductor = self._restart(conductor)
            next_tasks = conductor.get_next_tasks()
            if restarted:
                run.restarts.append({"next_tasks": [(t["id"], t.get("delay")) for t in next_tasks]})
        return conductor

    @staticmethod
    def _restart(conductor):
        """An engine restart: the workflow state goes to disk, the conductor object is
        dropped, and a new one is built from what was persisted (st2 keeps it in MongoDB)."""
        import tempfile

        with tempfile.TemporaryFile(mode="w+") as handle:
            json.dump(conductor.serialize(), handle)
            del conductor
            handle.seek(0)
            return _conducting.WorkflowConductor.deserialize(json.load(handle))

    def _step(self, run, steps):
        steps += 1
        if steps > self.max_steps:
            raise WorkflowStepLimitExceeded(
                "%s: more than max_steps=%d task/action executions; last tasks: %s"
                % (run.workflow_path, self.max_steps, run.task_sequence[-10:])
            )
        return steps

    def _after(self, conductor, task, record, open_items):
        entry = conductor.get_task_state_entry(task["id"], task["route"])
        if not entry:
            return
        record.task_status = entry.get("status")
        if record.task_status in _statuses.COMPLETED_STATUSES:
            open_items.pop((task["id"], task["route"]), None)
            published = {}
            for idx in sorted((entry.get("ctxs", {}).get("out") or {}).values()):
                published.update(copy.deepcopy(conductor.workflow_state.contexts[idx]))
            record.published = published

    def _log(self, run, record, action, delay, outcome):
        entry = {
            "task": record.name,
            "route": record.route,
            "action": action.get("action") if action else None,
            "delay": delay,
            "retry": record.retry,
            "outcome": outcome,
        }
        if action and action.get("item_id") is not None:
            entry["item_id"] = action["item_id"]
        run.log.append(entry)

    def _execute(self, run, task, action, execution_id, depth):
        ref = action["action"]
        if not isinstance(ref, str) or not ref:
            raise _RequestFailed(InvalidActionReferencedException('Unable to find action "%s".' % (ref,)))
        kind, target = self.registry.handler(ref)
        action_ctx = {
            "pack": ref.split(".", 1)[0],
            "user": self.user,
            "parent": {"execution_id": execution_id, "user": self.user, "pack": self.registry.pack},
            "orquesta": {
                "workflow_execution_id": run.st2_context["st2"].get("workflow_execution_id"),
                "task_execution_id": self.ids.next(),
                "task_name": task["id"],
                "task_id": task["id"],
                "task_route": task["route"],
            },
        }
        if action.get("item_id") is not None:
            action_ctx["orquesta"]["item_id"] = action["item_id"]
        try:
            params, action_params = self.prepare_parameters(ref, action["input"] or {}, action_ctx)
        except Exception as e:  # st2 fails the workflow on any error requesting the action
            raise _RequestFailed(e)

        subrun = None
        if kind == "workflow":
            subrun = self.run(target, params, depth + 1, parent_context=action_ctx)
            run.injected_triggers.extend(subrun.injected_triggers)
            status, result = subrun.status, subrun.result
        elif kind == "builtin":
            status, result = self._builtin(run, ref, action_params)
        else:
            outcome = target(**copy.deepcopy(action_params))
            if not (isinstance(outcome, tuple) and len(outcome) == 2 and outcome[0] in ACTION_END_STATUSES):
                raise WorkflowRunnerError(
                    "action %r for task %r returned %r; expected (status, result) with status one of %s"
                    % (ref, task["id"], outcome, ", ".join(ACTION_END_STATUSES))
                )
            status, result = outcome
            try:
                result = _json_roundtrip(result)
            except (TypeError, ValueError) as e:
                raise WorkflowRunnerError(
                    "result of %r for task %r is not JSON serializable (st2 stores it): %s"
                    % (ref, task["id"], e)
                )
        return status, result, action_params, subrun

    def _builtin(self, run, ref, params):
        if ref == "core.noop":
            return SUCCEEDED, {"failed": False, "succeeded": True, "return_code": 0}
        if ref == "core.echo":
            return SUCCEEDED, {
                "failed": False,
                "succeeded": True,
                "return_code": 0,
                "stdout": params.get("message") or "",
                "stderr": "",
            }
        if ref == "core.inject_trigger":
            payload = params.get("payload") or {}
            run.injected_triggers.append(
                {"trigger": params.get("trigger"), "payload": payload, "trace_tag": params.get("trace_tag")}
            )
            body = {"trigger": params.get("trigger"), "payload": payload}
            if params.get("trace_tag"):
                body["trace_tag"] = params["trace_tag"]
            return python_result(body)
        raise UnknownActionError(ref)

    def _finish(self, run, conductor):
        if conductor.get_workflow_status() in _statuses.COMPLETED_STATUSES:
            conductor.render_workflow_output()
        run.conductor = conductor
        run.status = conductor.get_workflow_status()
        run.output = conductor.get_workflow_output()
        run.errors = copy.deepcopy(conductor.errors)
        run.state_sequence = [entry["id"] for entry in conductor.workflow_state.sequence]
        try:
            context = conductor.get_workflow_terminal_context()
        except Exception:
            context = {}
        run.context = {k: v for k, v in context.items() if not k.startswith("__")}


def run_workflow(
    workflow_path,
    inputs=None,
    actions=None,
    max_steps=500,
    subworkflows=None,
    action_meta_dir=None,
    config=None,
    action_service=None,
    pack=None,
    user=DEFAULT_USER,
    execution_context=None,
    st2_context=None,
    render_jinja_params=True,
    restart=None,
):
    """Run ``workflow_path`` through the real Orquesta conductor to completion.

    ``workflow_path``: absolute, relative to the pack root, or a file / name
    under actions/workflows/.  ``inputs``: the execution's parameters.
    ``actions``: action ref -> ``fn(**params) -> (status, result)``, a
    python-script action class (run with ``config`` and ``action_service``; see
    ``python_action``) or a workflow path.  ``subworkflows``: action ref ->
    workflow path, run recursively (result ``{"output": ...}``, plus ``errors``
    on failure).  ``core.noop``, ``core.echo`` and ``core.inject_trigger`` are
    built in unless overridden.  ``action_meta_dir`` (e.g. ``ACTIONS_DIR``):
    read action metadata there, so parameters are checked, cast and defaulted
    as st2 does, and ``pack.<name>`` refs whose metadata is an Orquesta
    workflow run as subworkflows.  ``max_steps``: action executions allowed per
    workflow before ``WorkflowStepLimitExceeded``.  ``execution_context``: the
    st2 execution context seen as ``ctx().parent`` (e.g. a rule's trace
    context); ``st2_context`` overrides keys of ``ctx().st2``.
    ``render_jinja_params=False`` turns off st2's Jinja rendering of parameters.
    ``restart(run, conductor) -> bool``: asked between rounds; True simulates an
    engine restart there (see ``WorkflowRun.restarts``).

    Raises UnknownActionError, WorkflowInspectionError, WorkflowDefinitionError
    or ActionParameterError where st2 would refuse to start the execution.
    """
    registry = _Registry(actions, subworkflows, action_meta_dir, config, action_service, pack)
    driver = _Driver(registry, max_steps, render_jinja_params, user, execution_context, st2_context, restart)
    return driver.run(workflow_path, copy.deepcopy(inputs or {}), 0, top_level=True)
