"""Host-application side of Sparkplug 3.0: subscriptions, STATE messages, bdSeq (docs/sparkplug.md).

Pure: builds topic filters and payloads and reads them back; the MQTT client lives in ingest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf.message import DecodeError as _PbDecodeError

from sparkplug import sparkplug_b_pb2 as pb
from sparkplug.topic import SPARKPLUG_NAMESPACE

# What a host application that tracks births and lifecycle subscribes to, per group.
HOST_VERBS = ("DBIRTH", "NBIRTH", "NDEATH", "DDEATH")
LIFECYCLE_VERBS = frozenset({"NBIRTH", "NDEATH", "DDEATH"})


def state_topic(host_id: str) -> str:
    """``spBv1.0/STATE/<host_id>``: where a primary host announces itself."""
    return f"{SPARKPLUG_NAMESPACE}/STATE/{host_id}"


def subscriptions(share: str | None = None) -> list[str]:
    """Topic filters for the births and lifecycle verbs of every group (``+``: an allow-list is applied
    to what arrives, so a refused group is seen and logged, not silently missed); ``share`` prefixes
    each with ``$share/<share>/`` so the broker spreads them over replicas."""
    filters = [f"{SPARKPLUG_NAMESPACE}/+/{verb}/#" for verb in HOST_VERBS]
    return [f"$share/{share}/{f}" for f in filters] if share else filters


def state_payload(online: bool, timestamp: int) -> bytes:
    """The Sparkplug 3.0 STATE body: ``{"online": <bool>, "timestamp": <ms>}`` (UTF-8 JSON)."""
    return json.dumps({"online": online, "timestamp": timestamp}).encode()


@dataclass(frozen=True, slots=True)
class State:
    online: bool
    timestamp: int


def parse_state(payload: bytes) -> State | None:
    """A STATE body read back; None when it is not one (wrong JSON, missing or mistyped fields)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    online, timestamp = body.get("online"), body.get("timestamp")
    if not isinstance(online, bool) or not isinstance(timestamp, int) or isinstance(timestamp, bool):
        return None
    return State(online, timestamp)


def read_bdseq(payload: bytes) -> int | None:
    """The ``bdSeq`` metric of an NBIRTH or NDEATH (small payloads: parsed whole); None if absent
    or the payload does not decode."""
    try:
        message = pb.Payload.FromString(payload)
    except _PbDecodeError:
        return None
    for metric in message.metrics:
        if metric.name == "bdSeq":
            return int(metric.long_value or metric.int_value)
    return None


def bdseq_payload(bdseq: int, timestamp: int, seq: int | None = None) -> bytes:
    """An NBIRTH (``seq`` 0) or NDEATH (no ``seq``) payload carrying only the ``bdSeq`` metric (UInt64)."""
    message = pb.Payload(timestamp=timestamp)
    if seq is not None:
        message.seq = seq
    message.metrics.add(name="bdSeq", datatype=8, long_value=bdseq, timestamp=timestamp)
    return message.SerializeToString()
