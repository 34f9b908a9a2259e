"""Typed access to the process environment, with a registry of every variable read.

Settings read configuration only through these helpers, so that:
- a missing or invalid value raises :class:`ConfigError` naming the variable
  (``metasync.bootstrap`` turns it into one line on stderr and exit code 2);
- ``SECRET`` variables also accept ``<NAME>_FILE`` (Docker/Kubernetes secrets);
- :data:`REGISTRY` lists every variable the settings read, which the
  compose-consistency and documentation tests compare against
  ``docker-compose.yml``, ``.env.example`` and ``docs/configuration.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_MISSING = object()


class ConfigError(Exception):
    """A configuration variable is missing or invalid."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


@dataclass(frozen=True)
class Var:
    name: str
    default: str | None
    secret: bool
    required: bool


REGISTRY: dict[str, Var] = {}


def _raw(name: str, default: object, *, secret: bool) -> str | None:
    REGISTRY[name] = Var(
        name=name,
        default=None if default is _MISSING or default is None else str(default),
        secret=secret,
        required=default is _MISSING,
    )
    if secret:
        file_name = f"{name}_FILE"
        path = os.environ.get(file_name)
        if path:
            try:
                return Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(file_name, f"cannot read secret file {path!r} ({exc.strerror})") from None
    value = os.environ.get(name)
    if value is None or value == "":
        if default is _MISSING:
            raise ConfigError(name, "is required but not set" + (f" (nor {name}_FILE)" if secret else ""))
        return None if default is None else str(default)
    return value


def _typed(name: str, default: object, parse: Callable[[str], T], kind: str, secret: bool = False) -> T:
    raw = _raw(name, default, secret=secret)
    if raw is None:
        return None  # type: ignore[return-value]
    try:
        return parse(raw)
    except (TypeError, ValueError):
        raise ConfigError(name, f"expected {kind}, got {raw!r}") from None


def string(name: str, default: str | None | object = _MISSING, *, secret: bool = False) -> str:
    return _typed(name, default, str, "a string", secret)


def integer(name: str, default: int | object = _MISSING, *, minimum: int | None = None) -> int:
    value = _typed(name, default, int, "an integer")
    if minimum is not None and value is not None and value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    return value


def number(name: str, default: float | object = _MISSING, *, minimum: float | None = None) -> float:
    value = _typed(name, default, float, "a number")
    if minimum is not None and value is not None and value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(raw)


def boolean(name: str, default: bool | object = _MISSING) -> bool:
    return _typed(name, default, _parse_bool, "true/false")


def csv(name: str, default: str | object = _MISSING) -> list[str]:
    raw = _raw(name, default, secret=False)
    return [item.strip() for item in (raw or "").split(",") if item.strip()]


def choice(name: str, options: tuple[str, ...], default: str | object = _MISSING) -> str:
    value = string(name, default)
    if value not in options:
        raise ConfigError(name, f"must be one of {', '.join(options)}, got {value!r}")
    return value


def existing_file(name: str, default: str | None | object = _MISSING) -> str | None:
    value = string(name, default)
    if value and not Path(value).is_file():
        raise ConfigError(name, f"file {value!r} does not exist")
    return value
