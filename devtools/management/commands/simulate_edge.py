"""``simulate_edge``: a simulated Sparkplug edge node publishing DBIRTHs over TLS.

Synthetic mode (default) publishes one production-shaped DBIRTH per device every
``--interval`` seconds (:func:`ingest.simulator.synthetic_birth`): new values and timestamps
every round, and from round 1 on ``--change-rate`` of the metrics with one property edited.
Capture mode (``--capture FILE --topic T``) publishes a captured frame (binary protobuf or
protobuf JSON) ``--repeat`` times instead.

Only DBIRTHs are sent (QoS 0, not retained, as Sparkplug requires), unless ``--primary-host H``
binds the node to a Sparkplug 3.0 primary host: then it also sends NBIRTH (with bdSeq; the NDEATH
is its MQTT will), waits for H's STATE to say online before its first birth, and re-publishes
NBIRTH + DBIRTHs each time H comes online again (docs/sparkplug.md, "Primary host"). Later rounds
(``--interval``, or SIGUSR1: the next round at once) are published whatever H's state: other
applications subscribe too, and a round H missed is what its rebirth recovers.
Follows the daemon pattern of ``ingest_births``: the
signal handler only sets a flag, the loop publishes one round at a time and sleeps in short
steps so SIGTERM/SIGINT stop it within a fraction of a second.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import paho.mqtt.client as mqtt
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devtools.edge import changed_metric_count, synthetic_birth
from ingest.replay import read_frame_file
from metasync.mqtt import MqttConfig, config_from_settings, make_client
from sparkplug.codec import DecodeError, iter_metrics, read_header
from sparkplug.host import State, bdseq_payload, parse_state, state_topic

log = logging.getLogger("ingest.simulate_edge")

CONNECT_TIMEOUT = 30.0
PUBLISH_TIMEOUT = 120.0  # a 40 MB birth over TLS on a slow link
ALIAS_STRIDE = 10_000_000  # aliases are unique per edge node: device i gets i * stride + 1 ...
STEP = 0.2  # seconds between checks of the stop flag while waiting


@dataclass(frozen=True, slots=True)
class Birth:
    topic: str
    payload: bytes
    metrics: int
    changed: int | None  # metrics whose metadata differs from the previous round; None: unknown


class EdgePublisher:
    """One MQTT connection (TLS, credentials from settings) that publishes QoS 0 births."""

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.client = make_client(config)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = False
        self.closing = False
        self.refused: str | None = None
        self.subscriptions: list[str] = []  # (re)subscribed on every connect

    def connect(self, should_stop: Callable[[], bool], timeout: float = CONNECT_TIMEOUT) -> bool:
        """Connect and wait for the CONNACK; False if stopped first. Refusal or timeout raise."""
        log.info("connecting to mqtt%s://%s:%d as %s", "s" if self.config.tls else "", self.config.host,
                 self.config.port, self.config.client_id)
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive)
        self.client.loop_start()
        return self.wait_connected(should_stop, timeout)

    def wait_connected(self, should_stop: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected:
            if self.refused:
                raise CommandError(f"the MQTT broker refused the connection: {self.refused}")
            if should_stop():
                return False
            if time.monotonic() > deadline:
                raise CommandError(f"no connection to the MQTT broker {self.config.host}:{self.config.port} "
                                   f"after {timeout:.0f}s (see the paho log lines above)")
            time.sleep(0.05)
        return True

    def publish(self, topic: str, payload: bytes) -> bool:
        """Send one frame; True once it is written to the socket."""
        info = self.client.publish(topic, payload, qos=0, retain=False)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning("not published on %s: %s", topic, mqtt.error_string(info.rc))
            return False
        info.wait_for_publish(timeout=PUBLISH_TIMEOUT)
        if not info.is_published():
            log.warning("not published on %s within %.0fs", topic, PUBLISH_TIMEOUT)
            return False
        return True

    def close(self) -> None:
        self.closing = True
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        if getattr(reason, "is_failure", False):
            self.refused = str(reason)
            return
        for topic in self.subscriptions:
            client.subscribe(topic, qos=1)
        self.connected = True
        log.info("connected to the MQTT broker")

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: object) -> None:
        if self.connected and not self.closing:
            log.warning("disconnected from the MQTT broker (%s); reconnecting", reason)
        self.connected = False


class Command(BaseCommand):
    help = "Simulated edge node: publish production-shaped DBIRTHs (or a captured frame) over TLS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--group", default="Secil", help="Sparkplug group id (default Secil)")
        parser.add_argument("--edge", default="Portugal", help="edge node id (default Portugal)")
        parser.add_argument("--devices", default="Simulator",
                            help="comma-separated device ids, one DBIRTH each per round (default Simulator)")
        parser.add_argument("--metrics", type=int, default=2000, help="metrics per device (default 2000)")
        parser.add_argument("--change-rate", type=float, default=0.01,
                            help="fraction of metrics whose metadata changes per round (default 0.01)")
        parser.add_argument("--interval", type=float, default=0.0,
                            help="seconds between rounds; 0 = publish once and exit (default 0)")
        parser.add_argument("--count", type=int, default=None, help="stop after this many rounds")
        parser.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
        parser.add_argument("--capture", type=Path, default=None,
                            help="publish this captured frame (binary protobuf or protobuf JSON) instead")
        parser.add_argument("--topic", default=None,
                            help="topic for --capture, e.g. spBv1.0/Secil/DBIRTH/Portugal/Cement")
        parser.add_argument("--repeat", type=int, default=1,
                            help="with --capture: publish it this many times (default 1)")
        parser.add_argument("--client-id", default=None, help="MQTT client id (default metasync-simulator-<pid>)")
        parser.add_argument("--primary-host", default=None,
                            help="Sparkplug 3.0 primary host id: publish NBIRTH+DBIRTHs whenever its STATE "
                                 "turns online, nothing while it is offline")

    def handle(self, *args: object, **opts: Any) -> None:
        self.stopping = False
        self.bump = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGUSR1, self._bump)
        rounds = self._rounds(opts)
        make_births: Callable[[int], Iterable[Birth]] = (
            self._capture_births(opts) if opts["capture"] else self._synthetic_births(opts))
        client_id = str(opts["client_id"] or f"metasync-simulator-{os.getpid()}")
        publisher = EdgePublisher(config_from_settings(client_id=client_id))
        interval = float(opts["interval"])
        if opts["primary_host"]:
            try:
                self.run_bound(publisher, make_births, opts)
            finally:
                publisher.close()
            log.info("simulated edge stopped")
            return
        try:
            if not publisher.connect(lambda: self.stopping):
                return
            for round_no in rounds:
                if round_no and not self._pause(interval):
                    break
                self.publish_round(publisher, make_births(round_no), round_no)
        finally:
            publisher.close()
        log.info("simulated edge stopped")

    # --- the unit of work ----------------------------------------------------------
    def publish_round(self, publisher: EdgePublisher, births: Iterable[Birth], round_no: int) -> int:
        """Publish one round (one birth per device); returns how many were sent."""
        sent = 0
        for birth in births:
            if self.stopping:
                break
            if not publisher.connected:  # paho keeps reconnecting in the background
                log.warning("not connected to the MQTT broker: round %d skipped", round_no)
                break
            if publisher.publish(birth.topic, birth.payload):
                sent += 1
                log.info("published %s round %d (ts %s): %d metrics, %d bytes, changed %s",
                         birth.topic, round_no, read_header(birth.payload).timestamp, birth.metrics, len(birth.payload),
                         "n/a" if birth.changed is None else birth.changed)
        return sent

    def run_bound(self, publisher: EdgePublisher, make_births: Callable[[int], Iterable[Birth]], opts: dict) -> None:
        """Sparkplug 3.0 edge node bound to a primary host: its STATE decides when to (re)birth."""
        group, edge, host = str(opts["group"]), str(opts["edge"]), str(opts["primary_host"])
        interval, bd_seq = float(opts["interval"]), 0
        node_topic = f"spBv1.0/{group}/{{verb}}/{edge}"
        publisher.client.will_set(node_topic.format(verb="NDEATH"), bdseq_payload(bd_seq, int(time.time() * 1000)),
                                  qos=1, retain=False)
        states: queue.Queue[State | None] = queue.Queue()
        publisher.client.on_message = lambda c, u, m: states.put(parse_state(bytes(m.payload)))
        publisher.subscriptions = [state_topic(host)]
        if not publisher.connect(lambda: self.stopping):
            return
        online: State | None = None  # the host's current online STATE
        round_no, next_round, born = 0, time.monotonic() + interval, False  # born: first NBIRTH sent
        while not self.stopping:
            try:
                state = states.get(timeout=STEP)
            except queue.Empty:
                state = None
            rebirth = False
            if state is not None and state.online and (online is None or state.timestamp > online.timestamp):
                online, rebirth = state, True
                log.info("primary host %s online (STATE timestamp %d): rebirth", host, state.timestamp)
            elif state is not None and not state.online and online is not None and state.timestamp >= online.timestamp:
                online = None
                log.info("primary host %s offline (STATE timestamp %d): it misses births until it is back",
                         host, state.timestamp)
            if born and (self.bump or (interval > 0 and time.monotonic() >= next_round)):
                self.bump, round_no, next_round = False, round_no + 1, time.monotonic() + interval
                self.publish_round(publisher, make_births(round_no), round_no)
            if rebirth and publisher.connected:
                publisher.publish(node_topic.format(verb="NBIRTH"), bdseq_payload(bd_seq, int(time.time() * 1000), 0))
                log.info("published NBIRTH of %s/%s (bdSeq %d)", group, edge, bd_seq)
                born = True
                self.publish_round(publisher, make_births(round_no), round_no)

    # --- what to publish -----------------------------------------------------------
    def _synthetic_births(self, opts: dict) -> Callable[[int], Iterator[Birth]]:
        group, edge = str(opts["group"]), str(opts["edge"])
        devices = [d.strip() for d in str(opts["devices"]).split(",") if d.strip()]
        metric_count, rate, seed = int(opts["metrics"]), float(opts["change_rate"]), int(opts["seed"])
        if not devices:
            raise CommandError("--devices: give at least one device id")
        if metric_count < 1:
            raise CommandError("--metrics must be at least 1")
        if not 0.0 <= rate <= 1.0:
            raise CommandError("--change-rate must be between 0 and 1")
        # Each device gets its own tag set; the node's message counter numbers the births.
        seeds = [zlib.crc32(f"{seed}/{group}/{edge}/{device}".encode()) for device in devices]
        counter = itertools.count(1)

        def births(round_no: int) -> Iterator[Birth]:
            # built one at a time, just before it is sent: one payload in memory, a fresh timestamp
            for i, (device, device_seed) in enumerate(zip(devices, seeds, strict=True)):
                payload = synthetic_birth(metric_count, round_no=round_no, change_rate=rate, seed=device_seed,
                                          timestamp=int(time.time() * 1000), alias_base=i * ALIAS_STRIDE,
                                          seq=next(counter) % 256)
                yield Birth(f"spBv1.0/{group}/DBIRTH/{edge}/{device}", payload, metric_count,
                            changed_metric_count(metric_count, round_no=round_no, change_rate=rate))

        return births

    def _capture_births(self, opts: dict) -> Callable[[int], Iterable[Birth]]:
        path, topic = opts["capture"], opts["topic"]
        if not topic:
            raise CommandError("--capture needs --topic (the frame's topic, e.g. spBv1.0/Secil/DBIRTH/Portugal/Cement)")
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        payload = read_frame_file(path)
        try:
            metric_count = sum(1 for _ in iter_metrics(payload))
        except DecodeError as exc:
            raise CommandError(f"{path}: not a Sparkplug payload: {exc}") from None
        # The same bytes every time, like a re-sent birth: nothing changed from the 2nd publish on.
        first = Birth(str(topic), payload, metric_count, None)
        again = Birth(str(topic), payload, metric_count, 0)
        return lambda round_no: [again if round_no else first]

    def _rounds(self, opts: dict) -> Iterator[int]:
        """Round numbers to publish: --repeat for a capture, else --count (default: once, or
        forever when an --interval is given)."""
        if float(opts["interval"]) < 0:
            raise CommandError("--interval must be >= 0")
        limit = opts["repeat"] if opts["capture"] else opts["count"]
        if limit is None:
            limit = 1 if float(opts["interval"]) == 0 else None
        if limit is None:
            return itertools.count()
        if int(limit) < 1:
            raise CommandError("--count and --repeat must be at least 1")
        return iter(range(int(limit)))

    # --- stopping ------------------------------------------------------------------
    def _pause(self, seconds: float) -> bool:
        """Sleep until the next round; False if asked to stop meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(STEP, remaining))
        return not self.stopping

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _bump(self, signum: int, frame: FrameType | None) -> None:
        self.bump = True
