"""Push tasks: many batches per task, sent concurrently, settled in set-based statements, against
the real mock server, PostgreSQL and Redis."""

from __future__ import annotations

import json
import math
import threading

import pytest
from django.db import connection

from births import birth, prod, receive, topic
from canary import push, sync
from canary.effective import effective_targets
from canary.errors import CanaryUnavailable
from canary.models import InFlight, PushBatch, SyncState
from catalog.models import Metric
from cdcsync.pending import mark_now
from sparkplug.datatypes import DataType as T

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("canary")]


_made: list[int] = []  # metrics the current test made


@pytest.fixture(autouse=True)
def _nothing_left_pending():
    """The uns_meta tables outlive a test (they are not Django's to flush): metrics re-pended here
    (failed, rejected) must not be left due for the flows of later tests."""
    yield
    with connection.cursor() as cur:
        cur.execute("DELETE FROM uns_meta.sync_pending WHERE metric_id = ANY(%s)", [_made])
    _made.clear()


def device_metrics(device_id: int) -> list[int]:
    ids = list(Metric.objects.filter(device_id=device_id).order_by("id").values_list("id", flat=True))
    _made.extend(ids)
    return ids


class Enqueued(list):
    """The ``enqueue`` given to the flush and the push: records each call's batch ids (push tasks
    are called directly here, not through Celery)."""

    def __call__(self, batch_ids: list[int]) -> None:
        self.append(list(batch_ids))


@pytest.fixture
def enqueued() -> Enqueued:
    return Enqueued()




def batches_of(n: int, settings, enqueue: push.Enqueue, tags_per_batch: int = 1) -> tuple[list[int], list[int]]:
    """A device of ``n`` production-shaped metrics, all due, flushed: (metric ids, batch ids)."""
    settings.CANARY_BATCH_TAGS = tags_per_batch
    ids = device_metrics(receive(topic(), _birth(n)).device_id)
    mark_now(ids, reason="test")
    claimed, batch_ids = sync.flush_once(enqueue)
    assert claimed == n
    return ids, batch_ids


def _birth(n: int) -> bytes:
    return birth(*(prod(f"Area/Tag{i:03d}", alias=i + 1) for i in range(n)))


def pending_ids(ids: list[int]) -> set[int]:
    """Those of ``ids`` pending (the uns_meta tables outlive a test: every test scopes to its ids)."""
    with connection.cursor() as cur:
        cur.execute("SELECT metric_id FROM uns_meta.sync_pending WHERE metric_id = ANY(%s)", [ids])
        return {r[0] for r in cur.fetchall()}


def test_a_push_task_sends_its_batches_concurrently_and_acknowledges_them_together(canary, settings, enqueued,
                                                                                     monkeypatch):
    """TC-20: one task, twelve one-tag batches, sent by the thread pool (several sender threads,
    the mock answering after 50 ms): every batch acked, the sync state equals each metric's target,
    nothing left in flight, one storeData per batch."""
    settings.CANARY_PUSH_THREADS = 4
    canary.set_faults(latency_ms=50)
    ids, batch_ids = batches_of(12, settings, enqueued)
    assert len(batch_ids) == 12 and enqueued == [batch_ids]  # one task's worth, enqueued after commit
    senders: set[str] = set()
    real_send = push._send

    def send(*args: object) -> tuple[str, str]:
        senders.add(threading.current_thread().name)
        return real_send(*args)

    monkeypatch.setattr(push, "_send", send)
    outcome = push.push_batches(batch_ids, enqueued)

    assert len(senders) > 1 and all(name.startswith("canary-push") for name in senders), senders

    assert sorted(outcome.acked) == sorted(batch_ids) and not (outcome.failed or outcome.rejected)
    assert set(PushBatch.objects.filter(id__in=batch_ids).values_list("status", flat=True)) == {"acked"}
    assert not InFlight.objects.filter(metric_id__in=ids).exists()
    targets = effective_targets(ids)
    for state in SyncState.objects.filter(metric_id__in=ids):
        assert (state.canary_id, state.properties) == (targets[state.metric_id].canary_id,
                                                       targets[state.metric_id].properties)
        assert canary.properties(state.canary_id) == state.properties
    assert canary.stats()["requests_by_method"]["storeData"] == 12
    assert push.push_batches(batch_ids, enqueued).skipped == 12  # done already: nothing is sent twice


def test_push_tasks_carry_the_configured_number_of_batches(settings, monkeypatch):
    """The flush hands Celery CANARY_PUSH_TASK_BATCHES batch ids per task, on the canary queue."""
    from canary.tasks import enqueue_push
    from canary.tasks import push_batches as task

    sent: list[list[int]] = []
    monkeypatch.setattr(task, "apply_async", lambda args: sent.append(args[0]))
    settings.CANARY_PUSH_TASK_BATCHES = 5
    _, batch_ids = batches_of(12, settings, enqueue_push)
    assert sent == [batch_ids[:5], batch_ids[5:10], batch_ids[10:]]
    assert settings.CELERY_TASK_ROUTES[task.name] == {"queue": "canary"}


def test_rejected_and_acked_batches_of_one_task_each_get_their_outcome(canary, settings, enqueued):
    """TC-20 / TC-22: Canary refuses one tag (Errors): that batch is rejected with Canary's reason
    and its metric is pending again after CANARY_REJECTED_RETRY_SECONDS; the others are acked."""
    ids, batch_ids = batches_of(4, settings, enqueued)
    refused = Metric.objects.get(id=ids[1]).canary_id
    canary.set_faults(tag_errors=[refused])

    outcome = push.push_batches(batch_ids, enqueued)

    (rejected,) = outcome.rejected
    assert sorted(outcome.acked) == sorted(set(batch_ids) - {rejected})
    batch = PushBatch.objects.get(id=rejected)
    assert batch.status == "rejected" and refused in batch.error and "injected error" in batch.error
    assert pending_ids(ids) == {ids[1]}
    assert not SyncState.objects.filter(metric_id=ids[1]).exists()
    assert not InFlight.objects.filter(metric_id__in=ids).exists()


def test_canary_unavailable_fails_the_batches_and_the_task_visibly(canary, settings, enqueued):
    """TC-22: retries exhausted → every batch failed, its metrics pending again, nothing acked; the
    Celery task raises (Flower shows it failed) after settling them."""
    from canary.tasks import push_batches as task

    settings.CANARY_ATTEMPTS = 1
    settings.CANARY_BREAKER_MIN_REQUESTS = 10_000
    ids, batch_ids = batches_of(3, settings, enqueued)
    canary.set_faults(error_rate=1.0)

    with pytest.raises(CanaryUnavailable, match="3 batch"):
        task.apply(args=[batch_ids], throw=True)

    assert set(PushBatch.objects.filter(id__in=batch_ids).values_list("status", flat=True)) == {"failed"}
    assert pending_ids(ids) == set(ids)
    assert not SyncState.objects.filter(metric_id__in=ids).exists()
    assert not InFlight.objects.filter(metric_id__in=ids).exists()


def test_a_claim_taken_over_after_its_lease_cannot_acknowledge(canary, settings, enqueued):
    """A task that outlived its lease (another worker re-claimed the batch) writes nothing: the
    acknowledgement is fenced by the claim's attempt number."""
    ids, (batch_id,) = batches_of(1, settings, enqueued)
    ((_, first, _),) = push.claim([batch_id])
    with connection.cursor() as cur:  # pretend the lease ran out (the touch trigger would reset updated_at)
        cur.execute("ALTER TABLE uns_meta.canary_push_batches DISABLE TRIGGER canary_push_batches_touch")
        try:
            cur.execute("UPDATE uns_meta.canary_push_batches SET updated_at = now() - interval '1 hour'"
                        " WHERE id = %s", [batch_id])
        finally:
            cur.execute("ALTER TABLE uns_meta.canary_push_batches ENABLE TRIGGER canary_push_batches_touch")
    ((_, second, _),) = push.claim([batch_id])
    assert second == first + 1

    assert push.acknowledge([(batch_id, first)]) == []
    assert not SyncState.objects.filter(metric_id__in=ids).exists()
    assert InFlight.objects.filter(batch_id=batch_id).exists()
    assert push.give_back([(batch_id, first, "late")], "failed", delay=0) == []
    assert push.acknowledge([(batch_id, second)]) == [batch_id]
    assert SyncState.objects.filter(metric_id=ids[0]).exists()


def test_batches_not_started_before_the_claim_could_expire_go_back_to_queued(canary, settings, enqueued,
                                                                              monkeypatch):
    """A task never begins a send its claim might outlive: those batches return to queued (attempt
    given back) and into a new task."""
    _, batch_ids = batches_of(3, settings, enqueued)
    enqueued.clear()
    monkeypatch.setattr(push, "SENDING_LEASE_SECONDS", settings.CANARY_OPERATION_DEADLINE_SECONDS)

    outcome = push.push_batches(batch_ids, enqueued)

    assert sorted(outcome.requeued) == sorted(batch_ids) and not outcome.acked
    assert set(PushBatch.objects.filter(id__in=batch_ids).values_list("status", "attempts")) == {("queued", 0)}
    assert enqueued == [sorted(batch_ids)]
    assert canary.stats()["requests_by_method"].get("storeData", 0) == 0


def test_a_non_finite_double_reaches_canary_as_text_and_is_not_resent(canary, settings, enqueued):
    """Bad input loses nothing else: Sparkplug allows NaN/Infinity, JSON does not. They go as the
    text 'nan'/'inf' (a NaN would otherwise fail the whole request, and NaN != NaN would make every
    flush see a change)."""
    settings.CANARY_BATCH_TAGS = 10
    ids = device_metrics(receive(topic(), _nan_birth()).device_id)
    mark_now(ids, reason="test")
    _, batch_ids = sync.flush_once(enqueued)
    assert push.push_batches(batch_ids, enqueued).acked == batch_ids
    tags = dict(Metric.objects.filter(id__in=ids).values_list("name", "canary_id"))
    assert canary.properties(tags["Area/NaN"])["engHigh"] == "nan"
    assert canary.properties(tags["Area/Inf"])["engLow"] == "-inf"
    assert canary.properties(tags["Area/Fine"])["engHigh"] == 100.0
    assert json.loads(PushBatch.objects.get(id=batch_ids[0]).body)  # valid JSON (no NaN token)

    mark_now(ids, reason="test")
    assert sync.flush_once(enqueued) == (3, [])  # nothing differs from what Canary acknowledged


def _nan_birth() -> bytes:
    return birth(prod("Area/NaN", alias=1, engHigh=(T.Double, math.nan)),
                 prod("Area/Inf", alias=2, engLow=(T.Double, -math.inf)),
                 prod("Area/Fine", alias=3, engHigh=(T.Double, 100.0)))


def test_ended_batches_past_retention_are_pruned_and_unsent_ones_never(settings):
    """Ended batches (acked, failed, rejected) older than CANARY_BATCH_RETENTION_DAYS go; queued and
    sending ones stay whatever their age, and so do recent ended ones."""
    from canary.tasks import prune_batches

    def batch(status: str, days_ago: float) -> int:
        made = PushBatch.objects.create(status=status, tags=1, size=2, body="{}", targets={})
        with connection.cursor() as cur:  # the touch trigger would set updated_at to now()
            cur.execute("ALTER TABLE uns_meta.canary_push_batches DISABLE TRIGGER canary_push_batches_touch")
            try:
                cur.execute("UPDATE uns_meta.canary_push_batches SET updated_at = now() - %s * interval '1 day'"
                            " WHERE id = %s", [days_ago, made.id])
            finally:
                cur.execute("ALTER TABLE uns_meta.canary_push_batches ENABLE TRIGGER canary_push_batches_touch")
        return made.id

    settings.CANARY_BATCH_RETENTION_DAYS = 7
    old = {status: batch(status, 8) for status in ("acked", "failed", "rejected", "queued", "sending")}
    recent = batch("acked", 6)
    assert prune_batches() >= 3
    left = set(PushBatch.objects.filter(id__in=[*old.values(), recent]).values_list("id", flat=True))
    assert left == {old["queued"], old["sending"], recent}
