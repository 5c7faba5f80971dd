"""Issue 20: renamed action parameters, the old names accepted until the next release.

health_check's timeout_s -> probe_timeout_s; the LLM actions' and workflows' timeout_s ->
call_timeout_s; bullmq_add_job's name -> job_name. One helper resolves them
(`deprecated.renamed_parameter`, through `SynthralosAction.renamed`): the new name works, the old
one works with one warning line, both with different values are refused, and bullmq_add_job with
neither is refused. The metadata keeps the old name (not required, no default, "Deprecated: ...").
reroute_request has no workflow of its own: it runs llm_retry's, one_attempt_per_target immutable.
Through st2's python runner wrapper: tests/test_st2_python_runner_wrapper.py
(test_bullmq_add_job, test_renamed_timeouts_old_names)."""

import logging
import os
import unittest

import synthralos_tests  # noqa: F401

import yaml

from synthralos_tests.base import SynthralosActionTestCase
from synthralos_tests.llm_provider import ProviderServerMixin
from synthralos_tests.orquesta_runner import ACTIONS_DIR, ActionParameterError, run_workflow

from health_check import PROBE_TIMEOUT_S, HealthCheck
from llm_call import LLMCall
from llm_request import LLMRequest
from synthralos_lib.deprecated import RenamedParameterError, renamed_parameter
from synthralos_lib.state.config import PACK_ROOT

KEY = "sk-renamed-7777aaaa"
USER = [{"role": "user", "content": "hi"}]
# action -> (new name, old name)
RENAMES = {
    "health_check": ("probe_timeout_s", "timeout_s"),
    "llm_call": ("call_timeout_s", "timeout_s"),
    "llm_request": ("call_timeout_s", "timeout_s"),
    "llm_retry": ("call_timeout_s", "timeout_s"),
    "reroute_request": ("call_timeout_s", "timeout_s"),
    "bullmq_add_job": ("job_name", "name"),
}


def warning(old, new):
    return "[Deprecated] parameter %s is deprecated: use %s (%s is removed in the next release)" % (old, new, old)


def both(new, old):
    return ("%s and %s were both given, with different values: %s replaces %s (the old name is removed in the next "
            "release); give %s only" % (new, old, new, old, new))


def metadata(name):
    with open(os.path.join(PACK_ROOT, "actions", name + ".yaml")) as handle:
        return yaml.safe_load(handle)


class HelperTest(unittest.TestCase):
    def resolve(self, new_value, old_value, **kwargs):
        logger = logging.getLogger("synthralos_tests.renamed")
        with self.assertLogs(logger, level="DEBUG") as logs:
            logger.debug("start")
            value = renamed_parameter("new_p", new_value, "old_p", old_value, logger=logger, **kwargs)
        return value, [r.getMessage() for r in logs.records[1:]]

    def test_the_new_name_alone_or_neither(self):
        self.assertEqual(self.resolve(3, None), (3, []))
        self.assertEqual(self.resolve(None, None), (None, []))
        self.assertEqual(self.resolve(5, None, default=5), (5, []))

    def test_the_old_name_alone_is_used_with_one_warning(self):
        self.assertEqual(self.resolve(None, 2), (2, [warning("old_p", "new_p")]))
        # st2 filled in the new parameter's default for a caller of the old name.
        self.assertEqual(self.resolve(5, 2, default=5), (2, [warning("old_p", "new_p")]))
        self.assertEqual(self.resolve(2, 2), (2, [warning("old_p", "new_p")]))  # the same value: no conflict

    def test_both_with_different_values_are_refused(self):
        for new, old, kwargs in ((3, 2, {}), (3, 2, {"default": 5}), ("a", "b", {"required": True})):
            with self.assertRaises(RenamedParameterError) as caught:
                self.resolve(new, old, **kwargs)
            self.assertEqual(str(caught.exception), both("new_p", "old_p"))
            self.assertIsInstance(caught.exception, ValueError)

    def test_neither_when_required_is_refused(self):
        with self.assertRaises(RenamedParameterError) as caught:
            self.resolve(None, None, required=True)
        self.assertEqual(str(caught.exception), "new_p is required (old_p is its deprecated old name)")


class MetadataTest(unittest.TestCase):
    def test_the_old_name_stays_deprecated_the_new_one_carries_the_bounds(self):
        for action, (new, old) in sorted(RENAMES.items()):
            params = metadata(action)["parameters"]
            self.assertIn(new, params, action)
            self.assertEqual(params[old]["description"], "Deprecated: use %s (removed in the next release)." % new)
            self.assertNotIn("default", params[old], action)
            self.assertFalse(params[old].get("required", False), action)
            self.assertFalse(params[new].get("required", False), action)  # a caller of the old name passes st2
            self.assertEqual({k: v for k, v in params[old].items() if k != "description"},
                             {k: v for k, v in params[new].items() if k not in ("description", "default")}, action)
        # The action tells "st2 filled in the default" from a value given with the old name by this constant.
        self.assertEqual(metadata("health_check")["parameters"]["probe_timeout_s"]["default"], PROBE_TIMEOUT_S)

    def test_the_workflow_takes_both_names_and_passes_both_on(self):
        with open(os.path.join(PACK_ROOT, "actions", "workflows", "llm_retry.yaml")) as handle:
            spec = yaml.safe_load(handle)
        inputs = [list(item)[0] if isinstance(item, dict) else item for item in spec["input"]]
        self.assertIn("call_timeout_s", inputs)
        self.assertIn("timeout_s", inputs)
        for task in ("request", "resume"):
            self.assertEqual((spec["tasks"][task]["input"]["call_timeout_s"], spec["tasks"][task]["input"]["timeout_s"]),
                             ("<% ctx().call_timeout_s %>", "<% ctx().timeout_s %>"))


class HealthCheckRenameTest(SynthralosActionTestCase):
    action_cls = HealthCheck

    def run_logged(self, **params):
        action = self.action()
        with self.assertLogs(action.logger, level="INFO") as logs:
            result = action.run(include=["st2_datastore"], **params)
        return result, [r.getMessage() for r in logs.records]

    def test_new_old_and_both(self):
        report, logs = self.run_logged(probe_timeout_s=2)
        self.assertEqual(report["status"], "ok")
        self.assertNotIn(warning("timeout_s", "probe_timeout_s"), logs)
        # As st2 runs it for a caller of the old name: probe_timeout_s's default filled in.
        report, logs = self.run_logged(probe_timeout_s=5, timeout_s=2)
        self.assertEqual(report["status"], "ok")
        self.assertEqual(logs.count(warning("timeout_s", "probe_timeout_s")), 1)
        self.assertEqual(self.action().run(probe_timeout_s=3, timeout_s=2, include=["st2_datastore"]),
                         (False, {"error": both("probe_timeout_s", "timeout_s")}))
        self.assertEqual(self.action().run(timeout_s=float("nan"), include=["st2_datastore"]),
                         (False, {"error": "probe_timeout_s must be a finite number (not NaN or Infinity)"}))


class LLMRenameTest(ProviderServerMixin, SynthralosActionTestCase):
    action_cls = LLMRequest

    def setUp(self):
        super(LLMRenameTest, self).setUp()
        self.server.add_endpoint("oa", "openai", KEY)
        self.base_config = {"llm_targets": [self.server.target("oa")], "retry": {"max_attempts": 1}}

    def call(self, cls, **params):
        action = cls(config=self.make_config(), action_service=self.action_service)
        with self.assertLogs(action.logger, level="INFO") as logs:
            result = action.run(messages=USER, **params)
        return result, [r.getMessage() for r in logs.records]

    def test_llm_call_new_and_old_names_bound_the_call(self):
        for params, warned in (({"call_timeout_s": 0.2}, 0), ({"timeout_s": 0.2}, 1)):
            self.server.script("oa", [{"fault": "hang", "delay_s": 5}])
            outcome, logs = self.call(LLMCall, target="oa", **params)
            self.assertFalse(outcome["ok"], params)
            self.assertIn("timed out after 0.2s", outcome["error_message"])
            self.assertEqual(logs.count(warning("timeout_s", "call_timeout_s")), warned, logs)

    def test_llm_request_new_and_old_names_bound_each_call(self):
        for params, warned in (({"call_timeout_s": 0.2}, 0), ({"timeout_s": 0.2}, 1)):
            self.server.script("oa", [{"fault": "hang", "delay_s": 5}])
            result, logs = self.call(LLMRequest, **params)
            self.assertEqual(result["action"], "give_up", params)
            self.assertIn("timed out after 0.2s", result["attempts"][0]["error_message"])
            self.assertEqual(logs.count(warning("timeout_s", "call_timeout_s")), warned, logs)

    def test_both_names_with_different_values_are_refused_before_any_call(self):
        for cls, params in ((LLMCall, {"target": "oa"}), (LLMRequest, {})):
            action = cls(config=self.make_config(), action_service=self.action_service)
            with self.assertRaises(ValueError) as caught:
                action.run(messages=USER, call_timeout_s=1, timeout_s=2, **params)
            self.assertEqual(str(caught.exception), both("call_timeout_s", "timeout_s"))
        self.assertEqual(self.server.calls(), [])


class WorkflowRenameTest(ProviderServerMixin, SynthralosActionTestCase):
    action_cls = LLMRequest

    def setUp(self):
        super(WorkflowRenameTest, self).setUp()
        self.server.add_endpoint("oa", "openai", KEY)
        self.server.add_endpoint("an", "anthropic", "sk-ant-renamed-8888bbbb")
        self.base_config = {"llm_targets": [dict(self.server.target("oa"), priority=1),
                                            dict(self.server.target("an"), priority=2)],
                            "retry": {"max_attempts": 3}}

    def run_wf(self, name, **inputs):
        return run_workflow(name, dict({"messages": USER}, **inputs), actions={"synthralos.llm_request": LLMRequest},
                            config=self.make_config(), action_service=self.action_service,
                            action_meta_dir=ACTIONS_DIR, action_ref="synthralos." + name)

    def test_llm_retry_passes_either_name_on_and_refuses_both(self):
        for inputs in ({"call_timeout_s": 7}, {"timeout_s": 7}):
            run = self.run_wf("llm_retry", **inputs)
            self.assertEqual(run.status, "succeeded", run)
            [params] = run.parameters_for("request")
            self.assertEqual((params.get("call_timeout_s"), params.get("timeout_s")),
                             (inputs.get("call_timeout_s"), inputs.get("timeout_s")))
        run = self.run_wf("llm_retry", call_timeout_s=7, timeout_s=8)
        self.assertEqual(run.status, "failed")
        self.assertIn(both("call_timeout_s", "timeout_s"), run.task("request").result["stderr"])
        self.assertEqual(len(self.server.calls()), 2)  # the refused request called nobody


class RerouteSharesLLMRetryTest(ProviderServerMixin, SynthralosActionTestCase):
    action_cls = LLMRequest

    def setUp(self):
        super(RerouteSharesLLMRetryTest, self).setUp()
        self.server.add_endpoint("oa", "openai", KEY)
        self.server.add_endpoint("an", "anthropic", "sk-ant-renamed-8888bbbb")
        self.base_config = {"llm_targets": [dict(self.server.target("oa"), priority=1),
                                            dict(self.server.target("an"), priority=2)],
                            "retry": {"max_attempts": 3}}

    def test_no_workflow_file_of_its_own(self):
        meta = metadata("reroute_request")
        self.assertEqual(meta["entry_point"], "workflows/llm_retry.yaml")
        self.assertFalse(os.path.exists(os.path.join(PACK_ROOT, "actions", "workflows", "reroute_request.yaml")))
        self.assertEqual(meta["parameters"]["one_attempt_per_target"]["default"], True)
        self.assertIs(meta["parameters"]["one_attempt_per_target"]["immutable"], True)
        self.assertNotIn("policy", meta["parameters"])
        # Its other parameters are llm_retry's (minus policy), with the same schema.
        retry = metadata("llm_retry")["parameters"]
        for name, spec in meta["parameters"].items():
            if name not in ("one_attempt_per_target", "targets"):
                self.assertEqual(spec, retry[name], name)

    def run_reroute(self, **inputs):
        return run_workflow("llm_retry", dict({"messages": USER}, **inputs),
                            actions={"synthralos.llm_request": LLMRequest}, config=self.make_config(),
                            action_service=self.action_service, action_meta_dir=ACTIONS_DIR,
                            action_ref="synthralos.reroute_request")

    def test_runs_llm_retry_with_one_attempt_per_target(self):
        self.server.script("oa", ["unavailable"])  # llm_retry would try oa again (max_attempts 3)
        run = self.run_reroute()
        self.assertEqual(run.status, "succeeded", run)
        self.assertTrue(run.workflow_path.endswith(os.path.join("workflows", "llm_retry.yaml")), run.workflow_path)
        self.assertIs(run.parameters["one_attempt_per_target"], True)
        [params] = run.parameters_for("request")
        self.assertIs(params["one_attempt_per_target"], True)
        self.assertEqual([(a["target"], a["status"]) for a in run.output["attempts"]], [("oa", 503), ("an", 200)])
        self.assertEqual((run.output["served_by"], run.output["result"], run.output["attempt_count"]), ("an", "done", 2))

    def test_one_attempt_per_target_cannot_be_overridden(self):
        for value in (False, True):
            with self.assertRaises(ActionParameterError) as caught:
                self.run_reroute(one_attempt_per_target=value)
            self.assertIn("immutable", str(caught.exception))
        self.assertEqual(self.server.calls(), [])


if __name__ == "__main__":
    unittest.main()
