"""Whole, ordered delivery of committed events to this process's hall connections.

One process or several, the rule is the same: a process emits to its own socket.io rooms only
events it has read from the record (or just committed itself), strictly in ``seq`` order, and
keeps a cursor per session of the last ``seq`` it emitted. An event that would skip a ``seq``
first makes it read the gap from the record. So what a connection sees is the record, in order,
without gaps, whatever the transport between processes did.

Between processes (``BIDBRIDGE_REDIS_URL`` set) Redis carries only a doorbell: "session S has
events up to seq N" on one pub/sub channel. A process that hears it reads the new events from the
shared database and emits them. Pub/sub delivers at most once (a Redis restart drops what is in
flight), so a doorbell may be lost; each process therefore also compares, once a second, its
cursors with the sessions' heads in the database (one query for all sessions it serves) and
catches up from the record. A lost doorbell costs at most that second, never an event. This is
why python-socketio's Redis manager is not used: it would carry the events themselves, and an
event it drops is gone (see README, "Several server processes").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from schemas.events import EventRecord
from server.realtime.tasks import stop_tasks
from server.store import Store

log = logging.getLogger(__name__)

CHANNEL = "bidbridge:events"
SWEEP_SECONDS = 1.0
"""How often a process compares its cursors with the record (bounds the cost of a lost doorbell)."""
READ_PAGE = 500

Emit = Callable[[str, list[EventRecord]], Awaitable[None]]


class Fanout:
    def __init__(
        self,
        store: Store,
        emit: Emit,
        *,
        redis_url: str | None = None,
        instance: str = "",
        serving: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.emit = emit
        self.redis_url = redis_url
        self.instance = instance
        # Does this process still have a connection in the session? (else its cursor is dropped)
        self.serving = serving or (lambda session_id: True)
        self.on_remote: Callable[[str], None] | None = None  # another process changed a session
        self.cursors: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._redis: Any = None
        self._tasks: list[asyncio.Task[None]] = []

    # --- this process's connections ------------------------------------------------------

    async def watch(self, session_id: str) -> None:
        """A connection joined ``session_id``'s rooms: make sure its later events are emitted.

        Called after the connection entered its rooms and before it replays: everything after
        the head read here is emitted live, everything up to it comes with the replay.
        """
        if session_id in self.cursors:
            return
        async with self._lock(session_id):
            if session_id not in self.cursors:
                heads = await self.store.heads([session_id])
                self.cursors[session_id] = heads.get(session_id, 0)

    async def committed(self, session_id: str, records: list[EventRecord]) -> None:
        """Events this process has just committed: emit them here, ring the other processes."""
        if not records:
            return
        if session_id in self.cursors:
            await self._deliver(session_id, records)
        await self._ring(session_id, records[-1].seq)

    async def catch_up(self, session_id: str, head: int) -> None:
        """The record of ``session_id`` reaches ``head``: emit whatever this process has not."""
        if self.cursors.get(session_id, head) < head:
            await self._deliver(session_id, [])

    async def _deliver(self, session_id: str, records: list[EventRecord]) -> None:
        async with self._lock(session_id):
            cursor = self.cursors.get(session_id)
            if cursor is None:
                return
            if not records or records[0].seq > cursor + 1:
                # A gap (or only a doorbell): the record is the source, read it in order.
                records = await self._read_after(session_id, cursor)
            fresh = [r for r in records if r.seq > cursor]
            if not fresh:
                return
            await self.emit(session_id, fresh)
            self.cursors[session_id] = fresh[-1].seq

    async def _read_after(self, session_id: str, cursor: int) -> list[EventRecord]:
        out: list[EventRecord] = []
        while True:
            page = await self.store.events_after(session_id, cursor, limit=READ_PAGE)
            out.extend(page)
            if len(page) < READ_PAGE:
                return out
            cursor = page[-1].seq

    def _lock(self, session_id: str) -> asyncio.Lock:
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        return lock

    async def sweep(self) -> None:
        """Compare every cursor with the record's head; catch up; forget unserved sessions."""
        for session_id in [s for s in self.cursors if not self.serving(s)]:
            if not self._lock(session_id).locked():
                self.cursors.pop(session_id, None)
                self._locks.pop(session_id, None)
        if not self.cursors:
            return
        heads = await self.store.heads(list(self.cursors))
        for session_id, head in heads.items():
            await self.catch_up(session_id, head)

    # --- between processes ---------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._sweeper(), name="fanout-sweep"))
        if self.redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.Redis.from_url(
                self.redis_url, socket_connect_timeout=1, socket_timeout=2
            )
            self._tasks.append(loop.create_task(self._listen(), name="fanout-listen"))

    async def close(self) -> None:
        await stop_tasks(self._tasks)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    async def _ring(self, session_id: str, head: int) -> None:
        if self._redis is None:
            return
        message = json.dumps({"s": session_id, "q": head, "i": self.instance})
        try:
            await self._redis.publish(CHANNEL, message)
        except Exception as exc:  # the commit stands; the sweep carries it to the others
            log.warning(
                "doorbell for %s@%d not sent (%s); the sweep will carry it", session_id, head, exc
            )

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                await self.sweep()  # whatever rang while this process was not listening
                while True:
                    msg = await pubsub.get_message(timeout=5.0)
                    if msg is not None:
                        await self._heard(msg.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("doorbell channel lost (%s); listening again", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _heard(self, data: Any) -> None:
        try:
            bell = json.loads(data)
            session_id, head, instance = str(bell["s"]), int(bell["q"]), str(bell.get("i", ""))
        except (TypeError, ValueError, KeyError):
            log.warning("malformed doorbell ignored")
            return
        if instance == self.instance:
            return
        if self.on_remote is not None:
            self.on_remote(session_id)
        await self.catch_up(session_id, head)

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away for a moment
                log.warning("fan-out sweep failed (%s)", exc)
