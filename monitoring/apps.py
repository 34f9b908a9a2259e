from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Reads every stage, changes none: health endpoints, pipeline gauges, watchdogs, status commands."""

    name = "monitoring"
    verbose_name = "Monitoring"
