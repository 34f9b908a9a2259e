"""Throttled Sparkplug rebirth requests (SYSTEM.md §4, off unless configured).

When a birth carries aliases the catalog cannot resolve, the edge node can be
asked to re-send its births with names: an NCMD ``Node Control/Rebirth = true``.
That is expensive for the edge (NBIRTH + every DBIRTH), so at most one request
per edge node per ``REBIRTH_MIN_INTERVAL_SECONDS``, shared by all workers
through a Redis key (SET NX EX).
"""

from __future__ import annotations

import logging
import time

import redis
from django.conf import settings

from ingest import sparkplug_b_pb2 as pb
from ingest.mqtt import config_from_settings, make_client
from ingest.sparkplug import DataType

log = logging.getLogger(__name__)


def rebirth_payload(now_ms: int | None = None) -> bytes:
    """NCMD payload: timestamp set, one Boolean metric by name, no alias, no seq."""
    payload = pb.Payload(timestamp=now_ms if now_ms is not None else int(time.time() * 1000))
    metric = payload.metrics.add(name="Node Control/Rebirth", datatype=DataType.Boolean)
    metric.boolean_value = True
    return payload.SerializeToString()


def request_rebirth(group_id: str, edge: str) -> bool:
    """Publish a rebirth NCMD unless one was sent for this edge node recently; returns whether sent."""
    key = f"metasync:rebirth:{group_id}/{edge}"
    r = redis.Redis.from_url(settings.REDIS_URL)
    if not r.set(key, int(time.time()), nx=True, ex=settings.REBIRTH_MIN_INTERVAL_SECONDS):
        log.info("rebirth for %s/%s already requested within %ss", group_id, edge,
                 settings.REBIRTH_MIN_INTERVAL_SECONDS)
        return False
    topic = f"spBv1.0/{group_id}/NCMD/{edge}"
    client = make_client(config_from_settings(client_id=f"{settings.MQTT_CLIENT_ID}-rebirth"))
    try:
        client.connect(settings.MQTT_HOST, settings.MQTT_PORT, keepalive=settings.MQTT_KEEPALIVE)
        client.loop_start()
        client.publish(topic, rebirth_payload(), qos=0).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()
    log.warning("requested rebirth of edge node %s/%s (unresolved aliases)", group_id, edge)
    return True
