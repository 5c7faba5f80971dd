"""BullMQ both ways: watch queues for failed jobs, and add jobs as Queue.add does.

One module each: `keys.py` (the `bullmq` config section, the connection, BullMQ's key names),
`producer.py` (`add_job`, `job_options`), `payload.py` (a failed job as a `synthralos.agent_failure`
payload) and `watcher.py` (`FailureWatcher`: the events streams read, gaps reconciled, failures
dead-lettered). Each module's docstring tells its part; import the names from here.
"""

from synthralos_lib.streams.bullmq.keys import BullMQError, QueueKeys, bullmq_settings, connect
from synthralos_lib.streams.bullmq.payload import SOURCE, agent_result, failure_payload, parse_job
from synthralos_lib.streams.bullmq.producer import (
    DEFAULT_MAX_EVENTS,
    PRIORITY_LIMIT,
    add_job,
    job_options,
    validate_job_id,
)
from synthralos_lib.streams.bullmq.watcher import FAILURE_EVENTS, TRIGGER, FailureWatcher, WatchedQueue, fingerprint

__all__ = [
    "BullMQError", "DEFAULT_MAX_EVENTS", "FAILURE_EVENTS", "FailureWatcher", "PRIORITY_LIMIT", "QueueKeys", "SOURCE",
    "TRIGGER", "WatchedQueue", "add_job", "agent_result", "bullmq_settings", "connect", "failure_payload",
    "fingerprint", "job_options", "parse_job", "validate_job_id",
]
