"""Fresh-stack scale benchmark (`make bench-scale` -> bench/results/scale.json).

What a new deployment meets on its first day, end to end through real processes:

- a **new private dev stack** (`scripts/devstack up --dir` a temporary folder): its own PostgreSQL
  cluster, Redis and Mosquitto, so the tables have no statistics yet; migrated, slot created;
- **the pipeline processes of `make demo`** with its settings (CDC_DEBOUNCE_SECONDS=5): ingest, two
  births workers (`births,default`, concurrency 2), the canary worker (`canary,sync`), beat, cdc and
  the `canary_mock` daemon (500 req/s, as the demo runs it). The demo's web, Flower, exporter,
  Prometheus and edge simulator are left out: they are idle or add births of their own;
- then, one after the other, published over MQTT/TLS 1.3 (QoS 1):
  1. a 100,000-metric x 10-property DBIRTH for a new device A,
  2. the same for a new device B,
  3. a re-birth of A with 1 % of its metrics changed (one property each).

For each birth: publication -> every metric it changed acknowledged by Canary (targets: <= 40 s for
the new devices, <= 10 s for the 1 %), with the stages reported separately: receive (publication ->
ledger row), apply (the births worker's apply_seconds), cdc (apply committed -> the last change marked
pending, from the consumer's log), debounce (configured), flush (first -> last push batch created) and
push (first batch created -> last acknowledged); then parity: the mock's properties of every changed
tag equal the catalog's effective mapped properties.

`--tree DIR` runs the processes from another checkout of the project (a baseline commit, e.g. a
`git worktree`), with the same births and the same measurements: the figures of both in one run.

    .venv/bin/python bench/scale.py [--metrics 100000] [--tree DIR] [--result NAME] [--keep]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from common import ROOT, Mock, Procs, celery, free_port, say, wait_for, worker_pong, write_result  # noqa: E402

DEBOUNCE_SECONDS = 5.0  # the demo's
DEBOUNCE_MAX_SECONDS = 60.0
LIMIT_RPS = 500
API_TOKEN = "bench-scale-api-token-not-a-secret"
GROUP = "Secil"  # what ingest subscribes to by default (MQTT_TOPIC), as in the demo
TARGETS = {"new_device_seconds_max": 40.0, "one_percent_seconds_max": 10.0}
WAIT_SECONDS = 300.0  # per birth: a baseline that stalls is reported as not delivered, not waited for


def env_file_values(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip().strip("'")
    return out


def start_stack(stack_dir: Path) -> Path:
    say(f"starting a new dev stack in {stack_dir} …")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "devstack"), "up", "--dir", str(stack_dir)], check=True,
                   stdout=subprocess.DEVNULL)
    return stack_dir / "env"


def processes(procs: Procs, ports: dict[str, int]) -> None:
    py = sys.executable
    procs.start("canary-mock", [py, "manage.py", "canary_mock", "--port", str(ports["mock"]), "--api-token",
                                API_TOKEN, "--limit-rps", str(LIMIT_RPS)])
    procs.start("cdc", [py, "manage.py", "cdc_consume", "--metrics-port", str(ports["cdc"])])
    for name in ("worker1", "worker2"):
        procs.start(name, celery("worker", "-Q", "births,default", "--concurrency", "2", "-n", f"{name}@%h",
                                 "--loglevel", "INFO"))
    procs.start("canary-worker", celery("worker", "-Q", "canary,sync", "--concurrency", "2", "-n", "canary@%h",
                                        "--loglevel", "INFO"))
    procs.start("beat", celery("beat", "-S", "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile=",
                               "--loglevel", "INFO"))
    procs.start("ingest", [py, "manage.py", "ingest_births", "--metrics-port", str(ports["ingest"])])


def ready(procs: Procs, ports: dict[str, int], redis_url: str, mock: Mock) -> None:
    by_name = {p.name: p for p in procs.all}
    wait_for(mock.up, 60, "the canary mock")
    host = socket.gethostname()
    for node, name in (("worker1", "worker1"), ("worker2", "worker2"), ("canary", "canary-worker")):
        wait_for(lambda n=f"{node}@{host}", p=by_name[name]: worker_pong(redis_url, n, p), 90, f"worker {node}")
    wait_for(lambda: "Sending due task" in by_name["beat"].text(), 60, "beat")

    def ingest_connected() -> bool:
        by_name["ingest"].check()
        try:
            with urllib_open(f"http://127.0.0.1:{ports['ingest']}/metrics") as response:
                return "metasync_ingest_connected 1.0" in response.read().decode()
        except OSError:
            return False

    wait_for(ingest_connected, 60, "ingest to subscribe")


def urllib_open(url: str):  # type: ignore[no-untyped-def]
    import urllib.request

    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5)


def publish(topic: str, payload: bytes) -> float:
    """Publish with QoS 1; returns the wall-clock time the publication started."""
    from metasync.mqtt import config_from_settings, make_client

    config = config_from_settings(client_id=f"bench-scale-{os.getpid()}")
    user = os.environ.get("DEVSTACK_MQTT_DEVTOOLS_USERNAME")
    if user:  # births are published as the dev stack's `devtools` user: ingest's may not (docs/security.md)
        config = dataclasses.replace(config, username=user, password=os.environ["DEVSTACK_MQTT_DEVTOOLS_PASSWORD"])
    client = make_client(config)
    client.max_inflight_messages_set(1)
    from django.conf import settings

    client.connect(settings.MQTT_HOST, settings.MQTT_PORT)
    client.loop_start()
    try:
        started = time.time()
        client.publish(topic, payload, qos=1).wait_for_publish(timeout=120)
        return started
    finally:
        client.disconnect()
        client.loop_stop()


def sql(query: str, params: tuple = ()) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def frame_of(topic: str, published: float) -> tuple | None:
    rows = sql("SELECT id, status, extract(epoch FROM received_at), extract(epoch FROM processed_at),"
               " apply_seconds, counts, reason FROM uns_meta.birth_frames"
               " WHERE topic = %s AND received_at >= to_timestamp(%s) - interval '5 seconds' ORDER BY id DESC LIMIT 1",
               (topic, published))
    return rows[0] if rows else None


def changed_ids(frame_id: int) -> list[int]:
    return [r[0] for r in sql("SELECT metric_id FROM uns_meta.metric_versions WHERE changed_by = %s",
                              (f"birth:{frame_id}",))]


def acked_since(ids: list[int], since: float) -> tuple[int, float | None, float | None]:
    count, first, last = sql(
        "SELECT count(*), extract(epoch FROM min(acked_at)), extract(epoch FROM max(acked_at))"
        " FROM uns_meta.canary_sync_state WHERE metric_id = ANY(%s) AND acked_at >= to_timestamp(%s)",
        (ids, since))[0]
    return count, (float(first) if first is not None else None), (float(last) if last is not None else None)


def cdc_marked_at(log_text: str, since: float, needed: int) -> float | None:
    """When the consumer's log shows ``needed`` metrics marked pending since ``since`` (births run one
    after the other here, so every mark after the publication is this birth's)."""
    total = 0
    for line in log_text.splitlines():
        if "metric(s) pending" not in line or not line.startswith("{"):
            continue
        record = json.loads(line)
        at = datetime.fromisoformat(record["time"].replace("Z", "+00:00")).timestamp()
        if at < since:
            continue
        match = re.search(r"-> (\d+) metric\(s\) pending", record["message"])
        total += int(match.group(1)) if match else 0
        if total >= needed:
            return at
    return None


def batch_window(since: float) -> tuple[int, float | None, float | None]:
    count, first, last = sql("SELECT count(*), extract(epoch FROM min(created_at)), extract(epoch FROM max(created_at))"
                             " FROM uns_meta.canary_push_batches WHERE created_at >= to_timestamp(%s)", (since,))[0]
    return count, (float(first) if first is not None else None), (float(last) if last is not None else None)


def parity(mock: Mock, ids: list[int]) -> dict:
    """The mock's properties of each changed tag vs. the catalog's effective mapped properties."""
    from canary.effective import effective_targets

    state = mock.get("state")["tags"]
    off, checked = [], 0
    for i in range(0, len(ids), 10_000):
        for target in effective_targets(ids[i:i + 10_000]).values():
            checked += 1
            if state.get(target.canary_id) != target.properties:
                off.append(target.canary_id)
    return {"checked": checked, "differ": len(off), "examples": off[:5]}


def measure(label: str, topic: str, payload: bytes, procs: Procs, mock: Mock) -> dict:
    say(f"{label}: publishing {len(payload) / 1e6:.1f} MB to {topic} …")
    published = publish(topic, payload)
    published_done = time.time()
    deadline = published + WAIT_SECONDS
    frame = wait_for(lambda: (f := frame_of(topic, published)) and f[1] != "received" and f, WAIT_SECONDS,
                     f"{label}: the frame to be processed", interval=0.25)
    frame_id, status, received_at, processed_at, apply_seconds, counts, reason = frame
    result: dict = {"frame": frame_id, "status": status, "counts": counts, "publish_seconds":
                    round(published_done - published, 2), "receive_seconds": round(float(received_at) - published, 2),
                    "apply_seconds": round(apply_seconds or 0, 2), "debounce_seconds": DEBOUNCE_SECONDS}
    if status != "applied":
        result["reason"] = reason
        return result
    ids = changed_ids(frame_id)
    result["changed_metrics"] = len(ids)
    processed = float(processed_at)
    state = {"acked": 0, "last": None, "first": None}

    def delivered() -> bool:
        state["acked"], state["first"], state["last"] = acked_since(ids, processed)
        return state["acked"] == len(ids)

    while not delivered() and time.time() < deadline:
        time.sleep(1.0)
    cdc_log = next(p for p in procs.all if p.name == "cdc").text()
    marked = cdc_marked_at(cdc_log, processed - 1, len(ids))
    batches, first_batch, last_batch = batch_window(processed)
    result |= {
        "delivered": state["acked"] == len(ids), "acked": state["acked"],
        "cdc_seconds": round(marked - processed, 2) if marked else None,
        "flush_seconds": round(last_batch - first_batch, 2) if first_batch and last_batch else None,
        "batches": batches,
        "push_seconds": round(state["last"] - first_batch, 2) if state["last"] and first_batch else None,
        "end_to_end_seconds": round(state["last"] - published, 2) if state["acked"] == len(ids) else None,
    }
    if result["delivered"]:
        result["parity"] = parity(mock, ids)
    else:
        result["pending_left"] = sql("SELECT count(*), count(*) FILTER (WHERE due_at <= now())"
                                     " FROM uns_meta.sync_pending")[0]
        result["active_statements"] = [r[0][:200] for r in sql(
            "SELECT query FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()")]
    say(f"{label}: {json.dumps({k: v for k, v in result.items() if k not in ('parity', 'counts')})}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=100_000)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose processes run (default: this one)")
    parser.add_argument("--result", default="scale", help="bench/results/<name>.json")
    parser.add_argument("--keep", action="store_true", help="keep the stack folder and logs")
    args = parser.parse_args()
    from devtools.edge import synthetic_birth

    work = Path(tempfile.mkdtemp(prefix="metasync-bench-scale-"))
    work.chmod(0o755)  # the postgres and mosquitto users must reach the stack folder
    stack_dir, logs = work / "stack", work / "logs"
    logs.mkdir(parents=True)
    env_file = start_stack(stack_dir)
    values = env_file_values(env_file)
    os.environ["METASYNC_ENV_FILE"] = str(env_file)
    ports = {"mock": free_port(), "ingest": free_port(), "cdc": free_port()}
    env = {**os.environ, "METASYNC_ENV_FILE": str(env_file), "PYTHONUNBUFFERED": "1", "LOG_FORMAT": "json",
           "METASYNC_DEVTOOLS": "true", "CANARY_URL": f"http://127.0.0.1:{ports['mock']}/api/v1",
           "CANARY_VIEWS_URL": f"http://127.0.0.1:{ports['mock']}/api/v2", "CANARY_API_TOKEN": API_TOKEN,
           "CDC_DEBOUNCE_SECONDS": str(DEBOUNCE_SECONDS), "CDC_DEBOUNCE_MAX_SECONDS": str(DEBOUNCE_MAX_SECONDS)}
    for key in ("DATABASE_URL", "REDIS_URL", "CDC_DATABASE_URL"):
        env.pop(key, None)  # the new stack's, from its env file
    procs = Procs(logs, env, cwd=args.tree.resolve())
    mock = Mock(ports["mock"])
    result: dict = {"tree": str(args.tree.resolve()), "metrics": args.metrics, "properties_per_metric": 10,
                    "config": {"CDC_DEBOUNCE_SECONDS": DEBOUNCE_SECONDS, "canary_rate_limit_rps": LIMIT_RPS},
                    "targets": TARGETS}
    try:
        for step in (["migrate", "--noinput", "-v0"], ["cdc_consume", "--setup-only"]):
            subprocess.run([sys.executable, "manage.py", *step], cwd=args.tree, env=env, check=True,
                           stdout=subprocess.DEVNULL)
        from common import machine_facts, setup_django

        setup_django()
        result["machine"] = machine_facts()
        result["machine"]["tree_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.tree,
                                                          capture_output=True, text=True).stdout.strip()
        say(f"starting the pipeline processes from {args.tree} …")
        processes(procs, ports)
        ready(procs, ports, values["REDIS_URL"], mock)
        ts = int(time.time() * 1000)
        births = {
            "a_new_device": (f"spBv1.0/{GROUP}/DBIRTH/Scale/DeviceA",
                             synthetic_birth(args.metrics, seed=11, timestamp=ts, alias_base=0)),
            "b_new_device": (f"spBv1.0/{GROUP}/DBIRTH/Scale/DeviceB",
                             synthetic_birth(args.metrics, seed=12, timestamp=ts, alias_base=args.metrics)),
            "c_one_percent_of_a": (f"spBv1.0/{GROUP}/DBIRTH/Scale/DeviceA",
                                   synthetic_birth(args.metrics, round_no=1, change_rate=0.01, seed=11,
                                                   timestamp=ts + 60_000, alias_base=0)),
        }
        for label, (topic, payload) in births.items():
            result[label] = measure(label, topic, payload, procs, mock)
            del payload
        a, b, c = (result[k].get("end_to_end_seconds") for k in births)
        result["met"] = {
            "a_le_40s": a is not None and a <= TARGETS["new_device_seconds_max"],
            "b_le_40s": b is not None and b <= TARGETS["new_device_seconds_max"],
            "c_le_10s": c is not None and c <= TARGETS["one_percent_seconds_max"],
            "parity": all(result[k].get("parity", {}).get("differ", 1) == 0 for k in births),
        }
    except Exception:
        traceback.print_exc()
        result["error"] = traceback.format_exc(limit=3)
        print(procs.tails(), file=sys.stderr)
    finally:
        say("stopping …")
        procs.stop()
        subprocess.run([sys.executable, str(ROOT / "scripts" / "devstack"), "down", "--dir", str(stack_dir)],
                       stdout=subprocess.DEVNULL, check=False)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    path = write_result(args.result, result)
    say(f"written to {path.relative_to(ROOT)}; met: {result.get('met')}")
    if "error" in result or not all(result.get("met", {}).values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
