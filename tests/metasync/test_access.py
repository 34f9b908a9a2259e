"""Who may talk to Redis and the broker (SEC-05), against the real dev stack (docs/security.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from django.conf import settings

from metasync.mqtt import config_from_settings, make_client


def _redis_address() -> tuple[str, int]:
    url = urlsplit(settings.REDIS_URL)
    assert url.hostname and url.port
    return url.hostname, url.port


def test_unauthenticated_redis_client_is_refused():
    """SEC-05: Redis refuses a client without credentials (the default user is off)."""
    host, port = _redis_address()
    client = redis.Redis(host=host, port=port, socket_timeout=5)
    try:
        with pytest.raises((redis.AuthenticationError, redis.ResponseError), match="(?i)auth"):
            client.get("metasync:canary:session")
    finally:
        client.close()


def test_wrong_redis_password_is_refused():
    """SEC-05: the right user with a wrong password is refused too."""
    host, port = _redis_address()
    user = urlsplit(settings.REDIS_URL).username
    assert user, "REDIS_URL names no user"
    client = redis.Redis(host=host, port=port, username=user, password="not-the-password", socket_timeout=5)
    try:
        with pytest.raises(redis.AuthenticationError):
            client.ping()
    finally:
        client.close()


def test_redis_url_of_the_settings_is_accepted():
    """SEC-05: the app's own REDIS_URL authenticates (the two denials above are for the right reason)."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        assert client.ping() is True
    finally:
        client.close()


# --- the broker's ACL (devstack Mosquitto; compose's EMQX has the same rules, docs/security.md) ----

DEADLINE = 15.0


class Client:
    """A connected paho client as one broker user: granted QoS per subscription, messages received."""

    def __init__(self, user: str, password: str) -> None:
        config = dataclasses.replace(config_from_settings(f"test-acl-{uuid.uuid4().hex[:10]}"),
                                     username=user, password=password)
        self.client = make_client(config)
        self.messages: queue.Queue[str] = queue.Queue()
        self.granted: queue.Queue[list[int]] = queue.Queue()
        connected = threading.Event()
        self.client.on_connect = lambda c, u, f, reason, p: connected.set()
        self.client.on_message = lambda c, u, msg: self.messages.put(msg.topic)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.granted.put([int(x.value) for x in codes])
        self.client.connect(config.host, config.port)
        self.client.loop_start()
        assert connected.wait(DEADLINE), f"{user} did not connect"

    def subscribe(self, topic: str) -> int:
        """The SUBACK code: 0/1 granted QoS, 128 refused."""
        self.client.subscribe(topic, qos=1)
        return self.granted.get(timeout=DEADLINE)[0]

    def publish(self, topic: str) -> None:
        self.client.publish(topic, b"acl-test", qos=1).wait_for_publish(DEADLINE)

    def received(self, until: str) -> list[str]:
        """Every topic received up to and including ``until`` (published last, so the ones before it came in)."""
        seen: list[str] = []
        while until not in seen:
            seen.append(self.messages.get(timeout=DEADLINE))
        return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def connected(user: str, password: str) -> Iterator[Client]:
    client = Client(user, password)
    try:
        yield client
    finally:
        client.close()


def _user(kind: str) -> tuple[str, str]:
    names = {"ingest": "TEST_MQTT_INGEST", "devtools": "DEVSTACK_MQTT_DEVTOOLS", "edge": "DEVSTACK_MQTT_EDGE"}
    user, password = os.environ.get(f"{names[kind]}_USERNAME"), os.environ.get(f"{names[kind]}_PASSWORD")
    assert user and password, f"no {kind} broker user in the devstack env (run scripts/devstack up)"
    return user, password


def test_ingest_user_reads_lifecycle_topics_only():
    """SEC-05: ingest subscribed to `#` gets births but no data or other topics (Mosquitto grants the
    SUBACK and filters each delivery by the read ACL); its lifecycle subscriptions, shared too, are granted."""
    group = f"I{uuid.uuid4().hex[:8]}"
    with connected(*_user("devtools")) as edge, connected(*_user("ingest")) as ingest:
        for topic in ("spBv1.0/+/NBIRTH/#", "spBv1.0/+/NDEATH/#", "spBv1.0/+/DDEATH/#", "spBv1.0/STATE/+",
                      "$share/metasync/spBv1.0/+/DBIRTH/#"):
            assert ingest.subscribe(topic) == 1, topic
        assert ingest.subscribe("#") in (1, 128)
        for kind in ("DDATA", "NDATA", "DCMD"):
            edge.publish(f"spBv1.0/{group}/{kind}/edge/dev")
        birth = f"spBv1.0/{group}/DBIRTH/edge/dev"
        edge.publish(birth)
        seen = ingest.received(until=birth)
        assert [t for t in seen if "DATA" in t or "CMD" in t] == []


def test_ingest_user_publishes_rebirth_commands_and_state_but_no_births():
    """SEC-05: a birth published by the ingest user is not delivered; its rebirth command and STATE are."""
    group = f"A{uuid.uuid4().hex[:8]}"
    with connected(*_user("devtools")) as watcher, connected(*_user("ingest")) as ingest:
        assert watcher.subscribe(f"spBv1.0/{group}/#") == 1
        assert watcher.subscribe("spBv1.0/STATE/#") == 1
        ingest.publish(f"spBv1.0/{group}/DBIRTH/edge/dev")
        ingest.publish(f"spBv1.0/STATE/acl-{group}")
        ingest.publish(f"spBv1.0/{group}/NCMD/edge")
        seen = watcher.received(until=f"spBv1.0/{group}/NCMD/edge")
        assert f"spBv1.0/STATE/acl-{group}" in seen
        assert f"spBv1.0/{group}/DBIRTH/edge/dev" not in seen


def test_edge_user_publishes_under_its_own_group_only():
    """SEC-05: an edge's birth under another group is not delivered; under its own group it is."""
    edge_user, edge_password = _user("edge")
    other = f"B{uuid.uuid4().hex[:8]}"
    with connected(*_user("devtools")) as watcher, connected(edge_user, edge_password) as edge:
        assert watcher.subscribe("spBv1.0/+/DBIRTH/#") == 1
        edge.publish(f"spBv1.0/{other}/DBIRTH/edge/dev")
        own = f"spBv1.0/{edge_user}/DBIRTH/edge/{other}"
        edge.publish(own)
        seen = watcher.received(until=own)
        assert f"spBv1.0/{other}/DBIRTH/edge/dev" not in seen


# --- monitoring endpoints (SEC-06) --------------------------------------------------------------


@pytest.mark.django_db
def test_a_burst_of_readyz_calls_opens_no_new_connections(client, settings):
    """SEC-06: 20 /readyz calls within HEALTH_CHECK_CACHE_SECONDS run the checks once (Redis counts clients)."""
    from monitoring import health

    settings.HEALTH_CHECK_CACHE_SECONDS = 60
    health._cache = None
    admin = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
    try:
        before = admin.info("stats")["total_connections_received"]
        for _ in range(20):
            client.get("/readyz")
        after = admin.info("stats")["total_connections_received"]
    finally:
        admin.close()
    assert after - before == 1


@pytest.mark.django_db
def test_readyz_details_and_metrics_need_the_monitoring_token(client, settings):
    """SEC-06: with MONITORING_TOKEN set, /metrics answers 401 and /readyz shows only its status without it."""
    settings.MONITORING_TOKEN = token = "t-" + uuid.uuid4().hex
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert set(client.get("/readyz").json()) == {"status"}
    assert "checks" in client.get("/readyz", HTTP_AUTHORIZATION=f"Bearer {token}").json()
