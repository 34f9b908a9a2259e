"""Throttled rebirth requests through the real broker and Redis (TC-05, rebirth part)."""

from __future__ import annotations

import queue
import uuid

import redis
from django.conf import settings

from ingest.rebirth import request_rebirth
from metasync.mqtt import config_from_settings, make_client
from sparkplug import sparkplug_b_pb2 as pb


def test_rebirth_ncmd_is_published_once_per_interval():
    """TC-05: unresolved aliases ask the edge node for a rebirth, at most once per interval."""
    group, edge = f"T{uuid.uuid4().hex[:8]}", "Portugal"
    received: queue.Queue = queue.Queue()
    client = make_client(config_from_settings(client_id=f"test-{uuid.uuid4().hex[:8]}"))
    client.on_message = lambda c, u, msg: received.put(msg)
    client.on_subscribe = lambda *a: received.put("subscribed")
    client.on_connect = lambda c, *a: c.subscribe(f"spBv1.0/{group}/NCMD/#", qos=0)
    client.connect(settings.MQTT_HOST, settings.MQTT_PORT)
    client.loop_start()
    try:
        assert received.get(timeout=10) == "subscribed"
        assert request_rebirth(group, edge) is True
        assert request_rebirth(group, edge) is False  # throttled through Redis
        msg = received.get(timeout=10)
        assert msg.topic == f"spBv1.0/{group}/NCMD/{edge}"
        payload = pb.Payload.FromString(msg.payload)
        assert payload.HasField("timestamp") and not payload.HasField("seq")
        (metric,) = payload.metrics
        assert (metric.name, metric.boolean_value, metric.HasField("alias")) == ("Node Control/Rebirth", True, False)
        assert received.empty()
    finally:
        client.disconnect()
        client.loop_stop()
        redis.Redis.from_url(settings.REDIS_URL).delete(f"metasync:rebirth:{group}/{edge}")


def test_a_rebirth_request_the_broker_refuses_is_not_throttled(settings, caplog):
    """TC-05: a request the broker does not acknowledge (here: a wrong password) is logged as not sent
    and does not hold the throttle, so the next unresolved birth asks again."""
    group, edge = f"T{uuid.uuid4().hex[:8]}", "Portugal"
    key = f"metasync:rebirth:{group}/{edge}"
    settings.MQTT_PASSWORD = "not-the-password"
    assert request_rebirth(group, edge) is False
    assert not redis.Redis.from_url(settings.REDIS_URL).exists(key)
    assert any("not sent" in r.getMessage() for r in caplog.records)
