"""Canary stage in the admin: the mapping stewards edit, push batches, sync state and the quarantine
to inspect (a steward may push quarantined tags again)."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_POST

from canary import delivery, mapping, quarantine
from canary.mapping import resync_key
from canary.models import MappingChange, PropertyMapping, PushBatch, Quarantine, SyncState
from catalog.admin import MetricAdmin
from catalog.forms import show
from catalog.models import Metric
from metasync.admin import ReadOnlyAdminMixin


@admin.register(PropertyMapping)
class PropertyMappingAdmin(admin.ModelAdmin):
    list_display = ("key", "canary_name", "include", "note")
    list_editable = ("canary_name", "include")
    search_fields = ("key", "canary_name")
    # one-line inputs: a key, a Canary name and a note are single lines
    formfield_overrides = {models.TextField: {"widget": forms.TextInput(attrs={"size": 40})}}

    def save_model(self, request: HttpRequest, obj: PropertyMapping, form, change) -> None:  # type: ignore[no-untyped-def]
        before = mapping.snapshot(PropertyMapping.objects.filter(pk=obj.pk).first()) if obj.pk else None
        super().save_model(request, obj, form, change)
        mapping.record_change(obj.key, before, mapping.snapshot(obj), request.user.get_username())
        self._resync_key(request, obj.key)

    def delete_model(self, request: HttpRequest, obj: PropertyMapping) -> None:
        before = mapping.snapshot(obj)
        super().delete_model(request, obj)
        mapping.record_change(obj.key, before, None, request.user.get_username())
        self._resync_key(request, obj.key)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PropertyMapping]) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    def _resync_key(self, request: HttpRequest, key: str) -> None:
        count = resync_key(key)
        messages.info(request, f"{count} metric(s) carrying {key!r} will be re-synced to Canary.")


class ReadOnly(ReadOnlyAdminMixin, admin.ModelAdmin):
    pass


@admin.register(MappingChange)
class MappingChangeAdmin(ReadOnly):
    """Who changed the property mapping, when, from what to what."""

    list_display = ("changed_at", "key", "action", "before", "after", "changed_by")
    list_filter = ("action", "changed_at")
    search_fields = ("key", "changed_by")
    date_hierarchy = "changed_at"


@admin.register(PushBatch)
class PushBatchAdmin(ReadOnly):
    list_display = ("id", "status", "tags", "size", "attempts", "created_at", "updated_at", "parent_id",
                    "short_error")
    list_filter = ("status",)
    show_full_result_count = False
    fields = ("status", "tags", "size", "attempts", "created_at", "updated_at", "parent_id", "error", "pretty_body")
    readonly_fields = fields

    @admin.display(description="error")
    def short_error(self, obj: PushBatch) -> str:
        return obj.error[:150]

    @admin.display(description="storeData properties")
    def pretty_body(self, obj: PushBatch) -> str:
        try:
            text = json.dumps(json.loads(obj.body), ensure_ascii=False, indent=1)
        except ValueError:  # shown as stored
            text = obj.body
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", text[:50000])


@admin.register(SyncState)
class SyncStateAdmin(ReadOnly):
    list_display = ("canary_id", "acked_at", "batch_id")
    search_fields = ("canary_id",)
    show_full_result_count = False


@admin.register(Quarantine)
class QuarantineAdmin(ReadOnly):
    """Tags Canary refused on their own: not retried until their metadata changes or a steward
    pushes them again (the push's acknowledgement removes the row)."""

    list_display = ("canary_id", "short_reason", "quarantined_at", "attempts")
    search_fields = ("canary_id",)
    show_full_result_count = False
    fields = ("canary_id", "metric_id", "reason", "batch_id", "quarantined_at", "attempts")
    readonly_fields = fields
    actions = ["push_again"]

    @admin.display(description="reason", ordering="reason")
    def short_reason(self, obj: Quarantine) -> str:
        return obj.reason[:200]

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("canary.release_quarantine")

    @admin.action(description="Push again", permissions=["release"])
    def push_again(self, request: HttpRequest, queryset: QuerySet[Quarantine]) -> None:
        released = quarantine.release(queryset.values_list("metric_id", flat=True))
        messages.info(request, f"{len(released)} quarantined tag(s) will be pushed to Canary again; each leaves"
                               " the quarantine once Canary acknowledges it.")


admin.site.unregister(Metric)


@admin.register(Metric)
class MetricDeliveryAdmin(MetricAdmin):
    """The catalog's metric page with what Canary holds (canary.delivery): per key the edge value,
    override, effective and acknowledged value and the state; "Push now" and "Resync this device"."""

    change_form_template = "admin/canary/metric_change_form.html"
    fields = None  # type: ignore[assignment]  # the fieldsets below say it
    fieldsets = [(None, {"fields": MetricAdmin.fields}),
                 ("Delivery to Canary", {"fields": ("delivery",)})]

    def get_readonly_fields(self, request: HttpRequest, obj: Metric | None = None) -> list[str]:
        return [*super().get_readonly_fields(request, obj), "delivery"]

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/push/", wrap(require_POST(self.push_view)), name="catalog_metric_push"),
            path("<int:pk>/resync-device/", wrap(require_POST(self.resync_device_view)),
                 name="catalog_metric_resync_device"),
            *super().get_urls(),
        ]

    def _acting_on(self, request: HttpRequest, pk: int) -> Metric:
        metric = get_object_or_404(Metric, pk=pk)
        if not self.has_change_permission(request, metric):
            raise PermissionDenied
        return metric

    def push_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        metric = self._acting_on(request, pk)
        delivery.push_now([metric.pk])
        messages.info(request, f"{metric.canary_id} will be compared with Canary and pushed now.")
        return HttpResponseRedirect(reverse("admin:catalog_metric_change", args=[metric.pk]))

    def resync_device_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        metric = self._acting_on(request, pk)
        count = delivery.resync_device(metric.device_id)
        messages.info(request, f"{count} metric(s) of {metric.device} will be sent to Canary in full.")
        return HttpResponseRedirect(reverse("admin:catalog_metric_change", args=[metric.pk]))

    @admin.display(description="delivery")
    def delivery(self, obj: Metric) -> SafeString | str:
        d = delivery.metric_delivery(obj)
        state = _state_text(d)
        acked = f"{d.acked_at:%Y-%m-%d %H:%M:%S %Z}" if d.acked_at else "never"
        rows = format_html_join("", "<tr class='delivery-{}'><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
                                "<td>{}</td><td>{}</td></tr>",
                                ((r.state.split(" (")[0].replace(" ", "-"), r.key, r.canary_name or "—",
                                  _value(r.edge, r.edge_null), _value(r.override, r.override_null),
                                  _value(r.effective), _value(r.acked), r.state) for r in d.keys))
        return format_html(
            "<div id='delivery-panel'><p><strong class='delivery-state'>{}</strong> · tag <code>{}</code>"
            " · last acknowledged by Canary: {}</p>"
            "<table><thead><tr><th>key</th><th>Canary name</th><th>edge value</th><th>override</th>"
            "<th>effective value</th><th>Canary acknowledged</th><th>state</th></tr></thead><tbody>{}</tbody></table>"
            "<p><button type='submit' class='button' form='delivery-actions' formaction='{}'>Push now</button> "
            "<button type='submit' class='button' form='delivery-actions' formaction='{}'>Resync this device</button>"
            "</p></div>",
            state, d.canary_id, acked, rows,
            reverse("admin:catalog_metric_push", args=[obj.pk]),
            reverse("admin:catalog_metric_resync_device", args=[obj.pk]))


def _state_text(d: delivery.MetricDelivery) -> str:
    if d.state == delivery.QUARANTINED and d.quarantined_at is not None:
        return f"quarantined since {d.quarantined_at:%Y-%m-%d %H:%M:%S} — Canary said: {d.reason}"
    if d.state == delivery.IN_FLIGHT:
        return f"in flight (batch {d.batch_id})"
    if d.state == delivery.PENDING and d.due_at is not None:
        return f"pending, due {d.due_at:%Y-%m-%d %H:%M:%S}"
    return d.state


def _value(value: Any, is_null: bool = False) -> str:
    if value is delivery.MISSING:
        return "—"
    if isinstance(value, dict) and set(value) == {"unconfirmed"}:
        return f"unconfirmed (batch {value['unconfirmed']})"
    return show(value, is_null)
