"""What the catalog can hold: every birth is checked against these limits before anything is written.

A value PostgreSQL cannot store (a NUL character in text or JSON, a DateTime Python cannot
represent, an integer beyond its column), or a name or key too long for the unique btree indexes
(an index entry holds at most ~2.7 kB), would otherwise fail the whole frame's transaction with a
database error and the frame would be retried forever. Checked instead, a bad metric is rejected by
name with a precise reason and the rest of the birth applies; a bad frame header (topic ids, payload
timestamp) rejects the frame. The limits and the reasons are listed in docs/catalog.md ("Limits").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from sparkplug.datatypes import DataType

MAX_ID_BYTES = 255  # group, edge node and device ids: each a level of the topic and of the device path
MAX_NAME_BYTES = 1024  # a metric name (unique with its device)
MAX_PATH_BYTES = 2048  # a metric's uns_path and canary_id (unique, indexed)
MAX_KEY_BYTES = 255  # a property key (primary key with the metric id)
MAX_STRING_BYTES = 65_536  # a string property value; a whole Canary request is capped at 1 MB
MAX_SET_BYTES = 262_144  # a PropertySet / PropertySetList value, as stored JSON
# A metric's whole property set on the wire, checked before it is decoded: decoding builds it in
# memory, and a hostile set (millions of empty nested sets) would otherwise cost gigabytes.
MAX_PROPERTIES_BYTES = 1_048_576
BIGINT_MAX = 2**63 - 1  # aliases and payload timestamps are bigint columns
# DateTime (ms since the epoch): what Python's datetime (years 1-9999) and timestamptz both hold.
DATETIME_MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
DATETIME_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class Invalid(ValueError):
    """What cannot be stored, in words a steward can act on."""


def check_text(what: str, text: str, max_bytes: int) -> None:
    if "\x00" in text:
        raise Invalid(f"{what} contains a NUL character (PostgreSQL text cannot hold it)")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise Invalid(f"{what} is {size} bytes long, the catalog holds at most {max_bytes}")


def check_header(timestamp: int | None) -> None:
    """The payload header: its timestamp orders the births of a device (a bigint column)."""
    if timestamp is not None and timestamp > BIGINT_MAX:
        raise Invalid(f"payload timestamp {timestamp} is beyond the largest storable ({BIGINT_MAX})")


def check_topic_ids(group_id: str, edge: str, device: str | None) -> None:
    for what, value in (("group id", group_id), ("edge node id", edge), ("device id", device)):
        if value is not None:
            check_text(what, value, MAX_ID_BYTES)


def check_metric(name: str, alias: int | None) -> None:
    check_text("name", name, MAX_NAME_BYTES)
    if alias is not None and alias > BIGINT_MAX:
        raise Invalid(f"alias {alias} is beyond the largest storable ({BIGINT_MAX})")


def check_path(path: str) -> None:
    size = len(path.encode())
    if size > MAX_PATH_BYTES:
        raise Invalid(f"its UNS path is {size} bytes long, the catalog holds at most {MAX_PATH_BYTES}")


def check_properties_size(raw: bytes) -> None:
    if len(raw) > MAX_PROPERTIES_BYTES:
        raise Invalid(f"its property set is {len(raw)} bytes on the wire, the catalog takes at most "
                      f"{MAX_PROPERTIES_BYTES}")


# A str of n characters encodes to at most 4n bytes of UTF-8: shorter ones need no encoding to be
# measured (this runs for every property of every changed metric, a million per big birth).
_KEY_CHARS_SURE = MAX_KEY_BYTES // 4
_STRING_CHARS_SURE = MAX_STRING_BYTES // 4
_DATETIME = int(DataType.DateTime)
_SETS = frozenset({int(DataType.PropertySet), int(DataType.PropertySetList)})


def check_properties(props: Mapping[str, tuple[int, object]]) -> None:
    """Decoded properties (``sparkplug.codec.decode_properties``) of one metric."""
    for key, (sptype, value) in props.items():
        if "\x00" in key or len(key) > _KEY_CHARS_SURE:
            check_text(f"property key {key[:80]!r}", key, MAX_KEY_BYTES)
        if value is None:
            continue
        if type(value) is str:
            if "\x00" in value or len(value) > _STRING_CHARS_SURE:
                check_text(f"property {key!r}", value, MAX_STRING_BYTES)
        elif sptype == _DATETIME:
            if not DATETIME_MIN_MS <= value <= DATETIME_MAX_MS:  # type: ignore[operator]
                raise Invalid(f"property {key!r}: DateTime {value} ms is outside years 1-9999")
        elif sptype in _SETS:
            where = f"property {key!r}"
            size = 0
            for text in _strings(value):
                if "\x00" in text:
                    raise Invalid(f"{where}: a key or string inside the set contains a NUL character "
                                  "(PostgreSQL JSON cannot hold it)")
                size += len(text.encode("utf-8", "surrogatepass"))
            if size > MAX_SET_BYTES:
                raise Invalid(f"{where}: the set holds {size} bytes of text, the catalog holds at most "
                              f"{MAX_SET_BYTES}")


def _strings(value: object) -> Iterator[str]:
    """Every key and string of a nested property set (``{key: {"type", "value"}}`` / lists of them)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
