"""gunicorn settings of web (``gunicorn -c python:metasync.gunicorn_conf``): several workers whose
metrics ``/metrics`` sums, in prometheus_client's multiprocess mode (docs/metrics.md).

Each worker writes its samples under a fresh ``PROMETHEUS_MULTIPROC_DIR`` made here, in the master,
before any worker imports prometheus_client; a worker that exits has its live gauges dropped.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

_metrics_dir = tempfile.mkdtemp(prefix="metasync-web-metrics-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
if "prometheus_client" in sys.modules:
    # importing this module ran metasync/__init__ (the Celery app) first, which may have loaded
    # prometheus_client: its value store is chosen at import, so choose again (as metasync/celery.py)
    from prometheus_client import values

    values.ValueClass = values.get_value_class()


def child_exit(server: object, worker: object) -> None:
    from prometheus_client import multiprocess  # noqa: PLC0415 - only in the master, after the fork

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    shutil.rmtree(_metrics_dir, ignore_errors=True)
