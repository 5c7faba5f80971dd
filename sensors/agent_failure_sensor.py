import synthralos_sensor_lib  # noqa: F401  (puts actions/lib on sys.path)

import os
import socket
import threading
import time

from st2reactor.sensor.base import Sensor

from synthralos_lib import backoff
from synthralos_lib.healing.failure_trigger import TRIGGER_REF
from synthralos_lib.ops.sensor_health import Heartbeat, sensor_health_settings
from synthralos_lib.ops.trace import guarded_logs
from synthralos_lib.state.config import config_secrets, load_config
from synthralos_lib.state.store import get_store
from synthralos_lib.streams.consumer import StreamConsumer, connect_factory
from synthralos_lib.streams.entries import prepare_entry

# A crashed read loop restarts after 0.5 s, doubling per crash in a row up to 30 s.
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0


class AgentFailureSensor(Sensor):
    """Consumes agent execution events from a Redis Stream through a consumer group and
    dispatches synthralos.agent_failure for every failure (docs/agent_failure_stream.md).

    Config: `agent_failure_stream` (off by default) on `redis.url`; without either it idles.
    """

    def __init__(self, sensor_service, config=None):
        super(AgentFailureSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._logger = self.sensor_service.get_logger(name=self.__class__.__name__)
        self._log_guard = guarded_logs(self._logger, ())  # opened by setup(), closed by cleanup()
        self._consumer = None
        self._heartbeat = None
        self.crashes = 0
        self._stopped = threading.Event()
        self.clock = time.time  # stamps detected_at and heartbeats

    def setup(self):
        # Every line of this long-lived process, the library's included, is scrubbed (ops.trace).
        self._log_guard.open(config_secrets(self.config))
        settings = load_config(self.config)
        section = settings.section("agent_failure_stream")
        if not section["enabled"] or not settings.redis_url:
            self._logger.info("[Self-Healing] AgentFailureSensor idle: %s", "agent_failure_stream.enabled is off"
                              if not section["enabled"] else "no redis.url configured")
            return
        secrets = settings.secrets()
        consumer = section["consumer"] or "%s-%d" % (socket.gethostname(), os.getpid())
        self._consumer = StreamConsumer(
            # Bytes from Redis: the consumer decodes each entry itself, so one bad byte costs one entry.
            connect=connect_factory(settings.redis_url, section["block_ms"], decode_responses=False),
            stream=section["stream"],
            group=section["group"],
            consumer=consumer,
            prepare=lambda entry_id, fields: prepare_entry(entry_id, fields, secrets=secrets, now=self.clock()),
            dispatch=self._dispatch,
            dead_letter_stream=section["dead_letter_stream"],
            block_ms=section["block_ms"],
            claim_idle_ms=section["claim_idle_ms"],
            batch=section["batch"],
            backoff_initial_s=section["reconnect_initial_ms"] / 1000.0,
            backoff_max_s=section["reconnect_max_ms"] / 1000.0,
            max_dispatch_attempts=section["max_dispatch_attempts"],
            dead_letter_entry_bytes=section["dead_letter_entry_bytes"],
            dead_letter_max_bytes=section["dead_letter_max_bytes"],
            secrets=secrets,
            logger=self._logger,
            wall_clock=lambda: self.clock(),
        )
        self._heartbeat = Heartbeat(get_store(settings, self.sensor_service), "agent_failure_sensor",
                                    every_s=sensor_health_settings(settings)["heartbeat_every_s"],
                                    clock=lambda: self.clock(), logger=self._logger)
        self._consumer.on_round = lambda consumer: self._heartbeat.beat(self.health_state)
        self._logger.info("[Self-Healing] AgentFailureSensor reading stream %s as %s/%s", section["stream"],
                          section["group"], consumer)

    def run(self):
        if self._consumer is None:
            while not self._stopped.is_set():  # st2 restarts a sensor whose run() returns
                self._stopped.wait(1.0)
            return
        # st2 restarts a crashed sensor twice, then gives up without a word: nothing escapes this loop.
        crashes = 0
        while not self._stopped.is_set():
            try:
                self._consumer.run()  # returns only once stopped; Redis trouble is handled inside
            except Exception as exc:
                crashes += 1
                self.crashes = crashes
                delay = backoff.capped_exponential(crashes, RESTART_FIRST_S, RESTART_MAX_S)
                self._logger.error("[Self-Healing] AgentFailureSensor read loop failed (%s: %s, %d so far); "
                                   "restarting it in %.1f s", type(exc).__name__, exc, crashes, delay)
                self._stopped.wait(delay)

    def cleanup(self):
        self._stopped.set()
        if self._consumer is not None:
            self._consumer.stop()
        if self._heartbeat is not None:
            self._heartbeat.stopped()  # disabled on purpose: not a stall
        self._log_guard.close()

    def health_state(self):
        """The figures the heartbeat records (ops.sensor_health): counters, times, group lag and pending."""
        stats = self._consumer.stats
        state = {key: stats[key] for key in ("read", "dispatched", "dead_lettered", "dispatch_errors", "reconnects",
                                             "errors", "last_read_at", "last_dispatch_at")}
        state.update(crashes=self.crashes, stream=self._consumer.stream, group=self._consumer.group, consumer=self._consumer.consumer,
                     lag=None, pending=None, oldest_pending_age_s=None)
        try:
            state.update(self._consumer.group_state())
        except Exception as exc:  # Redis is away: the reconnect count says so
            state["group_state_error"] = type(exc).__name__
        return state

    def _dispatch(self, item):
        # One log line per batch (StreamConsumer); each failure is a trigger instance in st2 anyway.
        self.sensor_service.dispatch(trigger=TRIGGER_REF, payload=item["payload"], trace_tag=item["trace_tag"])

    @property
    def stats(self):
        return dict(self._consumer.stats) if self._consumer is not None else {}

    def _ignore_trigger(self, trigger):
        """synthralos.agent_failure takes no parameters: nothing to do when one is created, updated or removed."""

    add_trigger = update_trigger = remove_trigger = _ignore_trigger
