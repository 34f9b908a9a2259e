"""The one-shot before every process starts: migrations as the owner, then the least-privilege roles."""

from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = ("`migrate` as the schema owner (DATABASE_URL), then `setup_roles` (needs DATABASE_ADMIN_URL) so "
            "the application and CDC roles have their grants on every table. compose's `migrate` service "
            "runs this; the other processes connect with those roles (docs/security.md).")

    def handle(self, *args: object, **opts: object) -> None:
        call_command("migrate", interactive=False, verbosity=int(str(opts.get("verbosity", 1))))
        if settings.DATABASE_ADMIN_URL:
            call_command("setup_roles", stdout=self.stdout)
        else:
            self.stdout.write("DATABASE_ADMIN_URL is not set: roles not refreshed (run `manage.py setup_roles`)")
