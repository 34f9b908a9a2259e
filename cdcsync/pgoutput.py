"""Decoder for PostgreSQL's ``pgoutput`` logical replication messages, protocol version 1.

Input is one message from the ``data`` column (bytea) of ``pg_logical_slot_peek_binary_changes``
(see :mod:`cdcsync.slot`). Pure Python, no Django: the ``cdc_consume`` daemon and the tests import
it directly. :func:`metric_ids_of` is the hot path (one integer per row change, the tuple walked
only up to the id column); :func:`decode_message` builds full messages for everything else.
Relation messages come again at every peek; :class:`RelationCache` keeps the latest per relid.
Message kinds, their layout and what the consumer does with each: docs/cdc.md, "pgoutput messages".
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

__all__ = [
    "Begin", "Column", "Commit", "Delete", "Insert", "LogicalMessage", "Message", "Origin", "PgOutputError",
    "Relation", "RelationCache", "Truncate", "TupleData", "Type", "UNCHANGED", "Unchanged", "Update",
    "KIND_BEGIN", "KIND_COMMIT", "KIND_DELETE", "KIND_INSERT", "KIND_MESSAGE", "KIND_ORIGIN", "KIND_RELATION",
    "KIND_TRUNCATE", "KIND_TYPE", "KIND_UPDATE", "METRIC_ID_COLUMNS", "ROW_CHANGE_KINDS",
    "column_value", "decode_message", "format_lsn", "metric_id_of",
    "metric_ids_of", "parse_lsn", "pg_timestamp", "tuple_as_dict",
]


class PgOutputError(ValueError):
    """A pgoutput message is malformed, truncated, of an unknown kind, or refers to an unknown relation."""


class Unchanged:
    """Marker for a ``u`` column: an unchanged TOASTed value whose data the WAL does not carry."""

    _instance: ClassVar[Unchanged | None] = None

    def __new__(cls) -> Unchanged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED"

    def __reduce__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Final = Unchanged()

Value = str | None | Unchanged

# Which column holds the metric id, per published table (namespace, name).
METRIC_ID_COLUMNS: Final[dict[tuple[str, str], str]] = {
    ("uns_meta", "metrics"): "id",
    ("uns_meta", "metric_properties"): "metric_id",
}

KIND_BEGIN: Final = ord("B")
KIND_COMMIT: Final = ord("C")
KIND_ORIGIN: Final = ord("O")
KIND_RELATION: Final = ord("R")
KIND_TYPE: Final = ord("Y")
KIND_INSERT: Final = ord("I")
KIND_UPDATE: Final = ord("U")
KIND_DELETE: Final = ord("D")
KIND_TRUNCATE: Final = ord("T")
KIND_MESSAGE: Final = ord("M")
ROW_CHANGE_KINDS: Final = frozenset({KIND_INSERT, KIND_UPDATE, KIND_DELETE})

_NEW, _KEY, _OLD = ord("N"), ord("K"), ord("O")
_NULL, _TOAST, _TEXT, _BINARY = ord("n"), ord("u"), ord("t"), ord("b")

# Kinds that exist in later protocol versions; named so the error says what was received.
_LATER_PROTOCOL_KINDS: Final = {
    "S": "Stream Start (protocol 2)", "E": "Stream Stop (protocol 2)", "c": "Stream Commit (protocol 2)",
    "A": "Stream Abort (protocol 2)", "b": "Begin Prepare (protocol 3)", "P": "Prepare (protocol 3)",
    "K": "Commit Prepared (protocol 3)", "r": "Rollback Prepared (protocol 3)",
    "p": "Stream Prepare (protocol 3)",
}

PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_BEGIN = struct.Struct(">QqI")  # final_lsn, timestamp, xid
_COMMIT = struct.Struct(">BQQq")  # flags, commit_lsn, end_lsn, timestamp
_COLUMN_TAIL = struct.Struct(">Ii")  # type oid, typmod
_TRUNCATE_HEAD = struct.Struct(">IB")  # relation count, options
_MESSAGE_HEAD = struct.Struct(">BQ")  # flags, lsn
_u32_at = _U32.unpack_from


# --------------------------------------------------------------------------------------------
# LSNs and timestamps


def format_lsn(lsn: int) -> str:
    """``0x16B6C50`` → ``'0/16B6C50'`` (PostgreSQL's pg_lsn text form)."""
    if not 0 <= lsn < 1 << 64:
        raise PgOutputError(f"LSN {lsn} is outside the uint64 range")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """``'0/16B6C50'`` → ``0x16B6C50``."""
    high, sep, low = text.partition("/")
    try:
        if not sep or not high or not low or len(high) > 8 or len(low) > 8:
            raise ValueError
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise PgOutputError(f"not an LSN: {text!r} (expected 'XXXXXXXX/XXXXXXXX' in hex)") from None


def pg_timestamp(microseconds: int) -> datetime:
    """A PostgreSQL timestamp (µs since 2000-01-01 UTC) as an aware datetime."""
    try:
        return PG_EPOCH + timedelta(microseconds=microseconds)
    except OverflowError:
        raise PgOutputError(f"timestamp {microseconds} µs since 2000-01-01 is out of range") from None


# --------------------------------------------------------------------------------------------
# Messages


@dataclass(frozen=True, slots=True)
class TupleData:
    """Column values in Relation column order: ``str`` (text), ``None`` (NULL) or ``UNCHANGED``."""

    values: tuple[Value, ...]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class Begin:
    kind: ClassVar[str] = "B"
    final_lsn: int
    commit_time: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    kind: ClassVar[str] = "C"
    flags: int
    commit_lsn: int
    end_lsn: int  # the position to confirm (pg_replication_slot_advance) once this transaction is done
    commit_time: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    kind: ClassVar[str] = "O"
    origin_lsn: int
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    flags: int  # 1 = part of the replica identity key
    name: str
    type_oid: int
    typmod: int

    @property
    def is_key(self) -> bool:
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    kind: ClassVar[str] = "R"
    relid: int
    namespace: str  # '' for pg_catalog, as pgoutput sends it
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    # Position of the metric id column (METRIC_ID_COLUMNS), -1 for other tables.
    metric_id_index: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {c.name: i for i, c in enumerate(self.columns)}
        object.__setattr__(self, "_index", index)
        id_column = METRIC_ID_COLUMNS.get((self.namespace, self.name))
        metric_id_index = -1
        if id_column is not None:
            if id_column not in index:
                raise PgOutputError(f"relation {self.qualified_name} (id {self.relid}) has no column {id_column!r}"
                                    " to identify the metric: check the publication's column list")
            metric_id_index = index[id_column]
        object.__setattr__(self, "metric_id_index", metric_id_index)

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}.{self.name}" if self.namespace else self.name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column_index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise PgOutputError(f"relation {self.qualified_name} (id {self.relid}) has no column {name!r};"
                                f" columns: {', '.join(self.column_names)}") from None


@dataclass(frozen=True, slots=True)
class Type:
    kind: ClassVar[str] = "Y"
    type_oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    kind: ClassVar[str] = "I"
    relid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    kind: ClassVar[str] = "U"
    relid: int
    old_kind: str | None  # 'K' (key columns), 'O' (whole old row) or None (key unchanged)
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    kind: ClassVar[str] = "D"
    relid: int
    old_kind: str  # 'K' or 'O'
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    kind: ClassVar[str] = "T"
    options: int
    relids: tuple[int, ...]

    @property
    def cascade(self) -> bool:
        return bool(self.options & 1)

    @property
    def restart_identity(self) -> bool:
        return bool(self.options & 2)


@dataclass(frozen=True, slots=True)
class LogicalMessage:
    kind: ClassVar[str] = "M"
    flags: int  # 1 = transactional
    lsn: int
    prefix: str
    content: bytes

    @property
    def transactional(self) -> bool:
        return bool(self.flags & 1)


Message = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | LogicalMessage
RowChange = Insert | Update | Delete


# --------------------------------------------------------------------------------------------
# Decoding


class _Reader:
    """Cursor over one message; every read is bounds-checked and fails with PgOutputError."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 1  # after the kind byte
        self.what = what

    def fail(self, problem: str) -> PgOutputError:
        return PgOutputError(f"{self.what} message: {problem} at byte {self.pos} of {len(self.data)}")

    def unpack(self, st: struct.Struct, field_name: str) -> tuple:
        if self.pos + st.size > len(self.data):
            raise self.fail(f"truncated {field_name} (needs {st.size} bytes, "
                            f"{len(self.data) - self.pos} left)")
        values = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return values

    def byte(self, field_name: str) -> int:
        if self.pos >= len(self.data):
            raise self.fail(f"truncated: missing {field_name}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def string(self, field_name: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise self.fail(f"{field_name} is not NUL-terminated")
        raw = self.data[self.pos:end]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{field_name} is not valid UTF-8 ({exc.reason})") from None
        self.pos = end + 1
        return text

    def raw(self, length: int, field_name: str) -> bytes:
        end = self.pos + length
        if end > len(self.data):
            raise self.fail(f"truncated {field_name} (needs {length} bytes, {len(self.data) - self.pos} left)")
        value = self.data[self.pos:end]
        self.pos = end
        return value

    def tuple_data(self, field_name: str) -> TupleData:
        (count,) = self.unpack(_U16, f"{field_name} column count")
        data = self.data
        values: list[Value] = []
        append = values.append
        for i in range(count):
            if self.pos >= len(data):
                raise self.fail(f"truncated {field_name}: column {i} of {count} missing")
            kind = data[self.pos]
            if kind == _TEXT:
                if self.pos + 5 > len(data):
                    raise self.fail(f"truncated {field_name}: column {i} length")
                (length,) = _u32_at(data, self.pos + 1)
                start = self.pos + 5
                end = start + length
                if end > len(data):
                    raise self.fail(f"truncated {field_name}: column {i} declares {length} bytes, "
                                    f"{len(data) - start} left")
                try:
                    append(data[start:end].decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise self.fail(f"{field_name} column {i} is not valid UTF-8 ({exc.reason})") from None
                self.pos = end
            elif kind == _NULL:
                append(None)
                self.pos += 1
            elif kind == _TOAST:
                append(UNCHANGED)
                self.pos += 1
            elif kind == _BINARY:
                raise self.fail(f"{field_name} column {i} is in binary format ('b'), which needs the "
                                "'binary' option; this decoder reads text columns only")
            else:
                raise self.fail(f"{field_name} column {i} has unknown kind {_show(kind)}"
                                " (expected 'n', 'u' or 't')")
        return TupleData(tuple(values))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} unexpected trailing byte(s)")


def _show(byte: int) -> str:
    return repr(chr(byte)) if 0x20 <= byte < 0x7F else f"0x{byte:02x}"


def _begin(r: _Reader) -> Begin:
    final_lsn, ts, xid = r.unpack(_BEGIN, "final_lsn/timestamp/xid")
    return Begin(final_lsn, pg_timestamp(ts), xid)


def _commit(r: _Reader) -> Commit:
    flags, commit_lsn, end_lsn, ts = r.unpack(_COMMIT, "flags/commit_lsn/end_lsn/timestamp")
    if flags != 0:
        raise r.fail(f"commit flags are {flags}, protocol 1 defines none")
    return Commit(flags, commit_lsn, end_lsn, pg_timestamp(ts))


def _origin(r: _Reader) -> Origin:
    (lsn,) = r.unpack(_U64, "origin lsn")
    return Origin(lsn, r.string("origin name"))


def _relation(r: _Reader) -> Relation:
    (relid,) = r.unpack(_U32, "relid")
    namespace = r.string("namespace")
    name = r.string("relation name")
    identity = chr(r.byte("replica identity"))
    if identity not in "dnfi":
        raise r.fail(f"unknown replica identity {identity!r} (expected d, n, f or i)")
    (count,) = r.unpack(_U16, "column count")
    columns = []
    for i in range(count):
        flags = r.byte(f"column {i} flags")
        column_name = r.string(f"column {i} name")
        type_oid, typmod = r.unpack(_COLUMN_TAIL, f"column {i} type oid/typmod")
        columns.append(Column(flags, column_name, type_oid, typmod))
    return Relation(relid, namespace, name, identity, tuple(columns))


def _type(r: _Reader) -> Type:
    (oid,) = r.unpack(_U32, "type oid")
    return Type(oid, r.string("type namespace"), r.string("type name"))


def _insert(r: _Reader) -> Insert:
    (relid,) = r.unpack(_U32, "relid")
    marker = r.byte("tuple marker")
    if marker != _NEW:
        raise r.fail(f"expected 'N' before the new tuple, got {_show(marker)}")
    return Insert(relid, r.tuple_data("new tuple"))


def _update(r: _Reader) -> Update:
    (relid,) = r.unpack(_U32, "relid")
    marker = r.byte("tuple marker")
    old_kind = None
    old = None
    if marker in (_KEY, _OLD):
        old_kind = chr(marker)
        old = r.tuple_data("old tuple" if marker == _OLD else "key tuple")
        marker = r.byte("new tuple marker")
    if marker != _NEW:
        raise r.fail(f"expected 'N' (or 'K'/'O' then 'N') in Update, got {_show(marker)}")
    return Update(relid, old_kind, old, r.tuple_data("new tuple"))


def _delete(r: _Reader) -> Delete:
    (relid,) = r.unpack(_U32, "relid")
    marker = r.byte("tuple marker")
    if marker not in (_KEY, _OLD):
        raise r.fail(f"expected 'K' or 'O' in Delete, got {_show(marker)}")
    return Delete(relid, chr(marker), r.tuple_data("old tuple" if marker == _OLD else "key tuple"))


def _truncate(r: _Reader) -> Truncate:
    count, options = r.unpack(_TRUNCATE_HEAD, "relation count/options")
    if options & ~3:
        raise r.fail(f"unknown truncate option bits {options:#x} (known: 1 cascade, 2 restart identity)")
    relids = r.unpack(struct.Struct(f">{count}I"), f"{count} relids")
    return Truncate(options, relids)


def _message(r: _Reader) -> LogicalMessage:
    flags, lsn = r.unpack(_MESSAGE_HEAD, "flags/lsn")
    prefix = r.string("prefix")
    (length,) = r.unpack(_U32, "content length")
    return LogicalMessage(flags, lsn, prefix, r.raw(length, "content"))


_DECODERS: dict[int, tuple[str, Callable[[_Reader], Message]]] = {
    KIND_BEGIN: ("Begin", _begin), KIND_COMMIT: ("Commit", _commit), KIND_ORIGIN: ("Origin", _origin),
    KIND_RELATION: ("Relation", _relation), KIND_TYPE: ("Type", _type), KIND_INSERT: ("Insert", _insert),
    KIND_UPDATE: ("Update", _update), KIND_DELETE: ("Delete", _delete), KIND_TRUNCATE: ("Truncate", _truncate),
    KIND_MESSAGE: ("Message", _message),
}


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise PgOutputError(f"expected bytes, got {type(data).__name__}")


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode one complete pgoutput v1 message; the whole input must be consumed."""
    data = _as_bytes(data)
    if not data:
        raise PgOutputError("empty message")
    kind = data[0]
    try:
        name, decoder = _DECODERS[kind]
    except KeyError:
        later = _LATER_PROTOCOL_KINDS.get(chr(kind))
        if later:
            raise PgOutputError(f"message kind {chr(kind)!r} is {later}; this decoder speaks protocol "
                                "version 1 (request proto_version '1', no streaming)") from None
        raise PgOutputError(f"unknown message kind {_show(kind)} ({len(data)} bytes)") from None
    reader = _Reader(data, name)
    message = decoder(reader)
    reader.end()
    return message


# --------------------------------------------------------------------------------------------
# Relations and column access


class RelationCache:
    """Latest Relation message per relid; a re-sent Relation (new session, DDL) replaces the entry."""

    __slots__ = ("_by_id",)

    def __init__(self, relations: Iterable[Relation] = ()) -> None:
        self._by_id: dict[int, Relation] = {}
        for relation in relations:
            self.add(relation)

    def add(self, relation: Relation) -> None:
        if not isinstance(relation, Relation):
            raise TypeError(f"RelationCache.add needs a Relation, got {type(relation).__name__}")
        self._by_id[relation.relid] = relation

    def observe(self, message: Message) -> Message:
        """Cache ``message`` if it is a Relation; return it unchanged (for use in a decode loop)."""
        if isinstance(message, Relation):
            self._by_id[message.relid] = message
        return message

    def get(self, relid: int) -> Relation:
        try:
            return self._by_id[relid]
        except KeyError:
            raise PgOutputError(f"unknown relation id {relid}: no Relation message for it was seen "
                                "(feed every 'R' message of the peek to the cache before its rows)") from None

    __getitem__ = get

    def __contains__(self, relid: object) -> bool:
        return relid in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Relation]:
        return iter(self._by_id.values())

    def clear(self) -> None:
        self._by_id.clear()


def tuple_as_dict(relation: Relation, tup: TupleData) -> dict[str, Value]:
    """Column name → value (``str``, ``None`` for NULL, ``UNCHANGED`` for an unchanged TOASTed value)."""
    if len(tup.values) != len(relation.columns):
        raise PgOutputError(f"tuple has {len(tup.values)} columns, relation {relation.qualified_name} "
                            f"(id {relation.relid}) has {len(relation.columns)}: stale Relation in the cache?")
    return dict(zip(relation.column_names, tup.values, strict=True))


def _seek_column(data: bytes, pos: int, index: int, what: str) -> tuple[int, int]:
    """From the column count of a TupleData at ``pos``, find column ``index``.

    Returns (kind byte, position just after the kind byte) of that column, reading nothing else.
    """
    if pos + 2 > len(data):
        raise PgOutputError(f"{what}: truncated before the column count at byte {pos}")
    count = (data[pos] << 8) | data[pos + 1]
    if index >= count:
        raise PgOutputError(f"{what}: tuple has {count} columns, column {index} was asked for"
                            " (stale Relation in the cache?)")
    pos += 2
    for i in range(index):
        kind = data[pos]
        if kind == _TEXT:
            pos += 5 + _u32_at(data, pos + 1)[0]
        elif kind == _NULL or kind == _TOAST:
            pos += 1
        else:
            raise PgOutputError(f"{what}: column {i} has unknown kind {_show(kind)} (expected 'n', 'u' or 't')")
    if pos >= len(data):
        raise PgOutputError(f"{what}: truncated before column {index}")
    return data[pos], pos + 1


def _skip_tuple(data: bytes, pos: int, what: str) -> int:
    """Position just after the TupleData starting at ``pos``."""
    count = _U16.unpack_from(data, pos)[0]
    pos += 2
    for i in range(count):
        kind = data[pos]
        if kind == _TEXT:
            pos += 5 + _u32_at(data, pos + 1)[0]
        elif kind == _NULL or kind == _TOAST:
            pos += 1
        else:
            raise PgOutputError(f"{what}: column {i} has unknown kind {_show(kind)} (expected 'n', 'u' or 't')")
    if pos > len(data):
        raise PgOutputError(f"{what}: truncated tuple")
    return pos


def _text_at(data: bytes, kind: int, pos: int, what: str) -> Value:
    if kind == _TEXT:
        (length,) = _u32_at(data, pos)
        start = pos + 4
        if start + length > len(data):
            raise PgOutputError(f"{what}: truncated column value")
        try:
            return data[start:start + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PgOutputError(f"{what}: column value is not valid UTF-8 ({exc.reason})") from None
    if kind == _NULL:
        return None
    if kind == _TOAST:
        return UNCHANGED
    raise PgOutputError(f"{what}: column has unknown kind {_show(kind)} (expected 'n', 'u' or 't')")


def _tuple_positions(data: bytes) -> tuple[int | None, int]:
    """For a raw I/U/D message: (position of the old tuple or None, position of the new tuple or -1)."""
    kind = data[0]
    marker = data[5]
    if kind == KIND_INSERT:
        if marker != _NEW:
            raise PgOutputError(f"Insert message: expected 'N' at byte 5, got {_show(marker)}")
        return None, 6
    if kind == KIND_DELETE:
        if marker != _KEY and marker != _OLD:
            raise PgOutputError(f"Delete message: expected 'K' or 'O' at byte 5, got {_show(marker)}")
        return 6, -1
    if marker == _NEW:
        return None, 6
    if marker != _KEY and marker != _OLD:
        raise PgOutputError(f"Update message: expected 'N', 'K' or 'O' at byte 5, got {_show(marker)}")
    new_marker_at = _skip_tuple(data, 6, "Update message old tuple")
    if new_marker_at >= len(data) or data[new_marker_at] != _NEW:
        raise PgOutputError(f"Update message: expected 'N' after the old tuple at byte {new_marker_at}")
    return 6, new_marker_at + 1


def column_value(relation: Relation, source: TupleData | RowChange | bytes, column_name: str) -> Value:
    """One column's value without materialising the others.

    ``source`` is a TupleData, a decoded Insert/Update/Delete (new row; old row for Delete) or the
    raw bytes of an I/U/D message (same rule; the tuple is walked only up to the column).
    """
    index = relation.column_index(column_name)
    if isinstance(source, TupleData):
        if len(source.values) != len(relation.columns):
            raise PgOutputError(f"tuple has {len(source.values)} columns, relation {relation.qualified_name}"
                                f" has {len(relation.columns)}")
        return source.values[index]
    if isinstance(source, Insert | Update):
        return column_value(relation, source.new, column_name)
    if isinstance(source, Delete):
        return column_value(relation, source.old, column_name)
    data = _as_bytes(source)
    if len(data) < 6 or data[0] not in ROW_CHANGE_KINDS:
        raise PgOutputError(f"column_value needs an Insert/Update/Delete message, got {len(data)} bytes"
                            + (f" of kind {_show(data[0])}" if data else ""))
    relid = _u32_at(data, 1)[0]
    if relid != relation.relid:
        raise PgOutputError(f"message is for relation id {relid}, not {relation.qualified_name} ({relation.relid})")
    what = f"{chr(data[0])} message on {relation.qualified_name}"
    try:
        old_at, new_at = _tuple_positions(data)
        at = new_at if new_at >= 0 else old_at
        assert at is not None
        kind, pos = _seek_column(data, at, index, what)
        return _text_at(data, kind, pos, what)
    except (struct.error, IndexError):
        raise PgOutputError(f"{what}: truncated") from None


def _metric_id(data: bytes, pos: int, index: int, what: str) -> int:
    kind, pos = _seek_column(data, pos, index, what)
    if kind != _TEXT:
        raise PgOutputError(f"{what}: metric id column is {'NULL' if kind == _NULL else _show(kind)}, "
                            "expected a text value")
    (length,) = _u32_at(data, pos)
    start = pos + 4
    raw = data[start:start + length]
    if len(raw) != length:
        raise PgOutputError(f"{what}: truncated metric id")
    try:
        return int(raw)
    except ValueError:
        raise PgOutputError(f"{what}: metric id {raw[:40]!r} is not an integer") from None


def metric_ids_of(message: bytes | bytearray | memoryview | Message, relations: RelationCache) -> tuple[int, ...]:
    """Metric ids a row change touches: ``()`` for other messages and for tables outside METRIC_ID_COLUMNS.

    The fast path: given raw message bytes, reads the relid and walks the tuple only up to the id
    column (``metrics.id``, ``metric_properties.metric_id``). Insert → the new row's id; Delete →
    the id in the key (or old) tuple; Update → the new row's id, preceded by the old one when a
    ``K``/``O`` tuple shows the row moved to another metric. The relation must be in ``relations``.
    """
    if type(message) is bytes:  # the hot path: one change of a million
        data = message
    elif isinstance(message, bytes | bytearray | memoryview):
        data = bytes(message)
    else:
        return _metric_ids_of_decoded(message, relations)
    if not data:
        raise PgOutputError("empty message")
    kind = data[0]
    if kind != KIND_UPDATE and kind != KIND_INSERT and kind != KIND_DELETE:
        return ()
    try:
        relid = _u32_at(data, 1)[0]
        relation = relations._by_id.get(relid)
        if relation is None:
            relations.get(relid)  # raises the explanatory error
        index = relation.metric_id_index  # type: ignore[union-attr]
        if index < 0:
            return ()
        marker = data[5]
        if marker == _NEW and kind != KIND_DELETE:  # the common Insert / Update without old tuple
            return (_metric_id(data, 6, index, _WHAT[kind]),)
        old_at, new_at = _tuple_positions(data)
        assert old_at is not None
        old_id = _metric_id(data, old_at, index, _WHAT[kind] + " old tuple")
        if new_at < 0:
            return (old_id,)
        new_id = _metric_id(data, new_at, index, _WHAT[kind] + " new tuple")
        return (new_id,) if new_id == old_id else (old_id, new_id)
    except (struct.error, IndexError):
        raise PgOutputError(f"{_WHAT[kind]} ({len(data)} bytes): truncated") from None


_WHAT = {KIND_INSERT: "Insert message", KIND_UPDATE: "Update message", KIND_DELETE: "Delete message"}


def _metric_ids_of_decoded(message: Message, relations: RelationCache) -> tuple[int, ...]:
    if not isinstance(message, Insert | Update | Delete):
        return ()
    relation = relations.get(message.relid)
    if relation.metric_id_index < 0:
        return ()

    def as_id(tup: TupleData) -> int:
        value = tup.values[relation.metric_id_index]
        if not isinstance(value, str):
            raise PgOutputError(f"{message.kind} on {relation.qualified_name}: metric id is {value!r}")
        try:
            return int(value)
        except ValueError:
            raise PgOutputError(f"{message.kind} on {relation.qualified_name}: metric id {value!r} "
                                "is not an integer") from None

    if isinstance(message, Delete):
        return (as_id(message.old),)
    new_id = as_id(message.new)
    if isinstance(message, Update) and message.old is not None:
        old_id = as_id(message.old)
        if old_id != new_id:
            return (old_id, new_id)
    return (new_id,)


def metric_id_of(message: bytes | Message, relations: RelationCache) -> int | None:
    """The metric id of the row after the change (Delete: of the deleted row), else None.

    When an Update moved a row to another metric both ids matter: use :func:`metric_ids_of`.
    """
    ids = metric_ids_of(message, relations)
    return ids[-1] if ids else None
