{#-
  Read one RudderStack event table, first copy of each `id` (messageId) only.

  RudderStack creates a table when the first event of that name lands, and a column
  when the first non-null value of that property does; until then this reads null
  for it (typed as given), so the models build on a young warehouse too.
  `columns` maps column name -> type (string, timestamp, float, numeric, int, boolean).
  Copies of one id (client retries, replays: rudder-server's dedup is off by default)
  are ranked by received_at; `dedup=false` keeps every copy and its `copy_number`.
-#}
{% macro rudder_event(table, columns, dedup=true) %}
  {%- set src = source('rudderstack', table) -%}
  {%- set relation = adapter.get_relation(database=src.database, schema=src.schema, identifier=src.identifier) if execute else none -%}
  {%- set present = [] -%}
  {%- if relation is not none -%}
    {%- for column in adapter.get_columns_in_relation(relation) -%}
      {%- do present.append(column.name | lower) -%}
    {%- endfor -%}
  {%- endif -%}
  {%- set standard = {'id': 'string', 'received_at': 'timestamp', 'timestamp': 'timestamp', 'uuid_ts': 'timestamp'} -%}
  {%- set wanted = dict(standard, **columns) -%}
  {%- if relation is none %}
    select
    {%- for name, kind in wanted.items() %}
      cast(null as {{ synthralos_type(kind) }}) as {{ rudder_column(name) }},
    {%- endfor %}
      1 as copy_number
    where 1 = 0
  {%- else %}
    select * from (
      select
      {%- for name, kind in wanted.items() %}
        {% if name in present -%}
        cast({{ rudder_column(name) }} as {{ synthralos_type(kind) }})
        {%- else -%}
        cast(null as {{ synthralos_type(kind) }})
        {%- endif %} as {{ rudder_column(name) }},
      {%- endfor %}
        row_number() over (partition by id order by received_at, uuid_ts) as copy_number
      from {{ src }}
    ) copies
    {%- if dedup %}
    where copy_number = 1
    {%- endif %}
  {%- endif %}
{% endmacro %}

{% macro synthralos_type(kind) %}
  {%- if kind == 'string' -%}{{ dbt.type_string() }}
  {%- elif kind == 'timestamp' -%}{{ dbt.type_timestamp() }}
  {%- elif kind == 'float' -%}{{ dbt.type_float() }}
  {%- elif kind == 'numeric' -%}{{ dbt.type_numeric() }}
  {%- elif kind == 'int' -%}{{ dbt.type_bigint() }}
  {%- elif kind == 'boolean' -%}{{ dbt.type_boolean() }}
  {%- else -%}{{ exceptions.raise_compiler_error("unknown column type " ~ kind) }}
  {%- endif -%}
{% endmacro %}

{#-
  A RudderStack column in a query. Names are used unquoted (PostgreSQL folds them to lower case,
  Snowflake to upper case, as RudderStack creates them there) except the few that are keywords,
  which must be quoted in the warehouse's own case.
-#}
{% macro rudder_column(name) %}
  {{- return(adapter.dispatch('rudder_column', 'synthralos_analytics')(name)) -}}
{% endmacro %}

{% macro default__rudder_column(name) -%}
  {{ adapter.quote(name) if name in ('timestamp', 'event') else name }}
{%- endmacro %}

{% macro snowflake__rudder_column(name) -%}
  {{ adapter.quote(name | upper) if name in ('timestamp', 'event') else name }}
{%- endmacro %}
