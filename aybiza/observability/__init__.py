"""Prometheus metrics, dashboard and alert files."""
