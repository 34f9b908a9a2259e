from django.apps import AppConfig


class CanaryConfig(AppConfig):
    """Canary historian Write API: client, global rate limit, breaker, push tasks, contract mock."""

    name = "canary"
    verbose_name = "Canary"
