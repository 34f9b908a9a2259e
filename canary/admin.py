"""Canary stage in the admin: the mapping stewards edit, push batches, sync state and the quarantine
to inspect (a steward may push quarantined tags again)."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from canary import quarantine
from canary.mapping import resync_key
from canary.models import PropertyMapping, PushBatch, Quarantine, SyncState
from metasync.admin import ReadOnlyAdminMixin


@admin.register(PropertyMapping)
class PropertyMappingAdmin(admin.ModelAdmin):
    list_display = ("key", "canary_name", "include", "note")
    list_editable = ("canary_name", "include")
    search_fields = ("key", "canary_name")

    def save_model(self, request: HttpRequest, obj: PropertyMapping, form, change) -> None:  # type: ignore[no-untyped-def]
        super().save_model(request, obj, form, change)
        self._resync_key(request, obj.key)

    def delete_model(self, request: HttpRequest, obj: PropertyMapping) -> None:
        super().delete_model(request, obj)
        self._resync_key(request, obj.key)

    def _resync_key(self, request: HttpRequest, key: str) -> None:
        count = resync_key(key)
        messages.info(request, f"{count} metric(s) carrying {key!r} will be re-synced to Canary.")


class ReadOnly(ReadOnlyAdminMixin, admin.ModelAdmin):
    pass


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
