"""Push tasks: many batches per task, sent concurrently, settled in set-based statements, against
the real mock server, PostgreSQL and Redis."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
from django.db import connection, transaction
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from births import birth, m, prod, receive, topic
from canary import push, quarantine, sync
from canary import tasks as canary_tasks
from canary.effective import effective_targets
from canary.errors import CanaryRejected, CanaryUnavailable
from canary.models import InFlight, PushBatch, Quarantine, SyncState
from catalog.models import Metric
from cdcsync.pending import mark_now
from monitoring import integrity
from sparkplug.datatypes import DataType as T
from stack import wait_for

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


def acknowledged(**lookups: object):
    """Sync states of metrics Canary acknowledged (a failed or refused batch leaves unconfirmed
    ones without ``acked_at``)."""
    return SyncState.objects.filter(acked_at__isnull=False, **lookups)


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
    """TC-20 / TC-22: Canary refuses one tag (Errors): that one-tag batch is rejected with Canary's
    reason and its metric quarantined (not pending again, nothing in flight); the others are acked."""
    ids, batch_ids = batches_of(4, settings, enqueued)
    refused = Metric.objects.get(id=ids[1]).canary_id
    canary.set_faults(tag_errors=[refused])

    outcome = push.push_batches(batch_ids, enqueued)

    (rejected,) = outcome.rejected
    assert sorted(outcome.acked) == sorted(set(batch_ids) - {rejected})
    assert outcome.quarantined == [refused] and not outcome.split
    batch = PushBatch.objects.get(id=rejected)
    assert batch.status == "rejected" and refused in batch.error and "injected error" in batch.error
    held = Quarantine.objects.get(metric_id=ids[1])
    assert (held.canary_id, held.reason, held.batch_id, held.attempts) == (refused, batch.error, rejected, 1)
    assert pending_ids(ids) == set()
    assert not acknowledged(metric_id=ids[1]).exists()
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
    assert not acknowledged(metric_id__in=ids).exists()
    assert {batch: all(value == {"unconfirmed": batch} for value in properties.values())
            for batch, properties in SyncState.objects.filter(metric_id__in=ids).values_list("batch_id", "properties")
            } == dict.fromkeys(batch_ids, True), "what the failed batches sent is unconfirmed"
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
    assert not acknowledged(metric_id__in=ids).exists()
    assert InFlight.objects.filter(batch_id=batch_id).exists()
    assert push.give_back([(batch_id, first, "late")], "failed", delay=0) == []
    assert push.acknowledge([(batch_id, second)]) == [batch_id]
    assert acknowledged(metric_id=ids[0]).exists()


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
    """Ended batches (acked, failed, rejected, split) older than CANARY_BATCH_RETENTION_DAYS go; queued and
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
    old = {status: batch(status, 8) for status in ("acked", "failed", "rejected", "split", "queued", "sending")}
    recent = batch("acked", 6)
    assert prune_batches() >= 4
    left = set(PushBatch.objects.filter(id__in=[*old.values(), recent]).values_list("id", flat=True))
    assert left == {old["queued"], old["sending"], recent}


# --- per-tag isolation: split, quarantine, release (TC-43) -----------------------------------
def batch_counter(outcome: str) -> float:
    return REGISTRY.get_sample_value("metasync_canary_batches_total", {"outcome": outcome}) or 0.0


class Tasks(list):
    """``canary.tasks.enqueue_push`` for a test: records the push tasks to run; :meth:`run` runs them
    one after another through Celery (eagerly), each with the outcome Flower would show."""

    def __call__(self, batch_ids: list[int]) -> None:
        self.append(list(batch_ids))

    def run(self) -> list:
        results = []
        while self:
            results.append(canary_tasks.push_batches.apply(args=[self.pop(0)]))
        return results


@pytest.fixture
def tasks(monkeypatch) -> Tasks:
    recorded = Tasks()
    monkeypatch.setattr(canary_tasks, "enqueue_push", recorded)
    return recorded


def drain(enqueued: Enqueued) -> None:
    """Push everything enqueued (and what the pushes enqueue: halves of split batches)."""
    while enqueued:
        push.push_batches(enqueued.pop(0), enqueued)


def family_tree(root: int) -> dict[int, PushBatch]:
    """The batch ``root`` and every batch split from it, by id."""
    tree = {root: PushBatch.objects.get(id=root)}
    parents = [root]
    while parents:
        children = list(PushBatch.objects.filter(parent_id__in=parents))
        tree.update((c.id, c) for c in children)
        parents = [c.id for c in children]
    return tree


def web_gauge(client, name: str) -> float | None:
    """A gauge of the web's /metrics page (read from the database at scrape time)."""
    for family in text_string_to_metric_families(client.get("/metrics").content.decode()):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return None


def test_one_refused_tag_of_a_hundred_is_quarantined_and_the_other_99_arrive(canary, settings, tasks, client):
    """TC-43: Canary refuses one tag of a 100-tag batch (Errors). The batch is split, and its halves
    again, until the refused tag is alone: the mock holds the 99 others with their properties, the
    refused one is quarantined with Canary's reason, not pending (no blind retry, not even a
    delayed one) and not in flight; the split/quarantined counters and the web's quarantine gauge
    moved; the push task that quarantined it fails visibly (Flower) with the reason and is not
    retried, while the tasks that only split succeed."""
    settings.CANARY_PUSH_THREADS = 4
    split_before, quarantined_before = batch_counter("split"), batch_counter("quarantined")
    ids, (root,) = batches_of(100, settings, tasks, tags_per_batch=100)
    refused_id = ids[37]
    refused = Metric.objects.get(id=refused_id).canary_id
    canary.set_faults(tag_errors=[refused])

    results = tasks.run()

    failures = [r for r in results if r.state == "FAILURE"]
    assert len(failures) == 1 and all(r.state == "SUCCESS" for r in results if r not in failures)
    error = failures[0].result
    assert isinstance(error, CanaryRejected)
    assert str(error).startswith(f"1 tag(s) quarantined: {refused}: ") and "injected error" in str(error)
    task = canary_tasks.push_batches
    assert issubclass(CanaryRejected, task.dont_autoretry_for)
    assert not any(issubclass(CanaryRejected, e) for e in task.autoretry_for)

    targets = effective_targets(ids)
    delivered = canary.state()["tags"]
    assert refused not in delivered
    assert delivered == {t.canary_id: t.properties for mid, t in targets.items() if mid != refused_id}
    assert acknowledged(metric_id__in=ids).count() == 99
    assert not acknowledged(metric_id=refused_id).exists()

    held = Quarantine.objects.get()
    assert (held.metric_id, held.canary_id, held.attempts) == (refused_id, refused, 1)
    assert refused in held.reason and "injected error" in held.reason
    tree = family_tree(root)
    lone = tree[held.batch_id]
    assert (lone.status, lone.tags, lone.error, list(lone.targets)) == ("rejected", 1, held.reason, [str(refused_id)])
    assert tree[root].status == "split" and refused in tree[root].error
    statuses = [b.status for b in tree.values()]
    assert statuses.count("rejected") == 1 and set(statuses) == {"split", "acked", "rejected"}
    assert len(tree) == 1 + 2 * statuses.count("split")  # every split made two children
    assert sum(b.tags for b in tree.values() if b.status == "acked") == 99
    assert all(b.attempts == 1 for b in tree.values())  # nothing was sent twice, the refused tag not retried
    assert batch_counter("split") - split_before == statuses.count("split")
    assert batch_counter("quarantined") - quarantined_before == 1

    assert pending_ids(ids) == set()  # not even a delayed retry
    assert not InFlight.objects.filter(metric_id__in=ids).exists()
    assert integrity.run(["sync_queue", "quarantine"]) == []
    assert web_gauge(client, "metasync_canary_quarantined_tags") == 1


def test_a_quarantined_tag_is_retried_when_its_metadata_changes(canary, settings, enqueued):
    """TC-43: a quarantined metric is pushed again when its metadata changes (pending as usual); a
    new refusal updates its quarantine (reason, attempts + 1, time); once Canary accepts it, the
    acknowledgement ends the quarantine."""
    settings.CANARY_BATCH_TAGS = 4
    t = topic()
    ids = device_metrics(receive(t, birth(*(prod(f"Area/Q{i}", alias=i + 1) for i in range(4)))).device_id)
    mark_now(ids, reason="test")
    sync.flush_once(enqueued)
    refused = Metric.objects.get(id=ids[2]).canary_id
    canary.set_faults(tag_errors=[refused])
    drain(enqueued)
    first = Quarantine.objects.get(metric_id=ids[2])
    assert acknowledged(metric_id__in=ids).count() == 3

    receive(t, birth(*(prod(f"Area/Q{i}", alias=i + 1, engUnit=(T.String, "kg")) for i in range(4))))
    mark_now([ids[2]], reason="cdc")  # what cdc_consume does for the change
    assert sync.flush_once(enqueued)[0] == 1  # the flush takes it: no batch in flight holds it
    drain(enqueued)
    again = Quarantine.objects.get(metric_id=ids[2])
    assert again.attempts == 2 and again.quarantined_at > first.quarantined_at and again.batch_id != first.batch_id
    assert "injected error" in again.reason and pending_ids(ids) == set()

    canary.set_faults(tag_errors=[])
    mark_now([ids[2]], reason="cdc")
    sync.flush_once(enqueued)
    drain(enqueued)
    assert not Quarantine.objects.filter(metric_id=ids[2]).exists()
    assert canary.properties(refused) == effective_targets([ids[2]])[ids[2]].properties
    assert canary.properties(refused)["engUnit"] == "kg"


def test_push_again_releases_quarantined_tags_and_their_acknowledgement_ends_it(canary, settings, enqueued):
    """TC-43: "Push again" (canary.quarantine.release): the quarantined metrics are pending, due
    now; ids not in quarantine are ignored; the quarantine row stays until Canary acknowledges."""
    ids, _ = batches_of(3, settings, enqueued)
    refused = [Metric.objects.get(id=i).canary_id for i in ids[:2]]
    canary.set_faults(tag_errors=refused)
    drain(enqueued)
    assert sorted(Quarantine.objects.values_list("metric_id", flat=True)) == ids[:2]

    canary.set_faults(tag_errors=[])
    assert quarantine.release([ids[0], ids[2]]) == [ids[0]]
    assert pending_ids(ids) == {ids[0]} and Quarantine.objects.filter(metric_id=ids[0]).exists()
    assert sync.flush_once(enqueued)[0] == 1
    drain(enqueued)
    assert list(Quarantine.objects.values_list("metric_id", flat=True)) == [ids[1]]
    assert acknowledged(metric_id=ids[0]).exists()
    assert canary.properties(refused[0]) == effective_targets([ids[0]])[ids[0]].properties


def test_two_refused_tags_are_each_quarantined_and_named_by_the_failed_task(canary, settings, tasks):
    """TC-43: two refused tags of an 8-tag batch: both quarantined, the six others delivered, and
    the tasks that quarantined them fail naming them."""
    ids, _ = batches_of(8, settings, tasks, tags_per_batch=8)
    refused = sorted(Metric.objects.get(id=i).canary_id for i in (ids[0], ids[7]))
    canary.set_faults(tag_errors=refused)

    results = tasks.run()

    messages = [str(r.result) for r in results if r.state == "FAILURE"]
    assert messages and all("quarantined" in m and "injected error" in m for m in messages)
    assert sorted(c for c in refused for m in messages if f"quarantined: {c}" in m or f", {c}" in m) == refused
    assert sorted(Quarantine.objects.values_list("canary_id", flat=True)) == refused
    assert acknowledged(metric_id__in=ids).count() == 6
    assert not InFlight.objects.filter(metric_id__in=ids).exists() and pending_ids(ids) == set()


def test_a_claim_that_lost_its_lease_neither_splits_nor_quarantines(canary, settings, enqueued):
    """TC-43: splitting is fenced by the claim like the acknowledgement: a claim another worker has
    taken over writes nothing (no children, no quarantine, in-flight rows where they were). The
    current claim splits: two queued halves, each carrying its tags, targets and in-flight rows."""
    ids, (batch_id,) = batches_of(4, settings, enqueued, tags_per_batch=4)
    ((_, first, _),) = push.claim([batch_id])
    with connection.cursor() as cur:  # another worker took the batch over
        cur.execute("UPDATE uns_meta.canary_push_batches SET attempts = attempts + 1 WHERE id = %s", [batch_id])

    assert push.refuse([(batch_id, first, "refused")]) == push.Refused()
    assert PushBatch.objects.get(id=batch_id).status == "sending"
    assert not PushBatch.objects.filter(parent_id=batch_id).exists() and not Quarantine.objects.exists()
    assert set(InFlight.objects.filter(metric_id__in=ids).values_list("batch_id", flat=True)) == {batch_id}

    halves = push.refuse([(batch_id, first + 1, "refused")])
    assert halves.split == [batch_id] and len(halves.children) == 2
    parent = PushBatch.objects.get(id=batch_id)
    assert (parent.status, parent.error) == ("split", "refused")
    children = list(PushBatch.objects.filter(parent_id=batch_id).order_by("id"))
    assert [(c.status, c.attempts, c.tags, len(c.targets)) for c in children] == [("queued", 0, 2, 2)] * 2
    assert sorted(int(m) for c in children for m in c.targets) == sorted(ids)
    for child in children:
        assert set(InFlight.objects.filter(batch_id=child.id).values_list("metric_id", flat=True)) == set(
            map(int, child.targets))
        assert {t["canary_id"] for t in child.targets.values()} == set(json.loads(child.body))
        assert child.size == len(child.body)
    assert integrity.run(["sync_queue", "quarantine"]) == []


def test_a_refused_session_fails_the_batch_without_splitting_it(canary, settings, enqueued):
    """Canary refusing the session (a wrong apiToken) says nothing about the batch's tags: the batch
    fails (its metrics pending again after 30 s, the task fails visibly); nothing is split or
    quarantined."""
    ids, (batch_id,) = batches_of(4, settings, enqueued, tags_per_batch=4)
    settings.CANARY_API_TOKEN = "not-the-token"

    outcome = push.push_batches([batch_id], enqueued)

    assert outcome.failed == [batch_id] and not (outcome.split or outcome.rejected)
    assert "refused the session" in outcome.reasons[batch_id]
    assert PushBatch.objects.get(id=batch_id).status == "failed"
    assert not PushBatch.objects.filter(parent_id=batch_id).exists() and not Quarantine.objects.exists()
    assert pending_ids(ids) == set(ids)


def test_a_metric_with_nothing_left_to_send_leaves_the_quarantine(canary, settings, enqueued):
    """TC-43: a refused change that is reverted is sent again (Canary may have kept part of the
    refused request) and its acknowledgement ends the quarantine; a quarantined metric that is
    then retired has nothing left to send, and the flush ends its quarantine."""
    t = topic()
    ids = device_metrics(receive(t, birth(prod("Area/R", alias=1))).device_id)
    mark_now(ids, reason="test")
    sync.flush_once(enqueued)
    drain(enqueued)
    receive(t, birth(prod("Area/R", alias=1, engUnit=(T.String, "bar"))))
    mark_now(ids, reason="cdc")
    sync.flush_once(enqueued)
    tag = Metric.objects.get(id=ids[0]).canary_id
    canary.set_faults(tag_errors=[tag])
    drain(enqueued)
    assert Quarantine.objects.filter(metric_id=ids[0]).exists()

    receive(t, birth(prod("Area/R", alias=1)))  # reverted
    mark_now(ids, reason="cdc")
    canary.set_faults()
    _, batch_ids = sync.flush_once(enqueued)  # Canary may have kept part of what it refused: sent again
    assert [row[:1] + row[2:3] for b in batch_ids for row in json.loads(PushBatch.objects.get(id=b).body)[tag]] == [
        ["engUnit", ""]]
    drain(enqueued)
    assert not Quarantine.objects.filter(metric_id=ids[0]).exists()

    receive(t, birth(prod("Area/R", alias=1, engUnit=(T.String, "baz"))))  # refused again, then retired
    mark_now(ids, reason="cdc")
    sync.flush_once(enqueued)
    canary.set_faults(tag_errors=[tag])
    drain(enqueued)
    assert Quarantine.objects.filter(metric_id=ids[0]).exists()
    receive(t, birth(prod("Area/Other", alias=2)))
    assert Metric.objects.get(id=ids[0]).retired_at is not None
    mark_now(ids, reason="cdc")
    assert sync.flush_once(enqueued) == (1, []), "a retired metric: Canary keeps what it has"
    assert not Quarantine.objects.exists()


def test_the_flush_has_a_queue_of_its_own_that_births_workers_do_not_consume(settings):
    """TC-42: flush and re-drive go to queue `sync`, which the canary workers consume and the births
    workers do not (compose, the demo and the test stack), so a drain never holds a births slot."""
    import yaml

    from metasync.celery import app

    for name in ("canary.tasks.flush_due", "canary.tasks.redrive_batches"):
        assert app.amqp.router.route({}, name)["queue"].name == "sync"
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["flush-due-changes"]["options"]["queue"] == "sync"
    compose = yaml.safe_load((Path(settings.BASE_DIR) / "docker-compose.yml").read_text())["services"]
    queues = {name: svc["command"][svc["command"].index("-Q") + 1].split(",")
              for name, svc in compose.items() if "-Q" in (svc.get("command") or [])}
    assert "sync" in queues["canary-worker"] and "sync" not in queues["worker"], queues



def _lost_answer(canary, settings, enqueued, batch_ids: list[int]) -> None:
    """Push ``batch_ids`` while Canary takes each request but its answer never arrives (the client
    times out), then let the hung requests through: the batches failed, yet Canary applied them."""
    settings.CANARY_ATTEMPTS = 1
    settings.CANARY_TIMEOUT_SECONDS = 0.3
    push._thread_client().store_properties({})  # the session exists: only storeData will hang
    canary.set_faults(hang_seconds=30)
    outcome = push.push_batches(batch_ids, enqueued)
    assert sorted(outcome.failed) == sorted(batch_ids), outcome
    stored = canary.stats()["store_requests_stored"]
    canary.set_faults()  # cuts the hangs short: the mock now stores what it was sent
    wait_for(lambda: canary.stats()["store_requests_stored"] == stored + len(batch_ids), 5,
             "Canary to apply the batches whose answers were lost")


def _rows(batch_id: int, tag: str) -> list[tuple[str, object]]:
    return [(name, value) for name, _, value, _ in json.loads(PushBatch.objects.get(id=batch_id).body)[tag]]


def test_a_failed_batch_that_canary_applied_anyway_is_not_trusted_to_be_absent(canary, settings, enqueued):
    """A batch whose answer was lost (a timeout, a killed worker) may have been applied: the keys
    it sent become unconfirmed in the sync state, so a change back to the acknowledged value is
    sent again and Canary ends equal to the catalog (it used to keep the failed batch's value)."""
    kiln = topic()
    (metric_id,) = ids = device_metrics(receive(kiln, birth(prod("Area/Kiln", alias=1, engHigh=(T.Double, 480.0))))
                                        .device_id)
    mark_now(ids, reason="test")
    _, batch_ids = sync.flush_once(enqueued)
    assert push.push_batches(batch_ids, enqueued).acked == batch_ids
    tag = SyncState.objects.get(metric_id=metric_id).canary_id

    receive(kiln, birth(prod("Area/Kiln", alias=1, engHigh=(T.Double, 520.0))))
    mark_now(ids, reason="test")
    _, (lost,) = sync.flush_once(enqueued)
    _lost_answer(canary, settings, enqueued, [lost])
    assert canary.properties(tag)["engHigh"] == 520.0
    state = SyncState.objects.get(metric_id=metric_id)
    assert state.properties["engHigh"] == {"unconfirmed": lost}
    assert state.properties["engLow"] == 0.0, "what the batch did not send stays acknowledged"
    assert pending_ids(ids) == set(ids)
    assert integrity.run(["sync_queue"]) == []
    with transaction.atomic():  # were it not pending again, verification would say so
        with connection.cursor() as cur:
            cur.execute("DELETE FROM uns_meta.sync_pending WHERE metric_id = %s", [metric_id])
        assert [v.detail for v in integrity.run(["sync_queue"])] == [f"metric {metric_id} ({tag}) batch {lost}"]
        transaction.set_rollback(True)

    receive(kiln, birth(prod("Area/Kiln", alias=1, engHigh=(T.Double, 480.0))))  # back to the acknowledged value
    mark_now(ids, reason="test")
    _, batch_ids = sync.flush_once(enqueued)
    assert [_rows(b, tag) for b in batch_ids] == [[("engHigh", 480.0)]], "Canary may hold 520: sent again"
    assert push.push_batches(batch_ids, enqueued).acked == batch_ids
    assert canary.properties(tag)["engHigh"] == 480.0
    assert SyncState.objects.get(metric_id=metric_id).properties == canary.properties(tag)


def test_a_first_batch_that_failed_leaves_its_keys_to_be_removed_later(canary, settings, enqueued):
    """A metric never acknowledged whose first batch failed after Canary applied it: a property
    that then leaves the catalog is still removed in Canary (the failed batch's keys are kept as
    unconfirmed, with no acknowledgement time)."""
    mill = topic()
    (metric_id,) = ids = device_metrics(receive(mill, birth(m("Area/Mill", T.Double, alias=1, value=1.0,
                                                              engUnit=(T.String, "t/h"), engHigh=(T.Double, 9.0))))
                                        .device_id)
    mark_now(ids, reason="test")
    _, (lost,) = sync.flush_once(enqueued)
    _lost_answer(canary, settings, enqueued, [lost])
    state = SyncState.objects.get(metric_id=metric_id)
    assert state.acked_at is None and state.properties
    assert all(value == {"unconfirmed": lost} for value in state.properties.values())
    assert canary.properties(state.canary_id)["engUnit"] == "t/h"

    receive(mill, birth(m("Area/Mill", T.Double, alias=1, value=1.0, engHigh=(T.Double, 9.0))))  # no engUnit now
    mark_now(ids, reason="test")
    _, batch_ids = sync.flush_once(enqueued)
    assert ("engUnit", None) in _rows(batch_ids[0], state.canary_id)
    assert push.push_batches(batch_ids, enqueued).acked == batch_ids
    assert "engUnit" not in canary.properties(state.canary_id)
    state.refresh_from_db()
    assert state.acked_at is not None and state.properties == canary.properties(state.canary_id)
