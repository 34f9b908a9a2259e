from django.apps import AppConfig


class CanaryConfig(AppConfig):
    """Canary historian Write API: client, global rate limit, breaker, push tasks, contract mock."""

    name = "canary"
    verbose_name = "Canary"

    def ready(self) -> None:
        # Connects the receivers (canary.receivers). Imported here, not at the top: a module that
        # imports models may only load once the app registry is ready.
        from canary import receivers  # noqa: F401, PLC0415
