{#-
  Rows of a JSON array held in a text column (RudderStack lands arrays as JSON text), one per
  element, as `<alias>`; `json_field(alias, key, type)` reads a scalar field of an element.
  Used as: from t {{ json_array_rows('t.col', 'item') }}
-#}
{% macro json_array_rows(column, alias) %}
  {{ return(adapter.dispatch('json_array_rows', 'synthralos_analytics')(column, alias)) }}
{% endmacro %}

{% macro default__json_array_rows(column, alias) -%}
  cross join lateral jsonb_array_elements(cast({{ column }} as jsonb)) as {{ alias }}(item)
{%- endmacro %}

{% macro snowflake__json_array_rows(column, alias) -%}
  , lateral flatten(input => parse_json({{ column }})) as {{ alias }}
{%- endmacro %}

{% macro bigquery__json_array_rows(column, alias) -%}
  cross join unnest(json_extract_array({{ column }})) as {{ alias }}
{%- endmacro %}

{% macro json_field(alias, key, kind) %}
  {{ return(adapter.dispatch('json_field', 'synthralos_analytics')(alias, key, kind)) }}
{% endmacro %}

{% macro default__json_field(alias, key, kind) -%}
  cast({{ alias }}.item ->> '{{ key }}' as {{ synthralos_type(kind) }})
{%- endmacro %}

{% macro snowflake__json_field(alias, key, kind) -%}
  cast({{ alias }}.value:{{ key }} as {{ synthralos_type(kind) }})
{%- endmacro %}

{% macro bigquery__json_field(alias, key, kind) -%}
  cast(json_value({{ alias }}, '$.{{ key }}') as {{ synthralos_type(kind) }})
{%- endmacro %}
