"""The store's contract, on SQLite and PostgreSQL: atomic appends, gap-free chains, one-time nonces."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.ext.asyncio import create_async_engine

from crypto import ca
from schemas.events import EventRecord, NewEvent, stream_positions
from schemas.time import iso
from server.audit.chain import GENESIS, event_hash
from server.store import (
    AlreadyExists,
    BadBlobId,
    BlobStore,
    BlobTooLarge,
    NotFound,
    Store,
    StoreUnavailable,
    VersionConflict,
    account_id,
    open_store,
)
from server.store.db import MIGRATIONS, database_url
from server.store.models import Base, Event
from tests.support.servers import Postgres

T0 = datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
SHANGHAI = timezone(timedelta(hours=8))


def ev(type_: str = "noted", **payload: object) -> NewEvent:
    return NewEvent(type=type_, actor="host:1", audience=["all"], payload=payload)


async def new_session(db: Store, session_id: str = "s1", events: int = 1) -> list[EventRecord]:
    return await db.create_session(
        session_id,
        lot_id=None,
        kind="opening",
        status="draft",
        snapshot={"status": "draft"},
        next_due=None,
        events=[ev("created", n=i) for i in range(events)],
        at=T0,
    )


async def append(db: Store, version: int, *events: NewEvent, **changes: object) -> list:
    return await db.append(
        "s1",
        expected_version=version,
        events=list(events),
        at=T0 + timedelta(seconds=version),
        snapshot=changes.get("snapshot", {"v": version + len(events)}),
        status=str(changes.get("status", "draft")),
        next_due=changes.get("next_due"),  # type: ignore[arg-type]
    )


def assert_chained(records: list[EventRecord]) -> None:
    prev = GENESIS
    for seq, record in enumerate(records, start=1):
        assert record.seq == seq
        assert record.prev_hash == prev
        assert record.hash == event_hash(prev, record.model_dump())
        prev = record.hash


# --- opening and migrating -------------------------------------------------------------------


def test_postgres_urls_are_rewritten_to_asyncpg(tmp_path: Path) -> None:
    assert database_url("postgres://u@h/db", tmp_path) == "postgresql+asyncpg://u@h/db"
    assert database_url("postgresql://u@h/db", tmp_path) == "postgresql+asyncpg://u@h/db"
    assert database_url(None, tmp_path) == f"sqlite+aiosqlite:///{tmp_path / 'bidbridge.db'}"


async def test_default_store_is_sqlite_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    default = await open_store(None, data_dir)
    try:
        assert default.dialect == "sqlite"
        assert (data_dir / "bidbridge.db").is_file()
        async with default.engine.connect() as conn:
            assert await conn.scalar(sa.text("PRAGMA journal_mode")) == "wal"
            assert await conn.scalar(sa.text("PRAGMA foreign_keys")) == 1
            assert await conn.scalar(sa.text("PRAGMA busy_timeout")) == 30000
        assert default.blobs.root == data_dir / "blobs"
    finally:
        await default.close()


def _head() -> str:
    """The newest migration's revision, read from the migrations folder."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from server.store.db import MIGRATIONS

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


async def test_migrations_run_twice_is_harmless(store_url: str, tmp_path: Path) -> None:
    first = await open_store(store_url, tmp_path)
    try:
        await first.add_project("P1", "道路工程", "某市交通局", "11350100000000000X")
    finally:
        await first.close()
    again = await open_store(store_url, tmp_path)
    try:
        assert again.dialect == ("sqlite" if store_url.startswith("sqlite") else "postgresql")
        assert (await again.get_project("P1")) is not None
        async with again.engine.connect() as conn:
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        assert version == _head()
    finally:
        await again.close()


async def test_models_match_migrations(store: Store) -> None:
    def diff(connection: sa.Connection) -> list:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


@pytest.mark.parametrize(
    "url",
    ["sqlite+aiosqlite:////nonexistent/folder/bidbridge.db", "postgresql://postgres@127.0.0.1:1/x"],
    ids=["sqlite", "postgresql"],
)
async def test_unreachable_database_is_store_unavailable(url: str, tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(url, tmp_path)
    assert caught.value.code == "STORE_UNAVAILABLE"
    assert "数据库" in caught.value.zh and "database" in caught.value.en


async def test_lost_database_is_store_unavailable(tmp_path: Path) -> None:
    engine = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:1/gone")
    cut_off = Store(engine, BlobStore(tmp_path / "blobs"))
    try:
        with pytest.raises(StoreUnavailable):
            await cut_off.get_company("91350100M000100Y48")
        with pytest.raises(StoreUnavailable):
            await cut_off.consume_challenge("n1", T0)
    finally:
        await cut_off.close()


async def test_database_shutting_down_is_store_unavailable(tmp_path: Path) -> None:
    """A PostgreSQL of the test's own in a smart shutdown refuses new connections ("the
    database system is shutting down") while an open session keeps it up. A store that needs a
    new connection then answers STORE_UNAVAILABLE, not an internal error (SQLAlchemy reports
    that refusal as a plain DBAPIError)."""
    pg = Postgres(tmp_path / "pg")
    pg.init()
    pg.start()
    try:
        await (await open_store(pg.url, tmp_path / "data")).close()  # the tables exist
        holder = await asyncpg.connect(pg.url)  # keeps the smart shutdown waiting
        try:
            pg.signal(signal.SIGTERM)
            for _ in range(100):
                try:
                    await (await asyncpg.connect(pg.url)).close()
                except asyncpg.CannotConnectNowError:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("PostgreSQL kept accepting connections after a smart shutdown")
            engine = create_async_engine(database_url(pg.url, tmp_path), pool_pre_ping=True)
            store = Store(engine, BlobStore(tmp_path / "blobs"))
            try:
                with pytest.raises(StoreUnavailable) as caught:
                    await store.get_company("91350100M000100Y48")
                assert "shutting down" in str(caught.value)
            finally:
                await store.close()
        finally:
            await holder.close()
    finally:
        pg.remove()


# --- registry --------------------------------------------------------------------------------


async def test_company_is_registered_once(store: Store) -> None:
    code = "91350100M000100Y48"
    row = await store.add_company(code, "甲建设工程有限公司", "SIGN PEM", "ENC PEM", T0)
    assert await store.get_company(code) == row
    assert await store.list_companies() == [row]
    with pytest.raises(AlreadyExists) as caught:
        await store.add_company(code, "冒名公司", "X", "Y", T0)
    assert caught.value.code == "ALREADY_EXISTS"
    assert (await store.get_company(code)).name == "甲建设工程有限公司"  # type: ignore[union-attr]
    assert await store.get_company("nope") is None


async def test_account_id_is_the_certificate_fingerprint(store: Store) -> None:
    cert = ca.create_root_ca("监管 张三", key_type="ec-p256").certificate
    pem = cert.public_bytes(Encoding.PEM).decode()
    account = await store.add_account("supervisor", "张三", pem, T0.astimezone(SHANGHAI))
    assert account.id == hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()[:32]
    assert account.id == account_id(pem)
    stored = await store.get_account(account.id)
    assert stored is not None and stored.created_at == T0 and stored.created_at.tzinfo == UTC
    assert await store.list_accounts("supervisor") == [stored]
    assert await store.list_accounts("host") == []
    with pytest.raises(AlreadyExists):
        await store.add_account("host", "李四", pem, T0)


async def test_lot_belongs_to_an_existing_project(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.add_lot("P1", "01", "一标段")
    await store.add_project("P1", "道路工程", "某市交通局", "11350100000000000X")
    lot = await store.add_lot("P1", "01", "一标段")
    assert lot.id == "P1/01"
    assert await store.get_lot("P1/01") == lot
    with pytest.raises(AlreadyExists):
        await store.add_lot("P1", "01", "again")


# --- sessions and the event log --------------------------------------------------------------


async def test_create_session_chains_first_events_from_genesis(store: Store) -> None:
    records = await new_session(store, events=2)
    assert_chained(records)
    assert records[0].at == iso(T0)
    session = await store.load_session("s1")
    assert session is not None
    assert (session.version, session.status, session.snapshot) == (2, "draft", {"status": "draft"})
    assert session.created_at == T0
    assert await store.events_after("s1", 0) == records


async def test_duplicate_session_is_refused_and_changes_nothing(store: Store) -> None:
    first = await new_session(store)
    with pytest.raises(AlreadyExists):
        await new_session(store, events=3)
    assert await store.events_after("s1", 0) == first
    assert (await store.load_session("s1")).version == 1  # type: ignore[union-attr]


async def test_session_of_unknown_lot_is_refused(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.create_session(
            "s1", lot_id="P9/01", kind="opening", status="draft", snapshot={},
            next_due=None, events=[], at=T0,
        )  # fmt: skip
    assert await store.load_session("s1") is None


async def test_append_is_compare_and_set_on_version(store: Store) -> None:
    await new_session(store)
    added = await append(store, 1, ev("published"), status="published")
    assert [r.seq for r in added] == [2]
    with pytest.raises(VersionConflict) as caught:
        await append(store, 1, ev("published again"))
    assert (caught.value.code, caught.value.expected, caught.value.actual) == (
        "VERSION_CONFLICT", 1, 2,
    )  # fmt: skip
    session = await store.load_session("s1")
    assert session is not None and (session.version, session.status) == (2, "published")


async def test_seq_is_gap_free_and_chained(store: Store) -> None:
    await new_session(store)
    await append(store, 1, ev("a", 金额_fen=12_800_000_000), ev("b", text="异议：报价有误"))
    await append(store, 3, ev("c"))
    records = await store.events_after("s1", 0)
    assert [r.type for r in records] == ["created", "a", "b", "c"]
    assert_chained(records)
    assert records[1].payload == {"金额_fen": 12_800_000_000}
    assert await store.events_after("s1", 1, limit=2) == records[1:3]
    assert await store.events_after("s1", 4) == []
    assert await store.last_event("s1") == records[-1]
    assert await store.last_event("nobody") is None


async def test_failed_append_leaves_nothing_behind(store: Store) -> None:
    await new_session(store)
    # A stray row where the second new event must go makes the insert fail after the UPDATE.
    stray = {"session_id": "s1", "seq": 3, "at": iso(T0), "type": "x", "actor": "x",
             "audience": [], "payload": {}, "prev_hash": GENESIS, "hash": GENESIS}  # fmt: skip
    async with store.engine.begin() as conn:
        await conn.execute(sa.insert(Event), [stray])
    with pytest.raises(sa.exc.IntegrityError):
        await append(store, 1, ev("a"), ev("b"), status="published", snapshot={"new": True})
    session = await store.load_session("s1")
    assert session is not None
    assert (session.version, session.status, session.snapshot) == (1, "draft", {"status": "draft"})
    assert [r.seq for r in await store.events_after("s1", 0)] == [1, 3]


async def test_append_with_no_events_updates_state_only(store: Store) -> None:
    await new_session(store)
    due = T0 + timedelta(minutes=30)
    assert await append(store, 1, snapshot={"paused": True}, next_due=due) == []
    session = await store.load_session("s1")
    assert session is not None
    assert (session.version, session.snapshot, session.next_due) == (1, {"paused": True}, due)
    with pytest.raises(VersionConflict):
        await append(store, 0)


async def test_append_to_unknown_session_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await append(store, 0, ev())


async def test_concurrent_appends_one_wins(store: Store) -> None:
    await new_session(store)
    results = await asyncio.gather(
        append(store, 1, ev("left"), ev("left 2")),
        append(store, 1, ev("right")),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, list)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert isinstance(losers[0], VersionConflict)
    records = await store.events_after("s1", 0)
    assert records[1:] == winners[0]
    assert_chained(records)
    assert (await store.load_session("s1")).version == len(records)  # type: ignore[union-attr]


async def test_due_sessions_are_found_by_deadline(store: Store) -> None:
    assert await store.next_due_at() is None
    for name, minutes in (("late", 60), ("soon", 10), ("none", None)):
        await store.create_session(
            name, lot_id=None, kind="opening", status="published", snapshot={},
            next_due=None if minutes is None else (T0 + timedelta(minutes=minutes)).astimezone(SHANGHAI),
            events=[], at=T0,
        )  # fmt: skip
    assert await store.next_due_at() == T0 + timedelta(minutes=10)
    assert await store.due_sessions(T0) == []
    assert await store.due_sessions(T0 + timedelta(minutes=10)) == ["soon"]
    assert await store.due_sessions(T0 + timedelta(hours=2)) == ["soon", "late"]
    soon = await store.load_session("soon")
    assert soon is not None and soon.next_due is not None and soon.next_due.tzinfo == UTC


async def test_sessions_are_listed_by_kind(store: Store) -> None:
    await new_session(store, "o1")
    await store.create_session(
        "e1", lot_id=None, kind="evaluation", status="draft", snapshot={}, next_due=None,
        events=[], at=T0 + timedelta(seconds=1),
    )  # fmt: skip
    assert [s.id for s in await store.list_sessions()] == ["o1", "e1"]
    assert [s.id for s in await store.list_sessions("evaluation")] == ["e1"]
    assert (await store.load_session("e1")).version == 0  # type: ignore[union-attr]


# --- login challenges ------------------------------------------------------------------------


async def test_challenge_can_be_consumed_once(store: Store) -> None:
    await store.add_challenge("n1", T0 + timedelta(minutes=5))
    tries = await asyncio.gather(*(store.consume_challenge("n1", T0) for _ in range(5)))
    assert sorted(tries) == [False] * 4 + [True]
    assert await store.consume_challenge("n1", T0) is False
    assert await store.consume_challenge("unknown", T0) is False
    with pytest.raises(AlreadyExists):
        await store.add_challenge("n1", T0 + timedelta(minutes=5))


async def test_expired_challenge_is_refused(store: Store) -> None:
    expires = T0 + timedelta(minutes=5)
    await store.add_challenge("old", expires)
    await store.add_challenge("fresh", expires + timedelta(minutes=1))
    assert await store.consume_challenge("old", expires) is False
    assert await store.purge_challenges(expires) == 1
    assert await store.consume_challenge("fresh", expires) is True


# --- secrets ---------------------------------------------------------------------------------


async def test_bid_key_is_kept_once(store: Store) -> None:
    await store.put_bid_key("s1", "a" * 64, "00ff" * 8)
    await store.put_bid_key("s1", "a" * 64, "00ff" * 8)
    await store.put_bid_key("s1", "b" * 64, "11ee" * 8)
    await store.put_bid_key("s2", "a" * 64, "22dd" * 8)
    assert await store.bid_keys("s1") == {"a" * 64: "00ff" * 8, "b" * 64: "11ee" * 8}
    with pytest.raises(AlreadyExists):
        await store.put_bid_key("s1", "a" * 64, "ffff" * 8)
    assert (await store.bid_keys("s1"))["a" * 64] == "00ff" * 8


async def test_share_is_replaced_and_dropped(store: Store) -> None:
    await store.put_share("r1", "host", '{"x": 1}')
    await store.put_share("r1", "host", '{"x": 2}')
    await store.put_share("r1", "supervisor", '{"x": 3}')
    await store.put_share("r2", "host", '{"x": 4}')
    assert await store.shares("r1") == {"host": '{"x": 2}', "supervisor": '{"x": 3}'}
    assert await store.drop_shares("r1") == 2
    assert await store.shares("r1") == {}
    assert await store.shares("r2") == {"host": '{"x": 4}'}


# --- blobs -----------------------------------------------------------------------------------


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def leftovers(root: Path) -> list[Path]:
    return [p for p in (root / "tmp").iterdir()] if (root / "tmp").exists() else []


async def test_blob_is_stored_under_its_sha256(store: Store) -> None:
    data = b"sealed envelope " * 1000
    sha = hashlib.sha256(data).hexdigest()
    staged = await store.blobs.receive(chunks_of(data[:7], data[7:]), limit=len(data))
    assert (staged.sha256, staged.size) == (sha, len(data))
    assert not store.blobs.has(sha)  # held apart until the caller has recorded it
    blob = await store.blobs.keep(staged)
    assert (blob.sha256, blob.size) == (sha, len(data))
    assert blob.path == store.blobs.root / sha[:2] / sha == store.blobs.path(sha)
    assert store.blobs.has(sha)
    with store.blobs.open(sha) as handle:
        assert handle.read() == data
    again = await store.blobs.put_bytes(data)
    assert again == blob
    assert leftovers(store.blobs.root) == []


async def test_blob_over_limit_leaves_no_file(store: Store) -> None:
    with pytest.raises(BlobTooLarge) as caught:
        await store.blobs.receive(chunks_of(b"x" * 10, b"y"), limit=10)
    assert caught.value.code == "UPLOAD_TOO_LARGE" and caught.value.limit == 10
    assert leftovers(store.blobs.root) == []
    assert not store.blobs.has(hashlib.sha256(b"x" * 10 + b"y").hexdigest())


async def test_cancelled_upload_leaves_no_file(store: Store) -> None:
    started = asyncio.Event()

    async def stalling() -> AsyncIterator[bytes]:
        yield b"first part"
        started.set()
        await asyncio.sleep(3600)
        yield b"never"

    task = asyncio.create_task(store.blobs.receive(stalling(), limit=1 << 20))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(store.blobs.root) == []


async def test_local_file_is_copied_in(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "bid.p7m"
    source.write_bytes(bytes(range(256)) * 5000)
    blob = await store.blobs.put_file(source)
    assert blob.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert blob.path.read_bytes() == source.read_bytes()


async def test_blob_id_is_checked_before_touching_disk(store: Store) -> None:
    for bad in ("../../etc/passwd", "A" * 64, "a" * 63, ""):
        with pytest.raises(BadBlobId):
            store.blobs.path(bad)
        with pytest.raises(BadBlobId):
            store.blobs.has(bad)
    with pytest.raises(NotFound):
        store.blobs.path("0" * 64)


async def test_rule_04_existing_logs_are_numbered_in_their_streams_by_the_migration(
    tmp_path: Path,
) -> None:
    """Migration 0006 numbers a log recorded before it exactly as new events are numbered."""
    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    audiences = [["all"], ["bidder:A"], ["staff"], ["all"], ["bidder:A", "staff"], ["platform"]]
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.set_main_option("path_separator", "os")
        config.attributes["connection"] = conn
        command.upgrade(config, "0005")
        conn.execute(
            sa.text(
                "INSERT INTO sessions (id, lot_id, kind, status, version, snapshot, next_due,"
                " created_at) VALUES ('s1', NULL, 'opening', 'draft', :v, '{}', NULL,"
                " '2026-01-01 00:00:00')"
            ),
            {"v": len(audiences)},
        )
        for seq, audience in enumerate(audiences, start=1):
            conn.execute(
                sa.text(
                    "INSERT INTO events (session_id, seq, at, type, actor, audience, payload,"
                    " prev_hash, hash) VALUES ('s1', :seq, 'x', 't', 'a', :aud, '{}', :h, :h)"
                ),
                {"seq": seq, "aud": json.dumps(audience), "h": "0" * 64},
            )
    engine.dispose()
    store = await open_store(f"sqlite+aiosqlite:///{path}", tmp_path)
    try:
        expected, _ = stream_positions({}, audiences)
        assert [r.pos for r in await store.events_after("s1", 0)] == expected
        heads = await store.stream_heads("s1", {"staff", "bidder:A"})
        assert heads == {"all": 2, "bidder:A": 2, "staff": 2}
        shown = await store.events_for("s1", {"bidder:A"}, {"all": 1, "bidder:A": 1})
        assert [r.seq for r in shown] == [4, 5]
    finally:
        await store.close()
