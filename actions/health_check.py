from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.ops.health import health_report
from synthralos_lib.state.validation import check_number


class HealthCheck(SynthralosAction):
    """Probe every configured dependency; report each one's status, latency and error. Never fails for a dependency."""

    def run(self, timeout_s=5, slow_ms=1000, include=None):
        try:  # the metadata's bounds let NaN through
            check_number(timeout_s, "timeout_s", 0.1, 60, required=True)
            check_number(slow_ms, "slow_ms", 1, 60000, integer=True, required=True)
        except ValueError as exc:
            return False, {"error": str(exc)}
        report = self.scrub(health_report(self.settings, self.action_service, timeout_s=float(timeout_s),
                                          slow_ms=slow_ms, include=include or None))
        for problem in report["problems"]:
            self.logger.warning("[Observability] health: %s", problem)
        self.logger.info("[Observability] health %s (%d dependencies checked)", report["status"],
                         len(report["dependencies"]))
        return report
