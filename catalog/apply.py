"""Apply one decoded DBIRTH to the catalog: ``apply_birth`` (docs/architecture.md, "Key decisions").

The caller (the ledger, :mod:`ingest.processing`) owns the transaction; everything here is
set-based and bounded in memory: value-free fingerprints make an unchanged metric cost nothing,
new metrics go in with ``COPY``, changed ones are diffed key by key and written with one upsert,
and metrics stream in chunks of ``BIRTH_CHUNK_METRICS``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import psycopg
from django.conf import settings
from django.db import connection

from catalog import propvalues, uns, validation
from catalog.propvalues import to_json
from metasync import locks
from metasync.db import scalar
from sparkplug.codec import DecodeError, RawMetric, decode_properties, iter_metrics
from sparkplug.topic import Topic

log = logging.getLogger(__name__)


PROPERTY_COLUMNS = ("metric_id", "key", "sparkplug_type", "type", "is_null") + propvalues.VALUE_COLUMNS
METRIC_COLUMNS = ("id", "device_id", "name", "uns_path", "datatype", "alias", "plant", "fingerprint")
VERSION_COLUMNS = ("metric_id", "kind", "change", "changed_by")


class Rejected(Exception):
    """The birth cannot be applied as a whole; the message is the reason stored on its ledger row.
    ``unresolved_aliases``: nameless metrics nothing resolved (the edge may be asked for a rebirth)."""

    def __init__(self, reason: str, unresolved_aliases: int = 0) -> None:
        super().__init__(reason)
        self.unresolved_aliases = unresolved_aliases


@dataclass
class Applied:
    """What applying a birth did (the transaction is the caller's)."""

    device_id: int
    counts: dict[str, int]
    # Metrics rejected by name (the rest of the birth applied), shown on the ledger row.
    problems: list[str] = field(default_factory=list)
    unresolved_aliases: int = 0
    # Only filled in dry-run mode: the versions the birth would write.
    diff: list[dict] = field(default_factory=list)

    @property
    def reason(self) -> str:
        reason = ""
        if self.problems:
            shown = "; ".join(self.problems[:20])
            more = len(self.problems) - 20
            reason = f"{len(self.problems)} metric(s) rejected: {shown}" + (f"; … {more} more" if more > 0 else "")
        if self.unresolved_aliases:
            reason = (reason + "; " if reason else "") + f"{self.unresolved_aliases} alias(es) unresolved"
        return reason


@dataclass(slots=True)
class Known:
    """A catalog metric of the device being applied (loaded once per frame)."""

    id: int
    name: str
    uns_path: str
    datatype: int
    alias: int | None
    fingerprint: bytes
    retired: bool


@dataclass(slots=True)
class Incoming:
    name: str
    raw: RawMetric
    fingerprint: bytes
    uns_path: str = ""
    takes_over: Known | None = None  # a retired metric whose path this new name claims


Props = dict[str, tuple[int, object]]


def fingerprint(name: str, datatype: int, properties: bytes) -> bytes:
    """Value-free definition fingerprint: name, datatype and the raw property set."""
    h = hashlib.blake2b(name.encode(), digest_size=16)
    h.update(b"\0%d\0" % datatype)
    h.update(properties)
    return h.digest()


def apply_birth(topic: Topic, payload: bytes | bytearray | memoryview, *, changed_by: str,
                dry_run: bool = False) -> Applied:
    """Apply a device's birth inside the caller's transaction; births of one device are
    serialized by a transaction-level advisory lock. Raises :class:`Rejected` (or the codec's
    ``DecodeError``) when the birth cannot be applied; the caller then rolls back."""
    if topic.device is None:
        raise Rejected(f"not a device birth: {topic.group_id}/{topic.edge}")
    locks.xact_lock(connection.connection, locks.device_key(topic.group_id, topic.edge, topic.device))
    # The decoded metrics and properties are millions of short-lived, acyclic objects: the cyclic
    # collector would only walk them again and again (reference counting frees them).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return BirthApplier(topic, changed_by, dry_run=dry_run).run(payload)
    finally:
        if enabled:
            gc.enable()


def _chunks(items: Iterable[RawMetric], size: int) -> Iterator[list[RawMetric]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class BirthApplier:
    """One frame, one transaction. Small methods, each one unit of the algorithm."""

    def __init__(self, topic: Topic, changed_by: str, *, dry_run: bool = False) -> None:
        self.topic = topic
        self.dry_run = dry_run
        self.changed_by = changed_by
        self.conn: psycopg.Connection = connection.connection  # Django's psycopg 3 connection
        self.counts = dict.fromkeys(
            ("metrics", "new", "changed", "unchanged", "retired", "restored", "renamed", "rejected", "versions"), 0)
        self.problems: list[str] = []
        self.diff: list[dict] = []
        self.unresolved_aliases = 0
        self.convention = uns.Convention(settings.UNS_CONVENTION, frozenset(settings.UNS_NON_COUNTRY_EDGES))

    # --- birth level ---------------------------------------------------------------
    def run(self, payload: bytes | bytearray | memoryview) -> Applied:
        self.device_id, self.device_path = self._device()
        self._load_known()
        for chunk in _chunks(iter_metrics(payload), settings.BIRTH_CHUNK_METRICS):
            self._apply_chunk(chunk)
        if self.counts["metrics"] == 0:  # never read an empty birth as "every metric retired"
            raise Rejected("the birth has no metrics")
        if self.counts["rejected"] == self.counts["metrics"]:
            raise Rejected("every metric was rejected: " + "; ".join(self.problems[:20]), self.unresolved_aliases)
        self._apply_deferred_renames()
        self._retire_absent()
        return Applied(self.device_id, self.counts, self.problems, self.unresolved_aliases, self.diff)

    def _device(self) -> tuple[int, str]:
        t = self.topic
        path = uns.device_path(t.group_id, t.edge, t.device)
        attrs = self.convention.classify(t, "")
        owner = self.conn.execute(
            "SELECT group_id, edge, device FROM uns_meta.devices WHERE uns_path = %s", (path,)).fetchone()
        if owner and tuple(owner) != (t.group_id, t.edge, t.device):
            raise Rejected(f"device path {path!r} already belongs to device {'/'.join(owner)!r}")
        row = self.conn.execute(
            "INSERT INTO uns_meta.devices AS d (group_id, edge, device, uns_path, country, business_unit)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (group_id, edge, device) DO UPDATE"
            " SET uns_path = EXCLUDED.uns_path, country = EXCLUDED.country, business_unit = EXCLUDED.business_unit"
            " WHERE (d.uns_path, d.country, d.business_unit)"
            "   IS DISTINCT FROM (EXCLUDED.uns_path, EXCLUDED.country, EXCLUDED.business_unit)"
            " RETURNING id",
            (t.group_id, t.edge, t.device, path, attrs.country, attrs.business_unit),
        ).fetchone()
        if row is not None:
            return row[0], path
        # unchanged device: no write at all
        return scalar(self.conn, "SELECT id FROM uns_meta.devices WHERE group_id = %s AND edge = %s AND device = %s",
                      (t.group_id, t.edge, t.device)), path

    def _load_known(self) -> None:
        self.known: dict[str, Known] = {}
        self.paths = uns.PathCollisions()
        self.by_alias: dict[int, Known] = {}
        with psycopg.Cursor(self.conn) as cur:
            cur.execute(
                "SELECT id, name, uns_path, datatype, alias, fingerprint, retired_at IS NOT NULL"
                " FROM uns_meta.metrics WHERE device_id = %s", (self.device_id,), binary=True)
            for mid, name, path, datatype, alias, fp, retired in cur:
                known = Known(mid, name, path, datatype, alias, bytes(fp), retired)
                self.known[name] = known
                self.paths.add(name, path)
                if alias is not None:
                    self.by_alias[alias] = known
        self.seen_ids: set[int] = set()
        self.new_names: set[int] = set()  # hash(name) of new names seen in this birth
        # New names decided once the whole birth is seen: renames by alias, and names that claim
        # the path of a retired metric (that metric may still come back later in the birth).
        self.deferred: list[Incoming] = []

    # --- per chunk ---------------------------------------------------------------
    def _apply_chunk(self, chunk: list[RawMetric]) -> None:
        new: list[Incoming] = []
        changed: list[tuple[Known, Incoming]] = []
        alias_moves: list[tuple[int, int | None]] = []
        for raw in chunk:
            self.counts["metrics"] += 1
            name = self._name_of(raw)
            if name is None:
                continue
            try:
                validation.check_metric(name, raw.alias)
            except validation.Invalid as exc:
                self._reject(raw, name, str(exc))
                continue
            known = self.known.get(name)
            if known is not None and known.id in self.seen_ids or known is None and hash(name) in self.new_names:
                self._reject(raw, name, "name appears twice in the birth")
                continue
            incoming = Incoming(name, raw, fingerprint(name, raw.datatype, raw.properties))
            if known is None:
                self.new_names.add(hash(name))
                if not self._claim_path(incoming):
                    continue
                if incoming.takes_over is not None or (raw.alias is not None and self._rename_candidate(raw)):
                    self.deferred.append(incoming)  # decided once the whole birth is seen
                else:
                    new.append(incoming)
                continue
            self.seen_ids.add(known.id)
            if known.retired or known.fingerprint != incoming.fingerprint or known.datatype != raw.datatype:
                incoming.uns_path = known.uns_path
                changed.append((known, incoming))
            else:
                self.counts["unchanged"] += 1
                if known.alias != raw.alias:
                    alias_moves.append((known.id, raw.alias))
        if new:
            self._insert_new(new)
        if changed:
            self._update_changed(changed)
        if alias_moves:
            self._move_aliases(alias_moves)

    def _name_of(self, raw: RawMetric) -> str | None:
        if raw.name is not None:
            if raw.name == "":
                self._reject(raw, "", "empty metric name")
                return None
            return raw.name
        if raw.alias is None:
            self._reject(raw, "", "metric has neither name nor alias")
            return None
        known = self.by_alias.get(raw.alias)
        if known is not None:
            return known.name
        row = self.conn.execute(
            "SELECT m.name FROM uns_meta.metrics m JOIN uns_meta.devices d ON d.id = m.device_id"
            " WHERE d.group_id = %s AND d.edge = %s AND m.alias = %s ORDER BY m.updated_at DESC LIMIT 1",
            (self.topic.group_id, self.topic.edge, raw.alias),
        ).fetchone()
        if row is not None:
            return row[0]
        # Never stored under a made-up name: it would become a catalog metric and a Canary tag.
        self.unresolved_aliases += 1
        self._reject(raw, "", f"alias {raw.alias} has no name and none is known for it (a rebirth with names "
                              "is needed)")
        return None

    def _claim_path(self, incoming: Incoming) -> bool:
        path = uns.metric_path(self.device_path, incoming.name)
        try:
            validation.check_path(path)
        except validation.Invalid as exc:
            self._reject(incoming.raw, incoming.name, str(exc))
            return False
        collision = self.paths.add(incoming.name, path)
        if collision is not None:
            owner = self.known.get(collision.existing_name)
            if owner is None or not owner.retired or owner.id in self.seen_ids:
                self._reject(incoming.raw, incoming.name, f"path {path!r} already used by {collision.existing_name!r}")
                return False
            incoming.takes_over = owner  # a retired metric's path: decided once the whole birth is seen
        incoming.uns_path = path
        return True

    def _rename_candidate(self, raw: RawMetric) -> Known | None:
        known = self.by_alias.get(raw.alias)  # type: ignore[arg-type]
        if known is None or known.datatype != raw.datatype or known.id in self.seen_ids:
            return None
        return known

    def _reject(self, raw: RawMetric, name: str, why: str) -> None:
        self.counts["rejected"] += 1
        # Shortened: a hostile name or message must not push the other reasons off the ledger row.
        shown = name if len(name) <= 120 else name[:117] + "…"
        self.problems.append(f"metric #{raw.index} {shown!r}: {why if len(why) <= 500 else why[:497] + '…'}")

    # --- writes --------------------------------------------------------------------
    def _insert_new(self, candidates: list[Incoming]) -> None:
        # Decoded and checked before anything is written; held for this chunk only.
        new: list[tuple[Incoming, Props]] = []
        for inc in candidates:
            props = self._decode_checked(inc)
            if props is None:
                self.paths.release(inc.uns_path)
            else:
                new.append((inc, props))
        if not new:
            return
        ids = [r[0] for r in self.conn.execute(
            "SELECT nextval(pg_get_serial_sequence('uns_meta.metrics', 'id')) FROM generate_series(1, %s)",
            (len(new),))]
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY uns_meta.metrics ({', '.join(METRIC_COLUMNS)}) FROM STDIN") as cp:
                for mid, (inc, _) in zip(ids, new, strict=True):
                    plant = self.convention.classify(self.topic, inc.name).plant
                    cp.write_row((mid, self.device_id, inc.name, inc.uns_path, inc.raw.datatype, inc.raw.alias,
                                  plant, inc.fingerprint))
            versions = []
            with cur.copy(f"COPY uns_meta.metric_properties ({', '.join(PROPERTY_COLUMNS)}) FROM STDIN") as cp:
                for mid, (inc, props) in zip(ids, new, strict=True):
                    for key, (sptype, value) in props.items():
                        kind, is_null, cols = propvalues.to_columns(sptype, value)
                        cp.write_row((mid, key, sptype, kind, is_null) + cols)
                    # serialized at once: a chunk of dicts would cost far more memory than their text
                    versions.append((mid, "created", to_json({
                        "name": inc.name, "uns_path": inc.uns_path, "datatype": inc.raw.datatype,
                        "added": {k: v for k, (_, v) in props.items()}})))
            self._write_versions(cur, versions)
        self.seen_ids.update(ids)
        self.counts["new"] += len(new)

    def _update_changed(self, changed: list[tuple[Known, Incoming]]) -> None:
        current = self._stored_properties([k.id for k, _ in changed])
        upserts: list[tuple] = []
        deletes: list[tuple[int, str]] = []
        metric_rows: list[tuple] = []
        versions: list[tuple[int, str, dict]] = []
        for known, inc in changed:
            props = self._decode_checked(inc)
            if props is None:  # the metric keeps its stored definition
                continue
            diff, rows, gone = _diff(current.get(known.id, {}), props)
            upserts.extend((known.id, key) + row for key, row in rows)
            deletes.extend((known.id, key) for key in gone)
            if known.datatype != inc.raw.datatype:
                diff["datatype"] = [known.datatype, inc.raw.datatype]
            if not diff and not known.retired:
                # Same definition in another encoding (e.g. keys reordered): no write at
                # all, so no CDC traffic; the stored fingerprint stays as it is.
                self.counts["unchanged"] += 1
                continue
            kind = "restored" if known.retired else "changed"
            self.counts[kind] += 1
            metric_rows.append((known.id, inc.fingerprint, inc.raw.datatype, inc.raw.alias))
            versions.append((known.id, kind, diff))
            known.fingerprint, known.datatype, known.retired = inc.fingerprint, inc.raw.datatype, False
        self._write_properties(upserts, deletes)
        self._update_metrics(metric_rows)
        with self.conn.cursor() as cur:
            self._write_versions(cur, versions)

    def _apply_deferred_renames(self) -> None:
        """A new name whose alias+datatype match a metric absent from this birth is a rename."""
        fresh: list[Incoming] = []
        for inc in self.deferred:
            if inc.takes_over is not None:
                self._take_over_path(inc, inc.takes_over)
                continue
            known = self._rename_candidate(inc.raw)
            if known is None:
                fresh.append(inc)
                continue
            old_name, old_path = known.name, known.uns_path
            if self._rename(known, inc, f"renamed by alias {inc.raw.alias}"):
                self.paths.release(old_path)
                log.info("metric %s renamed %r -> %r (alias %s)", known.id, old_name, inc.name, inc.raw.alias)
        if fresh:
            self._insert_new(fresh)

    def _take_over_path(self, inc: Incoming, retired: Known) -> None:
        """A new name whose path is a retired metric's: the same Canary tag, so the retired metric
        comes back under the new name (unless it came back itself later in this birth)."""
        if retired.id in self.seen_ids:
            self._reject(inc.raw, inc.name, f"path {inc.uns_path!r} already used by {retired.name!r}")
            return
        if self._rename(retired, inc, f"path of retired {retired.name!r} taken by the new name {inc.name!r}"):
            self.counts["restored"] += 1
            log.info("retired metric %s restored as %r (same path %s)", retired.id, inc.name, inc.uns_path)

    def _rename(self, known: Known, inc: Incoming, reason: str) -> bool:
        """``known`` carries on as ``inc``: same id, new name (and path); False if ``inc`` was rejected."""
        props = self._decode_checked(inc)
        if props is None:
            return False
        self.seen_ids.add(known.id)
        self.counts["renamed"] += 1
        current = self._stored_properties([known.id])
        diff, rows, gone = _diff(current.get(known.id, {}), props)
        diff["name"] = [known.name, inc.name]
        if known.uns_path != inc.uns_path:
            diff["uns_path"] = [known.uns_path, inc.uns_path]
        self.conn.execute(
            "UPDATE uns_meta.metrics SET name = %s, uns_path = %s, fingerprint = %s, alias = %s,"
            " datatype = %s, retired_at = NULL WHERE id = %s",
            (inc.name, inc.uns_path, inc.fingerprint, inc.raw.alias, inc.raw.datatype, known.id))
        self._write_properties([(known.id, key) + row for key, row in rows], [(known.id, k) for k in gone])
        if known.uns_path != inc.uns_path:
            self.conn.execute(
                "INSERT INTO uns_meta.metric_path_lineage AS l (metric_id, old_path, new_path, reason, changed_by)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (metric_id, old_path, new_path)"
                " DO UPDATE SET changed_at = now(), reason = EXCLUDED.reason, changed_by = EXCLUDED.changed_by",
                (known.id, known.uns_path, inc.uns_path, reason, self.changed_by))
        with self.conn.cursor() as cur:
            self._write_versions(cur, [(known.id, "renamed", diff)])
        known.name, known.uns_path, known.retired = inc.name, inc.uns_path, False
        return True

    def _retire_absent(self) -> None:
        gone = [k for k in self.known.values() if not k.retired and k.id not in self.seen_ids]
        if not gone:
            return
        self.counts["retired"] += len(gone)
        self.conn.execute(
            "UPDATE uns_meta.metrics SET retired_at = now() WHERE id = ANY(%s) AND retired_at IS NULL",
            ([k.id for k in gone],))
        with self.conn.cursor() as cur:
            self._write_versions(cur, [(k.id, "retired", {"absent_from": self.changed_by}) for k in gone])

    # --- helpers -------------------------------------------------------------------
    def _decode_checked(self, inc: Incoming) -> Props | None:
        """The metric's properties as stored values; None (and the metric rejected by name) when
        they do not decode or the catalog cannot hold them."""
        try:
            validation.check_properties_size(inc.raw.properties)
            props = decode_properties(inc.raw.properties)
            for key, (sptype, _) in props.items():
                if sptype not in propvalues.STORAGE_TYPE:
                    raise validation.Invalid(f"property {key!r} has type {sptype}, which a property cannot have")
            validation.check_properties(props)
        except (DecodeError, validation.Invalid) as exc:
            self._reject(inc.raw, inc.name, str(exc))
            return None
        return {k: propvalues.comparable(t, v) for k, (t, v) in props.items()}

    def _stored_properties(self, metric_ids: list[int]) -> dict[int, dict[str, tuple[int, object]]]:
        out: dict[int, dict[str, tuple[int, object]]] = {}
        with self.conn.cursor() as cur:
            cur.execute(
                f"SELECT metric_id, key, sparkplug_type, type, is_null, {', '.join(propvalues.VALUE_COLUMNS)}"
                " FROM uns_meta.metric_properties WHERE metric_id = ANY(%s)", (metric_ids,))
            for mid, key, sptype, kind, is_null, *cols in cur:
                out.setdefault(mid, {})[key] = propvalues.from_row(sptype, kind, is_null, tuple(cols))
        return out

    def _write_properties(self, upserts: list[tuple], deletes: list[tuple[int, str]]) -> None:
        if deletes:
            self.conn.execute(
                "DELETE FROM uns_meta.metric_properties p USING unnest(%s::bigint[], %s::text[]) AS r(metric_id, key)"
                " WHERE p.metric_id = r.metric_id AND p.key = r.key",
                ([d[0] for d in deletes], [d[1] for d in deletes]))
        if not upserts:
            return
        columns = ", ".join(PROPERTY_COLUMNS)
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in PROPERTY_COLUMNS[2:])
        old = ", ".join(f"p.{c}" for c in PROPERTY_COLUMNS[2:])
        new = ", ".join(f"EXCLUDED.{c}" for c in PROPERTY_COLUMNS[2:])
        with self.conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS stage_properties ON COMMIT DELETE ROWS AS"
                        f" SELECT {columns} FROM uns_meta.metric_properties WITH NO DATA")
            cur.execute("TRUNCATE stage_properties")
            with cur.copy(f"COPY stage_properties ({columns}) FROM STDIN") as cp:
                for row in upserts:
                    cp.write_row(row)
            cur.execute(
                f"INSERT INTO uns_meta.metric_properties AS p ({columns}) SELECT {columns} FROM stage_properties"
                f" ON CONFLICT (metric_id, key) DO UPDATE SET {assignments}"
                f" WHERE ({old}) IS DISTINCT FROM ({new})")

    def _update_metrics(self, rows: list[tuple]) -> None:
        if not rows:
            return
        self.conn.execute(
            "UPDATE uns_meta.metrics m SET fingerprint = s.fp, datatype = s.dt, alias = s.alias, retired_at = NULL"
            " FROM unnest(%s::bigint[], %s::bytea[], %s::smallint[], %s::bigint[]) AS s(id, fp, dt, alias)"
            " WHERE m.id = s.id",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]))

    def _move_aliases(self, moves: list[tuple[int, int | None]]) -> None:
        self.conn.execute(
            "UPDATE uns_meta.metrics m SET alias = s.alias FROM unnest(%s::bigint[], %s::bigint[]) AS s(id, alias)"
            " WHERE m.id = s.id AND m.alias IS DISTINCT FROM s.alias",
            ([m[0] for m in moves], [m[1] for m in moves]))

    def _write_versions(self, cur: psycopg.Cursor, versions: Sequence[tuple[int, str, dict | str]]) -> None:
        """Append versions; a change is a dict or its JSON text (see :func:`to_json`)."""
        if not versions:
            return
        self.counts["versions"] += len(versions)
        if self.dry_run:  # the transaction is rolled back; keep what it would have written
            self.diff.extend({"metric_id": m, "kind": k, "change": json.loads(c) if isinstance(c, str) else c}
                             for m, k, c in versions)
        with cur.copy(f"COPY uns_meta.metric_versions ({', '.join(VERSION_COLUMNS)}) FROM STDIN") as cp:
            for mid, kind, change in versions:
                cp.write_row((mid, kind, change if isinstance(change, str) else to_json(change), self.changed_by))


def _diff(old: dict[str, tuple[int, object]], new: dict[str, tuple[int, object]]
          ) -> tuple[dict, list[tuple[str, tuple]], list[str]]:
    """Key-level diff → (version change, rows to upsert, keys to delete)."""
    added = {k: v for k, (_, v) in new.items() if k not in old}
    changed = {k: [old[k][1], v] for k, (t, v) in new.items() if k in old and old[k] != (t, v)}
    removed = {k: v for k, (_, v) in old.items() if k not in new}
    diff: dict = {}
    if added:
        diff["added"] = added
    if changed:
        diff["changed"] = changed
    if removed:
        diff["removed"] = removed
    rows = []
    for key in [*added, *changed]:
        sptype, value = new[key]
        kind, is_null, cols = propvalues.to_columns(sptype, value)
        rows.append((key, (sptype, kind, is_null) + cols))
    return diff, rows, list(removed)
