"""``ingest_births``: the MQTT subscriber daemon (docs/architecture.md).

Follows healthchecks' ``sendalerts``: the signal handler only sets a flag, the
loop calls :meth:`LedgerWriter.drain_one` (one unit of work) until stopped.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Any

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, connection
from prometheus_client import start_http_server

from ingest import lifecycle, metrics
from ingest.ledger import store_frame
from ingest.mqtt import Backlog, BirthSubscriber, Frame, LedgerWriter
from ingest.tasks import process_birth
from metasync.mqtt import config_from_settings
from sparkplug.host import subscriptions

log = logging.getLogger("ingest")

STATUS_EVERY = 60.0  # seconds between "still alive" log lines


def _store(frame: Frame) -> int:
    try:
        return store_frame(frame.topic, frame.payload, frame.received_at)
    except (DatabaseError, psycopg.Error):
        connection.close()  # a broken connection is replaced on the next attempt
        raise


def _enqueue(frame_id: int) -> None:
    process_birth.apply_async(args=(frame_id,), queue="births")


class Command(BaseCommand):
    help = ("Subscribe to DBIRTH frames, store each in the birth ledger, enqueue process_birth(frame_id); "
            "track NBIRTH/NDEATH/DDEATH lifecycle; optionally act as the Sparkplug primary host.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--topic", default=None,
                            help="one subscription instead of the host subscriptions (default MQTT_TOPIC)")
        parser.add_argument("--metrics-port", type=int, default=None,
                            help="Prometheus port (default INGEST_METRICS_PORT; 0 = off)")

    def handle(self, *args: object, **opts: Any) -> None:
        self.stopping = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        port = opts["metrics_port"] if opts["metrics_port"] is not None else settings.INGEST_METRICS_PORT
        if port:
            start_http_server(int(port), addr=settings.METRICS_BIND_ADDRESS)
        backlog = Backlog(settings.INGEST_QUEUE_MAX_FRAMES, settings.INGEST_QUEUE_MAX_BYTES)
        topic = opts["topic"] or settings.MQTT_TOPIC
        topics = [str(topic)] if topic else subscriptions(settings.MQTT_SHARE_GROUP)
        subscriber = BirthSubscriber(config_from_settings(), topics, backlog, groups=settings.SPARKPLUG_GROUPS,
                                     host_id=settings.SPARKPLUG_HOST_ID)
        writer = LedgerWriter(backlog, _store, _enqueue, lifecycle=lifecycle.record)
        subscriber.start()
        last_status = time.monotonic()
        while not self.stopping:
            writer.drain_one(timeout=0.5)
            metrics.HEARTBEAT.set_to_current_time()  # a hung loop ages it: `healthcheck ingest` fails
            if time.monotonic() - last_status >= STATUS_EVERY:
                last_status = time.monotonic()
                log.info("ingest alive: connected=%s stored=%d backlog=%d",
                         subscriber.connected.is_set(), writer.stored, len(backlog))
        log.info("stopping: disconnecting, then storing the %d frame(s) still in the backlog", len(backlog))
        subscriber.stop()
        while writer.drain_one(timeout=0):
            pass
        log.info("ingest stopped after storing %d frame(s)", writer.stored)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
