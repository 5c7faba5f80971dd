-- Recovery rate and time to recovery (mean, p95; repaired runs only) per week, overall and
-- broken down by failure type, agent and plan source (rules or llm). `week` is null on the
-- all-time rows.
{% set dimensions = [('all', none), ('failure_type', 'failure_type'), ('agent', 'agent_id'), ('plan_source', 'plan_source')] %}
{% set periods = [('week', 'week'), ('all_time', none)] %}

{% for period, period_column in periods %}
{% for dimension, column in dimensions %}
select
  {{ period_column if period_column else 'cast(null as date)' }} as week,
  '{{ dimension }}' as dimension,
  {{ column if column else "'all'" }} as dimension_value,
  count(*) as recoveries,
  sum(case when outcome = 'repaired' then 1 else 0 end) as repaired,
  sum(case when outcome = 'escalated' then 1 else 0 end) as escalated,
  cast(sum(case when outcome = 'repaired' then 1 else 0 end) as {{ dbt.type_float() }}) / count(*) as recovery_rate,
  avg(time_to_recovery_s) as mean_time_to_recovery_s,
  {{ percentile('time_to_recovery_s', 0.95) }} as p95_time_to_recovery_s
from {{ ref('recoveries') }}
{%- set group = [] -%}
{%- if period_column %}{% do group.append(period_column) %}{% endif -%}
{%- if column %}{% do group.append(column) %}{% endif %}
{% if group %}group by {{ group | join(', ') }}{% endif %}
{% if not loop.last %}union all{% endif %}
{% endfor %}
{% if not loop.last %}union all{% endif %}
{% endfor %}
