from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.state.validation import check_text
from synthralos_lib.streams import bullmq

MAX_NAME_CHARS = 256  # queue, job name and job id: each is echoed in the result (and its key)


class BullMQAddJob(SynthralosAction):
    """Add a job to a BullMQ queue as BullMQ's Queue.add does, so the platform's Node workers process it."""

    def run(self, queue, job_name=None, data=None, job_id=None, attempts=None, backoff_type=None, backoff_delay_ms=None,
            delay_ms=None, priority=None, remove_on_complete=None, remove_on_fail=None, lifo=False, prefix=None,
            name=None):
        options = bullmq.bullmq_settings(self.settings)
        try:
            job_name = self.renamed("job_name", job_name, "name", name, required=True)
            for field, value in (("queue", queue), ("job_name", job_name), ("job_id", job_id), ("prefix", prefix)):
                check_text(value, field, max_chars=MAX_NAME_CHARS, required=field in ("queue", "job_name"))
        except ValueError as exc:
            return False, {"error": str(exc)}
        try:
            opts = bullmq.job_options(
                attempts=attempts, backoff_type=backoff_type, backoff_delay_ms=backoff_delay_ms, delay_ms=delay_ms,
                job_id=job_id, priority=priority, remove_on_complete=remove_on_complete,
                remove_on_fail=remove_on_fail, lifo=lifo,
            )
        except bullmq.BullMQError as exc:
            return False, {"error": str(exc)}
        client = bullmq.connect(options["redis_url"])
        try:
            result = bullmq.add_job(client, queue, job_name, data, opts, prefix=prefix or options["prefix"])
        except bullmq.BullMQError as exc:
            return False, {"error": str(exc)}
        except Exception as exc:  # Redis down or refusing: fail the execution with a scrubbed reason
            return False, {"error": "could not add the job: %s: %s" % (type(exc).__name__, exc)}
        finally:
            client.connection_pool.disconnect()
        self.logger.info("[Self-Healing] BullMQ job %s:%s %s", queue, result["job_id"], result["state"])
        return result
