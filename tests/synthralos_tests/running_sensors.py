"""Sensors run in threads against the shared real redis-server, as st2's sensor container runs
them (a green thread each under eventlet); every sensor a test started is stopped at cleanup."""

import threading

from synthralos_tests.redis_server import get_redis_server


class RunningSensorsMixin(object):
    """Mix in before st2tests' BaseSensorTestCase: `self.redis` (flushed), `self.client`,
    `run_sensor(sensor)` and `self.running` [(sensor, thread)]."""

    def setUp(self):
        super(RunningSensorsMixin, self).setUp()
        self.redis = get_redis_server()
        self.redis.flushall()
        self.client = self.redis.client()
        self.addCleanup(self.client.connection_pool.disconnect)
        self.running = []
        self.addCleanup(self.stop_all)

    def run_sensor(self, sensor):
        """Start `sensor.run` (already set up) in a daemon thread; returns the sensor."""
        thread = threading.Thread(target=sensor.run)
        thread.daemon = True
        thread.start()
        self.running.append((sensor, thread))
        return sensor

    def stop_all(self):
        for sensor, _ in self.running:
            sensor.cleanup()
        for _, thread in self.running:
            thread.join(10)
            self.assertFalse(thread.is_alive(), "a sensor did not stop")
        self.running = []
