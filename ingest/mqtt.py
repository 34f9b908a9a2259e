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


class BirthSubscriber:
    """Subscribes (QoS 0) and hands every frame to the backlog; re-subscribes on reconnect."""

    def __init__(self, config: MqttConfig, topic: str, backlog: Backlog) -> None:
        self.config, self.topic, self.backlog = config, topic, backlog
        self.client = make_client(config)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()

    def start(self) -> None:
        log.info("connecting to mqtt%s://%s:%d as %s, topic %s", "s" if self.config.tls else "",
                 self.config.host, self.config.port, self.config.client_id, self.topic)
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            log.error("MQTT connection refused: %s", reason)
            return
        client.subscribe(self.topic, qos=0)  # clean session: subscribe on every (re)connect
        metrics.CONNECTED.set(1)
        self.connected.set()
        log.info("connected to MQTT broker, subscribed to %s", self.topic)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        metrics.CONNECTED.set(0)
        self.connected.clear()
        self.subscribed.clear()
        if not getattr(reason, "is_failure", True):  # our own disconnect() on shutdown
            log.info("disconnected from MQTT broker")
            return
        metrics.DISCONNECTS.inc()
        log.warning("disconnected from MQTT broker (%s); reconnecting with backoff up to %ds",
                    reason, self.config.reconnect_max)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        now = datetime.now(UTC)
        metrics.FRAMES_RECEIVED.inc()
        metrics.BYTES_RECEIVED.inc(len(message.payload))
        metrics.LAST_FRAME.set(now.timestamp())
        self.backlog.put(Frame(message.topic, bytes(message.payload), now))


class LedgerWriter:
    """Stores frames in the ledger and enqueues their processing: one frame per call."""

    def __init__(self, backlog: Backlog, store: Callable[[Frame], int], enqueue: Callable[[int], None],
                 retry_pause: Callable[[float], None] = time.sleep) -> None:
        self.backlog, self.store, self.enqueue, self.retry_pause = backlog, store, enqueue, retry_pause
        self.stored = 0

    def drain_one(self, timeout: float = 0.5) -> bool:
        """Store one frame if there is one; returns whether a frame was handled."""
        frame = self.backlog.get(timeout)
        if frame is None:
            return False
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
