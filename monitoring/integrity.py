"""Integrity checks of the stored state: the verification scripts ``ops/sql/verify_*.sql``.

Each script returns one ``(check, detail)`` row per violation, so no rows means it holds. The same
files run with psql (``psql "$DATABASE_URL" -f ops/sql/verify_ledger.sql``; on large tables after
``SET enable_nestloop = off``, as ``run`` does) and through ``manage.py verify_integrity``; the
end-to-end tests run them after every scenario.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

SQL_DIR = Path(settings.BASE_DIR) / "ops" / "sql"


@dataclass(frozen=True)
class Violation:
    script: str  # e.g. "ledger" for verify_ledger.sql
    check: str
    detail: str


def scripts() -> dict[str, Path]:
    """Name -> file of every verification script, in name order."""
    return {p.stem.removeprefix("verify_"): p for p in sorted(SQL_DIR.glob("verify_*.sql"))}


def run(names: list[str] | None = None, *, limit: int = 1000) -> list[Violation]:
    """Run the named scripts (all by default) read-only; at most ``limit`` violations per script."""
    found = scripts()
    unknown = sorted(set(names or ()) - set(found))
    if unknown:
        raise ValueError(f"no verification script named {', '.join(unknown)} (have: {', '.join(found)})")
    violations: list[Violation] = []
    with transaction.atomic(), connection.cursor() as cur:
        # Each check is an anti-join over whole tables. Planned from statistics taken while a table was
        # empty (a fresh or just-emptied stack), a nested loop re-scans the inner table for every outer
        # row: 10^5 x 10^5. Hash and merge joins are linear whatever the statistics say.
        cur.execute("SET LOCAL enable_nestloop = off")
        for name in names or list(found):
            query = found[name].read_text(encoding="utf-8").strip().rstrip(";")
            cur.execute(f"SELECT * FROM ({query}) AS v LIMIT {int(limit)}")  # noqa: S608 - our own files
            violations += [Violation(name, check, detail) for check, detail in cur.fetchall()]
    return violations
