import synthralos_sensor_lib  # noqa: F401  (puts actions/lib on sys.path)

from synthralos_sensor_lib import SynthralosSensor

from synthralos_lib import backoff
from synthralos_lib.streams import bullmq

RETRY_FIRST_S = 0.5  # the wait after the first failed read in a row (config.schema.yaml says "doubles from 0.5 s")


class BullMQFailureSensor(SynthralosSensor):
    """Failed BullMQ jobs of the configured queues -> synthralos.agent_failure (source bullmq).

    All decisions (what is a failure, its payload, cursor, gap reconciliation,
    no duplicates) are in synthralos_lib.streams.bullmq. This class reads the
    config, keeps the loop alive across Redis outages (reconnecting with
    backoff: st2 restarts a crashed sensor only twice) and stops promptly.
    """

    def __init__(self, sensor_service, config=None):
        super(BullMQFailureSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._watcher = None
        self._client = None
        self._options = None
        self._settings = None
        self.reconnects = 0
        self.errors = 0  # self.clock also stamps detected_at

    def setup(self):
        self._settings = self.open_config()
        self._options = bullmq.bullmq_settings(self._settings)
        if not self._options.get("enabled") or not self._options.get("queues"):
            self._logger.info("[Self-Healing] BullMQFailureSensor idle: bullmq.enabled is off or no bullmq.queues")
            return
        self._client = bullmq.connect(self._options["redis_url"], self._options["block_ms"])
        self._watcher = bullmq.FailureWatcher(
            self._client,
            self._options,
            self._dispatch,
            self._logger,
            state_prefix=self._settings.section("redis").get("key_prefix") or "synthralos:",
            secrets=self._settings.secrets(),
            clock=lambda: self.clock(),
        )
        self.start_heartbeat(self._settings, "bullmq_failure_sensor")

    def _dispatch(self, payload, trace_tag):
        self.sensor_service.dispatch(trigger=bullmq.TRIGGER, payload=payload, trace_tag=trace_tag)

    def run(self):
        import redis

        if self._watcher is None:
            return self.idle()
        try:
            self._loop(redis)
        finally:
            self._client.connection_pool.disconnect()
            self._watcher.raw.connection_pool.disconnect()

    def _loop(self, redis):
        failures = 0  # in a row
        while not self.stopping():
            try:
                self._watcher.poll()
                failures = 0
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                failures += 1
                delay = self._retry_delay(failures)
                self.reconnects += 1
                self._watcher.reset()
                self._logger.warning(
                    "[Self-Healing] BullMQ Redis unreachable (%s); retrying in %.1f s", type(exc).__name__, delay
                )
                self._stopped.wait(delay)
            except Exception as exc:  # a Redis error reply, a failed dispatch: keep the sensor alive
                failures += 1
                delay = self._retry_delay(failures)
                self.errors += 1
                self._watcher.reset()
                self._logger.error(
                    "[Self-Healing] BullMQ read failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay
                )
                self._stopped.wait(delay)
            finally:
                self._heartbeat.beat(self.health_state)  # never raises

    def _retry_delay(self, failures):
        """0.5 s after the first failure in a row, doubling up to bullmq.reconnect_max_delay_s."""
        return backoff.capped_exponential(failures, RETRY_FIRST_S, self._options["reconnect_max_delay_s"])

    def health_state(self):
        """The figures the heartbeat records (ops.sensor_health)."""
        stats = self._watcher.stats
        state = {key: stats[key] for key in ("read", "dispatched", "dead_lettered", "dispatch_errors", "reconciled",
                                             "gaps", "last_read_at", "last_dispatch_at")}
        state.update(reconnects=self.reconnects, errors=self.errors, queues=[q.name for q in self._watcher.queues],
                     lag=None, pending=None, oldest_pending_age_s=None)
        return state

    def release(self):
        """Nothing: run() sees the stop flag after its current read, which blocks for at most
        bullmq.block_ms (<= 1 s), and closes its connections itself."""
