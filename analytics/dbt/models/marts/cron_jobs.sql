-- Per cron job: how often it was disabled (and after how many consecutive failures), its probes
-- and their outcomes, re-enables, and the time it spent disabled (closed periods only).
select
  job_id,
  sum(case when transition = 'disabled' then 1 else 0 end) as disables,
  sum(case when transition = 'disabled' then consecutive_failures else 0 end) as failures_before_disable,
  sum(case when transition = 'probe' then 1 else 0 end) as probes,
  sum(case when transition = 'probe' and outcome = 'failed' then 1 else 0 end) as probes_failed,
  sum(case when transition = 'probe' and outcome = 'succeeded' then 1 else 0 end) as probes_succeeded,
  sum(case when transition = 'reenabled' then 1 else 0 end) as reenables,
  coalesce(sum(case when transition = 'reenabled' then disabled_for_s end), 0) as disabled_s,
  case when sum(case when transition = 'disabled' then 1 else 0 end)
            > sum(case when transition = 'reenabled' then 1 else 0 end) then true else false end as disabled_now,
  max(case when transition = 'disabled' then disabled_at end) as last_disabled_at
from {{ ref('stg_cron_events') }}
group by job_id
