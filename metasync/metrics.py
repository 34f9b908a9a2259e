"""Serving Prometheus metrics: the Celery worker exporter and the web's ``/metrics`` view.

The metrics themselves live with the stage they describe (``ingest/metrics.py``,
``ingest/tasks.py``, ``cdcsync/metrics.py``, ``canary/metrics.py``); docs/metrics.md lists them.

**Celery prefork workers.** ``metasync/celery.py`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh
directory before prometheus_client is imported, so every process of the worker (main and
pool children, which inherit the variable) keeps its values in mmap files named by its pid.
The main process serves the aggregate on ``WORKER_METRICS_PORT``: counters and histograms are
summed over all files, including those of children that exited (their work still counts);
gauges follow their ``multiprocess_mode``. When a child exits, its ``live*`` gauge files are
removed (``mark_process_dead``) — in the child itself on a clean exit, and by a sweep at every
scrape for children that were killed — as are its per-pid ``all`` gauges, which would
otherwise be reported forever. The HTTP server runs in a thread of the main process; a child
forked later inherits its listening socket and closes it at once.

**Web.** django-prometheus's request/response metrics plus a few ``metasync_`` gauges read
from the database at scrape time (ledger backlog, batches in flight). Under gunicorn with
several workers set ``PROMETHEUS_MULTIPROC_DIR`` for gunicorn too (docs/metrics.md); the view
then aggregates like the Celery exporter.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, generate_latest, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_server: WSGIServer | None = None
_heartbeat: Gauge | None = None
_FILE_PID = re.compile(r"_(\d+)\.db$")


# --------------------------------------------------------------------------------------------
# Celery worker exporter


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def forget_dead_processes(path: str) -> list[int]:
    """Drop the gauge files of processes that no longer exist; returns their pids."""
    dead = set()
    for file in glob.glob(os.path.join(path, "gauge_*.db")):
        match = _FILE_PID.search(file)
        if match and not _pid_alive(int(match[1])):
            dead.add(int(match[1]))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
        for file in glob.glob(os.path.join(path, f"gauge_all_{pid}.db")):
            try:
                os.remove(file)
            except FileNotFoundError:
                pass
    return sorted(dead)


class LiveMultiProcessCollector(Collector):
    """``MultiProcessCollector`` that first forgets the gauges of vanished processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._collector = multiprocess.MultiProcessCollector(None, path=path)

    def collect(self) -> Iterable[Metric]:
        forget_dead_processes(self.path)
        return self._collector.collect()


def worker_registry(path: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LiveMultiProcessCollector(path))
    return registry


def start_worker_exporter(port: int, path: str) -> None:
    """In the worker's main process (``worker_init``): serve the aggregated registry on ``port``."""
    global _server, _heartbeat
    _heartbeat = Gauge("metasync_worker_heartbeat_timestamp_seconds",
                       "Unix time of the worker's last event heartbeat (its main loop is alive)",
                       multiprocess_mode="max")
    try:
        _server, _thread = start_http_server(port, registry=worker_registry(path))
    except OSError as exc:
        log.error("worker metrics: cannot listen on port %d (%s); this worker exports no metrics", port, exc)
        return
    log.info("worker metrics on port %d (multiprocess directory %s)", port, path)


def worker_child_started() -> None:
    """In a freshly forked pool child: let go of the parent's listening socket."""
    if _server is not None:
        try:
            _server.socket.close()
        except OSError:
            pass


def worker_child_exited(pid: int) -> None:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        multiprocess.mark_process_dead(pid, path)


def worker_heartbeat() -> None:
    if _heartbeat is not None:
        _heartbeat.set(time.time())


def stop_worker_exporter() -> None:
    """At warm shutdown of the main process: stop serving and delete the directory."""
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.path.basename(path).startswith("metasync-metrics-"):
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Web


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
        yield GaugeMetricFamily("metasync_state_query_ok", "1 when the web could read the pipeline state above")

    def collect(self) -> Iterable[Metric]:
        from django.db import DatabaseError, connection, transaction

        from cdcsync.status import pending_status

        received, batches, inflight, families = None, None, None, list(self._families())
        try:
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute("SET LOCAL statement_timeout = 2000")
                cur.execute("SELECT count(*), coalesce(extract(epoch FROM now() - min(received_at)), 0)"
                            " FROM uns_meta.birth_frames WHERE status = 'received'")
                received = cur.fetchone()
                backlog = pending_status()  # the figures cdc_status and the watchdogs use
                batches, inflight = backlog["batches"], backlog["inflight"]
        except DatabaseError as exc:
            log.warning("metrics: pipeline state not readable (%s)", exc.__class__.__name__)
        ok = received is not None
        if ok:
            families[0].add_metric([], received[0])
            families[1].add_metric([], float(received[1]))
            for status in ("queued", "sending"):
                families[2].add_metric([status], batches.get(status, 0))  # type: ignore[union-attr]
            families[3].add_metric([], inflight)
        families[4].add_metric([], 1 if ok else 0)
        return families


_app_registry = CollectorRegistry(auto_describe=False)
_app_registry.register(AppStateCollector())


def process_registry() -> CollectorRegistry:
    """This process's metrics, or all processes' when PROMETHEUS_MULTIPROC_DIR is set (gunicorn)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return worker_registry(path) if path else REGISTRY


def metrics_view(request):  # type: ignore[no-untyped-def]
    """``/metrics`` of the web process (replaces django-prometheus's view, same content plus app state)."""
    from django.http import HttpResponse
    from prometheus_client import CONTENT_TYPE_LATEST

    body = generate_latest(process_registry()) + generate_latest(_app_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
