"""What several server processes must agree on besides the record: work in flight, presence.

- **Work in flight.** A key sent before the decryption window closed is decrypted even if that
  takes past the instant; the window's transition waits for it (the scheduler's *hold*). With
  several processes the one firing the deadline may not be the one decrypting, so a decryption in
  flight is a short-lived Redis key (``bidbridge:busy:<session>:<bidder>``, 4 s, renewed every
  second while the work runs). A process that dies mid-decryption holds the window for at most
  those 4 s. The same key refuses a second decryption of the same bid on another process.
- **Presence.** Who is connected (a supervisor must be present; a room device's link is up)
  counts connections across processes: each process keeps its counts in its own Redis hash and
  a heartbeat key; a party is present while the sum over live processes is above zero. When a
  process dies, the others notice its heartbeat expire and record the departures it left behind.

Without Redis (one process, the embedded default) the same interface keeps everything in memory.
When Redis is unreachable the process falls back to its own view and logs it: the record stays
right (every transition is a compare-and-set), only the cross-process hold or count is weaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "bidbridge"
BUSY_MS = 4000
RENEW_SECONDS = 1.0
ALIVE_MS = 6000
HEARTBEAT_SECONDS = 2.0
SEP = "\x1f"

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class Busy(Exception):
    """The work is already in flight (here or in another process)."""


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class Coordination:
    def __init__(self, redis_url: str | None = None, instance: str = "local") -> None:
        self.redis_url = redis_url
        self.instance = instance
        self._redis: Any = None
        self._busy: dict[str, set[str]] = {}
        self._presence: dict[tuple[str, str, str], int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self.redis_url:
            return
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(
            self.redis_url, socket_connect_timeout=1, socket_timeout=2, decode_responses=True
        )
        await self._beat()
        self._tasks.append(
            asyncio.get_running_loop().create_task(self._heartbeat(), name="coord-heartbeat")
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._redis is not None:
            with contextlib.suppress(Exception):  # leave cleanly: nobody needs to reap us
                await self._redis.delete(self._presence_key(self.instance), self._alive_key())
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    def _fallback(self, what: str, exc: BaseException) -> None:
        log.warning("Redis unavailable for %s (%s); using this process's own view", what, exc)

    # --- work in flight ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def busy(self, session_id: str, key: str) -> AsyncIterator[None]:
        local = self._busy.setdefault(session_id, set())
        if key in local:
            raise Busy(key)
        local.add(key)
        rkey = f"{PREFIX}:busy:{session_id}:{key}"
        renew: asyncio.Task[None] | None = None
        try:
            if self._redis is not None:
                try:
                    taken = await self._redis.set(rkey, self.instance, nx=True, px=BUSY_MS)
                except Exception as exc:
                    self._fallback("work in flight", exc)
                else:
                    if not taken:
                        raise Busy(key)
                    renew = asyncio.get_running_loop().create_task(self._renew(rkey))
            yield
        finally:
            local.discard(key)
            if renew is not None:
                renew.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await renew
                with contextlib.suppress(Exception):
                    await self._redis.eval(_RELEASE, 1, rkey, self.instance)

    async def _renew(self, rkey: str) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            with contextlib.suppress(Exception):
                await self._redis.pexpire(rkey, BUSY_MS)

    def held_here(self, session_id: str) -> bool:
        return bool(self._busy.get(session_id))

    def any_held_here(self) -> bool:
        return any(self._busy.values())

    async def held(self, session_id: str) -> bool:
        """Is any work on ``session_id`` in flight, in this process or another?"""
        if self.held_here(session_id):
            return True
        if self._redis is None:
            return False
        try:
            pattern = f"{PREFIX}:busy:{_glob_escape(session_id)}:*"
            async for _ in self._redis.scan_iter(match=pattern, count=200):
                return True
        except Exception as exc:
            self._fallback("work in flight", exc)
        return False

    # --- presence ------------------------------------------------------------------------

    def _presence_key(self, instance: str) -> str:
        return f"{PREFIX}:presence:{instance}"

    def _alive_key(self, instance: str | None = None) -> str:
        return f"{PREFIX}:alive:{instance or self.instance}"

    async def joined(self, session_id: str, role: str, party: str) -> int:
        """Count a connection of ``party``; returns the total over all live processes."""
        return await self._count(session_id, role, party, +1)

    async def left(self, session_id: str, role: str, party: str) -> int:
        return await self._count(session_id, role, party, -1)

    async def _count(self, session_id: str, role: str, party: str, delta: int) -> int:
        key = (session_id, role, party)
        mine = max(0, self._presence.get(key, 0) + delta)
        if mine:
            self._presence[key] = mine
        else:
            self._presence.pop(key, None)
        if self._redis is None:
            return mine
        field = SEP.join(key)
        try:
            if mine:
                await self._redis.hset(self._presence_key(self.instance), field, mine)
            else:
                await self._redis.hdel(self._presence_key(self.instance), field)
            return mine + await self._others(field)
        except Exception as exc:
            self._fallback("presence", exc)
            return mine

    async def total(self, session_id: str, role: str, party: str) -> int:
        """Connections of ``party`` in ``session_id`` over all live processes."""
        mine = self._presence.get((session_id, role, party), 0)
        if self._redis is None:
            return mine
        try:
            return mine + await self._others(SEP.join((session_id, role, party)))
        except Exception as exc:
            self._fallback("presence", exc)
            return mine

    async def _live_instances(self) -> tuple[set[str], set[str]]:
        """(live, dead) instances that hold presence counts."""
        live: set[str] = set()
        dead: set[str] = set()
        async for key in self._redis.scan_iter(match=f"{PREFIX}:presence:*", count=200):
            instance = key.split(":", 2)[2]
            if instance == self.instance:
                continue
            (live if await self._redis.exists(self._alive_key(instance)) else dead).add(instance)
        return live, dead

    async def _others(self, field: str) -> int:
        live, _ = await self._live_instances()
        total = 0
        for instance in live:
            value = await self._redis.hget(self._presence_key(instance), field)
            total += int(value or 0)
        return total

    async def reap(self) -> list[tuple[str, str, str]]:
        """Take over the counts of dead processes; returns the parties now absent everywhere."""
        if self._redis is None:
            return []
        gone: list[tuple[str, str, str]] = []
        try:
            _, dead = await self._live_instances()
            for instance in dead:
                taken = f"{PREFIX}:reaping:{self.instance}:{instance}"
                try:
                    await self._redis.rename(self._presence_key(instance), taken)
                except Exception:
                    continue  # another process reaped it first
                fields = await self._redis.hgetall(taken)
                await self._redis.delete(taken)
                for field in fields:
                    session_id, role, party = field.split(SEP, 2)
                    if await self.total(session_id, role, party) == 0:
                        gone.append((session_id, role, party))
        except Exception as exc:
            self._fallback("presence reaping", exc)
        return gone

    async def _beat(self) -> None:
        await self._redis.set(self._alive_key(), "1", px=ALIVE_MS)
        if self._presence:  # a Redis restart loses the hash: put this process's counts back
            mapping = {SEP.join(k): v for k, v in self._presence.items()}
            await self._redis.hset(self._presence_key(self.instance), mapping=mapping)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fallback("heartbeat", exc)
