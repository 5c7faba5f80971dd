-- One row per recovery (agent_recovery run), deduplicated on the event id.
select * from {{ ref('stg_recoveries') }}
