"""TC-31: proven fault tolerance — every process killed, every service restarted, Canary down, nothing lost.

One test, through real daemons (:class:`stack.Stack`: ingest_births, a births/default worker, a canary
worker, celery beat, cdc_consume on a slot of its own, the in-process Canary mock), while a thread
publishes re-births of a few devices through the devstack's Mosquitto (QoS 1) and Canary is being
updated (debounce 1 s). See the test's docstring for what is injected and what is checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import pytest
from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.db.models import Count

from canary.effective import effective_targets
from catalog.models import Metric, MetricProperty, MetricVersion
from devtools.edge import synthetic_birth, synthetic_metrics
from ingest.models import BirthFrame
from sparkplug.codec import MetricSpec
from stack import (
    DaemonDied,
    Publisher,
    Stack,
    devstack_restart,
    integrity_violations,
    running_stack,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

T = TypeVar("T")

DEVICES = 4  # devices re-born every PUBLISH_EVERY seconds, one edge node each
METRICS = 40  # metrics per device
CHANGE_RATE = 0.25  # 10 metrics per device get a property edited in every round
BIG_METRICS = 3000  # a big birth (30,000 properties), published once: the births worker is killed applying it
BIG_SEED = 3199
PUBLISH_EVERY = 1.5  # seconds between rounds
CANARY_OUTAGE = 60.0  # seconds the Canary mock answers 5xx to everything
RECOVERY_TIMEOUT = 120.0  # seconds for a restarted component (or service) to be ready / flow to resume
# Quiet: long enough for the slowest designed recoveries after the last fault: a frame whose task a
# SIGKILLed (or Redis-restarted) worker held stays `received` until beat's requeue_stuck_frames (2 min,
# checked every 60 s); a push lost mid-flight is re-driven after its 120 s lease (checked every 30 s).
QUIET_TIMEOUT = 300.0
MAPPED_EXCLUDED = "Quality"  # the default mapping sends every key but Quality
# Shorter Canary retry/breaker timings (as TC-22) so the test's runtime stays a few minutes; the
# mechanisms are the production ones. Batches of 10 tags and one canary process (below): the batch in
# flight when the canary worker is killed holds 10 of the 40 metrics that change every round, which then
# wait for its lease to expire (one unacknowledged batch per metric), while the other 30 keep flowing.
ENV = {"CANARY_BACKOFF_SECONDS": "0.05", "CANARY_BACKOFF_MAX_SECONDS": "0.4", "CANARY_BREAKER_RESET_SECONDS": "10",
       "CANARY_BATCH_TAGS": "10"}


def now_ms() -> int:
    return int(time.time() * 1000)


def mapped(spec: MetricSpec) -> dict[str, object]:
    return {key: value for key, (_, value) in (spec.properties or {}).items() if key != MAPPED_EXCLUDED}


# ---------------------------------------------------------------------------------------------
# The test process's own database connection survives a PostgreSQL restart by being replaced


def db(fn: Callable[[], T]) -> T:
    """Run ``fn`` (Django ORM reads); on a broken connection close it so the next call reconnects."""
    try:
        return fn()
    except (OperationalError, InterfaceError, DatabaseError):
        with contextlib.suppress(Exception):
            connection.close()
        raise


# ---------------------------------------------------------------------------------------------
# Births flowing: a publisher thread


@dataclass
class Sent:
    topic: str
    device: str  # Dev0.. (re-born every round) or Big
    round_no: int
    sha256: bytes
    acked: bool
    at: float
    error: str = ""


@dataclass
class BirthFlow:
    """Re-births of DEVICES devices every PUBLISH_EVERY s (QoS 1, each publish waits for its PUBACK).

    :meth:`pause` returns once no publish is in progress and none starts until :meth:`resume`.
    """

    group: str
    sent: list[Sent] = field(default_factory=list)
    pauses: list[tuple[str, float, float]] = field(default_factory=list)  # (why, from, to)
    failure: BaseException | None = None

    def __post_init__(self) -> None:
        self._gate = threading.Lock()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pub: Publisher | None = None
        self._paused: tuple[str, float] | None = None
        self._thread = threading.Thread(target=self._run, name="tc31-births", daemon=True)

    def topic(self, device: str) -> str:
        return f"spBv1.0/{self.group}/DBIRTH/Edge{device}/{device}"

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            with Publisher() as pub:
                self._pub = pub
                round_no = 0
                while not self._stop.is_set():
                    with self._gate:
                        if self._stop.is_set():
                            break
                        for device in range(DEVICES):
                            payload = synthetic_birth(METRICS, round_no=round_no, change_rate=CHANGE_RATE,
                                                      seed=3100 + device, timestamp=now_ms())
                            self._publish(pub, f"Dev{device}", round_no, payload)
                        round_no += 1
                    self._stop.wait(PUBLISH_EVERY)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc

    def publish_big(self) -> Sent:
        """The big birth, published between two rounds through the same client."""
        payload = synthetic_birth(BIG_METRICS, round_no=0, seed=BIG_SEED, timestamp=now_ms())
        with self._gate:
            assert self._pub is not None
            return self._publish(self._pub, "Big", 0, payload)

    def _publish(self, pub: Publisher, device: str, round_no: int, payload: bytes) -> Sent:
        topic = self.topic(device)
        digest = hashlib.sha256(payload).digest()
        try:
            pub.publish(topic, payload, qos=1, timeout=20)
        except Exception as exc:  # noqa: BLE001 - not acknowledged: recorded, excluded from check (1)
            sent = Sent(topic, device, round_no, digest, False, time.time(), f"{exc.__class__.__name__}: {exc}")
        else:
            sent = Sent(topic, device, round_no, digest, True, time.time())
        with self._lock:
            self.sent.append(sent)
        return sent

    def snapshot(self) -> list[Sent]:
        with self._lock:
            return list(self.sent)

    def connected(self) -> bool:
        return self._pub is not None and self._pub.client.is_connected()

    def pause(self, why: str) -> None:
        self._gate.acquire()
        self._paused = (why, time.monotonic())

    def resume(self) -> None:
        assert self._paused is not None
        why, since = self._paused
        self.pauses.append((why, since, time.monotonic()))
        self._paused = None
        self._gate.release()

    @contextlib.contextmanager
    def paused(self, why: str) -> Iterator[None]:
        self.pause(why)
        try:
            yield
        finally:
            self.resume()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the publisher thread did not stop"

    def check(self) -> None:
        if not self._thread.is_alive() and not self._stop.is_set():
            raise DaemonDied(f"the publisher thread died: {self.failure!r}")


# ---------------------------------------------------------------------------------------------
# Observation (every read goes through db(): PostgreSQL is restarted under the test)


def ledger(prefix: str) -> list[dict]:
    return db(lambda: [{**r, "sha256": bytes(r["sha256"])} for r in BirthFrame.objects.filter(
        topic__startswith=prefix).values("id", "topic", "sha256", "status", "counts", "reason", "received_at",
                                         "processed_at")])


def missing_from_ledger(flow: BirthFlow, prefix: str) -> list[Sent]:
    """Acknowledged frames with no ledger row (topic, sha256)."""
    stored = {(r["topic"], r["sha256"]) for r in ledger(prefix)}
    return [s for s in flow.snapshot() if s.acked and (s.topic, s.sha256) not in stored]


def all_in_ledger(flow: BirthFlow, prefix: str) -> bool:
    return not missing_from_ledger(flow, prefix)


def applied_since(prefix: str, after_id: int) -> bool:
    """A frame stored after ledger id ``after_id`` was applied: the flow MQTT → ledger → catalog moves."""
    return db(lambda: BirthFrame.objects.filter(topic__startswith=prefix, id__gt=after_id,
                                                status="applied").exists())


def last_ledger_id() -> int:
    return db(lambda: BirthFrame.objects.order_by("-id").values_list("id", flat=True).first() or 0)


def canary_writes(stack: Stack) -> int:
    assert stack.canary is not None
    return stack.canary.stats()["store_requests_stored"]  # storeData requests answered Good


def group_metric_ids(group: str) -> list[int]:
    return db(lambda: list(Metric.objects.filter(device__group_id=group).values_list("id", flat=True)))


def parity_problems(stack: Stack, ids: list[int]) -> list[str]:
    """Metrics whose mock properties differ from the catalog's effective, mapped properties."""
    assert stack.canary is not None
    targets = db(lambda: effective_targets(ids))
    return [f"{t.canary_id}: catalog {t.properties} != canary {stack.canary.properties(t.canary_id)}"
            for t in targets.values() if stack.canary.properties(t.canary_id) != t.properties]


def sql_row(sql: str, params: list | None = None) -> tuple:
    def read() -> tuple:
        with connection.cursor() as cur:
            cur.execute(sql, params or [])
            return cur.fetchone()
    return db(read)


def quiet_problem(stack: Stack, flow: BirthFlow, group: str, lsn: list[str | None]) -> str | None:
    """Why the stack is not quiet and in parity yet (None: it is). ``lsn``: WAL position to confirm,
    taken once every published frame has been processed."""
    prefix = f"spBv1.0/{group}/"
    missing = missing_from_ledger(flow, prefix)
    if missing:
        return f"{len(missing)} acknowledged frame(s) not in the ledger yet"
    received = [r["id"] for r in ledger(prefix) if r["status"] == "received"]
    if received:
        return f"{len(received)} ledger frame(s) still received: {received[:10]}"
    if lsn[0] is None:
        lsn[0] = sql_row("SELECT pg_current_wal_lsn()::text")[0]
    confirmed = sql_row("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
                        [lsn[0], stack.slot])
    if not confirmed or not confirmed[0]:
        return f"slot {stack.slot} has not confirmed {lsn[0]} yet"
    ids = group_metric_ids(group)
    pending, inflight = sql_row(
        "SELECT (SELECT count(*) FROM uns_meta.sync_pending WHERE metric_id = ANY(%s::bigint[])),"
        " (SELECT count(*) FROM uns_meta.canary_inflight WHERE metric_id = ANY(%s::bigint[]))", [ids, ids])
    batches = sql_row("SELECT count(*) FROM uns_meta.canary_push_batches WHERE status IN ('queued', 'sending')")[0]
    if pending or inflight or batches:
        return f"{pending} metric(s) pending, {inflight} in flight, {batches} batch(es) queued or sending"
    problems = parity_problems(stack, ids)
    if problems:
        return f"{len(problems)} of {len(ids)} metric(s) differ from the catalog, e.g. {problems[0]}"
    return None


# ---------------------------------------------------------------------------------------------
# TC-31


def test_killing_any_process_or_restarting_any_service_loses_nothing(tmp_path):
    """TC-31 (docs/architecture.md): with births flowing — a thread re-births 4 devices of
    40 production-shaped metrics every 1.5 s through Mosquitto with QoS 1, 10 metrics per device getting
    a property edited each round — and Canary being updated (debounce 1 s), inject in turn:

    * SIGKILL (whole process group) of each process, restarted and waited ready (ping / slot claimed /
      beat sending / ingest subscribed), after which the flow is shown to move again (a frame stored
      after the restart is applied, Canary written again):
      - the births worker while it holds the task of a 3,000-metric birth (30,000 properties) published
        just before: the frame stays ``received`` until beat's ``requeue_stuck_frames`` (2 min);
      - the canary worker while a push is in flight (the mock answering after 3 s for that moment):
        Canary stores it but the worker never hears back; the batch stays ``sending`` until its
        120 s lease expires and beat re-drives it;
      - celery beat, cdc_consume and ingest_births, mid-flow;
    * ``scripts/devstack restart redis``, ``… mosquitto`` and ``… postgres`` (same ports): the daemons
      are not touched and must recover on their own (reconnect, retry, re-drive); the test's own
      Django connection is simply replaced;
    * the Canary mock answering 5xx to every write for 60 s (the breaker opens, batches fail and
      their metrics return to pending), then healing. Canary retry and breaker timings are shortened
      (backoff 0.05-0.4 s, breaker reset 10 s, as TC-22) to keep the runtime near 3-4 minutes.

    ingest subscribes with QoS 0 and a clean session (docs/architecture.md): a frame published while it is
    not subscribed, or still in its in-memory backlog when it is SIGKILLed, is lost by MQTT design.
    So the publisher pauses around exactly two faults — the ingest kill and the broker restart —
    and resumes once ingest is subscribed again; before the ingest kill every acknowledged frame is
    already in the ledger. Everything else happens with births flowing.

    Afterwards the publisher stops and the test waits until quiet: every acknowledged frame in the
    ledger and processed, the slot caught up, nothing pending, nothing in flight, no batch queued or
    sending, and the mock equal to the catalog. Then it asserts:

    1. every frame the broker acknowledged (PUBACK) is in ``uns_meta.birth_frames`` (topic +
       sha256) and none is left ``received``; at most one ledger row per frame ends ``applied``; the
       big birth the killed worker held ends ``applied``;
    2. no duplicates: each device has exactly its metrics (unique per device/name), each metric its
       10 properties (unique per metric/key), and each applied frame wrote exactly the versions it
       counted (no version written twice for a frame, none twice per metric and frame);
    3. for every metric of the group, the mock's properties equal the catalog's effective mapped
       properties, and for the simulated devices they equal the last published round's (an oracle
       independent of the catalog).

    The summary of what was injected and checked is printed (``pytest -s``) and is part of every
    assertion message.
    """
    group = f"F{uuid.uuid4().hex[:8]}"
    prefix = f"spBv1.0/{group}/"
    injected: list[str] = []
    checked: list[str] = []
    started = time.monotonic()

    def summary() -> str:
        lines = [f"TC-31 after {time.monotonic() - started:.0f}s; injected:"]
        lines += [f"  - {line}" for line in injected]
        lines += ["checked:"] + [f"  - {line}" for line in checked]
        return "\n".join(lines)

    def note(line: str) -> None:
        injected.append(f"[{time.monotonic() - started:5.1f}s] {line}")
        print(f"TC-31 {injected[-1]}", flush=True)

    with running_stack(tmp_path, components=("ingest", "worker", "cdc", "beat", "canary"),
                       topic=f"spBv1.0/{group}/#", probe_group=group, redis_db=None, canary_workers=1,
                       canary_concurrency=1, extra_env=ENV) as stack:
        mock = stack.canary
        assert mock is not None
        assert stack.env["CDC_DEBOUNCE_SECONDS"] == "1"
        flow = BirthFlow(group)

        def context() -> str:
            return f"{summary()}\n{stack.logs()}"

        def until(predicate: Callable[[], T], what: str, timeout: float = RECOVERY_TIMEOUT,
                  interval: float = 0.2) -> T:
            def checked_predicate() -> T:
                flow.check()
                stack.check_alive()  # a daemon that dies (instead of recovering) fails at once
                return predicate()
            return wait_for(checked_predicate, timeout, what, interval=interval, context=context)

        def flow_moves(what: str) -> None:
            """A frame stored from now on gets applied, the slot is read past now, Canary is written again."""
            mark = until(lambda: [last_ledger_id()], "the ledger to be readable")[0]
            lsn = until(lambda: sql_row("SELECT pg_current_wal_lsn()::text")[0], "the WAL position")
            writes = canary_writes(stack)
            until(lambda: applied_since(prefix, mark), f"a frame stored after {what} to be applied")
            until(lambda: sql_row("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots"
                                  " WHERE slot_name = %s", [lsn, stack.slot])[0],
                  f"cdc_consume to confirm the WAL written after {what}")
            until(lambda: canary_writes(stack) > writes, f"Canary to be written (Good) after {what}")

        def kill_and_restart(name: str, *, paused: bool = False, holding: Callable[[], str] | None = None,
                             after_kill: Callable[[], None] | None = None) -> None:
            daemon = stack.daemons[name]
            assert daemon.alive(), f"{daemon.name} died on its own before its kill\n{context()}"
            code = stack.kill(name, signal.SIGKILL)
            held = holding() if holding else ""
            if after_kill:
                after_kill()
            t0 = time.monotonic()
            stack.start(name, timeout=RECOVERY_TIMEOUT)
            note(f"SIGKILL {daemon.name} (exit {code}) "
                 f"{'publisher paused, everything acknowledged stored' if paused else 'with births flowing'}"
                 f"{held}; restarted and ready in {time.monotonic() - t0:.1f}s")
            if not paused:
                flow_moves(f"the {name} restart")

        def restart_service(service: str) -> None:
            took = devstack_restart(service)
            note(f"devstack restart {service} ({took:.1f}s)")

        flow.start()
        try:
            # Births are flowing and Canary is being updated.
            until(lambda: flow.snapshot(), "the first births to be published")
            until(lambda: sum(r["status"] == "applied" for r in ledger(prefix)) >= 2 * DEVICES,
                  "the first births to be applied")
            until(lambda: canary_writes(stack) > 0, "the first Canary writes")

            # Processes, in turn. The births worker and the canary worker first: the designed recovery
            # of the work they held (beat's stuck-frame requeue, the batch lease re-drive) takes minutes.
            # The births worker while it applies the big birth (30,000 properties, one transaction): the
            # task is unacknowledged when the worker dies, the frame stays `received` and beat re-enqueues it.
            big = flow.publish_big()
            assert big.acked, big
            big_key = (big.topic, big.sha256)
            big_id = until(lambda: [r["id"] for r in ledger(prefix) if (r["topic"], r["sha256"]) == big_key],
                           "the big birth to be stored", interval=0.02)[0]
            task_received = re.compile(r'process_birth\[[^]]+\] received".*"args": "[[(]' + str(big_id) + r',?[])]"')
            until(lambda: task_received.search(stack.daemons["worker"].since_start()),
                  "the births worker to take the big birth's task", interval=0.02)

            def big_status() -> str:
                return f", the {BIG_METRICS}-metric birth (frame {big_id}) in hand: " + db(
                    lambda: BirthFrame.objects.get(pk=big_id).status)

            kill_and_restart("worker", holding=big_status)

            # The canary worker while a push is in flight (the mock answers after 3 s meanwhile): Canary
            # stores it, the worker never hears back; the batch stays `sending` until its lease expires
            # and beat re-drives it.
            mock.set_faults(latency_ms=3000)
            sending = until(lambda: sql_row("SELECT id FROM uns_meta.canary_push_batches WHERE status = 'sending'"
                                            " ORDER BY id DESC LIMIT 1"), "a push batch in flight", interval=0.02)[0]
            kill_and_restart("canary-1", holding=lambda: f", batch {sending} in flight (mock latency 3 s)",
                             after_kill=lambda: mock.set_faults())
            restart_service("redis")
            flow_moves("the Redis restart")
            kill_and_restart("beat")
            kill_and_restart("cdc")

            with flow.paused("ingest SIGKILL"):
                until(lambda: all_in_ledger(flow, prefix), "every acknowledged frame to be stored before the kill")
                kill_and_restart("ingest", paused=True)
            flow_moves("the ingest restart")

            with flow.paused("broker restart"):
                until(lambda: all_in_ledger(flow, prefix), "every acknowledged frame to be stored before the restart")
                restart_service("mosquitto")
                t0 = time.monotonic()
                stack.wait_connected(RECOVERY_TIMEOUT)
                stack.wait_subscribed(RECOVERY_TIMEOUT)
                until(flow.connected, "the test publisher to reconnect")
                note(f"  ingest_births reconnected and re-subscribed on its own in {time.monotonic() - t0:.1f}s")
            flow_moves("the broker restart")

            restart_service("postgres")
            flow_moves("the PostgreSQL restart")
            note("  every daemon recovered from the PostgreSQL restart on its own")

            mock.set_faults(error_rate=1.0)
            t0 = time.monotonic()
            failing_from = mock.stats()["http_5xx"]
            until(lambda: stack.breaker_state() == "open", "the Canary breaker to open", timeout=CANARY_OUTAGE)
            opened = time.monotonic() - t0
            # The outage itself: a fixed period on purpose (births keep flowing meanwhile).
            while time.monotonic() - t0 < CANARY_OUTAGE:
                flow.check()
                stack.check_alive()
                time.sleep(0.5)
            mock.set_faults()
            note(f"Canary mock failing (error_rate 1.0) for {CANARY_OUTAGE:.0f}s: "
                 f"{mock.stats()['http_5xx'] - failing_from} 5xx answered, breaker open after {opened:.1f}s")
            flow_moves("Canary healed")
            for name in stack.names():
                assert stack.daemons[name].alive(), f"{stack.daemons[name].name} died\n{context()}"
        finally:
            flow.stop()
        sent = flow.snapshot()
        acked = [s for s in sent if s.acked]
        note(f"publisher stopped: {len(sent)} frame(s) published, {len(acked)} acknowledged; paused for "
             + ", ".join(f"{why} ({to - since:.1f}s)" for why, since, to in flow.pauses))

        # Quiet: every frame processed, nothing pending, in flight or queued, Canary equal to the catalog.
        t0 = time.monotonic()
        lsn: list[str | None] = [None]
        state = ["not checked yet"]

        def quiet() -> bool:
            stack.check_alive()
            problem = quiet_problem(stack, flow, group, lsn)
            state[0] = problem or "quiet"
            return problem is None

        wait_for(quiet, QUIET_TIMEOUT, "the stack to be quiet and Canary equal to the catalog", interval=0.5,
                 context=lambda: f"state: {state[0]}\n{context()}")
        checked.append(f"quiet and in parity {time.monotonic() - t0:.1f}s after the publisher stopped")
        for name in stack.names():
            assert stack.daemons[name].alive(), f"{stack.daemons[name].name} died\n{context()}"
        starts = {name: stack.daemons[name].starts for name in stack.names()}

        # 1. No acknowledged frame missing from the ledger; none left received; applied at most once.
        rows = ledger(prefix)
        missing = missing_from_ledger(flow, prefix)
        assert not missing, f"{len(missing)} acknowledged frame(s) missing from the ledger: {missing[:5]}\n{context()}"
        assert [r for r in rows if r["status"] == "received"] == [], summary()
        copies = Counter((r["topic"], r["sha256"]) for r in rows)
        applied = Counter((r["topic"], r["sha256"]) for r in rows if r["status"] == "applied")
        assert [k for k, n in applied.items() if n > 1] == [], f"a frame applied twice\n{summary()}"
        statuses = Counter(r["status"] for r in rows)
        unacked = [s for s in sent if not s.acked]
        checked.append(f"(1) all {len(acked)} acknowledged frames are in the ledger, none left received "
                       f"(ledger of the group, probes included: {dict(statuses)}); ledger rows stored twice: "
                       f"{sum(n - 1 for n in copies.values())}; frames applied twice: 0; not acknowledged "
                       f"(excluded): {len(unacked)} {[s.error for s in unacked[:3]]}")

        big_row = next(r for r in rows if r["id"] == big_id)
        assert big_row["status"] == "applied", f"{big_row}\n{summary()}"
        batch_status, batch_attempts = sql_row("SELECT status, attempts FROM uns_meta.canary_push_batches"
                                               " WHERE id = %s", [sending])
        checked.append(f"the big birth the killed births worker held (frame {big_id}) was applied "
                       f"{(big_row['processed_at'] - big_row['received_at']).total_seconds():.0f}s after it was "
                       f"received (re-enqueued by beat); batch {sending}, in flight at the canary worker kill, "
                       f"ended {batch_status} after {batch_attempts} attempt(s)")

        # 2. No duplicate rows.
        def duplicates() -> tuple[list, list, list, dict, int]:
            metrics = list(Metric.objects.filter(device__group_id=group).values("device_id", "name")
                           .annotate(n=Count("id")).filter(n__gt=1))
            props = list(MetricProperty.objects.filter(metric__device__group_id=group).values("metric_id", "key")
                         .annotate(n=Count("id")).filter(n__gt=1))
            versions = list(MetricVersion.objects.filter(metric__device__group_id=group)
                            .values("metric_id", "changed_by").annotate(n=Count("id")).filter(n__gt=1))
            per_device = dict(Metric.objects.filter(device__group_id=group).exclude(device__edge="probe")
                              .values_list("device__device").annotate(n=Count("id")))
            n_props = MetricProperty.objects.filter(metric__device__group_id=group).exclude(
                metric__device__edge="probe").count()
            return metrics, props, versions, per_device, n_props

        dup_metrics, dup_props, dup_versions, per_device, n_props = db(duplicates)
        assert dup_metrics == [] and dup_props == [] and dup_versions == [], (
            f"duplicates: metrics {dup_metrics[:5]}, properties {dup_props[:5]}, versions {dup_versions[:5]}\n"
            f"{summary()}")
        assert per_device == {**{f"Dev{d}": METRICS for d in range(DEVICES)}, "Big": BIG_METRICS}, \
            f"{per_device}\n{summary()}"
        assert n_props == (DEVICES * METRICS + BIG_METRICS) * 10, f"{n_props} properties\n{summary()}"
        frames = [r for r in rows if r["status"] == "applied"]
        written = db(lambda: dict(MetricVersion.objects.filter(changed_by__in=[f"birth:{r['id']}" for r in frames])
                                  .values_list("changed_by").annotate(n=Count("id"))))
        wrong = [(r["id"], r["counts"].get("versions"), written.get(f"birth:{r['id']}", 0)) for r in frames
                 if r["counts"].get("versions", 0) != written.get(f"birth:{r['id']}", 0)]
        assert wrong == [], f"(frame, versions counted, versions written): {wrong[:10]}\n{summary()}"
        checked.append(f"(2) no duplicates: {DEVICES} devices x {METRICS} metrics and the big one's {BIG_METRICS} "
                       f"(unique device/name), "
                       f"{n_props} properties (unique metric/key), versions unique per metric and frame and "
                       f"equal to each of the {len(frames)} applied frames' count ({sum(written.values())} versions)")

        # 3. Canary equals the catalog, and the last published round.
        ids = group_metric_ids(group)
        problems = parity_problems(stack, ids)
        assert problems == [], f"{len(problems)} metric(s) differ: {problems[:3]}\n{summary()}"
        last_round = {s.device: s.round_no for s in acked}
        tags = db(lambda: {(d, name): cid for d, name, cid in Metric.objects.filter(device__group_id=group)
                           .exclude(device__edge="probe").values_list("device__device", "name", "canary_id")})
        def specs(device: str, round_no: int) -> Iterator[MetricSpec]:
            if device == "Big":
                return synthetic_metrics(BIG_METRICS, round_no=0, change_rate=0.0, seed=BIG_SEED, timestamp=now_ms())
            return synthetic_metrics(METRICS, round_no=round_no, change_rate=CHANGE_RATE,
                                     seed=3100 + int(device.removeprefix("Dev")), timestamp=now_ms())

        expected = {tags[(device, spec.name)]: mapped(spec) for device, r in last_round.items()
                    for spec in specs(device, r)}
        off = [tag for tag, props in expected.items() if mock.properties(tag) != props]
        assert off == [], f"{len(off)} tag(s) not at the last published round: {off[:5]}\n{summary()}"
        stats = mock.stats()
        checked.append(f"(3) the mock's properties equal the catalog's effective mapped properties for all "
                       f"{len(ids)} metrics of the group (probes included) and the last published round "
                       f"{sorted(last_round.values())} for the {len(expected)} simulated ones; mock requests "
                       f"{stats['requests_by_method']}, HTTP 5xx {stats['http_5xx']}")
        violations = db(integrity_violations)
        assert violations == [], f"{len(violations)} integrity violation(s): {violations[:5]}\n{summary()}"
        checked.append("(4) the verification scripts of ops/sql find nothing (duplicates, typed values, orphans, "
                       "sync queue, ledger)")
        checked.append(f"daemon starts {starts}; all running at the end")

    print("\n" + summary(), flush=True)
