"""Ingest as a Sparkplug host application through the real broker and daemons: TC-45.

Every group subscribed by default, the group allow-list, node/device lifecycle (bdSeq rule, admin,
metrics), the primary host's STATE and an edge node bound to it recovering births lost while
ingest was down (docs/sparkplug.md, "Host application").
"""

from __future__ import annotations

import queue
import re
import signal
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from django.urls import reverse

from catalog.models import Device, DeviceState, Metric, NodeState
from devtools.edge import changed_metric_count
from ingest.models import BirthFrame
from metasync.mqtt import make_client
from sparkplug.codec import MetricSpec, encode_birth
from sparkplug.datatypes import DataType
from sparkplug.host import State, bdseq_payload, parse_state, state_topic
from stack import Daemon, Stack, devstack_restart, mqtt_config, publish, running_stack, wait_for

pytestmark = pytest.mark.slow
transactional = pytest.mark.django_db(transaction=True)
TIMEOUT = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


def new_group() -> str:
    return f"T{uuid.uuid4().hex[:8]}"


def birth(n: int = 2) -> bytes:
    return encode_birth([MetricSpec(f"Area/Tag{i}", DataType.Double, value=float(i)) for i in range(n)],
                        timestamp=now_ms())


def applied(stack: Stack, topic: str, count: int = 1) -> list[BirthFrame]:
    def done() -> list[BirthFrame] | None:
        rows = list(BirthFrame.objects.filter(topic=topic).order_by("id"))
        return rows if len(rows) >= count and all(r.status != "received" for r in rows) else None

    rows = stack.wait_for(done, TIMEOUT, f"{count} processed frame(s) on {topic}", interval=0.1)
    assert [r.status for r in rows] == ["applied"] * count, [(r.status, r.reason) for r in rows]
    return rows


class StateWatch:
    """Collects the STATE messages of one host id (retained one first)."""

    def __init__(self, host_id: str) -> None:
        self.topic = state_topic(host_id)
        self.states: queue.Queue[State | None] = queue.Queue()
        self.client = make_client(mqtt_config())
        self.client.on_connect = lambda c, *a: c.subscribe(self.topic, qos=1)
        self.client.on_message = lambda c, u, m: self.states.put(parse_state(m.payload) if m.payload else None)

    def __enter__(self) -> StateWatch:
        config = mqtt_config()
        self.client.connect(config.host, config.port)
        self.client.loop_start()
        return self

    def next(self, timeout: float = TIMEOUT) -> State | None:
        return self.states.get(timeout=timeout)

    def __exit__(self, *exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@transactional
def test_group_allow_list_ignores_other_groups_and_logs_each_topic_once(django_db_setup, tmp_path):
    """TC-45: SPARKPLUG_GROUPS=<g>: a birth of g is applied; three births on a topic of another group
    leave no ledger row, are counted and logged once. First in the module: no other ingest subscribed."""
    allowed, other = new_group(), new_group()
    probe = f"Tprobe{uuid.uuid4().hex[:8]}"
    with running_stack(tmp_path, topic="", probe_group=probe,
                       extra_env={"SPARKPLUG_GROUPS": f"{allowed},{probe}", "MQTT_TOPIC": ""}) as s:
        ignored = f"spBv1.0/{other}/DBIRTH/Edge1/Dev1"
        for _ in range(3):
            publish(ignored, birth())
        publish(f"spBv1.0/{allowed}/DBIRTH/Edge1/Dev1", birth())
        applied(s, f"spBv1.0/{allowed}/DBIRTH/Edge1/Dev1")
        s.wait_for(lambda: s.metrics().get("metasync_ingest_topics_ignored_total") == 3.0, TIMEOUT,
                   "3 ignored frames counted")
        assert not BirthFrame.objects.filter(topic__contains=other).exists()
        assert s.ingest.text().count(f"ignoring {ignored}") == 1, s.logs()


@pytest.fixture(scope="module")
def host(django_db_setup, tmp_path_factory) -> Iterator[Stack]:
    """ingest_births with the default subscriptions (every group) as primary host, and a worker."""
    host_id = f"metasync-test-{uuid.uuid4().hex[:8]}"
    with running_stack(tmp_path_factory.mktemp("host"), topic="",
                       extra_env={"SPARKPLUG_HOST_ID": host_id, "MQTT_TOPIC": "", "MQTT_KEEPALIVE": "5"}) as s:
        s.host_id = host_id  # type: ignore[attr-defined]
        yield s
    publish(state_topic(host_id), b"", qos=1)  # no retained STATE left behind (empty retained: cleared)


@transactional
def test_births_of_any_group_are_ingested(host):
    """TC-45: with no allow-list ingest subscribes to spBv1.0/+/DBIRTH/# and the lifecycle verbs:
    births of two groups never seen before are applied; an NDATA is not even received."""
    before = host.metrics()["metasync_ingest_frames_received_total"]
    topics = [f"spBv1.0/{new_group()}/DBIRTH/Edge1/Dev1" for _ in range(2)]
    for topic in topics:
        publish(topic, birth())
    for topic in topics:
        applied(host, topic)
    publish(f"spBv1.0/{new_group()}/NDATA/Edge1", birth(), qos=1)
    publish(f"spBv1.0/{new_group()}/DBIRTH/Edge1/Marker", birth())
    host.wait_for(lambda: host.metrics()["metasync_ingest_frames_received_total"] >= before + 3, TIMEOUT,
                  "the marker birth")
    assert host.metrics()["metasync_ingest_frames_received_total"] == before + 3  # 2 births + marker, no NDATA


@transactional
def test_lifecycle_follows_births_deaths_and_the_bdseq_rule(host, admin_client):
    """TC-45: NBIRTH(bdSeq 5) + DBIRTH → node and device online (admin and gauges say so); an NDEATH
    with bdSeq 4 is ignored; NDEATH(bdSeq 5) takes node and device offline — the device page and the
    metric list show it dead; DBIRTH then DDEATH toggles the device alone."""
    g = new_group()
    node, dev = f"spBv1.0/{g}/{{}}/Edge1", f"spBv1.0/{g}/{{}}/Edge1/Dev1"
    publish(node.format("NBIRTH"), bdseq_payload(5, now_ms(), 0))
    publish(dev.format("DBIRTH"), birth())
    applied(host, dev.format("DBIRTH"))

    def node_state() -> NodeState:
        return NodeState.objects.get(group_id=g, edge="Edge1")

    def device_state() -> DeviceState:
        return DeviceState.objects.get(group_id=g, edge="Edge1", device="Dev1")

    host.wait_for(lambda: NodeState.objects.filter(group_id=g, online=True, bd_seq=5).exists(), TIMEOUT, "NBIRTH")
    assert device_state().online and device_state().last_birth_at is not None
    gauges = host.metrics()
    assert gauges["metasync_nodes_online"] >= 1 and gauges["metasync_devices_online"] >= 1
    device = Device.objects.get(group_id=g, edge="Edge1", device="Dev1")
    page = admin_client.get(reverse("admin:catalog_device_change", args=[device.pk])).content.decode()
    assert "online, bdSeq 5" in page

    publish(node.format("NDEATH"), bdseq_payload(4, now_ms()))  # an older session's late death
    publish(f"spBv1.0/{g}/DBIRTH/Edge1/Marker", birth())  # frames are handled in arrival order
    applied(host, f"spBv1.0/{g}/DBIRTH/Edge1/Marker")
    assert node_state().online and device_state().online
    assert "NDEATH of " + f"{g}/Edge1 ignored: bdSeq 4" in host.ingest.text()

    publish(node.format("NDEATH"), bdseq_payload(5, now_ms()))
    host.wait_for(lambda: not node_state().online, TIMEOUT, "NDEATH with the NBIRTH's bdSeq")
    assert not device_state().online and device_state().last_death_at is not None
    page = admin_client.get(reverse("admin:catalog_device_change", args=[device.pk])).content.decode()
    assert "DEAD, bdSeq 5" in page
    metric = Metric.objects.filter(device=device).first()
    listing = admin_client.get(reverse("admin:catalog_metric_changelist") + f"?q={g}").content.decode()
    assert metric is not None and metric.uns_path in listing and "DEAD" in listing

    publish(dev.format("DBIRTH"), birth(3))
    host.wait_for(lambda: device_state().online, TIMEOUT, "DBIRTH sets the device online")
    publish(dev.format("DDEATH"), bdseq_payload(0, now_ms()))
    host.wait_for(lambda: not device_state().online, TIMEOUT, "DDEATH")
    listing = admin_client.get(reverse("admin:catalog_device_changelist") + f"?q={g}").content.decode()
    assert "DEAD" in listing


@transactional
def test_primary_host_state_birth_will_and_rebirth_of_a_bound_edge(host, tmp_path):
    """TC-45: ingest (primary host) keeps a retained online STATE; a Sparkplug 3.0 edge node bound to it
    publishes round 0; ingest is SIGKILLed and the broker delivers its will (offline, same timestamp as
    the birth); the edge's round 1 published meanwhile is lost (no ledger frame with its timestamp);
    ingest comes back with a newer online STATE, the edge re-publishes NBIRTH + round 1 and the
    catalog gets round 1's changes."""
    g, metrics = new_group(), 200
    topic = f"spBv1.0/{g}/DBIRTH/Edge1/Sim"
    with StateWatch(host.host_id) as watch:
        first = watch.next()
        assert first is not None and first.online, first
        edge = Daemon("simulate_edge", [sys.executable, "manage.py", "simulate_edge", "--group", g, "--edge", "Edge1",
                                        "--devices", "Sim", "--metrics", str(metrics), "--change-rate", "0.1",
                                        "--primary-host", host.host_id, "--client-id", f"test-edge-{g}"],
                      host.env, tmp_path / "edge.log")
        edge.start()
        try:
            applied(host, topic)
            host.wait_for(lambda: NodeState.objects.filter(group_id=g, online=True).exists(), TIMEOUT, "NBIRTH")

            host.kill("ingest")  # SIGKILL: no clean disconnect, the broker sends the will
            will = watch.next(timeout=30)  # at once (socket closed) or after 1.5 x keepalive (5 s)
            assert will == State(False, first.timestamp), will
            wait_for(lambda: "offline" in edge.since_start(), TIMEOUT, "the edge to see the host offline")
            edge.kill(signal.SIGUSR1)  # the device changed: round 1, published while ingest is down
            lost = wait_for(lambda: re.search(r"round 1 \(ts (\d+)\)", edge.since_start()), TIMEOUT,
                            "the edge to publish round 1")
            lost_ts = int(lost.group(1))

            host.start("ingest")
            back = watch.next()
            assert back is not None and back.online and back.timestamp > first.timestamp, back
            rows = applied(host, topic, 2)
        finally:
            edge.stop()
        assert lost_ts not in [r.payload_ts for r in rows]  # the round-1 publish itself never arrived
        assert rows[1].counts["changed"] == changed_metric_count(metrics, round_no=1, change_rate=0.1), rows[1].counts
        assert Metric.objects.filter(device__group_id=g).count() == metrics
        assert "rebirth" in edge.text()
        assert NodeState.objects.get(group_id=g, edge="Edge1").online


@transactional
def test_primary_host_republishes_state_after_a_reconnect(host):
    """TC-45: ingest's connection is taken over (a client with its client id connects and leaves): the
    broker publishes the will (offline, the birth's timestamp); paho reconnects and ingest publishes a
    new online STATE with a newer timestamp, the will re-armed with it."""
    with StateWatch(host.host_id) as watch:
        first = watch.next()
        assert first is not None and first.online, first
        intruder = make_client(mqtt_config(client_id=host.env["MQTT_CLIENT_ID"]))
        config = mqtt_config()
        intruder.connect(config.host, config.port)
        intruder.loop_start()
        try:
            assert watch.next() == State(False, first.timestamp)
        finally:
            intruder.disconnect()
            intruder.loop_stop()
        again = watch.next()
        assert again is not None and again.online and again.timestamp > first.timestamp, again
        host.wait_subscribed()


@transactional
def test_primary_host_republishes_state_after_a_broker_restart(host):
    """TC-45: the broker restarts (it keeps no retained message and sends no will when it dies):
    ingest reconnects on its own and publishes a new online STATE with a newer timestamp, which is
    what edge nodes bound to it wait for before they publish their births again; births apply."""
    with StateWatch(host.host_id) as watch:
        first = watch.next()
        assert first is not None and first.online, first
        devstack_restart("mosquitto")
        deadline = time.monotonic() + TIMEOUT
        while True:  # the watcher reconnects too and may see the old session's messages first
            state = watch.next(max(0.1, deadline - time.monotonic()))
            if state is not None and state.online and state.timestamp > first.timestamp:
                break
        host.wait_subscribed()
    topic = f"spBv1.0/{new_group()}/DBIRTH/Edge1/Dev1"
    publish(topic, birth())
    applied(host, topic)


@pytest.mark.unit
def test_state_json_and_bdseq_round_trip():
    """TC-45: the STATE body is the spec's JSON; anything else is not a STATE; bdSeq reads back;
    the host subscriptions cover every group, with the $share prefix when asked."""
    from sparkplug.host import read_bdseq, state_payload, subscriptions

    assert subscriptions() == ["spBv1.0/+/DBIRTH/#", "spBv1.0/+/NBIRTH/#", "spBv1.0/+/NDEATH/#", "spBv1.0/+/DDEATH/#"]
    assert subscriptions("ing")[0] == "$share/ing/spBv1.0/+/DBIRTH/#"

    assert parse_state(state_payload(True, 1700000000000)) == State(True, 1700000000000)
    assert parse_state(b'{"online": "yes", "timestamp": 1}') is None
    assert parse_state(b"\xff") is None
    assert read_bdseq(bdseq_payload(7, 1, 0)) == 7
    assert read_bdseq(birth()) is None

