from django.contrib import admin
from django.http import HttpRequest

from cdcsync.models import PendingSync


@admin.register(PendingSync)
class PendingSyncAdmin(admin.ModelAdmin):
    list_display = ("metric_id", "reason", "changes", "first_change_at", "last_change_at", "due_at")
    list_filter = ("reason",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
