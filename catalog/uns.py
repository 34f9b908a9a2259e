"""UNS identity: normalized paths, Canary ids and filter attributes (docs/catalog.md).

The one place the normalization rules are defined; pure Python (no Django), so ingest, the catalog
and tools all derive the same paths. A segment is NFC-normalized, trimmed, and every run of
characters other than letters, digits and ``-`` (``.`` and ``/`` included) becomes one ``_``; it is
never empty. The Canary id is the path with ``/`` replaced by ``.``, unambiguous because segments
never contain ``.``. The rules step by step, and collisions: docs/catalog.md, "UNS paths and Canary ids".
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from sparkplug.topic import Topic

EMPTY_SEGMENT = "_"

# Python's \w is exactly str.isalnum() plus "_"; one pass replaces every run of characters that
# are illegal or "_" by a single "_" (steps 3-5 of docs/catalog.md, "Segment normalization").
_ILLEGAL_RUN = re.compile(r"(?:_|[^\w-])+")


@lru_cache(maxsize=65536)  # births repeat the same folder names across thousands of metrics
def normalize_segment(s: str) -> str:
    """One normalized, never-empty path segment (docs/catalog.md, "Segment normalization")."""
    s = unicodedata.normalize("NFC", s).strip()
    return _ILLEGAL_RUN.sub("_", s) or EMPTY_SEGMENT


def device_path(group: str, edge: str, device: str | None = None) -> str:
    """``group/edge/device`` normalized; without a device, the edge node's own path."""
    ids = (group, edge) if device is None else (group, edge, device)
    return "/".join(normalize_segment(i) for i in ids)


def metric_segments(metric_name: str) -> list[str]:
    """Normalized folder segments of a metric name (empty segments dropped, never empty)."""
    segments = [normalize_segment(p) for p in metric_name.split("/") if p.strip()]
    return segments or [EMPTY_SEGMENT]


def metric_path(device_path: str, metric_name: str) -> str:
    return device_path + "/" + "/".join(metric_segments(metric_name))


def canary_id(uns_path: str) -> str:
    return uns_path.replace("/", ".")


def topic_device_path(topic: Topic) -> str:
    return device_path(topic.group_id, topic.edge, topic.device)


# --------------------------------------------------------------------------------------------
# Filter attributes (not identity)

# Sparkplug's own folders are not plants.
SPARKPLUG_FOLDERS = frozenset(
    {"Node Control", "Node Info", "Node Properties", "Device Control", "Device Info",
     "Device Properties", "Properties"}
)
DEFAULT_NON_COUNTRY_EDGES = frozenset({"Edge", "Normalised"})


@dataclass(frozen=True)
class Attributes:
    country: str | None
    business_unit: str | None
    plant: str | None


@dataclass(frozen=True)
class Convention:
    """Where country / business unit / plant come from.

    Default: country = edge node id (unless it is one of ``non_country_edges``, e.g. the
    production nodes ``Edge`` and ``Normalised``), business unit = device id (None for node
    metrics), plant = first folder of the metric name (None for a name without folders or a
    Sparkplug folder such as ``Device Control``). Values are the raw ids, not normalized.
    """

    name: str = "default"
    non_country_edges: frozenset[str] = DEFAULT_NON_COUNTRY_EDGES
    non_plant_folders: frozenset[str] = SPARKPLUG_FOLDERS

    def classify(self, topic: Topic, metric_name: str) -> Attributes:
        country = None if topic.edge in self.non_country_edges else topic.edge
        folders = [p.strip() for p in metric_name.split("/") if p.strip()]
        plant = folders[0] if len(folders) > 1 else None
        if plant in self.non_plant_folders:
            plant = None
        return Attributes(country=country, business_unit=topic.device, plant=plant)


CONVENTIONS: dict[str, Convention] = {"default": Convention()}


def classify(
    topic: Topic,
    metric_name: str,
    convention: str | Convention = "default",
    *,
    non_country_edges: Iterable[str] | None = None,
) -> Attributes:
    """Filter attributes of a metric under a named (or given) convention.

    ``non_country_edges`` overrides the convention's set of edge ids that are not countries.
    """
    if isinstance(convention, str):
        try:
            conv = CONVENTIONS[convention]
        except KeyError:
            raise ValueError(f"unknown UNS convention {convention!r}") from None
    else:
        conv = convention
    if non_country_edges is not None:
        conv = Convention(conv.name, frozenset(non_country_edges), conv.non_plant_folders)
    return conv.classify(topic, metric_name)


# --------------------------------------------------------------------------------------------
# Collisions


@dataclass(frozen=True)
class Collision:
    name: str
    path: str
    existing_name: str

    @property
    def reason(self) -> str:
        return f"metric {self.name!r} normalizes to {self.path!r}, already used by {self.existing_name!r}"


class PathCollisions:
    """First-come owner of each path within one device; later different names collide.

    Keyed by ``hash(path)``: applying a million-metric birth must not keep a million path
    strings alive. A 64-bit clash is ~1e-8 likely at that size and would only reject a metric
    with a reason; the database's unique index stays the real guard.

    >>> pc = PathCollisions()
    >>> pc.add("a.b", "D/a_b") is None, pc.add("a b", "D/a_b").existing_name
    (True, 'a.b')
    """

    def __init__(self, owners: Iterable[tuple[str, str]] = ()) -> None:
        self._owner: dict[int, str] = {}
        self.collisions: list[Collision] = []
        for name, path in owners:  # e.g. paths already in the catalog for this device
            self._owner.setdefault(hash(path), name)

    def add(self, name: str, path: str) -> Collision | None:
        """Claim ``path`` for ``name``; the Collision if another name owns it (same name: fine)."""
        owner = self._owner.setdefault(hash(path), name)
        if owner == name:
            return None
        collision = Collision(name=name, path=path, existing_name=owner)
        self.collisions.append(collision)
        return collision

    def release(self, path: str) -> None:
        """``path`` is free again (its metric was renamed away from it)."""
        self._owner.pop(hash(path), None)

    def owner(self, path: str) -> str | None:
        return self._owner.get(hash(path))


def find_collisions(pairs: Iterable[tuple[str, str]]) -> list[Collision]:
    """Collisions among ``(name, path)`` pairs of one device, in input order."""
    pc = PathCollisions()
    for name, path in pairs:
        pc.add(name, path)
    return pc.collisions
