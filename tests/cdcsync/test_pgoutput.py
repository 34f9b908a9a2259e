"""pgoutput decoding and slot helpers (docs/cdc.md): first on real WAL, then on hand-built bytes.

The real-WAL tests write catalog rows with SQL on the test database and read them back through a
uniquely named logical slot with `cdcsync.slot` (peek + advance); they are the groundwork the
CDC consumer and its crash test build on. TRUNCATE is only ever run on scratch tables in a
scratch publication: truncating the catalog tables would destroy other tests' data.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.conf import settings

from cdcsync import slot as slots
from cdcsync.pgoutput import (
    UNCHANGED,
    Begin,
    Column,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    Origin,
    PgOutputError,
    Relation,
    RelationCache,
    Truncate,
    TupleData,
    Type,
    Update,
    column_value,
    decode_message,
    format_lsn,
    metric_id_of,
    metric_ids_of,
    parse_lsn,
    tuple_as_dict,
)

PUBLICATION = "uns_meta_pub"
CATALOG_TABLES = ["uns_meta.metrics", "uns_meta.metric_properties"]
real_wal = pytest.mark.django_db(transaction=True)


# ---------------------------------------------------------------------------------------------
# Real WAL: connections, slot, SQL builders


@pytest.fixture
def admin() -> Iterator[psycopg.Connection]:
    """Superuser connection to the test database (slot functions need REPLICATION or superuser)."""
    assert settings.DATABASE_ADMIN_URL, "DATABASE_ADMIN_URL (superuser) is needed for replication slots"
    with psycopg.connect(settings.DATABASE_ADMIN_URL, dbname=settings.DATABASES["default"]["NAME"],
                         autocommit=True, application_name="test_pgoutput") as conn:
        # Creating a slot waits for every running transaction of the cluster: fail, don't hang.
        conn.execute("SET statement_timeout = '120s'")
        yield conn


@pytest.fixture
def slot(admin: psycopg.Connection) -> Iterator[str]:
    name = f"t_pgo_{secrets.token_hex(4)}"
    try:
        assert slots.ensure_slot(admin, name) is True
        yield name
    finally:
        admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                      (name,))


@pytest.fixture
def full_pub(admin: psycopg.Connection) -> Iterator[str]:
    """A publication of every column of both catalog tables. uns_meta_pub carries only the key
    columns (docs/cdc.md, "Decoding speed"); the decoder must still read whole rows, enum Types and
    unchanged TOASTed values."""
    name = f"t_pgo_full_{secrets.token_hex(4)}"
    admin.execute(f"CREATE PUBLICATION {name} FOR TABLE uns_meta.metrics, uns_meta.metric_properties")
    try:
        yield name
    finally:
        admin.execute(f"DROP PUBLICATION IF EXISTS {name}")


@pytest.fixture
def scratch(admin: psycopg.Connection) -> Iterator[dict[str, str]]:
    """Two scratch tables (b references a) in their own publication; dropped afterwards."""
    tag = secrets.token_hex(4)
    names = {"a": f"t_pgo_a_{tag}", "b": f"t_pgo_b_{tag}", "pub": f"t_pgo_pub_{tag}"}
    try:
        admin.execute(f"CREATE TABLE public.{names['a']} (id bigint PRIMARY KEY, note text)")
        admin.execute(f"CREATE TABLE public.{names['b']} (id bigserial PRIMARY KEY,"
                      f" a_id bigint REFERENCES public.{names['a']})")
        admin.execute(f"CREATE PUBLICATION {names['pub']} FOR TABLE public.{names['a']}, public.{names['b']}")
        yield names
    finally:
        admin.execute(f"DROP PUBLICATION IF EXISTS {names['pub']}")
        admin.execute(f"DROP TABLE IF EXISTS public.{names['b']}, public.{names['a']}")


def in_transaction(conn: psycopg.Connection, *statements: tuple[str, tuple]) -> tuple[int, list]:
    """Run statements in one transaction; return its xid and each statement's first row."""
    results = []
    with conn.transaction():
        xid = conn.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
        for query, params in statements:
            cur = conn.execute(query, params)
            results.append(cur.fetchone() if cur.description else None)
    return xid, results


def new_device(conn: psycopg.Connection) -> int:
    tag = secrets.token_hex(4)
    return conn.execute("INSERT INTO uns_meta.devices (group_id, edge, device, uns_path) VALUES (%s, 'Edge', 'Dev', %s)"
                        " RETURNING id", (f"G{tag}", f"G{tag}/Edge/Dev")).fetchone()[0]


def metric_sql(device_id: int, name: str) -> tuple[str, tuple]:
    return ("INSERT INTO uns_meta.metrics (device_id, name, uns_path, datatype, fingerprint)"
            " SELECT %s, %s, d.uns_path || '/' || %s, 9, '\\x00'::bytea FROM uns_meta.devices d WHERE d.id = %s"
            " RETURNING id", (device_id, name, name, device_id))


def property_sql(metric_id: int, key: str, value: str | float) -> tuple[str, tuple]:
    if isinstance(value, str):
        return ("INSERT INTO uns_meta.metric_properties (metric_id, key, sparkplug_type, type, is_null, string_value)"
                " VALUES (%s, %s, 12, 'string', false, %s)", (metric_id, key, value))
    return ("INSERT INTO uns_meta.metric_properties (metric_id, key, sparkplug_type, type, is_null, double_value)"
            " VALUES (%s, %s, 10, 'double', false, %s)", (metric_id, key, value))


def decode_rows(rows: list[tuple[str, int, bytes]], relations: RelationCache) -> list[tuple[str, int, object]]:
    return [(lsn, xid, relations.observe(decode_message(data))) for lsn, xid, data in rows]


def by_xid(decoded: list[tuple[str, int, object]]) -> dict[int, list[tuple[str, object]]]:
    groups: dict[int, list[tuple[str, object]]] = {}
    for lsn, xid, message in decoded:
        groups.setdefault(xid, []).append((lsn, message))
    return groups


def kinds(messages: list[tuple[str, object]]) -> str:
    return "".join(m.kind for _, m in messages)


# ---------------------------------------------------------------------------------------------
# Real WAL tests


@real_wal
def test_insert_update_delete_on_both_tables_decode_in_commit_order(admin, slot, full_pub):
    """docs/cdc.md: Begin/Relation/Insert/Update/Delete/Commit from real WAL, per transaction; the
    metric id of every row change of `metrics` and `metric_properties` comes out of the fast path
    (Delete: from the key tuple) and equals the full decode."""
    device_id = new_device(admin)  # devices is not published: no message
    xid1, (m1, m2, *_) = in_transaction(
        admin, metric_sql(device_id, "Plant/Tag1"), metric_sql(device_id, "Plant/Tag2"))
    m1, m2 = m1[0], m2[0]
    xid1b, _ = in_transaction(
        admin, property_sql(m1, "engUnit", "degC"), property_sql(m1, "engHigh", 1500.0),
        property_sql(m2, "engUnit", "bar"), property_sql(m2, "engHigh", 16.0))
    xid2, _ = in_transaction(
        admin,
        ("UPDATE uns_meta.metric_properties SET double_value = 1600 WHERE metric_id = %s AND key = 'engHigh'", (m1,)),
        ("UPDATE uns_meta.metrics SET plant = 'Maceira' WHERE id = %s", (m2,)))
    xid3, _ = in_transaction(
        admin, ("DELETE FROM uns_meta.metric_properties WHERE metric_id = %s AND key = 'engUnit'", (m2,)))

    rows = slots.peek(admin, slot, full_pub, upto_nchanges=None)
    relations = RelationCache()
    groups = by_xid(decode_rows(rows, relations))
    assert list(groups) == [xid1, xid1b, xid2, xid3], "only our four transactions, in commit order"
    # Relation (and the enum's Type) come once per decoding session, before first use.
    assert [kinds(groups[x]) for x in (xid1, xid1b, xid2, xid3)] == ["BRIIC", "BYRIIIIC", "BUUC", "BDC"]

    metrics_rel = groups[xid1][1][1]
    props_rel = groups[xid1b][2][1]
    assert (metrics_rel.namespace, metrics_rel.name) == ("uns_meta", "metrics")
    assert (props_rel.namespace, props_rel.name) == ("uns_meta", "metric_properties")
    assert "canary_id" not in metrics_rel.column_names, "generated columns are not replicated"
    assert {c.name for c in props_rel.columns if c.is_key} == {"metric_id", "key"}
    enum_type = groups[xid1b][1][1]
    assert (enum_type.namespace, enum_type.name) == ("uns_meta", "property_type")
    assert props_rel.columns[props_rel.column_index("type")].type_oid == enum_type.type_oid

    for xid, messages in groups.items():
        (_, begin), (commit_lsn, commit) = messages[0], messages[-1]
        assert isinstance(begin, Begin) and isinstance(commit, Commit)
        assert begin.xid == xid
        assert begin.final_lsn == commit.commit_lsn
        assert commit.end_lsn == parse_lsn(commit_lsn), "the Commit row's lsn is the position to advance to"
        assert begin.commit_time == commit.commit_time
        assert abs(commit.commit_time - datetime.now(UTC)) < timedelta(minutes=5)

    changes = [(raw, decode_message(raw)) for _, _, raw in rows if raw[:1] in (b"I", b"U", b"D")]
    fast = [metric_ids_of(raw, relations) for raw, _ in changes]
    full = [metric_ids_of(message, relations) for _, message in changes]
    assert fast == full == [(m1,), (m2,), (m1,), (m1,), (m2,), (m2,), (m1,), (m2,), (m2,)]
    assert [metric_id_of(raw, relations) for raw, _ in changes] == [m1, m2, m1, m1, m2, m2, m1, m2, m2]

    insert = groups[xid1b][3][1]
    assert isinstance(insert, Insert)
    row = tuple_as_dict(props_rel, insert.new)
    assert (row["metric_id"], row["key"], row["type"], row["string_value"], row["double_value"]) == (
        str(m1), "engUnit", "string", "degC", None)
    update = groups[xid2][1][1]
    assert isinstance(update, Update) and update.old is None, "key unchanged: no old tuple"
    assert float(tuple_as_dict(props_rel, update.new)["double_value"]) == 1600.0
    delete = groups[xid3][1][1]
    assert isinstance(delete, Delete) and delete.old_kind == "K"
    deleted = tuple_as_dict(props_rel, delete.old)
    assert {k: v for k, v in deleted.items() if v is not None} == {"metric_id": str(m2), "key": "engUnit"}

    # The production publication: the same transactions, only key columns (no enum Type to send),
    # and the same metric ids from the fast path.
    keyed_rows = slots.peek(admin, slot, PUBLICATION, upto_nchanges=None)
    keyed = RelationCache()
    keyed_groups = by_xid(decode_rows(keyed_rows, keyed))
    assert [kinds(keyed_groups[x]) for x in (xid1, xid1b, xid2, xid3)] == ["BRIIC", "BRIIIIC", "BUUC", "BDC"]
    assert set(keyed.get(keyed_groups[xid1b][1][1].relid).column_names) == {"metric_id", "key"}
    assert [metric_ids_of(raw, keyed) for _, _, raw in keyed_rows if raw[:1] in (b"I", b"U", b"D")] == fast


@real_wal
def test_update_moving_a_property_to_another_metric_names_both_metrics(admin, slot):
    """docs/cdc.md: an UPDATE that changes a key column carries a K tuple; when the property moved
    to another metric, both metrics changed and the fast path returns both ids (old first)."""
    device_id = new_device(admin)
    _, ((m1,), (m2,)) = in_transaction(admin, metric_sql(device_id, "A"), metric_sql(device_id, "B"))
    in_transaction(admin, property_sql(m1, "engUnit", "degC"))
    rename_xid, _ = in_transaction(
        admin, ("UPDATE uns_meta.metric_properties SET key = 'EngUnit' WHERE metric_id = %s", (m1,)))
    move_xid, _ = in_transaction(
        admin, ("UPDATE uns_meta.metric_properties SET metric_id = %s WHERE metric_id = %s", (m2, m1)))

    rows = slots.peek(admin, slot, PUBLICATION, upto_nchanges=None)
    relations = RelationCache()
    groups = by_xid(decode_rows(rows, relations))
    (_, renamed), (_, moved) = groups[rename_xid][1], groups[move_xid][1]
    assert isinstance(renamed, Update) and renamed.old_kind == "K"
    props_rel = relations.get(renamed.relid)
    assert column_value(props_rel, renamed.old, "key") == "engUnit"
    assert column_value(props_rel, renamed, "key") == "EngUnit"
    raw = {xid: data for _, xid, data in rows if data[:1] == b"U"}
    assert metric_ids_of(raw[rename_xid], relations) == (m1,)
    assert metric_ids_of(raw[move_xid], relations) == metric_ids_of(moved, relations) == (m1, m2)
    assert column_value(props_rel, raw[rename_xid], "key") == "EngUnit"


@real_wal
def test_unchanged_toast_value_is_marked_unchanged(admin, slot, full_pub):
    """docs/cdc.md: an UPDATE that does not touch a large (TOASTed) string_value sends it as `u`
    (no data): the decoder yields UNCHANGED, and the metric id is still found past it."""
    device_id = new_device(admin)
    _, ((metric_id,),) = in_transaction(admin, metric_sql(device_id, "Doc"))
    documentation = secrets.token_hex(20_000)  # 40 kB, incompressible: stored out of line
    in_transaction(admin, property_sql(metric_id, "documentation", documentation))
    update_xid, _ = in_transaction(
        admin, ("UPDATE uns_meta.metric_properties SET sparkplug_type = 14 WHERE metric_id = %s", (metric_id,)))

    rows = slots.peek(admin, slot, full_pub, upto_nchanges=None)
    relations = RelationCache()
    decoded = decode_rows(rows, relations)
    inserted = next(m for _, _, m in decoded if isinstance(m, Insert) and relations.get(m.relid).name
                    == "metric_properties")
    props_rel = relations.get(inserted.relid)
    assert tuple_as_dict(props_rel, inserted.new)["string_value"] == documentation
    (raw_update,) = [data for _, xid, data in rows if xid == update_xid and data[:1] == b"U"]
    update = decode_message(raw_update)
    after = tuple_as_dict(props_rel, update.new)
    assert after["string_value"] is UNCHANGED
    assert after["sparkplug_type"] == "14"
    assert column_value(props_rel, raw_update, "string_value") is UNCHANGED
    assert metric_ids_of(raw_update, relations) == (metric_id,)
    assert len(raw_update) < 1000, "the TOASTed value is not in the message"


@real_wal
def test_peek_returns_whole_transactions_and_advance_skips_what_was_confirmed(admin, slot, full_pub):
    """docs/cdc.md: `upto_nchanges` is checked at transaction boundaries (a 60-row transaction
    arrives whole with upto_nchanges=1); after advancing to a Commit's end LSN the next peek
    returns only later transactions (with Relation re-sent), advancing never moves backwards, and
    slot_status reports the confirmed position and lag."""
    device_id = new_device(admin)
    metric_xid, ((metric_id,),) = in_transaction(admin, metric_sql(device_id, "Big"))
    big_xid, _ = in_transaction(admin, *(property_sql(metric_id, f"k{i:02}", float(i)) for i in range(60)))
    small_xid, _ = in_transaction(
        admin, ("UPDATE uns_meta.metric_properties SET double_value = -1 WHERE metric_id = %s AND key = 'k07'",
                (metric_id,)))

    first = slots.peek(admin, slot, full_pub, upto_nchanges=1)
    assert {xid for _, xid, _ in first} == {metric_xid}, "only the first transaction"
    everything = slots.peek(admin, slot, full_pub, upto_nchanges=None)
    assert list(slots.iter_peek(admin, slot, full_pub, upto_nchanges=None, fetch_size=7)) == everything
    assert first == everything[:len(first)]
    commit_lsns = [lsn for lsn, _, data in everything if data[:1] == b"C"]
    assert len(commit_lsns) == 3

    # Confirm the first transaction: the next peek with a limit of one change is the whole big one.
    assert slots.advance(admin, slot, commit_lsns[0]) == commit_lsns[0]
    big = slots.peek(admin, slot, full_pub, upto_nchanges=1)
    assert {xid for _, xid, _ in big} == {big_xid}
    assert "".join(chr(d[0]) for _, _, d in big) == "BYR" + "I" * 60 + "C"

    status = slots.slot_status(admin, slot)
    assert status["confirmed_flush_lsn"] == commit_lsns[0]
    assert status["active"] is False and status["plugin"] == "pgoutput"
    assert status["lag_bytes"] > 0 and status["retained_bytes"] >= status["lag_bytes"]
    assert status["wal_status"] == "reserved"

    assert slots.advance(admin, slot, big[-1][0]) == commit_lsns[1]
    assert slots.advance(admin, slot, commit_lsns[0]) == commit_lsns[1], "never backwards"
    rest = slots.peek(admin, slot, full_pub, upto_nchanges=None)
    assert "".join(chr(d[0]) for _, _, d in rest) == "BYRUC", "new session: Type and Relation are re-sent"
    assert {xid for _, xid, _ in rest} == {small_xid}
    relations = RelationCache()
    decode_rows(rest, relations)
    assert metric_ids_of(rest[3][2], relations) == (metric_id,)

    slots.advance(admin, slot, rest[-1][0])
    assert slots.peek(admin, slot, full_pub, upto_nchanges=None) == []
    assert slots.slot_status(admin, slot)["confirmed_flush_lsn"] == commit_lsns[2]


@real_wal
def test_an_empty_poll_may_advance_to_the_flush_position_without_losing_open_transactions(admin, slot, scratch):
    """docs/cdc.md: WAL of unpublished tables yields no rows (not even Begin/Commit), so an idle
    consumer advances to the flush position taken before its drained peek; a transaction still
    open at that position commits after it and is delivered by the next peek."""
    device_id = new_device(admin)
    with psycopg.connect(settings.DATABASE_ADMIN_URL, dbname=settings.DATABASES["default"]["NAME"]) as other:
        query, params = metric_sql(device_id, "Late")
        (late_metric,) = other.execute(query, params).fetchone()  # open transaction, not committed
        other_xid = other.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
        admin.execute(f"INSERT INTO public.{scratch['a']} SELECT i, repeat('x', 200) FROM generate_series(1, 2000) i")

        upto = slots.flush_lsn(admin)
        assert slots.peek(admin, slot, PUBLICATION, upto_nchanges=100, upto_lsn=upto) == []
        assert slots.slot_status(admin, slot)["lag_bytes"] > 100_000, "the scratch rows' WAL is unconfirmed"
        assert slots.advance(admin, slot, upto) == upto
        other.commit()

    rows = slots.peek(admin, slot, PUBLICATION, upto_nchanges=None)
    assert "".join(chr(d[0]) for _, _, d in rows) == "BRIC"
    assert {xid for _, xid, _ in rows} == {other_xid}
    relations = RelationCache()
    decode_rows(rows, relations)
    assert metric_ids_of(rows[2][2], relations) == (late_metric,)


@real_wal
def test_truncate_of_scratch_tables_is_decoded_with_options(admin, slot, scratch):
    """docs/cdc.md: Truncate names every truncated relation and its options (RESTART IDENTITY,
    CASCADE); it carries no rows, so it yields no metric id. Scratch tables only."""
    a, b, pub = scratch["a"], scratch["b"], scratch["pub"]
    in_transaction(admin, (f"INSERT INTO public.{a} (id, note) VALUES (1, 'one'), (2, NULL)", ()),
                   (f"INSERT INTO public.{b} (a_id) VALUES (1)", ()))
    restart_xid, _ = in_transaction(admin, (f"TRUNCATE public.{a}, public.{b} RESTART IDENTITY", ()))
    in_transaction(admin, (f"INSERT INTO public.{a} (id) VALUES (3)", ()),
                   (f"INSERT INTO public.{b} (a_id) VALUES (3)", ()))
    cascade_xid, _ = in_transaction(admin, (f"TRUNCATE public.{a} CASCADE", ()))

    rows = slots.peek(admin, slot, pub, upto_nchanges=None)
    relations = RelationCache()
    groups = by_xid(decode_rows(rows, relations))
    names = {r.relid: r.name for r in relations}
    assert set(names.values()) == {a, b}
    # TRUNCATE gives the tables new files: the invalidation makes pgoutput re-send both Relations.
    restart = groups[restart_xid]
    assert kinds(restart) == "BRRTC"
    truncate = restart[3][1]
    assert isinstance(truncate, Truncate)
    assert sorted(names[r] for r in truncate.relids) == sorted([a, b])
    assert truncate.restart_identity and not truncate.cascade
    assert kinds(groups[cascade_xid]) == "BRRTC"
    cascaded = groups[cascade_xid][3][1]
    assert isinstance(cascaded, Truncate) and cascaded.cascade and not cascaded.restart_identity
    assert sorted(names[r] for r in cascaded.relids) == sorted([a, b])
    assert metric_ids_of(next(d for _, _, d in rows if d[:1] == b"T"), relations) == ()
    inserted = [m for _, _, m in decode_rows(rows, RelationCache()) if isinstance(m, Insert)]
    assert tuple_as_dict(relations.get(inserted[0].relid), inserted[0].new) == {"id": "1", "note": "one"}
    assert tuple_as_dict(relations.get(inserted[1].relid), inserted[1].new) == {"id": "2", "note": None}
    # Tables outside METRIC_ID_COLUMNS have no metric id.
    assert metric_ids_of(next(d for _, _, d in rows if d[:1] == b"I"), relations) == ()


@real_wal
def test_origin_and_logical_message_are_decoded(admin, slot, scratch):
    """docs/cdc.md: a transaction replayed under a replication origin carries an Origin message
    (after Begin); pg_logical_emit_message yields a Message when the `messages` option is on."""
    origin = f"t_pgo_origin_{secrets.token_hex(4)}"
    admin.execute("SELECT pg_replication_origin_create(%s)", (origin,))
    try:
        admin.execute("SELECT pg_replication_origin_session_setup(%s)", (origin,))
        try:
            origin_xid, _ = in_transaction(
                admin, ("SELECT pg_replication_origin_xact_setup('1/ABCDEF', now())", ()),
                (f"INSERT INTO public.{scratch['a']} (id) VALUES (7)", ()))
        finally:
            admin.execute("SELECT pg_replication_origin_session_reset()")
        message_xid, _ = in_transaction(admin, ("SELECT pg_logical_emit_message(true, 'metasync', 'héllo')", ()))
        rows = admin.execute(
            "SELECT xid::text::bigint, data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version',"
            " '1', 'publication_names', %s, 'messages', 'true')", (slot, scratch["pub"]), binary=True).fetchall()
    finally:
        admin.execute("SELECT pg_replication_origin_drop(%s)", (origin,))
    decoded = {}
    for xid, data in rows:
        decoded.setdefault(xid, []).append(decode_message(data))
    assert "".join(m.kind for m in decoded[origin_xid]) == "BORIC"
    assert decoded[origin_xid][1] == Origin(parse_lsn("1/ABCDEF"), origin)
    (message,) = [m for m in decoded[message_xid] if isinstance(m, LogicalMessage)]
    assert message.transactional and message.prefix == "metasync"
    assert message.content == "héllo".encode()


@real_wal
def test_slot_helpers_report_publication_and_slot_state(admin, slot, scratch):
    """docs/cdc.md: cdc_consume verifies the publication and creates the slot if missing: the
    helpers say whether they created it and list every publication problem."""
    assert slots.ensure_slot(admin, slot) is False, "exists already"
    assert slots.verify_publication(admin, PUBLICATION, CATALOG_TABLES) == []
    assert slots.verify_publication(admin, PUBLICATION, ["uns_meta.metrics"]) == [
        f"publication '{PUBLICATION}' includes unexpected table uns_meta.metric_properties"]
    assert slots.verify_publication(admin, "t_pgo_missing", CATALOG_TABLES) == [
        "publication 't_pgo_missing' does not exist"]
    a, b, pub = scratch["a"], scratch["b"], scratch["pub"]
    admin.execute(f"ALTER PUBLICATION {pub} SET (publish = 'insert, update')")
    admin.execute(f"ALTER TABLE public.{a} REPLICA IDENTITY NOTHING")
    admin.execute(f"ALTER PUBLICATION {pub} SET TABLE public.{a}, public.{b} (a_id) WHERE (a_id > 10)")
    problems = slots.verify_publication(admin, pub, [f"public.{a}", f"public.{b}", "public.t_pgo_nope"])
    assert problems == [
        f"publication '{pub}' does not publish delete",
        f"publication '{pub}' does not publish truncate",
        f"publication '{pub}' does not include public.t_pgo_nope",
        f"public.{a} has REPLICA IDENTITY NOTHING: its updates and deletes cannot be published",
        f"publication '{pub}' filters rows of public.{b} (WHERE (a_id > 10)): changes would be missed",
        f"publication '{pub}' leaves out key columns of public.{b}: id",
        "table public.t_pgo_nope does not exist",
    ]
    assert slots.slot_status(admin, "t_pgo_no_such_slot") is None
    with pytest.raises(LookupError):
        slots.advance(admin, "t_pgo_no_such_slot", "0/1")


# ---------------------------------------------------------------------------------------------
# Hand-built messages: builders


def s(text: str) -> bytes:
    return text.encode() + b"\x00"


def tup(*values: str | None | object) -> bytes:
    out = struct.pack(">H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value is UNCHANGED:
            out += b"u"
        else:
            raw = value.encode() if isinstance(value, str) else value
            out += b"t" + struct.pack(">I", len(raw)) + raw
    return out


def begin_msg(final_lsn: int = 0x1_0000_00A0, ts: int = 0, xid: int = 42) -> bytes:
    return b"B" + struct.pack(">QqI", final_lsn, ts, xid)


def commit_msg(commit_lsn: int = 0x1_0000_00A0, end_lsn: int = 0x1_0000_00D0, ts: int = 0, flags: int = 0) -> bytes:
    return b"C" + struct.pack(">BQQq", flags, commit_lsn, end_lsn, ts)


def relation_msg(relid: int, namespace: str, name: str, columns: list[tuple[int, str, int]],
                 identity: bytes = b"d") -> bytes:
    out = b"R" + struct.pack(">I", relid) + s(namespace) + s(name) + identity + struct.pack(">H", len(columns))
    for flags, column, oid in columns:
        out += bytes([flags]) + s(column) + struct.pack(">Ii", oid, -1)
    return out


PROPS_COLUMNS = [(0, "id", 20), (0, "string_value", 25), (1, "key", 25), (0, "sparkplug_type", 21),
                 (1, "metric_id", 20)]
METRICS_COLUMNS = [(1, "id", 20), (0, "name", 25), (0, "device_id", 20)]
PROPS = relation_msg(100, "uns_meta", "metric_properties", PROPS_COLUMNS)
METRICS = relation_msg(200, "uns_meta", "metrics", METRICS_COLUMNS)


def insert_msg(relid: int, new: bytes) -> bytes:
    return b"I" + struct.pack(">I", relid) + b"N" + new


def update_msg(relid: int, new: bytes, old: bytes | None = None, old_kind: bytes = b"K") -> bytes:
    return b"U" + struct.pack(">I", relid) + (old_kind + old if old is not None else b"") + b"N" + new


def delete_msg(relid: int, old: bytes, old_kind: bytes = b"K") -> bytes:
    return b"D" + struct.pack(">I", relid) + old_kind + old


def cache() -> RelationCache:
    return RelationCache([decode_message(PROPS), decode_message(METRICS)])


# ---------------------------------------------------------------------------------------------
# Hand-built messages: tests


def test_begin_and_commit_carry_lsns_and_aware_timestamps():
    """docs/cdc.md: timestamps are µs since 2000-01-01 UTC; LSNs format as PostgreSQL prints them."""
    ts = 1_000_000 * 86_400 + 7
    assert decode_message(begin_msg(0x16B6C50, ts, 99)) == Begin(
        0x16B6C50, datetime(2000, 1, 2, 0, 0, 0, 7, tzinfo=UTC), 99)
    commit = decode_message(commit_msg(0x2_0000_0010, 0x2_0000_0040, -1))
    assert commit == Commit(0, 0x2_0000_0010, 0x2_0000_0040, datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    assert commit.commit_time.tzinfo is UTC
    assert format_lsn(commit.end_lsn) == "2/40" and parse_lsn("2/40") == commit.end_lsn
    assert format_lsn(0x16B6C50) == "0/16B6C50" and parse_lsn("0/16b6c50") == 0x16B6C50


def test_every_message_kind_decodes_from_hand_built_bytes():
    """docs/cdc.md: Origin, Relation, Type, Insert, Update (with and without K/O), Delete, Truncate, Message."""
    assert decode_message(b"O" + struct.pack(">Q", 5) + s("node_a")) == Origin(5, "node_a")
    assert decode_message(b"Y" + struct.pack(">I", 16909) + s("uns_meta") + s("property_type")) == Type(
        16909, "uns_meta", "property_type")
    props = decode_message(PROPS)
    assert props == Relation(100, "uns_meta", "metric_properties", "d", (
        Column(0, "id", 20, -1), Column(0, "string_value", 25, -1), Column(1, "key", 25, -1),
        Column(0, "sparkplug_type", 21, -1), Column(1, "metric_id", 20, -1)))
    assert props.metric_id_index == 4 and props.qualified_name == "uns_meta.metric_properties"
    new = tup("1", "degC", "engUnit", None, "77")
    assert decode_message(insert_msg(100, new)) == Insert(100, TupleData(("1", "degC", "engUnit", None, "77")))
    assert decode_message(update_msg(100, tup("1", UNCHANGED, "k", "12", "77"))) == Update(
        100, None, None, TupleData(("1", UNCHANGED, "k", "12", "77")))
    old = tup(None, None, "engUnit", None, "76")
    assert decode_message(update_msg(100, new, old)) == Update(
        100, "K", TupleData((None, None, "engUnit", None, "76")), TupleData(("1", "degC", "engUnit", None, "77")))
    assert decode_message(update_msg(100, new, new, b"O")).old_kind == "O"
    assert decode_message(delete_msg(100, old)) == Delete(100, "K", TupleData((None, None, "engUnit", None, "76")))
    truncate = decode_message(b"T" + struct.pack(">IBII", 2, 3, 100, 200))
    assert truncate == Truncate(3, (100, 200)) and truncate.cascade and truncate.restart_identity
    message = decode_message(b"M" + struct.pack(">BQ", 0, 9) + s("pfx") + struct.pack(">I", 3) + b"a\x00b")
    assert message == LogicalMessage(0, 9, "pfx", b"a\x00b") and not message.transactional
    assert decode_message(bytearray(begin_msg())) == decode_message(memoryview(begin_msg()))


def test_relation_cache_replaces_a_resent_relation():
    """docs/cdc.md: a Relation re-sent after DDL replaces the cached one; a tuple decoded against a
    stale relation is reported, not silently mis-assigned."""
    relations = cache()
    old_rel = relations.get(200)
    new_rel = decode_message(relation_msg(200, "uns_meta", "metrics", [*METRICS_COLUMNS, (0, "plant", 25)]))
    relations.observe(new_rel)
    assert relations.get(200) is new_rel and len(relations) == 2 and 200 in relations
    row = decode_message(insert_msg(200, tup("5", "Tag", "1", "Maceira")))
    assert tuple_as_dict(relations.get(200), row.new) == {"id": "5", "name": "Tag", "device_id": "1",
                                                          "plant": "Maceira"}
    with pytest.raises(PgOutputError, match=r"tuple has 4 columns, relation uns_meta.metrics \(id 200\) has 3"):
        tuple_as_dict(old_rel, row.new)
    with pytest.raises(PgOutputError, match="unknown relation id 300: no Relation message"):
        relations.get(300)
    with pytest.raises(PgOutputError, match="unknown relation id 300"):
        metric_ids_of(insert_msg(300, tup("1")), relations)


def test_fast_metric_id_path_matches_the_full_decode():
    """docs/cdc.md: metric ids from raw bytes equal those from decoded messages, for every row
    change shape on both tables (NULL and unchanged-TOAST columns before the id column)."""
    relations = cache()
    cases = [
        (insert_msg(100, tup("1", None, "engUnit", "12", "77")), (77,)),
        (update_msg(100, tup("1", UNCHANGED, "engUnit", "12", "77")), (77,)),
        (update_msg(100, tup("1", "x" * 5000, "EngUnit", "12", "77"), tup(None, None, "engUnit", None, "77")), (77,)),
        (update_msg(100, tup("1", "x", "k", "12", "78"), tup("1", "x", "k", "12", "77"), b"O"), (77, 78)),
        (delete_msg(100, tup(None, None, "engUnit", None, "-5")), (-5,)),
        (insert_msg(200, tup("9", "Tag", "1")), (9,)),
        (update_msg(200, tup("9", "Tag", UNCHANGED)), (9,)),
        (delete_msg(200, tup("9", None, None)), (9,)),
        (begin_msg(), ()),
        (b"T" + struct.pack(">IBI", 1, 0, 100), ()),
    ]
    for raw, expected in cases:
        assert metric_ids_of(raw, relations) == expected, raw
        assert metric_ids_of(decode_message(raw), relations) == expected, raw
        assert metric_id_of(raw, relations) == (expected[-1] if expected else None)
    other = RelationCache([decode_message(relation_msg(300, "public", "scratch", [(1, "id", 20)]))])
    assert metric_ids_of(insert_msg(300, tup("1")), other) == ()


def test_column_value_reads_one_column_from_any_source():
    """column_value works on a TupleData, a decoded row change or its raw bytes (new row; Delete: old row)."""
    rel = decode_message(PROPS)
    raw = update_msg(100, tup("1", UNCHANGED, "EngUnit", None, "77"), tup(None, None, "engUnit", None, "77"))
    message = decode_message(raw)
    for source in (raw, message, message.new):
        assert column_value(rel, source, "key") == "EngUnit"
        assert column_value(rel, source, "string_value") is UNCHANGED
        assert column_value(rel, source, "sparkplug_type") is None
    assert column_value(rel, message.old, "key") == "engUnit"
    assert column_value(rel, delete_msg(100, tup(None, None, "k", None, "3")), "metric_id") == "3"
    with pytest.raises(PgOutputError, match="has no column 'nope'; columns: id, string_value, key"):
        column_value(rel, raw, "nope")
    with pytest.raises(PgOutputError, match="message is for relation id 200"):
        column_value(rel, insert_msg(200, tup("1", "a", "b")), "key")
    with pytest.raises(PgOutputError, match="needs an Insert/Update/Delete message"):
        column_value(rel, begin_msg(), "key")


def test_a_metric_table_relation_without_its_id_column_is_refused():
    """A publication column list that drops the id column would make changes unattributable."""
    with pytest.raises(PgOutputError, match="uns_meta.metric_properties .*has no column 'metric_id'"):
        decode_message(relation_msg(100, "uns_meta", "metric_properties", [(1, "key", 25)]))


MALFORMED = [
    (b"", "empty message"),
    (b"Z\x00\x00", r"unknown message kind 'Z' \(3 bytes\)"),
    (b"\x01", "unknown message kind 0x01"),
    (b"S" + struct.pack(">IB", 1, 1), r"is Stream Start \(protocol 2\); this decoder speaks protocol version 1"),
    (begin_msg()[:9], r"Begin message: truncated final_lsn/timestamp/xid \(needs 20 bytes, 8 left\) at byte 1 of 9"),
    (begin_msg() + b"\x00", r"Begin message: 1 unexpected trailing byte\(s\) at byte 21 of 22"),
    (commit_msg(flags=1), "commit flags are 1, protocol 1 defines none"),
    (b"R" + struct.pack(">I", 1) + b"uns_meta", "Relation message: namespace is not NUL-terminated"),
    (b"R" + struct.pack(">I", 1) + s("n") + s("t") + b"x\x00\x00", "unknown replica identity 'x'"),
    (relation_msg(1, "n", "t", [(0, "a", 25)])[:-3], r"truncated column 0 type oid/typmod"),
    (b"O" + struct.pack(">Q", 1) + b"\xff\xfe\x00", "origin name is not valid UTF-8"),
    (insert_msg(1, b"")[:-1] + b"X" + tup("1"), "Insert message: expected 'N' before the new tuple, got 'X'"),
    (delete_msg(1, tup("1"), b"N"), "expected 'K' or 'O' in Delete, got 'N'"),
    (update_msg(1, tup("1"), tup("1"))[:-len(tup("1")) - 1] + b"Q", r"expected 'N' \(or 'K'/'O' then 'N'\) in Update"),
    (b"U" + struct.pack(">I", 1) + b"X", r"expected 'N' \(or 'K'/'O' then 'N'\) in Update, got 'X'"),
    (insert_msg(1, struct.pack(">H", 2) + b"n"), "truncated new tuple: column 1 of 2 missing"),
    (insert_msg(1, struct.pack(">H", 1) + b"x"), "new tuple column 0 has unknown kind 'x'"),
    (insert_msg(1, struct.pack(">H", 1) + b"b" + struct.pack(">I", 1) + b"\x01"), "binary format \\('b'\\)"),
    (insert_msg(1, struct.pack(">H", 1) + b"t" + struct.pack(">I", 100) + b"abc"), "declares 100 bytes, 3 left"),
    (insert_msg(1, struct.pack(">H", 1) + b"t\x00\x00"), "truncated new tuple: column 0 length"),
    (insert_msg(1, tup(b"\xc3\x28")), "new tuple column 0 is not valid UTF-8"),
    (insert_msg(1, tup("1")) + b"t", "1 unexpected trailing byte"),
    (b"T" + struct.pack(">IB", 2, 0) + struct.pack(">I", 5), r"truncated 2 relids \(needs 8 bytes, 4 left\)"),
    (b"T" + struct.pack(">IBI", 1, 4, 5), "unknown truncate option bits 0x4"),
    (b"M" + struct.pack(">BQ", 1, 1) + s("p") + struct.pack(">I", 9) + b"ab", r"truncated content \(needs 9 bytes"),
]


@pytest.mark.parametrize(("data", "problem"), MALFORMED, ids=[p[:40] for _, p in MALFORMED])
def test_malformed_or_unknown_message_raises_a_precise_error(data, problem):
    """Anything malformed or unknown raises PgOutputError (a ValueError) that says what and where."""
    with pytest.raises(PgOutputError, match=problem) as raised:
        decode_message(data)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "empty message"),
    (insert_msg(100, tup("1", None, "k", "12", "seven")), r"metric id b'seven' is not an integer"),
    (insert_msg(100, tup("1", None, "k", "12", None)), "metric id column is NULL"),
    (insert_msg(100, tup("1", None, "k")), "tuple has 3 columns, column 4 was asked for"),
    (insert_msg(100, tup("1", None, "k", "12", "77"))[:-2], "truncated"),
    (insert_msg(100, tup("1", "abc", "k", "12", "77"))[:14], "truncated"),
    (insert_msg(100, struct.pack(">H", 5) + b"nnx"), "column 2 has unknown kind 'x'"),
    (update_msg(100, tup("1"), tup("1"))[:-len(tup("1")) - 1] + b"Q" + tup("1"), "expected 'N' after the old tuple"),
    (b"U" + struct.pack(">I", 100) + b"X" + tup("1"), "expected 'N', 'K' or 'O' at byte 5, got 'X'"),
    (b"I" + struct.pack(">I", 100) + b"K" + tup("1"), "expected 'N' at byte 5, got 'K'"),
    (b"D" + struct.pack(">I", 100) + b"N" + tup("1"), "expected 'K' or 'O' at byte 5, got 'N'"),
    (b"I\x00\x00", "truncated"),
])
def test_fast_path_rejects_malformed_row_changes(data, problem):
    """The fast path validates everything it reads and fails with PgOutputError, never IndexError."""
    with pytest.raises(PgOutputError, match=problem):
        metric_ids_of(data, cache())


def test_lsn_text_is_validated():
    for bad in ("", "16B6C50", "0/", "x/1", "0/123456789", "1/2/3"):
        with pytest.raises(PgOutputError, match="not an LSN"):
            parse_lsn(bad)
    with pytest.raises(PgOutputError, match="outside the uint64 range"):
        format_lsn(-1)
