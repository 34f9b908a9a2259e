"""Sparkplug B decoding (ingest/sparkplug.py): TC-01, CT-01 and decode errors. No DB needed."""

from __future__ import annotations

import json
import random
import struct
import tracemalloc
from pathlib import Path

import pytest
from google.protobuf import json_format

from sparkplug import sparkplug_b_pb2 as pb
from sparkplug.codec import (
    DecodeError,
    MetricSpec,
    PayloadHeader,
    decode_properties,
    encode_birth,
    iter_metrics,
    payload_from_json,
    read_header,
)
from sparkplug.datatypes import DataType

pytestmark = pytest.mark.unit  # pure: no database, broker or Redis (the `unit` stage of make test)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PROD_JSON = FIXTURES / "dbirth_portugal_cement.pb.json"
PROD_BIN = FIXTURES / "dbirth_portugal_cement.pb"
CAPTURES = sorted((FIXTURES / "captures").glob("*.jsonl"))

PV = pb.Payload.PropertyValue


# ---------------------------------------------------------------------------------------------
# Builders (wire level, independent of the encoder under test)


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ld(field: int, body: bytes) -> bytes:
    """A length-delimited field."""
    return varint(field << 3 | 2) + varint(len(body)) + body


def vi(field: int, value: int) -> bytes:
    """A varint field."""
    return varint(field << 3) + varint(value)


def pset(*entries: tuple[str, PV]) -> pb.Payload.PropertySet:
    ps = pb.Payload.PropertySet()
    for key, value in entries:
        ps.keys.append(key)
        ps.values.append(value)
    return ps


def props_bytes(*entries: tuple[str, PV]) -> bytes:
    return pset(*entries).SerializeToString()


def payload(*metrics: pb.Payload.Metric, timestamp: int = 1000, seq: int = 0) -> bytes:
    return pb.Payload(timestamp=timestamp, seq=seq, metrics=metrics).SerializeToString()


def prod_payload() -> bytes:
    return PROD_BIN.read_bytes()


def capture_lines() -> list[tuple[str, dict]]:
    return [
        (f"{path.name}:{n}", json.loads(line))
        for path in CAPTURES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip()
    ]


PROD_PROPS_0 = {
    "engLow": (DataType.Double, 0.0),
    "retained": (DataType.Boolean, True),
    "DataPermission": (DataType.String, "user_domainSecil(R);G_UNS_Admin(RW)"),
    "Quality": (DataType.Int32, 2147484164 - 2**32),
    "documentation": (DataType.String, "SA: - Active"),
    "engHigh": (DataType.Double, 0.0),
    "retain": (DataType.Boolean, True),
    "executionMode": (DataType.Int32, 1),
    "engUnit": (DataType.String, ""),
    "delete": (DataType.Boolean, False),
}


# ---------------------------------------------------------------------------------------------
# TC-01: binary fixtures


def test_binary_fixture_is_the_json_fixture_serialized():
    """TC-01: fixtures/dbirth_portugal_cement.pb is payload_from_json of the .pb.json form."""
    assert payload_from_json(PROD_JSON.read_text()) == prod_payload()
    assert payload_from_json(PROD_JSON.read_bytes()) == prod_payload()


def test_production_birth_header_and_metrics():
    """TC-01: names, (absent) aliases, datatypes, timestamps and flags of the production DBIRTH."""
    data = prod_payload()
    assert read_header(data) == PayloadHeader(timestamp=1756392554816, seq=1, uuid=None)
    metrics = list(iter_metrics(data))
    assert [m.name for m in metrics] == [
        "Maceira/400 - Clinker Production/451 - Bypass/Normalised/Indications/BYPVT603INT02/Active",
        "Maceira/400 - Clinker Production/432 - Kiln/Normalised/Machines/FO6RGH32M1/Closed",
        "Maceira/600 - Cement Packaging and Dispatch/671 - Bag Conveying/Normalised/Selections/"
        "EMBSILO23SEL01_FS/Selected",
    ]
    assert [m.index for m in metrics] == [0, 1, 2]
    for m in metrics:
        assert m.alias is None
        assert m.datatype == DataType.Boolean
        assert m.timestamp == 1756392554609
        assert (m.is_null, m.is_historical, m.is_transient) == (False, False, False)


def test_production_birth_every_property_with_its_type():
    """TC-01: the ten production properties, Quality (Int32 > 2^31 on the wire) signed."""
    metrics = list(iter_metrics(prod_payload()))
    decoded = [decode_properties(m.properties, where=m.where) for m in metrics]
    assert decoded[0] == PROD_PROPS_0
    assert [type(v) for _, v in decoded[0].values()] == [
        float, bool, str, int, str, float, bool, int, str, bool
    ]
    assert decoded[1]["Quality"] == (DataType.Int32, 192)
    assert decoded[1]["documentation"] == (
        DataType.String,
        "Valvula doseadora H32.1 extraccao SHI2 para caleira H57 - Closed/Position2",
    )
    assert decoded[2]["Quality"] == (DataType.Int32, -2147483132)
    assert decoded[2]["documentation"] == (DataType.String, "EXT SILO 23 - FORA SERVIÇO - Selected")
    assert all(list(d) == list(PROD_PROPS_0) for d in decoded)  # key order kept


@pytest.mark.parametrize(
    ("ptype", "field", "wire", "expected"),
    [
        (DataType.Int8, "int_value", 251, -5),
        (DataType.Int8, "int_value", 4294967291, -5),  # sign-extended to 32 bits (Tahu Java)
        (DataType.Int8, "int_value", 127, 127),
        (DataType.Int16, "int_value", 65533, -3),
        (DataType.Int16, "int_value", 4294967293, -3),
        (DataType.Int32, "int_value", 4294967291, -5),
        (DataType.Int32, "int_value", 2147484164, 2147484164 - 2**32),  # production Quality
        (DataType.Int32, "int_value", 2147483647, 2147483647),
        (DataType.Int32, "long_value", 2**64 - 5, -5),
        (DataType.Int64, "long_value", 2**64 - 5, -5),
        (DataType.Int64, "long_value", 2**63 - 1, 2**63 - 1),
        (DataType.UInt8, "int_value", 255, 255),
        (DataType.UInt16, "int_value", 65535, 65535),
        (DataType.UInt32, "int_value", 4294967291, 4294967291),
        (DataType.UInt32, "long_value", 4294967295, 4294967295),  # UInt32 in long_value
        (DataType.UInt64, "long_value", 2**64 - 1, 2**64 - 1),
        (DataType.DateTime, "long_value", 1756392554609, 1756392554609),
    ],
)
def test_ints_decoded_by_declared_type(ptype, field, wire, expected):
    """TC-01: signed ints from unsigned two's complement; unsigned stay unsigned."""
    raw = props_bytes(("v", PV(type=ptype, **{field: wire})))
    assert decode_properties(raw) == {"v": (ptype, expected)}


@pytest.mark.parametrize(
    ("ptype", "wire"),
    [(DataType.Int8, 300), (DataType.Int16, 70000), (DataType.UInt8, 256), (DataType.UInt16, 65536)],
)
def test_int_out_of_range_for_declared_type_is_rejected(ptype, wire):
    """TC-01: a wire value that no encoding of the declared type produces is an error."""
    raw = props_bytes(("v", PV(type=ptype, int_value=wire)))
    with pytest.raises(DecodeError, match=f"property 'v': wire value {wire} is out of range"):
        decode_properties(raw)


def test_float_string_and_boolean_types():
    """TC-01: Float comes back at float32 precision, Text/UUID as str, Boolean as bool."""
    raw = props_bytes(
        ("f", PV(type=DataType.Float, float_value=0.1)),
        ("d", PV(type=DataType.Double, double_value=0.1)),
        ("b", PV(type=DataType.Boolean, boolean_value=False)),
        ("s", PV(type=DataType.String, string_value="Outão")),
        ("t", PV(type=DataType.Text, string_value="long\ntext")),
        ("u", PV(type=DataType.UUID, string_value="0b5e8d1c-0000-4000-8000-000000000000")),
    )
    assert decode_properties(raw) == {
        "f": (DataType.Float, struct.unpack("<f", struct.pack("<f", 0.1))[0]),
        "d": (DataType.Double, 0.1),
        "b": (DataType.Boolean, False),
        "s": (DataType.String, "Outão"),
        "t": (DataType.Text, "long\ntext"),
        "u": (DataType.UUID, "0b5e8d1c-0000-4000-8000-000000000000"),
    }


def test_nested_property_sets_keep_types_and_are_json_serialisable():
    """TC-01: PropertySet / PropertySetList nest to any depth with their types kept."""
    inner = pset(
        ("lo", PV(type=DataType.Int16, int_value=65533)),
        ("big", PV(type=DataType.UInt64, long_value=2**64 - 1)),
        ("none", PV(type=DataType.String, is_null=True)),
    )
    deeper = pset(("deep", PV(type=DataType.PropertySet, propertyset_value=inner)))
    listed = pb.Payload.PropertySetList(propertyset=[inner, deeper])
    raw = props_bytes(
        ("set", PV(type=DataType.PropertySet, propertyset_value=inner)),
        ("list", PV(type=DataType.PropertySetList, propertysets_value=listed)),
    )
    inner_decoded = {
        "lo": {"type": "Int16", "value": -3},
        "big": {"type": "UInt64", "value": 2**64 - 1},
        "none": {"type": "String", "value": None},
    }
    expected = {
        "set": (DataType.PropertySet, inner_decoded),
        "list": (
            DataType.PropertySetList,
            [inner_decoded, {"deep": {"type": "PropertySet", "value": inner_decoded}}],
        ),
    }
    decoded = decode_properties(raw)
    assert decoded == expected
    assert json.loads(json.dumps(decoded["list"][1]))[1]["deep"]["value"]["big"]["value"] == 2**64 - 1


def test_is_null_property_keeps_its_type():
    """TC-01: is_null -> value None, declared type kept (even with a stray value set)."""
    raw = props_bytes(
        ("q", PV(type=DataType.Int32, is_null=True)),
        ("d", PV(type=DataType.Double, is_null=True, double_value=1.0)),
    )
    assert decode_properties(raw) == {"q": (DataType.Int32, None), "d": (DataType.Double, None)}


def test_metric_field_presence_alias_zero_and_absent_fields():
    """TC-01: alias 0 is an alias; absent alias/name/timestamp are None; flags and is_null."""
    data = payload(
        pb.Payload.Metric(name="a", alias=0, datatype=DataType.Int32, timestamp=7, int_value=1),
        pb.Payload.Metric(datatype=DataType.String, is_null=True, is_historical=True,
                          is_transient=True),
        pb.Payload.Metric(name="", alias=2**64 - 1, datatype=DataType.DateTimeArray),
    )
    a, b, c = iter_metrics(data)
    assert (a.name, a.alias, a.timestamp, a.datatype, a.is_null) == ("a", 0, 7, 3, False)
    assert (b.name, b.alias, b.timestamp, b.is_null, b.is_historical, b.is_transient) == (
        None, None, None, True, True, True
    )
    assert (c.name, c.alias, c.datatype, c.properties) == ("", 2**64 - 1, 34, b"")


def test_properties_are_the_raw_property_set_bytes():
    """TC-01: RawMetric.properties is the PropertySet field exactly as on the wire."""
    ps = pset(("Quality", PV(type=DataType.Int32, int_value=192)))
    data = payload(pb.Payload.Metric(name="m", datatype=DataType.Boolean, properties=ps))
    (m,) = iter_metrics(data)
    assert m.properties == ps.SerializeToString()


def test_header_uuid_and_memoryview_input():
    """TC-01: uuid is read; bytearray/memoryview input decodes like bytes."""
    msg = pb.Payload(timestamp=1, seq=255, uuid="u-1", metrics=[pb.Payload.Metric(name="x")])
    data = msg.SerializeToString()
    assert read_header(data) == PayloadHeader(timestamp=1, seq=255, uuid="u-1")
    assert read_header(memoryview(bytearray(data))) == read_header(data)
    assert [m.name for m in iter_metrics(memoryview(data))] == ["x"]
    assert [m.name for m in iter_metrics(bytearray(data))] == ["x"]


def test_empty_payload_is_a_valid_empty_message():
    """TC-01: 0 bytes is an empty protobuf: no header fields, no metrics (the caller rejects it)."""
    assert read_header(b"") == PayloadHeader(timestamp=None, seq=None, uuid=None)
    assert list(iter_metrics(b"")) == []
    assert decode_properties(b"") == {}


# ---------------------------------------------------------------------------------------------
# CT-01: binary and JSON forms agree


def _reference_value(pv: PV) -> object:
    """The raw oneof value as protobuf's own (generated) classes see it."""
    field = pv.WhichOneof("value")
    return None if field is None else getattr(pv, field)


def test_json_fixture_agrees_with_decode():
    """CT-01: json_format-parsed production DBIRTH vs our streaming decode, field by field."""
    reference = json_format.Parse(PROD_JSON.read_text(), pb.Payload())
    data = payload_from_json(PROD_JSON.read_text())
    assert read_header(data) == PayloadHeader(reference.timestamp, reference.seq, None)
    ours = list(iter_metrics(data))
    assert len(ours) == len(reference.metrics) == 3
    for raw, ref in zip(ours, reference.metrics, strict=True):
        assert raw.name == ref.name
        assert raw.datatype == ref.datatype
        assert raw.timestamp == ref.timestamp
        assert raw.alias == (ref.alias if ref.HasField("alias") else None)
        assert raw.is_null == ref.is_null
        assert raw.properties == ref.properties.SerializeToString()
        decoded = decode_properties(raw.properties, where=raw.where)
        assert list(decoded) == list(ref.properties.keys)
        for key, pv in zip(ref.properties.keys, ref.properties.values, strict=True):
            ptype, value = decoded[key]
            assert ptype == pv.type
            expected = _reference_value(pv)
            if ptype in (DataType.Int8, DataType.Int16, DataType.Int32):
                assert value % 2**32 == expected  # same bits, signed by declared type
            else:
                assert value == expected


def test_binary_to_json_to_binary_round_trip():
    """CT-01: our decode of a payload equals our decode of its protobuf-JSON rendering."""
    data = prod_payload()
    as_json = json_format.MessageToJson(pb.Payload.FromString(data))
    again = payload_from_json(as_json)
    assert [(m.name, m.datatype, decode_properties(m.properties)) for m in iter_metrics(data)] == [
        (m.name, m.datatype, decode_properties(m.properties)) for m in iter_metrics(again)
    ]


# Property types of the capture keys (the captures only kept values).
_CAPTURE_INT_TYPES = {"Quality": DataType.Int32, "executionMode": DataType.Int32,
                      "executionRate": DataType.Int32}


def _capture_property(key: str, value: object) -> tuple[int, object]:
    """(type, value) as the publisher would have declared it; Int32 given as signed."""
    if isinstance(value, bool):
        return DataType.Boolean, value
    if isinstance(value, str):
        return DataType.String, value
    if isinstance(value, float):
        return DataType.Double, value
    assert isinstance(value, int)
    ptype = _CAPTURE_INT_TYPES.get(key, DataType.Int64)
    if ptype == DataType.Int32 and value >= 2**31:  # the old decoder left Int32 unsigned
        value -= 2**32
    return ptype, value


def _capture_specs(frame: dict) -> list[MetricSpec]:
    return [
        MetricSpec(
            name=m["name"],
            datatype=m["datatype"],
            alias=i,
            value=m["value"],
            timestamp=m["ts"],
            properties={k: _capture_property(k, v) for k, v in m["props"].items()},
        )
        for i, m in enumerate(frame["metrics"])
    ]


@pytest.mark.parametrize(("where", "frame"), capture_lines(), ids=lambda x: x if isinstance(x, str) else "")
def test_capture_frames_round_trip_through_binary(where, frame):
    """CT-01: every capture frame, encoded to binary, decodes to the same metrics and properties."""
    specs = _capture_specs(frame)
    data = encode_birth(specs, timestamp=1759312039312, seq=3)
    assert read_header(data) == PayloadHeader(timestamp=1759312039312, seq=3, uuid=None)
    decoded = list(iter_metrics(data))
    assert [m.name for m in decoded] == [m["name"] for m in frame["metrics"]]
    assert [m.datatype for m in decoded] == [m["datatype"] for m in frame["metrics"]]
    assert [m.timestamp for m in decoded] == [m["ts"] for m in frame["metrics"]]
    assert [m.alias for m in decoded] == list(range(len(specs)))
    assert [m.is_null for m in decoded] == [m["value"] is None for m in frame["metrics"]]
    for raw, spec, m in zip(decoded, specs, frame["metrics"], strict=True):
        props = decode_properties(raw.properties, where=raw.where)
        assert props == spec.properties
        # values the old decoder showed, except Int32 that it left unsigned
        assert {k: v if t != DataType.Int32 else v % 2**32 for k, (t, v) in props.items()} == m["props"]
    # the generated classes read the same payload the same way (JSON form via json_format)
    reference = json_format.MessageToDict(pb.Payload.FromString(data))
    assert [m.get("name") for m in reference["metrics"]] == [m.name for m in decoded]


def test_encode_then_decode_is_identity_for_every_property_type():
    """CT-01: decode(encode(x)) == x, including nested sets, nulls and extreme ints."""
    props = {
        "i8": (DataType.Int8, -128), "i16": (DataType.Int16, -32768), "i32": (DataType.Int32, -5),
        "i64": (DataType.Int64, -(2**63)), "u8": (DataType.UInt8, 255), "u16": (DataType.UInt16, 0),
        "u32": (DataType.UInt32, 2**32 - 1), "u64": (DataType.UInt64, 2**64 - 1),
        "f": (DataType.Float, 1.5), "d": (DataType.Double, -0.0), "b": (DataType.Boolean, True),
        "s": (DataType.String, "Outão"), "t": (DataType.Text, ""), "u": (DataType.UUID, "x"),
        "dt": (DataType.DateTime, 1756392554609), "null": (DataType.Float, None),
        "ps": (DataType.PropertySet, {"a": {"type": "Int8", "value": -1},
                                      "n": {"type": "PropertySetList",
                                            "value": [{}, {"z": {"type": "Boolean", "value": False}}]}}),
        "empty": (DataType.PropertySetList, []),
    }
    specs = [MetricSpec("m", DataType.Int16, alias=0, value=-2, properties=props),
             MetricSpec(None, DataType.Bytes, value=b"\x00\xff", properties={}),
             MetricSpec("same", DataType.Double, value=0.25, properties=dict(props))]
    data = encode_birth(specs, timestamp=1)
    metrics = list(iter_metrics(data))
    assert decode_properties(metrics[0].properties) == props
    assert decode_properties(metrics[2].properties) == props
    assert metrics[1].name is None and metrics[1].properties == b""
    reference = pb.Payload.FromString(data)
    assert reference.metrics[0].int_value == 2**32 - 2  # two's complement on the wire
    assert reference.metrics[1].bytes_value == b"\x00\xff"


def test_encoder_rejects_values_out_of_range_for_the_declared_type():
    """CT-01: the encoder never produces what the decoder would reject."""
    with pytest.raises(ValueError, match="out of range for Int8"):
        encode_birth([MetricSpec("m", DataType.Int8, value=128)], timestamp=1)
    with pytest.raises(ValueError, match="'q'.*out of range for Int32"):
        encode_birth([MetricSpec("m", DataType.Boolean, properties={"q": (DataType.Int32, 2**31)})],
                     timestamp=1)


# ---------------------------------------------------------------------------------------------
# Decode errors


def test_truncated_payload_raises_decode_error_at_every_cut():
    """TC-01: any prefix of a real payload is either valid or a DecodeError, never another error."""
    data = prod_payload()
    boundaries = {0}
    pos = 0
    while pos < len(data):  # top-level field boundaries: cutting there leaves a valid message
        tag, pos = data[pos], pos + 1
        if tag & 7 == 0:
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        else:
            length = 0
            shift = 0
            while True:
                b, pos = data[pos], pos + 1
                length |= (b & 0x7F) << shift
                shift += 7
                if b < 0x80:
                    break
            pos += length
        boundaries.add(pos)
    for cut in range(len(data)):
        prefix = data[:cut]
        if cut in boundaries:
            list(iter_metrics(prefix))
            continue
        with pytest.raises(DecodeError):
            read_header(prefix)
            for m in iter_metrics(prefix):
                decode_properties(m.properties)


def test_truncated_protobuf_message_says_where():
    """TC-01: the message names the byte offset."""
    data = prod_payload()
    with pytest.raises(DecodeError, match=r"^truncated protobuf at byte 500: field 2 at byte \d+ declares"):
        list(iter_metrics(data[:500]))


def test_garbage_bytes_only_ever_raise_decode_error():
    """TC-01: random and mutated inputs give DecodeError or a decode, nothing else."""
    rng = random.Random(1234)
    base = prod_payload()
    for _ in range(5000):
        if rng.random() < 0.5:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        else:
            mutated = bytearray(base)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        try:
            read_header(data)
            for m in iter_metrics(data):
                decode_properties(m.properties, where=m.where)
        except DecodeError:
            pass


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xff\xff", "truncated protobuf at byte 3"),
        (b"\x0f", "invalid wire type 7 for field 1 at byte 0"),
        (b"\x00\x01", "invalid field number 0 at byte 0"),
        (b"\x08" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x12\x05ab", "truncated protobuf at byte 4: field 2 at byte 0 declares 5 bytes"),
        (b"\x10\x01", r"field 2 \(metrics\) has wire type 0, expected 2"),
    ],
)
def test_malformed_payloads(data, match):
    """TC-01: malformed framing is a DecodeError with a position."""
    with pytest.raises(DecodeError, match=match):
        list(iter_metrics(data))


@pytest.mark.parametrize("state", [b'{"online": true, "timestamp": 1759312039312}', b"ONLINE", b"OFFLINE"])
def test_state_message_text_is_not_a_payload(state):
    """TC-01: STATE payloads (JSON, or 2.2-era text) are rejected as DecodeError."""
    with pytest.raises(DecodeError):
        read_header(state)
    with pytest.raises(DecodeError):
        list(iter_metrics(state))


def test_json_state_gets_a_hint():
    """TC-01: a JSON body is called out as such."""
    with pytest.raises(DecodeError, match="looks like JSON"):
        read_header(b'{"online": true}')


@pytest.mark.parametrize(
    ("data", "position"),
    [
        (b"\x80", 0),  # found by tests/sparkplug/test_codec_fuzz.py
        (b'{"metrics": [{"name": "bad\xff\xfename"}]}', 26),
        ('{"uuid": "\ud800"}'.encode("utf-8", "surrogatepass"), 10),  # an encoded lone surrogate
        ('{"metrics": []}'.encode("utf-16"), 0),  # UTF-16 with a BOM: json_format reads UTF-8 only
    ],
)
def test_json_bytes_that_are_not_utf8_are_a_decode_error(data, position):
    """TC-40, CT-01: payload_from_json of bytes that are not UTF-8 raised UnicodeDecodeError (not a
    ValueError); it is a DecodeError naming the byte, as replay_birth of a hostile JSON file needs."""
    with pytest.raises(DecodeError, match=rf"^not valid UTF-8 JSON at byte {position} \("):
        payload_from_json(data)


def test_nul_characters_are_decoded_not_rejected():
    """TC-40: NUL in a name, key or string value is valid UTF-8 and decodes as is, from binary and
    from JSON (rejecting it is a catalog/storage rule, not the codec's)."""
    props = {"k\x00": (DataType.String, "v\x00")}
    data = encode_birth([MetricSpec("a\x00b", DataType.Boolean, properties=props)], timestamp=1)
    as_json = b'{"metrics": [{"name": "a\\u0000b", "datatype": 11, "properties": {"keys": ["k\\u0000"],' \
              b' "values": [{"type": 12, "stringValue": "v\\u0000"}]}}]}'
    for payload_bytes in (data, payload_from_json(as_json)):
        (m,) = iter_metrics(payload_bytes)
        assert m.name == "a\x00b"
        assert decode_properties(m.properties) == props


def test_non_utf8_metric_name_names_the_metric_index():
    """TC-01: invalid UTF-8 in a name (upb accepts it in proto2) is a DecodeError with the index."""
    ok = ld(1, b"good") + vi(4, DataType.Boolean)
    bad = ld(1, b"bad\xff\xfename") + vi(4, DataType.Boolean)
    data = ld(2, ok) + ld(2, bad)
    with pytest.raises(DecodeError, match=r"^metric #1 at byte \d+: name is not valid UTF-8"):
        list(iter_metrics(data))


def test_unknown_datatype_is_rejected():
    """TC-01: a datatype outside the Sparkplug enum."""
    data = ld(2, ld(1, b"Foo/Bar") + vi(4, 35))
    with pytest.raises(DecodeError, match=r"^metric #0 'Foo/Bar': unknown datatype 35$"):
        list(iter_metrics(data))


def test_truncated_metric_body_is_located():
    """TC-01: a metric whose own fields are broken points at the byte inside the payload."""
    data = ld(2, ld(1, b"a") + b"\x12\x09ab")  # field 2 of the metric declares 9 bytes, has 2
    with pytest.raises(DecodeError, match=r"^metric #0 at byte 2: truncated protobuf at byte 9"):
        list(iter_metrics(data))


def test_property_errors_name_metric_and_property():
    """TC-01: unknown property type, message format `metric #12 'Foo/Bar': property 'engLow': ...`."""
    raw = props_bytes(("engLow", PV(type=99, double_value=1.0)))
    with pytest.raises(DecodeError) as exc:
        decode_properties(raw, where="metric #12 'Foo/Bar'")
    assert str(exc.value) == "metric #12 'Foo/Bar': property 'engLow': unknown property type 99"


NESTED_DUPLICATE = props_bytes(("n", PV(
    type=DataType.PropertySet,
    propertyset_value=pset(("a", PV(type=DataType.Int32, int_value=1)),
                           ("a", PV(type=DataType.Int32, int_value=2))),
)))
LISTED_UNKNOWN = props_bytes(("l", PV(
    type=DataType.PropertySetList,
    propertysets_value=pb.Payload.PropertySetList(propertyset=[pset(), pset(("z", PV(type=42)))]),
)))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (ld(1, b"a") + ld(1, b"b") + ld(1, b"c") + ld(2, vi(1, 11) + vi(7, 1)) + ld(2, vi(1, 11) + vi(7, 0)),
         "property set: 3 keys but 2 values"),
        (props_bytes(("k", PV(type=11, boolean_value=True)), ("k", PV(type=11, boolean_value=False))),
         "property set: duplicate key 'k'"),
        (ld(1, b"\xffk") + ld(2, vi(1, 11) + vi(7, 1)), "property set: key #0 is not valid UTF-8"),
        (ld(1, b"s") + ld(2, vi(1, 12) + ld(8, b"\xc3(")), "property 's': string value is not valid UTF-8"),
        (props_bytes(("s", PV(type=DataType.String))),
         "property 's': declared String but no value is set (and is_null is false)"),
        (props_bytes(("d", PV(type=DataType.Double, int_value=1))),
         "property 'd': declared Double but int_value is set"),
        (props_bytes(("f", PV(type=DataType.Float, double_value=1.0))),
         "property 'f': declared Float but double_value is set"),
        (props_bytes(("b", PV(type=DataType.Bytes, is_null=True))),
         "property 'b': unsupported property type Bytes (17)"),
        (props_bytes(("x", PV(int_value=1))), "property 'x': unsupported property type Unknown (0)"),
        (NESTED_DUPLICATE, "property 'n': property set: duplicate key 'a'"),
        (LISTED_UNKNOWN, "property 'l'[1] > 'z': unknown property type 42"),
        (b"\x0a\x05ab", "property set: truncated protobuf at byte 4"),
        (ld(2, vi(1, 20) + ld(9, b"\x0a\x09x")), "property set: truncated protobuf at byte 9"),
    ],
)
def test_property_set_validation(raw, message):
    """TC-01: keys/values mismatch, duplicates, bad UTF-8, inconsistent or unknown types."""
    with pytest.raises(DecodeError) as exc:
        decode_properties(raw, where="metric #3 'M'")
    assert str(exc.value).startswith(f"metric #3 'M': {message}"), str(exc.value)


def _nested_sets(depth: int) -> bytes:
    body = ld(1, b"leaf") + ld(2, vi(1, DataType.Int32) + vi(3, 1))
    for _ in range(depth):
        body = ld(1, b"k") + ld(2, vi(1, DataType.PropertySet) + ld(9, body))
    return body


def test_deep_nesting_is_a_decode_error_not_a_recursion_error():
    """TC-01: property sets nested past upb's limit (100 messages) fail cleanly at any depth."""
    assert decode_properties(_nested_sets(49))["k"][0] == DataType.PropertySet
    for depth in (50, 5_000):  # 5,000 > Python's recursion limit
        with pytest.raises(DecodeError, match="nested more than 100 levels deep"):
            decode_properties(_nested_sets(depth))


def test_iterating_a_large_payload_allocates_a_small_constant():
    """TC-01: iter_metrics streams; Python-side peak allocation does not grow with the payload."""
    one = ld(2, ld(1, b"Plant/Area/Tag") + vi(4, DataType.Boolean)
             + ld(9, props_bytes(("Quality", PV(type=3, int_value=192)))))
    peaks = []
    for count in (5_000, 50_000):
        data = one * count
        tracemalloc.start()
        n = sum(1 for _ in iter_metrics(data))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert n == count
    assert peaks[1] < 64 * 1024, peaks  # the 50k-metric input alone is ~1.6 MB
    assert peaks[1] < peaks[0] * 2, peaks
