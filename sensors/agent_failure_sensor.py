import synthralos_sensor_lib  # noqa: F401  (puts actions/lib on sys.path)

import os
import socket

from synthralos_sensor_lib import SynthralosSensor

from synthralos_lib import backoff
from synthralos_lib.healing.failure_trigger import TRIGGER_REF
from synthralos_lib.streams.consumer import StreamConsumer, connect_factory
from synthralos_lib.streams.entries import prepare_entry

# A crashed read loop restarts after 0.5 s, doubling per crash in a row up to 30 s.
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0


class AgentFailureSensor(SynthralosSensor):
    """Consumes agent execution events from a Redis Stream through a consumer group and
    dispatches synthralos.agent_failure for every failure (docs/agent_failure_stream.md).

    Config: `agent_failure_stream` (off by default) on `redis.url`; without either it idles.
    """

    def __init__(self, sensor_service, config=None):
        super(AgentFailureSensor, self).__init__(sensor_service=sensor_service, config=config)
        self._consumer = None
        self.crashes = 0  # self.clock also stamps detected_at

    def setup(self):
        settings = self.open_config()
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
        self.start_heartbeat(settings, "agent_failure_sensor")
        self._consumer.on_round = lambda consumer: self._heartbeat.beat(self.health_state)
        self._logger.info("[Self-Healing] AgentFailureSensor reading stream %s as %s/%s", section["stream"],
                          section["group"], consumer)

    def run(self):
        if self._consumer is None:
            return self.idle()
        # st2 restarts a crashed sensor twice, then gives up without a word: nothing escapes this loop.
        crashes = 0
        while not self.stopping():
            try:
                self._consumer.run()  # returns only once stopped; Redis trouble is handled inside
            except Exception as exc:
                crashes += 1
                self.crashes = crashes
                delay = backoff.capped_exponential(crashes, RESTART_FIRST_S, RESTART_MAX_S)
                self._logger.error("[Self-Healing] AgentFailureSensor read loop failed (%s: %s, %d so far); "
                                   "restarting it in %.1f s", type(exc).__name__, exc, crashes, delay)
                self._stopped.wait(delay)

    def release(self):
        if self._consumer is not None:
            self._consumer.stop()

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
