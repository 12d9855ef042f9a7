"""What operators see: Prometheus metrics, OpenTelemetry traces, logs, Grafana dashboards."""
