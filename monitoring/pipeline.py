"""The pipeline's state, read from the database: the backlog between stages and the web's
``/metrics`` view (shared by ``cdc_status``, the watchdogs and the gauges; docs/metrics.md)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from canary import quarantine
from cdcsync.pending import backlog
from metasync.metrics import worker_registry
from monitoring.health import has_monitoring_token

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingStatus:
    pending: int  # metrics pending (CDC → flush)
    due: int  # of those, due now
    oldest_age_seconds: float  # since the oldest pending change
    inflight: int  # metrics in a batch Canary has not answered yet
    batches: dict[str, int]  # open or unsuccessful push batches by status
    quarantined: int = 0  # metrics whose change Canary refused, waiting for a change or a steward


def pending_status() -> PendingStatus:
    """The backlog between CDC and Canary: pending metrics, in-flight metrics, open push batches."""
    pending, due, oldest = backlog()
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM uns_meta.canary_inflight")
        inflight = cur.fetchone()[0]
        cur.execute("SELECT status, count(*) FROM uns_meta.canary_push_batches"
                    " WHERE status IN ('queued', 'sending', 'failed', 'rejected') GROUP BY status")
        batches = dict(cur.fetchall())
    return PendingStatus(pending, due, oldest, inflight, batches, quarantine.count())


class AppStateCollector(Collector):
    """Pipeline state read from the database at scrape time (web process only)."""

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    @staticmethod
    def _families() -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("metasync_ledger_received_frames",
                                "Ledger frames waiting for process_birth (status received)")
        yield GaugeMetricFamily("metasync_ledger_oldest_received_age_seconds",
                                "Age of the oldest ledger frame still waiting for process_birth")
        yield GaugeMetricFamily("metasync_sync_batches_in_flight", "Push batches not yet answered by Canary",
                                labels=["status"])
        yield GaugeMetricFamily("metasync_sync_inflight_metrics", "Metrics in a push batch not yet acknowledged")
        yield GaugeMetricFamily("metasync_canary_quarantined_tags",
                                "Metrics whose change Canary refused, quarantined until it changes or a steward"
                                " pushes it again")
        yield GaugeMetricFamily("metasync_state_query_ok", "1 when the web could read the pipeline state above")

    def collect(self) -> Iterable[Metric]:
        families = list(self._families())
        received: tuple | None = None
        status: PendingStatus | None = None
        try:
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute("SET LOCAL statement_timeout = 2000")
                cur.execute("SELECT count(*), coalesce(extract(epoch FROM now() - min(received_at)), 0)"
                            " FROM uns_meta.birth_frames WHERE status = 'received'")
                received = cur.fetchone()
                status = pending_status()  # the figures cdc_status and the watchdogs use
        except DatabaseError as exc:
            log.warning("metrics: pipeline state not readable (%s)", exc.__class__.__name__)
        ok = received is not None and status is not None
        if received is not None and status is not None:
            families[0].add_metric([], received[0])
            families[1].add_metric([], float(received[1]))
            for open_status in ("queued", "sending"):
                families[2].add_metric([open_status], status.batches.get(open_status, 0))
            families[3].add_metric([], status.inflight)
            families[4].add_metric([], status.quarantined)
        families[5].add_metric([], 1 if ok else 0)
        return families


_app_registry = CollectorRegistry(auto_describe=False)
_app_registry.register(AppStateCollector())


def process_registry() -> CollectorRegistry:
    """This process's metrics, or all processes' when PROMETHEUS_MULTIPROC_DIR is set (gunicorn)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return worker_registry(path) if path else REGISTRY


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics`` of the web process (replaces django-prometheus's view, same content plus app state);
    only with the bearer token when MONITORING_TOKEN is set (docs/security.md)."""
    if not has_monitoring_token(request):
        return HttpResponse("a bearer token is required\n", status=401, content_type="text/plain")
    body = generate_latest(process_registry()) + generate_latest(_app_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
