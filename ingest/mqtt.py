"""MQTT side of ingest: the subscriber, the bounded backlog and the ledger writer.

The paho network thread only appends to :class:`Backlog`; :class:`LedgerWriter`
(the main thread of ``ingest_births``) stores each frame in the ledger and then
enqueues ``process_birth(frame_id)``. The database never blocks the network
thread; only a full backlog does (backpressure, logged and counted), so no
frame is dropped while the process lives.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt

from ingest import metrics
from metasync.logging import bind
from metasync.mqtt import MqttConfig, make_client
from sparkplug.host import LIFECYCLE_VERBS, state_payload, state_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    topic: str
    payload: bytes
    received_at: datetime


class Backlog:
    """Frames waiting for the ledger, bounded by count and bytes.

    ``put`` blocks when full (the broker then sees a slow consumer) instead of
    dropping; waits are logged and counted.
    """

    def __init__(self, max_frames: int, max_bytes: int) -> None:
        self.max_frames, self.max_bytes = max_frames, max_bytes
        self._items: deque[Frame] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    def _full(self, size: int) -> bool:
        # One oversized frame is always admitted into an empty backlog.
        return bool(self._items) and (len(self._items) >= self.max_frames or self._bytes + size > self.max_bytes)

    def put(self, frame: Frame) -> None:
        size = len(frame.payload)
        with self._cond:
            if self._full(size):
                metrics.BACKLOG_FULL.inc()
                log.warning("ingest backlog full (%d frames, %d bytes): network thread waits for the ledger",
                            len(self._items), self._bytes)
                while self._full(size):
                    self._cond.wait(timeout=5)
            self._items.append(frame)
            self._bytes += size
            self._publish_gauges()
            self._cond.notify_all()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout=timeout)
            if not self._items:
                return None
            frame = self._items.popleft()
            self._bytes -= len(frame.payload)
            self._publish_gauges()
            self._cond.notify_all()
            return frame

    def __len__(self) -> int:
        return len(self._items)

    def _publish_gauges(self) -> None:
        metrics.BACKLOG_FRAMES.set(len(self._items))
        metrics.BACKLOG_BYTES.set(self._bytes)


class TopicGate:
    """Admits frames of the allowed groups (none listed: every group); logs each refused topic once."""

    def __init__(self, groups: tuple[str, ...] = (), own_state: str | None = None) -> None:
        self.groups, self.own_state = frozenset(groups), own_state
        self._logged: set[str] = set()

    def admit(self, topic: str) -> bool:
        if topic == self.own_state:  # our own STATE echoed back: not a frame
            return False
        parts = topic.split("/")
        if not self.groups or len(parts) < 2 or parts[1] in self.groups:
            return True
        metrics.TOPICS_IGNORED.inc()
        if topic not in self._logged and len(self._logged) < 100_000:
            self._logged.add(topic)
            log.warning("ignoring %s: group %r is not in SPARKPLUG_GROUPS (logged once per topic)", topic, parts[1])
        return False


class BirthSubscriber:
    """Subscribes (QoS 0) and hands every admitted frame to the backlog; re-subscribes on reconnect.

    With a ``host_id`` it is a Sparkplug 3.0 primary host: each connection carries the offline
    STATE as its will and publishes the online STATE with the same timestamp once subscribed
    (docs/sparkplug.md, "Primary host")."""

    def __init__(self, config: MqttConfig, topics: str | list[str], backlog: Backlog, *,
                 groups: tuple[str, ...] = (), host_id: str | None = None) -> None:
        self.config, self.backlog = config, backlog
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.topic = ", ".join(self.topics)
        self.host_id = host_id
        self.state_topic = state_topic(host_id) if host_id else None
        self.gate = TopicGate(groups, self.state_topic)
        self.state_ts = 0
        self.client = make_client(config)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self._subscribed()

    def start(self) -> None:
        log.info("connecting to mqtt%s://%s:%d as %s, topics %s%s", "s" if self.config.tls else "",
                 self.config.host, self.config.port, self.config.client_id, self.topic,
                 f", primary host {self.host_id}" if self.host_id else "")
        self._arm_will()
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        if self.state_topic and self.connected.is_set():  # a clean disconnect sends no will: say it
            info = self.client.publish(self.state_topic, state_payload(False, self.state_ts), qos=1, retain=True)
            info.wait_for_publish(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()

    def _arm_will(self) -> None:
        """A new connection's STATE timestamp; its will is the offline STATE with that timestamp."""
        if self.state_topic:
            self.state_ts = max(int(time.time() * 1000), self.state_ts + 1)
            self.client.will_set(self.state_topic, state_payload(False, self.state_ts), qos=1, retain=True)

    def _subscribed(self) -> None:
        if self.state_topic and not self.subscribed.is_set():
            self.client.publish(self.state_topic, state_payload(True, self.state_ts), qos=1, retain=True)
            metrics.STATE_ONLINE.set(1)
            log.info("primary host %s online (STATE timestamp %d)", self.host_id, self.state_ts)
        self.subscribed.set()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT connection refused: %s", reason)
            return
        # clean session: subscribe on every (re)connect; one SUBACK for all the filters
        client.subscribe([(topic, 0) for topic in self.topics])
        metrics.CONNECTED.set(1)
        self.connected.set()
        log.info("connected to MQTT broker, subscribed to %s", self.topic)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        metrics.CONNECTED.set(0)
        metrics.STATE_ONLINE.set(0)
        self.connected.clear()
        self.subscribed.clear()
        if not getattr(reason, "is_failure", True):  # our own disconnect() on shutdown
            log.info("disconnected from MQTT broker")
            return
        self._arm_will()  # the reconnect paho makes next carries a fresh timestamp
        metrics.DISCONNECTS.inc()
        log.warning("disconnected from MQTT broker (%s); reconnecting with backoff up to %ds",
                    reason, self.config.reconnect_max)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if not self.gate.admit(message.topic):
            return
        now = datetime.now(UTC)
        metrics.FRAMES_RECEIVED.inc()
        metrics.BYTES_RECEIVED.inc(len(message.payload))
        metrics.LAST_FRAME.set(now.timestamp())
        self.backlog.put(Frame(message.topic, bytes(message.payload), now))


class LedgerWriter:
    """Stores frames in the ledger and enqueues their processing: one frame per call."""

    def __init__(self, backlog: Backlog, store: Callable[[Frame], int], enqueue: Callable[[int], None],
                 retry_pause: Callable[[float], None] = time.sleep,
                 lifecycle: Callable[[Frame, str], None] | None = None) -> None:
        self.backlog, self.store, self.enqueue, self.retry_pause = backlog, store, enqueue, retry_pause
        self.lifecycle = lifecycle
        self.stored = 0

    def drain_one(self, timeout: float = 0.5) -> bool:
        """Store one frame if there is one; returns whether a frame was handled."""
        frame = self.backlog.get(timeout)
        if frame is None:
            return False
        verb = _verb(frame.topic)
        if self.lifecycle is not None and (verb in LIFECYCLE_VERBS or verb == "DBIRTH"):
            self._lifecycle(frame, verb)
            if verb != "DBIRTH":  # NBIRTH/NDEATH/DDEATH carry no metadata: not ledger frames
                return True
        frame_id = self._store_with_retry(frame)
        self.stored += 1
        # From here on the frame's logs carry cid frame-<id>; process_birth logs under the same cid.
        with bind(cid=f"frame-{frame_id}", frame_id=frame_id):
            log.info("frame %s stored: %s, %d bytes", frame_id, frame.topic, len(frame.payload))
            try:
                self.enqueue(frame_id)
            except Exception:  # Redis down: the frame is safe in the ledger; beat re-enqueues it
                metrics.ENQUEUE_ERRORS.inc()
                log.exception("could not enqueue process_birth(%s); beat will re-enqueue it", frame_id)
        return True

    def _lifecycle(self, frame: Frame, verb: str) -> None:
        assert self.lifecycle is not None
        try:
            self.lifecycle(frame, verb)
        except Exception:  # a status, not metadata: the next birth or death sets it again
            metrics.LIFECYCLE_EVENTS.labels(verb=verb, outcome="error").inc()
            log.exception("could not record %s of %s", verb, frame.topic)

    def _store_with_retry(self, frame: Frame) -> int:
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                frame_id = self.store(frame)
            except Exception as exc:  # database down: keep the frame, retry with backoff
                metrics.LEDGER_ERRORS.inc()
                log.error("ledger write failed for a %d-byte frame on %s (%s); retrying in %.1fs",
                          len(frame.payload), frame.topic, exc.__class__.__name__, delay)
                self.retry_pause(delay)
                delay = min(delay * 2, 30)
                continue
            metrics.LEDGER_WRITE_SECONDS.observe(time.monotonic() - started)
            metrics.FRAMES_STORED.inc()
            return frame_id


def _verb(topic: str) -> str:
    parts = topic.split("/")
    return parts[2] if len(parts) > 2 else ""
