"""Metrics on every process, JSON logs with correlation ids and no secrets, health endpoints
(OBS-01, OBS-02, SEC-03; docs/metrics.md).

The Celery worker is a real prefork worker subprocess (``run_worker``): births are applied and a
batch is pushed to an in-process Canary mock, a pool child is SIGKILLed, and its aggregated
metrics endpoint, its log file and ``manage.py healthcheck worker`` are checked.
"""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import psycopg
import pytest
import redis
from celery import Celery
from django.core.management import CommandError, call_command
from django.db import connection
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from births import birth, prod
from cleanup import truncate_uns_meta
from metasync.logging import ContextFilter, JsonFormatter, RedactFilter, RotatingFileHandler, bind, current, redact
from stack import DEVSTACK_ENV, Daemon, daemon_database_url, daemon_redis_url, flush_redis, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent.parent
OBS_REDIS_DB = 11  # not the stack's (15) nor the canary fixture's (14)
WORKER_PROCESS = "test-obs-worker"
MOCK_TOKEN = "obs-mock-api-token-not-logged"

# docs/metrics.md golden signals -> (process exporting it, metric name)
GOLDEN_SIGNALS = {
    "births received": ("ingest", "metasync_ingest_frames_received_total"),
    "bytes": ("ingest", "metasync_ingest_bytes_received_total"),
    "births applied/rejected": ("worker", "metasync_births_total"),
    "decode errors": ("worker", "metasync_births_rejected_total"),
    "metrics new/changed/unchanged/retired": ("worker", "metasync_birth_metrics_total"),
    "birth apply seconds": ("worker", "metasync_birth_apply_seconds"),
    "CDC events": ("cdc", "metasync_cdc_events_total"),
    "pending count": ("cdc", "metasync_sync_pending_metrics"),
    "oldest pending age": ("cdc", "metasync_sync_pending_oldest_age_seconds"),
    "slot lag bytes": ("cdc", "metasync_cdc_slot_lag_bytes"),
    "retained WAL": ("cdc", "metasync_cdc_slot_retained_wal_bytes"),
    "Canary requests by outcome": ("worker", "metasync_canary_requests_total"),
    "retries": ("worker", "metasync_canary_retries_total"),
    "circuit state": ("worker", "metasync_canary_circuit_state"),
    "rate-limit waits": ("worker", "metasync_canary_rate_limit_waits_total"),
    "request latency": ("worker", "metasync_canary_request_seconds"),
    "end-to-end latency": ("worker", "metasync_end_to_end_seconds"),
}


# --------------------------------------------------------------------------------------------
# helpers


def families(text: str) -> dict[str, str]:
    """metric name (counters with ``_total``) -> type, from a Prometheus text page."""
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):  # the creation-time gauges of counters and histograms
            continue
        name = family.name + ("_total" if family.type == "counter" and not family.name.endswith("_total") else "")
        out[name] = family.type
    return out


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(page: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


def get(url: str, timeout: float = 3.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def process_registry(*modules: str) -> dict[str, str]:
    """metasync_ metrics registered by a fresh process that imports ``modules`` (what that daemon exports)."""
    code = ("import importlib, json; from prometheus_client import REGISTRY\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "print('REGISTRY=' + json.dumps({f.name + ('_total' if f.type == 'counter' else ''): f.type"
            " for f in REGISTRY.collect() if f.name.startswith('metasync_')}))")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "METASYNC_PROCESS": "obs-registry"})
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("REGISTRY="))
    return json.loads(line.removeprefix("REGISTRY="))


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# the worker run (module scope: one worker, several assertions)


@dataclass
class WorkerRun:
    port: int
    group: str
    frame_ids: list[int]
    bad_frame_id: int
    metric_count: int
    killed_pid: int
    before_kill: dict
    after_kill: dict
    final: dict
    final_text: str
    gauge_files_of_killed: list[str]
    log_file: Path
    console: str
    metrics_dir: str
    metrics_dir_removed: bool
    healthy: subprocess.CompletedProcess
    unhealthy_after_stop: subprocess.CompletedProcess
    secrets: dict[str, str] = field(default_factory=dict)


def _frame_status(ids: list[int]) -> dict[int, str]:
    from ingest.models import BirthFrame

    return dict(BirthFrame.objects.filter(id__in=ids).values_list("id", "status"))


@pytest.fixture(scope="module")
def run_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[WorkerRun]:
    from canary.client import SESSION_KEY
    from catalog.models import Metric
    from cdcsync.pending import mark_now
    from devtools.canary_mock import CanaryMock, make_server
    from ingest.ledger import store_frame

    tmp = tmp_path_factory.mktemp("obs-worker")
    port, token = free_port(), uuid.uuid4().hex[:8]
    redis_url = daemon_redis_url(OBS_REDIS_DB)
    flush_redis(redis_url)
    mock = CanaryMock(MOCK_TOKEN)
    server = make_server("127.0.0.1", 0, mock)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    database_url = daemon_database_url()
    env = {
        **os.environ,
        "METASYNC_ENV_FILE": str(DEVSTACK_ENV), "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "DATABASE_CONN_MAX_AGE": "0", "PYTHONUNBUFFERED": "1", "METASYNC_PROCESS": WORKER_PROCESS,
        "LOG_LEVEL": "INFO", "LOG_FORMAT": "json", "LOG_FILE": str(tmp / "{process}.log"),
        "WORKER_METRICS_PORT": str(port), "CANARY_URL": f"{server.url}/api/v1",
        "CANARY_VIEWS_URL": f"{server.url}/api/v2", "CANARY_API_TOKEN": MOCK_TOKEN,
        "CANARY_CLIENT_ID": f"obs-{token}", "CANARY_BACKOFF_SECONDS": "0.01",
    }
    worker = Daemon("celery worker (obs)",
                    [sys.executable, "-m", "celery", "-A", "metasync", "worker", "-Q", "births,default,canary",
                     "--pool", "prefork", "--concurrency", "2", "-n", f"obs-{token}@%h", "--without-mingle",
                     "--without-gossip"],
                    env, tmp / "console.log")
    sender = Celery("obs-test", broker=redis_url, set_as_current=False)
    group = f"Tobs{token}"

    def scrape() -> str:
        return get(f"http://127.0.0.1:{port}/metrics")

    def log_records() -> list[dict]:
        return json_lines((tmp / f"{WORKER_PROCESS}.log").read_text()) if (tmp / f"{WORKER_PROCESS}.log").exists() \
            else []

    def context() -> str:
        return worker.tail(80)

    try:
        worker.start()
        wait_for(lambda: worker.alive() and scrape(), 60, "the worker's metrics endpoint", context=context)
        with django_db_blocker.unblock():
            # 1. three births, one per device, through the births queue
            frame_ids = [store_frame(f"spBv1.0/{group}/DBIRTH/Edge1/Dev{i}",
                                     birth(*(prod(f"Area/Tag{i}_{k}", alias=k + 1) for k in range(5))))
                         for i in range(3)]
            for frame_id in frame_ids:
                sender.send_task("ingest.tasks.process_birth", args=[frame_id], queue="births")
            wait_for(lambda: set(_frame_status(frame_ids).values()) == {"applied"}, 60, "the births to be applied",
                     context=context)
            # 2. their metrics pending now -> flush (default queue) -> push_batches (canary queue) -> mock
            metric_ids = list(Metric.objects.filter(device__group_id=group).values_list("id", flat=True))
            mark_now(metric_ids, reason="obs test")
            sender.send_task("canary.tasks.flush_due", queue="default")

            def acked() -> bool:
                with connection.cursor() as cur:
                    cur.execute("SELECT count(*) FROM uns_meta.canary_sync_state WHERE metric_id = ANY(%s)",
                                [metric_ids])
                    return cur.fetchone()[0] == len(metric_ids)

            wait_for(acked, 60, "Canary to acknowledge the births' metrics", context=context)
            wait_for(lambda: value(samples(scrape()), "metasync_canary_batches_total", outcome="acked") >= 1, 30,
                     "the acknowledged batch to be counted", context=context)
            before_kill = samples(scrape())

            # 3. SIGKILL the pool child that applied the first frame; billiard replaces it
            applied_by = next(r["pid"] for r in log_records()
                              if r.get("frame_id") == frame_ids[0] and r["logger"] == "ingest.tasks")
            main = psutil.Process(worker.proc.pid)  # type: ignore[union-attr]
            os.kill(applied_by, signal.SIGKILL)
            wait_for(lambda: len([c for c in main.children() if c.pid != applied_by and c.is_running()]) == 2, 30,
                     "billiard to replace the killed pool child", context=context)
            after_kill = samples(scrape())
            metrics_dir = next(r["message"] for r in log_records() if r["logger"] == "metasync.metrics")
            metrics_dir = metrics_dir.split("multiprocess directory ", 1)[1].rstrip(")")
            # per-process gauges ("all", "live*") of the dead child: dropped at the scrape above
            gauge_files = [p.name for p in Path(metrics_dir).glob(f"gauge_*_{applied_by}.db")
                           if p.name.startswith(("gauge_all_", "gauge_live"))]

            # 4. a frame that does not decode
            bad = store_frame(f"spBv1.0/{group}/DBIRTH/Edge1/Bad", b"\xff\xff\xff")
            sender.send_task("ingest.tasks.process_birth", args=[bad], queue="births")
            wait_for(lambda: _frame_status([bad]).get(bad) == "rejected", 60, "the bad frame to be rejected",
                     context=context)
            final_text = wait_for(lambda: (t := scrape()) and value(samples(t), "metasync_births_total",
                                                                       status="rejected") == 1 and t,
                                  30, "the rejection to be counted", context=context)

        session_token = (redis.Redis.from_url(redis_url).get(SESSION_KEY) or b"").decode()
        check_env = {**env, "METASYNC_PROCESS": "obs-healthcheck"}
        healthy = subprocess.run([sys.executable, "manage.py", "healthcheck", "worker"], cwd=ROOT, env=check_env,
                                 capture_output=True, text=True, timeout=60)
    finally:
        worker.stop()
        sender.close()
        server.shutdown()
        server.server_close()
    unhealthy = subprocess.run([sys.executable, "manage.py", "healthcheck", "worker", "--timeout", "1"], cwd=ROOT,
                               env=check_env, capture_output=True, text=True, timeout=60)
    secrets = {"database password": urlsplit(database_url).password or "", "Canary API token": MOCK_TOKEN,
               "Canary session token": session_token}
    yield WorkerRun(port=port, group=group, frame_ids=frame_ids, bad_frame_id=bad, metric_count=len(metric_ids),
                    killed_pid=applied_by, before_kill=before_kill, after_kill=after_kill,
                    final=samples(final_text), final_text=final_text, gauge_files_of_killed=gauge_files,
                    log_file=tmp / f"{WORKER_PROCESS}.log", console=worker.text(), metrics_dir=metrics_dir,
                    metrics_dir_removed=not Path(metrics_dir).exists(), healthy=healthy,
                    unhealthy_after_stop=unhealthy, secrets=secrets)
    with django_db_blocker.unblock():
        truncate_uns_meta()  # what the worker committed must not reach the module's other tests


# --------------------------------------------------------------------------------------------
# OBS-01 metrics


@pytest.mark.django_db
def test_web_metrics_expose_django_and_pipeline_state(client):
    """OBS-01: the web's /metrics has django-prometheus's request metrics and the metasync_ state gauges."""
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    names = families(text)
    assert "django_http_requests_total_by_method_total" in names
    for name in ("metasync_ledger_received_frames", "metasync_ledger_oldest_received_age_seconds",
                 "metasync_sync_batches_in_flight", "metasync_state_query_ok"):
        assert names.get(name) == "gauge", name
    assert value(samples(text), "metasync_state_query_ok") == 1.0


def test_ingest_and_cdc_registries_hold_their_golden_signals():
    """OBS-01: what ingest_births and cdc_consume register (and serve on their ports) includes
    the docs/metrics.md signals of their stage."""
    registries = {"ingest": process_registry("ingest.management.commands.ingest_births"),
                  "cdc": process_registry("cdcsync.management.commands.cdc_consume")}
    missing = {signal_: name for signal_, (process, name) in GOLDEN_SIGNALS.items()
               if process in registries and name not in registries[process]}
    assert missing == {}


def test_worker_serves_the_golden_signals_of_all_its_pool_processes(run_worker):
    """OBS-01: a prefork worker's WORKER_METRICS_PORT shows the births and Canary signals of
    docs/metrics.md, aggregated over its pool children."""
    names = families(run_worker.final_text)
    missing = {s: name for s, (process, name) in GOLDEN_SIGNALS.items() if process == "worker" and name not in names}
    assert missing == {}
    page, n = run_worker.before_kill, len(run_worker.frame_ids)
    assert value(page, "metasync_births_total", status="applied") == n
    assert value(page, "metasync_birth_apply_seconds_count") == n
    assert value(page, "metasync_birth_metrics_total", outcome="new") == run_worker.metric_count
    assert value(page, "metasync_canary_requests_total", method="storeData", outcome="good") >= 1
    assert value(page, "metasync_canary_request_seconds_count", method="storeData") >= 1
    assert value(page, "metasync_end_to_end_seconds_count") == run_worker.metric_count
    assert value(page, "metasync_canary_tags_pushed_total") == run_worker.metric_count
    assert value(page, "metasync_canary_circuit_state") == 0
    assert value(page, "metasync_worker_heartbeat_timestamp_seconds") > time.time() - 300


def test_worker_metrics_survive_a_killed_pool_child(run_worker):
    """OBS-01: SIGKILL of the child that applied a frame loses none of its counts; its per-process
    gauges are dropped; a later frame adds to the same totals."""
    n = len(run_worker.frame_ids)
    for page in (run_worker.after_kill, run_worker.final):
        assert value(page, "metasync_births_total", status="applied") == n
        assert value(page, "metasync_birth_apply_seconds_count") >= n
    assert value(run_worker.final, "metasync_births_total", status="rejected") == 1
    assert value(run_worker.final, "metasync_births_rejected_total", cause="decode") == 1
    assert value(run_worker.final, "metasync_birth_apply_seconds_count") == n + 1
    assert run_worker.gauge_files_of_killed == []
    assert run_worker.metrics_dir_removed, f"{run_worker.metrics_dir} left behind after warm shutdown"


def test_every_metric_is_documented(run_worker, client, db):
    """OBS-01: docs/metrics.md lists every metasync_ metric of every process."""
    doc = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    exported = set(process_registry("ingest.management.commands.ingest_births"))
    exported |= set(process_registry("cdcsync.management.commands.cdc_consume"))
    tasks = [f"{app}.tasks" for app in ("ingest", "catalog", "cdcsync", "canary", "monitoring")
             if (ROOT / app / "tasks.py").exists()]
    exported |= set(process_registry("metasync.celery", "canary.client", "canary.breaker", "metasync.metrics", *tasks))
    exported |= {n for n in families(run_worker.final_text) if n.startswith("metasync_")}
    exported |= {n for n in families(client.get("/metrics").content.decode()) if n.startswith("metasync_")}
    undocumented = sorted(n for n in exported if f"`{n}`" not in doc)
    assert undocumented == [], "add them to docs/metrics.md"


# --------------------------------------------------------------------------------------------
# OBS-02 logs


def test_worker_logs_are_json_lines_following_frames_to_the_push(run_worker):
    """OBS-02: every line of the worker's log file is one JSON object with time, level, logger,
    process, message and cid; process_birth logs under cid frame-<id> with the frame id and its
    task id; the push logs its batch id and the ids of the frames whose changes it carried."""
    records = json_lines(run_worker.log_file.read_text())
    assert records
    for record in records:
        assert {"time", "level", "logger", "process", "pid", "message", "cid"} <= set(record), record
        assert record["process"] == WORKER_PROCESS
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"]), record["time"]
    for frame_id in run_worker.frame_ids:
        applied = [r for r in records if r["logger"] == "ingest.tasks" and r.get("frame_id") == frame_id]
        assert applied, f"no process_birth record for frame {frame_id}"
        assert applied[0]["cid"] == f"frame-{frame_id}"
        assert applied[0]["task_name"] == "ingest.tasks.process_birth"
        assert re.fullmatch(r"[0-9a-f-]{36}", applied[0]["task_id"])
        assert "applied" in applied[0]["message"]
    pushed = [r for r in records if r.get("batch_ids") and "acknowledged" in r["message"]]
    assert pushed
    assert sorted({f for r in pushed for f in r["frame_ids"]}) == sorted(run_worker.frame_ids)
    for r in pushed:  # the push task's cid spans its batches; the record lists those acknowledged
        span = re.fullmatch(r"batch-(\d+)|batches-(\d+)-(\d+)", r["cid"])
        assert span, r
        low, high = (int(span[1]),) * 2 if span[1] else (int(span[2]), int(span[3]))
        assert low <= min(r["batch_ids"]) and max(r["batch_ids"]) <= high, r
        assert r["task_name"] == "canary.tasks.push_batches" and re.fullmatch(r"[0-9a-f-]{36}", r["task_id"])
    # Celery's own task lines carry the task id too
    assert any(r["logger"] == "celery.app.trace" and r.get("task_id") for r in records)


def test_ingest_logs_a_stored_frame_under_its_correlation_id():
    """OBS-02: the frame gets cid frame-<id> when ingest stores it; the enqueue happens under it."""
    from datetime import UTC, datetime

    from ingest.mqtt import Backlog, Frame, LedgerWriter

    stream, seen = io.StringIO(), []
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter("ingest"))
    handler.addFilter(RedactFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ingest.mqtt")
    logger.addHandler(handler)
    try:
        backlog = Backlog(10, 10_000_000)
        backlog.put(Frame("spBv1.0/G/DBIRTH/E/D", b"payload", datetime.now(UTC)))
        writer = LedgerWriter(backlog, store=lambda frame: 4242, enqueue=lambda frame_id: seen.append(dict(current())))
        assert writer.drain_one(timeout=0)
    finally:
        logger.removeHandler(handler)
    (record,) = [r for r in json_lines(stream.getvalue()) if "stored" in r["message"]]
    assert record["cid"] == "frame-4242" and record["frame_id"] == 4242 and record["process"] == "ingest"
    assert seen == [{"cid": "frame-4242", "frame_id": 4242}]


def test_secrets_are_redacted_from_emitted_logs(tmp_path):
    """OBS-02, SEC-03: through the real logging configuration (a management command's process),
    a record carrying the MQTT password, the Canary API token, a Canary session token and a DSN
    password - in the message, its arguments, extra fields and a traceback - comes out with
    each replaced by ***, and the rest of the line intact."""
    mqtt_password = f"mqtt-pw-{uuid.uuid4().hex}"
    api_token = f"canary-api-{uuid.uuid4().hex}"
    session_token = f"sess-{uuid.uuid4().hex}"
    dsn_password = f"dsn-pw-{uuid.uuid4().hex}"
    dsn = f"postgres://metasync_cdc:{dsn_password}@db.example:5432/metasync?sslmode=verify-full"
    code = f"""
import logging
from django.conf import settings
log = logging.getLogger("obs.redaction")
log.info("connecting with password %s and token %s", settings.MQTT_PASSWORD, settings.CANARY_API_TOKEN)
log.warning("storeData body %s", {{"sessionToken": {session_token!r}, "properties": {{}}}},
            extra={{"request": {{"apiToken": settings.CANARY_API_TOKEN, "sessionToken": {session_token!r}}},
                    "dsn": {dsn!r}}})
log.info("conninfo host=db.example password={dsn_password} dbname=metasync")
try:
    raise ConnectionError("could not connect to " + {dsn!r})
except ConnectionError:
    log.exception("cdc connection failed")
"""
    env = {**os.environ, "MQTT_PASSWORD": mqtt_password, "CANARY_API_TOKEN": api_token, "CDC_DATABASE_URL": dsn,
           "METASYNC_PROCESS": "obs-redaction", "LOG_FORMAT": "json", "LOG_STREAM": "stderr",
           "LOG_FILE": str(tmp_path / "{process}.log")}
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for text in (result.stderr, (tmp_path / "obs-redaction.log").read_text()):
        records = [r for r in json_lines(text) if r["logger"] == "obs.redaction"]
        assert len(records) == 4, text
        for secret in (mqtt_password, api_token, session_token, dsn_password):
            assert secret not in text
        assert records[0]["message"] == "connecting with password *** and token ***"
        assert records[1]["message"] == "storeData body {'sessionToken': '***', 'properties': {}}"
        assert records[1]["request"] == {"apiToken": "***", "sessionToken": "***"}
        assert records[1]["dsn"] == "postgres://metasync_cdc:***@db.example:5432/metasync?sslmode=verify-full"
        assert records[2]["message"] == "conninfo host=db.example password=*** dbname=metasync"
        assert records[3]["message"] == "cdc connection failed"
        assert "ConnectionError: could not connect to postgres://metasync_cdc:***@db.example" in records[3]["exc_info"]


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:pw-123456@redis:6379/0", "redis://:***@redis:6379/0"),
    ('{"sessionToken": "abc-def-123", "x": 1}', '{"sessionToken": "***", "x": 1}'),
    ("apiToken=abcdef&tags=1", "apiToken=***&tags=1"),
    ("PGPASSWORD=hunter22 psql", "PGPASSWORD=*** psql"),
    ("Authorization: Bearer eyJhbGciOi.x.y", "Authorization: Bearer ***"),
    ("frame 7 applied {'new': 3} tokens bucket full", "frame 7 applied {'new': 3} tokens bucket full"),
])
def test_redaction_patterns(text, expected):
    """SEC-03: secret-shaped values are redacted even when no setting holds them; plain text is untouched."""
    assert redact(text, secrets=()) == expected


def test_worker_logs_hold_no_secrets(run_worker):
    """SEC-03: neither the worker's log file nor its console output contains the database
    password, the Canary API token or the Canary session token it used."""
    texts = {"log file": run_worker.log_file.read_text(), "console": run_worker.console}
    for what, text in texts.items():
        for name, secret in run_worker.secrets.items():
            assert secret and secret not in text, f"{name} in the worker's {what}"


def _write_lines(handler: logging.Handler, tag: str, count: int, close: bool = True) -> None:
    logger = logging.getLogger(f"obs.rotation.{tag}")
    logger.propagate = False
    logger.addHandler(handler)
    for i in range(count):
        logger.warning("%s line %05d %s", tag, i, "x" * 60)
    logger.removeHandler(handler)
    if close:
        handler.close()


def test_log_file_rotation_is_safe_with_several_processes(tmp_path):
    """OBS-02: forked processes sharing one rotating log file (Celery's prefork pool) lose no line."""
    path, per_process, writers = tmp_path / "shared.log", 1500, 3
    handler = RotatingFileHandler(str(path), maxBytes=64 * 1024, backupCount=100)
    handler.setFormatter(JsonFormatter())
    _write_lines(handler, "parent", 1, close=False)  # children inherit an open stream and lock, as Celery's do
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_write_lines, args=(handler, f"p{i}", per_process)) for i in range(writers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    handler.close()
    files = sorted(tmp_path.glob("shared.log*"))
    records = [r for f in files if not f.name.endswith(".lock") for r in json_lines(f.read_text())]
    assert len(records) == writers * per_process + 1
    assert len({r["message"] for r in records}) == writers * per_process + 1
    assert len([f for f in files if not f.name.endswith(".lock")]) > 3  # it did rotate


def test_log_file_directory_must_exist():
    """A LOG_FILE in a missing directory stops the process at start with one line naming LOG_FILE."""
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "LOG_FILE": "/nonexistent-dir/{process}.log"}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("metasync: configuration error: LOG_FILE:")


def test_correlation_context_nests_and_resets():
    """OBS-02: bound correlation fields nest (a task inside a frame) and are gone after the block."""
    with bind(cid="frame-1", frame_id=1):
        with bind(task_id="t"):
            assert dict(current()) == {"cid": "frame-1", "frame_id": 1, "task_id": "t"}
        assert dict(current()) == {"cid": "frame-1", "frame_id": 1}
    assert dict(current()) == {}


# --------------------------------------------------------------------------------------------
# health


@pytest.mark.django_db
def test_healthz_answers_without_touching_dependencies(client, settings):
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "process": settings.METASYNC_PROCESS}


@pytest.fixture
def temporary_slot(settings):
    """A logical slot of the test database, named in CDC_SLOT, gone when the connection closes."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    name = f"t_obs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput', true)", (name,))
        settings.CDC_SLOT = name
        yield name


@pytest.mark.django_db
def test_readyz_is_ready_when_every_dependency_answers(client, temporary_slot):
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready" and body["failed"] == []
    assert set(body["checks"]) == {"database", "replication_slot", "redis", "mqtt"}
    assert body["checks"]["replication_slot"]["detail"]["slot"] == temporary_slot


@pytest.mark.django_db
def test_readyz_names_the_failing_dependency_without_secrets(client, settings):
    closed = free_port()
    settings.REDIS_URL = f"redis://:redis-pw-not-shown@127.0.0.1:{closed}/0"
    settings.CDC_SLOT = f"t_missing_{uuid.uuid4().hex[:8]}"
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unready"
    assert body["failed"] == ["replication_slot", "redis"]
    assert body["checks"]["database"]["ok"] is True and body["checks"]["mqtt"]["ok"] is True
    assert "ConnectionError" in body["checks"]["redis"]["error"]
    assert settings.CDC_SLOT in body["checks"]["replication_slot"]["error"]
    assert "redis-pw-not-shown" not in response.content.decode()


@pytest.fixture
def fake_daemon():
    """A metrics endpoint like ingest's, with metasync_ingest_connected settable."""
    registry = CollectorRegistry()
    connected = Gauge("metasync_ingest_connected", "1 while connected", registry=registry)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield port, connected
    server.shutdown()
    server.server_close()


def test_healthcheck_command_asks_the_daemon(fake_daemon):
    port, connected = fake_daemon
    connected.set(1)
    out = io.StringIO()
    call_command("healthcheck", "ingest", "--port", str(port), stdout=out)
    assert out.getvalue().startswith("ok: ingest")
    connected.set(0)
    with pytest.raises(CommandError, match="not connected to the MQTT broker"):
        call_command("healthcheck", "ingest", "--port", str(port))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(CommandError, match="not reachable"):
        call_command("healthcheck", "cdc", "--port", str(closed), "--timeout", "1")


def test_worker_healthcheck_asks_the_workers_main_process(run_worker):
    assert run_worker.healthy.returncode == 0, run_worker.healthy.stderr[-2000:]
    assert run_worker.healthy.stdout.startswith("ok: worker")
    assert run_worker.unhealthy_after_stop.returncode == 1
    assert "not reachable" in run_worker.unhealthy_after_stop.stderr


@pytest.mark.django_db(transaction=True)
def test_web_healthcheck_uses_healthz(live_server):
    out = io.StringIO()
    call_command("healthcheck", "web", "--host", "localhost", "--port", str(live_server.thread.port), stdout=out)
    assert out.getvalue().startswith("ok: web")
