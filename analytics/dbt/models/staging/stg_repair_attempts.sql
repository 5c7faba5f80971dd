-- Every repair step a recovery tried (its attempt_log), one row per attempt.
select
  r.recovery_id,
  r.failure_type,
  r.agent_id,
  {{ json_field('a', 'attempt', 'int') }} as attempt,
  {{ json_field('a', 'action', 'string') }} as step,
  {{ json_field('a', 'repaired', 'boolean') }} as repaired
from {{ ref('stg_recoveries') }} r
{{ json_array_rows('r.attempt_log', 'a') }}
where r.attempt_log is not null
