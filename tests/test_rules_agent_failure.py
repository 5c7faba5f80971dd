"""Failures in, recoveries out: synthralos.agent_failure_recovery matched by st2's own RuleFilter on
trigger-instance fixtures, its parameters rendered with st2's Jinja environment and casts, the
webhook path (accept_agent_failure through the real Orquesta conductor), and the recovery policies
validated the way st2's PolicyAPI does against the policy types st2 registers."""

import synthralos_tests  # noqa: F401

import copy
import os
import unittest

import jsonschema
import yaml

from synthralos_tests.base import StoreBackendMixin, load_fixture
from synthralos_tests.orquesta_runner import ACTIONS_DIR, python_action, run_workflow, skip_unless_orquesta

from normalize_agent_failure import NormalizeAgentFailureAction
from synthralos_lib.state.config import PACK_ROOT

from st2common.models.db.rule import ActionExecutionSpecDB, RuleDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.util import casts as st2_casts
from st2common.util import jinja as st2_jinja
from st2common.util import schema as st2_schema
from st2common.models.api.base import BaseAPI
from st2common.models.api.policy import PolicyAPI
from st2common.models.api.rule import RuleAPI
from st2reactor.rules.filter import RuleFilter
import st2common.policies.meta as st2_policy_meta
TRIGGER = "synthralos.agent_failure"
FIXTURES = load_fixture("trigger_instances", "agent_failure.json")
HANDLED = ["timeout", "error", "invalid_output", "tool_failure", "llm_error", "unknown_status"]


def load_yaml(*parts):
    with open(os.path.join(PACK_ROOT, *parts)) as handle:
        return yaml.safe_load(handle)


def payload_schema():
    """triggers/agent_failure.yaml's payload_schema in Draft 4 (st2 puts `required: true` on properties)."""
    schema = copy.deepcopy(load_yaml("triggers", "agent_failure.yaml")["payload_schema"])
    schema["required"] = sorted(k for k, v in schema["properties"].items() if v.pop("required", False))
    return schema


def rule_db(meta):
    return RuleDB(pack=meta["pack"], name=meta["name"], ref="%s.%s" % (meta["pack"], meta["name"]),
                  enabled=True, trigger=meta["trigger"]["type"], criteria=meta.get("criteria") or {},
                  action=ActionExecutionSpecDB(ref=meta["action"]["ref"], parameters=meta["action"]["parameters"]))


def matches(meta, payload):
    instance = TriggerInstanceDB(trigger=meta["trigger"]["type"], payload=payload, status="processing")
    return RuleFilter(instance, {"name": meta["trigger"]["type"].split(".", 1)[1], "pack": "synthralos"},
                      rule_db(meta)).filter()


def render_parameters(meta, payload, action_meta):
    """What st2's rule enforcer hands the action: Jinja (st2's environment, StrictUndefined) on the
    trigger payload, then each value cast to the action parameter's type."""
    env = st2_jinja.get_jinja_environment(allow_undefined=False)
    params = {}
    for name, value in meta["action"]["parameters"].items():
        rendered = env.from_string(value).render({"trigger": payload}) if isinstance(value, str) else value
        params[name] = st2_casts.get_cast(action_meta["parameters"][name]["type"])(rendered)
    return params


class AgentFailureRecoveryRuleTest(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.rule = load_yaml("rules", "agent_failure_recovery.yaml")
        self.recovery = load_yaml("actions", "agent_recovery.yaml")

    def test_rule_is_valid_for_st2(self):
        RuleAPI(**self.rule).validate()
        self.assertEqual(self.rule["trigger"], {"type": TRIGGER})
        self.assertEqual(self.rule["action"]["ref"], "synthralos.agent_recovery")
        self.assertTrue(self.rule["enabled"])

    def test_fixtures_are_real_trigger_payloads(self):
        for name, payload in FIXTURES["must_match"].items():
            jsonschema.Draft4Validator(payload_schema()).validate(payload)

    def test_failures_that_must_match(self):
        self.assertEqual({name: matches(self.rule, p) for name, p in FIXTURES["must_match"].items()},
                         {name: True for name in FIXTURES["must_match"]})

    def test_failures_that_must_not_match(self):
        self.assertEqual({name: matches(self.rule, p) for name, p in FIXTURES["must_not_match"].items()},
                         {name: False for name in FIXTURES["must_not_match"]})

    def test_handled_failure_types_are_the_detection_types(self):
        from synthralos_lib.healing.detection import FAILURE_TYPES

        self.assertEqual(self.rule["criteria"]["trigger.failure_type"], {"type": "inside", "pattern": HANDLED})
        self.assertEqual(sorted(HANDLED), sorted(FAILURE_TYPES))

    def test_documented_allow_and_deny_patterns(self):
        """docs/agent_failure_stream.md: an allow list and a deny list are regexes on agent_id."""
        base = FIXTURES["must_match"]["stream_timeout"]
        cases = {
            r"^(support-bot|research-bot)$": {"support-bot": True, "research-bot": True, "billing-bot": False,
                                              "support-bot-2": False},
            r"^(?!(canary-bot|load-test-.*)$).+$": {"support-bot": True, "canary-bot": False, "load-test-7": False,
                                                    "canary-bot-2": True},
        }
        with open(os.path.join(PACK_ROOT, "docs", "agent_failure_stream.md")) as handle:
            doc = handle.read()
        for pattern, expected in cases.items():
            self.assertIn("pattern: '%s'" % pattern, doc)
            rule = copy.deepcopy(self.rule)
            rule["criteria"]["trigger.agent_id"]["pattern"] = pattern
            self.assertEqual({agent: matches(rule, dict(base, agent_id=agent)) for agent in expected}, expected)

    def test_parameters_from_a_stream_failure_are_the_execution_itself(self):
        payload = FIXTURES["must_match"]["stream_timeout"]
        params = render_parameters(self.rule, payload, self.recovery)
        self.assertEqual(params, {"agent_id": "support-bot", "execution_id": "exec-1", "result": payload["raw"],
                                  "detection": {"failure_type": "timeout", "evidence": payload["evidence"]},
                                  "trace_context": {"trace_id": "4bf92f3577b34da6"}})
        jsonschema.Draft4Validator({"type": "object"}).validate(params["result"])

    def test_parameters_without_an_execution_record_fall_back_to_the_trigger_fields(self):
        bullmq = FIXTURES["must_match"]["bullmq_failed_job"]
        cut = dict(FIXTURES["must_match"]["webhook_error"], raw={"truncated": True, "excerpt": "{\"status\": \"fa"})
        for payload in (bullmq, cut):
            params = render_parameters(self.rule, payload, self.recovery)
            self.assertEqual(params["result"], {"status": "failed", "error": payload["error"],
                                                "output": payload["output_excerpt"], "duration_ms": payload["duration_ms"]})


class PolicyTest(unittest.TestCase):
    """Each policy validated as PolicyAPI.validate does, with the policy type read from the
    files st2's registrar loads (st2common/policies/meta), and aimed at the right action/attribute."""

    def policy_types(self):
        types = {}
        for directory in st2_policy_meta.__path__:
            for name in os.listdir(directory):
                if name.endswith(".yaml"):
                    with open(os.path.join(directory, name)) as handle:
                        meta = yaml.safe_load(handle)
                    types["%s.%s" % (meta["resource_type"], meta["name"])] = meta
        return types

    def validated(self, name):
        meta = load_yaml("policies", name + ".yaml")
        BaseAPI.validate(PolicyAPI(**meta))  # PolicyAPI.validate's first half; its second needs the DB:
        policy_type = self.policy_types()[meta["policy_type"]]
        schema = st2_schema.get_schema_for_resource_parameters(parameters_schema=policy_type["parameters"])
        parameters = st2_schema.validate(meta.get("parameters") or {}, schema, st2_schema.get_validator(),
                                         use_default=True, allow_default_none=True)
        return meta, parameters

    def test_one_recovery_per_agent(self):
        meta, parameters = self.validated("agent_recovery_per_agent")
        self.assertEqual((meta["resource_ref"], meta["policy_type"]), ("synthralos.agent_recovery", "action.concurrency.attr"))
        self.assertEqual(parameters, {"action": "delay", "threshold": 1, "attributes": ["agent_id"]})
        # concurrency_by_attr filters executions on parameters.<attribute>: a required parameter.
        recovery = load_yaml("actions", "agent_recovery.yaml")["parameters"]
        self.assertTrue(recovery["agent_id"]["required"])
        rule_params = load_yaml("rules", "agent_failure_recovery.yaml")["action"]["parameters"]
        self.assertEqual(rule_params["agent_id"], "{{ trigger.agent_id }}")

    def test_global_recovery_cap(self):
        meta, parameters = self.validated("agent_recovery_global")
        self.assertEqual((meta["resource_ref"], meta["policy_type"]), ("synthralos.agent_recovery", "action.concurrency"))
        self.assertEqual(parameters, {"action": "delay", "threshold": 10})

    def test_every_policy_validates_and_names_a_pack_action(self):
        import glob

        actions = {load_yaml("actions", os.path.basename(p))["name"]
                   for p in glob.glob(os.path.join(PACK_ROOT, "actions", "*.yaml"))}
        checked = {}
        for path in sorted(glob.glob(os.path.join(PACK_ROOT, "policies", "*.yaml"))):
            meta, parameters = self.validated(os.path.basename(path)[:-5])
            self.assertIn(meta["resource_ref"].split(".", 1)[1], actions, path)
            checked[meta["resource_ref"]] = checked.get(meta["resource_ref"], 0) + 1
        self.assertEqual(checked["synthralos.agent_recovery"], 2)

    def test_a_wrong_policy_is_refused(self):
        policy_type = self.policy_types()["action.concurrency.attr"]
        schema = st2_schema.get_schema_for_resource_parameters(parameters_schema=policy_type["parameters"])
        with self.assertRaises(jsonschema.ValidationError):
            st2_schema.validate({"threshold": "one", "attributes": ["agent_id"]}, schema, st2_schema.get_validator(),
                                use_default=True, allow_default_none=True)


@skip_unless_orquesta
class WebhookPathTest(StoreBackendMixin, unittest.TestCase):
    """rules/agent_failure_webhook.yaml -> accept_agent_failure -> synthralos.agent_failure."""

    maxDiff = None

    def accept(self, body):
        rule = load_yaml("rules", "agent_failure_webhook.yaml")
        self.assertEqual(rule["trigger"], {"type": "core.st2.webhook", "parameters": {"url": "synthralos_agent_failure"}})
        self.assertEqual(rule["action"]["ref"], "synthralos.accept_agent_failure")
        import jinja2

        env = jinja2.Environment(undefined=jinja2.StrictUndefined)
        params = {k: env.from_string(v).render({"trigger": {"body": body, "headers": {}}})
                  for k, v in rule["action"]["parameters"].items()}
        action = python_action(NormalizeAgentFailureAction, self.make_config(agent_api={"api_key": "k-3x9"}),
                               self.action_service)
        return run_workflow("accept_agent_failure", params, actions={"synthralos.normalize_agent_failure": action},
                            action_meta_dir=ACTIONS_DIR)

    def test_a_posted_failure_becomes_an_agent_failure_trigger(self):
        result = {"status": "failed", "error": "upstream said k-3x9 is wrong", "duration_ms": 1200, "provider": "openai"}
        run = self.accept({"agent_id": "support-bot", "execution_id": "exec-42", "result": result,
                           "trace_context": {"trace_id": "abc"}})
        self.assertEqual(run.status, "succeeded", run.errors)
        self.assertEqual(run.task_sequence, ["accept", "dispatch"])
        self.assertEqual(len(run.injected_triggers), 1)
        injected = run.injected_triggers[0]
        self.assertEqual((injected["trigger"], injected["trace_tag"]), (TRIGGER, "abc"))
        payload = injected["payload"]
        jsonschema.Draft4Validator(payload_schema()).validate(payload)
        scrubbed = dict(result, error="upstream said *** is wrong")
        self.assertEqual({k: v for k, v in payload.items() if k != "detected_at"}, {
            "agent_id": "support-bot", "execution_id": "exec-42", "failure_type": "error",
            "error": "upstream said *** is wrong", "output_excerpt": None, "duration_ms": 1200,
            "evidence": {"summary": "error: status is 'failed'", "failed_tools": [], "checks": [
                {"check": "error", "field": "status", "detail": "status is 'failed'"},
                {"check": "error", "field": "error", "detail": "upstream said *** is wrong"}]},
            "trace_context": {"trace_id": "abc"}, "source": "webhook", "source_id": run.st2_context["st2"]["action_execution_id"],
            "raw": scrubbed,
        })
        self.assertEqual(run.output["outcome"], "dispatched")
        # and the recovery rule takes it
        self.assertTrue(matches(load_yaml("rules", "agent_failure_recovery.yaml"), payload))
        params = render_parameters(load_yaml("rules", "agent_failure_recovery.yaml"), payload,
                                   load_yaml("actions", "agent_recovery.yaml"))
        self.assertEqual(params, {"agent_id": "support-bot", "execution_id": "exec-42", "result": scrubbed,
                                  "detection": {"failure_type": "error", "evidence": payload["evidence"]},
                                  "trace_context": {"trace_id": "abc"}})

    def test_a_post_of_a_successful_execution_dispatches_nothing(self):
        run = self.accept({"agent_id": "a", "execution_id": "e", "result": {"status": "succeeded", "output": "fine"}})
        self.assertEqual((run.status, run.output["outcome"], run.injected_triggers), ("succeeded", "no_failure", []))
        self.assertEqual(run.output["summary"], "no failure: status 'succeeded'")

    def test_malformed_posts_fail_with_the_reason_and_dispatch_nothing(self):
        cases = [
            ({"execution_id": "e", "result": {"status": "failed"}}, "the body has no agent_id"),
            ({"agent_id": "a", "result": {"status": "failed"}}, "the body has no execution_id"),
            ({"agent_id": "a", "execution_id": "e"}, "the body has no result"),
            ({"agent_id": "a", "execution_id": "e", "result": "failed"}, "result must be a JSON object, got str"),
            ({"agent_id": "", "execution_id": "e", "result": {"status": "failed"}}, "agent_id must not be empty"),
            ({"agent_id": ["a"], "execution_id": "e", "result": {"status": "failed"}}, "agent_id must be a string"),
            ({"agent_id": "a", "execution_id": "e", "result": {"status": "failed"}, "trace_context": "abc"},
             "trace_context must be a JSON object, got str"),
        ]
        for body, reason in cases:
            run = self.accept(body)
            self.assertEqual(run.status, "failed", body)
            self.assertEqual(run.task_sequence, ["accept"], body)
            self.assertEqual(run.injected_triggers, [], body)
            self.assertEqual(run.task("accept").result["result"], {"malformed": True, "reason": reason})

    def test_hostile_posts_dispatch_only_what_st2_can_store(self):
        from synthralos_tests.st2_storage import st2_refuses

        # 100 levels (the pack cuts at 32): st2 reads a webhook body with orjson, which stops at
        # 127 levels in st2 3.8's orjson 3.5 and 255 in master's; deeper posts st2 itself cannot keep.
        deep = "x"
        for _ in range(100):
            deep = {"a": deep}
        run = self.accept({"agent_id": "a", "execution_id": "deep", "result": {
            "status": "failed", "duration_ms": 10 ** 30, "detail": deep, "n": -(10 ** 25)}})
        self.assertEqual(run.status, "succeeded", run.errors)
        payload = run.injected_triggers[0]["payload"]
        self.assertIsNone(st2_refuses(payload))
        # st2 renders the webhook body with orjson, which reads integers wider than 64 bits as floats;
        # such a duration is no duration (null), and raw keeps what st2 handed over.
        self.assertEqual((payload["duration_ms"], payload["raw"]["duration_ms"], payload["raw"]["n"]),
                         (None, 1e30, -1e25))
        self.assertIn("<nested deeper than 32 levels: cut>", str(payload["raw"]))
