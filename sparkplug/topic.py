"""Sparkplug B topic grammar: ``spBv1.0/<group>/<verb>/<edge>[/<device>]`` (docs/sparkplug.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

SPARKPLUG_NAMESPACE = "spBv1.0"
NODE_VERBS = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_VERBS = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})
_TOPIC_ID_FORBIDDEN = re.compile(r"[+#/]")


class TopicError(ValueError):
    """The topic is not a Sparkplug B edge-node/device topic; the message gives the reason."""


@dataclass(frozen=True)
class Topic:
    namespace: str
    group_id: str
    verb: str
    edge: str
    device: str | None

    @property
    def is_device(self) -> bool:
        return self.device is not None


def _check_id(kind: str, value: str, topic: str) -> None:
    if not value:
        raise TopicError(f"{topic!r}: empty {kind}")
    bad = _TOPIC_ID_FORBIDDEN.search(value)
    if bad:
        raise TopicError(f"{topic!r}: {kind} {value!r} contains {bad.group()!r}")


def parse_topic(topic: str) -> Topic:
    """Parse ``spBv1.0/<group>/<verb>/<edge>[/<device>]`` (device required for D* verbs)."""
    parts = topic.split("/")
    if parts[0] != SPARKPLUG_NAMESPACE:
        raise TopicError(f"{topic!r}: namespace is {parts[0]!r}, expected {SPARKPLUG_NAMESPACE!r}")
    if len(parts) >= 2 and parts[1] == "STATE":
        raise TopicError(f"{topic!r}: STATE is a host application topic (JSON), not an edge node")
    if len(parts) < 4:
        raise TopicError(f"{topic!r}: expected spBv1.0/<group>/<verb>/<edge>[/<device>]")
    if len(parts) > 5:
        raise TopicError(f"{topic!r}: too many levels (ids cannot contain '/')")
    _, group, verb, edge, *rest = parts
    _check_id("group id", group, topic)
    if verb in DEVICE_VERBS:
        if not rest:
            raise TopicError(f"{topic!r}: {verb} needs a device id")
    elif verb in NODE_VERBS:
        if rest:
            raise TopicError(f"{topic!r}: {verb} is a node verb and takes no device id")
    else:
        raise TopicError(f"{topic!r}: unknown verb {verb!r}")
    _check_id("edge node id", edge, topic)
    device = rest[0] if rest else None
    if device is not None:
        _check_id("device id", device, topic)
    return Topic(SPARKPLUG_NAMESPACE, group, verb, edge, device)
