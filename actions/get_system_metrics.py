from synthralos_lib.action_base import SynthralosAction
from synthralos_lib.ops import metrics


class GetSystemMetrics(SynthralosAction):
    """Outbox, circuit, cron and recovery metrics from the store, as JSON or Prometheus text."""

    def run(self, window_s=3600, format="json", write_to=None):  # noqa: A002  (st2 parameter name)
        # Scrubbed by collect, not only by the action guard: write_to puts the text in a file.
        collected = metrics.collect(self.settings, self.store, window_s=window_s, secrets=self.secrets())
        for part, error in sorted(collected["errors"].items()):
            self.logger.warning("[Observability] metrics part %s unavailable: %s", part, error)
        if format != "prometheus" and not write_to:
            self.logger.info("[Observability] metrics collected (store %s)", collected["store"])
            return collected
        text = metrics.to_prometheus(collected)
        result = {"format": "prometheus", "text": text, "errors": collected["errors"]}
        if write_to:
            result["written"] = metrics.write_textfile(write_to, text)
            self.logger.info("[Observability] metrics written to %s", result["written"]["path"])
        return result
