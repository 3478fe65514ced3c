"""The one command path (DESIGN.md section 3): load -> domain decides -> store appends -> publish.

Everything an opening or an evaluation does goes through :meth:`SessionService.execute`: the
session's state machine (its :class:`Machine`, chosen by the session's kind) decides from the
stored state, the events (with a signed checkpoint when the status changed) are appended in one
compare-and-set transaction, and only then are they published.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.events import PLATFORM, EventRecord, NewEvent
from server.audit.chain import GENESIS, link_events
from server.clock import Clock
from server.domain import opening as op
from server.domain.machine import Machine
from server.domain.sessions import MACHINES
from server.identity import ServerIdentity
from server.store import NotFound, Store, VersionConflict

log = logging.getLogger(__name__)

Publisher = Callable[[str, list[EventRecord]], Awaitable[None]]


@dataclass
class Loaded:
    state: Any
    version: int
    head_hash: str
    machine: Machine


def snapshot_of(state: Any, head_hash: str) -> dict[str, Any]:
    return {"state": state.model_dump(mode="json"), "head_hash": head_hash}


class SessionService:
    """Runs commands against sessions of every kind; the only writer of their event logs."""

    def __init__(
        self, store: Store, clock: Clock, identity: ServerIdentity, publish: Publisher
    ) -> None:
        self.store = store
        self.clock = clock
        self.identity = identity
        self.publish = publish
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_due_changed: Callable[[], None] = lambda: None

    def lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    async def load(self, session_id: str, kind: str | None = "opening") -> Loaded | None:
        """The session's state; None when it does not exist or is not of ``kind``."""
        row = await self.store.load_session(session_id)
        if row is None or (kind is not None and row.kind != kind) or row.kind not in MACHINES:
            return None
        machine = MACHINES[row.kind]
        state = machine.state.model_validate(row.snapshot["state"])
        return Loaded(state, row.version, row.snapshot["head_hash"], machine)

    async def create(
        self, state: Any, actor: Any, extra: dict[str, Any], kind: str = "opening"
    ) -> list[EventRecord]:
        now = self.clock.now()
        machine = MACHINES[kind]
        first = NewEvent(
            type="session_created",
            actor=f"{actor.role}:{actor.id}",
            audience=op.ALL,
            payload={
                "kind": kind,
                "lot_id": state.lot_id,
                "title": state.title,
                "timetable": state.timetable.model_dump(mode="json"),
                **extra,
            },
        )
        if not machine.kind_in_first_event:
            del first.payload["kind"]
        records = link_events(state.session_id, 1, GENESIS, now, [first])
        records = await self.store.create_session(
            state.session_id,
            lot_id=state.lot_id,
            kind=kind,
            status=state.status,
            snapshot=snapshot_of(state, records[-1].hash),
            next_due=machine.next_due(state),
            events=[first],
            at=now,
        )
        await self.publish(state.session_id, records)
        return records

    async def execute(
        self, session_id: str, cmd: Any, *, now: datetime | None = None
    ) -> list[EventRecord]:
        """Decide and record ``cmd``; raises a Refusal (nothing stored) or returns the records."""
        for attempt in range(5):
            async with self.lock(session_id):
                loaded = await self.load(session_id, kind=None)
                if loaded is None:
                    raise NotFound(session_id)
                m = loaded.machine
                at = now or self.clock.now()
                events = m.decide(loaded.state, cmd, at)
                if not events:
                    return []
                state = loaded.state
                for e in events:
                    state = m.evolve(state, e, at)
                linked = link_events(session_id, loaded.version + 1, loaded.head_hash, at, events)
                if state.status != loaded.state.status:
                    checkpoint = self._checkpoint(session_id, linked[-1], state, at)
                    events = [*events, checkpoint]
                    linked += link_events(
                        session_id, linked[-1].seq + 1, linked[-1].hash, at, [checkpoint]
                    )
                try:
                    records = await self.store.append(
                        session_id,
                        expected_version=loaded.version,
                        events=events,
                        at=at,
                        snapshot=snapshot_of(state, linked[-1].hash),
                        status=state.status,
                        next_due=m.next_due(state),
                    )
                except VersionConflict:
                    log.info("version conflict on %s (attempt %d), retrying", session_id, attempt)
                    continue
                # Published after the commit and under the lock, so live order is seq order.
                await self.publish(session_id, records)
            if m.next_due(state) != m.next_due(loaded.state):
                self.on_due_changed()
            return records
        raise VersionConflict(session_id)

    async def tick(self, session_id: str) -> list[EventRecord]:
        row = await self.store.load_session(session_id)
        if row is None or row.kind not in MACHINES:
            return []
        return await self.execute(session_id, MACHINES[row.kind].tick())

    def _checkpoint(self, session_id: str, last: EventRecord, state: Any, at: datetime) -> NewEvent:
        """A server-signed checkpoint over the last event of this state change (section 8), kept in
        the log and the archive; no viewer is shown it (docs/positions.md)."""
        body = {
            "session_id": session_id,
            "seq": last.seq,
            "hash": last.hash,
            "status": state.status,
        }
        return NewEvent(
            type="checkpoint",
            actor="server:server",
            # For the record only: its seq counts every event, hidden ones too (rule 4).
            audience=[PLATFORM],
            payload={
                "seq": last.seq,
                "hash": last.hash,
                "status": state.status,
                "signature": self.identity.sign_json(body, at),
            },
        )


OpeningService = SessionService  # the name the opening hall's code grew up with


def cek_fingerprint(cek: bytes) -> str:
    return hashlib.sha256(cek).hexdigest()
