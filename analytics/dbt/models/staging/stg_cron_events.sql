-- Cron backoff transitions: disabled, probe (outcome failed / succeeded), re-enabled.
{% set columns = {'job_id': 'string', 'disabled_at': 'timestamp', 'consecutive_failures': 'int',
                  'outcome': 'string', 'via': 'string', 'disabled_for_s': 'float'} %}
{% for table, kind in [('cron_job_disabled', 'disabled'), ('cron_job_probe', 'probe'), ('cron_job_reenabled', 'reenabled')] %}
select '{{ kind }}' as transition, e.* from ({{ rudder_event(table, columns) }}) e
{% if not loop.last %}union all{% endif %}
{% endfor %}
