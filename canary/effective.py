"""Effective, mapped properties: what Canary should hold for a metric (SYSTEM.md §6).

effective = the edge value, or the steward's override when there is one;
mapped    = renamed/excluded by the steward-editable ``PropertyMapping``
            (keys without a mapping row go verbatim; ``Quality`` is excluded by default).
Values become JSON scalars for Canary: property sets are sent as JSON text,
DateTime as ISO 8601 UTC text, everything else as the number/bool/string it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from django.db import connection

from catalog import propvalues
from ingest.sparkplug import DataType

_COLUMNS = ", ".join(propvalues.VALUE_COLUMNS)


@dataclass
class Target:
    metric_id: int
    canary_id: str
    retired: bool
    properties: dict[str, object] = field(default_factory=dict)  # canary name -> scalar


def load_mapping() -> dict[str, str | None]:
    """Sparkplug key -> Canary name (None: excluded)."""
    from canary.models import PropertyMapping

    return {m.key: ((m.canary_name or m.key) if m.include else None) for m in PropertyMapping.objects.all()}


def canary_value(sparkplug_type: int, value: object) -> object:
    if value is None:
        return None
    if sparkplug_type == DataType.DateTime:
        return propvalues.ms_to_datetime(value).isoformat().replace("+00:00", "Z")  # type: ignore[arg-type]
    if sparkplug_type in (DataType.PropertySet, DataType.PropertySetList):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return value


def effective_targets(metric_ids: list[int], mapping: dict[str, str | None] | None = None) -> dict[int, Target]:
    """Targets of the given metrics (metrics that no longer exist are simply absent)."""
    mapping = load_mapping() if mapping is None else mapping
    targets: dict[int, Target] = {}
    with connection.cursor() as cur:
        cur.execute("SELECT id, canary_id, retired_at IS NOT NULL FROM uns_meta.metrics WHERE id = ANY(%s)",
                    [metric_ids])
        for mid, canary_id, retired in cur.fetchall():
            targets[mid] = Target(mid, canary_id, retired)
        effective: dict[int, dict[str, tuple[int, object]]] = {mid: {} for mid in targets}
        for table in ("metric_properties", "property_overrides"):  # overrides second: they win
            cur.execute(
                f"SELECT metric_id, key, {'sparkplug_type' if table == 'metric_properties' else 'NULL'},"
                f" type, is_null, {_COLUMNS} FROM uns_meta.{table} WHERE metric_id = ANY(%s)", [metric_ids])
            for mid, key, sptype, kind, is_null, *cols in cur.fetchall():
                if mid not in effective:
                    continue
                if sptype is None:  # an override: its type is the storage type
                    sptype = _OVERRIDE_TYPE[kind]
                effective[mid][key] = propvalues.from_row(sptype, kind, is_null, tuple(cols))
    for mid, props in effective.items():
        out = targets[mid].properties
        for key, (sptype, value) in props.items():
            name = mapping.get(key, key)
            if name is not None:
                out[name] = canary_value(sptype, value)
    return targets


# Storage type of an override -> the Sparkplug type its value is shown as.
_OVERRIDE_TYPE = {
    "int": DataType.Int32, "long": DataType.Int64, "float": DataType.Float, "double": DataType.Double,
    "boolean": DataType.Boolean, "string": DataType.String, "datetime": DataType.DateTime,
    "json": DataType.PropertySet,
}
