"""Web's metrics are right with several gunicorn workers (prometheus_client multiprocess mode)."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stack import daemon_database_url, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _healthz_requests(text: str) -> float:
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "django_http_requests_total_by_view_transport_method_total"
               and s.labels.get("view") == "healthz")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_metrics_of_three_gunicorn_workers_add_up(tmp_path):
    """OBS-01: 30 requests spread over 3 gunicorn workers show as 30 on every scrape, whichever worker answers."""
    import os

    port = free_port()
    env = {**os.environ, "DATABASE_URL": daemon_database_url(), "METASYNC_PROCESS": "test-gunicorn"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "gunicorn.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "metasync.wsgi:application", "-c",
                             "python:metasync.gunicorn_conf", "--bind", f"127.0.0.1:{port}", "--workers", "3"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> str:
        with urllib.request.urlopen(base + path, timeout=10) as answer:  # noqa: S310 - our loopback server
            return answer.read().decode()

    try:
        def up() -> bool:
            try:
                return bool(get("/healthz"))
            except OSError:
                assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
                return False

        wait_for(up, 60, "gunicorn to answer /healthz")
        before = _healthz_requests(get("/metrics"))
        for _ in range(30):
            get("/healthz")
        assert [_healthz_requests(get("/metrics")) - before for _ in range(6)] == [30.0] * 6
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
