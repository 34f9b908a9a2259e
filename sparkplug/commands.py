"""Sparkplug B command payloads a host application sends to edge nodes (docs/sparkplug.md)."""

from __future__ import annotations

import time

from sparkplug import sparkplug_b_pb2 as pb
from sparkplug.datatypes import DataType

REBIRTH_METRIC = "Node Control/Rebirth"


def rebirth_payload(now_ms: int | None = None) -> bytes:
    """NCMD asking an edge node to re-send its births: payload timestamp set, one Boolean metric
    ``Node Control/Rebirth = true`` by name, no alias, no seq."""
    payload = pb.Payload(timestamp=now_ms if now_ms is not None else int(time.time() * 1000))
    metric = payload.metrics.add(name=REBIRTH_METRIC, datatype=DataType.Boolean)
    metric.boolean_value = True
    return payload.SerializeToString()
