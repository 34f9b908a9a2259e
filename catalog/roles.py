"""Least-privilege database roles (docs/catalog.md, SEC-03).

- application role: LOGIN, no superuser, no CREATEDB/CREATEROLE/REPLICATION, DML on
  the service's tables, no DDL (schema changes go through migrations run by the
  owner); ``metric_versions`` is insert-only for it.
- CDC role: LOGIN + REPLICATION, SELECT on exactly the published tables.

Statements are built here and executed by ``manage.py setup_roles`` with the
admin (superuser) connection; every statement is printed without its secrets.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

PUBLISHED_TABLES = ("metrics", "metric_properties")
APPEND_ONLY_TABLES = ("metric_versions",)
READ_ONLY_VIEWS = ("metric_version_keys",)  # the history as key-level rows


@dataclass(frozen=True)
class Statement:
    query: sql.Composed
    shown: str  # what is printed: never contains a password


def _role_statements(role: str, password: str | None, attributes: str, exists: bool) -> list[Statement]:
    verb = "ALTER" if exists else "CREATE"
    query = sql.SQL(verb + " ROLE {} WITH " + attributes).format(sql.Identifier(role))
    shown = f"{verb} ROLE {role} WITH {attributes}"
    if password:
        query = sql.SQL("{} PASSWORD {}").format(query, sql.Literal(password))
        shown += " PASSWORD '***'"
    return [Statement(query, shown)]


def app_role_statements(role: str, password: str | None, *, database: str, owner: str, exists: bool,
                        public_tables: list[str], uns_tables: list[str]) -> list[Statement]:
    ident = sql.Identifier(role)
    out = _role_statements(role, password, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION", exists)

    def add(text: str, *args: sql.Composable) -> None:
        out.append(Statement(sql.SQL(text).format(*args), text.format(*(_plain(a) for a in args))))

    add("GRANT CONNECT ON DATABASE {} TO {}", sql.Identifier(database), ident)
    for schema in ("public", "uns_meta"):
        add("GRANT USAGE ON SCHEMA {} TO {}", sql.Identifier(schema), ident)
        add("REVOKE CREATE ON SCHEMA {} FROM {}", sql.Identifier(schema), ident)
    for schema, tables in (("public", public_tables), ("uns_meta", uns_tables)):
        for table in tables:
            privileges = ("SELECT" if table in READ_ONLY_VIEWS else "SELECT, INSERT" if table in APPEND_ONLY_TABLES
                          else "SELECT, INSERT, UPDATE, DELETE")
            add("GRANT " + privileges + " ON {}.{} TO {}", sql.Identifier(schema), sql.Identifier(table), ident)
        add("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}", sql.Identifier(schema), ident)
        # Tables created by later migrations (run by the owner) are usable at once.
        add("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}",
            sql.Identifier(owner), sql.Identifier(schema), ident)
        add("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}",
            sql.Identifier(owner), sql.Identifier(schema), ident)
    return out


def cdc_role_statements(role: str, password: str | None, *, database: str, exists: bool) -> list[Statement]:
    ident = sql.Identifier(role)
    out = _role_statements(role, password, "LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE", exists)

    def add(text: str, *args: sql.Composable) -> None:
        out.append(Statement(sql.SQL(text).format(*args), text.format(*(_plain(a) for a in args))))

    add("GRANT CONNECT ON DATABASE {} TO {}", sql.Identifier(database), ident)
    add("GRANT USAGE ON SCHEMA {} TO {}", sql.Identifier("uns_meta"), ident)
    for table in PUBLISHED_TABLES:
        add("GRANT SELECT ON {}.{} TO {}", sql.Identifier("uns_meta"), sql.Identifier(table), ident)
    return out


def _plain(part: sql.Composable) -> str:
    """Readable text of an identifier for printing (unquoted unless quoting is needed)."""
    text = part.as_string(None)
    plain = text.strip('"')
    return plain if plain.replace("_", "").isalnum() and plain.islower() else text
