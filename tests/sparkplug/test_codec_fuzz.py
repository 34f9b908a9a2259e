"""Bounded property-based fuzz of the Sparkplug B decoder (sparkplug/codec.py): TC-40, CT-01.

The decoder's contract: every malformed input raises ``DecodeError`` saying where it broke, never
another exception type and never a hang. Each fuzz test drives the decode the way ingest does
(``read_header``, then ``decode_properties`` of every metric of ``iter_metrics``) on

* random bytes;
* mutations of valid births built with ``encode_birth`` (bit flips, truncations, inserted, deleted
  and copied bytes, corrupted varints, changed length fields);
* structurally valid protobuf with hostile field values (NUL, invalid UTF-8, 2^64-1 aliases and
  timestamps, unknown datatypes, keys/values count mismatch, deep nesting, very long strings),
  built from a mirror of ``sparkplug_b_pb2`` in which every string field is ``bytes``, since the
  generated classes refuse invalid UTF-8;
* ``payload_from_json`` with random text, random bytes (not always UTF-8) and Payload-shaped JSON.

The round trip checks that ``encode_birth`` then decode gives back what was encoded.

The budget is fixed and small so the file fits the unit stage of ``make test``; runs are
derandomized (reproducible in CI) and use no example database. ``SPARKPLUG_FUZZ_SCALE=20``
multiplies every budget for a longer local hunt.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sparkplug import sparkplug_b_pb2 as pb
from sparkplug.codec import (
    DecodeError,
    MetricSpec,
    decode_properties,
    encode_birth,
    iter_metrics,
    payload_from_json,
    read_header,
)
from sparkplug.datatypes import DataType
from sparkplug.topic import TopicError, parse_topic

pytestmark = pytest.mark.unit  # pure: no database, broker or Redis (the `unit` stage of make test)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PROD_BIN = (FIXTURES / "dbirth_portugal_cement.pb").read_bytes()
PROD_JSON = (FIXTURES / "dbirth_portugal_cement.pb.json").read_bytes()

SCALE = max(1, int(os.environ.get("SPARKPLUG_FUZZ_SCALE", "1")))
U32 = 2**32 - 1
U64 = 2**64 - 1


def fuzz_settings(examples: int, *health: HealthCheck) -> Callable:
    return settings(max_examples=examples * SCALE, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(health))


def drive(data: bytes | bytearray | memoryview) -> object:
    """Decode like ingest does; a ``DecodeError`` is an answer, any other exception fails the test.

    Returns what was decoded, or the error message.
    """
    try:
        header = read_header(data)
        decoded = [(m, decode_properties(m.properties, where=m.where)) for m in iter_metrics(data)]
    except DecodeError as exc:
        assert str(exc), "a DecodeError must say where it broke"
        event(f"DecodeError: {_shape(str(exc))}")  # --hypothesis-show-statistics shows what was reached
        return str(exc)
    event(f"decoded {'with' if decoded else 'no'} metrics")
    return header, decoded


def _shape(message: str) -> str:
    """The kind of a decode error: its last clause without names, numbers and quoted text."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|\(.*\)|\d+", "_", message).rsplit(": ", 1)[-1][:60]


def drive_both(data: bytes) -> None:
    """As bytes and as the bytearray ingest reads a frame into (ingest/ledger.py ``read_payload``,
    walked through a memoryview): both decode alike."""
    assert repr(drive(bytearray(data))) == repr(drive(data))


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# (a) random bytes


@fuzz_settings(300)
@given(st.binary(max_size=512))
def test_random_bytes_only_raise_decode_error(data):
    """TC-40: random payloads decode or raise DecodeError, nothing else."""
    drive_both(data)


@fuzz_settings(100)
@given(st.lists(st.sampled_from([b"\x0a", b"\x12", b"\x4a", b"\x08", b"\x20", b"\x80", b"\xff", b"\x00",
                                 b"\x01", b"\x7f", b"\x0b", b"\x0c", b"\x0d", b"\x0e"]), max_size=200)
       .map(b"".join))
def test_tag_soup_only_raises_decode_error(data):
    """TC-40: bytes made of Sparkplug tags and varint bytes (random bytes rarely nest that deep)."""
    drive_both(data)
    drive_both(b"\x12" + encode_varint(len(data)) + data)  # and the same as the body of one metric


# ---------------------------------------------------------------------------------------------
# Valid births (round trip and mutation seeds)


_F32 = struct.Struct("<f")
F32_MAX = 3.4028234663852886e38
SIGNED = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}
UNSIGNED = {DataType.UInt8: 8, DataType.UInt16: 16, DataType.UInt32: 32, DataType.UInt64: 64, DataType.DateTime: 64}
BASIC_TYPES = [*SIGNED, *UNSIGNED, DataType.Float, DataType.Double, DataType.Boolean, DataType.String,
               DataType.Text, DataType.UUID]


def basic_value(t: int) -> st.SearchStrategy:
    if t in SIGNED:
        bits = SIGNED[t]
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if t in UNSIGNED:
        return st.integers(0, 2 ** UNSIGNED[t] - 1)
    if t == DataType.Float:  # float32 values and doubles that round to a finite float32
        return st.floats(width=32) | st.floats(-F32_MAX, F32_MAX)
    if t == DataType.Double:
        return st.floats()
    if t == DataType.Boolean:
        return st.booleans()
    return st.text(max_size=20)


def typed(types: list[int], nested: st.SearchStrategy | None) -> st.SearchStrategy:
    """(type, value-or-None) for the given types, nested sets drawn from ``nested``."""
    options = [st.tuples(st.just(int(t)), st.none() | basic_value(t)) for t in types]
    if nested is not None:
        options.append(st.tuples(st.just(int(DataType.PropertySet)), st.none() | nested))
        options.append(st.tuples(st.just(int(DataType.PropertySetList)), st.none() | st.lists(nested, max_size=2)))
    return st.one_of(options)


def _nested_form(entries: dict) -> dict:
    return {k: {"type": DataType(t).name, "value": v} for k, (t, v) in entries.items()}


nested_sets = st.recursive(
    st.dictionaries(st.text(max_size=6), typed(BASIC_TYPES, None), max_size=3).map(_nested_form),
    lambda inner: st.dictionaries(st.text(max_size=6), typed(BASIC_TYPES, inner), max_size=3).map(_nested_form),
    max_leaves=6,
)
property_dicts = st.dictionaries(st.text(max_size=12), typed(BASIC_TYPES, nested_sets), max_size=6)

ARRAYS_AND_BYTES = [DataType.Bytes, DataType.File, *range(DataType.Int8Array, DataType.DateTimeArray + 1)]


def metric_value(t: int) -> st.SearchStrategy:
    if t in BASIC_TYPES:
        return st.none() | basic_value(t)
    if t in ARRAYS_AND_BYTES:
        return st.none() | st.binary(max_size=16)
    if t == DataType.DataSet:
        return st.none() | st.just(pb.Payload.DataSet(num_of_columns=1, columns=["c"], types=[3]))
    if t == DataType.Template:
        return st.none() | st.just(pb.Payload.Template(version="1", is_definition=True))
    return st.none()  # Unknown, PropertySet, PropertySetList carry no metric value


@st.composite
def metric_specs(draw: Callable) -> MetricSpec:
    t = int(draw(st.sampled_from(list(DataType))))
    return MetricSpec(
        name=draw(st.none() | st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)),
        datatype=t,
        alias=draw(st.none() | st.integers(0, U64)),
        value=draw(metric_value(t)),
        properties=draw(st.none() | property_dicts),
        timestamp=draw(st.none() | st.integers(0, U64)),
    )


# ---------------------------------------------------------------------------------------------
# (b) mutations of valid births

PV = pb.Payload.PropertyValue


def _seed_birth() -> bytes:
    """A birth with every property type, nesting, nulls, extreme ints and a nameless metric."""
    nested = {"lo": {"type": "Int16", "value": -3}, "f": {"type": "Float", "value": 0.5},
              "l": {"type": "PropertySetList", "value": [{}, {"s": {"type": "String", "value": "x"}}]}}
    props = {
        "Quality": (DataType.Int32, -2147483132), "engUnit": (DataType.String, "°C"),
        "engHigh": (DataType.Double, 1e300), "f": (DataType.Float, -1.5), "b": (DataType.Boolean, True),
        "u64": (DataType.UInt64, 2**64 - 1), "i64": (DataType.Int64, -(2**63)), "dt": (DataType.DateTime, 0),
        "u": (DataType.UUID, "0b5e8d1c"), "t": (DataType.Text, "a\nb"), "n": (DataType.Int8, None),
        "ps": (DataType.PropertySet, nested), "psl": (DataType.PropertySetList, [nested, {}]),
    }
    return encode_birth([
        MetricSpec("Plant/Area/Tag", DataType.Int32, alias=0, value=-5, properties=props, timestamp=1),
        MetricSpec(None, DataType.Bytes, alias=2**64 - 1, value=b"\x00\xff"),
        MetricSpec("s", DataType.String, value="Outão", properties={"k": (DataType.UInt8, 255)}),
        MetricSpec("d", DataType.DataSet, value=pb.Payload.DataSet(num_of_columns=1, columns=["c"], types=[3])),
    ], timestamp=1756392554816, seq=1)


SEEDS = [PROD_BIN, _seed_birth()]


def wire_map(data: bytes, start: int = 0, end: int | None = None, depth: int = 0,
             varints: list | None = None, lengths: list | None = None) -> tuple[list, list]:
    """Best-effort walk (independent of the codec): ``varints`` are (pos, size) of every tag and
    varint, ``lengths`` (pos, size, value) of every length prefix, nested messages included."""
    varints = [] if varints is None else varints
    lengths = [] if lengths is None else lengths
    end = len(data) if end is None else end
    pos = start

    def varint(p: int) -> tuple[int, int] | None:
        value = shift = 0
        while p < end and shift < 70:
            b = data[p]
            value |= (b & 0x7F) << shift
            p += 1
            if b < 0x80:
                return value, p
            shift += 7
        return None

    while pos < end:
        tag = varint(pos)
        if tag is None:
            break
        varints.append((pos, tag[1] - pos))
        wire, pos = tag[0] & 7, tag[1]
        if wire == 0:
            v = varint(pos)
            if v is None:
                break
            varints.append((pos, v[1] - pos))
            pos = v[1]
        elif wire == 2:
            n = varint(pos)
            if n is None or n[1] + n[0] > end:
                break
            varints.append((pos, n[1] - pos))
            lengths.append((pos, n[1] - pos, n[0]))
            if depth < 12:
                wire_map(data, n[1], n[1] + n[0], depth + 1, varints, lengths)
            pos = n[1] + n[0]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            break
    return varints, lengths


BAD_VARINTS = [
    b"\xff" * 10 + b"\x01",  # longer than 10 bytes
    b"\xff" * 9 + b"\x7f",  # more than 64 bits
    b"\xff" * 9 + b"\x01",  # 2^64 - 1
    b"\x80" * 9 + b"\x00",  # zero, padded (non-canonical but legal)
    b"\x80",  # unfinished
    b"",
]
OPS = ("flip", "truncate", "insert", "delete", "set", "copy", "length", "varint", "grow")


def mutate(data: bytes, ops: list[tuple[str, int, int, bytes]]) -> bytes:
    buf = bytearray(data)
    for op, a, b, blob in ops:
        n = len(buf)
        p = a % (n + 1)
        if op == "flip" and n:
            buf[a % n] ^= 1 << (b % 8)
        elif op == "truncate":
            del buf[p:]
        elif op == "insert":
            buf[p:p] = blob
        elif op == "delete":
            del buf[p:p + 1 + b % 16]
        elif op == "set" and n:
            buf[a % n] = b % 256
        elif op == "copy" and n:  # duplicate a slice elsewhere: repeated fields, duplicate keys
            q = b % n
            buf[p:p] = buf[q:q + 1 + len(blob) * 8]
        elif op in ("length", "grow"):
            _, lengths = wire_map(bytes(buf))
            if lengths:
                pos, size, value = lengths[a % len(lengths)]
                if op == "grow":
                    new = value + 1 + b % 4 if b % 2 else max(0, value - 1 - b % 4)
                else:
                    new = [0, 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1, n, b, value * 2][b % 9]
                buf[pos:pos + size] = encode_varint(new)
        elif op == "varint":
            varints, _ = wire_map(bytes(buf))
            if varints:
                pos, size = varints[a % len(varints)]
                replacement = BAD_VARINTS[b % len(BAD_VARINTS)] if blob[:1] != b"\x00" else encode_varint(
                    int.from_bytes(blob[1:9].ljust(8, b"\xff"), "little"))
                buf[pos:pos + size] = replacement
    return bytes(buf)


mutations = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 2**20), st.integers(0, 2**20), st.binary(max_size=12)),
    min_size=1, max_size=5,
)


seeds = st.one_of(st.sampled_from(SEEDS), st.lists(metric_specs(), min_size=1, max_size=3).map(
    lambda specs: encode_birth(specs, timestamp=1)))


@fuzz_settings(150)
@given(seeds, mutations)
def test_mutated_births_only_raise_decode_error(seed, ops):
    """TC-40: bit flips, truncations, insertions, varint and length corruptions of valid births."""
    drive_both(mutate(seed, ops))


def _fields(data: bytes) -> list[tuple[bytes, int, bytes]] | None:
    """``(tag bytes, wire type, content)`` of each field, or None if ``data`` is not a clean message.
    ``content`` is the body of a length-delimited field, else the raw value bytes."""
    out = []
    pos, end = 0, len(data)

    def skip_varint(p: int) -> int | None:
        for q in range(p, min(p + 10, end)):
            if data[q] < 0x80:
                return q + 1
        return None

    while pos < end:
        after_tag = skip_varint(pos)
        if after_tag is None:
            return None
        tag = sum((b & 0x7F) << (7 * i) for i, b in enumerate(data[pos:after_tag]))
        wire, tag_bytes, pos = tag & 7, data[pos:after_tag], after_tag
        if tag >> 3 == 0:
            return None
        if wire == 0:
            stop = skip_varint(pos)
            if stop is None:
                return None
            out.append((tag_bytes, 0, data[pos:stop]))
        elif wire == 2:
            body_at = skip_varint(pos)
            if body_at is None:
                return None
            stop = body_at + sum((b & 0x7F) << (7 * i) for i, b in enumerate(data[pos:body_at]))
            if stop > end:
                return None
            out.append((tag_bytes, 2, data[body_at:stop]))
        elif wire in (1, 5):
            stop = pos + (8 if wire == 1 else 4)
            if stop > end:
                return None
            out.append((tag_bytes, wire, data[pos:stop]))
        else:
            return None
        pos = stop
    return out


def mutate_inside(data: bytes, target: int, ops: list, counter: list[int], depth: int = 0) -> bytes:
    """Apply ``ops`` to the body of the ``target``-th length-delimited field (pre-order, nested ones
    included) and re-frame every enclosing message, so the damage gets past the outer framing."""
    fields = _fields(data) if depth < 12 else None
    if fields is None:
        return data
    parts = []
    for tag, wire, content in fields:
        if wire == 2:
            index = counter[0]
            counter[0] += 1
            body = mutate(content, ops) if index == target else mutate_inside(content, target, ops, counter, depth + 1)
            parts.append(tag + encode_varint(len(body)) + body)
        else:
            parts.append(tag + content)
    return b"".join(parts)


@fuzz_settings(200)
@given(seeds, st.integers(0, 2**16), mutations)
def test_mutated_metrics_and_properties_only_raise_decode_error(seed, target, ops):
    """TC-40: the same mutations inside one metric, property set or value, lengths fixed up around it."""
    count = [0]
    mutate_inside(seed, -1, [], count)
    drive_both(mutate_inside(seed, target % max(1, count[0]), ops, [0]))


# ---------------------------------------------------------------------------------------------
# (c) structurally valid protobuf with hostile values
#
# A mirror of sparkplug_b_pb2 in which every string is bytes: same field numbers and wire types,
# so what it serialises is what a publisher could send, invalid UTF-8 included.


def _raw_payload_class() -> Any:
    T = descriptor_pb2.FieldDescriptorProto
    src = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(src)
    old, new = f".{src.package}.", ".tests.sparkplug_raw."
    src.name, src.package = "tests_sparkplug_raw.proto", "tests.sparkplug_raw"

    def strings_to_bytes(msg: descriptor_pb2.DescriptorProto) -> None:
        for field in msg.field:
            if field.type == T.TYPE_STRING:
                field.type = T.TYPE_BYTES
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name[len(old):]
        for nested in msg.nested_type:
            strings_to_bytes(nested)

    for msg in src.message_type:
        strings_to_bytes(msg)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(src)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tests.sparkplug_raw.Payload"))


RawPayload = _raw_payload_class()

EDGE_INTS = [0, 1, 127, 128, 255, 256, 2**15, 2**16, 2**31 - 1, 2**31, U32, 2**32, 2**63 - 1, 2**63, U64]
INVALID_UTF8 = [
    b"\xff", b"\xfe\xff", b"\xc3(", b"\xc0\x80",  # overlong NUL (modified UTF-8)
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80",
]


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy, one_in: int = 8) -> st.SearchStrategy:
    """``rare`` about once in ``one_in`` draws, so most examples get past the first check."""
    return st.tuples(st.integers(1, one_in), common, rare).map(lambda t: t[2] if t[0] == 1 else t[1])


u32 = st.one_of(st.sampled_from([v for v in EDGE_INTS if v <= U32]), st.integers(0, U32))
u64 = st.one_of(st.sampled_from(EDGE_INTS), st.integers(0, U64))
datatype_codes = mostly(st.sampled_from([int(t) for t in DataType]), u32)
text_with_nul = st.lists(st.sampled_from(["\x00", "a", "/", "é", "\uffff", "\U0001f600", " "]), max_size=20).map(
    "".join)
valid_utf8 = st.one_of(
    st.text(max_size=30).map(str.encode),
    text_with_nul.map(str.encode),
    st.integers(1_000, 200_000).map(lambda n: b"x" * n),  # very long
)
invalid_utf8 = st.one_of(
    st.binary(max_size=30),
    st.tuples(text_with_nul, st.sampled_from(INVALID_UTF8), st.text(max_size=5)).map(
        lambda t: t[0].encode() + t[1] + t[2].encode()),
)
hostile_bytes = st.one_of(valid_utf8, invalid_utf8)  # for bytes the decoder does not read
hostile_strings = mostly(valid_utf8, invalid_utf8)  # names, keys, uuid, string values: mostly UTF-8
hostile_keys = st.one_of(st.sampled_from([b"Quality", b"engUnit", b"", b"\x00", b"k\x00", b"\xff"]), hostile_strings)


def _set_value(msg: Any, field: str | None, draw: Callable, depth: int) -> None:
    if field is None:
        return
    if field == "int_value":
        msg.int_value = draw(u32)
    elif field == "long_value":
        msg.long_value = draw(u64)
    elif field == "float_value":
        msg.float_value = draw(st.floats(width=32))
    elif field == "double_value":
        msg.double_value = draw(st.floats())
    elif field == "boolean_value":
        msg.boolean_value = draw(st.booleans())
    elif field == "string_value":
        msg.string_value = draw(hostile_strings)
    elif field == "bytes_value":
        msg.bytes_value = draw(hostile_bytes)
    elif field == "propertyset_value":
        _fill_set(msg.propertyset_value, draw, depth + 1)
    elif field == "propertysets_value":
        msg.propertysets_value.SetInParent()
        for _ in range(draw(st.integers(0, 2))):
            _fill_set(msg.propertysets_value.propertyset.add(), draw, depth + 1)
    elif field == "extension_value":
        getattr(msg, field).SetInParent()
    elif field == "dataset_value":
        ds = msg.dataset_value
        ds.num_of_columns = draw(u64)
        ds.columns.extend(draw(st.lists(hostile_bytes, max_size=3)))
        ds.types.extend(draw(st.lists(u32, max_size=3)))
        row = ds.rows.add()
        for _ in range(draw(st.integers(0, 3))):
            _set_value(row.elements.add(), draw(st.sampled_from(["int_value", "string_value", "double_value"])),
                       draw, depth)
    elif field == "template_value":
        tpl = msg.template_value
        tpl.version = draw(hostile_bytes)
        tpl.template_ref = draw(hostile_bytes)
        if depth < 2:
            _fill_metric(tpl.metrics.add(), draw, depth + 1)


PROPERTY_FIELDS = ["int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value",
                   "propertyset_value", "propertysets_value", "extension_value", None]
TYPES_FOR = {  # declared types that the field may carry (so some values get past the type check)
    "int_value": [1, 2, 3, 5, 6, 7, 4, 8, 13], "long_value": [3, 4, 7, 8, 13], "float_value": [9],
    "double_value": [10], "boolean_value": [11], "string_value": [12, 14, 15], "propertyset_value": [20],
    "propertysets_value": [21], "extension_value": [0, 17, 22], None: [0, 12, 20],
}


def _fill_set(ps: Any, draw: Callable, depth: int) -> None:
    n = draw(st.integers(0, 4))
    n_keys = n + draw(st.sampled_from([0, 0, 0, 0, 1, -1])) if n else n
    for _ in range(max(0, n_keys)):
        ps.keys.append(draw(hostile_keys))
    for _ in range(n):
        pv = ps.values.add()
        fields = PROPERTY_FIELDS if depth < 3 else [f for f in PROPERTY_FIELDS if f not in
                                                    ("propertyset_value", "propertysets_value")]
        field = draw(st.sampled_from(fields))
        pv.type = draw(st.one_of(st.sampled_from(TYPES_FOR[field]), datatype_codes))
        if draw(st.integers(0, 5)) == 0:
            pv.is_null = True
        _set_value(pv, field, draw, depth)


METRIC_FIELDS = ["int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value",
                 "bytes_value", "dataset_value", "template_value", "extension_value", None]


def _fill_metric(m: Any, draw: Callable, depth: int = 0) -> None:
    if draw(st.booleans()):
        m.name = draw(hostile_strings)
    if draw(st.booleans()):
        m.alias = draw(u64)
    if draw(st.booleans()):
        m.timestamp = draw(u64)
    if draw(st.integers(0, 4)):
        m.datatype = draw(datatype_codes)
    m.is_historical, m.is_transient, m.is_null = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    if draw(st.integers(0, 3)) == 0:
        md = m.metadata
        md.content_type, md.md5, md.description = draw(st.tuples(hostile_bytes, hostile_bytes, hostile_bytes))
        md.size = draw(u64)
    _set_value(m, draw(st.sampled_from(METRIC_FIELDS)), draw, depth)
    if draw(st.integers(0, 4)):
        _fill_set(m.properties, draw, depth)


@st.composite
def hostile_payloads(draw: Callable) -> bytes:
    p = RawPayload()
    if draw(st.booleans()):
        p.timestamp = draw(u64)
    if draw(st.booleans()):
        p.seq = draw(u64)
    if draw(st.integers(0, 3)) == 0:
        p.uuid = draw(hostile_strings)
    if draw(st.integers(0, 5)) == 0:
        p.body = draw(hostile_bytes)
    for _ in range(draw(st.integers(0, 4))):
        _fill_metric(p.metrics.add(), draw)
    return p.SerializeToString()


@fuzz_settings(150, HealthCheck.too_slow)
@given(hostile_payloads())
def test_hostile_but_well_formed_protobuf_only_raises_decode_error(data):
    """TC-40: NUL, invalid UTF-8, 2^64-1 ints, unknown types, key/value mismatch, long strings.

    too_slow: an example builds up to four metrics, nested sets and 200 kB strings; the check
    times generation by the clock, which a busy shared CI box stretches.
    """
    drive_both(data)


def _ld(field: int, body: bytes) -> bytes:
    return encode_varint(field << 3 | 2) + encode_varint(len(body)) + body


def _nested(depth: int, kinds: list[bool], leaf: Any) -> bytes:
    """A property set nested ``depth`` levels through PropertySet (True) or PropertySetList (False),
    written at wire level (building thousands of levels of messages would be quadratic)."""
    ps = _ld(1, b"leaf") + _ld(2, leaf.SerializeToString())
    for i in range(depth):
        if kinds[i % len(kinds)]:
            value = b"\x08\x14" + _ld(9, ps)  # type 20, propertyset_value
        else:
            value = b"\x08\x15" + _ld(10, _ld(1, ps))  # type 21, propertysets_value with one set
        ps = _ld(1, b"k") + _ld(2, value)
    return ps


@fuzz_settings(50)
@given(st.one_of(st.integers(1, 120), st.integers(120, 3000)), st.lists(st.booleans(), min_size=1, max_size=4),
       st.sampled_from([RawPayload.PropertyValue(type=3, int_value=1),
                        RawPayload.PropertyValue(type=12, string_value=b"\xff"),
                        RawPayload.PropertyValue(type=99)]))
def test_deeply_nested_property_sets_only_raise_decode_error(depth, kinds, leaf):
    """TC-40: property sets and lists nested up to and past protobuf's limit (100 messages) and
    Python's recursion limit, in a metric of a birth."""
    props = _nested(depth, kinds, leaf)
    metric = RawPayload.Metric(name=b"m", datatype=DataType.Boolean)
    body = metric.SerializeToString() + _ld(9, props)
    drive_both(_ld(2, body))


# ---------------------------------------------------------------------------------------------
# (d) payload_from_json


def _from_json(doc: str | bytes) -> None:
    try:
        data = payload_from_json(doc)
    except DecodeError as exc:
        assert str(exc)
        event(f"payload_from_json: {_shape(str(exc))[:40]}")
        return
    drive_both(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
json_ints = mostly(st.one_of(st.integers(0, U32), st.sampled_from(EDGE_INTS), st.sampled_from(EDGE_INTS).map(str)),
                   st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=5), st.floats(),
                             st.sampled_from(["1e400", "-1", "NaN", "Infinity", "0x10", "1.0"])))
json_strings = mostly(st.one_of(st.text(max_size=10), text_with_nul),
                      st.one_of(st.just("\ud800"), st.integers(), st.text(st.characters(exclude_categories=()))))


def one_value(choices: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """``{}`` or ``{field: value}`` for one field of a oneof (two would be a ParseError every time)."""
    return st.none() | st.sampled_from(sorted(choices)).flatmap(lambda k: choices[k].map(lambda v: {k: v}))


def merged(*parts: st.SearchStrategy) -> st.SearchStrategy:
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds if d for k, v in d.items()})


json_floats = st.one_of(st.floats(), st.sampled_from(["NaN", "Infinity", "-Infinity", "1e39"]))
property_value_json = merged(
    st.fixed_dictionaries({"type": mostly(st.sampled_from([int(t) for t in DataType]), json_ints)},
                          optional={"isNull": st.booleans()}),
    one_value({"intValue": json_ints, "longValue": json_ints, "floatValue": json_floats, "doubleValue": json_floats,
               "booleanValue": mostly(st.booleans(), st.integers()), "stringValue": json_strings,
               "propertysetValue": st.just({"keys": ["a", "b"], "values": [{"type": 3, "intValue": 7}]}),
               "propertysetsValue": st.just({"propertyset": [{}, {"keys": ["\x00"], "values": [{"type": 0}]}]})}),
    mostly(st.none(), st.fixed_dictionaries({"bogus": json_values})),
)
metric_json = merged(
    st.fixed_dictionaries(
        {},
        optional={"name": json_strings, "alias": json_ints, "timestamp": json_ints,
                  "datatype": mostly(st.sampled_from([int(t) for t in DataType]), json_ints), "isNull": st.booleans(),
                  "properties": st.fixed_dictionaries({"keys": st.lists(json_strings, max_size=3, unique=True),
                                                       "values": st.lists(property_value_json, max_size=3)})}),
    one_value({"stringValue": json_strings, "bytesValue": mostly(st.binary(max_size=8).map(
        lambda b: base64.b64encode(b).decode()), json_strings), "longValue": json_ints}),
    mostly(st.none(), st.fixed_dictionaries({"metadata": json_values})),
)
payload_json = st.fixed_dictionaries(
    {"metrics": st.lists(metric_json, max_size=3)},
    optional={"timestamp": json_ints, "seq": json_ints, "uuid": json_strings, "body": json_strings},
)


def _render(doc: object, how: int) -> str | bytes:
    text = json.dumps(doc, ensure_ascii=bool(how & 1))
    return text if how < 2 else text.encode("utf-16" if how == 5 else "utf-8", "surrogatepass")


@fuzz_settings(150)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200),
                 st.tuples(st.binary(max_size=50), st.sampled_from(INVALID_UTF8)).map(
                     lambda t: b'{"a":"' + t[0] + t[1]),
                 json_values.map(json.dumps)))
def test_payload_from_json_random_text_and_bytes(doc):
    """TC-40: random text and bytes (often not UTF-8) give a payload or a DecodeError."""
    _from_json(doc)


@fuzz_settings(100, HealthCheck.too_slow)
@given(payload_json, st.integers(0, 5))
def test_payload_from_json_payload_shaped_documents(doc, how):
    """TC-40, CT-01: Payload-shaped JSON with hostile values, as str, UTF-8 or UTF-16 bytes.

    too_slow: nested dictionaries per example, timed by the clock (see the hostile test).
    """
    _from_json(_render(doc, how))


@fuzz_settings(100)
@given(mutations)
def test_payload_from_json_mutated_fixture(ops):
    """TC-40: byte-level mutations of the production JSON fixture."""
    _from_json(mutate(PROD_JSON, [op for op in ops if op[0] not in ("length", "varint", "grow")]))


# ---------------------------------------------------------------------------------------------
# Topics


@fuzz_settings(150)
@given(st.one_of(st.text(max_size=60),
                 st.lists(st.sampled_from(["spBv1.0", "Secil", "DBIRTH", "NBIRTH", "STATE", "", "+", "#", "a/b",
                                           "\x00", "é"]), max_size=6).map("/".join)))
def test_parse_topic_only_raises_topic_error(topic):
    """TC-40: any topic string parses into non-empty ids without + / #, or raises TopicError."""
    try:
        t = parse_topic(topic)
    except TopicError:
        return
    for part in (t.group_id, t.edge, t.device or "x"):
        assert part and not set(part) & set("+/#")


# ---------------------------------------------------------------------------------------------
# Round trip: encode_birth then decode gives back the names, types and values


def comparable(t: int | str, value: object) -> object:
    """A decoded or encoded value in a form ``==`` can compare: Float at 32-bit precision (as
    catalog/propvalues.py ``comparable`` stores it), NaN as a marker, nested sets recursively."""
    t = DataType[t] if isinstance(t, str) else t
    if value is None:
        return None
    if t in (DataType.Float, DataType.Double):
        assert isinstance(value, float)
        if t == DataType.Float:
            value = _F32.unpack(_F32.pack(value))[0]
        return "NaN" if math.isnan(value) else value
    if t == DataType.PropertySet:
        assert isinstance(value, dict)
        return {k: (e["type"], comparable(e["type"], e["value"])) for k, e in value.items()}
    if t == DataType.PropertySetList:
        assert isinstance(value, list)
        return [comparable(DataType.PropertySet, v) for v in value]
    return value


@fuzz_settings(100, HealthCheck.too_slow)
@given(st.lists(metric_specs(), max_size=5), st.integers(0, U64), st.integers(0, U64))
def test_encode_then_decode_round_trip(specs, timestamp, seq):
    """CT-01: decode(encode_birth(specs)) gives back names, types, aliases and property values.

    too_slow: several metrics with nested property sets per example, timed by the clock.
    """
    data = encode_birth(specs, timestamp=timestamp, seq=seq)
    header = read_header(data)
    assert (header.timestamp, header.seq) == (timestamp, seq)
    decoded = list(iter_metrics(data))
    assert [m.name for m in decoded] == [s.name for s in specs]
    assert [m.datatype for m in decoded] == [s.datatype for s in specs]
    assert [m.alias for m in decoded] == [s.alias for s in specs]
    assert [m.timestamp for m in decoded] == [s.timestamp for s in specs]
    assert [m.is_null for m in decoded] == [s.value is None for s in specs]
    for m, spec in zip(decoded, specs, strict=True):
        props = decode_properties(m.properties, where=m.where)
        assert list(props) == list(spec.properties or {})
        assert {k: (t, comparable(t, v)) for k, (t, v) in props.items()} == {
            k: (t, comparable(t, v)) for k, (t, v) in (spec.properties or {}).items()
        }
