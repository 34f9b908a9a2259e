"""The birth ledger in the admin: what arrived, what became of it (payloads stay hidden)."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ingest.models import BirthFrame
from metasync.admin import ReadOnlyAdminMixin


@admin.register(BirthFrame)
class BirthFrameAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "received_at", "topic", "size", "status", "short_reason", "counts", "apply_seconds")
    list_filter = ("status",)
    search_fields = ("topic",)
    show_full_result_count = False
    fields = ("topic", "size", "sha256_hex", "received_at", "payload_ts", "status", "reason",
              "counts", "device", "attempts", "processed_at", "apply_seconds")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Payloads can be tens of MB each: never load them for a page.
        return super().get_queryset(request).defer("payload")

    @admin.display(description="sha256")
    def sha256_hex(self, obj: BirthFrame) -> str:
        return bytes(obj.sha256).hex()

    @admin.display(description="reason")
    def short_reason(self, obj: BirthFrame) -> str:
        return obj.reason if len(obj.reason) <= 120 else obj.reason[:117] + "…"
