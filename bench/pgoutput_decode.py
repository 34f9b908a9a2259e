"""pgoutput decode micro-benchmark (docs/cdc.md), one run against the devstack `metasync` database.

Creates a scratch device with 85,000 metrics x 10 properties, two logical slots, then UPDATEs all
850,000 property rows in one transaction and reads that WAL:

(a) baseline: `pg_recvlogical` streaming it from slot A to a file (replication protocol, no decoding),
    stopping at the transaction's Commit;
(b) our path on slot B, each mode in a child process (own peak RSS):
    server  - `SELECT count(*)` of the peek: server-side decoding only, nothing transferred;
    fetch   - `slot.peek` (binary fetchall), no Python decoding;
    fetch_data - the same peek selecting only `data` (no lsn::text, xid): what the extra columns cost;
    list    - `slot.peek` + the consumer loop (Relation/Commit decoded, metric ids via the fast path);
    stream  - `slot.iter_peek` (server-side cursor, 20,000 rows a fetch) + the same loop;
    full    - `slot.iter_peek` + `decode_message` of every message + `metric_ids_of` on it;
    advance - `slot.advance` to the transaction's Commit; then the slot's status and an (empty) peek.
Slots and scratch rows are removed afterwards. Prints JSON; `--save` also writes
bench/results/pgoutput_decode.json.

    .venv/bin/python bench/pgoutput_decode.py [--save]
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, machine_facts, setup_django, write_result  # noqa: E402

METRICS = 85_000
PROPERTIES_PER_METRIC = 10
PUBLICATION = "uns_meta_pub"
PROPERTIES = """(VALUES ('engLow', 10, 'double', NULL), ('engHigh', 10, 'double', NULL),
 ('retained', 11, 'boolean', NULL),
 ('DataPermission', 12, 'string', '{"read":["Operators"],"write":["Engineers"]}'), ('Quality', 3, 'int', NULL),
 ('documentation', 12, 'string', 'Clinker kiln main drive speed, measured at the gearbox'),
 ('retain', 11, 'boolean', NULL), ('executionMode', 3, 'int', NULL), ('engUnit', 12, 'string', 'rpm'),
 ('delete', 11, 'boolean', NULL)) AS k(key, sparkplug_type, type, text_value)"""


def admin_connect():
    import psycopg
    from django.conf import settings

    if not settings.DATABASE_ADMIN_URL:
        raise SystemExit("DATABASE_ADMIN_URL is not set (run `scripts/devstack env`)")
    return psycopg.connect(settings.DATABASE_ADMIN_URL, autocommit=True, application_name="bench_pgoutput")


def pg_recvlogical() -> str:
    for candidate in ("/usr/lib/postgresql/15/bin/pg_recvlogical", shutil.which("pg_recvlogical")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("pg_recvlogical not found")


def consume(rows, relations) -> tuple[int, int, set[int], str | None]:
    """The consumer's loop: metric ids of every row change, the last Commit's end LSN."""
    from cdcsync.pgoutput import (
        KIND_COMMIT,
        KIND_RELATION,
        ROW_CHANGE_KINDS,
        decode_message,
        format_lsn,
        metric_ids_of,
    )

    messages = changes = 0
    ids: set[int] = set()
    add = ids.update
    last_commit = None
    for _lsn, _xid, data in rows:
        messages += 1
        kind = data[0]
        if kind in ROW_CHANGE_KINDS:
            changes += 1
            add(metric_ids_of(data, relations))
        elif kind == KIND_RELATION:
            relations.add(decode_message(data))
        elif kind == KIND_COMMIT:
            last_commit = format_lsn(decode_message(data).end_lsn)
    return messages, changes, ids, last_commit


def child(mode: str, slot_name: str, upto_lsn: str) -> None:
    """Child mode: one way of reading the slot; prints seconds, counts and peak RSS as JSON."""
    setup_django()
    from cdcsync import slot
    from cdcsync.pgoutput import ROW_CHANGE_KINDS, RelationCache, decode_message, metric_ids_of

    result: dict = {"mode": mode}
    with admin_connect() as conn:
        started = time.perf_counter()
        if mode == "server":
            (result["messages"],) = conn.execute(
                "SELECT count(*) FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, 'proto_version',"
                " '1', 'publication_names', %s)", (slot_name, upto_lsn, PUBLICATION)).fetchone()
        elif mode == "fetch":
            rows = slot.peek(conn, slot_name, PUBLICATION, upto_nchanges=None, upto_lsn=upto_lsn)
            result["fetch_seconds"] = time.perf_counter() - started
            result["messages"] = len(rows)
            result["bytes"] = sum(len(r[2]) for r in rows)
        elif mode == "fetch_data":
            cur = conn.cursor()
            cur.execute("SELECT data FROM pg_logical_slot_peek_binary_changes(%s, %s::pg_lsn, NULL, 'proto_version',"
                        " '1', 'publication_names', %s)", (slot_name, upto_lsn, PUBLICATION), binary=True)
            result["messages"] = len(cur.fetchall())
        elif mode == "list":
            rows = slot.peek(conn, slot_name, PUBLICATION, upto_nchanges=None, upto_lsn=upto_lsn)
            result["fetch_seconds"] = time.perf_counter() - started
            decode_started = time.perf_counter()
            messages, changes, ids, last_commit = consume(rows, RelationCache())
            result.update(decode_seconds=time.perf_counter() - decode_started, messages=messages, changes=changes,
                          metric_ids=len(ids), last_commit=last_commit)
        elif mode == "stream":
            messages, changes, ids, last_commit = consume(
                slot.iter_peek(conn, slot_name, PUBLICATION, upto_nchanges=None, upto_lsn=upto_lsn), RelationCache())
            result.update(messages=messages, changes=changes, metric_ids=len(ids), last_commit=last_commit)
        elif mode == "full":
            relations = RelationCache()
            ids: set[int] = set()
            messages = changes = 0
            for _lsn, _xid, data in slot.iter_peek(conn, slot_name, PUBLICATION, upto_nchanges=None,
                                                   upto_lsn=upto_lsn):
                message = relations.observe(decode_message(data))
                messages += 1
                if data[0] in ROW_CHANGE_KINDS:
                    changes += 1
                    ids.update(metric_ids_of(message, relations))
            result.update(messages=messages, changes=changes, metric_ids=len(ids))
        elif mode == "advance":
            result["confirmed"] = slot.advance(conn, slot_name, upto_lsn)
        else:
            raise SystemExit(f"unknown mode {mode}")
        result["seconds"] = time.perf_counter() - started
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    print(json.dumps(result))


def run_child(mode: str, slot_name: str, upto_lsn: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "child", mode, slot_name, upto_lsn], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"child {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(save: bool) -> None:
    setup_django()
    from django.conf import settings

    from cdcsync import slot

    tag = secrets.token_hex(4)
    group, slot_a, slot_b = f"zzbench_pgo_{tag}", f"bench_pgo_recv_{tag}", f"bench_pgo_peek_{tag}"
    rows = METRICS * PROPERTIES_PER_METRIC
    result: dict = {"machine": machine_facts(), "rows_updated": rows}
    conn = admin_connect()
    device_id = None
    try:
        t = time.perf_counter()
        device_id = conn.execute(
            "INSERT INTO uns_meta.devices (group_id, edge, device, uns_path) VALUES (%s, 'Bench', 'Decode', %s)"
            " RETURNING id", (group, f"{group}/Bench/Decode")).fetchone()[0]
        conn.execute(
            "INSERT INTO uns_meta.metrics (device_id, name, uns_path, datatype, fingerprint, alias, plant)"
            " SELECT %s, 'Maceira/Kiln/Tag' || i, %s || '/Bench/Decode/Maceira/Kiln/Tag' || i, 10, '\\x00'::bytea,"
            " i, 'Maceira' FROM generate_series(1, %s) AS i", (device_id, group, METRICS))
        conn.execute(
            "INSERT INTO uns_meta.metric_properties (metric_id, key, sparkplug_type, type, is_null, double_value,"
            " string_value, int_value, boolean_value)"
            " SELECT m.id, k.key, k.sparkplug_type, k.type::uns_meta.property_type, false,"
            " CASE WHEN k.type = 'double' THEN 1500.0 END, CASE WHEN k.type = 'string' THEN k.text_value END,"
            " CASE WHEN k.type = 'int' THEN 192 END, CASE WHEN k.type = 'boolean' THEN true END"
            f" FROM uns_meta.metrics m CROSS JOIN {PROPERTIES} WHERE m.device_id = %s", (device_id,))
        result["setup_seconds"] = round(time.perf_counter() - t, 1)

        slot.ensure_slot(conn, slot_a)
        slot.ensure_slot(conn, slot_b)
        t = time.perf_counter()
        with conn.transaction():
            updated = conn.execute(
                "UPDATE uns_meta.metric_properties p SET sparkplug_type = p.sparkplug_type"
                " FROM uns_meta.metrics m WHERE m.id = p.metric_id AND m.device_id = %s", (device_id,)).rowcount
        result["update_seconds"] = round(time.perf_counter() - t, 1)
        assert updated == rows, updated
        end_lsn = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
        result["wal_bytes_retained"] = slot.slot_status(conn, slot_b)["retained_bytes"]

        # (b) our peek-based path, each mode in its own process.
        for mode in ("server", "fetch", "fetch_data", "list", "stream", "full"):
            measured = run_child(mode, slot_b, end_lsn)
            measured["rows_per_second"] = round(rows / measured["seconds"])
            for key in ("seconds", "fetch_seconds", "decode_seconds"):
                if key in measured:
                    measured[key] = round(measured[key], 2)
            if "decode_seconds" in measured:
                measured["decode_messages_per_second"] = round(measured["messages"] / measured["decode_seconds"])
            result[f"b_{mode}"] = measured
            print(mode, json.dumps(measured), file=sys.stderr)
        commit_end = result["b_list"]["last_commit"]

        # (a) pg_recvlogical: the replication protocol, writing raw messages to a file; it stops at
        # the Commit (endpos = its end LSN, so it does not wait for a keepalive past it).
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "changes.bin"
            env = {**os.environ, "PGAPPNAME": "bench_pgoutput_recv"}
            t = time.perf_counter()
            subprocess.run([pg_recvlogical(), "-d", settings.DATABASE_ADMIN_URL, "-S", slot_a, "--start",
                            "-E", commit_end, "--no-loop", "-f", str(out), "-o", "proto_version=1",
                            "-o", f"publication_names={PUBLICATION}", "-F", "0"],
                           check=True, env=env, capture_output=True, timeout=1200)
            seconds = time.perf_counter() - t
            result["a_pg_recvlogical"] = {"seconds": round(seconds, 2), "rows_per_second": round(rows / seconds),
                                          "file_bytes": out.stat().st_size}

        result["b_advance"] = run_child("advance", slot_b, commit_end)
        result["b_advance"]["seconds"] = round(result["b_advance"]["seconds"], 2)
        result["b_status_after_advance"] = slot.slot_status(conn, slot_b)
        t = time.perf_counter()
        result["b_peek_after_advance"] = {"messages": len(slot.peek(conn, slot_b, PUBLICATION, upto_nchanges=None)),
                                          "seconds": round(time.perf_counter() - t, 2)}
        base = result["a_pg_recvlogical"]["seconds"]
        result["ratio_stream_vs_recvlogical"] = round(base / result["b_stream"]["seconds"], 2)
        result["ratio_list_vs_recvlogical"] = round(base / result["b_list"]["seconds"], 2)
    finally:
        for name in (slot_a, slot_b):
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                         (name,))
        if device_id is not None:
            conn.execute("DELETE FROM uns_meta.metric_properties p USING uns_meta.metrics m"
                         " WHERE m.id = p.metric_id AND m.device_id = %s", (device_id,))
            conn.execute("DELETE FROM uns_meta.metrics WHERE device_id = %s", (device_id,))
            conn.execute("DELETE FROM uns_meta.devices WHERE id = %s", (device_id,))
        conn.close()
    print(json.dumps(result, indent=2))
    if save:
        print(f"wrote {write_result('pgoutput_decode', result)}", file=sys.stderr)


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM); see metasync/procstat.py for why not ru_maxrss."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from metasync.procstat import peak_rss_mb

    return peak_rss_mb()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "child":
        child(*sys.argv[2:])
    else:
        main(save="--save" in sys.argv[1:])
