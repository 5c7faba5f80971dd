"""Cron backoff: the backoff schedule, per-job backoff state on the store
(check, record, reset, status, probes of disabled jobs) and its events.
"""
