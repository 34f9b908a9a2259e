"""End to end through real daemons: MQTT → ledger → catalog → CDC → pending → flush → Canary mock.

Each test runs its own :class:`stack.Stack` (ingest_births, a births/default worker, cdc_consume on a
slot of its own, celery beat, canary workers) against the test database, with the CDC debounce
shortened to 1 s by configuration and an in-process Canary mock. Births use a group of their own and
ingest subscribes to that group only, so nothing another test (or a benchmark) publishes gets in;
each stack claims a Redis database of its own (Celery queues, session, bucket and breaker state).

The oracle of "Canary equals the catalog" is the mock's Views API read-back (``getTagProperties``)
compared with :func:`canary.effective.effective_targets` for every metric of the test's group.
The uns_meta tables are not emptied between tests, so every query is scoped to the test's group.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from births import PRODUCTION_PROPS, prod, receive
from births import birth as encode_prod_birth
from canary.effective import effective_targets
from canary.models import PushBatch
from catalog.models import Device, Metric, MetricProperty
from devtools.canary_mock import CanaryMock
from devtools.edge import changing_metrics, synthetic_birth, synthetic_metrics
from ingest.models import BirthFrame
from sparkplug.codec import MetricSpec
from stack import (
    BREAKER_STATE_KEY,
    CANARY_API_TOKEN,
    Stack,
    integrity_violations,
    publish,
    running_stack,
    scrape,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SETTLE_TIMEOUT = 90.0  # seconds for a quiet stack to reach parity (debounce 1 s, flush every 2 s)
FRAME_TIMEOUT = 60.0  # seconds for published frames to be applied
MAPPED_KEYS = 9  # the 10 production properties but Quality


# ---------------------------------------------------------------------------------------------
# Builders


def new_group() -> str:
    return f"E{uuid.uuid4().hex[:8]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def mapped(spec: MetricSpec) -> dict[str, object]:
    """What Canary must hold for a published metric under the default mapping: every key but Quality."""
    return {key: value for key, (_, value) in (spec.properties or {}).items() if key != "Quality"}


@contextlib.contextmanager
def e2e_stack(tmp_path: Path, group: str, **kwargs: object) -> Iterator[Stack]:
    """Every component, ingest subscribed to ``group`` only (its readiness probes included)."""
    kwargs.setdefault("components", ("ingest", "worker", "cdc", "beat", "canary"))
    kwargs.setdefault("redis_db", None)  # a Redis database of its own: other test sessions may be running
    with running_stack(tmp_path, topic=f"spBv1.0/{group}/#", probe_group=group, **kwargs) as stack:
        yield stack


# ---------------------------------------------------------------------------------------------
# Observation


def frames_applied(stack: Stack, prefix: str, count: int, timeout: float = FRAME_TIMEOUT) -> list[dict]:
    """The ledger rows under ``prefix`` once ``count`` exist and none is still ``received``; all applied."""
    def settled() -> list[dict] | None:
        rows = list(BirthFrame.objects.filter(topic__startswith=prefix).order_by("id")
                    .values("id", "topic", "status", "reason", "received_at"))
        return rows if len(rows) >= count and all(r["status"] != "received" for r in rows) else None

    rows = stack.wait_for(settled, timeout, f"{count} frame(s) under {prefix} to be processed", interval=0.05)
    assert [r for r in rows if r["status"] != "applied"] == [], rows
    return rows


def probe_metrics(group: str) -> int:
    """Metrics of the stack's readiness probes (one per probe birth, edge ``probe``)."""
    return Metric.objects.filter(device__group_id=group, device__edge="probe").count()


def group_metric_ids(group: str) -> list[int]:
    return list(Metric.objects.filter(device__group_id=group).values_list("id", flat=True))


def views_properties(stack: Stack, tags: list[str]) -> dict[str, dict]:
    """The mock's Views API read-back (``getTagProperties``) of ``tags``; never-stored tags are ``{}``."""
    assert stack.canary_server is not None
    url = f"{stack.canary_server.url}/api/v2/getTagProperties"
    out: dict[str, dict] = {}
    for i in range(0, len(tags), 1000):
        answer = requests.post(url, json={"apiToken": CANARY_API_TOKEN, "tags": tags[i:i + 1000]}, timeout=30)
        answer.raise_for_status()
        out.update(answer.json()["properties"])
    return out


def parity_problems(stack: Stack, ids: list[int]) -> list[str]:
    """Metrics whose Canary properties differ from the catalog's effective, mapped properties."""
    targets = effective_targets(ids)
    seen = views_properties(stack, [t.canary_id for t in targets.values()])
    return [f"{t.canary_id}: catalog {t.properties} != canary {seen.get(t.canary_id)}"
            for t in targets.values() if seen.get(t.canary_id) != t.properties]


def backlog(ids: list[int]) -> tuple[int, int]:
    """(pending rows, metrics with a batch in flight) among ``ids``."""
    with connection.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM uns_meta.sync_pending WHERE metric_id = ANY(%s::bigint[])),"
                    " (SELECT count(*) FROM uns_meta.canary_inflight WHERE metric_id = ANY(%s::bigint[]))", [ids, ids])
        return cur.fetchone()


def wal_position() -> str:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_current_wal_lsn()::text")
        return cur.fetchone()[0]


def slot_has_read(stack: Stack, lsn: str) -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                    [lsn, stack.slot])
        row = cur.fetchone()
    return bool(row and row[0])


def wait_in_parity(stack: Stack, group: str, timeout: float = SETTLE_TIMEOUT) -> list[int]:
    """Until the stack is quiet and Canary equals the catalog for every metric of ``group``.

    Quiet: the slot has confirmed everything committed before the call, and no metric of the
    group is pending or has a batch in flight. Returns the group's metric ids.
    """
    lsn = wal_position()
    state = ["not checked yet"]

    def in_parity() -> list[int] | None:
        if not slot_has_read(stack, lsn):
            state[0] = f"slot {stack.slot} has not confirmed {lsn} yet"
            return None
        ids = group_metric_ids(group)
        pending, inflight = backlog(ids)
        if pending or inflight:
            state[0] = f"{pending} metric(s) pending, {inflight} in flight"
            return None
        problems = parity_problems(stack, ids)
        if problems:
            state[0] = f"{len(problems)} of {len(ids)} metric(s) differ, e.g. " + "\n".join(problems[:3])
            return None
        return ids

    ids = wait_for(in_parity, timeout, f"Canary to equal the catalog for group {group}", interval=0.25,
                   context=lambda: f"state: {state[0]}\n{stack.logs()}")
    assert integrity_violations() == [], stack.logs()
    return ids


def catalog_duplicates(group: str) -> list[dict]:
    """(device, name) metric pairs and (metric, key) property pairs present more than once."""
    metrics = (Metric.objects.filter(device__group_id=group).values("device_id", "name")
               .annotate(n=Count("id")).filter(n__gt=1))
    props = (MetricProperty.objects.filter(metric__device__group_id=group).values("metric_id", "key")
             .annotate(n=Count("id")).filter(n__gt=1))
    return [*metrics, *props]


def opened_at(stack: Stack) -> bytes | None:
    """When the shared breaker last opened (pybreaker's Redis storage)."""
    client = stack.redis()
    try:
        return client.get(BREAKER_STATE_KEY.replace(":state", ":opened_at"))
    finally:
        client.close()


def pushes_per_tag(mock: CanaryMock, tags: list[str]) -> dict[str, int]:
    """How many storeData rows the mock stored for each tag (history, null markers included)."""
    return {tag: len(mock.history(tag)) for tag in tags}


# ---------------------------------------------------------------------------------------------
# TC-30


def acknowledged_batches(log_text: str) -> int:
    """Push batches a canary worker's log reports acknowledged (JSON lines of canary.push)."""
    count = 0
    for line in log_text.splitlines():
        if '"canary.push"' in line and "acknowledged" in line:
            count += len(json.loads(line).get("batch_ids") or [])
    return count


def test_a_dbirth_published_to_the_broker_reaches_the_catalog_and_canary(tmp_path):
    """TC-30: a DBIRTH published to the broker ends as rows in the catalog (device, metrics, every
    property) and as properties in the Canary mock (every key but Quality, read back through the Views
    API), with the debounce window shortened to 1 s by configuration: the first write reaches Canary
    at least 1 s (the window) and at most 30 s (not the 180 s default) after the frame was received."""
    group = new_group()
    topic = f"spBv1.0/{group}/DBIRTH/Edge1/Dev1"
    specs = [prod(f"Line1/Motor{i}/Running", alias=i + 1) for i in range(3)]
    with e2e_stack(tmp_path, group, canary_concurrency=2) as stack:
        assert stack.env["CDC_DEBOUNCE_SECONDS"] == "1"
        publish(topic, encode_prod_birth(*specs, ts=now_ms()))
        (frame,) = frames_applied(stack, topic, 1)

        device = Device.objects.get(group_id=group, edge="Edge1", device="Dev1")
        metrics = {m.name: m for m in Metric.objects.filter(device=device)}
        assert sorted(metrics) == sorted(s.name for s in specs)
        stored = {(p.metric.name, p.key): p.value for p in MetricProperty.objects.filter(metric__device=device)
                  .select_related("metric")}
        assert stored == {(s.name, key): value for s in specs for key, (_, value) in PRODUCTION_PROPS.items()}

        tags = {name: m.canary_id for name, m in metrics.items()}
        expected = {tags[s.name]: mapped(s) for s in specs}
        assert all("Quality" not in props and len(props) == MAPPED_KEYS for props in expected.values())
        stack.wait_for(lambda: views_properties(stack, list(expected)) == expected, 30,
                       "the birth's properties in Canary's getTagProperties")
        wait_in_parity(stack, group)

    assert stack.canary is not None
    first_write = min(row.received_at for tag in expected for row in stack.canary.history(tag))
    delay = first_write - frame["received_at"].timestamp()
    assert 1.0 <= delay <= 30.0, f"first Canary write {delay:.2f}s after the frame was received"
    assert set(pushes_per_tag(stack.canary, list(expected)).values()) == {MAPPED_KEYS}, "one write per key"
    print(f"TC-30: birth received -> first Canary write {delay:.2f}s (debounce 1 s)")


# ---------------------------------------------------------------------------------------------
# TC-18


def test_cdc_consume_killed_at_several_points_loses_nothing(tmp_path):
    """TC-18: births flow (a 300-metric device re-born 6 times with 150 metrics changed each time,
    plus a 3,000-metric / 30,000-property birth) while `cdc_consume` is SIGKILLed at four points and
    restarted: right after the big birth is applied (while it reads those rows), before a birth
    (changes committed while it is down), right after the pending rows of a birth were committed,
    and during start-up before it claimed the slot. Once quiet: nothing pending or in flight, every
    metric's getTagProperties equals its effective mapped properties, the changed metrics hold the
    last birth's values, the catalog has no duplicate metric or property, and metrics that never
    changed were written to Canary exactly once (the replays after each kill pushed nothing)."""
    group = new_group()
    prefix = f"spBv1.0/{group}/DBIRTH/Edge"  # the probes are under .../DBIRTH/probe/
    sim_topic, big_topic = f"{prefix}1/Sim", f"{prefix}2/Big"
    sim_n, big_n, rate, seed = 300, 3000, 0.5, 18

    def sim(round_no: int) -> bytes:
        return synthetic_birth(sim_n, round_no=round_no, change_rate=rate, seed=seed, timestamp=now_ms())

    kills: list[str] = []
    with e2e_stack(tmp_path, group) as stack:
        cdc = stack.daemons["cdc"]

        def kill_cdc(point: str) -> None:
            assert cdc.alive(), f"cdc_consume died on its own before the kill {point!r}\n{stack.logs()}"
            stack.kill("cdc")
            kills.append(point)

        published = 1
        publish(sim_topic, sim(0))
        frames_applied(stack, prefix, published)

        # 1. right after a big birth is applied: the consumer is reading its 33,000 row changes
        publish(big_topic, synthetic_birth(big_n, seed=seed + 1, timestamp=now_ms()))
        published += 1
        frames_applied(stack, prefix, published)
        kill_cdc("right after the 3,000-metric birth was applied")
        stack.start("cdc")

        # 2. a birth committed while cdc_consume is down
        kill_cdc("before birth round 1")
        publish(sim_topic, sim(1))
        published += 1
        frames_applied(stack, prefix, published)
        stack.start("cdc")

        # 3. right after the pending rows of a birth were committed
        sim_ids = list(Metric.objects.filter(device__group_id=group, device__device="Sim")
                       .values_list("id", flat=True))
        assert len(sim_ids) == sim_n
        before = timezone.now()
        publish(sim_topic, sim(2))
        published += 1

        def marked() -> bool:
            with connection.cursor() as cur:
                cur.execute("SELECT EXISTS (SELECT 1 FROM uns_meta.sync_pending WHERE metric_id = ANY(%s::bigint[])"
                            " AND last_change_at >= %s)", [sim_ids, before])
                return cur.fetchone()[0]

        stack.wait_for(marked, 30, "cdc_consume to mark birth round 2 pending", interval=0.01)
        kill_cdc("right after birth round 2 was marked pending")
        publish(sim_topic, sim(3))
        published += 1

        # 4. during start-up, before the slot is claimed (the metrics server comes up first)
        stack.start("cdc", wait=False)
        stack.wait_for(lambda: scrape(stack.cdc_metrics_port, timeout=0.5), 30, "cdc_consume's metrics endpoint",
                       interval=0.01)
        startup = cdc.since_start()
        kill_cdc("during start-up" + (" (slot already set up)" if f"slot {stack.slot} " in startup else ""))
        stack.start("cdc")

        # two more rounds back to back: one debounce window, one aggregated diff
        publish(sim_topic, sim(4))
        publish(sim_topic, sim(5))
        published += 2
        frames_applied(stack, prefix, published)
        ids = wait_in_parity(stack, group)
        assert cdc.alive() and cdc.starts == len(kills) + 1, (cdc.starts, kills)

    assert stack.canary is not None
    assert len(ids) == sim_n + big_n + probe_metrics(group)
    assert catalog_duplicates(group) == []
    per_device = dict(Metric.objects.filter(device__group_id=group).exclude(device__edge="probe")
                      .values_list("device__device").annotate(n=Count("id")))
    assert per_device == {"Sim": sim_n, "Big": big_n}, per_device
    assert MetricProperty.objects.filter(metric__device__group_id=group, metric__device__device__in=["Sim", "Big"]) \
        .count() == (sim_n + big_n) * 10

    # The last birth, independently of the catalog: Canary holds its mapped properties.
    tags = dict(Metric.objects.filter(device__group_id=group, device__device="Sim").values_list("name", "canary_id"))
    final = {tags[s.name]: mapped(s) for s in synthetic_metrics(sim_n, round_no=5, change_rate=rate, seed=seed,
                                                                  timestamp=now_ms())}
    assert [t for t in final if stack.canary.properties(t) != final[t]] == []

    # Replays after the kills re-marked metrics pending, but an unchanged metric has nothing to send.
    hot = changing_metrics(sim_n, change_rate=rate, seed=seed)
    sim_specs = list(synthetic_metrics(sim_n, round_no=0, change_rate=rate, seed=seed, timestamp=now_ms()))
    cold = [tags[s.name] for i, s in enumerate(sim_specs) if i not in hot]
    cold += Metric.objects.filter(device__group_id=group, device__device="Big").values_list("canary_id", flat=True)
    writes = pushes_per_tag(stack.canary, cold)
    assert {tag: n for tag, n in writes.items() if n != MAPPED_KEYS} == {}
    print(f"TC-18: kills {kills}; {stack.canary.stats()['requests_by_method']}")


# ---------------------------------------------------------------------------------------------
# TC-21


def test_canary_workers_share_the_global_rate_limit(tmp_path):
    """TC-21: three canary worker processes (concurrency 4 each) drain a backlog of 450 one-tag
    batches (CANARY_BATCH_TAGS=1) under CANARY_RATE_LIMIT_RPS=30, against a mock that answers 429
    above 30 requests per second: never more than 30 requests in any 1-second window (integer or
    sliding), no 429, no violation, every metric written exactly once and in parity, every worker
    took part, and the achieved rate while the backlog existed — the median of the per-second counts
    over the busy seconds, the first and last (partial) ones excluded — is at least 80 % of the limit.
    (30/s, not 500: a rate the 2-core test box sustains; the median, not the mean: a second or two
    stolen by other load on the shared box is not the limiter wasting budget, while a limiter that
    wastes it is short in most seconds.)"""
    limit, n = 30, 450
    mock = CanaryMock(CANARY_API_TOKEN, limit_rps=limit, rate_limit_rps=limit)
    env = {"CANARY_RATE_LIMIT_RPS": str(limit), "CANARY_BATCH_TAGS": "1"}
    group = new_group()
    with running_stack(tmp_path, components=("worker", "cdc", "beat", "canary"), canary_workers=3,
                       canary_concurrency=4, canary_mock=mock, redis_db=None, extra_env=env) as stack:
        mock.reset()  # count from here: only this backlog (and whatever else is due) in the windows
        started = time.monotonic()
        receive(f"spBv1.0/{group}/DBIRTH/Edge1/Dev1",
                encode_prod_birth(*(prod(f"Area/Tag{i:04d}", alias=i + 1) for i in range(n))))
        ids = wait_in_parity(stack, group, timeout=60 + n / limit)
        drained = time.monotonic() - started
        stats = mock.stats(windows=True)
        succeeded = {name: acknowledged_batches(stack.daemons[name].text()) for name in stack.names("canary")}

    assert len(ids) == n
    rate = stats["rate"]
    assert stats["http_429"] == 0, stats["http_status"]
    assert rate["violations"] == 0 and rate["sliding_violations"] == 0, rate
    assert rate["max_in_second_window"] <= limit and rate["max_in_sliding_window"] <= limit, rate
    assert stats["max_tags_per_request"] == 1
    tags = list(Metric.objects.filter(id__in=ids).values_list("canary_id", flat=True))
    writes = pushes_per_tag(mock, tags)
    assert {tag: k for tag, k in writes.items() if k != MAPPED_KEYS} == {}, "each metric written exactly once"
    assert stats["requests_by_method"].get("storeData", 0) >= n
    assert all(succeeded.values()) and sum(succeeded.values()) >= n, f"every canary worker pushes: {succeeded}"

    windows = dict(rate["windows"])
    busy = [windows.get(second, 0) for second in range(min(windows), max(windows) + 1)]
    full = busy[1:-1]  # the first and last seconds of the drain are partial
    assert len(full) >= 5, windows
    achieved = statistics.median(full)
    assert achieved >= 0.8 * limit, f"median {achieved} requests/s while the backlog existed: {full}"
    print(f"TC-21: {n} batches drained in {drained:.1f}s; median {achieved} req/s, mean {sum(full) / len(full):.1f}"
          f" over {len(full)} full seconds {full}; max sliding {rate['max_in_sliding_window']}; per worker {succeeded}")


# ---------------------------------------------------------------------------------------------
# TC-22


def test_canary_outage_opens_the_breaker_and_everything_converges_afterwards(tmp_path):
    """TC-22 (end to end): Canary answers 5xx to every write while births keep flowing: the shared
    breaker opens (≥ 20 consecutive failures), the pushes become `failed` batches and their metrics
    pending again; a half-open probe while Canary is still down re-opens it. Once Canary heals, the
    half-open probe succeeds, the breaker closes and everything converges: every metric's
    getTagProperties equals the catalog, including the births published during and after the outage
    (zero missed updates)."""
    group = new_group()
    prefix = f"spBv1.0/{group}/DBIRTH/Edge"
    topic = f"{prefix}1/Sim"
    sim_n, rate, seed = 200, 0.5, 22
    env = {"CANARY_BACKOFF_SECONDS": "0.05", "CANARY_BACKOFF_MAX_SECONDS": "0.4", "CANARY_BATCH_TAGS": "20",
           "CANARY_BREAKER_RESET_SECONDS": "5"}

    def sim(round_no: int) -> bytes:
        return synthetic_birth(sim_n, round_no=round_no, change_rate=rate, seed=seed, timestamp=now_ms())

    states: list[tuple[float, str]] = []
    sampling = threading.Event()

    def sample(stack: Stack) -> None:  # the shared breaker's state changes (and re-openings), from Redis
        client = stack.redis()
        last: tuple[object, ...] = ()
        try:
            while not sampling.is_set():
                value, opened = client.mget(BREAKER_STATE_KEY, BREAKER_STATE_KEY.replace(":state", ":opened_at"))
                state = value.decode() if value else "closed"
                if (state, opened) != last:
                    if not last or state != last[0] or state == "open":
                        states.append((time.monotonic(), state))
                    last = (state, opened)
                sampling.wait(0.01)
        finally:
            client.close()

    with e2e_stack(tmp_path, group, canary_workers=2, canary_concurrency=2, extra_env=env) as stack:
        mock = stack.canary
        assert mock is not None
        publish(topic, sim(0))
        frames_applied(stack, prefix, 1)
        wait_in_parity(stack, group)
        sampler = threading.Thread(target=sample, args=(stack,), daemon=True)
        sampler.start()
        try:
            outage = timezone.now()
            mock.set_faults(error_rate=1.0)
            publish(topic, sim(1))
            frames_applied(stack, prefix, 2)
            stack.wait_for(lambda: stack.breaker_state() == "open", 60, "the breaker to open")
            first_open = opened_at(stack)
            publish(topic, sim(2))  # due while the breaker is open: it stays pending, then probes
            frames_applied(stack, prefix, 3)
            stack.wait_for(lambda: opened_at(stack) != first_open, 60,
                           "a half-open probe to fail and re-open the breaker")
            mock.set_faults()  # Canary is back
            healed = time.monotonic()
            publish(topic, sim(3))
            frames_applied(stack, prefix, 4)
            ids = wait_in_parity(stack, group, timeout=120)
            stack.wait_for(lambda: stack.breaker_state() == "closed", 30, "the breaker to close")
            converged = time.monotonic() - healed
        finally:
            sampling.set()
            sampler.join(5)
        failed = list(PushBatch.objects.filter(created_at__gte=outage, status="failed").values_list("error", flat=True))
        stats = mock.stats()

    assert stats["http_5xx"] >= 20  # CANARY_BREAKER_FAIL_MAX consecutive failures open it
    assert failed and any("HTTP 5" in e or "circuit open" in e for e in failed), failed[:5]
    assert [s for _, s in states][:1] == ["closed"] and [s for _, s in states].count("open") >= 2, states
    assert states[-1][1] == "closed", states
    assert len(ids) == sim_n + probe_metrics(group)
    tags = dict(Metric.objects.filter(device__group_id=group, device__device="Sim").values_list("name", "canary_id"))
    final = {tags[s.name]: mapped(s) for s in synthetic_metrics(sim_n, round_no=3, change_rate=rate, seed=seed,
                                                                  timestamp=now_ms())}
    seen = {tag: mock.properties(tag) for tag in final}  # the server is stopped: the mock's own state
    assert [t for t in final if seen[t] != final[t]] == []
    t0 = states[0][0]
    print(f"TC-22: breaker states {[(round(t - t0, 2), s) for t, s in states]}; {len(failed)} failed batch(es); "
          f"converged {converged:.1f}s after Canary healed; 5xx answered: {stats['http_5xx']}")


def test_a_birth_is_applied_promptly_while_a_100k_drain_runs(tmp_path):
    """TC-42: the flush runs on its own queue (`sync`, the canary workers'), so births never wait
    for it: with 100,000 metrics due and being flushed and pushed, a birth published to the broker
    is applied within seconds by the births worker, and the drain completes in parity."""
    group = new_group()
    with e2e_stack(tmp_path, group, extra_env={"CANARY_RATE_LIMIT_RPS": "1000"}) as stack:
        receive(f"spBv1.0/{group}/DBIRTH/EdgeBig/Big", synthetic_birth(100_000, seed=7, timestamp=now_ms()))
        ids = group_metric_ids(group)
        # CDC marks its 100,000 changes pending, the flush (queue sync) batches them, the pushes run
        stack.wait_for(lambda: backlog(ids)[1] > 0, 120, "the drain of the big birth to be under way",
                       interval=0.1)
        small = f"spBv1.0/{group}/DBIRTH/EdgeSmall/Small"
        published = time.monotonic()
        publish(small, encode_prod_birth(prod("Plant/while-draining", alias=1)))
        applied = stack.wait_for(lambda: BirthFrame.objects.filter(topic=small, status="applied")
                                 .values_list("apply_seconds", flat=True).first(), 30,
                                 "the small birth to be applied while the drain runs")
        took = time.monotonic() - published
        assert backlog(ids) != (0, 0), "the drain ended first: the test showed nothing"
        assert took < 15, f"the birth waited {took:.1f}s behind the drain (its apply took {applied:.2f}s)"
        wait_in_parity(stack, group, timeout=240)
