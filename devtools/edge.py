"""Synthetic, production-shaped DBIRTH payloads for the edge simulator, tests and benchmarks.

Pure: no Django, no network. :func:`synthetic_birth` returns the same bytes for the same arguments,
and every metric is derived from the seed and its index alone, so a birth of any size streams and
any round of a simulated edge node can be rebuilt. From round 1 on, a fixed set of
``round(change_rate * metric_count)`` metrics differs from the round before in one property each.
The shape (names, the ten production properties) and the round rules: docs/sparkplug.md,
"Synthetic births".
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from sparkplug.codec import MetricSpec, encode_birth
from sparkplug.datatypes import DataType

__all__ = [
    "PROPERTY_TYPES",
    "changed_metric_count",
    "changes_per_round",
    "changing_metrics",
    "synthetic_birth",
    "synthetic_metrics",
]

# The production property set, in production order.
PROPERTY_TYPES: dict[str, DataType] = {
    "engLow": DataType.Double,
    "retained": DataType.Boolean,
    "DataPermission": DataType.String,
    "Quality": DataType.Int32,
    "documentation": DataType.String,
    "engHigh": DataType.Double,
    "retain": DataType.Boolean,
    "executionMode": DataType.Int32,
    "engUnit": DataType.String,
    "delete": DataType.Boolean,
}

GOOD_QUALITY = 192
# Seen in the production capture: wire value 2147484164 (0x80000204) on an Int32 property,
# i.e. -2147483132 once decoded by its declared type.
STALE_QUALITY = -2147483132
ATTRIBUTES_PER_TAG = 4

# --------------------------------------------------------------------------------------------
# Vocabulary


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    datatype: DataType
    units: tuple[str, ...] = ()  # analog attributes: engineering units to pick from
    ranges: tuple[tuple[float, float], ...] = ()  # analog attributes: (engLow, engHigh) choices

    @property
    def analog(self) -> bool:
        return bool(self.units)


@dataclass(frozen=True, slots=True)
class Kind:
    category: str
    code: str  # middle part of the tag id
    suffix: str  # tail of the tag id, before the running number
    descriptions: tuple[str, ...]
    attributes: tuple[Attribute, Attribute, Attribute, Attribute]


B, F, D, I32, S = DataType.Boolean, DataType.Float, DataType.Double, DataType.Int32, DataType.String

PLANTS = ("Maceira", "Maceira", "Outão", "Pataias")  # Maceira is the largest plant
AREAS = (
    ("100 - Quarry and Crushing/111 - Primary Crusher", "BRT"),
    ("200 - Raw Materials Preparation/231 - Raw Mill", "MCR"),
    ("300 - Raw Meal Homogenisation/321 - Homogenisation Silo", "SHM"),
    ("400 - Clinker Production/431 - Kiln", "FO5"),
    ("400 - Clinker Production/432 - Kiln", "FO6"),
    ("400 - Clinker Production/441 - Clinker Cooler", "ARR"),
    ("400 - Clinker Production/451 - Bypass", "BYP"),
    ("500 - Cement Grinding/531 - Cement Mill", "MC8"),
    ("600 - Cement Packaging and Dispatch/651 - Bulk Loading", "EXP"),
    ("600 - Cement Packaging and Dispatch/671 - Bag Conveying", "EMB"),
    ("700 - Utilities/711 - Compressed Air", "ARC"),
    ("800 - Alternative Fuels/811 - Fuel Feeding", "CDR"),
)
PERMISSIONS = {
    "Maceira": "user_domainSecil(R);G_UNS_Admin(RW)",
    "Outão": "user_domainSecil(R);G_UNS_Admin(RW);G_Outao_Eng(RW)",
    "Pataias": "user_domainSecil(R);G_UNS_Admin(RW)",
}
KINDS = (
    Kind("Indications", "VT", "INT", ("SA:", "Alarme ventilador", "Encravamento", "Sinalização"), (
        Attribute("Active", B), Attribute("Inhibited", B), Attribute("Acknowledged", B),
        Attribute("Occurrences", I32))),
    Kind("Machines", "RGH", "M", ("Valvula doseadora", "Motor transportador", "Elevador de alcatruzes",
                                  "Ventilador de tiragem"), (
        Attribute("Running", B), Attribute("Fault", B),
        Attribute("Current", F, ("A", "kA", "mA"), ((0.0, 150.0), (0.0, 400.0), (0.0, 1200.0))),
        Attribute("Speed", F, ("rpm", "Hz", "%"), ((0.0, 1500.0), (0.0, 3000.0), (0.0, 100.0))))),
    Kind("Machines", "VLV", "V", ("Valvula de corte", "Comporta", "Registo de ar"), (
        Attribute("Open", B), Attribute("Closed", B),
        Attribute("Position", F, ("%", "deg", "mm"), ((0.0, 100.0), (0.0, 90.0))), Attribute("Fault", B))),
    Kind("Selections", "SILO", "SEL", ("EXT SILO - FORA SERVIÇO", "Selecção de silo", "Modo de operação"), (
        Attribute("Selected", B), Attribute("Local", B), Attribute("Mode", I32), Attribute("Operator", S))),
    Kind("Measurements", "TT", "PV", ("Temperatura gases", "Temperatura chumaceira", "Temperatura clinker"), (
        Attribute("PV", F, ("°C", "K", "°F"), ((0.0, 400.0), (0.0, 1500.0), (-20.0, 150.0))),
        Attribute("SP", F, ("°C", "K", "°F"), ((0.0, 400.0), (0.0, 1500.0))),
        Attribute("HighAlarm", B), Attribute("Status", S))),
    Kind("Measurements", "PT", "PV", ("Pressão entrada", "Depressão ciclone", "Pressão ar comprimido"), (
        Attribute("PV", F, ("mbar", "bar", "kPa"), ((-100.0, 100.0), (0.0, 10.0), (-50.0, 0.0))),
        Attribute("SP", F, ("mbar", "bar", "kPa"), ((-100.0, 100.0), (0.0, 10.0))),
        Attribute("LowAlarm", B), Attribute("Status", S))),
    Kind("KPI", "KPI", "K", ("Produção", "Consumo específico", "Disponibilidade"), (
        Attribute("Value", D, ("t/h", "kWh/t", "%"), ((0.0, 400.0), (0.0, 120.0), (0.0, 100.0))),
        Attribute("Target", D, ("t/h", "kWh/t", "%"), ((0.0, 400.0), (0.0, 120.0))),
        Attribute("ShiftTotal", D, ("t", "MWh", "h"), ((0.0, 5000.0), (0.0, 800.0))),
        Attribute("Period", S))),
)
STRING_VALUES = ("Auto", "Manual", "Local", "Maintenance", "Turno A", "Turno B", "Turno C")

# Salts keep the independent choices made from one index uncorrelated.
_PLANT, _AREA, _KIND, _DESC, _UNIT, _QUALITY, _EDIT, _HOT, _VALUE = range(1, 10)

# --------------------------------------------------------------------------------------------
# Deterministic mixing

_M64 = (1 << 64) - 1


def _mix(a: int, b: int = 0, c: int = 0) -> int:
    """A well-spread 64-bit hash of three ints (splitmix64 finaliser); stable across runs."""
    x = (a * 0x9E3779B97F4A7C15 + b * 0xC2B2AE3D27D4EB4F + c * 0x165667B19E3779F9 + 0x27D4EB2F165667C5) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _unit_interval(h: int) -> float:
    return (h >> 11) / float(1 << 53)


# --------------------------------------------------------------------------------------------
# Which metrics change


def changes_per_round(metric_count: int, change_rate: float) -> int:
    """Metrics whose metadata differs from the previous round (rounds >= 1)."""
    if not 0.0 <= change_rate <= 1.0:
        raise ValueError(f"change_rate must be between 0 and 1, got {change_rate}")
    if change_rate == 0.0 or metric_count == 0:
        return 0
    return min(metric_count, max(1, round(change_rate * metric_count)))


def changed_metric_count(metric_count: int, *, round_no: int, change_rate: float) -> int:
    """How many metrics of round ``round_no`` differ in metadata from round ``round_no - 1``."""
    return 0 if round_no == 0 else changes_per_round(metric_count, change_rate)


def changing_metrics(metric_count: int, *, change_rate: float, seed: int) -> set[int]:
    """Indices of the metrics edited in every round >= 1.

    A sparse Fisher-Yates shuffle, so the set for a higher rate contains the set for a lower one.
    """
    k = changes_per_round(metric_count, change_rate)
    rng = random.Random(_mix(seed, _HOT))
    moved: dict[int, int] = {}
    chosen: set[int] = set()
    for j in range(k):
        r = rng.randrange(j, metric_count)
        chosen.add(moved.get(r, r))
        moved[r] = moved.get(j, j)
    return chosen


# --------------------------------------------------------------------------------------------
# One tag (ATTRIBUTES_PER_TAG consecutive metrics) and one metric


@dataclass(frozen=True, slots=True)
class _Tag:
    prefix: str  # name up to and including the tag id, plus "/"
    kind: Kind
    description: str
    permission: str
    variant: int  # picks the engineering unit and range of the tag's analog attributes


def _tag(seed: int, number: int) -> _Tag:
    plant = PLANTS[_mix(seed, number, _PLANT) % len(PLANTS)]
    area, area_code = AREAS[_mix(seed, number, _AREA) % len(AREAS)]
    kind = KINDS[_mix(seed, number, _KIND) % len(KINDS)]
    # the running number makes every tag id unique: (number // 900, number % 900) <-> number
    tag_id = f"{area_code}{kind.code}{100 + number % 900}{kind.suffix}{number // 900:02d}"
    description = f"{kind.descriptions[_mix(seed, number, _DESC) % len(kind.descriptions)]} {tag_id}"
    return _Tag(f"{plant}/{area}/Normalised/{kind.category}/{tag_id}/", kind, description, PERMISSIONS[plant],
                _mix(seed, number, _UNIT))


def _base_properties(seed: int, index: int, tag: _Tag, attr: Attribute) -> dict[str, tuple[int, object]]:
    """``{key: (type, value)}`` in production order, as :func:`decode_properties` returns it."""
    low = high = 0.0
    unit = ""
    if attr.analog:
        unit = attr.units[tag.variant % len(attr.units)]
        low, high = attr.ranges[tag.variant % len(attr.ranges)]
    quality = STALE_QUALITY if _mix(seed, index, _QUALITY) % 32 == 0 else GOOD_QUALITY
    return {
        "engLow": (D, low), "retained": (B, True), "DataPermission": (S, tag.permission),
        "Quality": (I32, quality), "documentation": (S, f"{tag.description} - {attr.name}"),
        "engHigh": (D, high), "retain": (B, True), "executionMode": (I32, 1), "engUnit": (S, unit),
        "delete": (B, False),
    }


def _edit(props: dict[str, tuple[int, object]], attr: Attribute, seed: int, index: int, round_no: int) -> None:
    """Change one property of a metric for ``round_no`` >= 1 (differs from base and round - 1)."""
    h = _mix(seed, index, _EDIT)
    keys = ("documentation", "engUnit", "engHigh") if attr.analog and len(attr.units) >= 3 else ("documentation",)
    key = keys[h % len(keys)]
    t, current = props[key]
    if key == "documentation":
        value: object = f"{current} (rev {round_no})"
    elif key == "engUnit":
        others = [u for u in attr.units if u != current]
        value = others[(round_no - 1) % len(others)]  # consecutive rounds alternate
    else:
        value = round((float(current) or 1.0) * (1.0 + 0.1 * (1 + (round_no - 1) % 5)), 3)  # type: ignore[arg-type]
    props[key] = (t, value)


def _value(attr: Attribute, props: dict[str, tuple[int, object]], h: int) -> object:
    t = attr.datatype
    if t == DataType.Boolean:
        return bool(h & 1)
    if t == DataType.Int32:
        return int(h % 1000)
    if t == DataType.String:
        return STRING_VALUES[h % len(STRING_VALUES)]
    low, high = float(props["engLow"][1]), float(props["engHigh"][1])  # type: ignore[arg-type]
    return round(low + (high - low) * _unit_interval(h), 3)


def synthetic_metrics(
    metric_count: int, *, round_no: int, change_rate: float, seed: int, timestamp: int, alias_base: int = 0,
) -> Iterator[MetricSpec]:
    """The metrics of :func:`synthetic_birth`, one at a time (memory stays flat)."""
    if metric_count < 0 or round_no < 0:
        raise ValueError("metric_count and round_no must be >= 0")
    changes_per_round(metric_count, change_rate)  # validates the rate for round 0 too
    hot = changing_metrics(metric_count, change_rate=change_rate, seed=seed) if round_no else set()
    tag = _tag(seed, 0)
    for index in range(metric_count):
        number, slot = divmod(index, ATTRIBUTES_PER_TAG)
        if slot == 0:
            tag = _tag(seed, number)
        attr = tag.kind.attributes[slot]
        props = _base_properties(seed, index, tag, attr)
        if index in hot:
            _edit(props, attr, seed, index, round_no)
        h = _mix(seed, index, _VALUE + (round_no << 8))  # values and timestamps change every round
        yield MetricSpec(
            name=tag.prefix + attr.name,
            datatype=attr.datatype,
            alias=alias_base + index + 1,
            value=_value(attr, props, h),
            properties=props,
            timestamp=timestamp - (h >> 40) % 400,  # read just before the birth was sent
        )


def synthetic_birth(
    metric_count: int, *, round_no: int = 0, change_rate: float = 0.0, seed: int = 0, timestamp: int,
    alias_base: int = 0, seq: int = 1,
) -> bytes:
    """A binary DBIRTH payload of ``metric_count`` production-shaped metrics (docs/sparkplug.md).

    Deterministic: the same arguments give the same bytes. ``timestamp`` (ms) is the payload
    timestamp; metric timestamps are a few ms before it. ``alias_base`` keeps aliases unique
    across the devices of one edge node (Sparkplug aliases are per node).
    """
    metrics = synthetic_metrics(metric_count, round_no=round_no, change_rate=change_rate, seed=seed,
                                timestamp=timestamp, alias_base=alias_base)
    return encode_birth(metrics, timestamp=timestamp, seq=seq)
