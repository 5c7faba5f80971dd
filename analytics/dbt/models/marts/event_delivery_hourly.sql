-- Delivery health per event and hour (of the event's own timestamp): rows loaded, distinct
-- events, duplicate rows (client retries, replays), and late arrivals among the first copies.
select
  event,
  {{ dbt.date_trunc('hour', 'occurred_at') }} as hour,
  count(*) as rows_loaded,
  sum(case when copy_number = 1 then 1 else 0 end) as events,
  sum(case when copy_number > 1 then 1 else 0 end) as duplicate_rows,
  sum(case when copy_number = 1 and lateness_s > {{ var('late_arrival_s') }} then 1 else 0 end) as late_events,
  max(case when copy_number = 1 then lateness_s end) as max_lateness_s
from {{ ref('stg_deliveries') }}
group by event, {{ dbt.date_trunc('hour', 'occurred_at') }}
