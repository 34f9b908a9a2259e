"""Real daemons for tests, as subprocesses: the whole flow MQTT → catalog → CDC → Canary.

A :class:`Stack` runs any of ``ingest`` (``ingest_births``), ``worker`` (Celery, queues
``births,default``: applies births), ``cdc`` (``cdc_consume`` on a replication slot of its own,
dropped on teardown), ``beat`` (``celery beat`` with the database scheduler) and ``canary`` (N
Celery workers on the ``canary`` and ``sync`` queues: the flush and the pushes, talking to an
in-process :class:`devtools.canary_mock.CanaryMock` the stack serves). Defaults: ingest + worker.

They run against the pytest-django *test* database (tests using them must be
``@pytest.mark.django_db(transaction=True)`` so rows are committed and visible across
processes), a dedicated Redis database (flushed at start) and the devstack's Mosquitto.
Their logs go to files; :meth:`Stack.logs` returns the tails to attach to assertion messages.
Components can be killed and restarted one by one (``stack.kill("cdc")``, ``stack.start("cdc")``).

    with running_stack(tmp_path) as stack:
        publish(f"spBv1.0/{group}/DBIRTH/edge/dev", payload)
        stack.wait_for(lambda: ..., 30, "the frame to be applied")

No test sleeps blindly: :func:`wait_for` polls a predicate until a deadline.
"""

from __future__ import annotations

import contextlib
import datetime
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

import paho.mqtt.client as mqtt
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    import redis

    from devtools.canary_mock import CanaryMock, MockHTTPServer

BASE_DIR = Path(__file__).resolve().parent.parent
DEVSTACK_ENV = BASE_DIR / ".devstack" / "env"
TEST_REDIS_DB = 15
STOP_DEADLINE = 30.0  # seconds between SIGTERM and SIGKILL
CANARY_API_TOKEN = "stack-api-token-not-a-secret"  # the in-process mock's apiToken
COMPONENTS = ("ingest", "worker", "cdc", "beat", "canary")
SLOT_CREATE_TIMEOUT = 120.0  # seconds; see Stack.wait_ready
BREAKER_STATE_KEY = "metasync:canary:breaker:pybreaker:state"  # pybreaker's CircuitRedisStorage

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Polling


def wait_for(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.05,
             context: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes.

    On timeout raises ``TimeoutError`` naming ``what``, the last value or exception seen and,
    if given, ``context()`` (e.g. daemon log tails). :class:`DaemonDied` is raised at once.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except DaemonDied:
            raise
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


class DaemonDied(AssertionError):
    """A daemon a test relies on is no longer running (raised by :meth:`Stack.wait_for` at once)."""


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


_ROLES_GRANTED: set[str] = set()


def role_database_url(variable: str) -> str:
    """A per-process role's devstack URL (METASYNC_APP_/METASYNC_CDC_DATABASE_URL) on the test database.

    The roles' grants are per database, so ``setup_roles`` runs once on the test database first:
    the daemons then run as production runs them (docs/security.md, "Roles").
    """
    from django.conf import settings
    from django.core.management import call_command

    name = settings.DATABASES["default"]["NAME"]
    if name not in _ROLES_GRANTED:
        call_command("setup_roles", database=name, stdout=open(os.devnull, "w"))  # noqa: SIM115
        _ROLES_GRANTED.add(name)
    parts = urlsplit(_devstack_value(variable))
    return urlunsplit(parts._replace(path="/" + name))


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


# Databases a stack may claim (redis_db=None): 0 is dev/demo, 13 the sync benchmark, 14 the in-process
# Canary tests, 15 the default TEST_REDIS_DB. Celery queues and the shared Canary state live in the
# database, so two stacks on one database (two test sessions at once) would take each other's tasks.
CLAIMABLE_REDIS_DBS = range(1, 13)
_CLAIM_KEY = "metasync:test:stack:claim"  # token of the stack using the database (expires)
_MARKER_KEY = "metasync:test:stack"  # the database has been used by test stacks only: safe to flush
_CLAIM_SECONDS = 3600


def claim_redis_db(token: str) -> int:
    """A Redis database no other test stack is using, flushed and claimed by ``token``.

    A database with data but no marker belongs to someone else and is left alone.
    """
    import redis

    for db in CLAIMABLE_REDIS_DBS:
        client = redis.Redis.from_url(daemon_redis_url(db))
        try:
            if not client.set(_CLAIM_KEY, token, nx=True, ex=_CLAIM_SECONDS):
                continue  # another stack's
            if client.dbsize() > 1 and not client.exists(_MARKER_KEY):
                client.delete(_CLAIM_KEY)
                continue
            with client.pipeline(transaction=True) as pipe:
                pipe.flushdb().set(_CLAIM_KEY, token, ex=_CLAIM_SECONDS).set(_MARKER_KEY, "1").execute()
            return db
        finally:
            client.close()
    raise RuntimeError(f"no free Redis database for a test stack among {list(CLAIMABLE_REDIS_DBS)}")


def release_redis_db(db: int, token: str) -> None:
    """Flush a database claimed by ``token`` (its queues and Canary state), keeping it marked as a stack's."""
    import redis

    client = redis.Redis.from_url(daemon_redis_url(db))
    try:
        if client.get(_CLAIM_KEY) == token.encode():
            with client.pipeline(transaction=True) as pipe:
                pipe.flushdb().set(_MARKER_KEY, "1").execute()
    finally:
        client.close()


def old_transactions(older_than: float = 5.0) -> str:
    """Transactions open for more than ``older_than`` seconds, in any database (what a slot creation waits for)."""
    import psycopg

    try:
        with psycopg.connect(_devstack_value("DATABASE_ADMIN_URL"), autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT pid, datname, application_name, state, round(extract(epoch FROM now() - xact_start)),"
                " left(query, 100) FROM pg_stat_activity WHERE xact_start < now() - %s * interval '1 s'"
                " AND pid <> pg_backend_pid() ORDER BY xact_start", (older_than,)).fetchall()
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return f"(pg_stat_activity not readable: {exc})"
    lines = [f"  pid {pid} db {db} app {app!r} {state} for {age}s: {query}" for pid, db, app, state, age, query in rows]
    return f"transactions open > {older_than:g}s: {len(rows)}" + "".join("\n" + line for line in lines)


# --------------------------------------------------------------------------------------------
# Processes


class Daemon:
    """One subprocess in its own process group, output to a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.offset = 0  # size of the log when the current process was started
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            if self.starts > 1:
                now = datetime.datetime.now().isoformat(timespec="milliseconds")
                log.write(f"===== {self.name}: start #{self.starts} at {now} =====\n".encode())
                log.flush()
            self.offset = log.tell()
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

    def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` to the whole process group (prefork children included); reap it if SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=10)
            return self.proc.returncode
        return None

    def text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def since_start(self) -> str:
        """Log output of the current process only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.offset)
                return f.read().decode("utf-8", errors="replace")
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
    """Real daemons for one test or module; see the module docstring.

    ``components``: any of :data:`COMPONENTS`. ``canary`` starts ``canary_workers`` Celery workers
    (``--concurrency canary_concurrency``) on the ``canary`` queue and serves ``canary_mock`` (a
    fresh :class:`CanaryMock` if none is given) from a thread of the test process; every daemon gets
    ``CANARY_URL``/``CANARY_VIEWS_URL``/``CANARY_API_TOKEN`` pointing at it. ``cdc`` consumes a slot
    of its own (``t_<token>``), dropped by :meth:`stop`. The CDC debounce is shortened (1 s, cap
    10 s, poll 0.2 s); ``extra_env`` overrides any variable for every daemon.

    ``probe_group``: the group of the readiness probe births (default ``Tprobe<token>``); pass the
    group of a narrower ``topic`` (``spBv1.0/<group>/#``) so the probes are received.
    ``redis_db``: the Redis database of the Celery queues and the shared Canary state (flushed at
    start); ``None`` claims a free one (:func:`claim_redis_db`), safe with other test sessions running.
    """

    def __init__(self, tmp_dir: Path, *, components: Iterable[str] = ("ingest", "worker"),
                 topic: str = "spBv1.0/#", probe_group: str | None = None, canary_workers: int = 1,
                 canary_concurrency: int = 4, canary_mock: CanaryMock | None = None,
                 redis_db: int | None = TEST_REDIS_DB, ingest_log_level: str = "INFO", worker_log_level: str = "INFO",
                 log_level: str = "INFO", extra_env: dict[str, str] | None = None) -> None:
        self.components = tuple(components)
        unknown = set(self.components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}; known: {COMPONENTS}")
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.topic = topic
        self.token = uuid.uuid4().hex[:8]
        self.probe_group = probe_group or f"Tprobe{self.token}"
        self.metrics_port = free_port()
        self.cdc_metrics_port = free_port()
        self.slot = f"t_{self.token}"
        self.worker_name = f"test-{self.token}@{socket.gethostname()}"
        self.claimed_redis_db = redis_db is None  # claimed now, flushed at stop
        self.redis_db = claim_redis_db(self.token) if redis_db is None else redis_db
        self.redis_url = daemon_redis_url(self.redis_db)
        self.canary: CanaryMock | None = None
        self.canary_server: MockHTTPServer | None = None
        self._canary_thread: threading.Thread | None = None
        base = dict(os.environ)
        base.update({
            "METASYNC_ENV_FILE": str(DEVSTACK_ENV),
            # web/ingest/workers/beat as the application role, the slot as the CDC role
            "DATABASE_URL": role_database_url("METASYNC_APP_DATABASE_URL"),
            "CDC_DATABASE_URL": role_database_url("METASYNC_CDC_DATABASE_URL"),
            "REDIS_URL": self.redis_url,
            # short-lived connections: nothing idle in the test database between tasks, so
            # pytest-django's flush (TRUNCATE) never queues behind a daemon's connection
            "DATABASE_CONN_MAX_AGE": "0",
            # a client id of its own: the broker would kick another client with the default id
            "MQTT_CLIENT_ID": f"test-ingest-{self.token}",
            "PYTHONUNBUFFERED": "1",
            "CDC_SLOT": self.slot,
            "CDC_DEBOUNCE_SECONDS": "1",
            "CDC_DEBOUNCE_MAX_SECONDS": "10",
            "CDC_POLL_SECONDS": "0.2",
        })
        if "canary" in self.components or canary_mock is not None:
            from devtools.canary_mock import CanaryMock, make_server

            self.canary = canary_mock or CanaryMock(CANARY_API_TOKEN)
            self.canary_server = make_server("127.0.0.1", 0, self.canary)  # bound now: its URL goes in the env
            base.update({
                "CANARY_URL": f"{self.canary_server.url}/api/v1",
                "CANARY_VIEWS_URL": f"{self.canary_server.url}/api/v2",
                "CANARY_API_TOKEN": self.canary.api_token,
                "CANARY_CLIENT_ID": f"test-{self.token}",
            })
        base.update(extra_env or {})
        self.env = base

        def celery(*args: str) -> list[str]:
            return [sys.executable, "-m", "celery", "-A", "metasync", *args]

        def env(process: str, level: str) -> dict[str, str]:
            return {**base, "METASYNC_PROCESS": process, "LOG_LEVEL": level}

        self.daemons: dict[str, Daemon] = {}
        self.ingest: Daemon | None = None
        self.worker: Daemon | None = None
        self._node_names: dict[str, str] = {"worker": self.worker_name}
        if "worker" in self.components:
            self.worker = self.daemons["worker"] = Daemon(
                "celery worker",
                celery("worker", "-Q", "births,default", "--pool", "prefork", "--concurrency", "2",
                       "-n", f"test-{self.token}@%h", "--without-mingle", "--without-gossip", "-l", worker_log_level),
                env("test-worker", worker_log_level), self.tmp_dir / "worker.log")
        if "canary" in self.components:
            for i in range(1, canary_workers + 1):
                name = f"canary-{i}"
                self._node_names[name] = f"canary{i}-{self.token}@{socket.gethostname()}"
                self.daemons[name] = Daemon(
                    f"canary worker {i}",
                    celery("worker", "-Q", "canary,sync", "--pool", "prefork", "--concurrency", str(canary_concurrency),
                           "-n", f"canary{i}-{self.token}@%h", "--without-mingle", "--without-gossip",
                           "-l", log_level),
                    env(f"test-canary-{i}", log_level), self.tmp_dir / f"canary-{i}.log")
        if "cdc" in self.components:
            self.daemons["cdc"] = Daemon(
                "cdc_consume",
                [sys.executable, "manage.py", "cdc_consume", "--metrics-port", str(self.cdc_metrics_port)],
                env("test-cdc", log_level), self.tmp_dir / "cdc.log")
        if "beat" in self.components:
            self.daemons["beat"] = Daemon(
                "celery beat",
                celery("beat", "-S", "django_celery_beat.schedulers:DatabaseScheduler",
                       "--pidfile", str(self.tmp_dir / "beat.pid"), "-s", str(self.tmp_dir / "beat-schedule"),
                       "-l", log_level),
                env("test-beat", log_level), self.tmp_dir / "beat.log")
        if "ingest" in self.components:
            self.ingest = self.daemons["ingest"] = Daemon(
                "ingest_births",
                [sys.executable, "manage.py", "ingest_births", "--topic", topic,
                 "--metrics-port", str(self.metrics_port)],
                env("test-ingest", ingest_log_level), self.tmp_dir / "ingest.log")
        self._running: set[str] = set()  # started and not stopped or killed on purpose
        self._probes = 0

    # --- lifecycle -------------------------------------------------------------------
    def names(self, *names: str) -> list[str]:
        """Daemon names in start order; ``canary`` stands for every canary worker; none: all."""
        if not names:
            return list(self.daemons)
        out: list[str] = []
        for name in names:
            matched = [d for d in self.daemons if d == name or (name == "canary" and d.startswith("canary-"))]
            if not matched:
                raise KeyError(f"no daemon {name!r} in this stack (has: {', '.join(self.daemons)})")
            out += [d for d in matched if d not in out]
        return out

    def start(self, *names: str, timeout: float = 60.0, wait: bool = True) -> None:
        """Start the whole stack (no names: Redis flushed, mock served) or (re)start the named daemons;
        returns when each is ready (worker answers ping, slot claimed, beat sending, ingest subscribed),
        or at once with ``wait=False``."""
        if not names:
            if not self.claimed_redis_db:  # a claimed one was flushed when claimed
                flush_redis(self.redis_url)
            if self.canary_server is not None and self._canary_thread is None:
                self._canary_thread = threading.Thread(target=self.canary_server.serve_forever,
                                                       kwargs={"poll_interval": 0.1}, name="canary-mock", daemon=True)
                self._canary_thread.start()
        selected = self.names(*names)
        for name in selected:
            daemon = self.daemons[name]
            if daemon.alive():
                raise AssertionError(f"{daemon.name} is already running")
            daemon.start()
            self._running.add(name)
        for name in selected if wait else ():
            self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        daemon = self.daemons[name]
        if name == "ingest":
            self.wait_connected(timeout)
            self.wait_subscribed(timeout)
        elif name == "cdc":
            # Logged once the slot is claimed and set up. Creating a slot waits for every transaction
            # running at that moment, in any database: a long one elsewhere delays the first start.
            marker = f"replication slot {self.slot} "
            wait_for(lambda: self._check_alive() or marker in daemon.since_start(),
                     max(timeout, SLOT_CREATE_TIMEOUT), f"cdc_consume to claim and set up slot {self.slot}",
                     context=lambda: f"{old_transactions()}\n{self.logs()}")
        elif name == "beat":
            self.wait_for(lambda: self._check_alive() or "Sending due task" in daemon.since_start(), timeout,
                          "celery beat to send its first task")
        else:
            node = self._node_names[name]
            self.wait_for(lambda: self._worker_pong(node), timeout, f"celery worker {node} to answer ping")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Send ``sig`` (default SIGKILL) to a daemon's process group; it no longer counts as running."""
        self._running.discard(name)
        return self.daemons[name].kill(sig)

    def stop(self, *names: str) -> None:
        """Stop the named daemons (SIGTERM, then SIGKILL after a deadline); no names: everything, in
        order (ingest stores its backlog first), then the mock, then the replication slot is dropped."""
        if names:
            for name in self.names(*names):
                self._running.discard(name)
                self.daemons[name].stop()
            return
        self.snapshot_metrics()
        order = [n for n in ("ingest", "cdc", "beat", "worker") if n in self.daemons]
        order += [n for n in self.daemons if n not in order]
        try:
            for name in order:
                self._running.discard(name)
                self.daemons[name].stop()
        finally:
            try:
                if self.canary_server is not None:
                    if self._canary_thread is not None:
                        self.canary_server.shutdown()
                        self._canary_thread.join(timeout=5)
                    self.canary_server.server_close()
            finally:
                try:
                    if "cdc" in self.daemons:
                        self.drop_slot()
                finally:
                    if self.claimed_redis_db:
                        release_redis_db(self.redis_db, self.token)

    def drop_slot(self, timeout: float = 30.0) -> None:
        """Drop this stack's replication slot (the test database cannot be dropped while it exists)."""
        import psycopg
        from django.conf import settings

        url = _devstack_value("DATABASE_ADMIN_URL")
        with psycopg.connect(url, dbname=settings.DATABASES["default"]["NAME"], autocommit=True) as conn:
            def dropped() -> bool:
                row = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                                   (self.slot,)).fetchone()
                if row is None:
                    return True
                if row[0] is not None:  # a killed consumer's backend may still be finishing its query
                    conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    return False
                conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                return True

            wait_for(dropped, timeout, f"replication slot {self.slot} to be dropped", interval=0.2)

    # --- readiness -------------------------------------------------------------------
    def _worker_pong(self, node: str | None = None) -> bool:
        from celery import Celery

        node = node or self.worker_name
        self._check_alive()
        app = Celery("stack-ping", broker=self.redis_url, set_as_current=False)
        try:
            replies = app.control.ping(destination=[node], timeout=0.5)
        finally:
            app.close()
        return any(node in reply for reply in replies)

    def wait_connected(self, timeout: float = 60.0) -> None:
        """Until ingest's metrics say ``metasync_ingest_connected 1.0``."""
        self.wait_for(lambda: self._check_alive() or self.metrics().get("metasync_ingest_connected") == 1.0,
                      timeout, "ingest_births to report metasync_ingest_connected 1.0")

    def wait_subscribed(self, timeout: float = 60.0) -> None:
        """Until a probe frame published now is received (CONNACK comes before SUBACK).

        A probe is a valid one-metric DBIRTH of a device of its own (group ``probe_group``,
        edge ``probe``), so it ends ``applied`` and touches nothing a test looks at.
        """
        deadline = time.monotonic() + timeout
        with Publisher() as pub:
            while True:
                before = self.metrics().get("metasync_ingest_frames_received_total", 0.0)
                self._probes += 1
                pub.publish(f"spBv1.0/{self.probe_group}/DBIRTH/probe/p{self._probes}", probe_birth())
                try:
                    wait_for(lambda b=before: self.metrics().get("metasync_ingest_frames_received_total", 0.0) > b,
                             1.0, "the probe frame")
                    return
                except TimeoutError:
                    self._check_alive()
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"ingest_births never received a probe frame within {timeout:g}s\n"
                                           + self.logs()) from None

    def check_alive(self) -> None:
        """Raise :class:`DaemonDied` if a daemon started and not stopped or killed on purpose is gone."""
        self._check_alive()

    def _check_alive(self) -> None:
        for name in sorted(self._running):
            daemon = self.daemons[name]
            if not daemon.alive():
                raise DaemonDied(f"{daemon.name} is not running\n{self.logs()}")

    # --- observation -------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """ingest_births' Prometheus samples."""
        return scrape(self.metrics_port)

    def cdc_metrics(self) -> dict[str, float]:
        return scrape(self.cdc_metrics_port)

    def redis(self) -> redis.Redis:
        import redis

        return redis.Redis.from_url(self.redis_url)

    def breaker_state(self) -> str:
        """The shared Canary circuit breaker's state (``closed``, ``open``, ``half-open``)."""
        client = self.redis()
        try:
            value = client.get(BREAKER_STATE_KEY)
        finally:
            client.close()
        return value.decode() if value else "closed"

    def snapshot_metrics(self) -> None:
        """Each running daemon's last /metrics page into ``metrics-<name>.txt`` beside its log: what
        a failed run leaves behind (make test keeps these folders under .ci/artifacts/)."""
        ports = {"ingest": self.metrics_port, "cdc": self.cdc_metrics_port}
        for name, port in ports.items():
            if name not in self._running:
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    (self.tmp_dir / f"metrics-{name}.txt").write_bytes(response.read())
            except OSError:
                pass  # gone already: its log says why

    def logs(self, lines: int = 60) -> str:
        parts = [d.tail(lines) for d in self.daemons.values() if d.proc is not None]
        if self.canary is not None:
            stats = self.canary.stats()
            brief = {k: stats[k] for k in ("requests_total", "requests_by_method", "http_status", "status_codes",
                                           "tags", "rows_stored")}
            parts.append(f"----- canary mock: faults {self.canary.faults()}, stats {brief}, rate {stats['rate']}")
        return "\n".join(parts)

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


def integrity_violations() -> list[str]:
    """What the verification scripts of ops/sql find wrong in the test database (monitoring.integrity):
    duplicates, typed values, orphans, the sync queue, the ledger."""
    from monitoring import integrity

    return [f"{v.script}: {v.check}: {v.detail}" for v in integrity.run()]


# --------------------------------------------------------------------------------------------
# MQTT publishing (the devstack broker, TLS 1.3 and credentials, through ingest.mqtt)


def mqtt_config(client_id: str | None = None, **overrides: object):  # -> ingest.mqtt.MqttConfig
    """The devstack broker settings (``config_from_settings``) with a fresh client id."""
    import dataclasses

    from metasync.mqtt import config_from_settings

    config = config_from_settings(client_id or f"test-pub-{uuid.uuid4().hex[:12]}")
    return dataclasses.replace(config, **overrides) if overrides else config


class Publisher:
    """A connected paho 2 client from ``ingest.mqtt.make_client``; waits for each publish (QoS 1: PUBACK)."""

    def __init__(self, config: object | None = None, connect_timeout: float = 15.0) -> None:
        from metasync.mqtt import make_client

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
    from sparkplug.codec import MetricSpec, encode_birth
    from sparkplug.datatypes import DataType

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


def devstack_restart(service: str) -> float:
    """``scripts/devstack restart <service>`` (same port); returns how long it took."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "scripts/devstack", "restart", service], cwd=BASE_DIR,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"devstack restart {service} failed:\n{done.stdout}\n{done.stderr}"
    return time.monotonic() - started
