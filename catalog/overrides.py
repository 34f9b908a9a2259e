"""A steward's override as typed text: parse and check it before anything is written.

Every path that stores an override (the metric page's editor, bulk correction, import of a sheet)
parses the text a steward typed with :func:`parse_value` and the key with :func:`validate_key`;
what cannot be stored becomes a :class:`~django.core.exceptions.ValidationError` with a message
the steward can act on, never a database error (a 500). The accepted forms and limits are listed
in docs/catalog.md ("Steward overrides") and are those a birth must respect (catalog.validation).
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_date, parse_datetime

from catalog import validation
from catalog.propvalues import STORAGE_TYPE, VALUE_COLUMNS, f32, ms_to_datetime
from sparkplug.datatypes import DataType

# The Sparkplug type a new key of a storage type is given (ranges and forms follow it).
DEFAULT_SPARKPLUG_TYPE: dict[str, DataType] = {
    "int": DataType.Int32, "long": DataType.Int64, "float": DataType.Float, "double": DataType.Double,
    "boolean": DataType.Boolean, "string": DataType.String, "datetime": DataType.DateTime,
    "json": DataType.PropertySet,
}
# "long" named without a Sparkplug type: whatever numeric(20,0) holds from an Int64 or a UInt64.
INT_RANGES: dict[int, tuple[int, int]] = {
    DataType.Int8: (-(2**7), 2**7 - 1), DataType.Int16: (-(2**15), 2**15 - 1),
    DataType.Int32: (-(2**31), 2**31 - 1), DataType.Int64: (-(2**63), 2**63 - 1),
    DataType.UInt8: (0, 2**8 - 1), DataType.UInt16: (0, 2**16 - 1),
    DataType.UInt32: (0, 2**32 - 1), DataType.UInt64: (0, 2**64 - 1),
}
LONG_RANGE = (-(2**63), 2**64 - 1)
FLOAT32_MAX = 3.4028234663852886e38
TRUE_WORDS = frozenset({"true", "yes", "y", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "n", "off", "0"})


def sparkplug_type_of(type_: int | str) -> DataType:
    """A Sparkplug type code, or a storage type name (``"double"``), as the Sparkplug type to parse for."""
    if isinstance(type_, str) and not type_.isdigit():
        try:
            return DEFAULT_SPARKPLUG_TYPE[type_]
        except KeyError:
            raise ValidationError(f"Unknown property type {type_!r}; one of: {', '.join(DEFAULT_SPARKPLUG_TYPE)}.",
                                  code="type") from None
    try:
        code = DataType(int(type_))
    except ValueError:
        raise ValidationError(f"Unknown Sparkplug type {type_!r}.", code="type") from None
    if code not in STORAGE_TYPE:
        raise ValidationError(f"{code.name} is not a property type (properties hold scalars, text, DateTime "
                              "and property sets).", code="type")
    return code


def validate_key(key: str) -> str:
    """A property key as typed: not blank, no surrounding spaces, no NUL, at most 255 bytes of UTF-8."""
    if not key or not key.strip():
        raise ValidationError("The key is empty.", code="key")
    if key != key.strip():
        raise ValidationError(f"The key {key[:80]!r} starts or ends with spaces.", code="key")
    try:
        validation.check_text("The key", key, validation.MAX_KEY_BYTES)
    except validation.Invalid as exc:
        raise ValidationError(f"{exc}.", code="key") from None
    return key


def parse_value(type_: int | str, text: str | None) -> object:
    """The value ``text`` means for a property of ``type_`` (Sparkplug code or storage type name).

    ``None`` is the null value. Returns an ``int``, ``float`` (32-bit rounded for Float),
    ``bool``, ``str``, aware ``datetime`` or JSON object/list; raises ``ValidationError``.
    """
    code = sparkplug_type_of(type_)
    if text is None:
        return None
    if "\x00" in text:
        raise ValidationError("The value contains a NUL character (PostgreSQL cannot store it).", code="nul")
    kind = STORAGE_TYPE[code]
    if kind in ("int", "long"):
        low, high = LONG_RANGE if type_ == "long" else INT_RANGES[code]
        return _integer(text, low, high, "a whole number" if type_ == "long" else code.name)
    if kind in ("float", "double"):
        return _real(text, kind == "float")
    if kind == "boolean":
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise ValidationError(f"{text[:40]!r} is not a boolean: type true or false.", code="boolean")
    if kind == "string":
        return _string(text, code)
    if kind == "datetime":
        return _datetime(text)
    return _json(text, code, exact=type_ != "json")


def typed_columns(type_: int | str, value: object) -> dict[str, object]:
    """The ``type``, ``is_null`` and eight value columns of an override holding ``value``
    (from :func:`parse_value`): exactly the CHECK ``one typed value`` accepts."""
    kind = STORAGE_TYPE[sparkplug_type_of(type_)]
    columns: dict[str, object] = dict.fromkeys(VALUE_COLUMNS)
    if value is not None:
        columns[f"{kind}_value"] = Decimal(value) if kind == "long" else value  # type: ignore[arg-type]
    return {"type": kind, "is_null": value is None, **columns}


def _integer(text: str, low: int, high: int, what: str) -> int:
    stripped = text.strip().replace("_", "")
    try:
        number = int(stripped)
    except ValueError:
        try:
            real = float(stripped)
        except ValueError:
            raise ValidationError(f"{text[:40]!r} is not a whole number.", code="number") from None
        if not real.is_integer():
            raise ValidationError(f"{text[:40]!r} is not a whole number.", code="number") from None
        number = int(real)
    if not low <= number <= high:
        raise ValidationError(f"{number} is outside the range of {what} ({low} to {high}).", code="range")
    return number


def _real(text: str, single: bool) -> float:
    try:
        number = float(text.strip())
    except ValueError:
        raise ValidationError(f"{text[:40]!r} is not a number.", code="number") from None
    if not math.isfinite(number):
        raise ValidationError("The value must be a finite number (not NaN or infinity).", code="finite")
    if single:
        if abs(number) > FLOAT32_MAX:
            raise ValidationError(f"{number:g} is beyond the largest Float (±{FLOAT32_MAX:g}).", code="range")
        return f32(number)
    return number


def _string(text: str, code: DataType) -> str:
    try:
        validation.check_text("The value", text, validation.MAX_STRING_BYTES)
    except validation.Invalid as exc:
        raise ValidationError(f"{exc}.", code="length") from None
    if code == DataType.UUID:
        try:
            return str(uuid.UUID(text.strip()))
        except ValueError:
            raise ValidationError(f"{text[:60]!r} is not a UUID.", code="uuid") from None
    return text


def _datetime(text: str) -> datetime:
    """ISO 8601 (a time without an offset is UTC; a date alone is its midnight UTC) or ms since the epoch."""
    stripped = text.strip()
    try:
        if stripped.lstrip("-").isdigit():
            ms = int(stripped)
            if not validation.DATETIME_MIN_MS <= ms <= validation.DATETIME_MAX_MS:
                raise ValidationError(f"{ms} ms is outside years 1-9999.", code="range")
            return ms_to_datetime(ms)
        value = parse_datetime(stripped.replace(" ", "T", 1) if " " in stripped else stripped)
        if value is None:
            day = parse_date(stripped)
            if day is not None:
                value = datetime(day.year, day.month, day.day)
    except ValueError as exc:  # well-formed but impossible: month 13, an offset beyond a day...
        raise ValidationError(f"{text[:40]!r} is not a valid date and time ({exc}).", code="datetime") from None
    if value is None:
        raise ValidationError(f"{text[:40]!r} is not a date and time: use ISO 8601, e.g. 2026-12-07T21:40:00Z.",
                              code="datetime")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(f"{text[:40]!r} is outside years 1-9999 in UTC.", code="range") from None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not allowed in a property set")


def _json(text: str, code: DataType, exact: bool) -> object:
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValidationError("The JSON is nested too deeply.", code="json") from None
    except ValueError as exc:
        raise ValidationError(f"Not valid JSON: {exc}.", code="json") from None
    want = {DataType.PropertySet: dict, DataType.PropertySetList: list}[code]
    if exact and not isinstance(value, want):
        raise ValidationError(f"A {code.name} is a JSON {'object' if want is dict else 'list'}.", code="json")
    if not isinstance(value, (dict, list)):
        raise ValidationError("A property set is a JSON object or list.", code="json")
    try:
        validation.check_properties({"value": (int(code), value)})
    except validation.Invalid as exc:
        reason = str(exc).replace("property 'value': ", "")
        raise ValidationError(f"The property set: {reason}.", code="json") from None
    except RecursionError:
        raise ValidationError("The JSON is nested too deeply.", code="json") from None
    return value
