{#- A continuous percentile as an aggregate, for warehouses that spell it differently. -#}
{% macro percentile(expression, fraction) %}
  {{ return(adapter.dispatch('percentile', 'synthralos_analytics')(expression, fraction)) }}
{% endmacro %}

{% macro default__percentile(expression, fraction) -%}
  percentile_cont({{ fraction }}) within group (order by {{ expression }})
{%- endmacro %}

{#- BigQuery has no ordered-set aggregate: the nearest of 100 approximate quantiles. -#}
{% macro bigquery__percentile(expression, fraction) -%}
  approx_quantiles({{ expression }}, 100)[offset({{ (fraction * 100) | int }})]
{%- endmacro %}
