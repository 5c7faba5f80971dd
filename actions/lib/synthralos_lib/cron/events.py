"""Cron backoff transitions as warehouse events, through the event pipeline.

Each transition `CronBackoff` reports (disabled, probe outcome, re-enabled)
becomes a custom track event (`cron_job_disabled`, `cron_job_probe`,
`cron_job_reenabled`) and goes through `events.forwarding.forward` like any
other event: outbox with Redis, direct send otherwise, never raising because
telemetry is down. The messageId derives from the job and its disabled period
(`<job>@<disabled_at ms>`, plus the probe number for probes), so recording the
same transition twice is deduplicated downstream.
"""

from synthralos_lib.cron.backoff import iso
from synthralos_lib.events.builders import EventError, build_event
from synthralos_lib.events.forwarding import correlation, forward


def source_id(job_id):
    return "cron_job:%s" % job_id


def transition_event(corr, transition):
    """The track event for one transition."""
    return build_event(transition["event"], transition["properties"], corr, timestamp=iso(transition["at"]),
                       discriminator=transition["discriminator"], source_id=source_id(transition["job_id"]))


def forward_transitions(settings, store, transitions, trace_tag=None, client=None):
    """Forward every transition; one JSON-able report per event (never raises for telemetry)."""
    if not transitions:
        return []
    corr = correlation(settings, st2_trace_tag=trace_tag)
    reports = []
    for transition in transitions:
        try:
            event = transition_event(corr, transition)
        except EventError as exc:
            reports.append({"event": transition["event"], "status": "failed", "forwarded": False, "error": str(exc)})
            continue
        reports.append(forward(settings, store, event, client=client))
    return reports
