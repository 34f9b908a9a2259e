"""Builders for Sparkplug births and a one-call "receive and apply" for tests."""

from __future__ import annotations

import itertools
import uuid

from ingest.ledger import store_frame
from ingest.processing import Outcome, process_frame
from sparkplug.codec import MetricSpec, encode_birth
from sparkplug.datatypes import DataType

_ts = itertools.count(1_700_000_000_000, 1000)

PRODUCTION_PROPS: dict[str, tuple[int, object]] = {
    "engLow": (DataType.Double, 0.0),
    "retained": (DataType.Boolean, True),
    "DataPermission": (DataType.String, "user_domainSecil(R);G_UNS_Admin(RW)"),
    "Quality": (DataType.Int32, 192),
    "documentation": (DataType.String, "SA: - Active"),
    "engHigh": (DataType.Double, 0.0),
    "retain": (DataType.Boolean, True),
    "executionMode": (DataType.Int32, 1),
    "engUnit": (DataType.String, ""),
    "delete": (DataType.Boolean, False),
}


def topic(device: str = "Cement", edge: str | None = None) -> str:
    """A DBIRTH topic on a group of its own, so tests never see each other's devices."""
    return f"spBv1.0/T{uuid.uuid4().hex[:8]}/DBIRTH/{edge or 'Portugal'}/{device}"


def m(name: str | None, datatype: int = DataType.Boolean, alias: int | None = None, value: object = True,
      **props: tuple[int, object]) -> MetricSpec:
    return MetricSpec(name=name, datatype=datatype, alias=alias, value=value, properties=dict(props) or None)


def prod(name: str, alias: int | None = None, **overrides: tuple[int, object]) -> MetricSpec:
    """A metric shaped like the production capture (10 properties)."""
    return MetricSpec(name=name, datatype=DataType.Boolean, alias=alias, value=True,
                      properties={**PRODUCTION_PROPS, **overrides})


def birth(*metrics: MetricSpec, ts: int | None = None) -> bytes:
    return encode_birth(metrics, timestamp=ts if ts is not None else next(_ts))


def receive(topic_name: str, payload: bytes) -> Outcome:
    """Store a frame in the ledger and apply it, as the ingest path does."""
    return process_frame(store_frame(topic_name, payload))
