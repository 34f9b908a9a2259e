"""The hostile-birth corpus (TC-40): one frame per class of input the catalog or PostgreSQL cannot
hold, or that is malformed, each with what must become of it. Used through replay_birth and through
MQTT with real daemons (tests/test_hostile_births.py).

Every birth that is not rejected as a whole also carries a good metric, ``Plant/good``: the bad
metric is rejected by name and the rest of the birth applies.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from births import birth, m, prod
from catalog import validation
from sparkplug import sparkplug_b_pb2 as pb
from sparkplug.codec import MetricSpec, encode_birth
from sparkplug.datatypes import DataType as T

GOOD = "Plant/good"
_ts = itertools.count(1_800_000_000_000, 1000)


@dataclass(frozen=True)
class Case:
    name: str
    payload: bytes
    status: str  # what the frame ends as: "applied" (the bad metric rejected by name) or "rejected"
    reason: str  # a piece of the reason stored on the frame
    device: str = "Kiln"  # the topic's device id
    applied: tuple[str, ...] = field(default=(GOOD,))  # the metric names the catalog holds afterwards
    # replay_birth reads a JSON file as protobuf's JSON mapping: what it says instead (nothing stored)
    replay_error: str | None = None


def _with_good(*bad: MetricSpec) -> bytes:
    return birth(prod(GOOD, alias=1), *bad, ts=next(_ts))


def _raw_birth(build: object) -> bytes:
    """A payload built on the generated message, for what encode_birth refuses to write."""
    payload = pb.Payload(timestamp=next(_ts), seq=0)
    good = payload.metrics.add(name=GOOD, datatype=T.Boolean, boolean_value=True)
    good.alias = 1
    build(payload)  # type: ignore[operator]
    return payload.SerializeToString()


def _invalid_utf8_name(payload: pb.Payload) -> None:
    payload.metrics.add(name="Plant/" + "X" * 4, datatype=T.Boolean, boolean_value=True)


def _invalid_utf8_value(payload: pb.Payload) -> None:
    metric = payload.metrics.add(name="Plant/badtext", datatype=T.Boolean, boolean_value=True)
    metric.properties.keys.append("engUnit")
    metric.properties.values.add(type=T.String, string_value="Y" * 4)


def _mismatch(payload: pb.Payload) -> None:
    metric = payload.metrics.add(name="Plant/mismatch", datatype=T.Boolean, boolean_value=True)
    metric.properties.keys.append("engLow")
    metric.properties.values.add(type=T.Int32, string_value="not an int")


def _count_mismatch(payload: pb.Payload) -> None:
    metric = payload.metrics.add(name="Plant/counts", datatype=T.Boolean, boolean_value=True)
    metric.properties.keys.extend(["engLow", "engHigh"])
    metric.properties.values.add(type=T.Double, double_value=1.0)


def _deep(payload: pb.Payload) -> None:
    metric = payload.metrics.add(name="Plant/deep", datatype=T.Boolean, boolean_value=True)
    level = metric.properties
    for _ in range(120):
        level.keys.append("k")
        value = level.values.add(type=T.PropertySet)
        level = value.propertyset_value


def _int8_out_of_range(payload: pb.Payload) -> None:
    metric = payload.metrics.add(name="Plant/int8", datatype=T.Boolean, boolean_value=True)
    metric.properties.keys.append("engLow")
    metric.properties.values.add(type=T.Int8, int_value=70_000)


def _huge_set(payload: pb.Payload) -> None:
    metric = payload.metrics.add(name="Plant/huge", datatype=T.Boolean, boolean_value=True)
    metric.properties.keys.append("sets")
    value = metric.properties.values.add(type=T.PropertySetList)
    for _ in range(1_000_000):  # two bytes each on the wire, a dict each once decoded
        value.propertysets_value.propertyset.add()


def _unknown_datatype(payload: pb.Payload) -> None:
    payload.metrics.add(name="Plant/odd", datatype=99)


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


def cases() -> list[Case]:
    nul, long_name = "Plant/nul\x00here", "Plant/" + "n" * 100_000
    year_10000 = validation.DATETIME_MAX_MS + 1
    nested_nul = {"inner": {"type": "String", "value": "a\x00b"}}
    return [
        Case("NUL in a metric name", _with_good(prod(nul)), "applied", "contains a NUL character"),
        Case("NUL in a property key", _with_good(m("Plant/k", **{"eng\x00Unit": (T.String, "bar")})), "applied",
             "contains a NUL character"),
        Case("NUL in a string value", _with_good(prod("Plant/v", engUnit=(T.String, "b\x00ar"))), "applied",
             "contains a NUL character"),
        Case("NUL inside a nested property set", _with_good(m("Plant/set", cfg=(T.PropertySet, nested_nul))),
             "applied", "NUL character"),
        Case("invalid UTF-8 in a metric name", _replace(_raw_birth(_invalid_utf8_name), b"XXXX", b"\xff\xfe\xfd\xfc"),
             "rejected", "not valid UTF-8", applied=()),
        Case("invalid UTF-8 in a string value", _replace(_raw_birth(_invalid_utf8_value), b"YYYY", b"\xc3\x28\xa0\xa1"),
             "applied", "not valid UTF-8"),
        Case("a 100 kB metric name", _with_good(prod(long_name)), "applied", "bytes long, the catalog holds at most"),
        Case("a long property key", _with_good(m("Plant/key", **{"k" * 300: (T.String, "x")})), "applied",
             "property key"),
        Case("a long device id", _with_good(), "rejected", "device id is", device="D" * 300, applied=()),
        Case("an alias beyond bigint", _with_good(prod("Plant/alias", alias=2**63)), "applied", "alias"),
        Case("a payload timestamp beyond bigint", encode_birth([prod(GOOD)], timestamp=2**63), "rejected",
             "payload timestamp", applied=()),
        Case("a DateTime in year 10000", _with_good(m("Plant/when", lastChange=(T.DateTime, year_10000))), "applied",
             "outside years 1-9999"),
        Case("an Int8 property out of its range", _raw_birth(_int8_out_of_range), "applied", "out of range"),
        Case("a 2 MB property set", _raw_birth(_huge_set), "applied", "bytes on the wire"),
        Case("a 100 kB string value", _with_good(prod("Plant/doc", documentation=(T.String, "d" * 100_000))),
             "applied", "bytes long"),
        Case("an alias without a name", _with_good(m(None, alias=4242)), "applied", "alias 4242 has no name"),
        Case("a name twice in one birth", _with_good(prod("Plant/twice"), prod("Plant/twice")), "applied",
             "name appears twice", applied=(GOOD, "Plant/twice")),
        Case("two names for one path", _with_good(prod("Plant/a.b"), prod("Plant/a b")), "applied",
             "already used by", applied=(GOOD, "Plant/a.b")),
        Case("a declared type with another value field", _raw_birth(_mismatch), "applied", "declared Int32"),
        Case("keys and values that do not pair", _raw_birth(_count_mismatch), "applied", "2 keys but 1 values"),
        Case("property sets nested too deep", _raw_birth(_deep), "applied", "nest"),
        Case("an unknown datatype", _raw_birth(_unknown_datatype), "rejected", "unknown datatype 99", applied=()),
        Case("an empty payload", b"", "rejected", "no metrics", applied=()),
        Case("a truncated payload", _with_good(prod("Plant/cut"))[:-7], "rejected", "truncated", applied=()),
        Case("a JSON payload (a STATE message)", b'{"online": true, "timestamp": 1}', "rejected", "looks like JSON",
             applied=(), replay_error="online"),
        Case("random bytes", bytes(range(256)) * 3, "rejected", "invalid field number 0 at byte 0", applied=()),
    ]
