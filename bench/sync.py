"""Sync benchmark (`make bench-sync` -> bench/results/sync.json), one run:

Set-up: a fresh database (``metasync_bench_sync``) holding 100,000 metrics x 10 properties (a synthetic
birth applied by ``process_birth`` in a child process), then ONE transaction updating 850,000 of
those property rows (every metric: 8 keys, plus ``delete`` for every other metric; real value
changes: doubles +1, strings suffixed, booleans negated, ints +1), read through two slots created
just before it.

(a) raw decode baseline: ``pg_recvlogical`` (replication protocol, pgoutput proto 1, no decoding on
    our side) streaming that WAL from its own slot to a file until the commit -> rows/s;
(b) ``cdc_consume``'s code path (``Consumer.poll_once`` in a loop, in a child process, timed from
    the first poll) until ``uns_meta.sync_pending`` holds all 100,000 metrics -> row changes/s;
    target >= 20,000/s and >= 0.3 x (a);
(c) draining those 100,000 pending metrics (made due now; no sync state yet, so each needs its full
    mapped set) with default batching: ``flush_due`` in child process(es) started together, real
    Celery workers on the ``canary`` queue, the ``canary_mock`` daemon answering after 20 ms; timed
    from the flush start until the mock holds every tag and no pending / in-flight row remains;
    target <= 10 s; the mock's busiest 1-s windows are recorded. Before it the tables the set-up
    rewrote are vacuumed and analyzed and a checkpoint is taken, so that (c) measures the drain and
    not autovacuum and the checkpointer cleaning up after the 850,000-row update (in production the
    180 s debounce gives them that time);
(d) the same for 10,000 metrics (their sync state deleted) with ``CANARY_BATCH_TAGS=1``: the two
    worker processes share ``CANARY_RATE_LIMIT_RPS=500``; the mock (``limit_rps=rate_limit_rps=500``)
    would answer 429 above it. Targets: <= 500 requests in every 1-s window (integer and sliding),
    no violation, no 429, and >= 80 % of the cap achieved over the busy seconds (the first and
    the last, partial, seconds excluded);
(e) end to end, birth received -> Canary ``Good``: ``store_frame`` + the births task, a births/default
    worker, ``celery beat`` (flush every 2 s), ``cdc_consume`` with ``CDC_DEBOUNCE_SECONDS=5`` and the
    canary workers; 4 devices x 2,500 metrics are born (not measured), then 12 re-births (one every
    2 s, rotating over the devices, 5 % of a device's metrics changed in one property each). Per
    changed metric: ``canary_sync_state.acked_at`` - the ``received_at`` of the birth frame of its
    latest version; p50 / p95 / max; target p95 <= debounce + 10 s.

Runtime state lives in Redis database 13 (flushed at start), the replication slots are
``bench_recv_slot`` / ``bench_slot`` (dropped at the end), every subprocess is stopped (SIGTERM,
deadline, SIGKILL of its process group) and the database dropped, also on failure.

    .venv/bin/python bench/sync.py [--scale 0.02] [--d-metrics N] [--pool prefork --concurrency 2]

``--scale`` multiplies the metric counts of (a)-(d) and the device size of (e) (for development
runs; the targets are only meaningful at scale 1). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    ROOT,
    Mock,
    Proc,
    Procs,
    celery,
    drop_bench_database,
    free_port,
    machine_facts,
    now_ms,
    percentile,
    say,
    setup_django,
    use_bench_database,
    wait_for,
    with_path,
    worker_pong,
    write_result,
)

METRICS = 100_000
D_METRICS = 10_000
E_DEVICES, E_DEVICE_METRICS, E_BIRTHS, E_CHANGE_RATE, E_INTERVAL = 4, 2_500, 12, 0.05, 2.0
E_DEBOUNCE_SECONDS = 5.0
E_DEBOUNCE_MAX_SECONDS = 30.0
MOCK_LATENCY_MS = 20
LIMIT_RPS = 500
REDIS_DB = 13
DATABASE = "metasync_bench_sync"  # not bench/ingest.py's: both may run at once
SLOT, RECV_SLOT = "bench_slot", "bench_recv_slot"
PUBLICATION = "uns_meta_pub"
API_TOKEN = "bench-api-token-not-a-secret"  # only ever accepted by the bench's own mock
# 8 of the 10 keys for every metric, `delete` for every other one: 8.5 rows per metric
CHANGED_ROWS = "key NOT IN ('Quality', 'delete') OR (key = 'delete' AND metric_id % 2 = 0)"
TARGETS = {"b_row_changes_per_second_min": 20_000, "b_vs_a_min": 0.3, "c_drain_seconds_max": 10.0,
           "d_requests_per_window_max": LIMIT_RPS, "d_http_429_max": 0, "d_achieved_share_min": 0.8,
           "e_p95_seconds_max": E_DEBOUNCE_SECONDS + 10.0}

# --------------------------------------------------------------------------------------------
# CPU accounting (where a phase's CPU went: this machine has 2 cores and is shared)

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds of the process and of its children it has reaped)."""
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[int(entry.name)] = (int(rest[1]), sum(int(x) for x in rest[11:15]) / _TICK)
    return out


def _machine_busy() -> tuple[int, int]:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class CpuMeter:
    """CPU seconds used during a phase by process trees (exited descendants included, through their
    parents' reaped-children counters): the canary workers, the mock, all of PostgreSQL (the devstack's
    server: other users' work included), the machine's busy share, and the PostgreSQL sessions opened
    in the bench database (a Celery task closes Django's connections before and after it runs)."""

    def __init__(self, groups: dict[str, list[Proc]]) -> None:
        self.groups = groups
        backend = sql("SELECT pg_backend_pid()")[0][0]
        self.postmaster = _proc_stats().get(backend, (0, 0.0))[0]  # the backend's parent
        self.start = self._sample()

    def _sample(self) -> tuple[dict[int, tuple[int, float]], int, tuple[int, int]]:
        sql("SELECT pg_stat_clear_snapshot()")
        sessions = sql("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")[0][0]
        return _proc_stats(), sessions, _machine_busy()

    def stop(self) -> dict:
        stats0, sessions0, busy0 = self.start
        time.sleep(0.6)  # session statistics reach pg_stat_database within ~0.5 s
        stats1, sessions1, busy1 = self._sample()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in stats1.items():
            children.setdefault(ppid, []).append(pid)

        def tree(root: int) -> set[int]:
            found, todo = set(), [root]
            while todo:
                pid = todo.pop()
                found.add(pid)
                todo += children.get(pid, [])
            return found

        def used(pids: set[int]) -> float:
            return round(sum(stats1[p][1] - (stats0[p][1] if p in stats0 else 0.0) for p in pids if p in stats1), 2)

        out = {name: used(set().union(*(tree(p.proc.pid) for p in procs if p.proc)))
               for name, procs in self.groups.items()}
        out["postgres_all"] = used(tree(self.postmaster)) if self.postmaster > 1 else None
        out["db_sessions_opened"] = sessions1 - sessions0
        busy, total = busy1[0] - busy0[0], busy1[1] - busy0[1]
        out["machine_busy_share"] = round(busy / total, 3) if total else None
        out["machine_cpu_seconds"] = round(busy / _TICK, 2)
        return out


# --------------------------------------------------------------------------------------------
# Child modes


def child_apply(frame_id: int) -> None:
    setup_django()
    from ingest.processing import process_frame

    started = time.monotonic()
    outcome = process_frame(frame_id)
    print(json.dumps({"seconds": time.monotonic() - started, "status": outcome.status, "counts": outcome.counts,
                      "reason": outcome.reason}))


def child_consume(slot: str, expected: int) -> None:
    """(b): the consumer's own loop body until every expected metric is pending."""
    setup_django()
    from django.db import connection

    from cdcsync.consumer import Consumer, replication_connection
    from cdcsync.slot import slot_status

    def pending() -> int:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM uns_meta.sync_pending")
            return cur.fetchone()[0]

    polls: list[dict] = []
    with replication_connection() as conn:
        consumer = Consumer(conn, slot=slot)
        consumer.setup()
        connection.ensure_connection()
        started = time.perf_counter()
        deadline = time.monotonic() + 1800
        marked = 0
        while marked < expected:
            t = time.perf_counter()
            rows = consumer.poll_once()
            marked = pending()
            polls.append({"rows": rows, "seconds": round(time.perf_counter() - t, 3), "pending": marked})
            if time.monotonic() > deadline:
                raise SystemExit(f"only {marked} of {expected} metrics pending after 1800 s")
            if rows == 0:
                time.sleep(0.05)
        seconds = time.perf_counter() - started
        t = time.perf_counter()
        idle_rows = consumer.poll_once()  # the next poll: nothing new, but see cdcsync.slot on restart_lsn
        idle = time.perf_counter() - t
        status = slot_status(conn, slot) or {}
    print(json.dumps({"seconds": seconds, "polls": polls, "slot_rows": sum(p["rows"] for p in polls),
                      "metrics_pending": marked, "next_poll_seconds": round(idle, 3), "next_poll_rows": idle_rows,
                      "retained_bytes_after": status.get("retained_bytes"),
                      "peak_rss_mb": round(_peak_rss_mb(), 1)}))


def child_flush() -> None:
    """(c)/(d): ``flush_due`` until nothing is due; starts on a line on stdin (all flushers at once)."""
    setup_django()
    from django.conf import settings
    from django.db import connection

    import canary.effective  # noqa: F401 - imported before the clock starts
    from canary.sync import flush_due
    from canary.tasks import enqueue_push

    connection.ensure_connection()
    print("ready", flush=True)
    sys.stdin.readline()
    started, cpu = time.perf_counter(), time.process_time()
    claimed = batches = calls = 0
    while True:
        done = flush_due(enqueue_push, max_seconds=3600)
        calls += 1
        claimed += done["claimed"]
        batches += done["batches"]
        if done["claimed"] == 0:
            break
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu,
                      "claimed": claimed, "batches": batches, "flush_due_calls": calls,
                      "batch_tags": settings.CANARY_BATCH_TAGS}), flush=True)


def run_child(*args: str, env: dict[str, str] | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, capture_output=True, text=True,
                         env=env or dict(os.environ))
    if out.returncode:
        raise RuntimeError(f"child {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_flushers(count: int, env: dict[str, str]) -> tuple[float, list[dict]]:
    """Start ``count`` flush children, release them together; returns (monotonic start, their reports)."""
    env = {**env, "METASYNC_PROCESS": "bench-flush"}
    children = [subprocess.Popen([sys.executable, __file__, "flush"], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    try:
        for child in children:
            line = child.stdout.readline()  # type: ignore[union-attr]
            if line.strip() != "ready":
                raise RuntimeError(f"flush child did not start: {line!r}\n{child.stderr.read()[-4000:]}")  # type: ignore[union-attr]
        started = time.monotonic()
        for child in children:
            child.stdin.write("go\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
        reports = []
        for child in children:
            out, err = child.communicate(timeout=3600)
            if child.returncode:
                raise RuntimeError(f"flush child failed:\n{err[-4000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return started, reports
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def rate_summary(stats: dict) -> dict:
    rate = stats["rate"]
    return {"requests": stats["requests_total"], "requests_by_method": stats["requests_by_method"],
            "http_429": stats["http_429"], "http_5xx": stats["http_5xx"], "status_codes": stats["status_codes"],
            "max_in_second_window": rate["max_in_second_window"],
            "max_in_sliding_window": rate["max_in_sliding_window"], "violations": rate["violations"],
            "sliding_violations": rate["sliding_violations"], "max_tags_per_request": stats["max_tags_per_request"],
            "max_body_bytes": stats["max_body_bytes"], "over_budget_requests": stats["over_budget_requests"],
            "rows_stored": stats["rows_stored"], "tags": stats["tags"]}


def busy_windows(stats: dict) -> tuple[list[int], float | None]:
    """Requests per 1-s window over the busy period, and their mean without the first and last windows."""
    windows = dict(stats["rate"].get("windows") or [])
    if not windows:
        return [], None
    counts = [windows.get(s, 0) for s in range(min(windows), max(windows) + 1)]
    middle = counts[1:-1]
    return counts, (sum(middle) / len(middle) if middle else None)


# --------------------------------------------------------------------------------------------
# Database helpers (bench process)


def sql(query: str, params: list | tuple | None = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def sync_counts(synced: bool = True) -> dict[str, int]:
    """Pending / in-flight / failed (cheap: EXISTS), and the sync states (a count) if asked."""
    (row,) = sql("SELECT EXISTS (SELECT 1 FROM uns_meta.sync_pending), EXISTS (SELECT 1 FROM uns_meta.canary_inflight),"
                 " (SELECT count(*) FROM uns_meta.canary_push_batches WHERE status IN ('failed', 'rejected'))")
    counts = dict(zip(("pending", "inflight", "failed"), row, strict=True))
    if synced:
        counts["synced"] = sql("SELECT count(*) FROM uns_meta.canary_sync_state")[0][0]
    return counts


def wait_drained(mock: Mock, *, synced: int, mock_tags: int, started: float, timeout: float,
                 procs: Procs) -> dict:
    """Poll (10 Hz, cheap queries first: the machine is small) until ``synced`` sync states exist and
    nothing is pending or in flight; seconds since ``started`` (and until the mock held every tag)."""
    mock_at = done_at = None
    deadline = time.monotonic() + timeout
    while done_at is None:
        if mock_at is None and mock.stats()["tags"] >= mock_tags:
            mock_at = time.monotonic()
        counts = sync_counts(synced=False)
        if counts["failed"]:
            sample = sql("SELECT id, status, error FROM uns_meta.canary_push_batches"
                         " WHERE status IN ('failed', 'rejected') LIMIT 3")
            raise RuntimeError(f"{counts['failed']} push batch(es) failed or rejected: {sample}\n{procs.tails()}")
        if mock_at is not None and not counts["pending"] and not counts["inflight"] \
                and sync_counts()["synced"] >= synced:
            done_at = time.monotonic()
        elif time.monotonic() > deadline:
            raise TimeoutError(f"not drained after {timeout:g}s: {sync_counts()}\n{procs.tails()}")
        else:
            for proc in procs.all:
                if proc.name.startswith("canary-worker"):
                    proc.check()
            time.sleep(0.1)
    return {"seconds": round(done_at - started, 3), "mock_all_tags_seconds": round(mock_at - started, 3)}


def batch_latency(since_id: int) -> dict:
    (row,) = sql("SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY e), percentile_cont(0.95)"
                 " WITHIN GROUP (ORDER BY e), max(e), sum(attempts - 1)::int FROM (SELECT extract(epoch FROM"
                 " updated_at - created_at)::float8 AS e, attempts FROM uns_meta.canary_push_batches"
                 " WHERE id > %s AND status = 'acked') b",
                 [since_id])
    n, p50, p95, top, retries = row
    return {"batches": n, "created_to_acked_p50_seconds": round(p50 or 0, 3),
            "created_to_acked_p95_seconds": round(p95 or 0, 3), "created_to_acked_max_seconds": round(top or 0, 3),
            "retried_attempts": int(retries or 0)}


def last_batch_id() -> int:
    return sql("SELECT coalesce(max(id), 0) FROM uns_meta.canary_push_batches")[0][0]


def parity(mock: Mock, metric_ids: list[int]) -> dict:
    """Mock state vs. the catalog's effective mapped properties of ``metric_ids``."""
    from canary.effective import effective_targets, load_mapping

    state = mock.get("state")["tags"]
    mapping = load_mapping()
    mismatched, keys, sample = 0, set(), None
    for i in range(0, len(metric_ids), 10_000):
        for target in effective_targets(metric_ids[i:i + 10_000], mapping).values():
            keys.add(len(target.properties))
            held = state.get(target.canary_id)
            if held != target.properties:
                mismatched += 1
                sample = sample or {"tag": target.canary_id, "catalog": target.properties, "mock": held}
    return {"checked": len(metric_ids), "mismatched": mismatched, "properties_per_tag": sorted(keys),
            "sample_mismatch": sample}


def cpu_summary(meter: CpuMeter, flushed: list[dict], stats: dict) -> dict:
    cpu = meter.stop()
    cpu["flushers"] = round(sum(f["cpu_seconds"] for f in flushed), 2)
    requests = stats["requests_by_method"].get("storeData", 0)
    if requests:
        cpu["workers_and_mock_cpu_ms_per_store_request"] = round(
            1000 * (cpu["canary_workers"] + cpu["canary_mock"]) / requests, 2)
        cpu["db_sessions_per_store_request"] = round(cpu["db_sessions_opened"] / requests, 2)
    return cpu


def worker_tasks(procs: Procs) -> dict[str, int]:
    """push_batches tasks each canary worker finished so far (from its log)."""
    done = re.compile(r"canary\.tasks\.push_batches\[[-0-9a-f]+\] succeeded")
    return {p.name: len(done.findall(p.text())) for p in procs.all if p.name.startswith("canary-worker")}


# --------------------------------------------------------------------------------------------
# The run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies metric counts (development: 0.02)")
    parser.add_argument("--d-metrics", type=int, default=None, help="metrics of (d) (default 10,000 x scale)")
    parser.add_argument("--workers", type=int, default=2, help="canary worker processes (spec: 2)")
    parser.add_argument("--pool", default="prefork", choices=("prefork", "threads", "solo"))
    parser.add_argument("--concurrency", type=int, default=2,
                        help="pool processes per canary worker (each sends CANARY_PUSH_THREADS batches at a time)")
    parser.add_argument("--flushers", type=int, default=1, help="flush_due processes working in parallel")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    setup_django()
    from django.conf import settings

    from metasync.celery import app as celery_app

    # Runtime state in Redis db 13, for this process and (through os.environ) every child.
    redis_url = with_path(settings.REDIS_URL, f"/{REDIS_DB}")
    os.environ["REDIS_URL"] = settings.REDIS_URL = settings.CELERY_BROKER_URL = redis_url
    celery_app.conf.broker_url = redis_url
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()

    use_bench_database(DATABASE)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    mock_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CANARY_URL": f"http://127.0.0.1:{mock_port}/api/v1",
           "CANARY_VIEWS_URL": f"http://127.0.0.1:{mock_port}/api/v2", "CANARY_API_TOKEN": API_TOKEN,
           "CANARY_CLIENT_ID": "bench-sync", "CANARY_RATE_LIMIT_RPS": str(LIMIT_RPS), "CDC_SLOT": SLOT,
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for key in ("CANARY_BATCH_TAGS", "CDC_DEBOUNCE_SECONDS", "CDC_DEBOUNCE_MAX_SECONDS", "SYNC_FLUSH_BATCH_METRICS"):
        env.pop(key, None)  # defaults unless a phase says otherwise
    procs = Procs(log_dir, env)
    result: dict = {"machine": machine_facts(), "scale": args.scale}
    failed = True
    try:
        run(args, result, procs, Mock(mock_port), mock_port, redis_url)
        failed = False
    except BaseException as exc:
        result["error"] = "".join(traceback.format_exception_only(exc)).strip()
        traceback.print_exc()
        print(procs.tails(), file=sys.stderr)
    finally:
        say("stopping subprocesses …")
        procs.stop()
        with contextlib.suppress(Exception):
            drop_slots()
        drop_bench_database(DATABASE)
        with contextlib.suppress(Exception):
            client = redis.Redis.from_url(redis_url)
            client.flushdb()  # no tasks or session left behind in db 13
            client.close()
        if failed or args.keep_logs:
            print(f"logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
    met = result.setdefault("met", {})
    if failed:
        met["completed"] = False
    result = json.loads(json.dumps(result, default=lambda o: float(o) if isinstance(o, Decimal) else str(o)))
    path = write_result("sync", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    if not met or not all(met.values()):
        sys.exit(1)


def settle_database(admin_conninfo: str) -> None:
    """VACUUM (ANALYZE) what the set-up rewrote, then CHECKPOINT: (c) measures the drain, not
    autovacuum and the checkpointer cleaning up after the 850,000-row update (in production the
    180 s debounce gives them that time before a flush)."""
    import psycopg

    say("settling the database (vacuum, analyze, checkpoint) …")
    with psycopg.connect(admin_conninfo, autocommit=True) as admin:
        admin.execute("VACUUM (ANALYZE) uns_meta.metric_properties, uns_meta.metrics, uns_meta.sync_pending")
        admin.execute("CHECKPOINT")


def drop_slots(timeout: float = 30.0) -> None:
    """Drop the bench's slots in the bench database (DROP DATABASE would drop idle ones too)."""
    from cdcsync.consumer import replication_connection

    with replication_connection() as conn:
        for name in (RECV_SLOT, SLOT):
            def dropped(name: str = name) -> bool:
                row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s"
                                   " AND database = current_database()", (name,)).fetchone()
                if row is None:
                    return True
                if row[0] is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    return False
                conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
                return True

            wait_for(dropped, timeout, f"replication slot {name} to be dropped", interval=0.2)


def run(args: argparse.Namespace, result: dict, procs: Procs, mock: Mock, mock_port: int, redis_url: str) -> None:
    from django.conf import settings

    from cdcsync.consumer import replication_connection
    from cdcsync.pending import mark_now
    from cdcsync.slot import ensure_slot, slot_status
    from devtools.edge import synthetic_birth
    from ingest.ledger import store_frame

    n = max(100, round(METRICS * args.scale))
    n -= n % 2
    d_n = min(n, args.d_metrics or max(10, round(D_METRICS * args.scale)))
    run_id = uuid.uuid4().hex[:6]
    host = socket.gethostname()
    result["config"] = {
        "metrics": n, "properties_per_metric": 10, "d_metrics": d_n, "mock_latency_ms": MOCK_LATENCY_MS,
        "limit_rps": LIMIT_RPS, "mock_rate_limit_rps": LIMIT_RPS, "canary_workers": args.workers,
        "worker_pool": args.pool, "worker_concurrency": args.concurrency, "flushers": args.flushers,
        "c_batch_tags": settings.CANARY_BATCH_TAGS, "d_batch_tags": 1,
        "push_task_batches": settings.CANARY_PUSH_TASK_BATCHES, "push_threads": settings.CANARY_PUSH_THREADS,
        "flush_threads": settings.SYNC_FLUSH_THREADS,
        "sync_flush_batch_metrics": settings.SYNC_FLUSH_BATCH_METRICS, "redis_db": REDIS_DB,
        "e_debounce_seconds": E_DEBOUNCE_SECONDS, "e_debounce_max_seconds": E_DEBOUNCE_MAX_SECONDS,
        "e_flush_every_seconds": settings.CELERY_BEAT_SCHEDULE["flush-due-changes"]["schedule"],
    }

    # --- set-up: 100k metrics x 10 properties --------------------------------------------------
    say(f"generating and applying a {n:,}-metric birth …")
    payload = synthetic_birth(n, round_no=0, change_rate=0.0, seed=1, timestamp=now_ms())
    applied = run_child("apply", str(store_frame(f"spBv1.0/Bench/DBIRTH/S{run_id}/Sync", payload)))
    del payload
    assert applied["status"] == "applied" and applied["counts"]["new"] == n, applied
    properties = sql("SELECT count(*) FROM uns_meta.metric_properties")[0][0]
    assert properties == 10 * n, properties
    setup: dict = {"birth_apply_seconds": round(applied["seconds"], 2), "property_rows": properties}
    result["setup"] = setup

    # The mock and the canary workers are started and ready before anything is timed (idle during (a)/(b)).
    say("starting the canary mock and workers …")
    procs.start("canary-mock", [sys.executable, "manage.py", "canary_mock", "--port", str(mock_port),
                                "--api-token", API_TOKEN, "--latency-ms", str(MOCK_LATENCY_MS),
                                "--limit-rps", str(LIMIT_RPS), "--rate-limit-rps", str(LIMIT_RPS),
                                "--transcript-size", "0"])
    workers = []
    for i in range(1, args.workers + 1):
        node = f"bench-canary{i}-{run_id}@{host}"
        proc = procs.start(f"canary-worker-{i}", celery(
            "worker", "-Q", "canary,sync", "--pool", args.pool, "--concurrency", str(args.concurrency), "-n", node,
            "--without-mingle", "--without-gossip", "-l", "INFO"))
        workers.append((node, proc))
    wait_for(mock.up, 60, "the canary mock to answer")
    for node, proc in workers:  # ready (and idle) before anything is timed
        wait_for(lambda node=node, proc=proc: worker_pong(redis_url, node, proc), 120, f"worker {node}")

    # --- (a) pg_recvlogical ---------------------------------------------------------------------
    with replication_connection() as conn:
        for name in (RECV_SLOT, SLOT):
            ensure_slot(conn, name)
        say("updating ~850,000 property rows in one transaction …")
        t = time.perf_counter()
        with conn.transaction():
            updated = conn.execute(
                "UPDATE uns_meta.metric_properties SET"
                " double_value = CASE WHEN type = 'double' THEN double_value + 1 ELSE double_value END,"
                " string_value = CASE WHEN type = 'string' THEN string_value || ' (bench)' ELSE string_value END,"
                " boolean_value = CASE WHEN type = 'boolean' THEN NOT boolean_value ELSE boolean_value END,"
                " int_value = CASE WHEN type = 'int' THEN int_value + 1 ELSE int_value END"
                f" WHERE {CHANGED_ROWS}").rowcount
        setup["update_seconds"] = round(time.perf_counter() - t, 2)
        setup["rows_updated"] = updated
        end_lsn = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]
        setup["wal_bytes_in_slot"] = slot_status(conn, SLOT)["retained_bytes"]
    touched = sql(f"SELECT count(DISTINCT metric_id) FROM uns_meta.metric_properties WHERE {CHANGED_ROWS}")[0][0]
    assert touched == n, (touched, n)

    say(f"(a) pg_recvlogical reading {updated:,} row changes …")
    admin = settings.DATABASE_ADMIN_URL or os.environ["DATABASE_URL"]
    conninfo = with_path(admin, "/" + settings.DATABASES["default"]["NAME"])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "changes.bin"
        t = time.perf_counter()
        # -E: stops at the first message or keepalive at/after the position flushed after the commit
        subprocess.run(["/usr/lib/postgresql/15/bin/pg_recvlogical", "-d", conninfo, "-S", RECV_SLOT, "--start",
                        "-E", end_lsn, "--no-loop", "-f", str(out), "-o", "proto_version=1",
                        "-o", f"publication_names={PUBLICATION}", "-F", "0"],
                       check=True, env={**os.environ, "PGAPPNAME": "bench_sync_recvlogical"}, capture_output=True,
                       timeout=1800)
        seconds = time.perf_counter() - t
        data = out.read_bytes()
    # pgoutput Commit: 'C', flags, 3 x int64, then pg_recvlogical's newline: the file ends with the commit
    ends_with_commit = len(data) >= 27 and data[-27:-26] == b"C"
    assert ends_with_commit, "pg_recvlogical output does not end with the transaction's Commit"
    a_rate = updated / seconds
    result["a_pg_recvlogical"] = {"seconds": round(seconds, 3), "rows_per_second": round(a_rate),
                                  "file_bytes": len(data), "ends_with_commit": ends_with_commit}
    del data
    say(f"(a) {seconds:.2f}s -> {a_rate:,.0f} rows/s")

    # --- (b) cdc_consume marking pending ----------------------------------------------------------
    say("(b) Consumer.poll_once until every metric is pending …")
    b = run_child("consume", SLOT, str(n))
    b_rate = updated / b["seconds"]
    result["b_cdc_consume"] = {
        "seconds": round(b["seconds"], 3), "row_changes": updated, "row_changes_per_second": round(b_rate),
        "vs_a_ratio": round(b_rate / a_rate, 3), "metrics_pending": b["metrics_pending"], "polls": b["polls"],
        "slot_rows": b["slot_rows"], "next_poll_seconds": b["next_poll_seconds"], "next_poll_rows": b["next_poll_rows"],
        "retained_bytes_after": b["retained_bytes_after"], "peak_rss_mb": b["peak_rss_mb"],
        "debounce_seconds": settings.CDC_DEBOUNCE_SECONDS}
    say(f"(b) {b['seconds']:.2f}s -> {b_rate:,.0f} row changes/s ({b_rate / a_rate:.2f} x a)")
    drop_slots()  # (e)'s cdc_consume creates bench_slot afresh

    # --- (c) drain 100k pending metrics, default batching ------------------------------------------
    cpu_groups = {"canary_workers": [proc for _, proc in workers],
                  "canary_mock": [p for p in procs.all if p.name == "canary-mock"]}
    all_ids = [r[0] for r in sql("SELECT id FROM uns_meta.metrics ORDER BY id")]
    due = sql("UPDATE uns_meta.sync_pending SET due_at = now() RETURNING metric_id")
    assert len(due) == n, len(due)
    settle_database(conninfo)
    mock.post("reset", {})
    since = last_batch_id()
    say(f"(c) draining {n:,} pending metrics ({args.flushers} flusher(s), {args.workers} x {args.pool} "
        f"{args.concurrency}) …")
    meter = CpuMeter(cpu_groups)
    started, flushed = run_flushers(args.flushers, procs.env)
    flush_seconds = max(f["seconds"] for f in flushed)
    say(f"(c) flush done in {flush_seconds:.2f}s; waiting for the pushes …")
    drained = wait_drained(mock, synced=n, mock_tags=n, started=started, timeout=max(300, n / 50), procs=procs)
    cpu = cpu_summary(meter, flushed, mock.stats())
    stats = mock.stats(windows=True)
    counts, _ = busy_windows(stats)
    store = stats["requests_by_method"].get("storeData", 0)
    result["c_drain"] = {
        "metrics": n, **drained, "flush_seconds": round(flush_seconds, 3),
        "flush_cpu_seconds": round(sum(f["cpu_seconds"] for f in flushed), 3),
        "flush_ms_per_1000_metrics": round(1000 * flush_seconds / n * 1000, 1),
        "flush_cpu_ms_per_1000_metrics": round(1000 * sum(f["cpu_seconds"] for f in flushed) / n * 1000, 1),
        "flush_batches": sum(f["batches"] for f in flushed),
        "push_requests_per_second": round(store / drained["seconds"], 1), "windows": counts,
        **rate_summary(stats), **batch_latency(since), "tasks_per_worker": worker_tasks(procs), "cpu": cpu}
    say(f"(c) drained in {drained['seconds']:.2f}s (flush {flush_seconds:.2f}s, {store} storeData, "
        f"max {stats['rate']['max_in_sliding_window']}/s)")
    say("(c) checking parity …")
    result["c_drain"]["parity"] = parity(mock, all_ids)

    # --- (d) 10k metrics, one tag per request, two workers sharing 500/s ----------------------------
    d_ids = all_ids[:d_n]
    sql("DELETE FROM uns_meta.canary_sync_state WHERE metric_id = ANY(%s)", [d_ids])
    mark_now(d_ids, reason="bench", delay=0)
    before = worker_tasks(procs)
    mock.post("reset", {})
    since = last_batch_id()
    say(f"(d) draining {d_n:,} metrics one tag per request …")
    meter = CpuMeter(cpu_groups)
    started, flushed = run_flushers(args.flushers, {**procs.env, "CANARY_BATCH_TAGS": "1"})
    flush_seconds = max(f["seconds"] for f in flushed)
    drained = wait_drained(mock, synced=n, mock_tags=d_n, started=started, timeout=max(600, d_n / 10),
                           procs=procs)
    cpu = cpu_summary(meter, flushed, mock.stats())
    stats = mock.stats(windows=True)
    counts, achieved = busy_windows(stats)
    after = worker_tasks(procs)
    result["d_rate_limited"] = {
        "metrics": d_n, **drained, "flush_seconds": round(flush_seconds, 3),
        "flush_ms_per_1000_metrics": round(1000 * flush_seconds / d_n * 1000, 1),
        "flush_batches": sum(f["batches"] for f in flushed), "windows": counts,
        "full_windows": len(counts[1:-1]), "achieved_rps": round(achieved, 1) if achieved is not None else None,
        "achieved_share_of_cap": round(achieved / LIMIT_RPS, 3) if achieved is not None else None,
        **rate_summary(stats), **batch_latency(since),
        "tasks_per_worker": {k: after[k] - before.get(k, 0) for k in after}, "cpu": cpu}
    say(f"(d) drained in {drained['seconds']:.2f}s; {achieved or 0:.0f} req/s over the full seconds, "
        f"max {stats['rate']['max_in_second_window']}/s (sliding {stats['rate']['max_in_sliding_window']}), "
        f"{stats['http_429']} x 429")
    result["d_rate_limited"]["parity"] = parity(mock, d_ids)

    # --- (e) end to end --------------------------------------------------------------------------
    from devtools.edge import changes_per_round
    from ingest.tasks import process_birth

    per_device = max(40, round(E_DEVICE_METRICS * args.scale))
    e_env = {"CDC_DEBOUNCE_SECONDS": str(E_DEBOUNCE_SECONDS), "CDC_DEBOUNCE_MAX_SECONDS": str(E_DEBOUNCE_MAX_SECONDS)}
    say("(e) starting cdc_consume, a births/default worker and beat …")
    cdc = procs.start("cdc", [sys.executable, "manage.py", "cdc_consume", "--metrics-port", "0"], **e_env)
    node = f"bench-worker-{run_id}@{host}"
    worker = procs.start("worker", celery("worker", "-Q", "births,default", "--pool", "prefork", "--concurrency",
                                          "2", "-n", node, "--without-mingle", "--without-gossip", "-l", "INFO"),
                         **e_env)
    beat = procs.start("beat", celery("beat", "-S", "django_celery_beat.schedulers:DatabaseScheduler",
                                      "--pidfile", str(procs.log_dir / "beat.pid"),
                                      "-s", str(procs.log_dir / "beat-schedule"), "-l", "INFO"), **e_env)
    wait_for(lambda: cdc.check() or f"replication slot {SLOT} " in cdc.text(), 60, "cdc_consume to set up its slot")
    wait_for(lambda: worker_pong(redis_url, node, worker), 120, f"worker {node}")
    wait_for(lambda: beat.check() or "Sending due task" in beat.text(), 60, "beat to send a task")
    mock.post("reset", {})

    edges = [f"E{run_id}x{i}" for i in range(E_DEVICES)]
    topics = [f"spBv1.0/Bench/DBIRTH/{edge}/Dev" for edge in edges]
    say(f"(e) first births of {E_DEVICES} x {per_device:,} metrics (not measured) …")
    for i, topic in enumerate(topics):
        process_birth.apply_async(args=[store_frame(topic, synthetic_birth(
            per_device, round_no=0, change_rate=E_CHANGE_RATE, seed=100 + i, timestamp=now_ms()))], queue="births")
    e_ids_sql = ("SELECT m.id FROM uns_meta.metrics m JOIN uns_meta.devices d ON d.id = m.device_id"
                 " WHERE d.edge = ANY(%s)")

    def settled() -> bool:
        (row,) = sql(f"SELECT count(*), count(s.metric_id) FROM ({e_ids_sql}) m"
                     " LEFT JOIN uns_meta.canary_sync_state s ON s.metric_id = m.id", [edges])
        counts = sync_counts(synced=False)
        return row == (E_DEVICES * per_device, E_DEVICES * per_device) and not counts["pending"] \
            and not counts["inflight"]

    wait_for(lambda: cdc.check() or settled(), 300, "the first births to reach the mock", interval=0.2)

    say(f"(e) {E_BIRTHS} re-births, one every {E_INTERVAL:g}s …")
    payloads = [(topics[(r - 1) % E_DEVICES], synthetic_birth(
        per_device, round_no=(r - 1) // E_DEVICES + 1, change_rate=E_CHANGE_RATE, seed=100 + (r - 1) % E_DEVICES,
        timestamp=now_ms() + r)) for r in range(1, E_BIRTHS + 1)]
    # Per changed metric: its ack - the receipt of the birth of its latest version, once the sync
    # state was written by a batch created after that version (sampled every 0.2 s, so each birth's
    # acks are seen before a later birth of the same device supersedes them).
    latency_sql = (
        "WITH measured AS (SELECT DISTINCT metric_id FROM uns_meta.metric_versions WHERE changed_by = ANY(%s)),"
        " last AS (SELECT DISTINCT ON (v.metric_id) v.metric_id, v.changed_by, v.changed_at"
        "          FROM uns_meta.metric_versions v JOIN measured USING (metric_id) ORDER BY v.metric_id, v.id DESC)"
        " SELECT last.metric_id, f.id, extract(epoch FROM s.acked_at - f.received_at)::float8,"
        "        coalesce(s.acked_at >= f.received_at AND b.created_at >= last.changed_at, false)"
        " FROM last JOIN uns_meta.birth_frames f ON last.changed_by = 'birth:' || f.id"
        " LEFT JOIN uns_meta.canary_sync_state s ON s.metric_id = last.metric_id"
        " LEFT JOIN uns_meta.canary_push_batches b ON b.id = s.batch_id")
    frames: list[int] = []
    samples: dict[tuple[int, int], float] = {}

    def sample() -> list[tuple]:
        cdc.check()
        rows = sql(latency_sql, [[f"birth:{f}" for f in frames]]) if frames else []
        for mid, frame, seconds, acked in rows:
            if acked:
                samples.setdefault((mid, frame), seconds)
        return rows

    next_at = time.monotonic()
    for topic, data in payloads:
        while time.monotonic() < next_at:
            sample()
            time.sleep(max(0.0, min(0.2, next_at - time.monotonic())))
        next_at += E_INTERVAL
        frame = store_frame(topic, data)
        process_birth.apply_async(args=[frame], queue="births")
        frames.append(frame)
    changed_by = [f"birth:{f}" for f in frames]

    def finished() -> bool:
        statuses = sql("SELECT status FROM uns_meta.birth_frames WHERE id = ANY(%s)", [frames])
        if any(s in ("rejected", "failed") for (s,) in statuses):
            raise RuntimeError(f"a birth was not applied: {statuses}")
        rows = sample()
        if len(statuses) < len(frames) or any(s != "applied" for (s,) in statuses):
            return False
        counts = sync_counts(synced=False)
        return bool(rows) and all(r[3] for r in rows) and not counts["pending"] and not counts["inflight"]

    wait_for(finished, 300, "every changed metric to be acknowledged", interval=0.2)
    latencies = list(samples.values())
    per_frame: dict[int, list[float]] = {}
    for (_mid, frame), seconds in samples.items():
        per_frame.setdefault(frame, []).append(seconds)
    versions = dict(sql("SELECT changed_by, count(*) FROM uns_meta.metric_versions WHERE changed_by = ANY(%s)"
                        " GROUP BY changed_by", [changed_by]))
    e_ids = [r[0] for r in sql(e_ids_sql, [edges])]
    stats = mock.stats()
    result["e_end_to_end"] = {
        "births": len(frames), "devices": E_DEVICES, "metrics_per_device": per_device,
        "changed_per_birth": changes_per_round(per_device, E_CHANGE_RATE), "interval_seconds": E_INTERVAL,
        "changes": sum(versions.values()), "changes_measured": len(latencies),
        "p50_seconds": round(percentile(latencies, 50), 3), "p95_seconds": round(percentile(latencies, 95), 3),
        "max_seconds": round(max(latencies), 3), "min_seconds": round(min(latencies), 3),
        "per_birth": [{"versions": versions.get(f"birth:{f}", 0), "measured": len(per_frame.get(f, [])),
                       "max_seconds": round(max(per_frame.get(f, [0.0])), 3)} for f in frames],
        "debounce_seconds": E_DEBOUNCE_SECONDS, **rate_summary(stats), "parity": parity(mock, e_ids)}
    say(f"(e) p50 {percentile(latencies, 50):.2f}s p95 {percentile(latencies, 95):.2f}s max {max(latencies):.2f}s "
        f"over {len(latencies)} metric changes")

    # --- targets ---------------------------------------------------------------------------------
    c, d, e = result["c_drain"], result["d_rate_limited"], result["e_end_to_end"]
    result["targets"] = TARGETS
    result["met"] = {
        "b_ge_20000_row_changes_per_s": result["b_cdc_consume"]["row_changes_per_second"]
        >= TARGETS["b_row_changes_per_second_min"],
        "b_ge_0_3_x_a": result["b_cdc_consume"]["vs_a_ratio"] >= TARGETS["b_vs_a_min"],
        "c_drained_le_10s": c["seconds"] <= TARGETS["c_drain_seconds_max"],
        "c_parity": c["parity"]["mismatched"] == 0,
        "d_le_500_per_window": max(d["max_in_second_window"], d["max_in_sliding_window"])
        <= TARGETS["d_requests_per_window_max"],
        "d_no_violations": d["violations"] == 0 and d["sliding_violations"] == 0,
        "d_zero_429": d["http_429"] <= TARGETS["d_http_429_max"],
        "d_ge_80pct_of_cap": d["achieved_share_of_cap"] is not None
        and d["achieved_share_of_cap"] >= TARGETS["d_achieved_share_min"],
        "d_parity": d["parity"]["mismatched"] == 0,
        "e_p95_le_debounce_plus_10s": e["p95_seconds"] <= TARGETS["e_p95_seconds_max"],
        "e_parity": e["parity"]["mismatched"] == 0,
    }


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM); see metasync/procstat.py for why not ru_maxrss."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from metasync.procstat import peak_rss_mb

    return peak_rss_mb()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "apply":
        child_apply(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "consume":
        child_consume(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 2 and sys.argv[1] == "flush":
        child_flush()
    else:
        main()
