"""What several server processes must agree on besides the record: work in flight, presence.

- **Work in flight.** A key sent before the decryption window closed is decrypted even if that
  takes past the instant; the window's transition waits for it (the scheduler's *hold*). With
  several processes the one firing the deadline may not be the one decrypting, so a decryption in
  flight is a short-lived Redis key (``bidbridge:busy:<session>:<bidder>``, 4 s, renewed every
  second while the work runs). A process that dies mid-decryption holds the window for at most
  those 4 s. The same key refuses a second decryption of the same bid on another process.
- **Presence.** Who is connected (a supervisor must be present; a room device's link is up)
  counts connections across processes: each process keeps its counts in its own Redis hash and
  a heartbeat key (``ALIVE_MS``, renewed every ``HEARTBEAT_SECONDS``), and names itself in a set
  of instances; a party is present while the sum over the processes not yet reaped is above
  zero. When a process dies, the others' reapers notice its heartbeat expire, take its counts
  over and record the departures it left behind, each once. A process that stops with
  connections still counted leaves its counts for the others to reap at once.

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

from server.realtime.tasks import stop_tasks

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

# Other processes' hashes are named from the instances set, not passed as KEYS: one Redis server,
# not a cluster. KEYS: the instances set, our hash, our alive key. ARGV: prefix, our instance,
# field, our count ("": only read), alive ms. Writing our count also marks us alive, so a count
# written after a Redis restart, before our next heartbeat, cannot be taken for a dead process's.
_COUNT = """
local prefix, me, field, mine = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if mine then
  redis.call('set', KEYS[3], '1', 'px', ARGV[5])
  redis.call('sadd', KEYS[1], me)
  if mine > 0 then redis.call('hset', KEYS[2], field, mine) else redis.call('hdel', KEYS[2], field) end
end
local total = 0
for _, instance in ipairs(redis.call('smembers', KEYS[1])) do
  if instance ~= me then
    total = total + tonumber(redis.call('hget', prefix .. ':presence:' .. instance, field) or 0)
  end
end
return total
"""

# KEYS: the instances set. ARGV: prefix. Takes every dead instance's counts (alive key expired)
# and returns the fields no live instance counts any more, each once.
_REAP = """
local prefix = ARGV[1]
local taken = {}
for _, instance in ipairs(redis.call('smembers', KEYS[1])) do
  if redis.call('exists', prefix .. ':alive:' .. instance) == 0 then
    local hash = prefix .. ':presence:' .. instance
    for _, field in ipairs(redis.call('hkeys', hash)) do taken[field] = true end
    redis.call('del', hash)
    redis.call('srem', KEYS[1], instance)
  end
end
local live = redis.call('smembers', KEYS[1])
local gone = {}
for field in pairs(taken) do
  local total = 0
  for _, instance in ipairs(live) do
    total = total + tonumber(redis.call('hget', prefix .. ':presence:' .. instance, field) or 0)
  end
  if total == 0 then table.insert(gone, field) end
end
return gone
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
        await stop_tasks(self._tasks)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                if self._presence:  # connections still counted here: the others reap them now
                    await self._redis.delete(self._alive_key())
                else:  # leave cleanly: nobody needs to reap us
                    async with self._redis.pipeline(transaction=True) as pipe:
                        pipe.delete(self._presence_key(self.instance), self._alive_key())
                        pipe.srem(self._instances_key(), self.instance)
                        await pipe.execute()
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
    #
    # Every presence operation is one Lua script, so Redis runs them one after another: a
    # departure is decided once, by the count that took the last connection away or by the reap
    # that took over the dead process's counts, never by both. A dead process's counts go on
    # counting until a reap takes them (its heartbeat expired), and the reap that takes them
    # decides, in the same step, who is now absent everywhere.

    def _presence_key(self, instance: str) -> str:
        return f"{PREFIX}:presence:{instance}"

    def _alive_key(self, instance: str | None = None) -> str:
        return f"{PREFIX}:alive:{instance or self.instance}"

    def _instances_key(self) -> str:
        return f"{PREFIX}:instances"

    async def joined(self, session_id: str, role: str, party: str) -> int:
        """Count a connection of ``party``; returns the total over all processes not yet reaped."""
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
        try:
            return mine + await self._others(SEP.join(key), mine)
        except Exception as exc:
            self._fallback("presence", exc)
            return mine

    async def total(self, session_id: str, role: str, party: str) -> int:
        """Connections of ``party`` in ``session_id`` over all processes not yet reaped."""
        mine = self._presence.get((session_id, role, party), 0)
        if self._redis is None:
            return mine
        try:
            return mine + await self._others(SEP.join((session_id, role, party)))
        except Exception as exc:
            self._fallback("presence", exc)
            return mine

    async def _others(self, field: str, write: int | None = None) -> int:
        """The other processes' counts of ``field``, after writing ours (``write``) if given."""
        keys = (self._instances_key(), self._presence_key(self.instance), self._alive_key())
        args = (PREFIX, self.instance, field, "" if write is None else write, ALIVE_MS)
        return int(await self._redis.eval(_COUNT, len(keys), *keys, *args))

    async def reap(self) -> list[tuple[str, str, str]]:
        """Take over the counts of dead processes; returns the parties now absent everywhere."""
        if self._redis is None:
            return []
        try:
            fields = await self._redis.eval(_REAP, 1, self._instances_key(), PREFIX)
        except Exception as exc:
            self._fallback("presence reaping", exc)
            return []
        gone: list[tuple[str, str, str]] = []
        for field in sorted(fields):
            session_id, role, party = field.split(SEP, 2)
            # Our own hash may lag behind (Redis restarted since our last heartbeat).
            if not self._presence.get((session_id, role, party)):
                gone.append((session_id, role, party))
        return gone

    async def _beat(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._alive_key(), "1", px=ALIVE_MS)
            pipe.sadd(self._instances_key(), self.instance)
            if self._presence:  # a Redis restart loses the hash: put this process's counts back
                mapping = {SEP.join(k): v for k, v in self._presence.items()}
                pipe.hset(self._presence_key(self.instance), mapping=mapping)
            await pipe.execute()

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._fallback("heartbeat", exc)
