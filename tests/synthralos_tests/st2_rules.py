"""The pack's rules through st2's own rules code: load one, match it on a trigger payload
(st2reactor's RuleFilter), render its action parameters (st2's render_live_params), and
validate it as st2's rules registrar does, minus the database (``validate_rule``,
``check_rule``)."""

import copy
import os

import jsonschema
import yaml

from st2common.constants.triggers import INTERNAL_TRIGGER_TYPES, SYSTEM_TRIGGER_TYPES
from st2common.models.api.rule import RuleAPI
from st2common.models.db.rule import RuleDB
from st2common.models.db.trigger import TriggerInstanceDB
from st2common.util import param as st2_param
from st2common.util import schema as util_schema
from st2common.validators.api import reactor as reactor_validator
from st2reactor.rules.filter import RuleFilter

from synthralos_tests import PACK_ROOT
from synthralos_tests.st2_python_runner import PACK

# The rules that turn workflow completions into events (forward_event); agent_recovery forwards
# its own end events, so only the ends st2 decides reach a rule.
FORWARD_RULES = ("forward_workflow_executions", "forward_agent_failures", "forward_interrupted_recoveries",
                 "forward_interrupted_recovery_failures")


def load_rule(name):
    """rules/<name>.yaml, parsed."""
    with open(os.path.join(PACK_ROOT, "rules", name + ".yaml")) as handle:
        return yaml.safe_load(handle)


def matches(rule, payload):
    """Whether st2's rules engine matches `rule` on an actiontrigger `payload`."""
    rule_db = RuleDB(ref="synthralos." + rule["name"], name=rule["name"], pack="synthralos", enabled=True,
                     criteria=rule.get("criteria", {}), action=rule["action"], trigger=rule["trigger"]["type"])
    instance = TriggerInstanceDB(trigger=rule["trigger"]["type"], payload=payload)
    return RuleFilter(instance, {"name": "st2.generic.actiontrigger"}, rule_db).filter()


def render_rule_parameters(schema, rule, payload):
    """A rule's action parameters rendered from a trigger payload by st2's rules engine's own
    rendering and casts (by the action's parameter `schema`)."""
    return st2_param.render_live_params({}, schema, rule["action"]["parameters"],
                                        {"pack": "synthralos", "user": "stanley"}, {"trigger": payload})


def internal_trigger_type_refs():
    """The trigger types st2's services register themselves (triggers.register_internal_trigger_types)."""
    return {"%s.%s" % (t["pack"], t["name"]) for types in INTERNAL_TRIGGER_TYPES.values() for t in types}


def validate_rule(content, trigger_types=None):
    """RuleAPI.validate(), then RuleAPI.to_model's checks without creating the trigger in the DB.
    ``trigger_types``: the pack's registered TriggerTypeAPIs by ref (None: do not require a
    pack trigger type to be registered)."""
    api = RuleAPI(**dict(content, pack=content.get("pack") or PACK))
    api.validate()
    trigger_type = api.trigger["type"]
    parameters = api.trigger.get("parameters", {})
    if trigger_type in SYSTEM_TRIGGER_TYPES:
        reactor_validator.validate_trigger_parameters(trigger_type_ref=trigger_type, parameters=parameters)
    elif trigger_types is not None and trigger_type in trigger_types:
        # validate_trigger_parameters with the registered trigger type (from the DB in st2).
        schema = getattr(trigger_types[trigger_type], "parameters_schema", None)
        if schema:
            util_schema.validate(instance=parameters, schema=schema, cls=util_schema.CustomValidator,
                                 use_default=True, allow_default_none=True)
    elif trigger_types is not None and trigger_type not in internal_trigger_type_refs():
        raise ValueError("trigger type %s is neither st2's nor one of this pack's" % trigger_type)
    reactor_validator.validate_criteria(dict(getattr(api, "criteria", {})))
    return api


def check_rule(rule, where):
    """``validate_rule`` as a list of ``where: error`` strings (for rules outside rules/, e.g. docs/rules)."""
    try:
        validate_rule(copy.deepcopy(rule))
    except Exception as e:
        return ["%s: %s: %s" % (where, type(e).__name__, e.message if isinstance(e, jsonschema.ValidationError) else e)]
    return []
