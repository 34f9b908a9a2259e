"""A contract-faithful fake of the Canary historian for dev, the demo, tests and benchmarks; never production.

Pure stdlib (no Django): :class:`CanaryMock` holds the state and answers requests
(:meth:`CanaryMock.handle`), :func:`make_server` puts it behind a ``ThreadingHTTPServer``,
:func:`running` serves it from a thread, ``manage.py canary_mock`` from a daemon. Where the contract
is silent the mock is deliberately stricter than Canary (a test aid, not a claim about Canary), and
faults are injected on the Write API only. Endpoints, every strict choice, the fault knobs and the
``/_mock/`` control API: docs/canary-api.md, "The Canary mock".
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import secrets
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socketserver import TCPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs

__all__ = ["CanaryMock", "Faults", "MockHTTPServer", "Reply", "check_store_body", "make_server", "parse_timestamp",
           "running"]

DEFAULT_PORT = 55293
WRITE_PREFIX = "/api/v1/"
VIEWS_PREFIX = "/api/v2/"
CONTROL_PREFIX = "/_mock/"

WRITE_METHODS = ("getSessionToken", "storeData", "keepAlive", "revokeSessionToken")
VIEWS_METHODS = ("getTagProperties",)
# In Canary's Write API but not implemented here (metasync does not use them): HTTP 501.
UNIMPLEMENTED_WRITE_METHODS = frozenset({
    "version", "getDatasets", "updateSettings", "configureTags", "manualEntryStoreData", "noData",
    "createNewFile", "fileRollOver", "getErrors", "deleteRange", "obsoleteTags", "unobsoleteTags"})

SETTING_DEFAULTS: dict[str, Any] = {"clientTimeout": 60000, "autoCreateDatasets": False, "autoWriteNoData": True,
                                    "extendData": True, "insertReplaceData": False}
UNSAFE_SETTINGS = ("autoWriteNoData", "extendData")  # a metadata-only writer must turn these off
QUALITIES = frozenset({0, 64, 192, 32768})
QUALITY_NAMES = frozenset({"Good", "Bad"})
_QUALITY_OK = QUALITIES | QUALITY_NAMES  # with a type check: 192.0 and True hash like 192 and 1
_SCALARS = (str, int, float, bool, type(None))  # null: metasync's removal marker
MAX_REASONS = 100  # error strings per answer; the rest is counted
MAX_BODY_BYTES = 64 * 1024 * 1024  # transport safety only; the project budget is measured separately
MAX_WINDOWS = 86_400  # per-second counts kept (a day)
MAX_RETIRED = 10_000  # ended sessions remembered to say why a token is refused
IDLE_CONNECTION_SECONDS = 60.0

TICKS_PER_SECOND = 10_000_000  # .NET / FILETIME resolution: 100 ns
FILETIME_MIN_TICKS = (date(1601, 1, 1).toordinal() - 1) * 86_400 * TICKS_PER_SECOND

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:(Z)|([+-])(\d{2}):(\d{2}))?\Z", re.ASCII)


class Reply(NamedTuple):
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _Row(NamedTuple):
    name: str
    timestamp: str
    ticks: int
    value: Any
    quality: int | str


class PropertyRow(NamedTuple):
    """One stored ``storeData`` row, as kept in a tag's property history."""

    name: str
    timestamp: str
    value: Any
    quality: int | str
    received_at: float  # wall clock (time.time())


@dataclasses.dataclass
class Faults:
    """The runtime knobs: injected faults, plus ``limit_rps`` (what counts as a rate violation)."""

    error_rate: float = 0.0
    latency_ms: float = 0.0
    hang_seconds: float = 0.0
    rate_limit_rps: int | None = None
    tag_errors: frozenset[str] = frozenset()
    fail_next: int = 0
    expire_after: float | None = None
    limit_rps: int | None = None

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with ``changes`` applied; ``ValueError`` names every unknown key or bad value."""
        fields = {f.name for f in dataclasses.fields(self)}
        problems = [f"unknown knob {key!r}" for key in changes if key not in fields]
        values: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in fields:
                continue
            try:
                values[key] = _KNOB_CHECKS[key](value)
            except (TypeError, ValueError) as exc:
                problems.append(f"{key}: {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["tag_errors"] = sorted(self.tag_errors)
        return data


def _number(low: float, high: float | None = None) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"expected a number, got {value!r}")
        if value < low or (high is not None and value > high):
            raise ValueError(f"{value!r} is outside [{low}, {high if high is not None else '∞'}]")
        return float(value)
    return check


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer ≥ 0, got {value!r}")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _tags(value: Any) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable) or not all(isinstance(t, str) for t in value):
        raise TypeError("expected a list of tag paths")
    return frozenset(value)


def _positive_count(value: Any) -> int:
    if _count(value) == 0:
        raise ValueError("expected an integer ≥ 1")
    return int(value)


_KNOB_CHECKS: dict[str, Callable[[Any], Any]] = {
    "error_rate": _number(0.0, 1.0),
    "latency_ms": _number(0.0),
    "hang_seconds": _number(0.0),
    "rate_limit_rps": _optional(_positive_count),
    "tag_errors": _tags,
    "fail_next": _count,
    "expire_after": _optional(_number(0.0)),
    "limit_rps": _optional(_positive_count),
}


# --------------------------------------------------------------------------------------------
# Row validation (pure)

@lru_cache(maxsize=65_536)
def parse_timestamp(text: str) -> int:
    """UTC ticks (100 ns since 0001-01-01) of a contract timestamp; ``ValueError`` says what is wrong."""
    match = _TIMESTAMP.match(text)
    if match is None:
        raise ValueError(f"timestamp {_show(text)} is not ISO 8601 YYYY-MM-DDThh:mm:ss[.fffffff](Z|±hh:mm)")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    if zulu is None and sign is None:
        raise ValueError(f"timestamp {_show(text)} has no zone (Z or ±hh:mm required)")
    try:
        ordinal = date(int(year), int(month), int(day)).toordinal()
    except ValueError:
        raise ValueError(f"timestamp {_show(text)} is not a valid date") from None
    if int(hour) > 23 or int(minute) > 59 or int(second) > 59:
        raise ValueError(f"timestamp {_show(text)} is not a valid time of day")
    offset = 0
    if sign is not None:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError(f"timestamp {_show(text)} has an invalid zone offset")
        offset = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == "+" else -1)
    seconds = (ordinal - 1) * 86_400 + int(hour) * 3600 + int(minute) * 60 + int(second) - offset
    ticks = seconds * TICKS_PER_SECOND + int(((fraction or "") + "0000000")[:7])
    if ticks < FILETIME_MIN_TICKS:
        raise ValueError(f"timestamp {_show(text)} is before 1601-01-01T00:00:00Z (outside the Win32 FILETIME range)")
    return ticks


def check_store_body(body: Mapping[str, Any]) -> tuple[list[tuple[str, list[_Row]]], list[str]]:
    """Validate a ``storeData`` body except its session token: (rows per tag, one reason per problem)."""
    problems: list[str] = []
    for key in body:
        if key == "tvqs":
            problems.append("tvqs refused: metasync writes tag properties only, never values")
        elif key == "annotations":
            problems.append("annotations are not supported by the mock (metasync never sends them)")
        elif key not in ("sessionToken", "properties"):
            problems.append(f"unknown key {key!r} in the storeData body")
    properties = body.get("properties")
    if not isinstance(properties, dict):
        problems.append("properties must be an object: tag path -> [[name, timestamp, value, quality], ...]"
                        if "properties" in body else "properties is missing")
        return [], problems
    checked: list[tuple[str, list[_Row]]] = []
    for tag, rows in properties.items():
        if not tag or "" in tag.split("."):
            problems.append(f"tag path {_show(tag)} is empty or has an empty segment")
        if not isinstance(rows, list):
            problems.append(f"tag {_show(tag)}: rows must be a list of [name, timestamp, value, quality]")
            continue
        if not rows:
            problems.append(f"tag {_show(tag)}: no rows")
        good: list[_Row] = []
        for index, row in enumerate(rows):
            if type(row) is list and len(row) == 4:
                name, timestamp, value, quality = row
                # fast path: a well-formed row (timestamps are cached, batches repeat them)
                if (type(name) is str and name and type(timestamp) is str and type(value) in _SCALARS
                        and type(quality) in (int, str) and quality in _QUALITY_OK):
                    try:
                        good.append(_Row(sys.intern(name), timestamp, parse_timestamp(timestamp), value, quality))
                        continue
                    except ValueError:
                        pass
            problems += _row_problems(f"tag {_show(tag)} row {index}", row)
        checked.append((tag, good))
    return checked, problems


def _row_problems(where: str, row: Any) -> list[str]:
    """Every reason why ``row`` is not ``[name, timestamp, value, quality]`` as the contract says."""
    if not isinstance(row, list) or len(row) != 4:
        return [f"{where}: expected [name, timestamp, value, quality], got {_show(row)}"]
    name, timestamp, value, quality = row
    problems = []
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: property name must be a non-empty string, got {_show(name)}")
    if not isinstance(timestamp, str):
        problems.append(f"{where}: timestamp must be an ISO 8601 string, got {_show(timestamp)}")
    else:
        try:
            parse_timestamp(timestamp)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    if type(value) not in _SCALARS:
        problems.append(f"{where}: value must be a JSON scalar (or null, the removal marker), got {_show(value)}")
    if type(quality) not in (int, str) or quality not in _QUALITY_OK:
        problems.append(f"{where}: quality must be 0, 64, 192, 32768, \"Good\" or \"Bad\", got {_show(quality)}")
    return problems


def _show(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _reasons(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_REASONS:
        return problems
    return problems[:MAX_REASONS] + [f"... and {len(problems) - MAX_REASONS} more problems"]


def _unknown_keys(body: Mapping[str, Any], allowed: tuple[str, ...], method: str) -> list[str]:
    return [f"unknown key {key!r} in the {method} body" for key in body if key not in allowed]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# The mock

@dataclasses.dataclass(slots=True)
class _Session:
    number: int
    client_id: str
    historians: list[str]
    settings: dict[str, Any]
    timeout: float  # seconds of inactivity, from settings.clientTimeout
    created: float
    last_used: float
    unsafe: list[str]


def _good(**extra: Any) -> dict[str, Any]:
    return {"statusCode": "Good", "errors": [], **extra}


def _errors(problems: list[str], **extra: Any) -> dict[str, Any]:
    return {"statusCode": "Errors", "errors": _reasons(problems), **extra}


def _bad_session(reason: str) -> dict[str, Any]:
    return {"statusCode": "BadSessionToken", "errors": [reason]}


def _json(status: int, obj: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(), "application/json",
                 headers)


class CanaryMock:
    """State and behaviour of the fake Canary; thread-safe (one lock). See docs/canary-api.md, "The Canary mock"."""

    def __init__(self, api_token: str, *, session_timeout: float = 60.0, limit_rps: int | None = None,
                 error_rate: float = 0.0, latency_ms: float = 0.0, hang_seconds: float = 0.0,
                 rate_limit_rps: int | None = None, tag_errors: Iterable[str] = (), fail_next: int = 0,
                 expire_after: float | None = None, seed: int | None = None, transcript_size: int = 10_000,
                 transcript_path: str | Path | None = None, budget_body_bytes: int = 1_000_000,
                 budget_tags: int = 100, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if not api_token:
            raise ValueError("api_token is required")
        if session_timeout <= 0:
            raise ValueError("session_timeout must be > 0")
        self.api_token = api_token
        self.session_timeout = float(session_timeout)
        self.budget_body_bytes = budget_body_bytes
        self.budget_tags = budget_tags
        self.clock = clock
        self.wall_clock = wall_clock
        self._baseline = Faults().updated({
            "error_rate": error_rate, "latency_ms": latency_ms, "hang_seconds": hang_seconds,
            "rate_limit_rps": rate_limit_rps, "tag_errors": list(tag_errors), "fail_next": fail_next,
            "expire_after": expire_after, "limit_rps": limit_rps})
        self._seed = seed
        self._transcript_size = transcript_size
        self._transcript_path = Path(transcript_path) if transcript_path else None
        self._file_lock = threading.Lock()
        self._lock = threading.Lock()
        self._wake = threading.Event()  # set to cut injected hangs short (fault change, reset)
        self._generation = 0
        self._reset_locked()

    # --- state -------------------------------------------------------------------------------

    def _reset_locked(self) -> None:
        self._generation += 1
        self._wake.set()
        self._wake = threading.Event()
        self._faults = dataclasses.replace(self._baseline)
        self._rng = random.Random(self._seed)
        self._sessions: dict[str, _Session] = {}
        self._session_numbers = 0
        self._retired: OrderedDict[str, str] = OrderedDict()  # token -> why it no longer works
        self._labels: dict[str, int] = {}  # token -> session number, for the masked transcript
        self._current: dict[str, dict[str, tuple[int, Any]]] = {}  # tag -> name -> (ticks, value)
        self._history: dict[str, list[tuple[str, str, Any, Any, float]]] = {}  # PropertyRow fields
        self._transcript: deque[dict[str, Any]] = deque(maxlen=self._transcript_size or 1)
        self._seq = 0
        # statistics
        self._by_method: Counter[str] = Counter()
        self._http: Counter[int] = Counter()
        self._status_codes: Counter[str] = Counter()
        self._requests_total = 0
        self._rows_stored = 0
        self._stores_good = 0
        self._sessions_created = self._sessions_expired = self._sessions_revoked = self._sessions_dropped = 0
        self._unsafe_sessions = 0
        self._max_body = self._max_tags = self._over_budget = 0
        # rate windows
        self._t0 = self.clock()
        self._window = -1
        self._window_count = 0
        self._window_flagged = False
        self._windows: dict[int, int] = {}
        self._counted = 0
        self._max_window = 0
        self._violations = 0
        self._sliding: deque[float] = deque()
        self._max_sliding = 0
        self._sliding_violations = 0

    @property
    def rows_stored(self) -> int:
        return self._rows_stored

    def reset(self) -> None:
        """Forget everything: sessions, tags, history, stats, transcript; faults back to the start-up values."""
        with self._lock:
            self._reset_locked()

    def configure(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change knobs at runtime (merged); ``{}`` or ``reset: true`` restores the start-up values first,
        ``drop_sessions: true`` forgets every session. Returns the knobs now in force."""
        changes = dict(changes)
        restore = not changes or bool(changes.pop("reset", False))
        drop = bool(changes.pop("drop_sessions", False))
        with self._lock:
            base = dataclasses.replace(self._baseline) if restore else self._faults
            self._faults = base.updated(changes)  # ValueError leaves the knobs as they were
            self._wake.set()
            self._wake = threading.Event()
            if drop:
                self._drop_sessions_locked()
            return self._faults.as_dict()

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Keyword form of :meth:`configure`: ``mock.set_faults(error_rate=0.1)``; no arguments clears."""
        return self.configure(changes)

    def faults(self) -> dict[str, Any]:
        with self._lock:
            return self._faults.as_dict()

    def drop_sessions(self) -> int:
        """Invalidate every session now; returns how many there were."""
        with self._lock:
            return self._drop_sessions_locked()

    def _drop_sessions_locked(self) -> int:
        count = len(self._sessions)
        for token in self._sessions:
            self._retire(token, "session token dropped by the server (mock drop_sessions)")
        self._sessions.clear()
        self._sessions_dropped += count
        return count

    def properties(self, tag: str) -> dict[str, Any]:
        """Current properties of ``tag`` (names whose latest row is the ``null`` marker omitted)."""
        with self._lock:
            return self._visible(tag)

    def history(self, tag: str) -> list[PropertyRow]:
        with self._lock:
            return [PropertyRow(*r) for r in self._history.get(tag, ())]

    def state(self, tags: Iterable[str] | None = None, history: bool = False) -> dict[str, Any]:
        """``{"tags": {tag: {name: value}}}`` (every tag, or the ones asked), with history rows if asked."""
        with self._lock:
            names = list(self._current) if tags is None else [t for t in tags if t in self._current]
            out: dict[str, Any] = {"tags": {tag: self._visible(tag) for tag in names}}
            if history:
                out["history"] = {tag: [[*r[:4], _iso(r[4])] for r in self._history.get(tag, ())] for tag in names}
            return out

    def _visible(self, tag: str) -> dict[str, Any]:
        return {name: value for name, (_, value) in self._current.get(tag, {}).items() if value is not None}

    def stats(self, windows: bool = False) -> dict[str, Any]:
        """Counters and rate measurements (docs/canary-api.md, "Control API"); ``windows`` adds per-second counts."""
        with self._lock:
            now = self.clock()
            self._expire_idle(now)
            out: dict[str, Any] = {
                "requests_total": self._requests_total,
                "requests_by_method": dict(self._by_method),
                "http_status": {str(code): n for code, n in sorted(self._http.items())},
                "status_codes": dict(self._status_codes),
                "http_429": self._http[429],
                "http_5xx": sum(n for code, n in self._http.items() if code >= 500),
                "rows_stored": self._rows_stored,
                "store_requests_stored": self._stores_good,
                "sessions_created": self._sessions_created,
                "sessions_expired": self._sessions_expired,
                "sessions_revoked": self._sessions_revoked,
                "sessions_dropped": self._sessions_dropped,
                "sessions_active": len(self._sessions),
                "unsafe_sessions": self._unsafe_sessions,
                "sessions": [{"session": s.number, "clientId": s.client_id, "historians": s.historians,
                              "settings": s.settings, "unsafe": s.unsafe,
                              "idle_seconds": round(now - s.last_used, 3)} for s in self._sessions.values()],
                "tags": len(self._current),
                "max_body_bytes": self._max_body,
                "max_tags_per_request": self._max_tags,
                "over_budget_requests": self._over_budget,
                "rate": {
                    "limit_rps": self._faults.limit_rps,
                    "counted_requests": self._counted,
                    "elapsed_seconds": round(now - self._t0, 3),
                    "max_in_second_window": self._max_window,
                    "max_in_sliding_window": self._max_sliding,
                    "violations": self._violations,
                    "sliding_violations": self._sliding_violations,
                },
                "faults": self._faults.as_dict(),
            }
            if windows:
                out["rate"]["windows"] = sorted(self._windows.items())
            return out

    def transcript(self, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Recorded exchanges with ``seq`` > ``since`` (oldest first), secrets masked."""
        with self._lock:
            entries = [e for e in self._transcript if e["seq"] > since] if self._transcript_size else []
        return entries[:limit] if limit is not None else entries

    # --- requests ------------------------------------------------------------------------------

    def handle(self, verb: str, target: str, content_type: str | None, body: bytes,
               authorization: str | None = None) -> Reply | None:
        """Answer one HTTP request; ``None`` means drop the connection without an answer."""
        path, _, query = target.partition("?")
        if path.startswith(CONTROL_PREFIX):
            return self._control(verb, path[len(CONTROL_PREFIX):], query, body)
        started = time.perf_counter()
        if path.startswith(WRITE_PREFIX):
            api, method = "write", path[len(WRITE_PREFIX):]
            known = method in WRITE_METHODS or method in UNIMPLEMENTED_WRITE_METHODS
        elif path.startswith(VIEWS_PREFIX):
            api, method = "views", path[len(VIEWS_PREFIX):]
            known = method in VIEWS_METHODS
        else:
            api, method, known = "other", path, False
        fault = 0
        delay = hang = 0.0
        with self._lock:
            generation, wake = self._generation, self._wake
            self._requests_total += 1
            self._by_method[method if known else "(unknown)"] += 1
            if api == "write":
                in_window = self._arrive(self.clock())
                self._max_body = max(self._max_body, len(body))
                faults = self._faults
                delay = faults.latency_ms / 1000.0
                if faults.rate_limit_rps is not None and in_window > faults.rate_limit_rps:
                    fault = 429
                elif faults.fail_next > 0:
                    faults.fail_next -= 1
                    fault = 500
                elif faults.error_rate and self._rng.random() < faults.error_rate:
                    fault = self._rng.choice((500, 502, 503))
                else:
                    hang = faults.hang_seconds
        if delay:
            time.sleep(delay)
        request_obj: Any = None
        if fault:
            reply = Reply(fault, f"injected fault (canary mock): HTTP {fault} {HTTPStatus(fault).phrase}\n".encode(),
                          "text/plain; charset=utf-8", (("Retry-After", "1"),) if fault == 429 else ())
            response_obj: Any = reply.body.decode().strip()
        else:
            if hang:
                wake.wait(hang)
            if generation != self._generation:
                return None  # reset while hanging: this request belongs to a forgotten world
            reply, request_obj, response_obj = self._call(api, method, known, verb, content_type, body,
                                                          authorization, generation)
        self._record(generation, api, method, reply, request_obj, response_obj, started, len(body))
        return reply

    def _call(self, api: str, method: str, known: bool, verb: str, content_type: str | None, body: bytes,
              authorization: str | None, generation: int) -> tuple[Reply, Any, Any]:
        def fail(status: int, problem: str) -> tuple[Reply, Any, Any]:
            obj = _errors([problem])
            return _json(status, obj), None, obj

        if not known:
            return fail(404, f"unknown method {method!r} (Write API: {', '.join(WRITE_METHODS)} under {WRITE_PREFIX}; "
                             f"Views API: getTagProperties under {VIEWS_PREFIX})")
        if method in UNIMPLEMENTED_WRITE_METHODS:
            return fail(501, f"{method} exists in Canary's Write API but is not implemented by the mock")
        if verb != "POST":
            return fail(405, f"{method} takes POST, not {verb}")
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            return fail(415, f"Content-Type must be application/json, got {content_type!r}")
        try:
            obj = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            return fail(400, f"body is not valid UTF-8 JSON: {exc}")
        if not isinstance(obj, dict):
            return fail(400, "body must be a JSON object")
        if method == "getSessionToken":
            response = self._get_session_token(obj)
        elif method == "storeData":
            response = self._store_data(obj, generation, len(body))
        elif method == "keepAlive":
            response = self._keep_alive(obj)
        elif method == "revokeSessionToken":
            response = self._revoke(obj)
        else:
            response = self._get_tag_properties(obj, authorization)
        return _json(200, response), obj, response

    def _get_session_token(self, body: dict[str, Any]) -> dict[str, Any]:
        token = body.get("apiToken")
        if not isinstance(token, str) or not secrets.compare_digest(token.encode(), self.api_token.encode()):
            return _errors(["apiToken is missing or not valid"])
        problems = _unknown_keys(body, ("apiToken", "historians", "clientId", "settings"), "getSessionToken")
        historians = body.get("historians")
        if not isinstance(historians, list) or not historians or not all(isinstance(h, str) and h
                                                                          for h in historians):
            problems.append(f"historians must be a non-empty list of historian names, got {_show(historians)}")
        client_id = body.get("clientId")
        if not isinstance(client_id, str) or not client_id:
            problems.append(f"clientId must be a non-empty string, got {_show(client_id)}")
        settings = body.get("settings")
        effective = dict(SETTING_DEFAULTS)
        if not isinstance(settings, dict):
            problems.append(f"settings must be an object (clientTimeout, autoWriteNoData, extendData ...), "
                            f"got {_show(settings)}")
        else:
            for key, value in settings.items():
                if key not in SETTING_DEFAULTS:
                    problems.append(f"unknown setting {key!r} (known: {', '.join(SETTING_DEFAULTS)})")
                elif key == "clientTimeout":
                    if type(value) is not int or value <= 0:
                        problems.append(f"settings.clientTimeout must be a positive integer (ms), got {_show(value)}")
                elif type(value) is not bool:
                    problems.append(f"settings.{key} must be true or false, got {_show(value)}")
            effective.update(settings)
            if "clientTimeout" not in settings:  # the mock's default inactivity timeout (the contract's: 60 s)
                effective["clientTimeout"] = round(self.session_timeout * 1000)
        if problems or not isinstance(historians, list):
            return _errors(problems)
        unsafe = [key for key in UNSAFE_SETTINGS if effective[key]]
        new_token = secrets.token_urlsafe(24)
        with self._lock:
            now = self.clock()
            self._expire_idle(now)
            self._session_numbers += 1
            number = self._session_numbers
            self._sessions[new_token] = _Session(number, str(client_id), list(historians), effective,
                                                 effective["clientTimeout"] / 1000.0, now, now, unsafe)
            self._labels[new_token] = number
            self._sessions_created += 1
            if unsafe:
                self._unsafe_sessions += 1
        return _good(sessionToken=new_token)

    def _session(self, token: Any) -> _Session | str:
        """The live session of ``token``, its activity refreshed; else why not. Call with the lock held."""
        if not isinstance(token, str) or not token:
            return "no session token was given (call getSessionToken first)"
        session = self._sessions.get(token)
        now = self.clock()
        if session is not None and now - session.last_used > self._timeout(session):
            self._expire(token, session)
            session = None
        if session is None:
            return self._retired.get(token, "unknown session token (never created by this server)")
        session.last_used = now
        return session

    def _timeout(self, session: _Session) -> float:
        forced = self._faults.expire_after
        return session.timeout if forced is None else forced

    def _expire(self, token: str, session: _Session) -> None:
        del self._sessions[token]
        self._sessions_expired += 1
        self._retire(token, f"session token expired after {self._timeout(session):g} s of inactivity")

    def _expire_idle(self, now: float) -> None:
        for token, session in list(self._sessions.items()):
            if now - session.last_used > self._timeout(session):
                self._expire(token, session)

    def _retire(self, token: str, reason: str) -> None:
        self._retired[token] = reason
        while len(self._retired) > MAX_RETIRED:
            self._retired.popitem(last=False)

    def _store_data(self, body: dict[str, Any], generation: int, size: int) -> dict[str, Any]:
        with self._lock:
            session = self._session(body.get("sessionToken"))
        if isinstance(session, str):
            return _bad_session(session)
        checked, problems = check_store_body(body)  # outside the lock: pure
        with self._lock:
            tags = len(checked)
            self._max_tags = max(self._max_tags, tags)
            if size > self.budget_body_bytes or tags > self.budget_tags:
                self._over_budget += 1
            injected = self._faults.tag_errors
            if injected:
                problems += [f"tag {_show(tag)}: injected error (mock tag_errors)" for tag, _ in checked
                             if tag in injected]
            if problems:
                return _errors(problems)
            if generation != self._generation:
                return _bad_session("session token dropped by a mock reset")
            received = self.wall_clock()
            stored = 0
            for tag, rows in checked:
                history = self._history.setdefault(tag, [])
                current = self._current.setdefault(tag, {})
                for name, timestamp, ticks, value, quality in rows:
                    history.append((name, timestamp, value, quality, received))
                    old = current.get(name)
                    if old is None or ticks >= old[0]:
                        current[name] = (ticks, value)
                stored += len(rows)
            self._rows_stored += stored
            self._stores_good += 1
        return _good()

    def _keep_alive(self, body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            session = self._session(body.get("sessionToken"))
        if isinstance(session, str):
            return _bad_session(session)
        problems = _unknown_keys(body, ("sessionToken",), "keepAlive")
        return _errors(problems) if problems else _good()

    def _revoke(self, body: dict[str, Any]) -> dict[str, Any]:
        token = body.get("sessionToken")
        with self._lock:
            session = self._session(token)
            if isinstance(session, str) or not isinstance(token, str):
                return _bad_session(session if isinstance(session, str) else "no session token was given")
            problems = _unknown_keys(body, ("sessionToken",), "revokeSessionToken")
            if problems:
                return _errors(problems)
            del self._sessions[token]
            self._sessions_revoked += 1
            self._retire(token, "session token was revoked")
        return _good()

    def _get_tag_properties(self, body: dict[str, Any], authorization: str | None) -> dict[str, Any]:
        token = body.get("apiToken")
        if token is None and authorization and authorization.startswith("Bearer "):
            token = authorization[len("Bearer "):].strip()
        if not isinstance(token, str) or not secrets.compare_digest(token.encode(), self.api_token.encode()):
            return _errors(["apiToken is missing or not valid"], properties={})
        problems = _unknown_keys(body, ("apiToken", "tags"), "getTagProperties")
        tags = body.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append(f"tags must be a list of tag paths, got {_show(tags)}")
        if problems or not isinstance(tags, list):
            return _errors(problems, properties={})
        with self._lock:
            properties = {tag: self._visible(tag) for tag in tags}
            unknown = [tag for tag in tags if tag not in self._current]
        if unknown:
            return _errors([f"unknown tag {_show(tag)}" for tag in unknown], properties=properties)
        return _good(properties=properties)

    def _arrive(self, now: float) -> int:
        """Count one Write API arrival; returns the count in its integer 1-second window. Lock held."""
        self._counted += 1
        window = int(now - self._t0)
        if window != self._window:
            self._window, self._window_count, self._window_flagged = window, 0, False
        self._window_count += 1
        count = self._window_count
        self._windows[window] = count
        if len(self._windows) > MAX_WINDOWS:
            del self._windows[next(iter(self._windows))]
        self._max_window = max(self._max_window, count)
        limit = self._faults.limit_rps
        if limit is not None and count > limit and not self._window_flagged:
            self._window_flagged = True
            self._violations += 1
        sliding = self._sliding
        sliding.append(now)
        cutoff = now - 1.0
        while sliding[0] <= cutoff:
            sliding.popleft()
        self._max_sliding = max(self._max_sliding, len(sliding))
        if limit is not None and len(sliding) > limit:
            self._sliding_violations += 1
        return count

    def _record(self, generation: int, api: str, method: str, reply: Reply, request_obj: Any, response_obj: Any,
                started: float, size: int) -> None:
        entry: dict[str, Any] | None = None
        with self._lock:
            if generation != self._generation:
                return
            self._http[reply.status] += 1
            if isinstance(response_obj, dict) and "statusCode" in response_obj:
                self._status_codes[response_obj["statusCode"]] += 1
            if not self._transcript_size and self._transcript_path is None:
                return
            self._seq += 1
            entry = {"seq": self._seq, "at": _iso(self.wall_clock()), "api": api, "method": method,
                     "http": reply.status, "ms": round((time.perf_counter() - started) * 1000, 3), "bytes": size,
                     "request": self._mask(request_obj), "response": self._mask(response_obj)}
            if self._transcript_size:
                self._transcript.append(entry)
        if self._transcript_path is not None:
            line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
            with self._file_lock, self._transcript_path.open("a", encoding="utf-8") as out:
                out.write(line)

    def _mask(self, obj: Any) -> Any:
        if not isinstance(obj, dict) or ("apiToken" not in obj and "sessionToken" not in obj):
            return obj
        masked = dict(obj)
        if "apiToken" in masked:
            masked["apiToken"] = "***"
        if "sessionToken" in masked:
            number = self._labels.get(masked["sessionToken"]) if isinstance(masked["sessionToken"], str) else None
            masked["sessionToken"] = f"***session {number}" if number else "***"
        return masked

    # --- control API -----------------------------------------------------------------------------

    def _control(self, verb: str, name: str, query: str, body: bytes) -> Reply:
        params = parse_qs(query)

        def flag(key: str) -> bool:
            return params.get(key, ["0"])[-1].lower() in ("1", "true", "yes")

        routes = {("GET", "faults"), ("POST", "faults"), ("GET", "state"), ("GET", "stats"), ("POST", "reset"),
                  ("GET", "transcript")}
        if (verb, name) not in routes:
            known = {n for _, n in routes}
            return _json(405 if name in known else 404, {"error": f"{verb} /_mock/{name} is not a control endpoint; "
                                                                  "see docs/canary-api.md, The Canary mock"})
        try:
            if name == "faults" and verb == "POST":
                changes = json.loads(body.decode("utf-8") or "{}", parse_constant=_reject_constant)
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object")
                return _json(200, {"faults": self.configure(changes)})
            if name == "faults":
                return _json(200, {"faults": self.faults()})
            if name == "state":
                return _json(200, self.state(params.get("tag"), history=flag("history")))
            if name == "stats":
                return _json(200, self.stats(windows=flag("windows")))
            if name == "reset":
                self.reset()
                return _json(200, {"reset": True})
            since = int(params.get("since", ["0"])[-1])
            limit = int(params["limit"][-1]) if "limit" in params else None
            entries = self.transcript(since, limit)
            return _json(200, {"entries": entries, "last": entries[-1]["seq"] if entries else since})
        except (UnicodeDecodeError, ValueError) as exc:
            return _json(400, {"error": str(exc)})


# --------------------------------------------------------------------------------------------
# HTTP

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connections
    server_version = "CanaryMock/1"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_SECONDS
    server: MockHTTPServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("POST")

    def do_GET(self) -> None:  # noqa: N802
        self._serve("GET")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def _serve(self, verb: str) -> None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._write(_json(411, _errors(["chunked bodies are not supported; send Content-Length"])))
            return
        length = self.headers.get("Content-Length")
        body = b""
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0 or size > MAX_BODY_BYTES:
                self.close_connection = True
                self._write(_json(413 if size > 0 else 400, _errors([f"bad Content-Length {length!r}"])))
                return
            body = self.rfile.read(size)
        elif verb == "POST":
            self.close_connection = True
            self._write(_json(411, _errors(["Content-Length is required"])))
            return
        reply = self.server.mock.handle(verb, self.path, self.headers.get("Content-Type"), body,
                                        self.headers.get("Authorization"))
        if reply is None:
            self.close_connection = True
            return
        self._write(reply)

    def _write(self, reply: Reply) -> None:
        lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}", f"Server: {self.server_version}",
                 f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}"]
        lines += [f"{key}: {value}" for key, value in reply.headers]
        if self.close_connection:
            lines.append("Connection: close")
        # one write: head and body in one segment (no Nagle / delayed-ACK stall)
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body)
        except OSError:  # the client gave up (timeout) or went away
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the transcript and the stats are the record


class MockHTTPServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` serving one :class:`CanaryMock` (daemon threads, address reuse)."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # keep-alive connections would make server_close() wait for their clients
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], mock: CanaryMock) -> None:
        self.mock = mock
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        TCPServer.server_bind(self)  # HTTPServer's version does a reverse DNS lookup (getfqdn)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:55293`` (append ``/api/v1``, ``/api/v2`` or ``/_mock``)."""
        host, port = self.server_address[:2]
        host = str(host)
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client dropped its connection: nothing to report
        super().handle_error(request, client_address)


def make_server(host: str, port: int, mock: CanaryMock) -> MockHTTPServer:
    """Bind (port 0: a free one) and return the server; call ``serve_forever()`` to run it."""
    return MockHTTPServer((host, port), mock)


@contextmanager
def running(mock: CanaryMock, host: str = "127.0.0.1", port: int = 0) -> Iterator[MockHTTPServer]:
    """Serve ``mock`` from a daemon thread for the duration of the ``with`` block (tests, benchmarks)."""
    server = make_server(host, port, mock)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="canary-mock",
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
