"""The Celery application, configured from Django settings (``CELERY_*``).

It also wires what every Celery process needs: logging from ``settings.LOGGING`` with the task's
id bound as correlation id, and worker metrics across forks. For the latter it points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory *before* the first metasync metric is created
(``celery -A metasync worker`` imports this module before any task module), so nothing that creates
metrics may be imported before that. Why, and how :mod:`metasync.metrics` serves the pool's metrics:
docs/metrics.md, "Celery workers: one endpoint for the whole prefork pool"; logging: "Logs".
"""

from __future__ import annotations

import logging.config
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from celery import Celery, signals
from django.conf import settings
from django.db import close_old_connections

from metasync import logging as metasync_logging
from metasync.bootstrap import configure_or_exit

configure_or_exit()


def _celery_subcommand() -> str | None:
    """``worker``, ``beat``, … when this process is the ``celery`` command line, else None."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is None or "celery" not in (argv0.name, argv0.parent.name):
        return None
    for candidate in ("worker", "beat", "flower"):
        if candidate in sys.argv[1:]:
            return candidate
    return None


def _remove_orphaned_metrics_dirs() -> None:
    """Directories of killed workers (no warm shutdown removed them) on this host."""
    for path in Path(tempfile.gettempdir()).glob("metasync-metrics-*"):
        match = re.search(r"-(\d+)-[^-]+$", path.name)
        if not match or not path.is_dir() or path.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(match[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass


def _enable_multiprocess_metrics() -> str | None:
    """Point prometheus_client at a fresh per-worker directory; returns it (None: metrics off)."""
    if _celery_subcommand() != "worker" or not settings.WORKER_METRICS_PORT:
        return None
    process = "".join(c if c.isalnum() or c in "-_" else "_" for c in settings.METASYNC_PROCESS)
    _remove_orphaned_metrics_dirs()
    path = tempfile.mkdtemp(prefix=f"metasync-metrics-{process}-{os.getpid()}-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    if "prometheus_client" in sys.modules:
        # Celery loads its CLI plug-ins before `-A metasync`, and Flower's imports prometheus_client
        # (for metrics of its own). The value store is chosen at import time: choose again. Every
        # metric created from now on - all of metasync's, their modules load later - is shared.
        from prometheus_client import REGISTRY, values  # noqa: PLC0415 - only once it was imported already

        values.ValueClass = values.get_value_class()
        early = sorted(name for name in getattr(REGISTRY, "_names_to_collectors", {}) if name.startswith("metasync_"))
        if early:
            sys.stderr.write(f"metasync: metrics created before multiprocess mode are not shared: {early}\n")
    return path


METRICS_DIR = _enable_multiprocess_metrics()

# Creates metrics: imported only now that the value store is chosen (docs/metrics.md, "Celery workers").
from metasync import metrics  # noqa: E402

app = Celery("metasync")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# --- logging -----------------------------------------------------------------------------------
@signals.setup_logging.connect
def _configure_logging(**kwargs: object) -> None:
    """A receiver here stops Celery from installing its own root handlers and plain format."""
    logging.config.dictConfig(settings.LOGGING)


@signals.task_prerun.connect
def _bind_task(task_id: str | None = None, task: object = None, **kwargs: object) -> None:
    # Connections are kept across tasks (CELERY_DB_REUSE_MAX); drop one that broke (e.g. a
    # PostgreSQL restart) or outlived CONN_MAX_AGE before the task uses it.
    close_old_connections()
    metasync_logging.replace(cid=f"task-{task_id}", task_id=task_id, task_name=getattr(task, "name", None))


@signals.task_postrun.connect
def _unbind_task(**kwargs: object) -> None:
    metasync_logging.replace()


# --- worker metrics (only when METRICS_DIR is set) ------------------------------------------------
@signals.worker_init.connect
def _start_metrics_server(**kwargs: object) -> None:
    if METRICS_DIR:
        metrics.start_worker_exporter(settings.WORKER_METRICS_PORT, METRICS_DIR)


@signals.worker_process_init.connect
def _child_started(**kwargs: object) -> None:
    if METRICS_DIR:
        metrics.worker_child_started()


@signals.worker_process_shutdown.connect
def _child_exiting(pid: int | None = None, **kwargs: object) -> None:
    if METRICS_DIR:
        metrics.worker_child_exited(pid or os.getpid())


@signals.heartbeat_sent.connect
def _heartbeat(**kwargs: object) -> None:
    if METRICS_DIR:
        metrics.worker_heartbeat()


@signals.worker_shutdown.connect
def _stop_metrics_server(**kwargs: object) -> None:
    if METRICS_DIR:
        metrics.stop_worker_exporter()
