"""Time as data: fire due transitions of stored deadlines (Prozorro's ``next_check``).

A transition is a ``Tick`` command through the normal path, i.e. a compare-and-set on the
session's version, so firing twice (or from two processes) is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from server.clock import Clock
from server.realtime.tasks import stop_task
from server.service import SessionService
from server.store import Store

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
"""Longest sleep (in clock seconds) between looks at the store, for deadlines set elsewhere."""


async def _never(session_id: str) -> bool:
    return False


class Scheduler:
    def __init__(self, store: Store, service: SessionService, clock: Clock) -> None:
        self.store = store
        self.service = service
        self.clock = clock
        self.after_tick: Callable[[str], Awaitable[None]] | None = None
        # A session with work in flight that the next transition must not overtake (a key sent
        # before the window closed, still being decrypted): its Tick waits for the next pass.
        self.hold: Callable[[str], Awaitable[bool]] = _never
        self.held = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def fire_due(self) -> int:
        """Fire every transition due now; returns how many sessions changed."""
        changed = 0
        self.held = False
        for session_id in await self.store.due_sessions(self.clock.now()):
            if await self.hold(session_id):
                self.held = True
                continue
            try:
                records = await self.service.tick(session_id)
            except Exception:
                log.exception("tick failed on %s", session_id)
                continue
            if records:
                changed += 1
                if self.after_tick is not None:
                    await self.after_tick(session_id)
        return changed

    async def _run(self) -> None:
        while True:
            try:
                self._wake.clear()
                await self.fire_due()
                if self.held:
                    await asyncio.sleep(0.05)  # real time: in-flight work ends on its own clock
                nxt = await self.store.next_due_at()
                delay = POLL_SECONDS
                if nxt is not None:
                    delay = min(delay, max(0.0, (nxt - self.clock.now()).total_seconds()))
                sleeper = asyncio.ensure_future(self.clock.sleep(delay))
                waker = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    sleeper.cancel()
                    waker.cancel()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler loop error")
                await asyncio.sleep(0.5)
