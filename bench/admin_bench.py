"""Admin benchmark at 10^6 metrics (`make bench-admin` -> bench/results/admin.json), one run.

Set-up: a fresh database (``metasync_bench_admin``) filled set-based (generate_series): 10 plants x
10 devices x 10,000 metrics (0.1 % retired), 4 properties each (engUnit, description, min, max), then ANALYZE.

(1) Pages through Django's test client (the whole request: middleware, admin, templates, SQL),
    p50/p95 over ``--repeat`` requests each, for the metric list, a deep list page, substring
    searches (rare and common words), the plant and device filters and the metric page;
    first the **baseline** (``/baseline/``: the admin before docs/admin-scale.md, without its
    indexes), then the indexes are built (timed) and the **current** admin is measured.
    Targets: p95 <= 200 ms (list, search, filters), <= 300 ms (metric page).
(2) Bulk correction (docs/steward-bulk.md): ``engUnit`` set on the 100,000 metrics of one plant through
    ``catalog.bulk.apply_bulk`` (timed: target <= 10 s); then the normal path of a steward edit
    delivers it (pending rows -> flush by ``celery beat`` -> push by a canary worker -> the
    ``canary_mock`` daemon): time until the mock holds every one of those tags and nothing is
    pending (target <= 60 s), then every tag's engUnit is checked in the mock.
(3) Import dry run (docs/steward-bulk.md) of an N-row sheet, CSV and XLSX: read, plan (per-row diff
    and errors) and stage, as the import page does (target <= 20 s); then the import applied.

The machine is shared: the load average before and after is recorded with the figures.

    .venv/bin/python bench/admin_bench.py [--repeat 20] [--bulk 100000] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from common import (  # noqa: E402
    Mock,
    Procs,
    celery,
    drop_bench_database,
    free_port,
    machine_facts,
    percentile,
    say,
    setup_django,
    use_bench_database,
    wait_for,
    with_path,
    worker_pong,
    write_result,
)

DATABASE = "metasync_bench_admin"
PLANTS, DEVICES, METRICS_PER_DEVICE = 10, 10, 10_000
WORDS = ("Temperature", "Pressure", "Flow", "Level", "Speed", "Current", "Power", "Vibration")
TARGETS = {"list_search_filter_p95_ms": 200.0, "metric_page_p95_ms": 300.0, "bulk_apply_seconds": 10.0,
           "bulk_in_canary_seconds": 60.0, "import_dry_run_seconds": 20.0}
NEW_INDEXES = {
    "metrics_uns_path_trgm": "USING gin (upper(uns_path) gin_trgm_ops)",
    "metrics_name_trgm": "USING gin (upper(name) gin_trgm_ops)",
    "metrics_canary_id_trgm": "USING gin (upper(canary_id) gin_trgm_ops)",
    "metrics_plant_path_idx": "(plant, uns_path)",
    "metrics_device_path_idx": "(device_id, uns_path)",
    "metrics_device_plant_idx": "(device_id, plant)",
    "metrics_retired_path_idx": "(uns_path) WHERE retired_at IS NOT NULL",
}

GENERATE = [
    """INSERT INTO uns_meta.devices (group_id, edge, device, uns_path)
       SELECT 'Secil', 'Plant' || lpad(p::text, 2, '0'), 'Line' || lpad(d::text, 2, '0'),
              'Secil/Plant' || lpad(p::text, 2, '0') || '/Line' || lpad(d::text, 2, '0')
         FROM generate_series(1, %(plants)s) p, generate_series(1, %(devices)s) d""",
    """INSERT INTO uns_meta.metrics (device_id, name, uns_path, datatype, plant, fingerprint)
       SELECT d.id, n.name, d.uns_path || '/' || n.name, 10, d.edge, '\\x00'::bytea
         FROM uns_meta.devices d,
              LATERAL (SELECT 'Area' || i %% 20 || '/' || (%(words)s::text[])[1 + i %% 8] || '_'
                              || lpad(i::text, 5, '0') AS name
                         FROM generate_series(1, %(per_device)s) i) n""",
    "UPDATE uns_meta.metrics SET retired_at = now() WHERE id %% 1000 = 0",  # 0.1 % retired
    """INSERT INTO uns_meta.metric_properties (metric_id, key, sparkplug_type, type, is_null, string_value)
       SELECT id, 'engUnit', 12, 'string', false,
              (ARRAY['°C', 'bar', 'm3/h', '%%', 'rpm', 'A', 'kW', 'mm/s'])[1 + id %% 8]
         FROM uns_meta.metrics""",
    """INSERT INTO uns_meta.metric_properties (metric_id, key, sparkplug_type, type, is_null, string_value)
       SELECT id, 'description', 12, 'string', false, 'Generated tag ' || name FROM uns_meta.metrics""",
    """INSERT INTO uns_meta.metric_properties (metric_id, key, sparkplug_type, type, is_null, double_value)
       SELECT id, 'min', 10, 'double', false, 0 FROM uns_meta.metrics""",
    """INSERT INTO uns_meta.metric_properties (metric_id, key, sparkplug_type, type, is_null, double_value)
       SELECT id, 'max', 10, 'double', false, 100 + id %% 900 FROM uns_meta.metrics""",
]


def sql(query: str, params: dict | list | None = None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def generate() -> dict:
    started = time.perf_counter()
    params = {"plants": PLANTS, "devices": DEVICES, "per_device": METRICS_PER_DEVICE, "words": list(WORDS)}
    for statement in GENERATE:
        sql(statement, params)
    sql("ANALYZE uns_meta.devices; ANALYZE uns_meta.metrics; ANALYZE uns_meta.metric_properties")
    (metrics,), = sql("SELECT count(*) FROM uns_meta.metrics")
    (properties,), = sql("SELECT count(*) FROM uns_meta.metric_properties")
    return {"metrics": metrics, "properties": properties, "seconds": round(time.perf_counter() - started, 1)}


def pages(prefix: str, rng: random.Random) -> dict[str, list[str]]:
    """Name -> URLs to request in turn (varied, so no two searches are the same)."""
    device_ids = [row[0] for row in sql("SELECT id FROM uns_meta.devices ORDER BY id")]
    metric_ids = [row[0] for row in sql("SELECT id FROM uns_meta.metrics TABLESAMPLE SYSTEM (1) LIMIT 200")]
    base = f"/{prefix}/catalog/metric/"
    out = {
        "list": [base],
        "list_page_50": [f"{base}?p=50"],
        "search_rare": [f"{base}?q=_{rng.randrange(1, METRICS_PER_DEVICE):05d}" for _ in range(50)],
        "search_one_tag": [f"{base}?q=Plant{rng.randrange(1, PLANTS):02d}/Line{rng.randrange(1, DEVICES):02d}/"
                           f"Area{i % 20}/{WORDS[i % 8]}_{i:05d}" for i in
                           (rng.randrange(1, METRICS_PER_DEVICE) for _ in range(50))],
        "search_common": [f"{base}?q={word}" for word in WORDS],
        "filter_plant": [f"{base}?plant=Plant{p:02d}" for p in range(1, PLANTS + 1)],
        "filter_device": [f"{base}?device__id__exact={d}" for d in device_ids],
        "filter_plant_and_search": [f"{base}?plant=Plant{p:02d}&q=Pressure" for p in range(1, PLANTS + 1)],
        "filter_retired": [f"{base}?retired=yes", f"{base}?retired=yes&p=3", f"{base}?retired=no"],
        "metric_page": [f"{base}{m}/change/" for m in metric_ids],
    }
    return out


def measure(client, urls: dict[str, list[str]], repeat: int) -> dict:  # type: ignore[no-untyped-def]
    out = {}
    for name, choices in urls.items():
        client.get(choices[0])  # warm-up (templates, plan cache)
        times = []
        for i in range(repeat):
            url = choices[(i + 1) % len(choices)]
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {response.status_code}")
        out[name] = {"p50_ms": round(percentile(times, 50), 1), "p95_ms": round(percentile(times, 95), 1),
                     "max_ms": round(max(times), 1), "n": repeat}
        say(f"  {name:26s} p50 {out[name]['p50_ms']:8.1f} ms  p95 {out[name]['p95_ms']:8.1f} ms")
    return out


def met(current: dict) -> dict:
    limit, page_limit = TARGETS["list_search_filter_p95_ms"], TARGETS["metric_page_p95_ms"]
    return {name: row["p95_ms"] <= (page_limit if name == "metric_page" else limit) for name, row in current.items()}


def run(args: argparse.Namespace, result: dict) -> None:
    say("generating the catalog …")
    result["catalog"] = generate()
    say(f"catalog: {result['catalog']}")
    if args.pages:
        pages_phase(args, result)
    if args.bulk:
        result["bulk"] = bulk_phase()
    if args.import_rows:
        result["import"] = import_phase(args.import_rows)


def pages_phase(args: argparse.Namespace, result: dict) -> None:
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import override_settings

    user = User.objects.create_superuser("bench", password="bench-admin-password-not-secret")
    client = Client()
    client.force_login(user)
    rng = random.Random(11)
    with override_settings(ROOT_URLCONF="admin_sites", ALLOWED_HOSTS=["*"]):
        for name in NEW_INDEXES:
            sql(f"DROP INDEX uns_meta.{name}")
        say("baseline: the admin before, without the new indexes …")
        result["baseline"] = measure(client, pages("baseline", rng), max(5, args.repeat // 2))
        built = {}
        for name, definition in NEW_INDEXES.items():
            started = time.perf_counter()
            sql(f"CREATE INDEX {name} ON uns_meta.metrics {definition}")
            built[name] = round(time.perf_counter() - started, 1)
        sql("ANALYZE uns_meta.metrics")
        result["index_build_seconds"] = built
        say(f"indexes built: {built}")
        say("current admin …")
        result["current"] = measure(client, pages("admin", rng), args.repeat)
        result["met"] = met(result["current"])


BULK_PLANT = "Plant03"  # one plant: DEVICES x METRICS_PER_DEVICE = 100,000 metrics
REDIS_DB = 12
API_TOKEN = "bench-admin-api-token-not-a-secret"


def bulk_phase() -> dict:
    """engUnit set on every metric of one plant, then delivered by the canary mock, beat and workers."""
    from django.conf import settings

    from catalog import bulk
    from catalog.models import Metric
    from metasync.celery import app as celery_app

    redis_url = with_path(settings.REDIS_URL, f"/{REDIS_DB}")
    os.environ["REDIS_URL"] = settings.REDIS_URL = settings.CELERY_BROKER_URL = redis_url
    celery_app.conf.broker_url = redis_url
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    mock_port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-admin-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CANARY_URL": f"http://127.0.0.1:{mock_port}/api/v1",
           "CANARY_VIEWS_URL": f"http://127.0.0.1:{mock_port}/api/v2", "CANARY_API_TOKEN": API_TOKEN,
           "CANARY_CLIENT_ID": "bench-admin", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    procs = Procs(log_dir, env)
    mock = Mock(mock_port)
    host = socket.gethostname()
    out: dict = {"plant": BULK_PLANT}
    try:
        procs.start("canary-mock", [sys.executable, "manage.py", "canary_mock", "--port", str(mock_port),
                                    "--api-token", API_TOKEN, "--limit-rps", "500", "--transcript-size", "0"])
        node = f"bench-admin-canary@{host}"
        worker = procs.start("canary-worker", celery("worker", "-Q", "canary,sync", "--concurrency", "2", "-n", node,
                                                     "--without-mingle", "--without-gossip", "-l", "INFO"))
        beat = procs.start("beat", celery("beat", "-S", "django_celery_beat.schedulers:DatabaseScheduler",
                                          "--pidfile", str(log_dir / "beat.pid"), "-s", str(log_dir / "beat-schedule"),
                                          "-l", "INFO"))
        wait_for(mock.up, 60, "the canary mock")
        wait_for(lambda: worker_pong(redis_url, node, worker), 120, "the canary worker")
        wait_for(lambda: beat.check() or "Sending due task" in beat.text(), 60, "beat")
        mock.post("reset", {})
        selection = Metric.objects.filter(plant=BULK_PLANT)
        say(f"bulk: engUnit = 'bar (bulk)' on every metric of {BULK_PLANT} …")
        started = time.perf_counter()
        change = bulk.apply_bulk(selection, "engUnit", bulk.parse_value("string", "bar (bulk)"), user="bench",
                                 why="bench-admin", selection=f"plant={BULK_PLANT}")
        applied = time.perf_counter()
        out |= {"metrics": change.metrics, "apply_seconds": round(applied - started, 2)}
        say(f"bulk: {change.metrics:,} metrics applied in {out['apply_seconds']} s; waiting for the mock …")

        def delivered() -> bool:
            procs.all[0].check()
            return mock.stats()["tags"] >= change.metrics and not sql("SELECT 1 FROM uns_meta.sync_pending LIMIT 1")

        wait_for(delivered, 600, "every tag in the mock", interval=0.5)
        out["in_canary_seconds"] = round(time.perf_counter() - applied, 2)
        held = mock.get("state")["tags"]
        canary_ids = [row[0] for row in sql("SELECT canary_id FROM uns_meta.metrics WHERE plant = %s", [BULK_PLANT])]
        wrong = [t for t in canary_ids if (held.get(t) or {}).get("engUnit") != "bar (bulk)"]
        out["parity"] = {"checked": len(canary_ids), "wrong": len(wrong), "examples": wrong[:3]}
        out["met"] = {"apply": out["apply_seconds"] <= TARGETS["bulk_apply_seconds"],
                      "in_canary": out["in_canary_seconds"] <= TARGETS["bulk_in_canary_seconds"] and not wrong}
        say(f"bulk: in the mock after {out['in_canary_seconds']} s, parity {out['parity']}")
    except BaseException:
        print(procs.tails(), file=sys.stderr)
        raise
    finally:
        procs.stop()
    return out


IMPORT_PLANT = "Plant04"


def import_phase(rows: int) -> dict:
    """Dry run (read + plan) of an engUnit sheet of ``rows`` rows, as CSV and as XLSX, then the import."""
    from catalog import exchange
    from catalog.models import Metric, StagedImport

    selection = Metric.objects.filter(plant=IMPORT_PLANT)
    out: dict = {"rows": rows}
    started = time.perf_counter()
    exported = [row for row in exchange.export_rows(selection) if row[2] == "engUnit"][:rows]
    out["export_seconds"] = round(time.perf_counter() - started, 2)
    sheet = [(*row[:5], "string", "m/s", "") for row in exported]
    csv_data = "".join(exchange.csv_lines(sheet)).encode()
    started = time.perf_counter()
    xlsx_data = exchange.xlsx_bytes(sheet)
    out["xlsx_write_seconds"] = round(time.perf_counter() - started, 2)
    for name, data in (("csv", csv_data), ("xlsx", xlsx_data)):
        started = time.perf_counter()
        read = exchange.read_sheet(f"sheet.{name}", data)
        plan = exchange.plan_import(read)
        StagedImport.objects.create(filename=f"sheet.{name}", rows=read, uploaded_by="bench")  # as the view does
        seconds = round(time.perf_counter() - started, 2)
        out[f"dry_run_{name}_seconds"] = seconds
        out[f"dry_run_{name}_counts"] = {s: plan.count(s) for s in ("add", "change", "clear", "unchanged", "error")}
        say(f"import dry run ({name}, {len(read):,} rows, {len(data) / 1e6:.1f} MB): {seconds} s, "
            f"{out[f'dry_run_{name}_counts']}")
    started = time.perf_counter()
    change = exchange.apply_import(exchange.read_sheet("sheet.csv", csv_data), user="bench", why="bench-admin")
    out["apply_seconds"] = round(time.perf_counter() - started, 2)
    out["applied_metrics"] = change.metrics
    out["met"] = max(out["dry_run_csv_seconds"], out["dry_run_xlsx_seconds"]) <= TARGETS["import_dry_run_seconds"]
    say(f"import applied: {change.metrics:,} metrics in {out['apply_seconds']} s")
    return out


def main() -> None:
    global METRICS_PER_DEVICE  # noqa: PLW0603 - a trial run's smaller catalog
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--no-bulk", dest="bulk", action="store_false", help="skip the bulk correction phase")
    parser.add_argument("--import-rows", type=int, default=100_000, help="rows of the import dry-run (0: skip)")
    parser.add_argument("--no-pages", dest="pages", action="store_false", help="skip the page timings")
    parser.add_argument("--per-device", type=int, default=METRICS_PER_DEVICE, help="metrics per device (trial runs)")
    args = parser.parse_args()
    METRICS_PER_DEVICE = args.per_device
    setup_django()
    use_bench_database(DATABASE)
    result: dict = {"machine": machine_facts(), "targets": TARGETS, "loadavg_before": os.getloadavg(),
                    "note": "2-core machine shared with other engineers' work: figures are noisy"}
    try:
        run(args, result)
    except BaseException as exc:
        result["error"] = "".join(traceback.format_exception_only(exc)).strip()
        traceback.print_exc()
    finally:
        result["loadavg_after"] = os.getloadavg()
        if not args.keep:
            with contextlib.suppress(Exception):
                drop_bench_database(DATABASE)
    path = write_result("admin", result)
    say(f"results in {path}")
    if "error" in result:
        sys.exit(1)


if __name__ == "__main__":
    main()
