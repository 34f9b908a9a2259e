"""Health checks see progress, not only a live process: the ingest and CDC main-loop heartbeats."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from stack import free_port, running_stack


@pytest.fixture
def daemon_page():
    """A metrics page like ingest's and cdc's, with the connection and heartbeat gauges settable."""
    registry = CollectorRegistry()
    gauges = {name: Gauge(name, name, registry=registry) for name in (
        "metasync_ingest_connected", "metasync_ingest_heartbeat_timestamp_seconds",
        "metasync_cdc_heartbeat_timestamp_seconds")}
    port = free_port()
    server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port, gauges
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("process", ["ingest", "cdc"])
def test_healthcheck_fails_when_the_main_loop_stops(daemon_page, process):
    """OBS-01: a process still answering but whose loop has not gone round for > --max-age is unhealthy."""
    port, gauges = daemon_page
    gauges["metasync_ingest_connected"].set(1)
    beat = gauges[f"metasync_{process}_heartbeat_timestamp_seconds"]
    beat.set(time.time())
    call_command("healthcheck", process, "--port", str(port))
    beat.set(time.time() - 120)
    with pytest.raises(CommandError, match="main loop last seen"):
        call_command("healthcheck", process, "--port", str(port), "--max-age", "60")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_ingest_and_cdc_export_a_fresh_heartbeat(tmp_path: Path):
    """OBS-01: the real ingest_births and cdc_consume stamp their heartbeat as their loops go round
    (and serve it on 127.0.0.1 only)."""
    with running_stack(tmp_path, components=("ingest", "cdc")) as stack:
        for scrape, name in ((stack.metrics, "metasync_ingest_heartbeat_timestamp_seconds"),
                             (stack.cdc_metrics, "metasync_cdc_heartbeat_timestamp_seconds")):
            stack.wait_for(lambda s=scrape, n=name: time.time() - s().get(n, 0.0) < 5, 30, f"{name} within 5 s")
        call_command("healthcheck", "ingest", "--port", str(stack.metrics_port), "--max-age", "5")
        call_command("healthcheck", "cdc", "--port", str(stack.cdc_metrics_port), "--max-age", "5")
        # and their metrics servers listen on loopback only (METRICS_BIND_ADDRESS, docs/security.md)
        ports = {stack.metrics_port, stack.cdc_metrics_port}
        listening = {c.laddr.port: c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port in ports}
        assert listening == dict.fromkeys(ports, "127.0.0.1")
