"""Every failed login is logged with the client address and the user name tried, never the password."""

from __future__ import annotations

import logging
from typing import Any

from axes.helpers import get_client_ip_address
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest

log = logging.getLogger("metasync.security")


@receiver(user_login_failed, dispatch_uid="metasync-login-failed")
def login_failed(sender: object, credentials: dict[str, Any], request: HttpRequest | None = None,
                 **kwargs: object) -> None:
    """Django hands over the credentials with the password already masked; only the user name is kept."""
    address = get_client_ip_address(request) if request is not None else None
    log.warning("login failed for user %r from %s", str(credentials.get("username", ""))[:150], address or "unknown",
                extra={"event": "login_failed", "client_address": address,
                       "path": request.path if request is not None else None})
