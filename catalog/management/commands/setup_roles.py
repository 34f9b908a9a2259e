"""Create or update the least-privilege application and CDC roles; print what was granted."""

from __future__ import annotations

import psycopg
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from catalog.roles import READ_ONLY_VIEWS, app_role_statements, cdc_role_statements


class Command(BaseCommand):
    help = ("Create/refresh the application role (DML only, no DDL, not superuser) and the CDC role "
            "(REPLICATION, SELECT on the published tables only). Needs DATABASE_ADMIN_URL (superuser). "
            "Run after `migrate`. Passwords come from METASYNC_APP_DB_PASSWORD / METASYNC_CDC_DB_PASSWORD.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--app-role", default="metasync_app")
        parser.add_argument("--cdc-role", default="metasync_cdc")
        parser.add_argument("--database", default=None, help="database to grant on (default: the app's)")
        parser.add_argument("--dry-run", action="store_true", help="print the statements, change nothing")

    def handle(self, *args: object, **opts: object) -> None:
        admin_url = settings.DATABASE_ADMIN_URL
        if not admin_url:
            raise CommandError("DATABASE_ADMIN_URL is not set: setup_roles needs a superuser connection")
        db = settings.DATABASES["default"]
        database = str(opts["database"] or db["NAME"])
        owner = str(db["USER"])
        with psycopg.connect(admin_url, dbname=database, autocommit=False) as conn:
            existing = {r for (r,) in conn.execute("SELECT rolname FROM pg_roles")}
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema IN ('public', 'uns_meta') AND (table_type = 'BASE TABLE' OR table_name = ANY(%s)) "
                "ORDER BY 1, 2", [list(READ_ONLY_VIEWS)]
            ).fetchall()
            if not any(schema == "uns_meta" for schema, _ in tables):
                raise CommandError(f"database {database!r} has no uns_meta tables: run `manage.py migrate` first")
            app, cdc = str(opts["app_role"]), str(opts["cdc_role"])
            statements = app_role_statements(
                app, settings.METASYNC_APP_DB_PASSWORD, database=database, owner=owner,
                exists=app in existing,
                public_tables=[t for s, t in tables if s == "public"],
                uns_tables=[t for s, t in tables if s == "uns_meta"],
            ) + cdc_role_statements(cdc, settings.METASYNC_CDC_DB_PASSWORD, database=database,
                                    exists=cdc in existing)
            for statement in statements:
                self.stdout.write(statement.shown + ";")
                if not opts["dry_run"]:
                    conn.execute(statement.query)
            if opts["dry_run"]:
                conn.rollback()
                self.stdout.write("dry run: nothing changed")
            else:
                conn.commit()
                self.stdout.write(self.style.SUCCESS(f"roles {app} and {cdc} are set up on {database}"))
