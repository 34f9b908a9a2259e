"""Sparkplug B payload decoding for BIRTH metadata, plus the encoder used by tests and tools.

Decoding streams: the top level of a ``Payload`` is walked at wire level (:func:`iter_metrics`
holds one metric at a time), each metric is parsed by upb into a *bytes view* of the schema
(strings as ``bytes``, properties left raw until :func:`decode_properties`), and UTF-8 is checked
here because upb does not. Every malformed input raises :class:`DecodeError` saying where; metric
numbers in messages are 0-based. Why, with measurements: docs/sparkplug.md, "How the decoder streams".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
)
from google.protobuf.message import DecodeError as _PbDecodeError

from sparkplug import sparkplug_b_pb2 as pb
from sparkplug.datatypes import DataType

__all__ = [
    "DecodeError",
    "MetricSpec",
    "PayloadHeader",
    "RawMetric",
    "decode_properties",
    "encode_birth",
    "iter_metrics",
    "payload_from_json",
    "read_header",
]


Buffer = bytes | bytearray | memoryview  # a payload as ingest holds it
# A protobuf message of the schema or of its bytes view; its fields are only known at run time.
ProtoMessage = Any


class DecodeError(ValueError):
    """A payload (or part of it) is not a valid Sparkplug B protobuf; the message says where."""


_DATATYPE_CODES = frozenset(int(t) for t in DataType)
_TYPE_NAMES: dict[int, str] = {int(t): t.name for t in DataType}


@dataclass(frozen=True, slots=True)
class PayloadHeader:
    timestamp: int | None
    seq: int | None
    uuid: str | None


@dataclass(slots=True)
class RawMetric:
    """One metric of a payload, without its value; ``properties`` is the raw PropertySet bytes."""

    index: int
    name: str | None
    alias: int | None
    datatype: int
    timestamp: int | None
    is_historical: bool
    is_transient: bool
    is_null: bool
    properties: bytes

    @property
    def where(self) -> str:
        """Prefix for error messages, e.g. ``metric #12 'Foo/Bar'``."""
        return f"metric #{self.index} {self.name!r}"


# --------------------------------------------------------------------------------------------
# Bytes view of the schema (docs/sparkplug.md, "How the decoder streams")

_T = descriptor_pb2.FieldDescriptorProto
_VIEW_PACKAGE = "metasync.sparkplug_view"


def _build_view_classes() -> tuple[Any, Any]:
    """Message classes for ``MetricHead`` and ``PropertySet`` in the bytes view."""
    src = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(src)
    old_ref, new_ref = f".{src.package}.", f".{_VIEW_PACKAGE}."
    view = descriptor_pb2.FileDescriptorProto(
        name="metasync_sparkplug_view.proto", package=_VIEW_PACKAGE, syntax="proto2"
    )
    payload = view.message_type.add()
    payload.CopyFrom(src.message_type[0])

    def strings_to_bytes(msg: descriptor_pb2.DescriptorProto) -> None:
        for field in msg.field:
            if field.type == _T.TYPE_STRING:
                field.type = _T.TYPE_BYTES
            if field.type_name.startswith(old_ref):
                field.type_name = new_ref + field.type_name[len(old_ref):]
        for nested in msg.nested_type:
            strings_to_bytes(nested)

    strings_to_bytes(payload)

    # MetricHead: fields 1-9 of Metric; metadata/properties kept as raw bytes, value skipped.
    metric = next(m for m in payload.nested_type if m.name == "Metric")
    head = payload.nested_type.add()
    head.name = "MetricHead"
    for field in metric.field:
        if field.number <= 9:
            copy = head.field.add()
            copy.CopyFrom(field)
            if field.number in (8, 9):
                copy.type = _T.TYPE_BYTES
                copy.ClearField("type_name")

    pool = descriptor_pool.DescriptorPool()
    pool.Add(view)
    prefix = f"{_VIEW_PACKAGE}.Payload."
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName(prefix + "MetricHead")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName(prefix + "PropertySet")),
    )


_MetricHead, _PropertySetView = _build_view_classes()


# --------------------------------------------------------------------------------------------
# Wire-level walk

_MAX_U64 = (1 << 64) - 1
# Expected wire type of the Payload's own fields; 6+ are extensions (any wire type).
_PAYLOAD_WIRE = {1: 0, 2: 2, 3: 0, 4: 2, 5: 2}
_PAYLOAD_FIELD_NAMES = {1: "timestamp", 2: "metrics", 3: "seq", 4: "uuid", 5: "body"}


def _varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``pos``."""
    start = pos
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError(
                f"truncated protobuf at byte {pos}: varint starting at byte {start} is unfinished"
            )
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            if result > _MAX_U64:
                raise DecodeError(f"varint at byte {start} exceeds 64 bits")
            return result, pos
        shift += 7
        if shift >= 70:
            raise DecodeError(f"varint at byte {start} is longer than 10 bytes")


def _walk_fields(
    buf: bytes | memoryview, pos: int, end: int
) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(field, wire_type, a, b)`` for each field in ``buf[pos:end]``.

    Varint: ``a`` is the value. Length-delimited and fixed: ``a:b`` is the payload slice.
    Positions are absolute, so error messages point into the whole buffer.
    """
    while pos < end:
        tag_pos = pos
        b0 = buf[pos]
        if b0 < 0x80:  # one-byte tag: every Sparkplug field
            tag = b0
            pos += 1
        else:
            tag, pos = _varint(buf, pos, end)
        field = tag >> 3
        wire = tag & 7
        if field == 0:
            raise DecodeError(f"invalid field number 0 at byte {tag_pos}")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, 0, value, -1
        elif wire == 2:
            b0 = buf[pos] if pos < end else 0x80
            if b0 < 0x80:
                length = b0
                pos += 1
            else:
                length, pos = _varint(buf, pos, end)
            stop = pos + length
            if stop > end:
                raise DecodeError(
                    f"truncated protobuf at byte {end}: field {field} at byte {tag_pos} "
                    f"declares {length} bytes"
                )
            yield field, 2, pos, stop
            pos = stop
        elif wire == 1 or wire == 5:
            stop = pos + (8 if wire == 1 else 4)
            if stop > end:
                raise DecodeError(
                    f"truncated protobuf at byte {end}: fixed-size field {field} at byte {tag_pos}"
                )
            yield field, wire, pos, stop
            pos = stop
        elif wire in (3, 4):
            hint = " (the payload looks like JSON, e.g. a STATE message)" if buf[0] == 0x7B else ""
            raise DecodeError(
                f"unsupported wire type {wire} (group) for field {field} at byte {tag_pos}{hint}"
            )
        else:
            raise DecodeError(f"invalid wire type {wire} for field {field} at byte {tag_pos}")


# Submessages that upb parses in the bytes view: message -> {field: message}.
_SUBMESSAGES: dict[str, dict[int, str]] = {
    "MetricHead": {},
    "PropertySet": {2: "PropertyValue"},
    "PropertyValue": {9: "PropertySet", 10: "PropertySetList"},
    "PropertySetList": {1: "PropertySet"},
}


_MAX_DEPTH = 100  # upb's default nesting limit; beyond it upb refuses the message


def _locate_wire_error(
    buf: bytes | memoryview, start: int, end: int, message: str, fallback: str, depth: int = 0
) -> str:
    """Why upb rejected ``buf[start:end]`` as ``message``, with a byte position (error path only)."""
    if depth >= _MAX_DEPTH:
        return f"messages nested more than {_MAX_DEPTH} levels deep at byte {start}"
    try:
        children = _SUBMESSAGES[message]
        for field, wire, a, b in _walk_fields(buf, start, end):
            child = children.get(field)
            if child is not None and wire == 2:
                detail = _locate_wire_error(buf, a, b, child, "", depth + 1)
                if detail:
                    return detail
    except DecodeError as exc:
        return str(exc)
    if not fallback:
        return ""
    return f"malformed protobuf between bytes {start} and {end} ({fallback})"


def _walk_payload(buf: bytes | memoryview) -> Iterator[tuple[int, int, int, int]]:
    """Top-level Payload fields, with the wire type of known fields checked."""
    for field, wire, a, b in _walk_fields(buf, 0, len(buf)):
        expected = _PAYLOAD_WIRE.get(field)
        if expected is not None and wire != expected:
            raise DecodeError(
                f"payload field {field} ({_PAYLOAD_FIELD_NAMES[field]}) has wire type {wire}, "
                f"expected {expected}"
            )
        yield field, wire, a, b


def _as_buffer(data: Buffer) -> bytes | memoryview:
    if isinstance(data, bytes):
        return data
    return memoryview(data).cast("B")  # indexable as ints, sliceable without copies


def read_header(data: Buffer) -> PayloadHeader:
    """timestamp / seq / uuid of a payload; metrics are skipped, not parsed."""
    buf = _as_buffer(data)
    timestamp = seq = None
    uuid = None
    for field, _wire, a, b in _walk_payload(buf):
        if field == 1:
            timestamp = a
        elif field == 3:
            seq = a
        elif field == 4:
            try:
                uuid = bytes(buf[a:b]).decode()
            except UnicodeDecodeError:
                raise DecodeError(f"payload uuid at byte {a} is not valid UTF-8") from None
    return PayloadHeader(timestamp=timestamp, seq=seq, uuid=uuid)


def iter_metrics(data: Buffer) -> Iterator[RawMetric]:
    """Stream the metrics of a Payload, one small parse per metric.

    Validates the framing of the whole payload and of each metric, the metric's name (UTF-8)
    and datatype (a :class:`DataType` code; absent means ``Unknown``). The value, metadata and
    property set are not interpreted here: pass ``properties`` to :func:`decode_properties`.
    """
    buf = _as_buffer(data)
    parse = _MetricHead.FromString
    index = 0
    for field, _wire, start, end in _walk_payload(buf):
        if field != 2:
            continue
        try:
            m = parse(buf[start:end])
        except _PbDecodeError as exc:
            detail = _locate_wire_error(buf, start, end, "MetricHead", str(exc))
            raise DecodeError(f"metric #{index} at byte {start}: {detail}") from None
        name = None
        if m.HasField("name"):
            try:
                name = m.name.decode()
            except UnicodeDecodeError as exc:
                raise DecodeError(
                    f"metric #{index} at byte {start}: name is not valid UTF-8 "
                    f"({exc.reason} at byte {exc.start} of the name: {m.name[:80]!r})"
                ) from None
        datatype = m.datatype
        if datatype not in _DATATYPE_CODES:
            raise DecodeError(f"metric #{index} {name!r}: unknown datatype {datatype}")
        yield RawMetric(
            index,
            name,
            m.alias if m.HasField("alias") else None,
            datatype,
            m.timestamp if m.HasField("timestamp") else None,
            m.is_historical,
            m.is_transient,
            m.is_null,
            m.properties,
        )
        index += 1


# --------------------------------------------------------------------------------------------
# Property values


class _BadValue(Exception):
    """Raised by a value converter; the caller adds where it happened."""


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise _BadValue(f"string value is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _signed(bits: int) -> Callable[[int], int]:
    """Converter for a signed int of ``bits`` from its unsigned wire form.

    Accepts the declared width's two's complement (Int8 -5 as 251) and its sign extension to
    32 or 64 bits (4294967291, as Tahu/Ignition send it); anything else is out of range.
    """
    mask = (1 << bits) - 1
    sign = 1 << (bits - 1)
    name = f"Int{bits}"

    def convert(v: int) -> int:
        low = v & mask
        value = low - (1 << bits) if low & sign else low
        if v == low or (value < 0 and (v == value + (1 << 32) or v == value + (1 << 64))):
            return value
        raise _BadValue(f"wire value {v} is out of range for {name}")

    return convert


def _unsigned(bits: int) -> Callable[[int], int]:
    limit = 1 << bits
    name = f"UInt{bits}"

    def convert(v: int) -> int:
        if v < limit:
            return v
        raise _BadValue(f"wire value {v} is out of range for {name}")

    return convert


_INT_FIELDS = frozenset({"int_value", "long_value"})
# declared type -> (value fields accepted, converter or None for identity)
_RULES: dict[int, tuple[frozenset[str], object]] = {
    DataType.Int8: (_INT_FIELDS, _signed(8)),
    DataType.Int16: (_INT_FIELDS, _signed(16)),
    DataType.Int32: (_INT_FIELDS, _signed(32)),
    DataType.Int64: (_INT_FIELDS, _signed(64)),
    DataType.UInt8: (_INT_FIELDS, _unsigned(8)),
    DataType.UInt16: (_INT_FIELDS, _unsigned(16)),
    DataType.UInt32: (_INT_FIELDS, _unsigned(32)),
    DataType.UInt64: (_INT_FIELDS, None),
    DataType.DateTime: (_INT_FIELDS, None),
    DataType.Float: (frozenset({"float_value"}), None),
    DataType.Double: (frozenset({"double_value"}), None),
    DataType.Boolean: (frozenset({"boolean_value"}), None),
    DataType.String: (frozenset({"string_value"}), _utf8),
    DataType.Text: (frozenset({"string_value"}), _utf8),
    DataType.UUID: (frozenset({"string_value"}), _utf8),
    DataType.PropertySet: (frozenset({"propertyset_value"}), None),
    DataType.PropertySetList: (frozenset({"propertysets_value"}), None),
}
_RULES = {int(k): v for k, v in _RULES.items()}  # plain-int keys: faster lookups


def _context(where: str, path: list[str]) -> str:
    parts = [where] if where else []
    if path:
        parts.append("property " + " > ".join(path))
    return ": ".join(parts + [""]) if parts else ""


def _type_problem(t: int) -> str:
    if t in _TYPE_NAMES:
        return f"unsupported property type {_TYPE_NAMES[t]} ({t})"
    return f"unknown property type {t}"


def _decode_set(ps: ProtoMessage, where: str, path: list[str], nested: bool) -> dict:
    """Decode one parsed PropertySet view.

    Top level: ``{key: (type, value)}``. Nested: ``{key: {"type": name, "value": value}}``.
    """
    keys = ps.keys
    values = ps.values
    if len(keys) != len(values):
        raise DecodeError(
            f"{_context(where, path)}property set: {len(keys)} keys but {len(values)} values"
        )
    out: dict = {}
    rules = _RULES
    for i, raw_key in enumerate(keys):
        try:
            key = raw_key.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"{_context(where, path)}property set: key #{i} is not valid UTF-8 "
                f"({exc.reason} at byte {exc.start}: {raw_key[:80]!r})"
            ) from None
        if key in out:
            raise DecodeError(f"{_context(where, path)}property set: duplicate key {key!r}")
        v = values[i]
        t = v.type
        rule = rules.get(t)
        if rule is None:
            raise DecodeError(f"{_context(where, [*path, repr(key)])}{_type_problem(t)}")
        if v.is_null:
            value = None
        else:
            field = v.WhichOneof("value")
            if field not in rule[0]:
                raise DecodeError(
                    f"{_context(where, [*path, repr(key)])}declared {_TYPE_NAMES[t]} but "
                    f"{'no value is set' if field is None else field + ' is set'} "
                    f"(and is_null is false)"
                )
            value = getattr(v, field)
            if t >= 20:  # PropertySet / PropertySetList: recurse with the key path
                value = _decode_nested(t, value, where, [*path, repr(key)])
            elif rule[1] is not None:
                try:
                    value = rule[1](value)  # type: ignore[operator]
                except _BadValue as exc:
                    raise DecodeError(f"{_context(where, [*path, repr(key)])}{exc}") from None
        out[key] = {"type": _TYPE_NAMES[t], "value": value} if nested else (t, value)
    return out


def _decode_nested(t: int, value: ProtoMessage, where: str, path: list[str]) -> object:
    if t == DataType.PropertySet:
        return _decode_set(value, where, path, nested=True)
    return [
        _decode_set(ps, where, [*path[:-1], f"{path[-1]}[{i}]"], nested=True)
        for i, ps in enumerate(value.propertyset)
    ]


def decode_properties(raw: bytes, *, where: str = "") -> dict[str, tuple[int, object]]:
    """``{key: (sparkplug type code, python value)}`` of a PropertySet's wire bytes.

    Ints are decoded by their declared type (signed from two's complement; either int field is
    read), Float/Double -> float, Boolean -> bool, String/Text/UUID -> str, DateTime -> int ms.
    PropertySet -> ``{key: {"type": "<TypeName>", "value": v}}`` (recursively) and
    PropertySetList -> a list of those; ``is_null`` -> ``None`` with the type kept.
    ``where`` (e.g. ``RawMetric.where``) prefixes every error message.
    """
    try:
        ps = _PropertySetView.FromString(raw)
    except _PbDecodeError as exc:
        detail = _locate_wire_error(raw, 0, len(raw), "PropertySet", str(exc))
        raise DecodeError(f"{_context(where, [])}property set: {detail}") from None
    return _decode_set(ps, where, [], nested=False)


# --------------------------------------------------------------------------------------------
# JSON mapping and encoding (tests, simulator, benchmarks)


def payload_from_json(text: str | bytes) -> bytes:
    """Binary payload from protobuf's JSON mapping of a ``Payload`` (as in fixtures/).

    ``bytes`` must be UTF-8 (json_format's own rule; it would raise ``UnicodeDecodeError``).
    """
    if not isinstance(text, str):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                f"not valid UTF-8 JSON at byte {exc.start} ({exc.reason}: "
                f"{exc.object[exc.start:exc.start + 8]!r})"
            ) from None
    try:
        message = json_format.Parse(text, pb.Payload())
    except json_format.ParseError as exc:
        raise DecodeError(f"not a Sparkplug Payload in protobuf JSON: {exc}") from None
    return message.SerializeToString()


@dataclass
class MetricSpec:
    """A metric to encode; ``properties`` has the shape :func:`decode_properties` returns."""

    name: str | None
    datatype: int
    alias: int | None = None
    value: object = None  # None -> is_null
    properties: dict[str, tuple[int, object]] | None = None
    timestamp: int | None = None


_SIGNED_BITS = {1: 8, 2: 16, 3: 32, 4: 64}
_UNSIGNED_BITS = {5: 8, 6: 16, 7: 32, 8: 64}
_ARRAY_TYPES = frozenset(range(22, 35))


def _set_int(msg: ProtoMessage, t: int, value: int, what: str) -> None:
    """Store an int of declared type ``t`` in int_value / long_value as Sparkplug does."""
    if t in _SIGNED_BITS:
        bits = _SIGNED_BITS[t]
        if not -(1 << (bits - 1)) <= value < (1 << (bits - 1)):
            raise ValueError(f"{what}: {value} is out of range for {_TYPE_NAMES[t]}")
        # two's complement, sign-extended to the wire field's width
        if bits == 64:
            msg.long_value = value & _MAX_U64
        else:
            msg.int_value = value & 0xFFFFFFFF
        return
    bits = _UNSIGNED_BITS.get(t, 64)  # DateTime: 64-bit ms
    if not 0 <= value < (1 << bits):
        raise ValueError(f"{what}: {value} is out of range for {_TYPE_NAMES[t]}")
    if bits == 64:
        msg.long_value = value
    else:
        msg.int_value = value


def _set_scalar(msg: ProtoMessage, t: int, value: object, what: str) -> bool:
    """Set a basic-type value (shared by metrics and properties); False if ``t`` is not basic."""
    if t in _SIGNED_BITS or t in _UNSIGNED_BITS or t == DataType.DateTime:
        _set_int(msg, t, value, what)  # type: ignore[arg-type]
    elif t == DataType.Float:
        msg.float_value = value
    elif t == DataType.Double:
        msg.double_value = value
    elif t == DataType.Boolean:
        msg.boolean_value = value
    elif t in (DataType.String, DataType.Text, DataType.UUID):
        msg.string_value = value
    else:
        return False
    return True


def _type_code(t: object) -> int:
    return DataType[t] if isinstance(t, str) else int(t)  # type: ignore[call-overload]


def _fill_property_value(pv: ProtoMessage, t: int, value: object, here: str) -> None:
    pv.type = t
    if value is None:
        pv.is_null = True
    elif t == DataType.PropertySet and isinstance(value, dict):
        pv.propertyset_value.SetInParent()  # an empty set stays present
        _fill_property_set(pv.propertyset_value, value, here)
    elif t == DataType.PropertySetList and isinstance(value, list):
        pv.propertysets_value.SetInParent()
        for item in value:
            _fill_property_set(pv.propertysets_value.propertyset.add(), item, here)
    elif not _set_scalar(pv, t, value, here):
        raise ValueError(f"{here}: type {t} cannot be carried by a property")


def _fill_property_set(ps: ProtoMessage, props: dict, what: str) -> None:
    """Nested form: ``{key: {"type": "<TypeName>" or code, "value": v}}``."""
    for key, entry in props.items():
        ps.keys.append(key)
        here = f"{what} > {key!r}"
        _fill_property_value(ps.values.add(), _type_code(entry["type"]), entry["value"], here)


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_delimited(tag: bytes, body: bytes) -> bytes:
    return tag + _encode_varint(len(body)) + body


def _property_pair(key: str, t: int, value: object) -> tuple[bytes, bytes]:
    """The keys entry and the values entry (both with tag + length) of one property."""
    pv = pb.Payload.PropertyValue()
    _fill_property_value(pv, t, value, f"property {key!r}")
    return _length_delimited(b"\x0a", key.encode()), _length_delimited(b"\x12", pv.SerializeToString())


def _property_set_field(props: dict, cache: dict) -> bytes:
    """Field 9 of a Metric (tag + length + PropertySet) from ``{key: (type, value)}``.

    Written as upb would (all keys, then all values); each (key, type, value) is encoded once
    per birth and cached, since production births repeat most of them across metrics.
    """
    keys: list[bytes] = []
    values: list[bytes] = []
    for key, (t, value) in props.items():
        # float.hex keeps -0.0 and 0.0 apart (they compare equal but encode differently)
        cacheable: tuple | None = (key, t, value.hex() if type(value) is float else value)
        try:
            pair = cache.get(cacheable)
        except TypeError:  # nested set or list: not hashable, not cached
            cacheable, pair = None, None
        if pair is None:
            pair = _property_pair(key, t, value)
            if cacheable is not None:
                if len(cache) > 65536:
                    cache.clear()
                cache[cacheable] = pair
        keys.append(pair[0])
        values.append(pair[1])
    return _length_delimited(b"\x4a", b"".join(keys) + b"".join(values))


def _set_metric_value(m: ProtoMessage, t: int, value: object, what: str) -> None:
    if value is None:
        m.is_null = True
    elif _set_scalar(m, t, value, what):
        pass
    elif t in (DataType.Bytes, DataType.File) or t in _ARRAY_TYPES:
        m.bytes_value = value
    elif t == DataType.DataSet:
        m.dataset_value.CopyFrom(value)
    elif t == DataType.Template:
        m.template_value.CopyFrom(value)
    else:
        raise ValueError(f"{what}: a metric of type {t} cannot carry a value")


def encode_birth(metrics: Iterable[MetricSpec], *, timestamp: int, seq: int = 0) -> bytes:
    """A binary BIRTH payload. Inverse of :func:`iter_metrics` + :func:`decode_properties`."""
    parts = [pb.Payload(timestamp=timestamp).SerializeToString()]
    cache: dict = {}
    Metric = pb.Payload.Metric
    for i, spec in enumerate(metrics):
        m = Metric(datatype=spec.datatype)
        if spec.name is not None:
            m.name = spec.name
        if spec.alias is not None:
            m.alias = spec.alias
        if spec.timestamp is not None:
            m.timestamp = spec.timestamp
        _set_metric_value(m, spec.datatype, spec.value, f"metric #{i} {spec.name!r}")
        body = m.SerializeToString()
        if spec.properties is not None:
            try:
                body += _property_set_field(spec.properties, cache)
            except ValueError as exc:
                raise ValueError(f"metric #{i} {spec.name!r}: {exc}") from None
        parts.append(b"\x12" + _encode_varint(len(body)) + body)
    parts.append(pb.Payload(seq=seq).SerializeToString())
    return b"".join(parts)
