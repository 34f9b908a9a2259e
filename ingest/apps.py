from django.apps import AppConfig


class IngestConfig(AppConfig):
    """MQTT DBIRTH intake: subscriber daemon, birth ledger, decode, process_birth task."""

    name = "ingest"
    verbose_name = "Ingest"
