"""Data-migration helper: let the "Data steward" group view a model added by a later migration."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions

STEWARD_GROUP = "Data steward"


def grant_steward_view(apps: Any, codename: str) -> None:
    """Give the steward group ``catalog.<codename>`` (permissions are normally created only after
    every migration has run, so they are created here first)."""
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    view = apps.get_model("auth", "Permission").objects.get(content_type__app_label="catalog", codename=codename)
    for group in apps.get_model("auth", "Group").objects.filter(name=STEWARD_GROUP):
        group.permissions.add(view)
