"""Bulk correction: one key's override set or cleared on every metric of a selection, set-based
(docs/steward-bulk.md).

One transaction: a ``BulkChange`` row (who, when, why, how many), one statement that upserts (or
deletes) the overrides and appends a ``steward`` version per metric it really changed (naming the
bulk change), and ``metrics_need_sync`` for those metrics, so Canary receives them through the
normal flush and push, batched.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import QuerySet

from catalog import overrides, propvalues
from catalog.models import BulkChange, Metric
from catalog.signals import metrics_need_sync


class BadValue(ValueError):
    """A steward-typed key or value that cannot be stored; the message is shown beside the field."""


@dataclass(frozen=True)
class TypedOverride:
    """A validated override value: its storage type, and the value of that type's column (None: null)."""

    type: str
    value: object

    @property
    def is_null(self) -> bool:
        return self.value is None

    def columns(self) -> tuple:
        """The eight typed columns in ``propvalues.VALUE_COLUMNS`` order."""
        out: list[object] = [None] * len(propvalues.VALUE_COLUMNS)
        if self.value is not None:
            slot = propvalues.VALUE_COLUMNS.index(f"{self.type}_value")
            out[slot] = json.dumps(self.value, allow_nan=False) if self.type == "json" else self.value
        return tuple(out)

    def as_json(self) -> object:
        """The value as versions record it (``record_steward_edit``: JSON, datetimes and decimals as text)."""
        return json.loads(json.dumps(self.value, default=str))


def check_key(key: str) -> str:
    """The key as typed, checked by ``catalog.overrides.validate_key`` (the rules every override path shares)."""
    try:
        return overrides.validate_key(key)
    except ValidationError as exc:
        raise BadValue(" ".join(exc.messages)) from None


def parse_value(kind: str, text: str, *, is_null: bool = False) -> TypedOverride:
    """The override a steward typed as ``text`` for ``kind`` (a storage type name, or a Sparkplug type code),
    parsed by ``catalog.overrides.parse_value``; BadValue says what is wrong."""
    try:
        value = overrides.parse_value(kind, None if is_null else text)
        columns = overrides.typed_columns(kind, value)
    except ValidationError as exc:
        raise BadValue(" ".join(exc.messages)) from None
    storage = str(columns["type"])
    return TypedOverride(storage, None if value is None else columns[f"{storage}_value"])


_OLD_VALUE = """CASE WHEN o.is_null THEN 'null'::jsonb ELSE CASE o.type::text
    WHEN 'int' THEN to_jsonb(o.int_value) WHEN 'long' THEN to_jsonb(o.long_value::text)
    WHEN 'float' THEN to_jsonb(o.float_value) WHEN 'double' THEN to_jsonb(o.double_value)
    WHEN 'boolean' THEN to_jsonb(o.boolean_value) WHEN 'string' THEN to_jsonb(o.string_value)
    WHEN 'datetime' THEN to_jsonb(o.datetime_value::text) ELSE o.json_value END END"""
_COLUMNS = ", ".join(propvalues.VALUE_COLUMNS)
_CASTS = ("int", "numeric", "real", "float8", "boolean", "text", "timestamptz", "jsonb")
_NEW = ", ".join(f"%(c{i})s::{cast}" for i, cast in enumerate(_CASTS))

SET_SQL = f"""
WITH target AS MATERIALIZED ({{selection}}),
old AS (
    SELECT o.metric_id, {_OLD_VALUE} AS value
      FROM uns_meta.property_overrides o JOIN target t ON t.id = o.metric_id WHERE o.key = %(key)s),
up AS (
    INSERT INTO uns_meta.property_overrides AS o (metric_id, key, type, is_null, {_COLUMNS}, note, updated_by)
    SELECT t.id, %(key)s, %(type)s::uns_meta.property_type, %(is_null)s, {_NEW}, %(note)s, %(user)s FROM target t
    ON CONFLICT (metric_id, key) DO UPDATE SET
        type = EXCLUDED.type, is_null = EXCLUDED.is_null,
        {", ".join(f"{c} = EXCLUDED.{c}" for c in propvalues.VALUE_COLUMNS)},
        note = EXCLUDED.note, updated_by = EXCLUDED.updated_by
    WHERE (o.type, o.is_null, {", ".join(f"o.{c}" for c in propvalues.VALUE_COLUMNS)}) IS DISTINCT FROM
          (EXCLUDED.type, EXCLUDED.is_null, {", ".join(f"EXCLUDED.{c}" for c in propvalues.VALUE_COLUMNS)})
    RETURNING o.metric_id),
versions AS (
    INSERT INTO uns_meta.metric_versions (metric_id, kind, change, changed_by)
    SELECT up.metric_id, 'steward',
           CASE WHEN old.metric_id IS NULL
                THEN jsonb_build_object('override_added', jsonb_build_object(%(key)s::text, %(new)s::jsonb))
                ELSE jsonb_build_object('override_changed',
                                        jsonb_build_object(%(key)s::text, jsonb_build_array(old.value, %(new)s::jsonb)))
           END || jsonb_build_object('bulk', %(bulk)s::bigint),
           %(by)s
      FROM up LEFT JOIN old USING (metric_id)
    RETURNING metric_id)
SELECT metric_id FROM versions
"""

CLEAR_SQL = f"""
WITH target AS MATERIALIZED ({{selection}}),
gone AS (
    DELETE FROM uns_meta.property_overrides o USING target t
     WHERE o.metric_id = t.id AND o.key = %(key)s
    RETURNING o.metric_id, {_OLD_VALUE} AS value),
versions AS (
    INSERT INTO uns_meta.metric_versions (metric_id, kind, change, changed_by)
    SELECT metric_id, 'steward',
           jsonb_build_object('override_removed', jsonb_build_object(%(key)s::text, value), 'bulk', %(bulk)s::bigint),
           %(by)s
      FROM gone
    RETURNING metric_id)
SELECT metric_id FROM versions
"""


def selection_sql(metrics: QuerySet[Metric]) -> tuple[str, tuple]:
    """``SELECT id`` of the selection (a filtered metric queryset), without ordering."""
    sql, params = metrics.order_by().values("id").query.sql_with_params()
    return sql, params


def apply_bulk(metrics: QuerySet[Metric], key: str, override: TypedOverride | None, *, user: str, why: str,
               selection: str = "") -> BulkChange:
    """Set ``key``'s override to ``override`` (None: clear it) on every metric of ``metrics``.

    Metrics whose override already is that value get no version and are not re-sent."""
    key = check_key(key)
    if not why.strip():
        raise BadValue("Say why: the bulk change is audited.")
    sub_sql, sub_params = selection_sql(metrics)
    with transaction.atomic():
        change = BulkChange.objects.create(
            action=BulkChange.Action.CLEAR if override is None else BulkChange.Action.SET, key=key,
            value=None if override is None else {"type": override.type, "value": override.as_json()},
            selection=selection, why=why.strip(), changed_by=f"steward:{user}")
        params: dict[str, object] = {"key": key, "bulk": change.pk, "by": f"steward:{user}"}
        if override is None:
            template = CLEAR_SQL
        else:
            template = SET_SQL
            params |= {"type": override.type, "is_null": override.is_null, "note": why.strip()[:500], "user": user,
                       "new": json.dumps(override.as_json())}
            params |= {f"c{i}": value for i, value in enumerate(override.columns())}
        # The selection's own placeholders are positional: its values are inlined as quoted literals.
        compose = connection.ops.compose_sql  # type: ignore[attr-defined]  # PostgreSQL's operations
        selection_text = compose(sub_sql, sub_params) if sub_params else sub_sql
        with connection.cursor() as cur:
            cur.execute(template.replace("{selection}", selection_text.replace("%", "%%")), params)  # type: ignore[arg-type]
            changed = [row[0] for row in cur.fetchall()]
        change.metrics = len(changed)
        change.save(update_fields=["metrics"])
        if changed:
            metrics_need_sync.send(sender=Metric, metric_ids=changed, reason="steward")
    return change
