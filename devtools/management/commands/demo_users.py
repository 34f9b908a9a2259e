"""``demo_users``: the two logins of the local demo, created or brought up to date.

* ``admin``: superuser;
* ``steward``: staff, member of the "Data steward" group (created by migration 0003).

Passwords come from ``--admin-password`` / ``--steward-password``; otherwise the ones stored
by an earlier run are kept, else new ones are generated. They are written to
``.devstack/demo-credentials`` (JSON, mode 0600) so ``scripts/demo`` can show them. Running
it again changes nothing unless a password was given; an unchanged password is not re-hashed,
so open admin sessions survive a demo restart. For local demos only: never run it against a
shared database.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

STEWARD_GROUP = "Data steward"
USERS = {  # username -> (superuser, group)
    "admin": (True, None),
    "steward": (False, STEWARD_GROUP),
}


def default_credentials_file() -> Path:
    return Path(settings.BASE_DIR) / ".devstack" / "demo-credentials"


def read_credentials(path: Path) -> dict[str, str]:
    """``{username: password}`` stored by an earlier run; empty if none or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def write_credentials(path: Path, passwords: dict[str, str]) -> None:
    """Replace the file atomically; it is created 0600, never readable by others even briefly."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(passwords, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file left over from a crash
    os.replace(tmp, path)


class Command(BaseCommand):
    help = "Create or update the demo logins `admin` (superuser) and `steward` (Data steward)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-password", default=None, help="password for admin (default: kept or generated)")
        parser.add_argument("--steward-password", default=None,
                            help="password for steward (default: kept or generated)")
        parser.add_argument("--credentials-file", type=Path, default=None,
                            help="where the passwords are stored (default .devstack/demo-credentials)")

    def handle(self, *args: object, **opts: Any) -> None:
        path = opts["credentials_file"] or default_credentials_file()
        stored = read_credentials(path)
        given = {"admin": opts["admin_password"], "steward": opts["steward_password"]}
        passwords = {name: str(given[name] or stored.get(name) or secrets.token_urlsafe(12)) for name in USERS}
        for name, password in given.items():
            if password:
                self._validate(name, str(password))
        with transaction.atomic():
            for name, (superuser, group) in USERS.items():
                self._ensure_user(name, passwords[name], superuser=superuser, group=group)
        write_credentials(path, passwords)
        self.stdout.write(f"demo logins (stored in {path}):")
        self.stdout.write(f"  admin   / {passwords['admin']}   superuser")
        self.stdout.write(f"  steward / {passwords['steward']}   {STEWARD_GROUP}")

    def _ensure_user(self, username: str, password: str, *, superuser: bool, group: str | None) -> None:
        User = get_user_model()
        user: AbstractUser = User.objects.filter(username=username).first() or User(username=username)
        created = user.pk is None
        user.is_active = user.is_staff = True
        user.is_superuser = superuser
        if created or not user.check_password(password):
            user.set_password(password)
        user.save()
        if group is not None:
            try:
                user.groups.add(Group.objects.get(name=group))
            except Group.DoesNotExist:
                raise CommandError(f'group "{group}" does not exist: run `manage.py migrate` first') from None
        self.stdout.write(f"{'created' if created else 'updated'} {username}")

    def _validate(self, username: str, password: str) -> None:
        try:
            validate_password(password)
        except ValidationError as exc:
            raise CommandError(f"--{username}-password: {' '.join(exc.messages)}") from None
