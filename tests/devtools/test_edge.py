"""The synthetic birth generator (ingest/simulator.py) behind simulate_edge and the benchmark.

Pure: decodes with ingest.sparkplug, no database and no broker needed.
"""

from __future__ import annotations

import pytest

from catalog import uns
from devtools.edge import (
    changed_metric_count,
    changes_per_round,
    changing_metrics,
    synthetic_birth,
)
from sparkplug.codec import decode_properties, iter_metrics, read_header
from sparkplug.datatypes import DataType

pytestmark = pytest.mark.unit  # pure: no database, broker or Redis (the `unit` stage of make test)

# Key order and types of the production capture (fixtures/dbirth_portugal_cement.pb.json).
PRODUCTION_PROPERTIES = [
    ("engLow", DataType.Double), ("retained", DataType.Boolean), ("DataPermission", DataType.String),
    ("Quality", DataType.Int32), ("documentation", DataType.String), ("engHigh", DataType.Double),
    ("retain", DataType.Boolean), ("executionMode", DataType.Int32), ("engUnit", DataType.String),
    ("delete", DataType.Boolean),
]
T0 = 1_756_392_554_816


def birth(metric_count: int = 400, *, round_no: int = 0, change_rate: float = 0.0, seed: int = 7,
          timestamp: int = T0) -> bytes:
    return synthetic_birth(metric_count, round_no=round_no, change_rate=change_rate, seed=seed, timestamp=timestamp)


def metadata(payload: bytes) -> dict[str, tuple[int, dict]]:
    """name -> (datatype, decoded properties): everything that is metadata, nothing that is a value."""
    return {m.name: (m.datatype, decode_properties(m.properties, where=m.where)) for m in iter_metrics(payload)}


def changed_keys(before: dict, after: dict) -> dict[str, list[str]]:
    assert before.keys() == after.keys()
    return {
        name: [key for key in after[name][1] if after[name][1][key] != before[name][1][key]]
        for name in after if after[name] != before[name]
    }


def test_same_arguments_give_the_same_bytes() -> None:
    assert birth(round_no=3, change_rate=0.05) == birth(round_no=3, change_rate=0.05)


def test_seed_changes_the_tag_set() -> None:
    assert metadata(birth(seed=1)).keys() != metadata(birth(seed=2)).keys()


def test_every_metric_has_the_ten_production_properties_with_their_types() -> None:
    metrics = list(iter_metrics(birth(400)))
    assert len(metrics) == 400
    for m in metrics:
        props = decode_properties(m.properties, where=m.where)
        assert [(key, t) for key, (t, _value) in props.items()] == PRODUCTION_PROPERTIES, m.where
        assert props["DataPermission"][1].startswith("user_domainSecil(R);G_UNS_Admin(RW)")
        assert props["Quality"][1] in (192, -2147483132)  # both seen in the production capture


def test_metrics_look_like_the_production_capture() -> None:
    metrics = list(iter_metrics(birth(2000)))
    names = [m.name for m in metrics]
    assert len(set(names)) == len(names)
    assert {name.split("/")[0] for name in names} == {"Maceira", "Outão", "Pataias"}
    assert all(name.split("/")[3] == "Normalised" for name in names)
    assert {DataType(m.datatype) for m in metrics} == {
        DataType.Boolean, DataType.Float, DataType.Double, DataType.Int32, DataType.String}
    assert [m.alias for m in metrics] == list(range(1, 2001))
    # every name is a distinct, valid UNS path (no normalization collisions)
    paths = {uns.metric_path("Secil/Portugal/Simulator", name) for name in names}
    assert len(paths) == len(names)


def test_values_and_timestamps_change_every_round_but_metadata_does_not() -> None:
    first, second = birth(round_no=0, timestamp=T0), birth(round_no=1, timestamp=T0 + 30_000)
    assert first != second
    assert read_header(second).timestamp == T0 + 30_000
    assert metadata(first) == metadata(second)  # change_rate 0: an identical re-birth
    stamps = [m.timestamp for m in iter_metrics(second)]
    assert all(T0 + 30_000 - 400 < t <= T0 + 30_000 for t in stamps)


@pytest.mark.parametrize("change_rate, expected", [(0.01, 10), (0.02, 20), (0.0005, 1)])
def test_change_rate_is_honoured_between_consecutive_rounds(change_rate: float, expected: int) -> None:
    rounds = [metadata(birth(1000, round_no=r, change_rate=change_rate)) for r in range(5)]
    for r in range(1, 5):
        diff = changed_keys(rounds[r - 1], rounds[r])
        assert len(diff) == expected == changed_metric_count(1000, round_no=r, change_rate=change_rate)
        assert all(len(keys) == 1 for keys in diff.values()), diff  # one property per changed metric
        assert {key for keys in diff.values() for key in keys} <= {"documentation", "engUnit", "engHigh"}


def test_a_change_after_an_identical_rebirth_touches_exactly_the_rate() -> None:
    """The benchmark's sequence: round 1 unchanged, round 2 with 1 % changed in one property each."""
    base = metadata(birth(2000, round_no=1, change_rate=0.0))
    changed = metadata(birth(2000, round_no=2, change_rate=0.01))
    diff = changed_keys(base, changed)
    assert len(diff) == 20 and all(len(keys) == 1 for keys in diff.values())


def test_edits_keep_the_property_types() -> None:
    edited = metadata(birth(1000, round_no=4, change_rate=0.1))
    for _datatype, props in edited.values():
        assert [(key, t) for key, (t, _value) in props.items()] == PRODUCTION_PROPERTIES


def test_round_zero_is_the_base_metadata_whatever_the_rate() -> None:
    assert metadata(birth(round_no=0, change_rate=0.5)) == metadata(birth(round_no=0, change_rate=0.0))
    assert changed_metric_count(400, round_no=0, change_rate=0.5) == 0


def test_the_changing_set_grows_with_the_rate() -> None:
    small = changing_metrics(5000, change_rate=0.01, seed=3)
    large = changing_metrics(5000, change_rate=0.05, seed=3)
    assert len(small) == 50 and len(large) == 250 and small <= large


def test_aliases_can_be_offset_per_device() -> None:
    payload = synthetic_birth(5, round_no=0, change_rate=0.0, seed=1, timestamp=T0, alias_base=10_000_000)
    assert [m.alias for m in iter_metrics(payload)] == [10_000_001, 10_000_002, 10_000_003, 10_000_004, 10_000_005]


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_an_impossible_change_rate_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="change_rate"):
        changes_per_round(100, rate)
    with pytest.raises(ValueError, match="change_rate"):
        birth(10, change_rate=rate)
