"""The python actions agent_recovery runs, wrapped for the Orquesta driver."""

from synthralos_tests.orquesta_runner import python_action


def recovery_actions(config, action_service, **overrides):
    """`{"synthralos.<name>": python_action(...)}` for begin, step and record (and the older detect and
    plan); `overrides` maps an action name (e.g. ``begin_recovery``) to an ``(action_cls, config)`` pair."""
    from begin_recovery import BeginRecoveryAction
    from detect_failure import DetectFailureAction
    from execute_repair_step import ExecuteRepairStepAction
    from generate_repair_plan import GenerateRepairPlanAction
    from record_failure import RecordFailureAction

    classes = {"begin_recovery": BeginRecoveryAction, "detect_failure": DetectFailureAction,
               "generate_repair_plan": GenerateRepairPlanAction, "execute_repair_step": ExecuteRepairStepAction,
               "record_failure": RecordFailureAction}
    actions = {}
    for name, cls in classes.items():
        cls, cls_config = overrides.get(name, (cls, config))
        actions["synthralos." + name] = python_action(cls, cls_config, action_service)
    return actions


def python_executions(actions):
    """How many python-action executions the wrapped `actions` ran (each is a new process in st2)."""
    return sum(len(action.calls) for action in actions.values() if getattr(action, "python_script", False))
