"""Parsing a steward's typed override (catalog.overrides): every type, every bad input a ValidationError."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from catalog.overrides import parse_value, typed_columns, validate_key
from catalog.propvalues import f32
from sparkplug.datatypes import DataType as T

pytestmark = pytest.mark.unit

GOOD = [
    (T.Int8, "-128", -128), (T.Int8, " 127 ", 127), (T.UInt8, "255", 255), (T.Int16, "-32768", -32768),
    (T.UInt16, "65535", 65535), (T.Int32, "2147483647", 2**31 - 1), (T.UInt32, "4294967295", 2**32 - 1),
    (T.Int64, "-9223372036854775808", -(2**63)), (T.UInt64, "18446744073709551615", 2**64 - 1),
    (T.Int32, "1e3", 1000), ("int", "42", 42), ("long", "18446744073709551615", 2**64 - 1),
    ("long", "-9223372036854775808", -(2**63)),
    (T.Double, "250.5", 250.5), ("double", "-1e300", -1e300), (T.Float, "0.1", f32(0.1)),
    (T.Float, "3.4e38", f32(3.4e38)),
    (T.Boolean, "true", True), (T.Boolean, "No", False), ("boolean", "1", True), ("boolean", " off ", False),
    (T.String, "bar", "bar"), (T.String, "", ""), (T.Text, "°C ✓", "°C ✓"),
    (T.UUID, "12345678-1234-5678-1234-567812345678", "12345678-1234-5678-1234-567812345678"),
    (T.DateTime, "2026-12-07T21:40:00Z", datetime(2026, 12, 7, 21, 40, tzinfo=UTC)),
    (T.DateTime, "2026-12-07 22:40:00+01:00", datetime(2026, 12, 7, 21, 40, tzinfo=UTC)),
    (T.DateTime, "2026-12-07", datetime(2026, 12, 7, tzinfo=UTC)),
    ("datetime", "0", datetime(1970, 1, 1, tzinfo=UTC)),
    (T.PropertySet, '{"a": {"type": 12, "value": "x"}}', {"a": {"type": 12, "value": "x"}}),
    (T.PropertySetList, "[{}]", [{}]), ("json", "[1, 2.5]", [1, 2.5]),
]


@pytest.mark.parametrize(("type_", "text", "expected"), GOOD)
def test_good_values_parse_to_their_typed_value(type_, text, expected):
    """TC-44: what a steward may type for each property type becomes the typed value stored."""
    assert parse_value(type_, text) == expected
    assert type(parse_value(type_, text)) is type(expected)


@pytest.mark.parametrize("type_", [*list(T)[1:22], *["int", "long", "float", "double", "boolean", "string",
                                                     "datetime", "json"]])
def test_none_is_null_for_every_property_type(type_):
    """TC-44: the null value is accepted for every property type; non-property types are refused."""
    if type_ in (T.DataSet, T.Bytes, T.File, T.Template):
        with pytest.raises(ValidationError, match="not a property type"):
            parse_value(type_, None)
    else:
        assert parse_value(type_, None) is None


BAD = [
    (T.Int8, "128", "outside the range of Int8"), (T.Int8, "-129", "outside"), (T.UInt8, "-1", "outside"),
    (T.UInt16, "65536", "outside"), (T.Int32, "2147483648", "outside"), (T.UInt32, "-1", "outside"),
    (T.Int64, "9223372036854775808", "outside"), (T.UInt64, "18446744073709551616", "outside"),
    ("long", "18446744073709551616", "outside the range of a whole number"),
    (T.Int32, "1.5", "not a whole number"), (T.Int32, "abc", "not a whole number"), (T.Int32, "", "not a whole"),
    (T.Int32, "nan", "not a whole number"), (T.Int32, "inf", "not a whole number"),
    (T.Double, "nan", "finite"), (T.Double, "-Infinity", "finite"), (T.Double, "1e999", "finite"),
    (T.Double, "abc", "not a number"), (T.Double, "", "not a number"),
    (T.Float, "3.5e38", "beyond the largest Float"), (T.Float, "NaN", "finite"),
    (T.Boolean, "maybe", "not a boolean"), (T.Boolean, "", "not a boolean"),
    (T.String, "a\x00b", "NUL"), (T.String, "x" * 65_537, "65537 bytes"), (T.String, "é" * 40_000, "80000 bytes"),
    (T.UUID, "not-a-uuid", "not a UUID"),
    (T.DateTime, "yesterday", "not a date and time"), (T.DateTime, "2026-13-01T00:00:00Z", "not a valid date"),
    (T.DateTime, "99999999999999999", "outside years 1-9999"), (T.DateTime, "0001-01-01T00:00:00+01:00", "outside"),
    (T.DateTime, "2026-12-07T25:00:00", "not a valid date"),
    (T.PropertySet, "{", "Not valid JSON"), (T.PropertySet, '{"a": NaN}', "NaN is not allowed"),
    (T.PropertySet, '{"a": Infinity}', "Infinity is not allowed"), (T.PropertySet, "[]", "JSON object"),
    (T.PropertySetList, "{}", "JSON list"), ("json", "3", "object or list"), ("json", '"x"', "object or list"),
    (T.PropertySet, '{"a\\u0000": 1}', "NUL"), (T.PropertySet, '{"a": "' + "x" * 262_145 + '"}', "262146 bytes"),
    (T.PropertySet, "[" * 100_000 + "]" * 100_000, "JSON"),
    ("decimal", "1", "Unknown property type"), (99, "1", "Unknown Sparkplug type"),
]


@pytest.mark.parametrize(("type_", "text", "message"), BAD)
def test_bad_values_are_validation_errors_with_a_reason(type_, text, message):
    """TC-44: every value that cannot be stored is refused with a message saying why (never a database error)."""
    with pytest.raises(ValidationError) as info:
        parse_value(type_, text)
    assert message in " ".join(info.value.messages)


@pytest.mark.parametrize("key", ["engUnit", "Eng Unit", "ü" * 127, "a.b/c"])
def test_good_keys(key):
    """TC-44: keys a steward may name."""
    assert validate_key(key) == key


@pytest.mark.parametrize(("key", "message"), [
    ("", "empty"), ("   ", "empty"), (" engUnit", "spaces"), ("engUnit ", "spaces"), ("a\x00b", "NUL"),
    ("k" * 256, "256 bytes"), ("ü" * 128, "256 bytes"),
])
def test_bad_keys(key, message):
    """TC-44: a key the catalog cannot hold (blank, padded, NUL, beyond 255 bytes) is refused."""
    with pytest.raises(ValidationError, match=message):
        validate_key(key)


def test_typed_columns_set_exactly_one_value_column():
    """TC-44: the columns of an override satisfy the one-typed-value rule (one column, or null)."""
    cols = typed_columns(T.UInt64, 2**64 - 1)
    assert cols["type"] == "long" and cols["is_null"] is False and cols["long_value"] == 2**64 - 1
    assert [k for k, v in cols.items() if k.endswith("_value") and v is not None] == ["long_value"]
    cols = typed_columns("double", None)
    assert cols["type"] == "double" and cols["is_null"] is True
    assert all(v is None for k, v in cols.items() if k.endswith("_value"))
