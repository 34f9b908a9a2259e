"""Model fields for PostgreSQL types Django has no field for."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper


class RealField(models.FloatField):
    """``real`` (float4): Sparkplug Float properties keep their 32-bit precision."""

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        return "real"


class PropertyTypeField(models.CharField):
    """The strict enum ``uns_meta.property_type`` (created in migration 0001)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 16)
        super().__init__(*args, **kwargs)

    def db_type(self, connection: BaseDatabaseWrapper) -> str:
        return "uns_meta.property_type"

    def rel_db_type(self, connection: BaseDatabaseWrapper) -> str:
        return "uns_meta.property_type"
