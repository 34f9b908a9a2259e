from django.apps import AppConfig


class CdcsyncConfig(AppConfig):
    """Logical-replication consumer turning committed catalog changes into debounced pending work."""

    name = "cdcsync"
    verbose_name = "Change data capture"
