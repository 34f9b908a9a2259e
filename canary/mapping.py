"""The steward-editable mapping from Sparkplug keys to Canary property names."""

from __future__ import annotations

from django.db import connection

from canary.models import MappingChange, PropertyMapping
from cdcsync.pending import mark_now


def resync_key(key: str) -> int:
    """Every metric carrying ``key`` (edge value or override) is re-diffed at once: a mapping
    change alters what Canary should hold. Returns how many metrics were marked."""
    with connection.cursor() as cur:
        cur.execute("SELECT DISTINCT metric_id FROM uns_meta.metric_properties WHERE key = %s"
                    " UNION SELECT DISTINCT metric_id FROM uns_meta.property_overrides WHERE key = %s",
                    [key, key])
        ids = [r[0] for r in cur.fetchall()]
    return mark_now(ids, reason="mapping")


def snapshot(mapping: PropertyMapping | None) -> dict | None:
    if mapping is None:
        return None
    return {"canary_name": mapping.canary_name, "include": mapping.include, "note": mapping.note}


def record_change(key: str, before: dict | None, after: dict | None, user: str) -> MappingChange | None:
    """Audit one mapping row's change (``before``/``after`` from :func:`snapshot`); nothing if equal."""
    if before == after:
        return None
    action = "added" if before is None else "removed" if after is None else "changed"
    return MappingChange.objects.create(key=key, action=action, before=before, after=after,
                                        changed_by=f"steward:{user}")
