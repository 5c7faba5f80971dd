-- LLM spend per agent: all of it, the part spent inside recoveries, and that part per recovery.
with spend as (
  select agent_id, count(*) as llm_calls, sum(cost_usd) as llm_cost_usd
  from {{ ref('stg_llm_costs') }}
  group by agent_id
),
recovering as (
  select agent_id, count(*) as recoveries, sum(llm_calls) as recovery_llm_calls, sum(llm_cost_usd) as recovery_llm_cost_usd
  from {{ ref('llm_cost_per_recovery') }}
  group by agent_id
),
agents as (
  select agent_id from spend
  union
  select agent_id from recovering
)

select
  a.agent_id,
  coalesce(s.llm_calls, 0) as llm_calls,
  coalesce(s.llm_cost_usd, 0) as llm_cost_usd,
  coalesce(r.recoveries, 0) as recoveries,
  coalesce(r.recovery_llm_cost_usd, 0) as recovery_llm_cost_usd,
  case when r.recoveries > 0 then r.recovery_llm_cost_usd / r.recoveries end as llm_cost_per_recovery_usd
from agents a
left join spend s on s.agent_id = a.agent_id
left join recovering r on r.agent_id = a.agent_id
