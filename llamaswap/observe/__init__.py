"""Observability: metrics, activity, in-flight tracking, logs and live events."""
