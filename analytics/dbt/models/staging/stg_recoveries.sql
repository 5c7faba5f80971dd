-- One row per agent_recovery run that ended: repaired (agent_repair) or not (agent_failure from
-- synthralos.agent_recovery; the same event also carries failed llm_retry / reroute_request runs).
{% set columns = {
  'st_2_execution_id': 'string', 'agent_id': 'string', 'trace_id': 'string', 'workflow': 'string',
  'status': 'string', 'result_output_outcome': 'string', 'result_output_repaired': 'boolean',
  'result_output_repaired_by': 'string', 'result_output_attempts': 'int', 'result_output_duration_s': 'float',
  'result_output_plan_source': 'string', 'result_output_failure_failure_type': 'string',
  'result_output_attempt_log': 'string'} %}

with events as (
  {{ rudder_event('agent_repair', columns) }}
  union all
  {{ rudder_event('agent_failure', columns) }}
)

select
  id as event_id,
  st_2_execution_id as recovery_id,
  agent_id,
  trace_id,
  coalesce(result_output_failure_failure_type, 'unknown') as failure_type,
  coalesce(result_output_plan_source, 'none') as plan_source,
  case when result_output_repaired then 'repaired' else coalesce(result_output_outcome, 'failed') end as outcome,
  result_output_repaired_by as repaired_by,
  result_output_attempts as attempts,
  result_output_attempt_log as attempt_log,
  case when result_output_repaired then result_output_duration_s end as time_to_recovery_s,
  {{ rudder_column('timestamp') }} as occurred_at,
  cast({{ dbt.date_trunc('week', rudder_column('timestamp')) }} as date) as week
from events
where workflow = 'synthralos.agent_recovery'
