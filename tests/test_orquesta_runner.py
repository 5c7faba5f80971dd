"""Tests of the Orquesta test driver (tests/synthralos_tests/orquesta_runner.py)
against the fixture workflows in tests/fixtures/workflows/.

unittest-style so nose (st2-run-pack-tests) runs them as well as pytest.
"""

import os
import shutil
import tempfile
import textwrap
import unittest

import synthralos_tests  # noqa: F401  (import paths, and st2 must import)

from synthralos_tests.orquesta_runner import (
    UnknownActionError,
    WorkflowInspectionError,
    WorkflowRunnerError,
    WorkflowStepLimitExceeded,
    ActionParameterError,
    inspect_workflow,
    outcomes,
    python_action,
    python_failure,
    python_result,
    run_workflow,
)

from orquesta import exceptions as orquesta_exc
from st2common.runners.base_action import Action


FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "workflows")
META_DIR = os.path.join(FIXTURES, "actions")


def fixture(name):
    return os.path.join(FIXTURES, name)


class ClassifyAction(Action):
    def run(self, text, threshold):
        verdict = "long" if len(text) > 3 else "short"
        return {"verdict": verdict, "threshold": threshold, "service": self.action_service is not None}


class DoubleAction(Action):
    def run(self, n, factor, note):
        if n == 13:
            raise RuntimeError("unlucky number")
        if n < 0:
            return False, "negative: %d" % n
        return n * factor


class ConfigAction(Action):
    def run(self, key):
        return True, (self.config.get(key), ("tuple", "becomes", "list"))


class BadStatusAction(Action):
    def run(self):
        return "ok", 1


class FakeActionService(object):
    """Stands in for st2's action service; the driver only hands it over."""


class PythonActionConversionTest(unittest.TestCase):
    def test_plain_value_succeeds_in_st2_shape(self):
        status, result = python_action(DoubleAction, config={})(n=2, factor=3, note=None)
        self.assertEqual(status, "succeeded")
        self.assertEqual(result, {"result": 6, "exit_code": 0, "stdout": "", "stderr": ""})

    def test_false_tuple_fails_with_value(self):
        status, result = python_action(DoubleAction)(n=-1, factor=2, note=None)
        self.assertEqual(status, "failed")
        self.assertEqual(result, {"result": "negative: -1", "exit_code": 0, "stdout": "", "stderr": ""})

    def test_true_tuple_config_and_json_roundtrip(self):
        status, result = python_action(ConfigAction, config={"k": "v"})(key="k")
        self.assertEqual(status, "succeeded")
        self.assertEqual(result["result"], ["v", ["tuple", "becomes", "list"]])

    def test_exception_fails_like_the_python_runner(self):
        status, result = python_action(DoubleAction)(n=13, factor=2, note=None)
        self.assertEqual(status, "failed")
        self.assertEqual(result["exit_code"], 1)
        self.assertEqual(result["result"], "None")
        self.assertIn("RuntimeError: unlucky number", result["stderr"])

    def test_non_boolean_status_fails(self):
        status, result = python_action(BadStatusAction)()
        self.assertEqual(status, "failed")
        self.assertIn("must either be True or False", result["error"])

    def test_action_service_and_calls_are_recorded(self):
        service = FakeActionService()
        wrapped = python_action(ClassifyAction, config={}, action_service=service)
        status, result = wrapped(text="hello", threshold=0.5)
        self.assertTrue(result["result"]["service"])
        self.assertEqual(wrapped.calls, [{"text": "hello", "threshold": 0.5}])

    def test_helpers(self):
        self.assertEqual(
            python_result((1, 2)),
            ("succeeded", {"result": [1, 2], "exit_code": 0, "stdout": "", "stderr": ""}),
        )
        self.assertEqual(python_failure("x")[0], "failed")
        fake = outcomes(python_failure("a"), python_result("b"))
        self.assertEqual([fake(i=i)[1]["result"] for i in range(3)], ["a", "b", "b"])
        self.assertEqual(fake.calls, [{"i": 0}, {"i": 1}, {"i": 2}])


class LinearWorkflowTest(unittest.TestCase):
    def run_linear(self, text="hello", **kwargs):
        actions = {"fixture.classify": ClassifyAction}
        actions.update(kwargs.pop("actions", {}))
        return run_workflow(
            fixture("linear.yaml"),
            {"name": "Ada", "text": text},
            actions=actions,
            action_meta_dir=META_DIR,
            action_service=FakeActionService(),
            **kwargs
        )

    def test_sequence_published_context_and_output(self):
        run = self.run_linear()
        self.assertEqual(run.status, "succeeded", run.errors)
        self.assertEqual(run.task_sequence, ["greet", "classify", "announce"])
        self.assertEqual(run.output, {"greeting": "Hello Ada", "verdict": "long"})
        self.assertEqual(run.task("greet").published, {"greeting": "Hello Ada"})
        self.assertEqual(run.context["verdict"], "long")
        self.assertEqual(run.inputs_for("classify"), [{"text": "hello"}])
        self.assertEqual(run.errors, [])
        self.assertEqual(run.result, {"output": {"greeting": "Hello Ada", "verdict": "long"}})

    def test_builtin_results_have_st2_shapes(self):
        run = self.run_linear()
        self.assertEqual(
            run.task("greet").result,
            {"failed": False, "succeeded": True, "return_code": 0, "stdout": "Hello Ada", "stderr": ""},
        )
        classify = run.task("classify").result
        self.assertEqual(set(classify), {"result", "exit_code", "stdout", "stderr"})
        self.assertTrue(classify["result"]["service"])

    def test_injected_trigger_is_recorded(self):
        run = self.run_linear()
        self.assertEqual(
            run.injected_triggers,
            [
                {
                    "trigger": "fixture.classified",
                    "payload": {"name": "Ada", "verdict": "long"},
                    "trace_tag": "fixture-Ada",
                }
            ],
        )

    def test_metadata_default_is_filled(self):
        run = self.run_linear()
        self.assertEqual(run.parameters_for("classify"), [{"text": "hello", "threshold": 0.5}])
        self.assertEqual(run.task("classify").result["result"]["threshold"], 0.5)

    def test_failure_route_and_do_fail(self):
        run = self.run_linear(actions={"fixture.classify": lambda **kw: python_failure("model down")})
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["greet", "classify"])
        self.assertEqual(run.state_sequence, ["greet", "classify", "fail"])
        self.assertEqual(run.injected_triggers, [])
        self.assertEqual(run.errors[0]["task_id"], "classify")
        self.assertEqual(run.result["errors"], run.errors)

    def test_st2_context_is_visible(self):
        run = self.run_linear(
            st2_context={"action_execution_id": "abc123"}, execution_context={"user": "ops"}
        )
        self.assertEqual(run.context["st2"]["action_execution_id"], "abc123")
        self.assertEqual(run.context["st2"]["user"], "ops")
        self.assertEqual(run.context["parent"], {"user": "ops"})


class RetryLoopTest(unittest.TestCase):
    def test_delay_rerendered_each_iteration_until_success(self):
        flaky = outcomes(python_failure("e1"), python_failure("e2"), python_result(42))
        run = run_workflow(fixture("retry_loop.yaml"), {}, actions={"fixture.flaky": flaky})
        self.assertEqual(run.status, "succeeded", run.errors)
        self.assertEqual(run.task_sequence, ["start", "call", "call", "call", "done"])
        self.assertEqual(run.delays_for("call"), [1, 2, 4])
        self.assertEqual(run.delays_for("start"), [None])
        self.assertEqual(run.inputs_for("call"), [{"attempt": 0}, {"attempt": 1}, {"attempt": 2}])
        self.assertEqual([c["attempt"] for c in flaky.calls], [0, 1, 2])
        self.assertEqual(run.output, {"answer": 42, "attempts": 3, "last_error": "e2"})
        self.assertEqual([e["delay"] for e in run.log if e["task"] == "call"], [1, 2, 4])

    def test_exhaustion_injects_trigger_and_fails(self):
        run = run_workflow(
            fixture("retry_loop.yaml"),
            {"max_attempts": 4, "initial_delay": 3},
            actions={"fixture.flaky": outcomes(python_failure("down"))},
        )
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["start"] + ["call"] * 4 + ["give_up"])
        self.assertEqual(run.state_sequence[-1], "fail")
        self.assertEqual(run.delays_for("call"), [3, 6, 12, 24])
        self.assertEqual(
            run.injected_triggers,
            [
                {
                    "trigger": "fixture.exhausted",
                    "payload": {"attempts": 4, "error": "down"},
                    "trace_tag": None,
                }
            ],
        )
        # st2 renders the output of failed workflows too.
        self.assertEqual(run.output, {"answer": None, "attempts": 4, "last_error": "down"})

    def test_executions_and_engine_restarts(self):
        restarted_at = []

        def restart(run, conductor):
            restarted_at.append(len(run.tasks))
            return len(run.tasks) == 2  # after start and the first call: a retry is pending

        run = run_workflow(fixture("retry_loop.yaml"), {"max_attempts": 2, "initial_delay": 5},
                           actions={"fixture.flaky": outcomes(python_failure("e0"), python_result(7))},
                           restart=restart)
        self.assertEqual(run.status, "succeeded", run.errors)
        self.assertEqual(run.restarts, [{"next_tasks": [("call", 10)]}])  # re-rendered from the restored ctx
        self.assertEqual(run.delays_for("call"), [5, 10])
        self.assertEqual((run.executions, run.output["answer"]), (4, 7))  # start, call x2, done

    def test_endless_loop_hits_max_steps(self):
        with self.assertRaises(WorkflowStepLimitExceeded):
            run_workflow(
                fixture("retry_loop.yaml"),
                {"max_attempts": 10 ** 6},
                actions={"fixture.flaky": outcomes(python_failure("down"))},
                max_steps=20,
            )


class SubworkflowTest(unittest.TestCase):
    def run_parent(self, values):
        return run_workflow(
            fixture("parent.yaml"),
            {"values": values},
            actions={"fixture.double": DoubleAction},
            action_meta_dir=META_DIR,
        )

    def test_with_items_over_subworkflows(self):
        run = self.run_parent([1, 2, 3])
        self.assertEqual(run.status, "succeeded", run.errors)
        self.assertEqual(run.task_sequence, ["fan_out", "summarize"])
        self.assertEqual(run.output, {"doubled": [2, 4, 6], "child_errors": None})
        fan_out = run.task("fan_out")
        self.assertEqual(fan_out.result, [{"output": {"doubled": n}} for n in (2, 4, 6)])
        self.assertEqual(run.inputs_for("fan_out"), [{"value": 1}, {"value": 2}, {"value": 3}])
        child = fan_out.items[0]["subrun"]
        self.assertEqual(child.task_sequence, ["double"])
        # DoubleAction got its metadata default factor=2 and note=None.
        self.assertEqual(child.parameters_for("double"), [{"n": 1, "factor": 2, "note": None}])
        self.assertEqual(child.context["parent"]["orquesta"]["task_name"], "fan_out")
        self.assertEqual(run.task("summarize").result["stdout"], "3 values doubled")

    def test_declared_parameter_without_default_overrides_workflow_default(self):
        # fixture.child declares factor without a default: st2 passes null, so the
        # workflow's own "factor: 10" input default never applies.
        child = self.run_parent([5]).task("fan_out").items[0]["subrun"]
        self.assertEqual(child.parameters, {"value": 5, "factor": None})
        self.assertIsNone(child.context["factor"])

    def test_child_failure_takes_failure_route(self):
        run = self.run_parent([1, -1])
        self.assertEqual(run.status, "failed")
        failed = run.task("fan_out").items[1]
        self.assertEqual(failed["status"], "failed")
        self.assertEqual(failed["result"]["output"], {"doubled": None})
        self.assertEqual(failed["result"]["errors"][0]["result"]["result"], "negative: -1")
        self.assertEqual(len(run.output["child_errors"]), 1)

    def test_exception_in_python_action_reaches_parent(self):
        run = self.run_parent([13])
        self.assertEqual(run.status, "failed")
        error = run.task("fan_out").items[0]["result"]["errors"][0]
        self.assertEqual(error["result"]["exit_code"], 1)
        self.assertIn("unlucky number", error["result"]["stderr"])

    def test_subworkflow_mapping_without_metadata(self):
        run = run_workflow(
            fixture("parent.yaml"),
            {"values": [4]},
            actions={"fixture.double": lambda **kw: python_result(kw["n"] * 2)},
            subworkflows={"fixture.child": fixture("child.yaml")},
        )
        self.assertEqual(run.output["doubled"], [8])
        self.assertEqual(run.task("fan_out").items[0]["subrun"].context["factor"], 10)


def rehearse(run):
    """Replay ``run`` in Orquesta's own test loop (``orquesta.rehearsing``): the results the
    driver's actions returned become mock action executions, and Orquesta must take the same
    route to the same status and output."""
    from orquesta import rehearsing

    mocks = []
    for record in run.tasks:
        if record.items is None:
            mocks.append({"task_id": record.name, "status": record.status, "result": record.result})
        else:
            mocks.extend({"task_id": record.name, "item_id": index, "status": item["status"], "result": item["result"]}
                         for index, item in enumerate(record.items))
    rehearsal = rehearsing.load_test_spec({
        "workflow": run.workflow_path,
        "inputs": run.parameters,
        "mock_action_executions": mocks,
        "expected_task_sequence": run.state_sequence,
        "expected_workflow_status": run.status,
        "expected_output": run.output,
    })
    rehearsal.assert_conducting_sequence()


class OrquestaRehearsalAgreementTest(unittest.TestCase):
    """The driver routes as Orquesta's own rehearsal does, given the same action results."""

    def test_retry_loop_success_and_exhaustion(self):
        flaky = outcomes(python_failure("e1"), python_failure("e2"), python_result(42))
        rehearse(run_workflow(fixture("retry_loop.yaml"), {}, actions={"fixture.flaky": flaky}))
        rehearse(run_workflow(fixture("retry_loop.yaml"), {"max_attempts": 2},
                              actions={"fixture.flaky": outcomes(python_failure("down"))}))

    def test_linear_and_failure_route(self):
        kwargs = {"action_meta_dir": META_DIR, "action_service": FakeActionService()}
        rehearse(run_workflow(fixture("linear.yaml"), {"name": "Ada", "text": "hello"},
                              actions={"fixture.classify": ClassifyAction}, **kwargs))
        rehearse(run_workflow(fixture("linear.yaml"), {"name": "Ada", "text": "hello"},
                              actions={"fixture.classify": lambda **kw: python_failure("model down")}, **kwargs))

    def test_with_items_over_subworkflows(self):
        for values in ([1, 2, 3], [1, -1]):
            rehearse(run_workflow(fixture("parent.yaml"), {"values": values}, actions={"fixture.double": DoubleAction},
                                  action_meta_dir=META_DIR))

    def test_a_different_route_is_told_apart(self):
        run = run_workflow(fixture("retry_loop.yaml"), {}, actions={"fixture.flaky": outcomes(python_result(1))})
        run.tasks[1].status = "failed"  # Orquesta, given a failure there, retries instead
        with self.assertRaises(orquesta_exc.WorkflowRehearsalError) as caught:
            rehearse(run)
        self.assertIn("task sequence", str(caught.exception))


class _TempWorkflowMixin(object):
    def setUp(self):
        super(_TempWorkflowMixin, self).setUp()
        self.tmp = tempfile.mkdtemp(prefix="orquesta-runner-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as handle:
            handle.write(textwrap.dedent(text))
        return path


class St2ParameterHandlingTest(_TempWorkflowMixin, unittest.TestCase):
    def double_wf(self, n_expr):
        return self.write(
            "wf.yaml",
            """
            version: 1.0
            input:
              - value
            tasks:
              double:
                action: fixture.double
                input:
                  n: %s
                next:
                  - when: <%% failed() %%>
                    do: cleanup
              cleanup:
                action: core.noop
            """
            % n_expr,
        )

    def double_kwargs(self):
        return {"actions": {"fixture.double": DoubleAction}, "action_meta_dir": META_DIR}

    def run_double(self, value, n_expr="<% ctx(value) %>"):
        return run_workflow(
            self.double_wf(n_expr),
            {"value": value},
            actions={"fixture.double": DoubleAction},
            action_meta_dir=META_DIR,
        )

    def test_string_is_cast_to_the_declared_type(self):
        run = self.run_double("21")
        self.assertEqual(run.status, "succeeded", run.errors)
        self.assertEqual(run.parameters_for("double"), [{"n": 21, "factor": 2, "note": None}])

    def test_cast_failure_fails_the_workflow_without_running_transitions(self):
        run = self.run_double("abc")
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["double"])  # no cleanup: st2 fails the workflow
        self.assertIn("ValueError", run.errors[-1]["message"])
        self.assertEqual(run.errors[-1]["task_id"], "double")

    def test_wrong_types_fail_the_request(self):
        run = self.run_double([1, 2])  # int([1, 2]) in st2's cast
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["double"])
        self.assertTrue(run.task("double").error.startswith("TypeError"), run.task("double").error)
        path = self.write(
            "payload.yaml",
            """
            version: 1.0
            tasks:
              announce:
                action: core.inject_trigger
                input:
                  trigger: fixture.x
                  payload: <% list(1, 2) %>
            """,
        )
        run = run_workflow(path)
        self.assertEqual(run.status, "failed")
        self.assertIn("is not of type 'object'", run.errors[-1]["message"])
        self.assertTrue(run.errors[-1]["message"].startswith("ValidationError"))
        self.assertEqual(run.injected_triggers, [])

    def test_jinja_in_a_parameter_value_is_rendered_like_st2(self):
        # Text an action returned (say LLM output) reaches the next action's parameters;
        # st2 renders Jinja in parameter values, so "{{ ... }}" in it is evaluated.
        path = self.write(
            "jinja.yaml",
            """
            version: 1.0
            vars:
              - text: null
            tasks:
              produce:
                action: fixture.produce
                next:
                  - when: <% succeeded() %>
                    publish:
                      - text: <% result().result %>
                    do: consume
              consume:
                action: fixture.classify
                input:
                  text: <% ctx(text) %>
            """,
        )

        def run_with(text):
            return run_workflow(
                path,
                actions={"fixture.produce": lambda: python_result(text), "fixture.classify": ClassifyAction},
                action_meta_dir=META_DIR,
            )

        run = run_with("{{ 40 + 2 }} apples")
        self.assertEqual(run.parameters_for("consume"), [{"text": "42 apples", "threshold": 0.5}])
        run = run_with("Dear {{ customer_name }},")
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, ["produce", "consume"])
        self.assertIn('Dependency unsatisfied in variable "customer_name"', run.errors[-1]["message"])
        run = run_with("not {{ jinja")  # a syntax error: st2 passes the text as it is
        self.assertEqual(run.parameters_for("consume")[0]["text"], "not {{ jinja")

    def test_unexpected_and_missing_inputs_fail_inspection(self):
        path = self.write(
            "bad_input.yaml",
            """
            version: 1.0
            tasks:
              double:
                action: fixture.double
                input:
                  number: 3
            """,
        )
        errors = inspect_workflow(path, action_meta_dir=META_DIR)
        messages = sorted(e["message"] for e in errors)
        self.assertEqual(
            messages,
            [
                'Action "fixture.double" has unexpected input "number".',
                'Action "fixture.double" is missing required input "n".',
            ],
        )
        with self.assertRaises(WorkflowInspectionError):
            run_workflow(path, actions={"fixture.double": DoubleAction}, action_meta_dir=META_DIR)

    def test_top_level_workflow_parameters_are_checked(self):
        with self.assertRaises(ActionParameterError):
            run_workflow(fixture("child.yaml"), {"factor": 2}, **self.double_kwargs())
        run = run_workflow(fixture("child.yaml"), {"value": "7"}, **self.double_kwargs())
        self.assertEqual(run.parameters, {"value": 7, "factor": None})
        self.assertEqual(run.output, {"doubled": 14})


class DriverGuardsTest(_TempWorkflowMixin, unittest.TestCase):
    def test_fixtures_pass_inspection(self):
        for name in ("linear.yaml", "retry_loop.yaml", "parent.yaml", "child.yaml"):
            self.assertEqual(inspect_workflow(fixture(name)), [], name)

    def test_inspection_reports_orquesta_errors_and_duplicate_keys(self):
        undefined = self.write(
            "undefined.yaml",
            """
            version: 1.0
            tasks:
              only:
                action: core.echo message=<% ctx(nowhere) %>
            """,
        )
        errors = inspect_workflow(undefined)
        self.assertEqual([e["type"] for e in errors], ["context"])
        self.assertIn("nowhere", errors[0]["message"])
        duplicate = self.write(
            "duplicate.yaml",
            """
            version: 1.0
            tasks:
              a:
                action: core.noop
              a:
                action: core.noop
            """,
        )
        errors = inspect_workflow(duplicate)
        self.assertEqual(len(errors), 1)
        self.assertIn("duplicate key", errors[0]["message"])

    def test_unknown_action_ref_raises_clearly(self):
        with self.assertRaises(UnknownActionError) as ctx:
            run_workflow(fixture("linear.yaml"), {"name": "a", "text": "b"})
        self.assertIn("fixture.classify", str(ctx.exception))

    def test_callable_must_return_status_and_result(self):
        with self.assertRaises(WorkflowRunnerError):
            run_workflow(
                fixture("linear.yaml"),
                {"name": "a", "text": "b"},
                actions={"fixture.classify": lambda **kw: 42},
            )

    def test_retry_spec_delay_is_recorded(self):
        path = self.write(
            "retry.yaml",
            """
            version: 1.0
            tasks:
              flaky:
                action: fixture.flaky
                retry:
                  count: 2
                  delay: 7
            """,
        )
        flaky = outcomes(python_failure("a"), python_failure("b"), python_result("ok"))
        run = run_workflow(path, actions={"fixture.flaky": flaky})
        self.assertEqual(run.status, "succeeded", run.errors)
        self.assertEqual(run.task_sequence, ["flaky", "flaky", "flaky"])
        self.assertEqual(run.delays_for("flaky"), [None, 7, 7])
        self.assertEqual([t.retry for t in run.tasks], [False, True, True])

    def test_non_integer_delay_fails_like_orquesta(self):
        path = self.write(
            "float_delay.yaml",
            """
            version: 1.0
            vars:
              - wait: 1.5
            tasks:
              wait_a_bit:
                delay: <% ctx(wait) %>
                action: core.noop
            """,
        )
        run = run_workflow(path)
        self.assertEqual(run.status, "failed")
        self.assertEqual(run.task_sequence, [])
        self.assertIn("not type of integer", run.errors[0]["message"])


if __name__ == "__main__":
    unittest.main()
