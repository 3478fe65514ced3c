"""The one clock: injected everywhere outside ``server.domain`` (DESIGN.md section 4)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    #: How many seconds of this clock pass in one real second (1 except in the demo). The
    #: server turns a lifetime on this clock into real seconds for clients (``expires_in``).
    rate: float

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """Real UTC time."""

    rate = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class AcceleratedClock:
    """Time that runs ``factor`` times faster than real time since ``anchor`` (for the demo).

    ``now = anchor + (real now - anchor) * factor``: a restarted process given the same anchor
    and factor continues the same accelerated time line.
    """

    def __init__(self, factor: float, anchor: datetime | None = None) -> None:
        if factor <= 0:
            raise ValueError("factor must be positive")
        self.factor = factor
        self.rate = factor
        self.anchor = anchor or datetime.now(UTC)
        self._anchor_ts = self.anchor.timestamp()

    def now(self) -> datetime:
        elapsed = (time.time() - self._anchor_ts) * self.factor
        return self.anchor + timedelta(seconds=elapsed)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)


class ManualClock:
    """Time that moves only when a test says so; sleepers wake when it passes their instant."""

    rate = 1.0  # it does not run on its own; lifetimes are given to clients as if it did

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def set(self, at: datetime) -> None:
        self._now = at
        self._changed.set()
        self._changed = asyncio.Event()

    def advance(self, seconds: float) -> None:
        self.set(self._now + timedelta(seconds=seconds))

    async def sleep(self, seconds: float) -> None:
        until = self._now + timedelta(seconds=max(0.0, seconds))
        while self._now < until:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=0.05)
            except TimeoutError:
                await asyncio.sleep(0)  # stay responsive to cancellation


def real_seconds(clock: Clock, seconds: float) -> float:
    """``seconds`` of ``clock``'s time, in real seconds (what a client can wait for)."""
    return seconds / clock.rate
