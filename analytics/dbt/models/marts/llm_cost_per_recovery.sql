-- LLM spend of each recovery: the llm_cost_logged events that share its trace id.
with costs as (
  select trace_id, count(*) as llm_calls, sum(cost_usd) as llm_cost_usd
  from {{ ref('stg_llm_costs') }}
  group by trace_id
)

select
  r.recovery_id,
  r.agent_id,
  r.failure_type,
  r.outcome,
  r.trace_id,
  coalesce(c.llm_calls, 0) as llm_calls,
  coalesce(c.llm_cost_usd, 0) as llm_cost_usd
from {{ ref('recoveries') }} r
left join costs c on c.trace_id = r.trace_id
