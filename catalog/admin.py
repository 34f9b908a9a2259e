"""Admin for data stewards: browse the catalog, correct properties, never identities."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.html import format_html_join

from catalog import history, review
from catalog.admin_bulk import BulkAdminMixin
from catalog.admin_scale import DeviceFilter, EstimatedCountPaginator, PlantFilter
from catalog.forms import OverrideForm, show
from catalog.models import (
    Device,
    DeviceState,
    Metric,
    MetricPathLineage,
    MetricProperty,
    MetricVersion,
    NodeState,
    PropertyOverride,
    VersionKey,
)
from catalog.stewardship import record_steward_edit
from metasync.admin import ReadOnlyAdminMixin

IDENTITY_HELP = "Identity fields are written by births only."


def _state(prefix: str = "") -> dict[str, Subquery]:
    """Annotations with a device's lifecycle (docs/sparkplug.md, "Lifecycle"); ``prefix`` reaches the
    device from another model (``device__``)."""
    match = DeviceState.objects.filter(group_id=OuterRef(f"{prefix}group_id"), edge=OuterRef(f"{prefix}edge"),
                                       device=OuterRef(f"{prefix}device"))
    return {"state_online": Subquery(match.values("online")[:1]),
            "state_birth": Subquery(match.values("last_birth_at")[:1]),
            "state_death": Subquery(match.values("last_death_at")[:1])}


def _online_text(online: bool | None) -> str:
    return "unknown" if online is None else "online" if online else "DEAD"


class MetricPropertyInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = MetricProperty
    verbose_name_plural = "properties (as the edge sent them)"
    fields = ("key", "type", "sparkplug_type_name", "shown_value", "override_value", "effective_value", "updated_at")
    readonly_fields = fields
    extra = 0
    ordering = ("key",)

    @admin.display(description="Sparkplug type")
    def sparkplug_type_name(self, obj: MetricProperty) -> str:
        return obj.get_sparkplug_type_display()

    @admin.display(description="edge value")
    def shown_value(self, obj: MetricProperty) -> str:
        return show(obj.value, obj.is_null)

    @admin.display(description="override")
    def override_value(self, obj: MetricProperty) -> str:
        override = self._overrides(obj.metric_id).get(obj.key)
        return "—" if override is None else show(override.value, override.is_null)

    @admin.display(description="effective value")
    def effective_value(self, obj: MetricProperty) -> str:
        override = self._overrides(obj.metric_id).get(obj.key)
        return show(obj.value, obj.is_null) if override is None else show(override.value, override.is_null)

    def _overrides(self, metric_id: int) -> dict[str, PropertyOverride]:
        """The metric's overrides, read once per page (inline instances live for one request)."""
        cache: dict[int, dict[str, PropertyOverride]] = self.__dict__.setdefault("_override_cache", {})
        if metric_id not in cache:
            cache[metric_id] = {o.key: o for o in PropertyOverride.objects.filter(metric_id=metric_id)}
        return cache[metric_id]


class PropertyOverrideInline(admin.TabularInline):
    """Steward corrections: a key (the edge's or a new one), one value; the override wins over the edge."""

    model = PropertyOverride
    form = OverrideForm
    verbose_name_plural = "steward overrides (win over the edge value)"
    fields = ("key", "value_type", "value", "null", "note", "edge_value", "updated_by")
    readonly_fields = ("edge_value", "updated_by")
    extra = 0

    def get_formset(self, request: HttpRequest, obj: Metric | None = None, **kwargs: Any) -> Any:
        kwargs["form"] = OverrideForm.for_metric(obj)
        return super().get_formset(request, obj, **kwargs)

    @admin.display(description="edge value")
    def edge_value(self, obj: PropertyOverride) -> str:
        prop = MetricProperty.objects.filter(metric_id=obj.metric_id, key=obj.key).first()
        return "— (new key)" if prop is None else show(prop.value, prop.is_null)


class MetricVersionInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = MetricVersion
    fields = ("changed_at", "kind", "changed_by", "diff")
    readonly_fields = fields
    extra = 0
    ordering = ("-id",)
    max_num = 0

    @admin.display(description="change")
    def diff(self, obj: MetricVersion) -> str:
        return readable(obj)


class LineageInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = MetricPathLineage
    fields = ("changed_at", "old_path", "new_path", "reason", "changed_by")
    readonly_fields = fields
    extra = 0


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ("uns_path", "group_id", "edge", "device", "online", "country", "business_unit", "updated_at")
    list_filter = ("group_id", "country", "business_unit")
    search_fields = ("uns_path", "device", "edge")
    readonly_fields = ("group_id", "edge", "device", "uns_path", "online", "last_birth", "last_death",
                       "node_online", "country", "business_unit", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(**_state())

    @admin.display(description="online", ordering="state_online")
    def online(self, obj: Device) -> str:
        return _online_text(getattr(obj, "state_online", None))

    @admin.display(description="last birth")
    def last_birth(self, obj: Device) -> object:
        return getattr(obj, "state_birth", None) or "-"

    @admin.display(description="last death")
    def last_death(self, obj: Device) -> object:
        return getattr(obj, "state_death", None) or "-"

    @admin.display(description="edge node")
    def node_online(self, obj: Device) -> str:
        node = NodeState.objects.filter(group_id=obj.group_id, edge=obj.edge).first()
        if node is None:
            return "unknown (no NBIRTH seen)"
        return f"{_online_text(node.online)}, bdSeq {node.bd_seq}, last birth {node.last_birth_at or '-'}, " \
               f"last death {node.last_death_at or '-'}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class RetiredFilter(admin.SimpleListFilter):
    title = "retired"
    parameter_name = "retired"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "Active"), ("yes", "Retired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "no":
            return queryset.filter(retired_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(retired_at__isnull=False)
        return queryset


@admin.register(Metric)
class MetricAdmin(BulkAdminMixin, admin.ModelAdmin):
    list_display = ("uns_path", "datatype", "plant", "device", "device_online", "alias", "retired_at", "updated_at")
    list_filter = (PlantFilter, DeviceFilter, "datatype", RetiredFilter)
    paginator = EstimatedCountPaginator  # docs/admin-scale.md
    search_fields = ("name", "uns_path", "canary_id")
    list_select_related = ("device",)
    show_full_result_count = False  # COUNT(*) over ~10^6 rows on every page is wasteful
    readonly_fields = ("device", "device_online", "name", "uns_path", "canary_id", "datatype", "alias", "plant",
                       "retired_at", "created_at", "updated_at")
    fields = readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(**_state("device__"))

    @admin.display(description="device online")
    def device_online(self, obj: Metric) -> str:
        """A metric of a dead device reports nothing until the device is born again."""
        return _online_text(getattr(obj, "state_online", None))
    inlines = [MetricPropertyInline, PropertyOverrideInline, MetricVersionInline, LineageInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # metrics are retired, never deleted

    def save_formset(self, request, form, formset, change) -> None:  # type: ignore[no-untyped-def]
        if formset.model is not PropertyOverride:
            return super().save_formset(request, form, formset, change)
        user = request.user.get_username()
        before = {o.key: o.value for o in PropertyOverride.objects.filter(metric=form.instance)}
        for obj in formset.save(commit=False):
            obj.updated_by = user
            obj.save()
        for obj in formset.deleted_objects:
            obj.delete()
        after = {o.key: o.value for o in PropertyOverride.objects.filter(metric=form.instance)}
        record_steward_edit(form.instance, before, after, user)


class VersionPlantFilter(PlantFilter):
    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(metric__plant=self.value()) if self.value() else queryset


@admin.register(MetricVersion)
class MetricVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """History that reads: each version's keys as "key: old → new" lines, by whom, when, of what kind."""

    list_display = ("changed_at", "metric", "kind", "changed_by", "change_lines")
    list_filter = ("kind", VersionPlantFilter, ("metric__device", admin.RelatedOnlyFieldListFilter), "changed_at")
    date_hierarchy = "changed_at"
    search_fields = ("metric__uns_path", "changed_by")
    list_select_related = ("metric",)
    show_full_result_count = False

    @admin.display(description="change")
    def change_lines(self, obj: MetricVersion) -> str:
        return readable(obj)


@admin.register(VersionKey)
class VersionKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """History as key-level rows: key, old → new, who, when, kind (the ``metric_version_keys`` view)."""

    list_display = ("changed_at", "metric", "key", "what", "old_value", "new_value", "changed_by", "kind")
    list_filter = ("kind", "part", VersionPlantFilter, ("metric__device", admin.RelatedOnlyFieldListFilter),
                   "changed_at")
    date_hierarchy = "changed_at"
    search_fields = ("key", "metric__uns_path", "changed_by")
    list_select_related = ("metric",)
    show_full_result_count = False
    paginator = EstimatedCountPaginator  # counting means unnesting every version: docs/admin-scale.md

    def _line(self, obj: VersionKey) -> history.Line:
        return history.key_line(obj.part, obj.key, obj.old, obj.new)

    @admin.display(description="what")
    def what(self, obj: VersionKey) -> str:
        return self._line(obj).what

    @admin.display(description="old")
    def old_value(self, obj: VersionKey) -> str:
        return self._line(obj).old

    @admin.display(description="new")
    def new_value(self, obj: VersionKey) -> str:
        return self._line(obj).new


@admin.register(MetricPathLineage)
class LineageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("changed_at", "metric", "old_path", "new_path", "reason", "changed_by")
    search_fields = ("old_path", "new_path")
    list_select_related = ("metric",)


class NeedsReviewFilter(admin.SimpleListFilter):
    title = "review"
    parameter_name = "review"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("needed", "Needs review (edge value changed)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return review.needs_review(queryset) if self.value() == "needed" else queryset


@admin.register(PropertyOverride)
class PropertyOverrideAdmin(admin.ModelAdmin):
    """Every steward override; "Needs review" lists those whose edge value changed since they were set."""

    list_display = ("metric", "key", "shown_override", "edge_when_set", "edge_now", "updated_by", "updated_at")
    list_filter = (NeedsReviewFilter, "key", "updated_by")
    search_fields = ("metric__uns_path", "key")
    list_select_related = ("metric",)
    show_full_result_count = False
    actions = ["keep_override", "accept_edge_value"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return review.with_edge_now(super().get_queryset(request))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # overrides are added on the metric page, where the edge's keys and types are known

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    @admin.display(description="override")
    def shown_override(self, obj: PropertyOverride) -> str:
        return show(obj.value, obj.is_null)

    @admin.display(description="edge value when set")
    def edge_when_set(self, obj: PropertyOverride) -> str:
        return review.snapshot_text(obj.edge_seen)

    @admin.display(description="edge value now")
    def edge_now(self, obj: PropertyOverride) -> str:
        return review.snapshot_text(getattr(obj, "edge_now", None))

    @admin.action(description="Keep override (against the new edge value)", permissions=["change"])
    def keep_override(self, request: HttpRequest, queryset: QuerySet[PropertyOverride]) -> None:
        count = review.keep(queryset, request.user.get_username())
        messages.info(request, f"{count} override(s) kept; each is versioned. Those not needing review were left "
                               "alone.")

    @admin.action(description="Accept edge value (remove the override)", permissions=["delete"])
    def accept_edge_value(self, request: HttpRequest, queryset: QuerySet[PropertyOverride]) -> None:
        count = review.accept_edge(queryset, request.user.get_username())
        messages.info(request, f"{count} override(s) removed: the edge value applies and goes to Canary. "
                               "Those not needing review were left alone.")


def readable(version: MetricVersion) -> str:
    """A version's key-level lines, one per key ("engUnit: °C → bar")."""
    return format_html_join("", "<div class='change-line'>{}</div>",
                            ((str(line),) for line in history.lines(version.change)))
