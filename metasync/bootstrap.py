"""Start-up guard shared by manage.py, wsgi and the Celery app.

Configuration errors must stop a process with one readable line naming the
variable, not a traceback wall (docs/configuration.md).
"""

from __future__ import annotations

import os
import sys

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from metasync.env import ConfigError


def configure_or_exit() -> None:
    """Load Django settings now; on a configuration error print one line and exit 2."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "metasync.settings")
    try:
        settings.INSTALLED_APPS  # noqa: B018 - forces the settings module to load
    except (ConfigError, ImproperlyConfigured) as exc:
        sys.stderr.write(f"metasync: configuration error: {exc}\n")
        sys.exit(2)
