"""Where a metric's properties stand on their way to Canary, for the metric page (docs/steward-guide.md).

Per key: the edge value, the steward's override, the effective value Canary should hold (mapped,
as :mod:`canary.effective` computes it), what Canary last acknowledged (``canary_sync_state``)
and a state. The metric's state is, first that applies: *quarantined* (Canary refused its tag on
its own; with Canary's reason), *in flight* (a batch is being pushed), *pending* (a change waits
for the flush, due at a time), *in sync* (every effective value is the acknowledged one) or
*out of sync* (a difference no pending row covers yet, e.g. the CDC has not read it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from canary.effective import effective_targets, load_mapping
from canary.models import InFlight, Quarantine, SyncState
from catalog.models import Metric, MetricProperty, PropertyOverride
from cdcsync.models import PendingSync
from cdcsync.pending import mark_now

IN_SYNC, PENDING, IN_FLIGHT, QUARANTINED, OUT_OF_SYNC = "in sync", "pending", "in flight", "quarantined", "out of sync"
NOT_SENT = "not sent (excluded by the mapping)"
UNCONFIRMED = "unconfirmed"
MISSING = object()  # Canary acknowledged nothing under this name


@dataclass
class KeyDelivery:
    key: str
    canary_name: str | None  # None: the mapping excludes the key
    edge: object = MISSING  # MISSING: the edge does not send the key
    edge_null: bool = False
    override: object = MISSING  # MISSING: no override
    override_null: bool = False
    effective: object = MISSING  # what Canary should hold under canary_name
    acked: object = MISSING  # what Canary acknowledged under canary_name
    state: str = IN_SYNC


@dataclass
class MetricDelivery:
    metric_id: int
    canary_id: str
    state: str
    acked_at: datetime | None = None  # the last acknowledgement of this tag
    due_at: datetime | None = None  # pending: when the flush takes it
    batch_id: int | None = None  # in flight: the batch
    reason: str = ""  # quarantined: Canary's reason
    quarantined_at: datetime | None = None
    keys: list[KeyDelivery] = field(default_factory=list)


def metric_delivery(metric: Metric) -> MetricDelivery:
    """The delivery panel of one metric (a handful of primary-key lookups)."""
    mapping = load_mapping()
    target = effective_targets([metric.pk], mapping).get(metric.pk)
    effective = target.properties if target is not None else {}
    state = SyncState.objects.filter(metric_id=metric.pk).first()
    acked = state.properties if state is not None else {}
    held = Quarantine.objects.filter(metric_id=metric.pk).first()
    flight = InFlight.objects.filter(metric_id=metric.pk).first()
    pending = PendingSync.objects.filter(metric_id=metric.pk).first()

    keys: dict[str, KeyDelivery] = {}
    for prop in MetricProperty.objects.filter(metric=metric):
        row = keys.setdefault(prop.key, KeyDelivery(prop.key, mapping.get(prop.key, prop.key)))
        row.edge, row.edge_null = prop.value, prop.is_null
    for override in PropertyOverride.objects.filter(metric=metric):
        row = keys.setdefault(override.key, KeyDelivery(override.key, mapping.get(override.key, override.key)))
        row.override, row.override_null = override.value, override.is_null
    sent_names = set()
    for row in keys.values():
        if row.canary_name is None:
            row.state = NOT_SENT
            continue
        sent_names.add(row.canary_name)
        row.effective = effective.get(row.canary_name, MISSING)
        row.acked = acked.get(row.canary_name, MISSING)
    for name, value in acked.items():  # names Canary holds that nothing sends any more
        if name not in sent_names:
            keys[name] = KeyDelivery(name, name, acked=value)

    if held is not None:
        overall = QUARANTINED
    elif flight is not None:
        overall = IN_FLIGHT
    elif pending is not None:
        overall = PENDING
    else:
        overall = IN_SYNC
    for row in keys.values():
        if row.canary_name is None:
            continue
        if _same(row.effective, row.acked):
            row.state = IN_SYNC
        elif isinstance(row.acked, dict) and set(row.acked) == {"unconfirmed"}:
            row.state = f"{UNCONFIRMED} (batch {row.acked['unconfirmed']})" if overall == IN_SYNC else overall
        else:
            row.state = overall if overall != IN_SYNC else OUT_OF_SYNC
    if overall == IN_SYNC and any(r.state not in (IN_SYNC, NOT_SENT) for r in keys.values()):
        overall = OUT_OF_SYNC
    return MetricDelivery(
        metric.pk, metric.canary_id, overall,
        acked_at=state.acked_at if state is not None else None,
        due_at=pending.due_at if pending is not None else None,
        batch_id=flight.batch_id if flight is not None else None,
        reason=held.reason if held is not None else "",
        quarantined_at=held.quarantined_at if held is not None else None,
        keys=sorted(keys.values(), key=lambda r: r.key),
    )


def _same(effective: object, acked: object) -> bool:
    if effective is MISSING or acked is MISSING:
        return effective is acked
    return effective == acked and isinstance(effective, bool) == isinstance(acked, bool)


def push_now(metric_ids: list[int]) -> int:
    """Diff these metrics against what Canary acknowledged now (no debounce; a quarantined tag is
    tried again): the flush sends what differs. Returns how many were marked."""
    return mark_now(metric_ids, reason="steward push")


def resync_device(device_id: int) -> int:
    """Forget what Canary acknowledged for every metric of the device and push them now: each gets
    its full mapped set (the repair when Canary lost or altered a device's tags)."""
    ids = list(Metric.objects.filter(device_id=device_id).values_list("pk", flat=True))
    with transaction.atomic():
        SyncState.objects.filter(metric_id__in=ids).delete()
        return mark_now(ids, reason="resync")
