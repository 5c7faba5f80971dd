import synthralos_sensor_lib  # noqa: F401  (puts actions/lib on sys.path)

import os
import socket
import threading
import time

from st2reactor.sensor.base import Sensor

from synthralos_lib.healing.failure_trigger import TRIGGER_REF
from synthralos_lib.ops.trace import guarded_logs
from synthralos_lib.state.config import config_secrets, load_config
from synthralos_lib.streams.consumer import StreamConsumer, connect_factory
from synthralos_lib.streams.entries import prepare_entry


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
        self._stopped = threading.Event()
        self.clock = time.time  # stamps detected_at

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
            connect=connect_factory(settings.redis_url, section["block_ms"]),
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
            logger=self._logger,
        )
        self._logger.info("[Self-Healing] AgentFailureSensor reading stream %s as %s/%s", section["stream"],
                          section["group"], consumer)

    def run(self):
        if self._consumer is not None:
            self._consumer.run()
            return
        while not self._stopped.is_set():  # st2 restarts a sensor whose run() returns
            self._stopped.wait(1.0)

    def cleanup(self):
        self._stopped.set()
        if self._consumer is not None:
            self._consumer.stop()
        self._log_guard.close()

    def _dispatch(self, item):
        # One log line per batch (StreamConsumer); each failure is a trigger instance in st2 anyway.
        self.sensor_service.dispatch(trigger=TRIGGER_REF, payload=item["payload"], trace_tag=item["trace_tag"])

    @property
    def stats(self):
        return dict(self._consumer.stats) if self._consumer is not None else {}

    def _ignore_trigger(self, trigger):
        """synthralos.agent_failure takes no parameters: nothing to do when one is created, updated or removed."""

    add_trigger = update_trigger = remove_trigger = _ignore_trigger
