"""Recording NBIRTH/NDEATH/DBIRTH/DDEATH as node and device lifecycle (docs/sparkplug.md, "Lifecycle").

Called by ``ingest_births`` for each such frame as it leaves the backlog, in arrival order.
"""

from __future__ import annotations

import logging

import psycopg
from django.db import DatabaseError, connection

from catalog import lifecycle
from ingest import metrics
from ingest.mqtt import Frame
from sparkplug.host import read_bdseq
from sparkplug.topic import TopicError, parse_topic

log = logging.getLogger(__name__)


def record(frame: Frame, verb: str) -> None:
    """Apply one lifecycle frame; a topic that does not parse is left to the ledger's verdict."""
    try:
        topic = parse_topic(frame.topic)
    except TopicError:
        return
    at = frame.received_at
    outcome = "recorded"
    try:
        if verb == "NBIRTH":
            lifecycle.node_birth(topic.group_id, topic.edge, read_bdseq(frame.payload), at)
        elif verb == "NDEATH":
            bd_seq = read_bdseq(frame.payload)
            if not lifecycle.node_death(topic.group_id, topic.edge, bd_seq, at):
                outcome = "ignored"
                log.warning("NDEATH of %s/%s ignored: bdSeq %s is not the one of its current NBIRTH",
                            topic.group_id, topic.edge, bd_seq)
        elif verb == "DBIRTH" and topic.device is not None:
            lifecycle.device_birth(topic.group_id, topic.edge, topic.device, at)
        elif verb == "DDEATH" and topic.device is not None:
            lifecycle.device_death(topic.group_id, topic.edge, topic.device, at)
        nodes, devices = lifecycle.online_counts()
    except (DatabaseError, psycopg.Error):
        connection.close()  # a broken connection is replaced on the next frame
        raise
    metrics.LIFECYCLE_EVENTS.labels(verb=verb, outcome=outcome).inc()
    metrics.NODES_ONLINE.set(nodes)
    metrics.DEVICES_ONLINE.set(devices)
    if verb != "DBIRTH":
        log.info("%s %s: %s", verb, frame.topic, outcome)
