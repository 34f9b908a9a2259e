"""UNS identity (catalog/uns.py, sparkplug/topic.py): TC-02 paths, canary ids, topics, conventions, collisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catalog.uns import (
    Attributes,
    Convention,
    PathCollisions,
    canary_id,
    classify,
    device_path,
    find_collisions,
    metric_path,
    normalize_segment,
    topic_device_path,
)
from sparkplug.topic import Topic, TopicError, parse_topic

pytestmark = pytest.mark.unit  # pure: no database, broker or Redis (the `unit` stage of make test)

CAPTURES = sorted((Path(__file__).resolve().parents[2] / "fixtures" / "captures").glob("*.jsonl"))


def capture_metrics() -> list[tuple[str, str, dict]]:
    """(topic, device_uns_path, metric) for every metric of every capture line."""
    out = []
    for path in CAPTURES:
        for line in path.read_text().splitlines():
            if line.strip():
                frame = json.loads(line)
                out.extend((frame["topic"], frame["device_uns_path"], m) for m in frame["metrics"])
    return out


def test_captures_are_present():
    """TC-02: the production captures are there (guards an empty parametrization)."""
    assert len(CAPTURES) == 8
    assert len(capture_metrics()) > 90


@pytest.mark.parametrize(("topic", "device_uns_path", "metric"), capture_metrics())
def test_paths_and_canary_ids_match_every_capture(topic, device_uns_path, metric):
    """TC-02: our uns_path/canary_id equal the earlier implementation's for every capture line."""
    dev = topic_device_path(parse_topic(topic))
    assert dev == device_uns_path
    path = metric_path(dev, metric["name"])
    assert path == metric["uns_path"]
    assert canary_id(path) == metric["canary_id"]


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("400 - Clinker Production", "400_-_Clinker_Production"),
        ("Outão", "Outão"),  # Unicode letters stay
        ("Outa\u0303o", "Outão"),  # NFC: decomposed form is the same segment
        ("FORA SERVIÇO", "FORA_SERVIÇO"),
        ("H32.1", "H32_1"),  # '.' is Canary's separator
        ("a+b#c/d", "a_b_c_d"),
        ("  padded\t", "padded"),
        ("many   \t spaces", "many_spaces"),
        ("a\u00a0b", "a_b"),  # no-break space is whitespace
        ("x__y", "x_y"),
        ("x_ .y", "x_y"),  # mixed runs collapse to one '_'
        ("a-b--c", "a-b--c"),  # '-' kept, never collapsed
        ("Foo.", "Foo_"),
        ("(R);G_UNS_Admin(RW)", "_R_G_UNS_Admin_RW_"),
        ("°C", "_C"),
        ("²", "²"),  # a Unicode digit (str.isalnum)
        ("日本語", "日本語"),
        ("", "_"),
        ("   ", "_"),
        ("...", "_"),
    ],
)
def test_normalize_segment(segment, expected):
    """TC-02: NFC, trim, whitespace/illegal -> '_', collapse, never empty."""
    assert normalize_segment(segment) == expected


def test_normalize_segment_is_idempotent():
    """TC-02: normalizing a normalized segment changes nothing."""
    for s in ["400 - Clinker Production", "Outão", "a.b", "...", "x _ y", "-"]:
        once = normalize_segment(s)
        assert normalize_segment(once) == once


def test_device_path_for_device_and_node():
    """TC-02: group/edge/device, and group/edge for node-level (NBIRTH) metrics."""
    assert device_path("Secil", "Portugal", "Cement") == "Secil/Portugal/Cement"
    assert device_path("Secil", "Portugal") == "Secil/Portugal"
    assert device_path("My Group", "Edge.1", "Dev 2") == "My_Group/Edge_1/Dev_2"


def test_metric_path_spec_example():
    """TC-02: the docs/catalog.md example."""
    assert metric_path("Secil/Portugal/Cement", "Maceira/400 - Clinker Production/431 - Kiln/KPI/KPI") == (
        "Secil/Portugal/Cement/Maceira/400_-_Clinker_Production/431_-_Kiln/KPI/KPI"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a//b", "D/a/b"),
        ("/a/b/", "D/a/b"),
        ("a/ /b", "D/a/b"),
        ("", "D/_"),
        ("/", "D/_"),
        ("a.b/c", "D/a_b/c"),
        ("Outão/Forno 1/T.1", "D/Outão/Forno_1/T_1"),
    ],
)
def test_metric_path_folders(name, expected):
    """TC-02: '/' separates folders; empty segments dropped; never an empty path."""
    assert metric_path("D", name) == expected


def test_canary_id_replaces_slashes_only():
    """TC-02: dots never survive normalization, so the Canary id maps back to one path."""
    path = metric_path(device_path("Secil", "Portugal", "Cement"), "Maceira/T.1")
    assert canary_id(path) == "Secil.Portugal.Cement.Maceira.T_1"
    assert canary_id(path).replace(".", "/") == path


def test_paths_are_deterministic():
    """TC-02: the same input always gives the same path (cache or not)."""
    name = "Maceira/600 - Cement Packaging and Dispatch/EXT SILO 23 - FORA SERVIÇO"
    first = metric_path("Secil/Portugal/Cement", name)
    normalize_segment.cache_clear()
    assert metric_path("Secil/Portugal/Cement", name) == first


# ---------------------------------------------------------------------------------------------
# Topics


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("spBv1.0/Secil/DBIRTH/Portugal/Cement", Topic("spBv1.0", "Secil", "DBIRTH", "Portugal", "Cement")),
        ("spBv1.0/Secil/NBIRTH/Portugal", Topic("spBv1.0", "Secil", "NBIRTH", "Portugal", None)),
        ("spBv1.0/Secil/NCMD/Edge", Topic("spBv1.0", "Secil", "NCMD", "Edge", None)),
        ("spBv1.0/G/DDATA/Outão/Forno 1", Topic("spBv1.0", "G", "DDATA", "Outão", "Forno 1")),
    ],
)
def test_parse_topic(topic, expected):
    """TC-02: valid node and device topics."""
    assert parse_topic(topic) == expected


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("spBv1.0/STATE/scada-host", "STATE is a host application topic"),
        ("STATE/scada-host", "namespace is 'STATE'"),
        ("spAv1.0/G/DBIRTH/E/D", "namespace is 'spAv1.0'"),
        ("spBv1.0/G/DBIRTH/E", "DBIRTH needs a device id"),
        ("spBv1.0/G/NBIRTH/E/D", "NBIRTH is a node verb and takes no device id"),
        ("spBv1.0/G/BIRTH/E/D", "unknown verb 'BIRTH'"),
        ("spBv1.0/G/DBIRTH/E/D/extra", "too many levels"),
        ("spBv1.0/G/DBIRTH", "expected spBv1.0/<group>/<verb>/<edge>"),
        ("spBv1.0//DBIRTH/E/D", "empty group id"),
        ("spBv1.0/G/DBIRTH//D", "empty edge node id"),
        ("spBv1.0/G/DBIRTH/E/", "empty device id"),
        ("spBv1.0/G+/DBIRTH/E/D", "group id 'G+' contains '+'"),
        ("spBv1.0/G/DBIRTH/#/D", "edge node id '#' contains '#'"),
        ("spBv1.0/G/DBIRTH/E/+", "device id '+' contains '+'"),
        ("", "namespace is ''"),
    ],
)
def test_parse_topic_rejects(topic, reason):
    """TC-02: anything but spBv1.0/<group>/<verb>/<edge>[/<device>] is a TopicError with a reason."""
    with pytest.raises(TopicError, match=reason.replace("+", r"\+").replace(".", r"\.")):
        parse_topic(topic)
    assert issubclass(TopicError, ValueError)


# ---------------------------------------------------------------------------------------------
# Convention (filter attributes)


def test_default_convention_on_a_country_node():
    """TC-02: country = edge, business unit = device, plant = first folder."""
    topic = parse_topic("spBv1.0/Secil/DBIRTH/Portugal/Cement")
    assert classify(topic, "Maceira/400 - Clinker Production/431 - Kiln/KPI/KPI") == Attributes(
        country="Portugal", business_unit="Cement", plant="Maceira"
    )


def test_default_convention_tolerates_non_country_nodes():
    """TC-02: production nodes Edge and Normalised are not countries."""
    assert classify(parse_topic("spBv1.0/Secil/DBIRTH/Edge/DOMO"), "flow_stoppages/WD").country is None
    assert classify(parse_topic("spBv1.0/Secil/DBIRTH/Normalised/System"), "Canary_OK") == Attributes(
        None, "System", None
    )


def test_no_plant_for_sparkplug_folders_or_names_without_folders():
    """TC-02: `Device Control/Rebirth`, `Node Control/...` and `bdSeq` have no plant."""
    dev = parse_topic("spBv1.0/Secil/DBIRTH/Brazil/Cement")
    node = parse_topic("spBv1.0/Secil/NBIRTH/Brazil")
    assert classify(dev, "Device Control/Rebirth") == Attributes("Brazil", "Cement", None)
    assert classify(node, "Node Control/Rebirth") == Attributes("Brazil", None, None)
    assert classify(node, "bdSeq") == Attributes("Brazil", None, None)


def test_non_country_edges_are_configurable():
    """TC-02: the set of non-country edge ids is a parameter."""
    topic = parse_topic("spBv1.0/EdgeDevices/NBIRTH/TransmissionMaceira")
    assert classify(topic, "bdSeq").country == "TransmissionMaceira"
    assert classify(topic, "bdSeq", non_country_edges={"TransmissionMaceira"}).country is None
    edge = parse_topic("spBv1.0/Secil/DBIRTH/Edge/DOMO")
    assert classify(edge, "a/b", non_country_edges=()).country == "Edge"
    custom = Convention(name="lab", non_country_edges=frozenset({"Lab"}))
    assert classify(parse_topic("spBv1.0/G/DBIRTH/Lab/D"), "P/x", custom) == Attributes(None, "D", "P")
    with pytest.raises(ValueError, match="unknown UNS convention 'nope'"):
        classify(edge, "a/b", "nope")


# ---------------------------------------------------------------------------------------------
# Collisions


def test_collisions_report_the_later_name():
    """TC-02: two names normalizing to one path in a device: the second is the conflict."""
    dev = "Secil/Portugal/Cement"
    names = ["Plant/T.1", "Plant/T 1", "Plant/T_1", "Plant/T.1", "Plant/T-1", "Plant//T.1"]
    collisions = find_collisions((n, metric_path(dev, n)) for n in names)
    assert [(c.name, c.existing_name) for c in collisions] == [
        ("Plant/T 1", "Plant/T.1"),
        ("Plant/T_1", "Plant/T.1"),
        ("Plant//T.1", "Plant/T.1"),
    ]  # the repeated "Plant/T.1" is not a collision; "T-1" is a different path
    assert collisions[0].path == "Secil/Portugal/Cement/Plant/T_1"
    assert "already used by 'Plant/T.1'" in collisions[0].reason


def test_path_collisions_can_start_from_known_owners():
    """TC-02: paths already owned (e.g. in the catalog) win over names in a new birth."""
    pc = PathCollisions(owners=[("old/name", "D/old/name")])
    assert pc.add("old/name", "D/old/name") is None
    clash = pc.add("old.name", "D/old/name")
    assert clash is not None and clash.existing_name == "old/name"
    assert pc.owner("D/old/name") == "old/name"
    assert pc.collisions == [clash]
