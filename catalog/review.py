"""Needs review: overrides whose edge value changed after the override was set (docs/steward-guide.md).

Each override keeps the edge's type and value it was set or last kept against (``edge_seen``, filled
by a trigger, migration 0006); the edge's snapshot now is ``uns_meta.edge_snapshot``. A steward
either keeps the override (it is re-stamped against the new edge value) or accepts the edge value
(the override is removed and the metric synced); both are versioned as ``steward:<user>``.
"""

from __future__ import annotations

import json

from django.db import transaction
from django.db.models import BooleanField, JSONField, QuerySet
from django.db.models.expressions import RawSQL

from catalog.models import Metric, MetricVersion, PropertyOverride
from catalog.stewardship import record_steward_edit

_TABLE = '"uns_meta"."property_overrides"'
STALE_SQL = f"{_TABLE}.edge_seen IS DISTINCT FROM uns_meta.edge_snapshot({_TABLE}.metric_id, {_TABLE}.key)"
EDGE_NOW_SQL = f"uns_meta.edge_snapshot({_TABLE}.metric_id, {_TABLE}.key)"


def needs_review(queryset: QuerySet[PropertyOverride] | None = None) -> QuerySet[PropertyOverride]:
    """Overrides whose edge value (or type, or presence) differs from the one they were set against."""
    queryset = PropertyOverride.objects.all() if queryset is None else queryset
    return queryset.alias(stale=RawSQL(STALE_SQL, (), output_field=BooleanField())).filter(stale=True)


def with_edge_now(queryset: QuerySet[PropertyOverride]) -> QuerySet[PropertyOverride]:
    return queryset.annotate(edge_now=RawSQL(EDGE_NOW_SQL, (), output_field=JSONField()))


def snapshot_text(snapshot: dict | None) -> str:
    """An ``edge_seen`` / ``edge_now`` snapshot for a person: the value, or that the edge sends no such key."""
    if snapshot is None:
        return "— (the edge does not send this key)"
    value = snapshot.get("value")
    return "∅ (null)" if value is None else json.dumps(value, ensure_ascii=False)


def keep(overrides: QuerySet[PropertyOverride], user: str) -> int:
    """The steward keeps these overrides against the edge's new values: re-stamped, one version each."""
    count = 0
    with transaction.atomic():
        for override in with_edge_now(needs_review(overrides)).select_related("metric"):
            edge_now = getattr(override, "edge_now", None)
            kept = {"edge": [(override.edge_seen or {}).get("value"), (edge_now or {}).get("value")],
                    "override": json.loads(json.dumps(override.value, default=str))}
            MetricVersion.objects.create(metric=override.metric, kind=MetricVersion.Kind.STEWARD,
                                         changed_by=f"steward:{user}", change={"override_kept": {override.key: kept}})
            override.updated_by = user
            override.save(update_fields=["updated_by"])  # the trigger re-stamps edge_seen
            count += 1
    return count


def accept_edge(overrides: QuerySet[PropertyOverride], user: str) -> int:
    """The steward accepts the edge's values: these overrides are removed (versioned, synced to Canary)."""
    count = 0
    with transaction.atomic():
        for metric_id in needs_review(overrides).values_list("metric_id", flat=True).distinct():
            metric = Metric.objects.get(pk=metric_id)
            chosen = needs_review(overrides.filter(metric_id=metric_id))
            before = {o.key: o.value for o in PropertyOverride.objects.filter(metric=metric)}
            count += chosen.count()
            PropertyOverride.objects.filter(pk__in=list(chosen.values_list("pk", flat=True))).delete()
            after = {o.key: o.value for o in PropertyOverride.objects.filter(metric=metric)}
            record_steward_edit(metric, before, after, user)
    return count
