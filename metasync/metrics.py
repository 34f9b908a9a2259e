"""Serving Prometheus metrics: the Celery worker exporter and the web's ``/metrics`` view.

The metrics themselves live with the stage they describe (``ingest/metrics.py``,
``ingest/tasks.py``, ``cdcsync/metrics.py``, ``canary/metrics.py``); docs/metrics.md lists them.
A prefork worker's main process serves the aggregate of its pool processes' mmap files (the
directory is set by :mod:`metasync.celery`) and drops the gauge files of children that are gone:
docs/metrics.md, "Celery workers: one endpoint for the whole prefork pool".
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from django.conf import settings
from prometheus_client import CollectorRegistry, Gauge, multiprocess, start_http_server
from prometheus_client.core import Metric
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
        _server, _thread = start_http_server(port, addr=settings.METRICS_BIND_ADDRESS, registry=worker_registry(path))
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
