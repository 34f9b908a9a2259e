"""Export and import of overrides as CSV/XLSX sheets (docs/steward-bulk.md).

Export: one row per (metric, key) of a selection: the edge value, the override, the effective
value, each as text. Import: a sheet of the same columns is the wanted state of the overrides of
the rows it lists (``override_type`` empty: no override). ``plan_import`` reads it set-based and
returns a per-row diff and per-row errors (the dry run); ``apply_import`` writes a plan without
errors in one transaction (one ``BulkChange``, one version per metric), or nothing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db import connection, transaction
from django.db.models import QuerySet

from catalog import propvalues
from catalog.bulk import BadValue, TypedOverride, check_key, parse_value, selection_sql
from catalog.models import BulkChange, Metric
from catalog.signals import metrics_need_sync

COLUMNS = ("uns_path", "canary_id", "key", "edge_type", "edge_value", "override_type", "override_value",
           "effective_value")
NULL_TEXT = "NULL"  # a cell meaning "null" (so a string override can not be the four letters NULL)
MAX_IMPORT_ROWS = 500_000

_TEXT = """CASE WHEN {t}.is_null THEN 'NULL' ELSE CASE {t}.type::text
    WHEN 'int' THEN {t}.int_value::text WHEN 'long' THEN {t}.long_value::text
    WHEN 'float' THEN {t}.float_value::text WHEN 'double' THEN {t}.double_value::text
    WHEN 'boolean' THEN {t}.boolean_value::text WHEN 'string' THEN {t}.string_value
    WHEN 'datetime' THEN to_json({t}.datetime_value) #>> '{{}}' ELSE {t}.json_value::text END END"""

EXPORT_SQL = f"""
SELECT m.uns_path, m.canary_id, k.key, p.type::text, {_TEXT.format(t="p")}, o.type::text, {_TEXT.format(t="o")}
  FROM ({{selection}}) s JOIN uns_meta.metrics m ON m.id = s.id
 CROSS JOIN LATERAL (SELECT key FROM uns_meta.metric_properties WHERE metric_id = m.id
                     UNION SELECT key FROM uns_meta.property_overrides WHERE metric_id = m.id) k
  LEFT JOIN uns_meta.metric_properties p ON p.metric_id = m.id AND p.key = k.key
  LEFT JOIN uns_meta.property_overrides o ON o.metric_id = m.id AND o.key = k.key
 ORDER BY m.uns_path, k.key
"""


def export_rows(metrics: QuerySet[Metric]) -> Iterator[tuple]:
    """The rows of ``COLUMNS`` for a selection, read through a server-side cursor."""
    sub_sql, sub_params = selection_sql(metrics)
    compose = connection.ops.compose_sql  # type: ignore[attr-defined]  # PostgreSQL's operations
    query = EXPORT_SQL.replace("{selection}", compose(sub_sql, sub_params) if sub_params else sub_sql)
    with transaction.atomic(), connection.chunked_cursor() as cur:
        cur.execute(query)
        while rows := cur.fetchmany(5000):
            for path, canary_id, key, edge_type, edge_value, over_type, over_value in rows:
                effective = over_value if over_type is not None else edge_value
                yield path, canary_id, key, edge_type or "", _cell(edge_value), over_type or "", _cell(over_value), \
                    _cell(effective)


def _cell(text: str | None) -> str:
    return "" if text is None else text


class Echo:
    """A file whose ``write`` returns what it was given: csv.writer rows for a streaming response."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[tuple]) -> Iterator[str]:
    writer = csv.writer(Echo())
    yield writer.writerow(COLUMNS)
    for row in rows:
        yield writer.writerow(row)


def xlsx_bytes(rows: Iterable[tuple]) -> bytes:
    from openpyxl import Workbook  # noqa: PLC0415 - loaded only when a sheet is exported

    book = Workbook(write_only=True)
    sheet = book.create_sheet("overrides")
    sheet.append(COLUMNS)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# ------------------------------------------------------------------------------------------------
# Import


def read_sheet(name: str, data: bytes) -> list[dict[str, str]]:
    """Rows of an uploaded CSV or XLSX file as dicts of text (header names lower-cased)."""
    if name.lower().endswith(".xlsx"):
        # calamine (Rust) reads a 100,000-row sheet in under a second; openpyxl takes ~15 s.
        from python_calamine import CalamineWorkbook  # noqa: PLC0415 - loaded only when a sheet is imported

        try:
            cells = CalamineWorkbook.from_filelike(io.BytesIO(data)).get_sheet_by_index(0).to_python()
        except Exception as exc:  # noqa: BLE001 - any unreadable workbook is the steward's error
            raise BadValue(f"Not a readable XLSX file: {exc}") from None
        header = [_cell_text(h).strip().lower() for h in (cells[0] if cells else [])]
        out = [{h: _cell_text(v) for h, v in zip(header, row, strict=False)} for row in cells[1:]]
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise BadValue("A CSV file must be UTF-8.") from None
        reader = csv.reader(io.StringIO(text))
        header = [h.strip().lower() for h in next(reader, [])]
        out = [dict(zip(header, row, strict=False)) for row in reader]
    missing = {"key", "override_type", "override_value"} - set(header)
    if missing or not {"uns_path", "canary_id"} & set(header):
        raise BadValue("The sheet needs the columns uns_path (or canary_id), key, override_type and override_value.")
    if len(out) > MAX_IMPORT_ROWS:
        raise BadValue(f"At most {MAX_IMPORT_ROWS:,} rows per import.")
    return out


def _cell_text(value: object) -> str:
    """A spreadsheet cell as the text a CSV would hold (numbers typed into Excel come back as floats)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value)


@dataclass
class PlannedRow:
    line: int  # 2 = first row under the header
    uns_path: str
    key: str
    status: str  # "add", "change", "clear", "unchanged", "error"
    old: str = ""
    new: str = ""
    error: str = ""
    metric_id: int | None = None
    override: TypedOverride | None = None


@dataclass
class ImportPlan:
    rows: list[PlannedRow] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r.status == status)

    @property
    def errors(self) -> list[PlannedRow]:
        return [r for r in self.rows if r.status == "error"]

    @property
    def changes(self) -> list[PlannedRow]:
        return [r for r in self.rows if r.status in ("add", "change", "clear")]


def plan_import(rows: list[dict[str, str]]) -> ImportPlan:
    """The dry run: each row's diff against the stored override, or its error."""
    plan = ImportPlan()
    by_path = "uns_path" in (rows[0] if rows else {"uns_path": ""})
    ident = [(r.get("uns_path") if by_path else r.get("canary_id")) or "" for r in rows]
    with connection.cursor() as cur:
        cur.execute(f"SELECT {'uns_path' if by_path else 'canary_id'}, id, uns_path FROM uns_meta.metrics"
                    f" WHERE {'uns_path' if by_path else 'canary_id'} = ANY(%s::text[])", [sorted(set(ident))])
        found = {name: (mid, path) for name, mid, path in cur.fetchall()}
    seen: set[tuple[int, str]] = set()
    for i, (row, name) in enumerate(zip(rows, ident, strict=True)):
        planned = PlannedRow(line=i + 2, uns_path=name, key=(row.get("key") or "").strip(), status="error")
        plan.rows.append(planned)
        try:
            if name not in found:
                raise BadValue(f"No metric {name!r}.")
            planned.metric_id, planned.uns_path = found[name]
            planned.key = check_key(row.get("key") or "")
            if (planned.metric_id, planned.key) in seen:
                raise BadValue("The same metric and key appear in an earlier row.")
            seen.add((planned.metric_id, planned.key))
            kind = (row.get("override_type") or "").strip().lower()
            value = row.get("override_value") or ""
            if kind:
                planned.override = parse_value(kind, value, is_null=value == NULL_TEXT)
                planned.new = NULL_TEXT if planned.override.is_null else _shown(planned.override)
            elif value.strip():
                raise BadValue("An override value needs an override_type (empty type: no override).")
        except BadValue as exc:
            planned.error = str(exc)
            continue
        planned.status = "pending"
    _diff(plan)
    return plan


def _shown(override: TypedOverride) -> str:
    value = override.as_json()
    return json.dumps(value, ensure_ascii=False) if override.type == "json" else str(value).lower() \
        if override.type == "boolean" else str(value)


_STORED = f"""
SELECT o.metric_id, o.key, o.type::text, o.is_null, {", ".join(f"o.{c}" for c in propvalues.VALUE_COLUMNS)}
  FROM unnest(%s::bigint[], %s::text[]) AS u(metric_id, key)
  JOIN uns_meta.property_overrides o ON o.metric_id = u.metric_id AND o.key = u.key
"""


def _diff(plan: ImportPlan) -> None:
    todo = [r for r in plan.rows if r.status == "pending"]
    with connection.cursor() as cur:
        cur.execute(_STORED, [[r.metric_id for r in todo], [r.key for r in todo]])
        stored = {(mid, key): TypedOverride(kind, None if is_null else _stored_value(kind, cols))
                  for mid, key, kind, is_null, *cols in cur.fetchall()}
    for r in todo:
        old = stored.get((r.metric_id, r.key))
        r.old = "" if old is None else (NULL_TEXT if old.is_null else _shown(old))
        if r.override is None:
            r.status = "unchanged" if old is None else "clear"
        elif old is None:
            r.status = "add"
        else:
            r.status = "unchanged" if old == r.override else "change"


def _stored_value(kind: str, cols: list) -> object:
    value = cols[propvalues.VALUE_COLUMNS.index(f"{kind}_value")]
    if kind == "json" and isinstance(value, str):
        return json.loads(value)
    if kind == "float":
        return propvalues.f32(value)
    return value


_UPSERT = f"""
INSERT INTO uns_meta.property_overrides AS o (metric_id, key, type, is_null, {", ".join(propvalues.VALUE_COLUMNS)},
                                           note, updated_by)
SELECT u.metric_id, u.key, u.type::uns_meta.property_type, u.is_null, {", ".join(f"u.c{i}" for i in range(8))},
       %s, %s
  FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::boolean[], %s::int[], %s::numeric[], %s::real[],
              %s::float8[], %s::boolean[], %s::text[], %s::timestamptz[], %s::jsonb[])
       AS u(metric_id, key, type, is_null, {", ".join(f"c{i}" for i in range(8))})
ON CONFLICT (metric_id, key) DO UPDATE SET type = EXCLUDED.type, is_null = EXCLUDED.is_null,
    {", ".join(f"{c} = EXCLUDED.{c}" for c in propvalues.VALUE_COLUMNS)},
    note = EXCLUDED.note, updated_by = EXCLUDED.updated_by
"""
_DELETE = """DELETE FROM uns_meta.property_overrides o USING unnest(%s::bigint[], %s::text[]) AS u(metric_id, key)
              WHERE o.metric_id = u.metric_id AND o.key = u.key"""
_VERSIONS = """INSERT INTO uns_meta.metric_versions (metric_id, kind, change, changed_by)
               SELECT u.metric_id, 'steward', u.change, %s
                 FROM unnest(%s::bigint[], %s::jsonb[]) AS u(metric_id, change)"""


def apply_import(rows: list[dict[str, str]], *, user: str, why: str, filename: str = "") -> BulkChange:
    """Plan again inside one transaction and write it, or raise BadValue (nothing written) if any row is wrong."""
    if not why.strip():
        raise BadValue("Say why: the import is audited.")
    with transaction.atomic():
        plan = plan_import(rows)
        if plan.errors:
            raise BadValue(f"{len(plan.errors)} row(s) have errors; nothing was imported.")
        changes = plan.changes
        change = BulkChange.objects.create(action=BulkChange.Action.IMPORT, selection=filename, why=why.strip(),
                                           changed_by=f"steward:{user}")
        sets = [r for r in changes if r.override is not None]
        clears = [r for r in changes if r.override is None]
        with connection.cursor() as cur:
            if sets:
                columns = list(zip(*(r.override.columns() for r in sets), strict=True))  # type: ignore[union-attr]
                cur.execute(_UPSERT, [why.strip()[:500], user, [r.metric_id for r in sets], [r.key for r in sets],
                                      [r.override.type for r in sets],  # type: ignore[union-attr]
                                      [r.override.is_null for r in sets],  # type: ignore[union-attr]
                                      *[list(c) for c in columns]])
            if clears:
                cur.execute(_DELETE, [[r.metric_id for r in clears], [r.key for r in clears]])
            per_metric: dict[int, dict] = {}
            for r in changes:
                diff = per_metric.setdefault(r.metric_id, {"bulk": change.pk})  # type: ignore[arg-type]
                new = None if r.override is None else r.override.as_json()
                if r.status == "add":
                    diff.setdefault("override_added", {})[r.key] = new
                elif r.status == "change":
                    diff.setdefault("override_changed", {})[r.key] = [r.old, new]
                else:
                    diff.setdefault("override_removed", {})[r.key] = r.old
            ids = list(per_metric)
            cur.execute(_VERSIONS, [f"steward:{user}", ids, [json.dumps(per_metric[i]) for i in ids]])
        change.metrics = len(ids)
        change.save(update_fields=["metrics"])
        if ids:
            metrics_need_sync.send(sender=Metric, metric_ids=ids, reason="steward")
    return change
