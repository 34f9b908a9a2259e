"""A version's change as key-level lines a person reads: "engUnit: °C → bar" (docs/steward-guide.md).

``MetricVersion.change`` is the key-level diff the catalog writes (births: added / changed / removed,
name / uns_path / datatype; stewards: override_added / override_changed / override_removed /
override_kept); each key becomes one :class:`Line`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

ABSENT = "(none)"
PARTS = {  # diff part -> what the line is about
    "added": "property", "changed": "property", "removed": "property",
    "override_added": "override", "override_changed": "override", "override_removed": "override",
}


@dataclass(frozen=True)
class Line:
    key: str
    what: str  # "property", "override", "override kept", or the metric field ("name", "uns_path", "datatype")
    old: str
    new: str

    def __str__(self) -> str:
        label = self.key if self.what in ("property", self.key) else f"{self.key} ({self.what})"
        return f"{label}: {self.old} → {self.new}"


def text(value: object) -> str:
    if value is None:
        return "∅"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def lines(change: dict) -> list[Line]:
    """The key-level lines of one version, fields of the metric first, then keys in order."""
    out: list[Line] = []
    for field in ("name", "uns_path", "datatype"):
        value = change.get(field)
        if isinstance(value, list) and len(value) == 2:
            out.append(Line(field, field, text(value[0]), text(value[1])))
        elif value is not None:  # a created metric records its values as they are
            out.append(Line(field, field, ABSENT, text(value)))
    for part, what in PARTS.items():
        for key, value in sorted((change.get(part) or {}).items()):
            if part.endswith("added"):
                out.append(Line(key, what, ABSENT, text(value)))
            elif part.endswith("removed"):
                out.append(Line(key, what, text(value), ABSENT))
            else:
                old, new = value if isinstance(value, list) and len(value) == 2 else (None, value)
                out.append(Line(key, what, text(old), text(new)))
    for key, kept in sorted((change.get("override_kept") or {}).items()):
        out.append(key_line("override_kept", key, None, kept))
    return out


def key_line(part: str, key: str, old: object, new: object) -> Line:
    """The line of one key-level history row (the ``metric_version_keys`` view: part, key, old, new)."""
    if part == "override_kept":
        kept = new if isinstance(new, dict) else {}
        edge = kept.get("edge") or [None, None]
        return Line(key, "override kept", f"edge {text(edge[0])}",
                    f"edge {text(edge[1])}, override {text(kept.get('override'))} kept")
    old_text = ABSENT if part.endswith("added") or (part == key and old is None) else text(old)
    new_text = ABSENT if part.endswith("removed") else text(new)
    return Line(key, PARTS.get(part, part), old_text, new_text)
