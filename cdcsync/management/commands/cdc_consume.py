"""``cdc_consume``: the logical-replication consumer daemon (docs/cdc.md).

healthchecks' ``sendalerts`` shape: signals only set a flag; the loop calls
:meth:`Consumer.poll_once` (one unit of work) and pauses only when it found nothing.
Safe to kill at any instant: the slot advances only after the pending rows commit. A lost
database connection (PostgreSQL restarted, network cut) is not fatal: the daemon reconnects with
a capped backoff, claims the slot again and goes on from the slot's confirmed position (at most
the last poll is read again; marking pending is idempotent).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from prometheus_client import start_http_server

from cdcsync import metrics
from cdcsync.consumer import Consumer, replication_connection

log = logging.getLogger("cdcsync")

GAUGES_EVERY = 5.0
RECONNECT_MAX_SECONDS = 30.0  # cap of the backoff between reconnection attempts


class Command(BaseCommand):
    help = "Consume uns_meta_slot (pgoutput) and turn committed catalog changes into debounced pending rows."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Prometheus port (default CDC_METRICS_PORT; 0 = off)")
        parser.add_argument("--setup-only", action="store_true",
                            help="verify the publication, create the slot if missing, and exit (so that"
                                 " changes made before the daemon's first start are captured)")

    def handle(self, *args: object, **opts: Any) -> None:
        if opts["setup_only"]:
            with replication_connection() as conn:
                Consumer(conn).setup()
            return
        self.stop_requested = threading.Event()  # set by SIGTERM/SIGINT
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        port = opts["metrics_port"] if opts["metrics_port"] is not None else settings.CDC_METRICS_PORT
        if port:
            start_http_server(int(port), addr=settings.METRICS_BIND_ADDRESS)
        self.delay = 1.0
        while not self.stop_requested.is_set():
            try:
                self._consume()
            except (psycopg.OperationalError, OperationalError, InterfaceError) as exc:
                # PostgreSQL restarted or unreachable: nothing is lost (the slot only advanced past
                # committed work), so reconnect and carry on from the slot's confirmed position.
                connection.close()
                if self.stop_requested.is_set():
                    break
                log.error("database connection lost (%s: %s); reconnecting in %.0fs",
                          exc.__class__.__name__, str(exc).strip()[:200], self.delay)
                self._pause(self.delay)
                self.delay = min(self.delay * 2, RECONNECT_MAX_SECONDS)
        log.info("cdc_consume stopped")

    def _consume(self) -> None:
        """One database session: claim the slot, set it up, poll until stopped (or the connection breaks)."""
        with replication_connection() as conn:
            consumer = Consumer(conn)
            waited_since = None
            while not consumer.claim():
                metrics.HEARTBEAT.set_to_current_time()  # standing by is healthy
                if self.stop_requested.is_set():
                    return
                if waited_since is None:
                    waited_since = time.monotonic()
                    log.info("another cdc_consume holds slot %s; standing by (retrying every %gs)",
                             consumer.slot, settings.CDC_STANDBY_POLL_SECONDS)
                self._pause(settings.CDC_STANDBY_POLL_SECONDS)
            if waited_since is not None:
                log.info("took over slot %s after standing by for %.1fs", consumer.slot,
                         time.monotonic() - waited_since)
            consumer.setup()
            self.delay = 1.0  # connected and set up: the next loss starts the backoff again
            last_gauges = 0.0
            while not self.stop_requested.is_set():
                rows = consumer.poll_once()
                metrics.HEARTBEAT.set_to_current_time()  # a hung poll ages it: `healthcheck cdc` fails
                close_old_connections()
                if time.monotonic() - last_gauges >= GAUGES_EVERY:
                    last_gauges = time.monotonic()
                    consumer.export_gauges()
                if rows == 0:
                    self._pause(settings.CDC_POLL_SECONDS)

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_requested.is_set() and time.monotonic() < deadline:
            time.sleep(min(0.1, seconds))

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested.set()
