"""Structured logs for every process: one JSON object per line, correlation ids, secrets redacted.

``settings.LOGGING`` puts the filters and formatters below on every handler, so they apply to every
logger, third-party ones included: :class:`ContextFilter` stamps the process name and the fields
bound with :func:`bind`, :class:`RedactFilter` replaces secrets with ``***``, :class:`JsonFormatter`
or :class:`PlainFormatter` writes the line, :class:`RotatingFileHandler` rotates a file several
processes share. The fields, the correlation ids and what is redacted: docs/metrics.md, "Logs".
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import logging.handlers
import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.views.debug import SafeExceptionReporterFilter
from pythonjsonlogger.core import RESERVED_ATTRS, merge_record_extra
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from metasync.env import REGISTRY

REDACTED = "***"

# Correlation fields, in output order. ``cid`` is always written (null outside any unit of work);
# the others only when known.
CONTEXT_FIELDS = ("cid", "frame_id", "task_id", "task_name", "batch_id", "frame_ids")
MAX_FRAME_IDS = 100  # a batch of 100 tags rarely carries more; the list is for following, not counting

_context: ContextVar[Mapping[str, object]] = ContextVar("metasync_log_context", default=MappingProxyType({}))


# --------------------------------------------------------------------------------------------
# Correlation context


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Log records emitted inside the block carry ``fields`` (``None`` values are ignored)."""
    token = push(**fields)
    try:
        yield
    finally:
        _context.reset(token)


def push(**fields: object) -> Token:
    """Add ``fields`` to the current context; undo with ``_context.reset(token)`` (see :func:`bind`)."""
    return _context.set(MappingProxyType({**_context.get(), **{k: v for k, v in fields.items() if v is not None}}))


def replace(**fields: object) -> None:
    """Start a fresh context (a Celery task begins; a task ends with ``replace()``)."""
    _context.set(MappingProxyType({k: v for k, v in fields.items() if v is not None}))


def current() -> Mapping[str, object]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Adds ``metasync_process`` and the bound correlation fields; fields given with ``extra=`` win."""

    def __init__(self, process: str | None = None) -> None:
        super().__init__()
        self.process = process or os.environ.get("METASYNC_PROCESS") or "metasync"

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "metasync_process"):
            record.metasync_process = self.process
        ctx = _context.get()
        for name in CONTEXT_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ctx.get(name))
        frame_ids = record.frame_ids  # type: ignore[attr-defined]
        if isinstance(frame_ids, (list, tuple, set, frozenset)) and len(frame_ids) > MAX_FRAME_IDS:
            record.frame_ids = sorted(frame_ids)[:MAX_FRAME_IDS]
        return True


# --------------------------------------------------------------------------------------------
# Redaction

MIN_SECRET_LENGTH = 4  # shorter values would turn every log line into asterisks; such secrets are weak anyway

# Settings whose attribute name differs from the environment variable.
_SETTING_OF = {"DJANGO_SECRET_KEY": "SECRET_KEY"}

# password=…, "sessionToken": "…", 'apiToken': '…', PGPASSWORD=…, CANARY_API_TOKEN=…, secret_key: …
_KEY_VALUE = re.compile(
    r"""(?ix)
    (?P<key>\b\w*(?:password|passwd|pwd|token|secret)\w*)
    (?P<sep>["']?\s*[:=]\s*)
    (?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&'"}\])]+)
    """)
# scheme://user:password@host
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+(?=@)")
# Authorization: Bearer …  /  Basic …
_AUTH_HEADER = re.compile(r"(?i)(?P<head>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer|basic|token)\s+)[^\s'\",]+")

_runtime_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Redact ``value`` from now on in this process (e.g. a Canary session token when it is issued)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        _runtime_secrets.add(value)


def _forms(value: str) -> set[str]:
    """The value itself, or for a URL only its password (plain and percent-decoded): the rest of a
    URL (host, port, database) is what an operator needs to read in a log."""
    out: set[str] = set()
    for item in value.split(","):  # FLOWER_BASIC_AUTH: user:pw,user2:pw2
        item = item.strip()
        if "://" in item:
            try:
                password = urlsplit(item).password
            except ValueError:
                password = None
            if password:
                out |= {password, unquote(password)}
        elif item:
            out.add(item)
            if ":" in item:
                out.add(item.split(":", 1)[1])
    if "://" not in value and value.strip():
        out.add(value.strip())
    return out


def _secret_names() -> tuple[str, ...]:
    return tuple(sorted(name for name, var in REGISTRY.items() if var.secret))


def _env_value(name: str) -> str | None:
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError:
            return None
    return os.environ.get(name)


@functools.lru_cache(maxsize=8)
def _environment_secrets(names: tuple[str, ...]) -> frozenset[str]:
    """Secret variables as the environment (or their ``_FILE``) gives them; read once per process."""
    return frozenset(f for name in names if (value := _env_value(name)) for f in _forms(value))


def _settings_values(names: tuple[str, ...]) -> tuple[str | None, ...]:
    """The same secrets as the settings hold them now (tests and ``override_settings`` change them)."""
    try:
        if not settings.configured:
            return ()
        values = [getattr(settings, _SETTING_OF.get(name, name), None) for name in names]
        values += [db.get("PASSWORD") for db in getattr(settings, "DATABASES", {}).values()]
        values.append(getattr(settings, "CELERY_BROKER_URL", None))
    except Exception:  # noqa: BLE001 - settings half-loaded or broken: the environment's values still apply
        return ()
    return tuple(v if isinstance(v, str) else None for v in values)


@functools.lru_cache(maxsize=32)
def _combine(env: frozenset[str], live: tuple[str | None, ...], runtime: frozenset[str]) -> tuple[str, ...]:
    values = set(env) | set(runtime) | {f for v in live if v for f in _forms(v)}
    return tuple(sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True))


def secret_values() -> tuple[str, ...]:
    """Every secret this process knows, longest first (so a secret containing another goes whole)."""
    names = _secret_names()
    return _combine(_environment_secrets(names), _settings_values(names), frozenset(_runtime_secrets))


def _key_value(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match['key']}{match['sep']}{quote}{REDACTED}{quote}"


def redact(text: str, secrets: tuple[str, ...] | None = None) -> str:
    """``text`` with every known secret and every secret-looking value replaced by ``***``."""
    if not text:
        return text
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _URL_PASSWORD.sub(lambda m: m["head"] + REDACTED, text)
    text = _AUTH_HEADER.sub(lambda m: m["head"] + REDACTED, text)
    return _KEY_VALUE.sub(_key_value, text)


def _redact_value(value: Any, secrets: tuple[str, ...], depth: int = 0) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact(value, secrets)
    if depth > 5:
        return redact(repr(value), secrets)
    if isinstance(value, Mapping):
        return {k: (REDACTED if _KEY_VALUE.fullmatch(f"{k}=x") else _redact_value(v, secrets, depth + 1))
                for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(v, secrets, depth + 1) for v in value]
    return redact(str(value), secrets)


_STANDARD_ATTRS = frozenset(RESERVED_ATTRS) | frozenset(CONTEXT_FIELDS) | {"metasync_process", "message", "asctime"}


class RedactFilter(logging.Filter):
    """Replaces secrets with ``***`` in the message (formatted with its args), extra fields,
    the traceback and the stack. A record that cannot be redacted is replaced, never passed on."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact(record)
        except Exception as exc:  # noqa: BLE001 - never let a secret through because of a bug here
            record.msg, record.args = f"[log record withheld: redaction failed with {exc.__class__.__name__}]", ()
            record.exc_info = record.exc_text = record.stack_info = None
        return True

    @staticmethod
    def _redact(record: logging.LogRecord) -> None:
        secrets = secret_values()
        if isinstance(record.msg, dict):
            record.msg = _redact_value(record.msg, secrets)
        else:
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - bad %-args: keep what can be shown
                message = f"{record.msg} {record.args!r}"
            record.msg, record.args = redact(message, secrets), ()
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS and not key.startswith("_") and not isinstance(value, (int, float)):
                record.__dict__[key] = _redact_value(value, secrets)


# --------------------------------------------------------------------------------------------
# Formatters


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(_BaseJsonFormatter):
    """One JSON object per line: time, level, logger, process, pid, message, cid, the other
    correlation fields when known, then any ``extra=`` fields and ``exc_info``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("reserved_attrs", sorted(_STANDARD_ATTRS))
        super().__init__(*args, **kwargs)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = _iso(record.created)
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["process"] = getattr(record, "metasync_process", None) or os.environ.get("METASYNC_PROCESS")
        log_data["pid"] = record.process
        log_data["message"] = record.message
        log_data["cid"] = getattr(record, "cid", None)
        for name in CONTEXT_FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                log_data[name] = value
        log_data.update(message_dict)  # exc_info, stack_info, or the fields of a dict message
        merge_record_extra(record, log_data, reserved=self._skip_fields)


class PlainFormatter(logging.Formatter):
    """``2025-01-01T10:00:00.123Z INFO ingest ingest.mqtt [frame-7 task=…] message`` for humans."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [str(v) for v in (getattr(record, "cid", None),) if v]
        parts += [f"{name}={getattr(record, name)}" for name in ("task_id", "batch_id")
                  if getattr(record, name, None) is not None]
        context = f" [{' '.join(parts)}]" if parts else ""
        process = getattr(record, "metasync_process", None) or os.environ.get("METASYNC_PROCESS", "")
        text = f"{_iso(record.created)} {record.levelname} {process} {record.name}{context} {record.getMessage()}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + record.exc_text
        if record.stack_info:
            text += "\n" + self.formatStack(record.stack_info)
        return text


# --------------------------------------------------------------------------------------------
# A rotating file several processes can share


class RotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Size-based rotation that stays correct with several writer processes.

    Celery's prefork children inherit the parent's handler and gunicorn runs several workers:
    with the stdlib handler each process rotates on its own view of the file and they rename
    each other's fresh files away (lines end in deleted backups). Here every write takes an
    exclusive ``flock`` on ``<file>.lock`` (one lock descriptor per process, reopened after a
    fork: flock is per open file description) and first reopens the file when another process
    rotated it (its inode changed), as ``WatchedFileHandler`` does. The rotation decision is
    made on the shared file's real size.
    """

    def __init__(self, filename: str, mode: str = "a", maxBytes: int = 0, backupCount: int = 0,  # noqa: N803
                 encoding: str | None = "utf-8", delay: bool = True, errors: str | None = None) -> None:
        super().__init__(filename, mode, maxBytes, backupCount, encoding, delay, errors)
        self._lock_fd: int | None = None
        self._lock_pid: int | None = None

    def _lock_descriptor(self) -> int:
        if self._lock_pid != os.getpid():
            if self._lock_fd is not None:  # inherited across fork: shares the parent's lock
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
            self._lock_fd = os.open(self.baseFilename + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
            self._lock_pid = os.getpid()
        return self._lock_fd  # type: ignore[return-value]

    def _reopen_if_rotated(self) -> None:
        if self.stream is None:
            return
        try:
            on_disk = os.stat(self.baseFilename)
        except FileNotFoundError:
            moved = True
        else:
            mine = os.fstat(self.stream.fileno())
            moved = (on_disk.st_dev, on_disk.st_ino) != (mine.st_dev, mine.st_ino)
        if moved:
            self.stream.close()
            self.stream = self._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fd = self._lock_descriptor()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._reopen_if_rotated()
                super().emit(record)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)

    def close(self) -> None:
        super().close()
        if self._lock_fd is not None and self._lock_pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
        self._lock_fd = self._lock_pid = None


class SecretSettingsReporterFilter(SafeExceptionReporterFilter):
    """Django's debug error page hides settings named like secrets; ours are also URLs and DSNs
    (DATABASE_ADMIN_URL, REDIS_URL …) that carry passwords."""

    hidden_settings = re.compile("API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|DSN|AUTH", flags=re.I)


def id_span(ids: list[int]) -> str:
    """Ids for a log line: a few, or a range."""
    if len(ids) <= 5:
        return ", ".join(map(str, ids))
    return f"{ids[0]} … {ids[-1]}"
