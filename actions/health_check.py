from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.ops.health import health_report
from synthralos_lib.state.validation import check_number

PROBE_TIMEOUT_S = 5  # probe_timeout_s's default in health_check.yaml


class HealthCheck(SynthralosAction):
    """Probe every configured dependency; report each one's status, latency and error. Never fails for a dependency."""

    def run(self, probe_timeout_s=PROBE_TIMEOUT_S, slow_ms=1000, include=None, timeout_s=None):
        try:  # the metadata's bounds let NaN through
            probe_timeout_s = self.renamed("probe_timeout_s", probe_timeout_s, "timeout_s", timeout_s,
                                           default=PROBE_TIMEOUT_S)
            check_number(probe_timeout_s, "probe_timeout_s", 0.1, 60, required=True)
            check_number(slow_ms, "slow_ms", 1, 60000, integer=True, required=True)
        except ValueError as exc:
            return False, {"error": str(exc)}
        report = health_report(self.settings, self.action_service, timeout_s=float(probe_timeout_s), slow_ms=slow_ms,
                               include=include or None)
        for problem in report["problems"]:
            self.logger.warning("[Observability] health: %s", problem)
        self.logger.info("[Observability] health %s (%d dependencies checked)", report["status"],
                         len(report["dependencies"]))
        return report
