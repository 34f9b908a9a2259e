"""Real daemons for tests: ``ingest_births`` and a Celery worker as subprocesses.

They run against the pytest-django *test* database (tests using them must be
``@pytest.mark.django_db(transaction=True)`` so rows are committed and visible across
processes), a dedicated Redis database (flushed at start) and the devstack's Mosquitto.
Their logs go to files; :meth:`Stack.logs` returns the tails to attach to assertion messages.

    with running_stack(tmp_path) as stack:
        publish(f"spBv1.0/{group}/DBIRTH/edge/dev", payload)
        stack.wait_for(lambda: ..., 30, "the frame to be applied")

No test sleeps blindly: :func:`wait_for` polls a predicate until a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
from prometheus_client.parser import text_string_to_metric_families

BASE_DIR = Path(__file__).resolve().parent.parent
DEVSTACK_ENV = BASE_DIR / ".devstack" / "env"
TEST_REDIS_DB = 15
STOP_DEADLINE = 30.0  # seconds between SIGTERM and SIGKILL

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Polling


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05,
             context: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes.

    On timeout raises ``TimeoutError`` naming ``what``, the last value or exception seen and,
    if given, ``context()`` (e.g. daemon log tails).
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - reported if the deadline passes
            value, last = None, f"{exc.__class__.__name__}: {exc}"
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            message = f"timed out after {timeout:g}s waiting for {what} (last: {last!r})"
            if context is not None:
                message += "\n" + context()
            raise TimeoutError(message)
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Environment of the daemons


def _devstack_value(name: str) -> str:
    """A variable as the settings saw it (the env file is loaded into ``os.environ``)."""
    from django.conf import settings

    settings.SECRET_KEY  # noqa: B018 - force settings (and the env file) to load
    value = os.environ.get(name)
    if not value:
        path = os.environ.get(f"{name}_FILE")
        if path:
            value = Path(path).read_text(encoding="utf-8").strip()
    if not value:
        raise RuntimeError(f"{name} is not set (is the devstack up? see {DEVSTACK_ENV})")
    return value


def daemon_database_url() -> str:
    """The devstack DATABASE_URL with its path replaced by the pytest-django test database name."""
    from django.conf import settings

    parts = urlsplit(_devstack_value("DATABASE_URL"))
    return urlunsplit(parts._replace(path="/" + settings.DATABASES["default"]["NAME"]))


def daemon_redis_url(db: int = TEST_REDIS_DB) -> str:
    parts = urlsplit(_devstack_value("REDIS_URL"))
    return urlunsplit(parts._replace(path=f"/{db}"))


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# --------------------------------------------------------------------------------------------
# Processes


class Daemon:
    """One subprocess in its own process group, output to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=BASE_DIR, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, deadline: float = STOP_DEADLINE) -> int | None:
        """SIGTERM, wait up to ``deadline`` seconds, then SIGKILL the process group."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc.returncode != 0:
            # prefork children of a parent that died or was killed share its process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        status = "running" if self.alive() else f"exited with {self.proc.returncode if self.proc else None}"
        body = "\n".join(self.text().splitlines()[-lines:])
        return f"----- {self.name} ({status}), last {lines} lines of {self.log_path} -----\n{body}"


def scrape(port: int, timeout: float = 2.0) -> dict[str, float]:
    """Unlabelled samples of a Prometheus endpoint, e.g. ``{"metasync_ingest_connected": 1.0}``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
        text = response.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
            if not s.labels}


class Stack:
    """``ingest_births`` + a Celery worker (queues ``births``, ``default``) for one test module."""

    def __init__(self, tmp_dir: Path, *, topic: str = "spBv1.0/#", ingest_log_level: str = "INFO",
                 worker_log_level: str = "INFO", extra_env: dict[str, str] | None = None) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.topic = topic
        self.token = uuid.uuid4().hex[:8]
        self.metrics_port = free_port()
        self.worker_name = f"test-{self.token}@{socket.gethostname()}"
        self.redis_url = daemon_redis_url()
        base = dict(os.environ)
        base.update({
            "METASYNC_ENV_FILE": str(DEVSTACK_ENV),
            "DATABASE_URL": daemon_database_url(),
            "REDIS_URL": self.redis_url,
            # short-lived connections: nothing idle in the test database between tasks, so
            # pytest-django's flush (TRUNCATE) never queues behind a daemon's connection
            "DATABASE_CONN_MAX_AGE": "0",
            # a client id of its own: the broker would kick another client with the default id
            "MQTT_CLIENT_ID": f"test-ingest-{self.token}",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        })
        self.ingest = Daemon(
            "ingest_births",
            [sys.executable, "manage.py", "ingest_births", "--topic", topic,
             "--metrics-port", str(self.metrics_port)],
            {**base, "METASYNC_PROCESS": "test-ingest", "LOG_LEVEL": ingest_log_level},
            self.tmp_dir / "ingest.log")
        self.worker = Daemon(
            "celery worker",
            [sys.executable, "-m", "celery", "-A", "metasync", "worker", "-Q", "births,default",
             "--pool", "prefork", "--concurrency", "2", "-n", f"test-{self.token}@%h",
             "--without-mingle", "--without-gossip", "-l", worker_log_level],
            {**base, "METASYNC_PROCESS": "test-worker", "LOG_LEVEL": worker_log_level},
            self.tmp_dir / "worker.log")
        self._probes = 0

    # --- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        flush_redis(self.redis_url)
        self.worker.start()
        self.ingest.start()
        self.wait_for(self._worker_pong, timeout, f"celery worker {self.worker_name} to answer ping")
        self.wait_connected(timeout)
        self.wait_subscribed(timeout)

    def stop(self) -> None:
        # ingest first: it stops taking frames and stores its backlog; then the worker
        self.ingest.stop()
        self.worker.stop()

    # --- readiness -------------------------------------------------------------------
    def _worker_pong(self) -> bool:
        from celery import Celery

        self._check_alive()
        app = Celery("stack-ping", broker=self.redis_url, set_as_current=False)
        try:
            replies = app.control.ping(destination=[self.worker_name], timeout=0.5)
        finally:
            app.close()
        return any(self.worker_name in reply for reply in replies)

    def wait_connected(self, timeout: float = 60.0) -> None:
        """Until ingest's metrics say ``metasync_ingest_connected 1.0``."""
        self.wait_for(lambda: self._check_alive() or self.metrics().get("metasync_ingest_connected") == 1.0,
                      timeout, "ingest_births to report metasync_ingest_connected 1.0")

    def wait_subscribed(self, timeout: float = 60.0) -> None:
        """Until a probe frame published now is received (CONNACK comes before SUBACK).

        A probe is a valid one-metric DBIRTH of a device of its own (group ``Tprobe<token>``),
        so it ends ``applied`` and touches nothing a test looks at.
        """
        deadline = time.monotonic() + timeout
        with Publisher() as pub:
            while True:
                before = self.metrics().get("metasync_ingest_frames_received_total", 0.0)
                self._probes += 1
                pub.publish(f"spBv1.0/Tprobe{self.token}/DBIRTH/probe/p{self._probes}", probe_birth())
                try:
                    wait_for(lambda b=before: self.metrics().get("metasync_ingest_frames_received_total", 0.0) > b,
                             1.0, "the probe frame")
                    return
                except TimeoutError:
                    self._check_alive()
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"ingest_births never received a probe frame within {timeout:g}s\n"
                                           + self.logs()) from None

    def _check_alive(self) -> None:
        for daemon in (self.ingest, self.worker):
            if not daemon.alive():
                raise AssertionError(f"{daemon.name} is not running\n{self.logs()}")

    # --- observation -------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        return scrape(self.metrics_port)

    def logs(self, lines: int = 60) -> str:
        return "\n".join(d.tail(lines) for d in (self.ingest, self.worker))

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str, **kwargs: object) -> T:
        """:func:`wait_for` that attaches the daemons' log tails when it times out."""
        return wait_for(predicate, timeout, what, context=self.logs, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def running_stack(tmp_dir: Path, **kwargs: object) -> Iterator[Stack]:
    """Start a :class:`Stack`, yield it, always stop it (SIGTERM, then SIGKILL after a deadline)."""
    stack = Stack(tmp_dir, **kwargs)  # type: ignore[arg-type]
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


# --------------------------------------------------------------------------------------------
# MQTT publishing (the devstack broker, TLS 1.3 and credentials, through ingest.mqtt)


def mqtt_config(client_id: str | None = None, **overrides: object):  # -> ingest.mqtt.MqttConfig
    """The devstack broker settings (``config_from_settings``) with a fresh client id."""
    import dataclasses

    from ingest.mqtt import config_from_settings

    config = config_from_settings(client_id or f"test-pub-{uuid.uuid4().hex[:12]}")
    return dataclasses.replace(config, **overrides) if overrides else config


class Publisher:
    """A connected paho 2 client from ``ingest.mqtt.make_client``; waits for each publish (QoS 1: PUBACK)."""

    def __init__(self, config: object | None = None, connect_timeout: float = 15.0) -> None:
        from ingest.mqtt import make_client

        self.config = config or mqtt_config()
        self.client = make_client(self.config)  # type: ignore[arg-type]
        self.connect_timeout = connect_timeout
        self._connected = threading.Event()
        self.connect_reason: object = None
        self.client.on_connect = self._on_connect

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                    properties: object) -> None:
        self.connect_reason = reason
        self._connected.set()

    def __enter__(self) -> Publisher:
        c = self.config
        self.client.connect(c.host, c.port, keepalive=c.keepalive)  # type: ignore[attr-defined]
        self.client.loop_start()
        try:
            if not self._connected.wait(self.connect_timeout):
                raise TimeoutError(f"no CONNACK from {c.host}:{c.port} within {self.connect_timeout}s")  # type: ignore[attr-defined]
            if getattr(self.connect_reason, "is_failure", False):
                raise ConnectionRefusedError(f"MQTT connection refused: {self.connect_reason}")
        except BaseException:
            self.client.loop_stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def send(self, topic: str, payload: bytes, qos: int = 1) -> mqtt.MQTTMessageInfo:
        """Queue a message without waiting (for bursts); pass the result to :meth:`wait`."""
        info = self.client.publish(topic, payload, qos=qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"publish to {topic!r} failed: {mqtt.error_string(info.rc)}")
        return info

    def wait(self, infos: list[mqtt.MQTTMessageInfo], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise TimeoutError(f"message {info.mid} not acknowledged by the broker within {timeout:g}s")

    def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = 60.0) -> None:
        self.wait([self.send(topic, payload, qos)], timeout)


def publish(topic: str, payload: bytes, *, qos: int = 1, timeout: float = 60.0) -> None:
    """Publish one message over TLS 1.3 with the devstack credentials and wait until it is acknowledged."""
    with Publisher() as pub:
        pub.publish(topic, payload, qos, timeout)


def probe_birth() -> bytes:
    from ingest.sparkplug import DataType, MetricSpec, encode_birth

    return encode_birth([MetricSpec("probe", DataType.Boolean, value=True)], timestamp=int(time.time() * 1000))


# --------------------------------------------------------------------------------------------
# Logical replication (pgoutput protocol 1), for counting row changes on a slot


@dataclass(frozen=True)
class RowChange:
    kind: str  # "I", "U" or "D"
    table: str
    values: dict[str, str | None]  # text form; a DELETE carries only the key columns


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(b"\0", pos)
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int, columns: list[str]) -> tuple[dict[str, str | None], int]:
    count = int.from_bytes(buf[pos:pos + 2], "big")
    pos += 2
    values: dict[str, str | None] = {}
    for i in range(count):
        kind = buf[pos:pos + 1]
        pos += 1
        if kind == b"n":
            values[columns[i]] = None
        elif kind in (b"t", b"b"):
            length = int.from_bytes(buf[pos:pos + 4], "big")
            values[columns[i]] = buf[pos + 4:pos + 4 + length].decode()
            pos += 4 + length
        # b"u": unchanged TOAST value, no data
    return values, pos


def pgoutput_row_changes(messages: list[bytes]) -> list[RowChange]:
    """INSERT/UPDATE/DELETE messages of a pgoutput stream, with their table and column values.

    ``messages`` are the ``data`` column of ``pg_logical_slot_peek_binary_changes`` in order
    (Relation messages precede the first change of each table).
    """
    relations: dict[int, tuple[str, list[str]]] = {}
    changes: list[RowChange] = []
    for msg in messages:
        kind = msg[:1]
        if kind == b"R":
            relid = int.from_bytes(msg[1:5], "big")
            _namespace, pos = _cstring(msg, 5)
            table, pos = _cstring(msg, pos)
            pos += 1  # replica identity setting
            ncols = int.from_bytes(msg[pos:pos + 2], "big")
            pos += 2
            columns = []
            for _ in range(ncols):
                name, pos = _cstring(msg, pos + 1)  # skip the flags byte
                columns.append(name)
                pos += 8  # type oid + type modifier
            relations[relid] = (table, columns)
        elif kind in (b"I", b"U", b"D"):
            table, columns = relations[int.from_bytes(msg[1:5], "big")]
            values: dict[str, str | None] = {}
            pos = 5
            while pos < len(msg):  # I: N; U: [K|O] N; D: K|O — the new tuple comes last
                part, pos = _tuple(msg, pos + 1, columns)
                values.update(part)
            changes.append(RowChange(kind.decode(), table, values))
    return changes
