-- How often each step was tried for each failure type, at which attempt, and how often it fixed it.
select
  failure_type,
  step,
  attempt,
  count(*) as tries,
  sum(case when repaired then 1 else 0 end) as fixes,
  cast(sum(case when repaired then 1 else 0 end) as {{ dbt.type_float() }}) / count(*) as fix_rate
from {{ ref('stg_repair_attempts') }}
group by failure_type, step, attempt
