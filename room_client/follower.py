"""The live hall: follows a session's events over socket.io, replayed by ``seq`` after gaps.

``HallFollower`` follows a session over socket.io (namespace ``/hall``): it keeps the events by
``seq``, drops duplicates, resumes after a reconnect from the last contiguous ``seq``, asks for a
replay when it notices a gap, and measures its clock offset from the server (the only authority
for countdowns).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import socketio

from room_client.client import AgentError, HallClient, _unreachable, client_tls
from room_client.credentials import utc_now
from schemas.time import parse_iso

log = logging.getLogger(__name__)

NAMESPACE = "/hall"


def clock_offset(server_now: datetime, sent_at: datetime, round_trip: timedelta) -> timedelta:
    """Server clock minus local clock, taking the server's reading at the round trip's middle."""
    return server_now - (sent_at + round_trip / 2)


EventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
NoticeCallback = Callable[[str, Any], Awaitable[None] | None]


@dataclass
class _Waiter:
    predicate: Callable[[dict[str, Any]], bool]
    future: asyncio.Future[dict[str, Any]]


class HallFollower:
    """Follows one session's hall over socket.io (namespace ``/hall``).

    * ``events`` holds every record seen, by ``seq``; duplicates (replay overlapping live
      events, reconnects) are dropped.
    * ``last_seq`` is the highest ``seq`` seen; ``resume_seq`` the highest up to which nothing
      can be missing (every lower ``seq`` was received or covered by a server replay). A bidder
      does not see staff-only events, so its ``seq`` has holes: a hole is a *suspected* gap
      until a replay covers it. Reconnects resume from ``resume_seq``; a suspected gap while
      connected asks the server to replay after ``resume_seq``.
    * ``offset`` is the server clock minus the local clock (measured with the ``time`` call on
      every connect); ``countdown(instant)`` uses it.
    * New events go to ``queue`` (arrival order) and to ``on_event``; ``wait_for`` waits for an
      event matching a predicate.
    """

    def __init__(
        self,
        client: HallClient,
        session_id: str,
        *,
        last_seq: int = 0,
        on_event: EventCallback | None = None,
        on_notice: NoticeCallback | None = None,
        reconnection: bool = True,
        clock_samples: int = 3,
        resync_seconds: float = 300.0,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.events: dict[int, dict[str, Any]] = {}
        self.last_seq = last_seq
        self.resume_seq = last_seq
        self.offset = timedelta(0)
        self.round_trip: timedelta | None = None
        self.duplicates = 0
        self.chain_breaks: list[int] = []
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.on_event = on_event
        self.on_notice = on_notice
        self.connected = asyncio.Event()
        self.replayed = asyncio.Event()
        self.clock_samples = clock_samples
        self.resync_seconds = resync_seconds
        self._clock_task: asyncio.Task[None] | None = None
        self.refusal: dict[str, Any] | None = None
        self.connections = 0
        self._replay_pending = False
        self._relogin = False
        self._waiters: list[_Waiter] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        # The same verification as the REST calls (never switched off; see ``client_tls``).
        extra = {"ssl": client.ssl_context or client_tls()}
        self.sio = socketio.AsyncClient(
            reconnection=reconnection,
            reconnection_attempts=0,
            reconnection_delay=1,
            reconnection_delay_max=15,
            handle_sigint=False,
            websocket_extra_options=extra,
        )
        self.sio.on("connect", self._on_connect, namespace=NAMESPACE)
        self.sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
        self.sio.on("connect_error", self._on_connect_error, namespace=NAMESPACE)
        self.sio.on("event", self._on_event, namespace=NAMESPACE)
        self.sio.on("events", self._on_events, namespace=NAMESPACE)
        self.sio.on("replayed", self._on_replayed, namespace=NAMESPACE)
        self.sio.on("time", self._on_time, namespace=NAMESPACE)

    # -- the bookkeeping (pure; tests feed records directly) --

    def feed(self, record: dict[str, Any]) -> bool:
        """Take one record; ``True`` if it is new (then it is queued and waiters are woken)."""
        seq = int(record["seq"])
        if seq in self.events or seq <= self.resume_seq:
            # Held already, or at/below the point up to which nothing is missing (seen in an
            # earlier run, or covered by a finished replay): a duplicate either way.
            self.duplicates += 1
            return False
        self._check_chain(seq, record)
        self.events[seq] = record
        self.last_seq = max(self.last_seq, seq)
        self._advance()
        self.queue.put_nowait(record)
        for w in list(self._waiters):
            if not w.future.done() and w.predicate(record):
                w.future.set_result(record)
        return True

    def mark_replayed(self, seq: int) -> None:
        """The server finished a replay up to ``seq``: nothing at or below it is missing."""
        self.resume_seq = max(self.resume_seq, int(seq))
        self._advance()

    def _advance(self) -> None:
        while self.resume_seq + 1 in self.events:
            self.resume_seq += 1

    @property
    def gap(self) -> bool:
        """A suspected gap: some ``seq`` below ``last_seq`` is neither held nor covered."""
        return self.last_seq > self.resume_seq

    def missing(self) -> list[int]:
        """The ``seq`` numbers of the suspected gap (may be events we are not shown)."""
        return [s for s in range(self.resume_seq + 1, self.last_seq) if s not in self.events]

    def _check_chain(self, seq: int, record: dict[str, Any]) -> None:
        before = self.events.get(seq - 1)
        after = self.events.get(seq + 1)
        broken = (before is not None and record.get("prev_hash") != before.get("hash")) or (
            after is not None and after.get("prev_hash") != record.get("hash")
        )
        if broken:
            self.chain_breaks.append(seq)
            log.warning("hash chain mismatch at seq %s of %s", seq, self.session_id)

    def ordered(self) -> list[dict[str, Any]]:
        return [self.events[s] for s in sorted(self.events)]

    # -- time --

    def server_now(self) -> datetime:
        return utc_now() + self.offset

    def countdown(self, target: datetime | str) -> timedelta:
        """Time left until ``target`` by the server's clock (negative once passed)."""
        at = parse_iso(target) if isinstance(target, str) else target
        return at - self.server_now()

    async def sync_clock(self, samples: int | None = None) -> timedelta:
        """Measure the offset with the ``time`` call; keep the sample with the shortest trip."""
        best: tuple[timedelta, timedelta] | None = None
        for _ in range(samples or self.clock_samples):
            sent_at, t0 = utc_now(), time.monotonic()
            answer = await self.sio.call("time", {}, namespace=NAMESPACE, timeout=10)
            trip = timedelta(seconds=time.monotonic() - t0)
            if not isinstance(answer, dict) or "now" not in answer:
                continue
            off = clock_offset(parse_iso(str(answer["now"])), sent_at, trip)
            if best is None or trip < best[0]:
                best = (trip, off)
        if best is not None:
            self.round_trip, self.offset = best
        return self.offset

    # -- connection --

    async def _auth(self) -> dict[str, Any]:
        """The connect payload, computed at each (re)connect: a fresh token and ``resume_seq``."""
        if self._relogin or not self.client.token_fresh(timedelta(seconds=60)):
            self._relogin = False
            await self.client.login()
        # The server replays after last_seq on every connect, possibly before our "connect"
        # handler runs: mark the replay as pending here, before the CONNECT packet goes out.
        self._replay_pending = True
        return {
            "token": self.client.token,
            "session_id": self.session_id,
            "last_seq": self.resume_seq,
            "batch": True,  # a commit's live events as one "events" list (_on_events)
        }

    async def connect(self, timeout: float = 30.0) -> None:
        """Connect (logging in if needed) and wait for the first replay to finish."""
        await self.client.ensure_login()
        url = self.client.base_url
        try:
            await self.sio.connect(
                url,
                auth=self._auth,
                transports=["websocket"],
                namespaces=[NAMESPACE],
                wait_timeout=min(timeout, 15),
            )
        except socketio.exceptions.ConnectionError as exc:
            refusal = self.refusal or {}
            if refusal.get("code"):
                raise AgentError(
                    str(refusal["code"]),
                    str(refusal.get("zh", "")),
                    str(refusal.get("en", "")),
                    "hall",
                ) from None
            raise _unreachable(url, exc) from None
        try:
            await asyncio.wait_for(self.replayed.wait(), timeout)
        except TimeoutError:
            raise AgentError(
                "REPLAY_TIMEOUT", "等待历史事件超时", "timed out waiting for the event replay"
            ) from None

    async def close(self) -> None:
        self._closing = True
        if self._clock_task is not None:
            self._clock_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        for w in self._waiters:
            if not w.future.done():
                w.future.cancel()
        await self.sio.disconnect()

    async def __aenter__(self) -> HallFollower:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notice(self, kind: str, data: Any = None) -> None:
        if self.on_notice is not None:
            result = self.on_notice(kind, data)
            if inspect.isawaitable(result):
                await result

    async def _on_connect(self) -> None:
        self.refusal = None
        self.connections += 1
        self.connected.set()
        await self._notice(
            "connected", {"resume_seq": self.resume_seq, "connections": self.connections}
        )
        if self._clock_task is None or self._clock_task.done():
            self._clock_task = asyncio.ensure_future(self._keep_clock())

    async def _keep_clock(self) -> None:
        """Measure the offset now and again every ``resync_seconds`` while connected."""
        while self.connected.is_set() and not self._closing:
            try:
                await self.sync_clock()
            except (socketio.exceptions.SocketIOError, TimeoutError, ValueError) as exc:
                log.info("clock sync failed: %s", exc)
            else:
                await self._notice("clock", {"offset": self.offset, "round_trip": self.round_trip})
            await asyncio.sleep(self.resync_seconds)

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.connected.clear()
        if not self._closing:
            await self._notice("disconnected", {"reason": str(reason or "")})

    async def _on_connect_error(self, data: Any = None) -> None:
        self.refusal = data if isinstance(data, dict) else {"detail": str(data)}
        if self.refusal.get("code") == "TOKEN_INVALID":
            self._relogin = True
        await self._notice("refused", self.refusal)

    async def _on_time(self, data: Any = None) -> None:
        # Pushed on connect with no round trip known: a first estimate until sync_clock runs.
        if self.round_trip is None and isinstance(data, dict) and "now" in data:
            self.offset = parse_iso(str(data["now"])) - utc_now()

    async def _on_event(self, data: Any = None) -> None:
        if not isinstance(data, dict) or "seq" not in data:
            return
        if self.feed(data):
            if self.on_event is not None:
                result = self.on_event(data)
                if inspect.isawaitable(result):
                    await result
            self._maybe_request_replay()

    async def _on_events(self, data: Any = None) -> None:
        """A commit's events in one message, in ``seq`` order: each is taken as if alone."""
        if isinstance(data, list):
            for record in data:
                await self._on_event(record)

    async def _on_replayed(self, data: Any = None) -> None:
        seq = int(data.get("seq", 0)) if isinstance(data, dict) else 0
        self.mark_replayed(seq)
        self._replay_pending = False
        self.replayed.set()
        self._maybe_request_replay()

    def _maybe_request_replay(self) -> None:
        """Ask for a replay after ``resume_seq`` when a gap is suspected (one at a time)."""
        if self.gap and not self._replay_pending and self.sio.connected:
            self._replay_pending = True
            self._spawn(self.sio.emit("replay", {"after": self.resume_seq}, namespace=NAMESPACE))

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float | None = None
    ) -> dict[str, Any]:
        """The first event (held already, in ``seq`` order, or new) matching ``predicate``."""
        for record in self.ordered():
            if predicate(record):
                return record
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(predicate, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AgentError(
                "WAIT_TIMEOUT", "等待事件超时", "timed out waiting for the event"
            ) from None
        finally:
            self._waiters.remove(waiter)
