-- Every row RudderStack loaded into `tracks`, duplicates included (copy_number > 1), with its lateness:
-- seconds from the event's own timestamp to when the warehouse received it.
select
  id as event_id,
  event,
  copy_number,
  {{ rudder_column('timestamp') }} as occurred_at,
  received_at,
  {{ dbt.datediff(rudder_column('timestamp'), 'received_at', 'second') }} as lateness_s
from ({{ rudder_event('tracks', {'event': 'string'}, dedup=false) }}) t
