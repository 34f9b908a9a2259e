"""MQTT ingest through the real broker and real daemons: TC-10, TC-11, TC-12, SEC-01, malformed input.

One ``ingest_births --topic 'spBv1.0/#'`` + Celery worker pair serves the whole module (see
``tests/stack.py``); every test uses group ids of its own, so tests never see each other's frames.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from itertools import islice, product
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db.models import Count, Max

from catalog.models import Device, Metric, MetricProperty, MetricVersion
from ingest.models import BirthFrame
from metasync.mqtt import config_from_settings, make_client, tls_context
from sparkplug import sparkplug_b_pb2 as pb
from sparkplug.codec import MetricSpec, encode_birth
from sparkplug.datatypes import DataType
from stack import BASE_DIR, Publisher, RowChange, Stack, mqtt_config, pgoutput_row_changes, publish, running_stack

pytestmark = pytest.mark.slow
transactional = pytest.mark.django_db(transaction=True)

CERTS = BASE_DIR / ".devstack" / "certs"
FRAME_TIMEOUT = 60.0  # seconds for a small frame to go broker -> ledger -> applied


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory) -> Iterator[Stack]:
    """ingest_births (DEBUG logs, paho's included: SEC-01) + a worker, for the whole module."""
    with running_stack(tmp_path_factory.mktemp("stack"), ingest_log_level="DEBUG") as s:
        yield s


@pytest.fixture
def daemons(stack: Stack) -> Iterator[Stack]:
    """The module's stack; prints the daemons' log lines of this test (pytest shows them on failure)."""
    offsets = {d: d.log_path.stat().st_size for d in (stack.ingest, stack.worker)}
    yield stack
    for daemon, offset in offsets.items():
        with open(daemon.log_path, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        print(f"----- {daemon.name}: last {min(len(lines), 150)} of {len(lines)} lines of this test -----")
        print("\n".join(lines[-150:]))


# ---------------------------------------------------------------------------------------------
# Builders


def new_group() -> str:
    return f"T{uuid.uuid4().hex[:8]}"


def now_ms() -> int:
    return int(time.time() * 1000)


def tag_properties(i: int, documentation: str | None = None) -> dict[str, tuple[int, object]]:
    """The 10 properties a production (Ignition transmitter) metric carries, mixed types."""
    return {
        "engLow": (DataType.Double, 0.0),
        "retained": (DataType.Boolean, True),
        "DataPermission": (DataType.String, "user_domainSecil(R);G_UNS_Admin(RW)"),
        "Quality": (DataType.Int32, 192),
        "documentation": (DataType.String, documentation if documentation is not None else f"Tag {i}"),
        "engHigh": (DataType.Double, 100.0),
        "retain": (DataType.Boolean, True),
        "executionMode": (DataType.Int32, 1),
        "engUnit": (DataType.String, "t/h"),
        "delete": (DataType.Boolean, False),
    }


def tag(i: int, name: str | None = None, **props: object) -> MetricSpec:
    return MetricSpec(name or f"Maceira/400 - Clinker Production/Area/Tag{i:06d}", DataType.Double, alias=i,
                      value=float(i), properties=tag_properties(i, **props))  # type: ignore[arg-type]


def birth(n: int = 3, *, timestamp: int | None = None) -> bytes:
    return encode_birth([tag(i) for i in range(n)], timestamp=timestamp or now_ms())


def big_birth(n: int) -> bytes:
    """Production-shaped: ``n`` metrics x 10 properties, ~340 bytes per metric."""
    return encode_birth(
        (tag(i, f"Maceira/400 - Clinker Production/432 - Kiln/Normalised/Machines/FO6RGH{i:06d}/Closed",
             documentation=f"Valve H32.{i} - Closed") for i in range(n)),
        timestamp=now_ms())


# ---------------------------------------------------------------------------------------------
# Ledger and catalog helpers

FRAME_FIELDS = ("id", "topic", "status", "reason", "counts", "size")


def frames(*, topic: str | None = None, prefix: str | None = None) -> list[dict]:
    qs = BirthFrame.objects.all()
    if topic is not None:
        qs = qs.filter(topic=topic)
    if prefix is not None:
        qs = qs.filter(topic__startswith=prefix)
    return list(qs.order_by("id").values(*FRAME_FIELDS))


def settled(stack: Stack, count: int, *, topic: str | None = None, prefix: str | None = None,
            timeout: float = FRAME_TIMEOUT) -> list[dict]:
    """The ledger rows of ``topic``/``prefix`` once ``count`` exist and none is still ``received``."""
    def done() -> list[dict] | None:
        rows = frames(topic=topic, prefix=prefix)
        return rows if len(rows) >= count and all(r["status"] != "received" for r in rows) else None

    rows = stack.wait_for(done, timeout, f"{count} ledger frame(s) on {topic or prefix + '*'} to be processed",
                          interval=0.1)
    assert len(rows) == count, f"expected {count} frames, got {len(rows)}: {rows}\n{stack.logs()}"
    return rows


def only_frame(stack: Stack, topic: str) -> dict:
    return settled(stack, 1, topic=topic)[0]


def catalog_counts(device: Device) -> dict[str, int]:
    return {
        "metrics": Metric.objects.filter(device=device).count(),
        "properties": MetricProperty.objects.filter(metric__device=device).count(),
        "versions": MetricVersion.objects.filter(metric__device=device).count(),
    }


def ingest_snapshot(stack: Stack) -> tuple[dict[str, float], int]:
    """Ingest metrics and the ledger's max id at a moment when every received frame is stored."""
    def take() -> tuple[dict[str, float], int] | None:
        first = stack.metrics()
        max_id = BirthFrame.objects.aggregate(m=Max("id"))["m"] or 0
        second = stack.metrics()
        keys = ("metasync_ingest_frames_received_total", "metasync_ingest_frames_stored_total")
        if first[keys[0]] == first[keys[1]] and all(first[k] == second[k] for k in keys):
            return second, max_id
        return None

    return stack.wait_for(take, 60, "ingest to be idle (frames received == frames stored)", interval=0.1)


def admin_connection() -> psycopg.Connection:
    assert settings.DATABASE_ADMIN_URL, "DATABASE_ADMIN_URL (superuser) is needed for a replication slot"
    return psycopg.connect(settings.DATABASE_ADMIN_URL, dbname=settings.DATABASES["default"]["NAME"],
                           autocommit=True)


# ---------------------------------------------------------------------------------------------
# TC-10


@transactional
def test_ingest_connects_over_tls13_and_resubscribes_after_broker_restart(daemons):
    """TC-10: ingest connects with TLS 1.3 and credentials (metrics say connected; a published DBIRTH
    lands in the ledger and is applied); after `scripts/devstack restart mosquitto` it reconnects and
    re-subscribes: a birth published after the restart is applied too and a disconnect was counted."""
    stack = daemons
    assert stack.metrics()["metasync_ingest_connected"] == 1.0
    g = new_group()
    before_restart = f"spBv1.0/{g}/DBIRTH/Edge1/Before"
    publish(before_restart, birth(3))
    row = only_frame(stack, before_restart)
    assert row["status"] == "applied", row
    assert row["counts"]["new"] == 3

    disconnects = stack.metrics()["metasync_ingest_disconnects_total"]
    restart = subprocess.run([sys.executable, "scripts/devstack", "restart", "mosquitto"], cwd=BASE_DIR,
                             capture_output=True, text=True, timeout=120)
    assert restart.returncode == 0, f"devstack restart failed:\n{restart.stdout}\n{restart.stderr}"
    stack.wait_for(lambda: stack.metrics()["metasync_ingest_disconnects_total"] >= max(disconnects + 1, 1),
                   30, "ingest to count the disconnect")
    stack.wait_connected(60)
    stack.wait_subscribed(60)  # a probe frame published after the restart arrives: re-subscribed

    after_restart = f"spBv1.0/{g}/DBIRTH/Edge1/After"
    publish(after_restart, birth(4))
    row = only_frame(stack, after_restart)
    assert row["status"] == "applied", row
    assert Metric.objects.filter(device__group_id=g, device__device="After").count() == 4
    metrics = stack.metrics()
    assert metrics["metasync_ingest_disconnects_total"] >= 1
    assert metrics["metasync_ingest_connected"] == 1.0


# ---------------------------------------------------------------------------------------------
# SEC-01


@contextlib.contextmanager
def tls12_only_server() -> Iterator[tuple[int, list[str], list[Exception]]]:
    """A TLS server (the devstack's server certificate) limited to TLS 1.2, in a thread.

    Yields (port, negotiated versions, server-side handshake errors).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(CERTS / "server.pem", CERTS / "server.key")
    versions: list[str] = []
    errors: list[Exception] = []
    stop = threading.Event()
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        versions.append(str(tls.version()))
                        tls.recv(1)  # until the client hangs up
                except (ssl.SSLError, OSError) as exc:
                    errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], versions, errors
    finally:
        stop.set()
        thread.join(5)
        server.close()


def test_tls12_only_broker_is_refused():
    """SEC-01: make_client/tls_context refuse a broker limited to TLS 1.2 (protocol version error),
    while the same server certificate is accepted by a context that allows TLS 1.2 (so the refusal
    is the version, not the certificate or the host name)."""
    ca = str(CERTS / "ca.pem")
    assert tls_context(ca).minimum_version == ssl.TLSVersion.TLSv1_3
    with tls12_only_server() as (port, versions, errors):
        client = make_client(mqtt_config(port=port, ca_file=ca))
        with pytest.raises(ssl.SSLError) as refused:
            client.connect("localhost", port, keepalive=30)
        message = str(refused.value).lower()
        assert "protocol version" in message or "unsupported protocol" in message, message

        control = tls_context(ca)
        control.minimum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                control.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == "TLSv1.2"
    assert versions == ["TLSv1.2"], (versions, errors)


def test_wrong_ca_is_refused_by_the_real_broker():
    """SEC-01: with a CA that did not sign Mosquitto's certificate the TLS handshake fails
    (certificate verify failed); the right CA connects."""
    wrong_ca = os.environ.get("DEVSTACK_WRONG_CA_FILE")  # the settings loaded the devstack env
    assert wrong_ca and Path(wrong_ca).is_file(), "DEVSTACK_WRONG_CA_FILE missing from the devstack env"
    config = mqtt_config(ca_file=wrong_ca)
    client = make_client(config)
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        client.connect(config.host, config.port, keepalive=30)
    with Publisher(mqtt_config()) as ok:  # the right CA: CONNACK accepted
        assert not getattr(ok.connect_reason, "is_failure", True)


def test_wrong_password_is_refused_by_the_broker():
    """SEC-01: valid TLS but a wrong password → CONNACK refused (not authorized)."""
    with pytest.raises(ConnectionRefusedError, match="Not authorized"):
        with Publisher(mqtt_config(password=f"wrong-{uuid.uuid4().hex}")):
            pass


@transactional
def test_mqtt_password_never_logged(daemons):
    """SEC-01: the MQTT password appears neither in the ingest daemon's DEBUG logs (paho's logger
    included: its CONNECT was logged) nor in the worker's log nor in repr(config)."""
    stack = daemons
    password = settings.MQTT_PASSWORD
    assert password and len(password) >= 8
    g = new_group()
    publish(f"spBv1.0/{g}/DBIRTH/Edge1/Dev1", birth(2))  # some traffic at DEBUG level
    only_frame(stack, f"spBv1.0/{g}/DBIRTH/Edge1/Dev1")
    ingest_log = stack.ingest.text()
    assert "Sending CONNECT" in ingest_log, "paho's DEBUG logging is not in the ingest log"
    assert '"level": "DEBUG"' in ingest_log or " DEBUG " in ingest_log  # JSON or plain format
    assert password not in ingest_log
    assert password not in stack.worker.text()
    config = config_from_settings()
    assert config.password == password
    for text in (repr(config), str(config), f"{config} {config!r}"):
        assert password not in text
        assert config.host in text


# ---------------------------------------------------------------------------------------------
# TC-11


@transactional
def test_same_dbirth_ten_times_writes_nothing_after_the_first(daemons):
    """TC-11: the same DBIRTH published 10 times through the broker → one `applied`, nine `duplicate`;
    no extra metrics/properties/versions rows and zero row changes (I/U/D) to uns_meta.metrics /
    metric_properties after the first apply, measured on a logical replication slot (pgoutput)."""
    stack = daemons
    g = new_group()
    topic = f"spBv1.0/{g}/DBIRTH/Edge1/Dev1"
    payload = birth(50)
    publish(topic, payload)
    (first,) = settled(stack, 1, topic=topic)
    assert first["status"] == "applied" and first["counts"]["new"] == 50, first
    device = Device.objects.get(group_id=g, device="Dev1")
    before = catalog_counts(device)
    assert before == {"metrics": 50, "properties": 500, "versions": 50}

    slot = f"t_tc11_{uuid.uuid4().hex[:8]}"
    with admin_connection() as admin:
        admin.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            with Publisher() as pub:
                pub.wait([pub.send(topic, payload) for _ in range(9)])
            rows = settled(stack, 10, topic=topic)
            assert Counter(r["status"] for r in rows) == {"applied": 1, "duplicate": 9}, rows
            assert all(f"applied frame {first['id']}" in r["reason"] for r in rows[1:]), rows
            assert catalog_counts(device) == before

            messages = [bytes(data) for (data,) in admin.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1',"
                " 'publication_names', 'uns_meta_pub')", (slot,))]
        finally:
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    changes = pgoutput_row_changes(messages)
    # Only our device's rows count: the module's ingest subscribes to spBv1.0/#, so a birth someone
    # else publishes on the shared broker meanwhile would be applied (and replicated) here too.
    ids = {str(i) for i in Metric.objects.filter(device=device).values_list("id", flat=True)}
    def ours(change: RowChange) -> bool:  # a change that names no metric/device counts as ours
        v = change.values
        if change.table == "metrics":
            return v.get("id") in ids or v.get("device_id") == str(device.id) or not (v.get("id") or v.get("device_id"))
        return v.get("metric_id") in ids or not v.get("metric_id")

    mine = [c for c in changes if ours(c)]
    assert mine == [], f"{len(mine)} row change(s) for the duplicated device (all changes: {len(changes)}): {mine[:5]}"
    assert sum(m[:1] in (b"I", b"U", b"D") for m in messages) == len(changes)


# ---------------------------------------------------------------------------------------------
# TC-12


@transactional
def test_burst_and_a_40mb_birth_are_absorbed_without_loss(daemons):
    """TC-12: 50 devices x 200 metrics published back to back plus one ~40 MB birth (120,000 metrics x
    10 properties) → every frame stored and applied, every device with its metric count; the ingest
    metrics show frames received == published (and bytes), and a backlog gauge that drains to 0."""
    stack = daemons
    g = new_group()
    prefix = f"spBv1.0/{g}/"
    big_n = 120_000
    big = big_birth(big_n)
    assert 38_000_000 <= len(big) <= 45_000_000, len(big)
    published = [(f"{prefix}DBIRTH/Edge1/Big", big)]
    published += [(f"{prefix}DBIRTH/Edge1/Dev{d:02d}", birth(200)) for d in range(50)]

    before, before_max_id = ingest_snapshot(stack)
    peak: dict[str, float] = {"frames": 0.0, "bytes": 0.0}
    sampling = threading.Event()

    def sample_backlog() -> None:
        while not sampling.is_set():
            with contextlib.suppress(OSError):
                m = stack.metrics()
                peak["frames"] = max(peak["frames"], m["metasync_ingest_backlog_frames"])
                peak["bytes"] = max(peak["bytes"], m["metasync_ingest_backlog_bytes"])
            sampling.wait(0.02)

    sampler = threading.Thread(target=sample_backlog, daemon=True)
    sampler.start()
    try:
        with Publisher() as pub:
            pub.wait([pub.send(topic, payload) for topic, payload in published], timeout=180)
        rows = settled(stack, len(published), prefix=prefix, timeout=240)
    finally:
        sampling.set()
        sampler.join(5)

    assert Counter(r["status"] for r in rows) == {"applied": len(published)}, \
        [r for r in rows if r["status"] != "applied"]
    assert sorted((r["topic"], r["size"]) for r in rows) == sorted((t, len(p)) for t, p in published)
    per_device = dict(Metric.objects.filter(device__group_id=g).values_list("device__device")
                      .annotate(n=Count("id")))
    assert per_device == {"Big": big_n, **{f"Dev{d:02d}": 200 for d in range(50)}}
    assert MetricProperty.objects.filter(metric__device__group_id=g, metric__device__device="Big").count() \
        == big_n * 10

    after, after_max_id = ingest_snapshot(stack)
    # Frames others published on the shared broker in the meantime (normally none) are in the ledger too.
    foreign = list(BirthFrame.objects.filter(id__gt=before_max_id, id__lte=after_max_id)
                   .exclude(topic__startswith=prefix).values_list("size", flat=True))
    received = after["metasync_ingest_frames_received_total"] - before["metasync_ingest_frames_received_total"]
    received_bytes = after["metasync_ingest_bytes_received_total"] - before["metasync_ingest_bytes_received_total"]
    assert received - len(foreign) == len(published), (received, len(foreign))
    assert received_bytes - sum(foreign) == sum(len(p) for _, p in published)
    assert after["metasync_ingest_frames_stored_total"] == after["metasync_ingest_frames_received_total"]
    assert after["metasync_ingest_backlog_frames"] == 0 and after["metasync_ingest_backlog_bytes"] == 0
    assert "metasync_ingest_backlog_full_total" in after
    # the 50 small frames arrive while the 42 MB one is being written to the ledger
    assert peak["frames"] >= 1, f"backlog never seen above 0 (peak {peak})"
    print(f"TC-12: big birth {len(big) / 1e6:.1f} MB; backlog peak {peak['frames']:.0f} frames / "
          f"{peak['bytes'] / 1e6:.1f} MB")


# ---------------------------------------------------------------------------------------------
# Malformed input: rejected with a readable reason, good frames keep flowing


def rejected_then_good_applied(stack: Stack, topic: str, payload: bytes, g: str) -> dict:
    """Publish the bad frame, then a good one; the good one must be applied. Returns the bad row."""
    good = f"spBv1.0/{g}/DBIRTH/Edge1/Good"
    with Publisher() as pub:
        pub.publish(topic, payload)
        pub.publish(good, birth(3))
    bad_row = only_frame(stack, topic)
    good_row = only_frame(stack, good)
    assert bad_row["status"] == "rejected", bad_row
    assert bad_row["reason"], bad_row
    assert good_row["status"] == "applied" and good_row["counts"]["new"] == 3, good_row
    assert Metric.objects.filter(device__group_id=g, device__device="Good").count() == 3
    return bad_row


@transactional
def test_truncated_protobuf_is_rejected(daemons):
    """TC-12 (malformed input): a DBIRTH cut in the middle of a metric → `rejected`, reason says
    'truncated protobuf'; the next good frame is applied."""
    g = new_group()
    payload = birth(5)
    topic = f"spBv1.0/{g}/DBIRTH/Edge1/Truncated"
    row = rejected_then_good_applied(daemons, topic, payload[: len(payload) // 2], g)
    assert "truncated protobuf" in row["reason"], row
    assert not Device.objects.filter(group_id=g, device="Truncated").exists()


@pytest.mark.parametrize(("shape", "expected"), [
    ("spBv1.0/{g}/DBIRTH", "expected spBv1.0/<group>/<verb>/<edge>"),
    ("spBv1.0/{g}/DBIRTH/Edge1", "DBIRTH needs a device id"),
    ("spBv1.0/{g}/NDATA/Edge1", "not a DBIRTH topic"),
    ("spBv1.0/{g}/DDATA/Edge1/Dev1", "not a DBIRTH topic"),
])
@transactional
def test_wrong_topic_shape_is_rejected(daemons, shape, expected):
    """TC-12 (malformed input): a valid payload on a topic that is not spBv1.0/<g>/DBIRTH/<edge>/<device>
    (missing edge, missing device, NDATA, DDATA) → `rejected` with the reason; good frames still applied."""
    g = new_group()
    row = rejected_then_good_applied(daemons, shape.format(g=g), birth(2), g)
    assert expected in row["reason"], row


@transactional
def test_state_json_is_rejected(daemons):
    """TC-12 (malformed input): a host application's STATE message (JSON body) on the subscription →
    `rejected`, reason names STATE; the next good frame is applied."""
    g = new_group()
    topic = f"spBv1.0/STATE/host-{uuid.uuid4().hex[:8]}"
    row = rejected_then_good_applied(daemons, topic, json.dumps({"online": True, "timestamp": now_ms()}).encode(), g)
    assert "STATE is a host application topic" in row["reason"], row


@transactional
def test_zero_byte_payload_is_rejected(daemons):
    """TC-12 (malformed input): a 0-byte DBIRTH → `rejected` ('no metrics'); no device created;
    the next good frame is applied."""
    g = new_group()
    topic = f"spBv1.0/{g}/DBIRTH/Edge1/Empty"
    row = rejected_then_good_applied(daemons, topic, b"", g)
    assert row["size"] == 0
    assert "no metrics" in row["reason"], row
    assert not Device.objects.filter(group_id=g, device="Empty").exists()


@transactional
def test_non_utf8_metric_name_is_rejected(daemons):
    """TC-12 (malformed input): a metric name with a 0xff byte → `rejected`, reason says the name is
    not valid UTF-8; the next good frame is applied."""
    g = new_group()
    payload = encode_birth([tag(0, "Plant/Area/BadXName"), tag(1)], timestamp=now_ms())
    assert payload.count(b"BadXName") == 1
    payload = payload.replace(b"BadXName", b"Bad\xffName")  # same length: framing stays valid
    row = rejected_then_good_applied(daemons, f"spBv1.0/{g}/DBIRTH/Edge1/NonUtf8", payload, g)
    assert "name is not valid UTF-8" in row["reason"], row


@transactional
def test_properties_with_mismatched_keys_and_values_are_rejected(daemons):
    """TC-12 (malformed input): a PropertySet with 2 keys and 1 value → `rejected`, reason names the
    metric and '2 keys but 1 values'; the next good frame is applied."""
    g = new_group()
    metric = pb.Payload.Metric(name="Plant/Area/Mismatch", datatype=DataType.Boolean, boolean_value=True)
    metric.properties.keys.extend(["engUnit", "Quality"])
    metric.properties.values.add(type=DataType.String, string_value="t/h")
    payload = pb.Payload(timestamp=now_ms(), seq=0, metrics=[metric]).SerializeToString()
    row = rejected_then_good_applied(daemons, f"spBv1.0/{g}/DBIRTH/Edge1/Mismatch", payload, g)
    assert "2 keys but 1 values" in row["reason"], row
    assert "Plant/Area/Mismatch" in row["reason"], row


def colliding_names(n: int) -> list[str]:
    """``n`` distinct names that all normalize to the segment ``A_B`` (A.B, A B, A+B, A#B, A.+B …)."""
    separators = ". +#!$%&*()=[]{};:,<>?~|^@"
    seps = ("".join(p) for k in (1, 2, 3) for p in product(separators, repeat=k))
    return [f"A{sep}B" for sep in islice(seps, n)]


@transactional
def test_thousand_metrics_with_the_same_normalized_path(daemons):
    """TC-12 (malformed input) / TC-02: 1,000 metric names normalizing to the same path in one birth →
    the first is applied, the other 999 rejected with a reason naming the collision, the rest of the
    birth (a normal metric) applied; the ledger row is `applied` with counts['rejected'] == 999."""
    stack = daemons
    g = new_group()
    names = colliding_names(1000)
    assert len(set(names)) == 1000 and names[0] == "A.B"
    specs = [MetricSpec(name, DataType.Int32, value=i, properties={"Quality": (DataType.Int32, 192)})
             for i, name in enumerate(names)]
    specs.append(tag(5000, "Plant/Area/Normal"))
    topic = f"spBv1.0/{g}/DBIRTH/Edge1/Collide"
    with Publisher() as pub:
        pub.publish(topic, encode_birth(specs, timestamp=now_ms()))
        pub.publish(f"spBv1.0/{g}/DBIRTH/Edge1/Good", birth(3))
    row = only_frame(stack, topic)
    assert row["status"] == "applied", row
    assert row["counts"]["rejected"] == 999, row["counts"]
    assert row["counts"]["new"] == 2, row["counts"]
    assert "999 metric(s) rejected" in row["reason"], row["reason"][:500]
    assert "already used by 'A.B'" in row["reason"], row["reason"][:500]
    assert f"{g}/Edge1/Collide/A_B" in row["reason"], row["reason"][:500]
    catalog = dict(Metric.objects.filter(device__group_id=g, device__device="Collide").values_list("name", "uns_path"))
    assert catalog == {"A.B": f"{g}/Edge1/Collide/A_B", "Plant/Area/Normal": f"{g}/Edge1/Collide/Plant/Area/Normal"}
    assert MetricProperty.objects.filter(metric__device__device="Collide", metric__device__group_id=g).count() == 11
    assert only_frame(stack, f"spBv1.0/{g}/DBIRTH/Edge1/Good")["status"] == "applied"
