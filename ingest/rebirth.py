"""Throttled Sparkplug rebirth requests (off unless ``REBIRTH_REQUESTS_ENABLED``; docs/sparkplug.md).

When a birth carries aliases the catalog cannot resolve, the edge node can be asked to re-send
its births with names. That is expensive for the edge (NBIRTH + every DBIRTH), so at most one
request per edge node per ``REBIRTH_MIN_INTERVAL_SECONDS``, shared by all workers through a
Redis key (SET NX EX).
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

from metasync.mqtt import config_from_settings, make_client
from metasync.redis_client import redis_client
from sparkplug.commands import rebirth_payload

log = logging.getLogger(__name__)


def request_rebirth(group_id: str, edge: str) -> bool:
    """Publish a rebirth NCMD unless one was sent for this edge node recently; returns whether sent."""
    key = f"metasync:rebirth:{group_id}/{edge}"
    if not redis_client().set(key, int(time.time()), nx=True, ex=settings.REBIRTH_MIN_INTERVAL_SECONDS):
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
