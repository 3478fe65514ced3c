"""The sessions and their event logs: append-only, hash-chained, numbered in audience streams.

Part of :class:`server.store.db.Store` (this is its mixin): creating a session, the
compare-and-set append, and the reads the hall, the fan-out and the API make of a log. Every
event gets its ``seq`` (internal, hashed) and its positions in its audience streams (what viewers
are shown, rule 4, docs/positions.md).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.events import ALL, EventRecord, NewEvent, stream_positions
from server.audit.chain import GENESIS, link_events
from server.store.errors import AlreadyExists, NotFound, StoreError, VersionConflict
from server.store.models import Base, Event, EventStream, SessionState


@dataclass(frozen=True)
class SessionRow:
    id: str
    lot_id: str | None
    kind: str
    status: str
    version: int
    snapshot: dict[str, Any]
    next_due: datetime | None
    created_at: datetime


def _columns(model: type[Base]) -> list[sa.ColumnElement[Any]]:
    return list(model.__table__.columns)


def _row(cls: type[Any], row: sa.Row[Any]) -> Any:
    return cls(**row._asdict())


def _event(row: sa.Row[Any]) -> EventRecord:
    return EventRecord.model_validate(row._asdict())  # ``pos`` is a column, read in too


class EventLog:
    """The event-log half of the store (mixed into :class:`server.store.db.Store`)."""

    _tx: Any  # Store._tx: one transaction, retried and mapped to store errors
    _insert: Any  # Store._insert: the dialect's INSERT (with ON CONFLICT)
    get_lot: Any  # Store.get_lot

    async def create_session(
        self,
        session_id: str,
        *,
        lot_id: str | None,
        kind: str,
        status: str,
        snapshot: dict[str, Any],
        next_due: datetime | None,
        events: Sequence[NewEvent],
        at: datetime,
    ) -> list[EventRecord]:
        """Insert a session with its first events, all or nothing."""
        if lot_id is not None and await self.get_lot(lot_id) is None:
            raise NotFound(f"lot {lot_id}")
        records = link_events(session_id, 1, GENESIS, at, events)
        async with self._tx() as conn:
            values = {
                "id": session_id,
                "lot_id": lot_id,
                "kind": kind,
                "status": status,
                "version": len(records),
                "snapshot": snapshot,
                "next_due": next_due,
                "created_at": at,
            }
            result = await conn.execute(
                self._insert(SessionState).values(**values).on_conflict_do_nothing()
            )
            if result.rowcount != 1:
                raise AlreadyExists(f"session {session_id}")
            if records:
                records = await self._insert_events(conn, session_id, records)
        return records

    async def load_session(self, session_id: str) -> SessionRow | None:
        async with self._tx() as conn:
            query = sa.select(*_columns(SessionState)).where(SessionState.id == session_id)
            row = (await conn.execute(query)).first()
        return _row(SessionRow, row) if row else None

    async def list_sessions(self, kind: str | None = None) -> list[SessionRow]:
        query = sa.select(*_columns(SessionState)).order_by(
            SessionState.created_at, SessionState.id
        )
        if kind is not None:
            query = query.where(SessionState.kind == kind)
        async with self._tx() as conn:
            return [_row(SessionRow, r) for r in await conn.execute(query)]

    async def append(
        self,
        session_id: str,
        *,
        expected_version: int,
        events: Sequence[NewEvent],
        at: datetime,
        snapshot: dict[str, Any],
        status: str,
        next_due: datetime | None,
    ) -> list[EventRecord]:
        """Compare-and-set the session on ``expected_version`` and chain ``events`` after it.

        All or nothing: VersionConflict if another append got there first. With no events only
        the snapshot, status and deadline change (the version stays, still checked).
        """
        async with self._tx() as conn:
            # The UPDATE comes first: on SQLite it takes the write lock before anything is read,
            # on PostgreSQL it locks the row, so the second of two racing appends sees the new
            # version and matches no row.
            update = (
                sa.update(SessionState)
                .where(SessionState.id == session_id, SessionState.version == expected_version)
                .values(
                    version=expected_version + len(events),
                    snapshot=snapshot,
                    status=status,
                    next_due=next_due,
                )
            )
            if (await conn.execute(update)).rowcount != 1:
                actual = await conn.scalar(
                    sa.select(SessionState.version).where(SessionState.id == session_id)
                )
                if actual is None:
                    raise NotFound(f"session {session_id}")
                raise VersionConflict(session_id, expected_version, actual)
            if not events:
                return []
            prev_hash: str | None = GENESIS
            if expected_version > 0:
                prev_hash = await conn.scalar(
                    sa.select(Event.hash).where(
                        Event.session_id == session_id, Event.seq == expected_version
                    )
                )
            if prev_hash is None:
                raise StoreError(f"session {session_id}: event {expected_version} is missing")
            records = link_events(session_id, expected_version + 1, prev_hash, at, events)
            return await self._insert_events(conn, session_id, records)

    async def _insert_events(
        self, conn: AsyncConnection, session_id: str, records: list[EventRecord]
    ) -> list[EventRecord]:
        """Insert linked records with their positions in their audience streams (rule 4,
        docs/positions.md), numbered after the streams' heads. Runs inside the append's
        transaction, after its compare-and-set, so two appends never number the same place."""
        tags = {ALL, *(t for r in records for t in r.audience)}
        heads = await self._stream_heads(conn, session_id, tags)
        positions, _ = stream_positions(heads, [r.audience for r in records])
        records = [r.model_copy(update={"pos": p}) for r, p in zip(records, positions, strict=True)]
        await conn.execute(sa.insert(Event), [{**r.model_dump(), "pos": r.pos} for r in records])
        members = [
            {"session_id": session_id, "tag": t, "n": r.pos[t], "seq": r.seq}
            for r in records
            for t in dict.fromkeys(r.audience)
        ]
        if members:
            await conn.execute(sa.insert(EventStream), members)
        return records

    @staticmethod
    async def _stream_heads(
        conn: AsyncConnection, session_id: str, tags: Collection[str], upto: int | None = None
    ) -> dict[str, int]:
        query = (
            sa.select(EventStream.tag, sa.func.max(EventStream.n))
            .where(EventStream.session_id == session_id, EventStream.tag.in_(sorted(tags)))
            .group_by(EventStream.tag)
        )
        if upto is not None:
            query = query.where(EventStream.seq <= upto)
        return {row[0]: int(row[1]) for row in await conn.execute(query)}

    async def stream_heads(
        self, session_id: str, tags: Collection[str], upto: int | None = None
    ) -> dict[str, int]:
        """A viewer's place in the log: the last number of each of its streams (``all``
        included, 0 for a stream with no event yet) at the end, or as of ``seq`` ``upto`` (the
        version a view was read at, so the view and its positions agree)."""
        streams = {ALL, *tags}
        async with self._tx() as conn:
            heads = await self._stream_heads(conn, session_id, streams, upto)
        return {t: heads.get(t, 0) for t in sorted(streams)}

    async def stream_heads_of(
        self, versions: Mapping[str, int], tags: Collection[str]
    ) -> dict[str, dict[str, int]]:
        """:meth:`stream_heads` of several sessions (session -> the version read) in one query
        (the supervisor's list)."""
        streams = sorted({ALL, *tags})
        out = {sid: dict.fromkeys(streams, 0) for sid in versions}
        if not versions:
            return out
        query = (
            sa.select(EventStream.session_id, EventStream.tag, sa.func.max(EventStream.n))
            .where(
                EventStream.tag.in_(streams),
                sa.or_(
                    *(
                        sa.and_(EventStream.session_id == sid, EventStream.seq <= version)
                        for sid, version in versions.items()
                    )
                ),
            )
            .group_by(EventStream.session_id, EventStream.tag)
        )
        async with self._tx() as conn:
            for sid, tag, n in await conn.execute(query):
                out[sid][tag] = int(n)
        return out

    async def events_for(
        self,
        session_id: str,
        tags: Collection[str],
        cursor: Mapping[str, int],
        *,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[EventRecord]:
        """The events a viewer following the streams ``{all} | tags`` has not had after its
        ``cursor`` (stream -> n; a missing stream is 0), in log order. ``after_seq`` pages on
        (internal: the caller passes the last page's last ``seq``, never a viewer)."""
        streams = sorted({ALL, *tags})
        newer = sa.or_(
            *(sa.and_(EventStream.tag == t, EventStream.n > int(cursor.get(t, 0))) for t in streams)
        )
        members = sa.select(EventStream.seq).where(
            EventStream.session_id == session_id, EventStream.seq > after_seq, newer
        )
        query = (
            sa.select(*_columns(Event))
            .where(Event.session_id == session_id, Event.seq.in_(members))
            .order_by(Event.seq)
            .limit(limit)
        )
        async with self._tx() as conn:
            return [_event(r) for r in await conn.execute(query)]

    async def events_after(
        self, session_id: str, after_seq: int, limit: int | None = None
    ) -> list[EventRecord]:
        query = (
            sa.select(*_columns(Event))
            .where(Event.session_id == session_id, Event.seq > after_seq)
            .order_by(Event.seq)
            .limit(limit)
        )
        async with self._tx() as conn:
            return [_event(r) for r in await conn.execute(query)]

    async def last_event(self, session_id: str) -> EventRecord | None:
        query = (
            sa.select(*_columns(Event))
            .where(Event.session_id == session_id)
            .order_by(Event.seq.desc())
            .limit(1)
        )
        async with self._tx() as conn:
            row = (await conn.execute(query)).first()
        return _event(row) if row else None

    async def due_sessions(self, now: datetime) -> list[str]:
        """Sessions whose next deadline has come, earliest first."""
        query = (
            sa.select(SessionState.id)
            .where(SessionState.next_due <= now)
            .order_by(SessionState.next_due, SessionState.id)
        )
        async with self._tx() as conn:
            return list((await conn.scalars(query)).all())

    async def next_due_at(self) -> datetime | None:
        """The earliest deadline of any session, for the scheduler's sleep."""
        async with self._tx() as conn:
            return await conn.scalar(sa.select(sa.func.min(SessionState.next_due)))

    async def heads(self, session_ids: Sequence[str]) -> dict[str, int]:
        """The last ``seq`` of each session (its version), for fan-out to catch up."""
        if not session_ids:
            return {}
        query = sa.select(SessionState.id, SessionState.version).where(
            SessionState.id.in_(list(session_ids))
        )
        async with self._tx() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

    async def names_blob(self, sha256: str) -> bool:
        """Whether any event of any session names blob ``sha256`` (in its payload): the test
        the blob collector applies to a staged upload before placing or removing it."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            return False
        query = (
            sa.select(Event.seq)
            .where(sa.cast(Event.payload, sa.Text).contains(sha256, autoescape=True))
            .limit(1)
        )
        async with self._tx() as conn:
            return (await conn.execute(query)).first() is not None

    # --- login challenges --------------------------------------------------------------------
