"""The four python actions agent_recovery runs, wrapped for the Orquesta driver."""

from synthralos_tests.orquesta_runner import python_action


def recovery_actions(config, action_service, **overrides):
    """`{"synthralos.<name>": python_action(...)}` for detect, plan, step and record; `overrides`
    maps an action name (e.g. ``detect_failure``) to an ``(action_cls, config)`` pair."""
    from detect_failure import DetectFailureAction
    from execute_repair_step import ExecuteRepairStepAction
    from generate_repair_plan import GenerateRepairPlanAction
    from record_failure import RecordFailureAction

    classes = {"detect_failure": DetectFailureAction, "generate_repair_plan": GenerateRepairPlanAction,
               "execute_repair_step": ExecuteRepairStepAction, "record_failure": RecordFailureAction}
    actions = {}
    for name, cls in classes.items():
        cls, cls_config = overrides.get(name, (cls, config))
        actions["synthralos." + name] = python_action(cls, cls_config, action_service)
    return actions
