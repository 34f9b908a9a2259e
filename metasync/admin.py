"""Admin helpers every app's admin uses."""

from __future__ import annotations

from django.http import HttpRequest


class ReadOnlyAdminMixin:
    """View-only for everyone: rows are written by births and versioning, not by hand."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
