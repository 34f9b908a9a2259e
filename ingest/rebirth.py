"""Throttled Sparkplug rebirth requests (off unless ``REBIRTH_REQUESTS_ENABLED``; docs/sparkplug.md).

When a birth carries aliases the catalog cannot resolve, the edge node can be asked to re-send
its births with names. That is expensive for the edge (NBIRTH + every DBIRTH), so at most one
request per edge node per ``REBIRTH_MIN_INTERVAL_SECONDS``, shared by all workers through a
Redis key (SET NX EX).
"""

from __future__ import annotations

import logging
import time
import uuid

from django.conf import settings

from metasync.mqtt import config_from_settings, publish_once
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
    # A client id of its own per request: two workers asking at once must not take over each other's session.
    config = config_from_settings(client_id=f"{settings.MQTT_CLIENT_ID}-rebirth-{uuid.uuid4().hex[:8]}")
    try:
        publish_once(config, topic, rebirth_payload(), qos=1)
    except (OSError, ConnectionError, TimeoutError) as exc:
        redis_client().delete(key)  # not sent: the next unresolved birth may ask again
        log.error("rebirth request for edge node %s/%s not sent: %s", group_id, edge, exc)
        return False
    log.warning("requested rebirth of edge node %s/%s (unresolved aliases)", group_id, edge)
    return True
