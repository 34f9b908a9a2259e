"""Property values between their decoded form and the typed columns (docs/catalog.md).

A decoded property is ``(sparkplug_type, value)`` as returned by
:func:`sparkplug.codec.decode_properties`. Storage maps it to one typed column;
reading a row back yields the same comparable value, so "changed?" is a plain
``==`` between the two (floats are compared at their declared 32-bit precision).
"""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, datetime
from decimal import Decimal

from psycopg.types.json import Jsonb

from sparkplug.datatypes import DataType

# Sparkplug type code -> storage type (enum uns_meta.property_type)
STORAGE_TYPE: dict[int, str] = {
    DataType.Int8: "int", DataType.Int16: "int", DataType.Int32: "int",
    DataType.UInt8: "int", DataType.UInt16: "int",
    DataType.UInt32: "long", DataType.Int64: "long", DataType.UInt64: "long",
    DataType.Float: "float", DataType.Double: "double", DataType.Boolean: "boolean",
    DataType.String: "string", DataType.Text: "string", DataType.UUID: "string",
    DataType.DateTime: "datetime",
    DataType.PropertySet: "json", DataType.PropertySetList: "json",
}

# Column order used by COPY and by reads.
VALUE_COLUMNS = ("int_value", "long_value", "float_value", "double_value", "boolean_value",
                 "string_value", "datetime_value", "json_value")
_SLOT = {"int": 0, "long": 1, "float": 2, "double": 3, "boolean": 4, "string": 5, "datetime": 6, "json": 7}
_NULLS = (None,) * 8
_F32 = struct.Struct("<f")


def f32(x: float) -> float:
    """Round a float to 32-bit precision (what a ``real`` column keeps)."""
    return _F32.unpack(_F32.pack(x))[0]


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    return round(value.timestamp() * 1000)


def storage_type(sparkplug_type: int) -> str:
    return STORAGE_TYPE[sparkplug_type]


def to_columns(sparkplug_type: int, value: object) -> tuple[str, bool, tuple]:
    """(storage type, is_null, the 8 typed columns) for one decoded property."""
    kind = STORAGE_TYPE[sparkplug_type]
    if value is None:
        return kind, True, _NULLS
    columns: list[object] = [None] * 8
    if kind == "datetime":
        value = ms_to_datetime(int(value))  # type: ignore[call-overload]
    elif kind == "json":
        value = Jsonb(value, dumps=to_json)
    columns[_SLOT[kind]] = value
    return kind, False, tuple(columns)


def from_row(sparkplug_type: int, kind: str, is_null: bool, columns: tuple) -> tuple[int, object]:
    """The decoded form of a stored row: comparable with decode_properties output."""
    if is_null:
        return sparkplug_type, None
    value = columns[_SLOT[kind]]
    if kind == "json" and isinstance(value, str):  # Django's connections load jsonb as its text
        value = json.loads(value)
    elif kind == "long" and isinstance(value, Decimal):
        value = int(value)
    elif kind == "float":
        value = f32(value)
    elif kind == "datetime":
        value = datetime_to_ms(value)
    return sparkplug_type, value


def comparable(sparkplug_type: int, value: object) -> tuple[int, object]:
    """Normalise a freshly decoded value the way storage would round it."""
    if value is not None and sparkplug_type == DataType.Float:
        return sparkplug_type, f32(value)  # type: ignore[arg-type]
    return sparkplug_type, value


def to_json(value: object) -> str:
    """JSON text for jsonb; non-finite floats (legal in Sparkplug, not in JSON) become strings."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"))


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
