"""The metric list at 10^6 rows (docs/admin-scale.md): counts that stop early, filters that read
an index instead of every metric.

Django's changelist counts the filtered rows on every page, and its related-only filter reads the
device of every metric to build its choices; at a million metrics each costs a scan per page view.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

from catalog.models import Device, Metric

COUNT_CAP = 1_000


class EstimatedCountPaginator(Paginator):
    """Exact counts up to ``COUNT_CAP`` rows; above it the planner's estimate (never below the cap).

    The exact count reads at most ``COUNT_CAP + 1`` index entries; the estimate is one EXPLAIN."""

    @cached_property
    def count(self) -> int:
        queryset: QuerySet = self.object_list  # type: ignore[assignment]
        exact = queryset.order_by()[: COUNT_CAP + 1].count()
        if exact <= COUNT_CAP:
            return exact
        return max(COUNT_CAP + 1, estimated_rows(queryset))


def estimated_rows(queryset: QuerySet) -> int:
    """The planner's row estimate for ``queryset`` (statistics, not a scan)."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cur:
        cur.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan: Any = cur.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class PlantFilter(admin.SimpleListFilter):
    """Plants, found by skipping through the plant index (a handful of plants, 10^6 metrics)."""

    title = "plant"
    parameter_name = "plant"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(p, p) for p in distinct_plants()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(plant=self.value()) if self.value() else queryset


def distinct_plants(limit: int = 200) -> list[str]:
    """The first ``limit`` plants in order: a loose index scan (one index probe per plant)."""
    with connection.cursor() as cur:
        cur.execute(
            """
            WITH RECURSIVE p(plant) AS (
                (SELECT plant FROM uns_meta.metrics WHERE plant IS NOT NULL ORDER BY plant LIMIT 1)
                UNION ALL
                SELECT (SELECT m.plant FROM uns_meta.metrics m WHERE m.plant > p.plant ORDER BY m.plant LIMIT 1)
                  FROM p WHERE p.plant IS NOT NULL
            )
            SELECT plant FROM p WHERE plant IS NOT NULL LIMIT %s
            """,
            [limit],
        )
        return [row[0] for row in cur.fetchall()]


class DeviceFilter(admin.SimpleListFilter):
    """Devices that have metrics (of the chosen plant, when one is chosen), first 200 by path.

    Same parameter as Django's related filter, so existing links keep working."""

    title = "device"
    parameter_name = "device__id__exact"
    LIMIT = 200

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        metrics = Metric.objects.filter(device=OuterRef("pk"))
        plant = request.GET.get(PlantFilter.parameter_name)
        if plant:
            metrics = metrics.filter(plant=plant)
        devices = Device.objects.filter(Exists(metrics)).order_by("uns_path").values_list("pk", "uns_path")
        return [(str(pk), path) for pk, path in devices[: self.LIMIT]]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(device_id=int(value))
        return queryset
