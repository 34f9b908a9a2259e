"""Admin benchmark at 10^6 metrics (`make bench-admin` -> bench/results/admin.json), one run.

Set-up: a fresh database (``metasync_bench_admin``) filled set-based (generate_series): 10 plants x
10 devices x 10,000 metrics, 4 properties each (engUnit, description, min, max), then ANALYZE.

(1) Pages through Django's test client (the whole request: middleware, admin, templates, SQL),
    p50/p95 over ``--repeat`` requests each, for the metric list, a deep list page, substring
    searches (rare and common words), the plant and device filters and the metric page;
    first the **baseline** (``/baseline/``: the admin before docs/admin-scale.md, without its
    indexes), then the indexes are built (timed) and the **current** admin is measured.
    Targets: p95 <= 200 ms (list, search, filters), <= 300 ms (metric page).
(2) Bulk correction (docs/steward-bulk.md), when ``--bulk N`` > 0: ``engUnit`` set on N metrics of
    one filter through ``catalog.bulk.apply_bulk`` (timed: target <= 10 s), then the canary mock,
    the CDC-independent flush (beat) and canary workers deliver it: time until the mock holds the
    new value on every one of the N tags (target <= 60 s).
(3) Import dry-run (docs/steward-bulk.md) of an N-row CSV sheet (target <= 20 s).

The machine is shared: the load average before and after is recorded with the figures.

    .venv/bin/python bench/admin_bench.py [--repeat 20] [--bulk 100000] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from common import drop_bench_database, machine_facts, percentile, say, setup_django, use_bench_database, write_result  # noqa: E402, I001

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
    from django.contrib.auth.models import User
    from django.test import Client
    from django.test.utils import override_settings

    say("generating the catalog …")
    result["catalog"] = generate()
    say(f"catalog: {result['catalog']}")
    User.objects.create_superuser("bench", password="bench-admin-password-not-secret")
    client = Client()
    client.force_login(User.objects.get(username="bench"))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    args = parser.parse_args()
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
