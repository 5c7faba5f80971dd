"""Run a pack workflow through the real Orquesta conductor, the way st2 runs it.

``run_workflow()`` loads an Orquesta workflow (``actions/workflows/*.yaml``),
inspects it and drives ``orquesta.conducting.WorkflowConductor`` to completion,
synchronously, running the tasks' actions in-process (python-script action
classes, test callables, subworkflows). What is Orquesta's or st2's is called,
not re-implemented:

* the workflow is loaded by Orquesta's native spec loader (``instantiate``, which
  refuses duplicate keys) and inspected by st2's ``services.workflows.inspect``
  (Orquesta's inspection plus st2's task content checks: action refs registered,
  required inputs given, no unexpected inputs);
* task input becomes action parameters through st2's own code, in st2's order:
  ``util.param.render_live_params`` (``request_action_execution``), the
  ``create_request`` checks (``util.schema.validate`` against
  ``get_schema_for_action_parameters``, no immutable parameter overridden), then
  ``render_final_params`` (the runner container). A failure there fails the
  workflow at once, without running the task's transitions, as in st2;
* runner parameters come from each runner's ``runner.yaml`` and the core pack's
  action metadata from ``contrib/core`` in the st2 tree that is installed.

st2 reads action and runner metadata and the pack config from MongoDB; for the
duration of a run, ``_St2Database`` serves the lookups st2's code makes
(``util.action_db.get_action_by_ref`` / ``get_runnertype_by_name``,
``util.param.get_config``) from the metadata files instead. ``st2kv`` lookups
in parameters have no datastore here and fail.

What the driver does itself is what st2's workflow engine does between
conductor calls: it marks every task ``get_next_tasks()`` returns as running,
requests one action execution per task (per item for ``with items`` tasks, fed
back as ``TaskItemActionExecutionEvent`` with the accumulated results), returns
results in st2's shapes (``{"result", "exit_code", "stdout", "stderr"}`` for
python-script actions, ``{"output", "errors"}`` for subworkflows, the noop /
local-shell shapes for ``core.noop`` / ``core.echo``), serializes the conductor
to JSON and restores it between rounds (st2 keeps it in MongoDB, so non-JSON
data fails here too), and records each task's rendered ``delay`` without
sleeping. For routing alone, with mocked results, Orquesta's own
``orquesta.rehearsing`` is the tool (``tests/test_orquesta_runner.py`` uses it).
"""

from __future__ import absolute_import

import contextlib
import copy
import glob
import inspect
import io
import json
import os
import traceback
from unittest import mock

import yaml

import orquesta
import st2common
from orquesta import conducting as _conducting
from orquesta import events as _events
from orquesta import statuses as _statuses
from orquesta.specs import loader as _spec_loader
from st2common.exceptions.action import InvalidActionReferencedException
from st2common.models.api.action import ActionAPI
from st2common.models.db.runner import RunnerTypeDB
from st2common.runners.utils import get_action_class_instance
from st2common.services import workflows as _st2_workflows
from st2common.util import action_db as _st2_action_db
from st2common.util import param as _st2_param
from st2common.util import schema as _st2_schema

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

# The suite runs on st2's Orquesta (synthralos_tests refuses to start without it);
# these names stay for the test modules that import them.
ORQUESTA_AVAILABLE = True
ORQUESTA_VERSION = orquesta.__version__
ORQUESTA_SKIP_REASON = "never skipped: the suite runs on st2's Orquesta"


def skip_unless_orquesta(test):
    """Kept for the test modules that use it: Orquesta is always there, nothing is skipped."""
    return test


PACK_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ACTIONS_DIR = os.path.join(PACK_ROOT, "actions")
WORKFLOWS_DIR = os.path.join(ACTIONS_DIR, "workflows")
# The st2 source tree that is installed: <tree>/st2common/st2common/__init__.py.
ST2_TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(st2common.__file__))))

SUCCEEDED = "succeeded"
FAILED = "failed"
TIMEOUT = "timeout"
CANCELED = "canceled"
ABANDONED = "abandoned"
ACTION_END_STATUSES = (SUCCEEDED, FAILED, TIMEOUT, CANCELED, ABANDONED)
ABENDED = (FAILED, TIMEOUT, ABANDONED)

DEFAULT_USER = "stanley"
DEFAULT_API_URL = "http://127.0.0.1:9101/v1"
MAX_DEPTH = 10
BUILTIN_ACTIONS = ("core.noop", "core.echo", "core.inject_trigger")


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


# --------------------------------------------------------------------------- loading


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
    raise WorkflowDefinitionError("workflow %r not found; looked at: %s" % (path, ", ".join(candidates)))


def _load_spec(path):
    """The workflow spec, loaded as st2 loads it: Orquesta's native spec module on the file's text."""
    try:
        with open(path) as handle:
            text = handle.read()
    except (IOError, OSError) as e:
        raise WorkflowDefinitionError("cannot read %s: %s" % (path, e))
    try:
        return _spec_loader.get_spec_module("native").instantiate(text)
    except Exception as e:  # YAML errors, duplicate keys, a document that is not a workflow
        raise WorkflowDefinitionError("%s: %s: %s" % (path, type(e).__name__, e))


def _load_metadata(path, pack):
    with open(path) as handle:
        meta = yaml.safe_load(handle)
    if not isinstance(meta, dict) or "name" not in meta or "runner_type" not in meta:
        return None
    meta = dict(meta, pack=meta.get("pack") or pack, parameters=meta.get("parameters") or {})
    meta["ref"] = "%s.%s" % (meta["pack"], meta["name"])
    return meta


def _pack_name_for(meta_dir):
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(meta_dir)), "pack.yaml")) as handle:
            data = yaml.safe_load(handle) or {}
        return data.get("ref") or data.get("name") or "synthralos"
    except (IOError, OSError, yaml.YAMLError):
        return "synthralos"


def _runner_types():
    """{name: RunnerTypeDB} from every runner.yaml in the st2 tree (aliases included)."""
    found = {}
    for path in glob.glob(os.path.join(ST2_TREE, "contrib", "runners", "*", "*", "runner.yaml")):
        with open(path) as handle:
            for runner in yaml.safe_load(handle):
                for name in [runner["name"]] + runner.get("aliases", []):
                    found[name] = RunnerTypeDB(name=name, runner_parameters=runner.get("runner_parameters") or {})
    return found


class _St2Database(object):
    """What st2 would read from MongoDB: action metadata (the pack's metadata directory, the
    core pack's), runner types and the pack config. ``patched()`` serves st2's own lookups
    from it while st2's code runs."""

    _runners = None

    def __init__(self, action_meta_dir, pack, config):
        self.pack = pack or (_pack_name_for(action_meta_dir) if action_meta_dir else "synthralos")
        self.config = config or {}
        self.meta = {}
        core = os.path.join(ST2_TREE, "contrib", "core", "actions")
        if not os.path.isdir(core):
            raise WorkflowRunnerError("no st2 source tree at %s (contrib/core, contrib/runners): the tests "
                                      "need st2 installed editable from its tree, as the test command does"
                                      % ST2_TREE)
        for ref in BUILTIN_ACTIONS:
            self._add(os.path.join(core, ref.split(".", 1)[1] + ".yaml"), "core")
        if action_meta_dir:
            for path in sorted(glob.glob(os.path.join(action_meta_dir, "*.yaml"))):
                self._add(path, self.pack)
        if _St2Database._runners is None:
            _St2Database._runners = _runner_types()
        self.actions = {}

    def _add(self, path, pack):
        meta = _load_metadata(path, pack)
        if meta is not None:
            meta["_path"] = path
            self.meta[meta["ref"]] = meta

    def action(self, ref):
        """The ActionDB st2 would load for ``ref`` (None when the ref has no metadata)."""
        if ref not in self.meta:
            return None
        if ref not in self.actions:
            fields = {k: v for k, v in self.meta[ref].items() if not k.startswith("_") and k != "ref"}
            self.actions[ref] = ActionAPI.to_model(ActionAPI(**fields))
        return self.actions[ref]

    def runner_type(self, name):
        if name not in self._runners:
            raise WorkflowRunnerError("no runner.yaml in %s declares the runner %r" % (ST2_TREE, name))
        return self._runners[name]

    def get_action_by_ref(self, ref, only_fields=None):
        return self.action(ref)

    def get_runnertype_by_name(self, runnertype_name):
        return self.runner_type(runnertype_name)

    def get_config(self, pack, user):
        return copy.deepcopy(self.config) if pack == self.pack else {}

    @contextlib.contextmanager
    def patched(self):
        with mock.patch.object(_st2_action_db, "get_action_by_ref", self.get_action_by_ref), \
                mock.patch.object(_st2_action_db, "get_runnertype_by_name", self.get_runnertype_by_name), \
                mock.patch.object(_st2_param, "get_config", self.get_config):
            yield

    def workflow_path(self, ref):
        meta = self.meta.get(ref)
        if meta and meta["runner_type"] in ("orquesta", "orchestra") and meta.get("entry_point"):
            return os.path.join(os.path.dirname(meta["_path"]), meta["entry_point"])
        return None

    def ref_for_workflow(self, path):
        """The action whose entry point is the workflow at ``path`` (its parameters are the workflow's).
        Several actions may share one workflow (llm_retry and reroute_request): then the one named as
        the file is meant; run another with ``run_workflow(..., action_ref=...)``."""
        refs = [ref for ref in self.meta
                if self.workflow_path(ref) and os.path.abspath(self.workflow_path(ref)) == os.path.abspath(path)]
        named = [ref for ref in refs if ref.split(".", 1)[-1] == os.path.splitext(os.path.basename(path))[0]]
        return (named or refs or [None])[0]

    def parameters(self, ref, live, action_context):
        """(runner parameters, action parameters) st2 hands the runner for a request of ``ref``
        with ``live`` parameters (a task's rendered input)."""
        action_db = self.action(ref)
        if action_db is None:  # a test double with no metadata: st2's rendering only
            with self.patched():
                rendered = _st2_param.render_live_params({}, {}, live, action_context)
            return {}, rendered
        runner_db = self.runner_type(action_db.runner_type["name"])
        with self.patched():
            # workflows.request_action_execution
            live = _st2_param.render_live_params(runner_db.runner_parameters, action_db.parameters, live,
                                                 action_context)
            # action_service.create_request
            schema = _st2_schema.get_schema_for_action_parameters(action_db, runner_db)
            _st2_schema.validate(live, schema, _st2_schema.get_validator(), use_default=True,
                                 allow_default_none=True)
            immutables = [name for params in (action_db.parameters, runner_db.runner_parameters)
                          for name, spec in params.items() if spec.get("immutable")]
            overridden = [name for name in live if name in immutables]
            if overridden:
                raise ValueError("Override of immutable parameter(s) %s is unsupported." % str(overridden))
            # the runner container
            return _st2_param.render_final_params(runner_db.runner_parameters, action_db.parameters, live,
                                                  action_context)


# --------------------------------------------------------------------------- actions


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
                instance = get_action_class_instance(self.action_cls, self.config or {}, self.action_service)
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


def _st2_app_ctx():
    # st2 inspects with its st2 context, so ctx(st2) and ctx(parent) are known variables.
    return {"st2": {}, "parent": {}}


def _inspect(spec, registry, app_ctx):
    """The errors st2's workflow service reports before it starts the workflow.

    With a registry: ``services.workflows.inspect`` (Orquesta's inspection, then st2's task
    content checks against the metadata st2 would have). Actions run only by a test double
    (no metadata) are outside what st2 could check: the content errors naming them are
    dropped. Without one: Orquesta's inspection, formatted by st2."""
    if registry is None:
        result = spec.inspect(app_ctx=app_ctx, raise_exception=False)
        return sorted(_st2_workflows.format_inspection_result(result),
                      key=lambda e: (e["type"], e.get("schema_path") or ""))
    with registry.db.patched():
        errors = _st2_workflows.inspect(spec, app_ctx, raise_exception=False)
    doubles = ['"%s"' % ref for ref in registry.doubles()]
    return [e for e in errors if not (e["type"] == "content" and any(d in e["message"] for d in doubles))]


def inspect_workflow(path, action_meta_dir=None, actions=None, subworkflows=None, app_ctx=None):
    """Every problem st2 would report before starting ``path`` (an empty list when none).

    Loads the workflow as st2 does (YAML errors and duplicate keys are ``syntax`` errors
    here) and inspects it with ``app_ctx`` (default: st2's context keys ``st2`` and
    ``parent``). With ``action_meta_dir`` (or ``actions`` / ``subworkflows``) st2's task
    content checks run too: action refs known, required inputs present, no unexpected input.
    """
    try:
        spec = _load_spec(resolve_workflow_path(path))
    except WorkflowDefinitionError as e:
        return [{"type": "syntax", "message": str(e), "spec_path": None, "schema_path": None}]
    registry = None
    if action_meta_dir or actions or subworkflows:
        registry = _Registry(actions, subworkflows, _St2Database(action_meta_dir, None, None), None)
    return _inspect(spec, registry, app_ctx if app_ctx is not None else _st2_app_ctx())


# --------------------------------------------------------------------------- who runs an action


class _Registry(object):
    """Which callable / workflow / builtin runs an action ref; ``db`` has the metadata."""

    def __init__(self, actions, subworkflows, db, action_service):
        self.actions = dict(actions or {})
        self.subworkflows = dict(subworkflows or {})
        self.db = db
        self.action_service = action_service
        self._wrapped = {}

    def can_run(self, ref):
        return (ref in self.actions or ref in self.subworkflows or ref in BUILTIN_ACTIONS
                or self.db.workflow_path(ref) is not None)

    def doubles(self):
        """Refs the caller says how to run that have no metadata."""
        return [ref for ref in list(self.actions) + list(self.subworkflows) if ref not in self.db.meta]

    def handler(self, ref):
        """('callable', fn) or ('workflow', path) or ('builtin', name) for ``ref``."""
        if ref in self.actions:
            target = self.actions[ref]
            if isinstance(target, str):
                return "workflow", target
            if inspect.isclass(target):
                if ref not in self._wrapped:
                    self._wrapped[ref] = python_action(target, self.db.config, self.action_service)
                return "callable", self._wrapped[ref]
            if callable(target):
                return "callable", target
            raise WorkflowRunnerError("actions[%r] is neither callable, a class nor a path: %r" % (ref, target))
        if ref in self.subworkflows:
            return "workflow", self.subworkflows[ref]
        if ref in BUILTIN_ACTIONS:
            return "builtin", ref
        wf = self.db.workflow_path(ref)
        if wf is not None:
            return "workflow", wf
        known = sorted(set(self.actions) | set(self.subworkflows) | set(BUILTIN_ACTIONS))
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


class _Driver(object):
    def __init__(self, registry, max_steps, user, execution_context, st2_context, restart=None):
        self.restart = restart
        self.registry = registry
        self.max_steps = max_steps
        self.user = user
        self.execution_context = execution_context
        self.st2_context = st2_context
        self.ids = _IdSequence()

    # -- workflow ----------------------------------------------------------------

    def run(self, path, params, depth, parent_context=None, top_level=False, action_ref=None):
        if depth > MAX_DEPTH:
            raise WorkflowRunnerError("subworkflows nested deeper than %d: %s" % (MAX_DEPTH, path))
        if action_ref is not None:
            path = self.registry.db.workflow_path(action_ref)
            if path is None:
                raise WorkflowDefinitionError("%s is not an Orquesta workflow action with metadata under the "
                                              "action_meta_dir given" % action_ref)
        path = resolve_workflow_path(path)
        run = WorkflowRun(path, params)
        spec = _load_spec(path)

        execution_id = self.ids.next()
        exec_ctx = parent_context if parent_context is not None else self.execution_context
        if exec_ctx is None:
            exec_ctx = {"user": self.user, "pack": self.registry.db.pack}
        st2_ctx = {
            "st2": {
                "action_execution_id": execution_id,
                "api_url": DEFAULT_API_URL,
                "user": exec_ctx.get("user", self.user),
                "pack": exec_ctx.get("pack", self.registry.db.pack),
            }
        }
        if exec_ctx:
            st2_ctx["parent"] = copy.deepcopy(exec_ctx)
        if self.st2_context and top_level:
            st2_ctx["st2"].update(copy.deepcopy(self.st2_context))
        run.st2_context = st2_ctx

        errors = _inspect(spec, self.registry, st2_ctx)
        unknown = sorted(
            set(
                ref
                for ref in _static_action_refs(spec)
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
            ref = action_ref or self.registry.db.ref_for_workflow(path)
            if ref is not None:
                action_ctx = {"user": self.user, "pack": self.registry.db.pack}
                try:
                    _, params = self.registry.db.parameters(ref, params, action_ctx)
                except Exception as e:  # what st2's API refuses the execution request with
                    raise ActionParameterError(
                        "st2 would reject the execution of %s: %s: %s" % (ref, type(e).__name__, e)
                    )
        run.parameters = copy.deepcopy(params)

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
                    delay = _st2_workflows.eval_action_execution_delay(task, action, itemized=itemized)
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
            "parent": {"execution_id": execution_id, "user": self.user, "pack": self.registry.db.pack},
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
            _, action_params = self.registry.db.parameters(ref, action["input"] or {}, action_ctx)
        except Exception as e:  # st2 fails the workflow on any error requesting the action
            raise _RequestFailed(e)

        subrun = None
        if kind == "workflow":
            subrun = self.run(target, action_params, depth + 1, parent_context=action_ctx)
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
            trigger = params.get("trigger") or params.get("trigger_name")
            run.injected_triggers.append({"trigger": trigger, "payload": payload, "trace_tag": params.get("trace_tag")})
            body = {"trigger": trigger, "payload": payload}
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


def _has_expression(value):
    return isinstance(value, str) and ("<%" in value or "{{" in value or "{%" in value)


def _static_action_refs(spec):
    """Action refs written literally in the tasks (``action: pack.name k=v`` included)."""
    refs = []
    for _, task in spec.tasks.items():
        ref = getattr(task, "action", None)
        if isinstance(ref, str) and ref.strip() and not _has_expression(ref):
            refs.append(ref.split()[0])
    return refs


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
    restart=None,
    action_ref=None,
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
    the action metadata st2 would have registered, so parameters are rendered,
    checked, cast and defaulted by st2's code, and ``pack.<name>`` refs whose
    metadata is an Orquesta workflow run as subworkflows.  ``config``: the pack
    config (``config_context``, and python actions' ``self.config``).
    ``max_steps``: action executions allowed per workflow before
    ``WorkflowStepLimitExceeded``.  ``execution_context``: the st2 execution
    context seen as ``ctx().parent`` (e.g. a rule's trace context);
    ``st2_context`` overrides keys of ``ctx().st2``.  ``restart(run, conductor)
    -> bool``: asked between rounds; True simulates an engine restart there (see
    ``WorkflowRun.restarts``). ``action_ref`` (with ``action_meta_dir``): run that
    action's workflow (its entry point; ``workflow_path`` is then ignored) with
    the parameters st2 renders from its metadata (defaults, immutable ones), as for
    an action that shares its workflow file with another.

    Raises UnknownActionError, WorkflowInspectionError, WorkflowDefinitionError
    or ActionParameterError where st2 would refuse to start the execution.
    """
    registry = _Registry(actions, subworkflows, _St2Database(action_meta_dir, pack, config), action_service)
    driver = _Driver(registry, max_steps, user, execution_context, st2_context, restart)
    return driver.run(workflow_path, copy.deepcopy(inputs or {}), 0, top_level=True, action_ref=action_ref)
