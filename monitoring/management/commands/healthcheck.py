"""``healthcheck web|ingest|cdc|worker``: is the process in this container alive and working?

For compose/Kubernetes healthchecks: exit 0 healthy, 1 not, with one line saying why. It asks the
process itself over HTTP on 127.0.0.1 (``/healthz`` for web, the metrics endpoint for the daemons),
never the dependencies (that is ``/readyz``), and checks the freshness of a main-loop heartbeat
gauge where the process exports one. What each process must answer, and why a metrics endpoint
rather than a heartbeat file: docs/metrics.md, "Health".
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from prometheus_client.parser import text_string_to_metric_families

DEFAULT_PORTS = {"web": lambda: 8000, "ingest": lambda: settings.INGEST_METRICS_PORT,
                 "cdc": lambda: settings.CDC_METRICS_PORT, "worker": lambda: settings.WORKER_METRICS_PORT}
PORT_SETTING = {"ingest": "INGEST_METRICS_PORT", "cdc": "CDC_METRICS_PORT", "worker": "WORKER_METRICS_PORT"}


def _get(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            return response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise CommandError(f"{url} answered HTTP {exc.code}", returncode=1) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(f"{url} not reachable ({reason})", returncode=1) from None


def samples(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page."""
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if not s.labels}


class Command(BaseCommand):
    help = "Exit 0 when the web, ingest, cdc or worker process of this container is alive and working."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("process", choices=sorted(DEFAULT_PORTS))
        parser.add_argument("--port", type=int, default=None, help="default: the process's port setting")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--timeout", type=float, default=None,
                            help="seconds (default HEALTH_CHECK_TIMEOUT_SECONDS)")
        parser.add_argument("--max-age", type=float, default=60.0,
                            help="oldest acceptable main-loop heartbeat gauge, in seconds")

    def handle(self, *args: object, **opts: Any) -> None:
        process = str(opts["process"])
        port = opts["port"] if opts["port"] is not None else DEFAULT_PORTS[process]()
        if not port:
            raise CommandError(f"{PORT_SETTING[process]} is 0: {process} serves no metrics to check", returncode=1)
        timeout = float(opts["timeout"] or settings.HEALTH_CHECK_TIMEOUT_SECONDS)
        base = f"http://{opts['host']}:{port}"
        if process == "web":
            _get(f"{base}/healthz", timeout)
            self.stdout.write(f"ok: web answers on {base}/healthz")
            return
        values = samples(_get(f"{base}/metrics", timeout))
        getattr(self, f"_check_{process}")(values)
        # A daemon's main loop stamps metasync_<process>_heartbeat_timestamp_seconds (the worker's
        # on each Celery event heartbeat): 0 or absent means not yet, or no such gauge.
        beat = values.get(f"metasync_{process}_heartbeat_timestamp_seconds", 0.0)
        max_age = float(opts["max_age"])
        if beat and time.time() - beat > max_age:
            raise CommandError(f"{process}: main loop last seen {time.time() - beat:.0f}s ago (> {max_age:g}s)",
                               returncode=1)
        self.stdout.write(f"ok: {process} metrics on {base}/metrics")

    @staticmethod
    def _check_ingest(values: dict[str, float]) -> None:
        if values.get("metasync_ingest_connected") != 1.0:
            raise CommandError("ingest is not connected to the MQTT broker (metasync_ingest_connected != 1)",
                               returncode=1)

    @staticmethod
    def _check_cdc(values: dict[str, float]) -> None:
        """Alive is enough: a second copy standing by (slot held by another) is healthy too; a
        missing slot is /readyz's and the alerts' business."""

    @staticmethod
    def _check_worker(values: dict[str, float]) -> None:
        """The answer comes from the main process; the heartbeat gauge (below) covers its event loop."""
