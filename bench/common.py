"""Shared benchmark plumbing: Django set-up, machine facts, result files."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
STOP_DEADLINE = 20.0


def setup_django() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "metasync.settings")
    import django

    django.setup()


def machine_facts() -> dict:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        pg_version = cur.fetchone()[0]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(), "postgres": pg_version, "platform": platform.platform(),
        "git_commit": commit,
    }


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return path


def use_bench_database(name: str = "metasync_bench") -> None:
    """Point this process and its children at a fresh database ``name`` (dropped by
    :func:`drop_bench_database`): benchmarks neither read nor leave rows in the dev catalog."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    connection.ensure_connection()
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params["dbname"] = "postgres"
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    url = urlsplit(os.environ["DATABASE_URL"])
    os.environ["DATABASE_URL"] = urlunsplit(url._replace(path=f"/{name}"))
    settings.DATABASES["default"]["NAME"] = name
    call_command("migrate", verbosity=0)


def drop_bench_database(name: str = "metasync_bench") -> None:
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params["dbname"] = "postgres"
    connection.close()
    deadline = time.monotonic() + 30
    with psycopg.connect(**params, autocommit=True) as admin:
        while True:
            try:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except psycopg.errors.InsufficientPrivilege:
                # a session of another role (the CDC role's consumer, just stopped) is still
                # ending: FORCE may only end the owner's own sessions
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


_t0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - _t0:7.1f}s] {message}", flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


# --------------------------------------------------------------------------------------------
# Subprocesses


class Proc:
    """A daemon in its own process group, output to a log file (the approach of tests/stack.py)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} is not running\n{self.tail()}")

    def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """SIGTERM, wait up to ``deadline``, then SIGKILL the process group (prefork children included)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc.returncode != 0:  # children of a killed parent share its process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 30) -> str:
        body = "\n".join(self.text().splitlines()[-lines:])
        return f"----- {self.name}, last {lines} lines of {self.log_path} -----\n{body}"


class Procs:
    """The daemons of one benchmark, run from ``cwd`` (a checkout of the project: this one, or a
    baseline's)."""

    def __init__(self, log_dir: Path, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.log_dir, self.env, self.cwd = log_dir, env, cwd
        self.all: list[Proc] = []

    def start(self, name: str, argv: list[str], **extra_env: str) -> Proc:
        proc = Proc(name, argv, {**self.env, "METASYNC_PROCESS": f"bench-{name}", **extra_env}, self.log_dir,
                    self.cwd)
        self.all.append(proc)
        return proc.start()

    def stop(self, *procs: Proc) -> None:
        for proc in reversed(procs or tuple(self.all)):
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                print(f"could not stop {proc.name}: {exc}", file=sys.stderr)

    def tails(self) -> str:
        return "\n".join(p.tail() for p in self.all if p.proc is not None)


def celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "metasync", *args]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def worker_pong(redis_url: str, node: str, proc: Proc) -> bool:
    from celery import Celery

    proc.check()
    app = Celery("bench-ping", broker=redis_url, set_as_current=False)
    try:
        return any(node in reply for reply in app.control.ping(destination=[node], timeout=0.5))
    finally:
        app.close()


# --------------------------------------------------------------------------------------------
# Mock (HTTP control API; no proxy for 127.0.0.1)

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Mock:
    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> dict:
        with _opener.open(f"{self.url}/_mock/{path}", timeout=60) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(f"{self.url}/_mock/{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with _opener.open(request, timeout=60) as response:
            return json.loads(response.read())

    def stats(self, windows: bool = False) -> dict:
        return self.get("stats?windows=1" if windows else "stats")

    def up(self) -> bool:
        try:
            self.stats()
            return True
        except OSError:
            return False
