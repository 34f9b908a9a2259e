from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Reads every stage, changes none: health endpoints, pipeline gauges, watchdogs, status commands."""

    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from monitoring import logins  # noqa: F401, PLC0415 - connects the failed-login log (docs/security.md)
