"""Ingest benchmark (`make bench-ingest` -> bench/results/ingest.json), one run:

(a) baseline: plain COPY of the rows a first ingest writes, into the same tables;
(b) first ingest of a 100,000-metric x 10-property birth (task start -> commit);
(c) identical re-birth (new values and timestamps): time and rows written (must be 0);
(d) re-birth with 1 % of metrics changed in one property: time and versions (must be 1,000);
(e) peak RSS of the applying process;
(f) a 1,000,000-metric birth through `replay_birth` (time, peak RSS).

Each apply runs in a child process (`bench/ingest.py apply FRAME_ID`), as a
worker would, so its peak RSS is its own, not the generator's.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, drop_bench_database, machine_facts, setup_django, use_bench_database, write_result  # noqa: E402,E501

METRICS = 100_000
BIG = 1_000_000
TARGETS = {"first_vs_baseline_max": 2.0, "identical_seconds_max": 3.0, "one_percent_seconds_max": 5.0,
           "worker_peak_rss_mb_max": 600, "million_peak_rss_mb_max": 1536}
TABLES = ("devices", "metrics", "metric_properties", "metric_versions")


def apply_child(frame_id: int) -> None:
    """Child mode: apply one frame, print seconds and peak RSS as JSON."""
    setup_django()
    from ingest.processing import process_frame

    started = time.monotonic()
    outcome = process_frame(frame_id)
    print(json.dumps({"seconds": time.monotonic() - started, "status": outcome.status, "counts": outcome.counts,
                      "reason": outcome.reason,
                      "peak_rss_mb": _peak_rss_mb()}))


def run_apply(frame_id: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "apply", str(frame_id)], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rows_written() -> dict[str, int]:
    """Cumulative inserted+updated+deleted rows per catalog table (statistics flushed first)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables"
                    " WHERE schemaname = 'uns_meta' AND relname = ANY(%s)", [list(TABLES)])
        return dict(cur.fetchall())


def settled_rows_written() -> dict[str, int]:
    """Statistics reach the shared view up to ~1 s after a commit: poll until two reads agree."""
    previous = rows_written()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(1.2)
        current = rows_written()
        if current == previous:
            return current
        previous = current
    raise RuntimeError("table statistics did not settle within 15 s")


def baseline_copy(topic_device: str, payload: bytes) -> float:
    """(a): the same rows a first ingest writes, rendered beforehand, then COPYed and committed."""
    from django.db import connection, transaction
    from psycopg.types.json import Jsonb

    from catalog import propvalues, uns
    from catalog.apply import METRIC_COLUMNS, PROPERTY_COLUMNS, VERSION_COLUMNS, fingerprint
    from sparkplug.codec import decode_properties, iter_metrics

    connection.ensure_connection()
    conn = connection.connection
    with transaction.atomic():
        device_id = conn.execute(
            "INSERT INTO uns_meta.devices (group_id, edge, device, uns_path) VALUES ('Bench', %s, 'Base', %s)"
            " RETURNING id", (topic_device, f"Bench/{topic_device}/Base")).fetchone()[0]
        metrics, props, versions = [], [], []
        for raw in iter_metrics(payload):
            mid = conn.execute("SELECT nextval(pg_get_serial_sequence('uns_meta.metrics', 'id'))").fetchone()[0] \
                if not metrics else metrics[-1][0] + 1
            path = uns.metric_path(f"Bench/{topic_device}/Base", raw.name)
            metrics.append((mid, device_id, raw.name, path, raw.datatype, raw.alias, "Maceira",
                            fingerprint(raw.name, raw.datatype, raw.properties)))
            decoded = decode_properties(raw.properties)
            for key, (sptype, value) in decoded.items():
                kind, is_null, cols = propvalues.to_columns(sptype, value)
                props.append((mid, key, sptype, kind, is_null) + cols)
            versions.append((mid, "created", Jsonb({"name": raw.name, "uns_path": path, "datatype": raw.datatype,
                                                    "added": {k: v for k, (_, v) in decoded.items()}}), "birth:0"))
        conn.execute("SELECT setval(pg_get_serial_sequence('uns_meta.metrics', 'id'), %s)", (metrics[-1][0],))
        buffers = {}
        tables = (("metrics", METRIC_COLUMNS, metrics), ("metric_properties", PROPERTY_COLUMNS, props),
                  ("metric_versions", VERSION_COLUMNS, versions))
        for name, columns, rows in tables:
            buffers[name] = (columns, _render(conn, name, columns, rows))
        del metrics, props, versions
        started = time.monotonic()
        with conn.cursor() as cur:
            for name, (columns, data) in buffers.items():
                with cur.copy(f"COPY uns_meta.{name} ({', '.join(columns)}) FROM STDIN") as cp:
                    cp.write(data)
    return time.monotonic() - started  # includes the commit (deferred FK checks), like (b)


def _render(conn, table: str, columns: tuple, rows: list) -> bytes:
    """COPY text of the rows (not timed): psycopg writes them into a temporary table, the server
    hands the exact COPY text back."""
    cols = ", ".join(columns)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE render_{table} ON COMMIT DROP AS"
                    f" SELECT {cols} FROM uns_meta.{table} WITH NO DATA")
        with cur.copy(f"COPY render_{table} ({cols}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        out = io.BytesIO()
        with cur.copy(f"COPY render_{table} TO STDOUT") as cp:
            for chunk in cp:
                out.write(chunk)
    return out.getvalue()


def main() -> None:
    setup_django()
    use_bench_database()
    try:
        run()
    finally:
        drop_bench_database()


def run() -> None:
    from devtools.edge import synthetic_birth
    from ingest.ledger import store_frame

    run_id = uuid.uuid4().hex[:6]
    topic = f"spBv1.0/Bench/DBIRTH/R{run_id}/Cement"
    result: dict = {"machine": machine_facts(), "metrics": METRICS, "properties_per_metric": 10}
    print(f"generating a {METRICS:,}-metric birth …", flush=True)
    first = synthetic_birth(METRICS, round_no=0, change_rate=0.0, seed=1, timestamp=1_000_000)
    result["birth_bytes"] = len(first)

    print("(a) baseline COPY …", flush=True)
    result["a_baseline_copy_seconds"] = round(baseline_copy(f"R{run_id}", first), 3)

    print("(b) first ingest …", flush=True)
    b = run_apply(store_frame(topic, first))
    assert b["status"] == "applied" and b["counts"]["new"] == METRICS, b
    result["b_first_ingest_seconds"] = round(b["seconds"], 3)
    result["b_vs_a_ratio"] = round(b["seconds"] / result["a_baseline_copy_seconds"], 2)

    print("(c) identical re-birth …", flush=True)
    same = synthetic_birth(METRICS, round_no=1, change_rate=0.0, seed=1, timestamp=2_000_000)
    assert same != first, "a re-birth carries new values and timestamps"
    frame = store_frame(topic, same)
    before = settled_rows_written()
    c = run_apply(frame)
    after = settled_rows_written()
    assert c["status"] == "applied" and c["counts"]["unchanged"] == METRICS, c
    result["c_identical_rebirth_seconds"] = round(c["seconds"], 3)
    result["c_rows_written"] = {t: after.get(t, 0) - before.get(t, 0) for t in TABLES}

    print("(d) 1 % changed …", flush=True)
    changed = synthetic_birth(METRICS, round_no=2, change_rate=0.01, seed=1, timestamp=3_000_000)
    frame = store_frame(topic, changed)
    d = run_apply(frame)
    from catalog.models import MetricVersion

    result["d_one_percent_seconds"] = round(d["seconds"], 3)
    result["d_versions"] = MetricVersion.objects.filter(changed_by=f"birth:{frame}").count()
    result["d_counts"] = d["counts"]
    result["e_worker_peak_rss_mb"] = round(max(b["peak_rss_mb"], c["peak_rss_mb"], d["peak_rss_mb"]), 1)
    result["e_peak_rss_mb_by_step"] = {"b": round(b["peak_rss_mb"], 1), "c": round(c["peak_rss_mb"], 1),
                                       "d": round(d["peak_rss_mb"], 1)}

    print(f"(f) {BIG:,}-metric birth through replay_birth …", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "million.pb"
        path.write_bytes(synthetic_birth(BIG, round_no=0, change_rate=0.0, seed=2, timestamp=1_000_000))
        result["f_birth_bytes"] = path.stat().st_size
        proc = subprocess.run([sys.executable, "manage.py", "replay_birth", str(path), "--stats",
                               "--topic", f"spBv1.0/Bench/DBIRTH/R{run_id}/Million"],
                              cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"replay_birth failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-3000:]}")
        out = proc.stdout
    stats = dict(part.split("=") for part in out.strip().splitlines()[-1].split())
    result["f_million_seconds"] = float(stats["elapsed_seconds"])
    result["f_million_peak_rss_mb"] = float(stats["peak_rss_mb"])
    bytes_per_metric = result["f_birth_bytes"] / BIG
    result["largest_birth_over_mqtt_metrics"] = int(268_435_455 / bytes_per_metric)

    result["targets"] = TARGETS
    result["met"] = {
        "b_le_2x_a": result["b_vs_a_ratio"] <= TARGETS["first_vs_baseline_max"],
        "c_le_3s": result["c_identical_rebirth_seconds"] <= TARGETS["identical_seconds_max"],
        "c_zero_rows": all(v == 0 for v in result["c_rows_written"].values()),
        "d_le_5s": result["d_one_percent_seconds"] <= TARGETS["one_percent_seconds_max"],
        "d_1000_versions": result["d_versions"] == METRICS // 100,
        "e_le_600mb": result["e_worker_peak_rss_mb"] <= TARGETS["worker_peak_rss_mb_max"],
        "f_le_1_5gb": result["f_million_peak_rss_mb"] <= TARGETS["million_peak_rss_mb_max"],
    }
    path = write_result("ingest", result)
    print(json.dumps(result, indent=2))
    print(f"written to {path}")
    if not all(result["met"].values()):
        sys.exit(1)


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM); see metasync/procstat.py for why not ru_maxrss."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from metasync.procstat import peak_rss_mb

    return peak_rss_mb()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "apply":
        apply_child(int(sys.argv[2]))
    else:
        main()
