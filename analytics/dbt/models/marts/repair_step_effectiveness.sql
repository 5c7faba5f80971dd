-- Which repair step fixed which failure type, at which attempt; `share_of_failure_type` is the
-- part of all recoveries of that failure type (repaired or not) this step fixed at this attempt.
with totals as (
  select failure_type, count(*) as recoveries from {{ ref('recoveries') }} group by failure_type
)

select
  r.failure_type,
  r.repaired_by as step,
  r.attempts as attempt,
  count(*) as repairs,
  max(t.recoveries) as failure_type_recoveries,
  cast(count(*) as {{ dbt.type_float() }}) / max(t.recoveries) as share_of_failure_type,
  avg(r.time_to_recovery_s) as mean_time_to_recovery_s
from {{ ref('recoveries') }} r
join totals t on t.failure_type = r.failure_type
where r.outcome = 'repaired'
group by r.failure_type, r.repaired_by, r.attempts
