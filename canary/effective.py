"""Effective, mapped properties: what Canary should hold for a metric (docs/catalog.md).

effective = the edge value, or the steward's override when there is one;
mapped    = renamed/excluded by the steward-editable ``PropertyMapping``
            (keys without a mapping row go verbatim; ``Quality`` is excluded by default).
Values become JSON scalars for Canary: property sets are sent as JSON text,
DateTime as ISO 8601 UTC text, everything else as the number/bool/string it is.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg
from django.db import connection

from canary import metrics
from canary.models import PropertyMapping
from catalog import propvalues
from sparkplug.datatypes import DataType

log = logging.getLogger(__name__)

_COLUMNS = ", ".join(propvalues.VALUE_COLUMNS)


@dataclass
class Target:
    metric_id: int
    canary_id: str
    retired: bool
    properties: dict[str, object] = field(default_factory=dict)  # canary name -> scalar


def load_mapping() -> dict[str, str | None]:
    """Sparkplug key -> Canary name (None: excluded)."""
    return {m.key: ((m.canary_name or m.key) if m.include else None) for m in PropertyMapping.objects.all()}


def canary_value(sparkplug_type: int, value: object) -> object:
    if value is None:
        return None
    if sparkplug_type == DataType.DateTime:
        return propvalues.ms_to_datetime(value).isoformat().replace("+00:00", "Z")  # type: ignore[arg-type]
    if sparkplug_type in (DataType.PropertySet, DataType.PropertySetList):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/Infinity (Canary would refuse the whole request), and NaN != NaN would
        # make every flush see a change: sent as the text storage uses too ('nan', 'inf', '-inf').
        return repr(value)
    return value


# Storage types whose column value is already what Canary receives, and their column's index;
# a double only needs the non-finite check of canary_value.
_PLAIN = {kind: propvalues.VALUE_COLUMNS.index(f"{kind}_value") for kind in ("int", "double", "boolean", "string")}
_DOUBLE = _PLAIN["double"]


def id_array(ids: Iterable[int]) -> str:
    """Ids as one PostgreSQL array literal, for ``= ANY(%s::bigint[])`` on a server-binding cursor:
    psycopg would otherwise adapt a list element by element in Python (thousands per query here)."""
    return "{" + ",".join(map(str, ids)) + "}"


def effective_targets(metric_ids: list[int], mapping: dict[str, str | None] | None = None) -> dict[int, Target]:
    """Targets of the given metrics (metrics that no longer exist are simply absent).

    A key mapped to a Canary name that another key of the metric carries verbatim: the mapped key
    wins (the steward chose that name for it), and the conflict is counted and logged once."""
    mapping = load_mapping() if mapping is None else mapping
    # Names a mapping renames some key to: only these can be claimed by two keys of one metric.
    contested = {name for key, name in mapping.items() if name is not None and name != key}
    claimed: dict[tuple[int, str], str] = {}  # (metric, contested name) -> the key that set it
    conflicts: list[str] = []
    targets: dict[int, Target] = {}
    ids = id_array(metric_ids)
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cur:  # server-side binding: the ids travel once, as they are
        cur.execute("SELECT id, canary_id, retired_at IS NOT NULL FROM uns_meta.metrics WHERE id = ANY(%s::bigint[])",
                    [ids])
        for mid, canary_id, retired in cur.fetchall():
            targets[mid] = Target(mid, canary_id, retired)
        for table in ("metric_properties", "property_overrides"):  # overrides second: they win
            cur.execute(
                f"SELECT metric_id, key, {'sparkplug_type' if table == 'metric_properties' else 'NULL'},"
                f" type::text, is_null, {_COLUMNS} FROM uns_meta.{table} WHERE metric_id = ANY(%s::bigint[])", [ids])
            for mid, key, sptype, kind, is_null, *cols in cur.fetchall():
                target = targets.get(mid)
                if target is None:
                    continue
                name = mapping.get(key, key)
                if name is None:  # excluded
                    continue
                slot = _PLAIN.get(kind)
                if is_null:
                    value = None
                elif slot == _DOUBLE:  # non-finite ones become text (canary_value)
                    value = canary_value(DataType.Double, cols[slot])
                elif slot is not None:  # the common case: the column is the value
                    value = cols[slot]
                else:
                    value = canary_value(*propvalues.from_row(sptype or _OVERRIDE_TYPE[kind], kind, False,
                                                              tuple(cols)))
                if name in contested:
                    holder = claimed.setdefault((mid, name), key)
                    if holder != key:
                        # The mapped key keeps the name; of two mapped keys (a mapping the admin
                        # refuses), the first in key order does.
                        keep = holder if holder != name and (key == name or holder < key) else key
                        conflicts.append(f"{target.canary_id}: {holder!r} and {key!r} -> {name!r}, kept {keep!r}")
                        if keep == holder:
                            continue
                        claimed[(mid, name)] = key
                target.properties[name] = value
    if conflicts:
        metrics.MAPPING_CONFLICTS.inc(len(conflicts))
        log.warning("%d property name conflict(s) from the mapping, e.g. %s", len(conflicts), "; ".join(conflicts[:3]))
    return targets


# Storage type of an override -> the Sparkplug type its value is shown as.
_OVERRIDE_TYPE = {
    "int": DataType.Int32, "long": DataType.Int64, "float": DataType.Float, "double": DataType.Double,
    "boolean": DataType.Boolean, "string": DataType.String, "datetime": DataType.DateTime,
    "json": DataType.PropertySet,
}
