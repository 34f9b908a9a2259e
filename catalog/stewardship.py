"""Steward corrections: overrides beside the edge value, each change versioned by ``steward:<user>``."""

from __future__ import annotations

import json

from catalog.models import Metric, MetricVersion
from catalog.signals import metrics_need_sync


def record_steward_edit(metric: Metric, before: dict, after: dict, user: str) -> None:
    """A steward changed the overrides of ``metric`` from ``before`` to ``after`` (key -> value):
    one version by ``steward:<user>``, and the metric is synced to Canary promptly."""
    diff: dict = {}
    added = {k: v for k, v in after.items() if k not in before}
    changed = {k: [before[k], v] for k, v in after.items() if k in before and before[k] != v}
    removed = {k: v for k, v in before.items() if k not in after}
    for name, part in (("added", added), ("changed", changed), ("removed", removed)):
        if part:
            diff[f"override_{name}"] = part
    if not diff:
        return
    MetricVersion.objects.create(metric=metric, kind=MetricVersion.Kind.STEWARD,
                                 change=json.loads(json.dumps(diff, default=str)), changed_by=f"steward:{user}")
    metrics_need_sync.send(sender=Metric, metric_ids=[metric.pk], reason="steward")
