"""URLs for `bench/admin_bench.py`: the admin as it is, and at ``/baseline/`` the metric admin as it
was before docs/admin-scale.md (Django's paginator and related-only device filter, a DISTINCT plant
filter), so both are measured against the same catalog in one run."""

from __future__ import annotations

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path

from catalog.admin import MetricAdmin, RetiredFilter
from catalog.models import Metric


class DistinctPlantFilter(admin.SimpleListFilter):
    title = "plant"
    parameter_name = "plant"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        plants = Metric.objects.exclude(plant=None).values_list("plant", flat=True).distinct().order_by("plant")
        return [(p, p) for p in plants[:200] if p is not None]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(plant=self.value()) if self.value() else queryset


class BaselineMetricAdmin(MetricAdmin):
    list_filter = (DistinctPlantFilter, ("device", admin.RelatedOnlyFieldListFilter), "datatype", RetiredFilter)
    paginator = Paginator


baseline_site = admin.AdminSite(name="baseline")
baseline_site.register(Metric, BaselineMetricAdmin)

urlpatterns = [path("admin/", admin.site.urls), path("baseline/", baseline_site.urls)]
