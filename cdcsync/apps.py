from django.apps import AppConfig


class CdcsyncConfig(AppConfig):
    """Logical-replication consumer turning committed catalog changes into debounced pending work."""

    name = "cdcsync"
    verbose_name = "Change data capture"

    def ready(self) -> None:
        # Connects the receiver of catalog.signals. Imported here, not at the top: a module that
        # imports models may only load once the app registry is ready.
        from cdcsync import receivers  # noqa: F401, PLC0415
