"""Operations: dependency health checks, system metrics (JSON and Prometheus
text), and the recovery outcome records the metrics are computed from.
"""
