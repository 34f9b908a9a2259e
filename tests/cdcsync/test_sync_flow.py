"""Catalog change → slot → pending (debounced) → diff → Canary mock, in process (TC-16, TC-17, TC-19)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.db import connection

from births import PRODUCTION_PROPS, birth, prod, receive, topic
from canary import push, sync
from canary.client import CanaryClient
from canary.effective import effective_targets
from catalog.models import Metric, PropertyOverride
from catalog.stewardship import record_steward_edit
from cdcsync.consumer import Consumer, replication_connection
from sparkplug.datatypes import DataType as T

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("canary")]


@pytest.fixture
def consumer(settings):
    settings.CDC_DEBOUNCE_SECONDS = 0.6
    settings.CDC_DEBOUNCE_MAX_SECONDS = 30
    settings.CANARY_BACKOFF_SECONDS = 0.01
    with replication_connection() as conn:
        c = Consumer(conn, slot=f"t_{uuid.uuid4().hex[:10]}")
        c.setup()
        try:
            yield c
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (c.slot,))


class Pushed(list):
    """The ``enqueue`` given to the flush: collects batch ids, pushed synchronously here instead of
    through Celery."""

    def __call__(self, batch_ids: list[int]) -> None:
        self.extend(batch_ids)


@pytest.fixture
def pushed() -> Pushed:
    return Pushed()


def drain(consumer: Consumer) -> None:
    while consumer.poll_once():
        pass


def pending() -> dict[int, int]:
    with connection.cursor() as cur:
        cur.execute("SELECT metric_id, changes FROM uns_meta.sync_pending")
        return dict(cur.fetchall())


def settle(consumer: Consumer, pushed: Pushed, timeout: float = 15) -> list[int]:
    """Read the slot, wait for due changes, flush and push until nothing is pending; returns batches pushed."""
    done: list[int] = []
    deadline = time.monotonic() + timeout
    client = CanaryClient()
    while True:
        drain(consumer)
        sync.flush_due(pushed)
        while pushed:
            batch = pushed.pop(0)
            push.push_batches([batch], pushed, client)
            done.append(batch)
        if not pending():
            return done
        assert time.monotonic() < deadline, f"still pending after {timeout}s: {pending()}"
        time.sleep(0.1)


def batch_bodies(ids: list[int]) -> list[dict]:
    from canary.models import PushBatch

    return [json.loads(PushBatch.objects.get(pk=i).body) for i in ids]


def mapped(props: dict) -> dict:
    return {k: v for k, (_, v) in props.items() if k != "Quality"}


def test_first_birth_reaches_canary_with_mapped_properties(consumer, pushed, canary):
    """TC-30 (in process): a birth's metrics arrive in Canary with every key except Quality."""
    t = topic()
    out = receive(t, birth(prod("P/a", alias=1), prod("P/b", alias=2)))
    batches = settle(consumer, pushed)
    assert len(batches) == 1
    for metric in Metric.objects.filter(device_id=out.device_id):
        assert canary.properties(metric.canary_id) == mapped(PRODUCTION_PROPS)


def test_burst_inside_the_window_gives_one_aggregated_diff(consumer, pushed, canary):
    """TC-16: several changes to one metric within the debounce window → one diff with the final values."""
    t = topic()
    receive(t, birth(prod("P/a", alias=1)))
    settle(consumer, pushed)
    for unit in ("°C", "K", "°F"):
        receive(t, birth(prod("P/a", alias=1, engUnit=(T.String, unit))))
    drain(consumer)
    (changes,) = pending().values()  # one pending row, however many row changes
    assert changes >= 3
    sync.flush_due(pushed)
    assert pushed == [], "nothing is due inside the window"
    batches = settle(consumer, pushed)
    (body,) = batch_bodies(batches)
    ((tag, rows),) = body.items()
    assert [(r[0], r[2]) for r in rows] == [("engUnit", "°F")]
    assert canary.properties(tag)["engUnit"] == "°F"


def test_change_reverted_inside_the_window_sends_nothing(consumer, pushed, canary):
    """TC-16: a change and its revert inside the window yield no Canary request."""
    t = topic()
    receive(t, birth(prod("P/a")))
    settle(consumer, pushed)
    before = canary.stats()["requests_by_method"].get("storeData", 0)
    receive(t, birth(prod("P/a", engUnit=(T.String, "bar"))))
    receive(t, birth(prod("P/a")))
    assert settle(consumer, pushed) == []
    assert canary.stats()["requests_by_method"].get("storeData", 0) == before


def test_successive_windows_property_change_then_rename_then_both(consumer, pushed, canary):
    """TC-17 / TC-13: diffs are right and in order across windows; a rename gets its full set."""
    t = topic()
    out = receive(t, birth(prod("P/old", alias=9)))
    settle(consumer, pushed)
    metric = Metric.objects.get(device_id=out.device_id)
    old_tag = metric.canary_id
    # 1. property change: only that key
    receive(t, birth(prod("P/old", alias=9, engHigh=(T.Double, 500.0))))
    (body,) = batch_bodies(settle(consumer, pushed))
    assert {tag: [(r[0], r[2]) for r in rows] for tag, rows in body.items()} == {old_tag: [("engHigh", 500.0)]}
    # 2. rename (same alias, same datatype): the new tag gets the full set
    receive(t, birth(prod("P/new", alias=9, engHigh=(T.Double, 500.0))))
    (body,) = batch_bodies(settle(consumer, pushed))
    metric.refresh_from_db()
    assert list(body) == [metric.canary_id] and metric.canary_id != old_tag
    assert canary.properties(metric.canary_id) == mapped({**PRODUCTION_PROPS, "engHigh": (T.Double, 500.0)})
    # 3. both: rename and a property change in one birth
    receive(t, birth(prod("P/newer", alias=9, engHigh=(T.Double, 600.0))))
    settle(consumer, pushed)
    metric.refresh_from_db()
    assert canary.properties(metric.canary_id) == mapped({**PRODUCTION_PROPS, "engHigh": (T.Double, 600.0)})


def test_removed_key_is_sent_as_null_and_disappears(consumer, pushed, canary):
    """A key gone from the birth is written as value null, quality 32768 (docs/architecture.md)."""
    t = topic()
    out = receive(t, birth(prod("P/a")))
    settle(consumer, pushed)
    props = {k: v for k, v in PRODUCTION_PROPS.items() if k != "documentation"}
    receive(t, birth(prod("P/a").__class__(name="P/a", datatype=T.Boolean, value=True, properties=props)))
    (body,) = batch_bodies(settle(consumer, pushed))
    ((tag, rows),) = body.items()
    assert [(r[0], r[2], r[3]) for r in rows] == [("documentation", None, 32768)]
    assert "documentation" not in canary.properties(tag)
    assert Metric.objects.get(device_id=out.device_id).canary_id == tag


def test_steward_override_reaches_canary_and_survives_the_next_birth(consumer, pushed, canary):
    """TC-19: an override wins over the edge value in Canary, also after a later DBIRTH changes the edge."""
    t = topic()
    out = receive(t, birth(prod("P/a")))
    settle(consumer, pushed)
    metric = Metric.objects.get(device_id=out.device_id)
    PropertyOverride.objects.create(metric=metric, key="engUnit", type="string", string_value="bar", updated_by="ana")
    record_steward_edit(metric, {}, {"engUnit": "bar"}, "ana")
    settle(consumer, pushed)
    assert canary.properties(metric.canary_id)["engUnit"] == "bar"
    assert metric.versions.first().changed_by == "steward:ana"
    receive(t, birth(prod("P/a", engUnit=(T.String, "psi"), engHigh=(T.Double, 10.0))))
    settle(consumer, pushed)
    assert canary.properties(metric.canary_id)["engUnit"] == "bar"
    assert canary.properties(metric.canary_id)["engHigh"] == 10.0
    assert metric.properties.get(key="engUnit").value == "psi"  # the edge value is kept beside it


def test_parity_after_births_edits_and_injected_faults(consumer, pushed, canary, settings):
    """TC-22 parity: after births, steward edits and 5xx faults, Canary equals the catalog."""
    settings.CANARY_BREAKER_MIN_REQUESTS = 10_000
    t = topic()
    n = 2000
    out = receive(t, birth(*(prod(f"P/m{i}", alias=i) for i in range(n))))
    canary.set_faults(error_rate=0.3)
    settle(consumer, pushed, timeout=120)
    receive(t, birth(*(prod(f"P/m{i}", alias=i, engHigh=(T.Double, float(i % 7))) for i in range(n))))
    for metric in Metric.objects.filter(device_id=out.device_id)[:50]:
        PropertyOverride.objects.create(metric=metric, key="documentation", type="string", string_value="fixed")
        record_steward_edit(metric, {}, {"documentation": "fixed"}, "ana")
    settle(consumer, pushed, timeout=120)
    canary.set_faults(error_rate=0.0)
    ids = list(Metric.objects.filter(device_id=out.device_id).values_list("id", flat=True))
    targets = effective_targets(ids)
    assert len(targets) == n
    mismatched = [tg.canary_id for tg in targets.values() if canary.properties(tg.canary_id) != tg.properties]
    assert mismatched == []
    assert canary.stats()["http_5xx"] > 0, "faults were really injected"
