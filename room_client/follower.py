"""The live hall: follows a session's events over socket.io, by stream positions.

``HallFollower`` follows a session over socket.io (namespace ``/hall``). Viewers never see the
log's ``seq`` (it counts events hidden from them, rule 4): each event carries an ``id`` (its
chain hash) and ``pos``, its numbers in the viewer's own streams (docs/positions.md). The follower
keeps a cursor (``stream -> n``, nothing missing up to it), drops duplicates, resumes after a
reconnect from its cursor, asks for a replay when it notices a gap, and measures its clock offset
from the server (the only authority for countdowns).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import socketio

from room_client.client import AgentError, HallClient, _unreachable, client_tls
from room_client.credentials import utc_now
from schemas.time import parse_iso

log = logging.getLogger(__name__)

NAMESPACE = "/hall"
ALL = "all"
"""The public stream: every viewer follows it."""

Cursor = dict[str, int]
"""``stream -> n``: the highest number received in each stream with nothing missing below it."""


def clock_offset(server_now: datetime, sent_at: datetime, round_trip: timedelta) -> timedelta:
    """Server clock minus local clock, taking the server's reading at the round trip's middle."""
    return server_now - (sent_at + round_trip / 2)


def is_public(record: Mapping[str, Any]) -> bool:
    return ALL in (record.get("audience") or ())


def members(record: Mapping[str, Any]) -> list[str]:
    """The streams an event is a member of, as far as the viewer is shown: the keys of its
    ``pos`` but ``all``, and ``all`` when it is public."""
    pos: Mapping[str, int] = record["pos"]
    out = [t for t in pos if t != ALL]
    if is_public(record):
        out.append(ALL)
    return out


def order_key(record: Mapping[str, Any]) -> tuple[int, int]:
    """Where an event stands among the public ones: after ``pos.all`` of them (a public event is
    the ``pos.all``-th itself, before the non-public events that follow it)."""
    return int(record["pos"].get(ALL, 0)), 0 if is_public(record) else 1


def well_formed(record: Any) -> bool:
    """An event as the hall sends it: an ``id`` and ``pos`` (stream -> non-negative integer),
    with ``pos.all`` when it is public."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str):
        return False
    pos = record.get("pos")
    if not isinstance(pos, dict) or (is_public(record) and ALL not in pos):
        return False
    return all(
        isinstance(t, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
        for t, n in pos.items()
    )


NEXT, DUPLICATE, GAP = "next", "duplicate", "gap"


def classify(record: Mapping[str, Any], cursor: Mapping[str, int]) -> str:
    """``record`` against ``cursor`` (docs/positions.md, "The viewer's cursor"): a duplicate
    (every member stream at or below the cursor), a gap (some member stream more than one
    ahead, or a public event before it missing) or the next event."""
    pos: Mapping[str, int] = record["pos"]
    streams = members(record)
    if streams and all(pos[t] <= cursor.get(t, 0) for t in streams):
        return DUPLICATE
    if any(pos[t] > cursor.get(t, 0) + 1 for t in streams):
        return GAP
    if not is_public(record) and pos.get(ALL, 0) > cursor.get(ALL, 0):
        return GAP
    return NEXT


EventCallback = Callable[[dict[str, Any]], Awaitable[None] | None]
NoticeCallback = Callable[[str, Any], Awaitable[None] | None]


@dataclass
class _Waiter:
    predicate: Callable[[dict[str, Any]], bool]
    future: asyncio.Future[dict[str, Any]]


class HallFollower:
    """Follows one session's hall over socket.io (namespace ``/hall``).

    * ``events`` holds every event taken, in log order; ``by_id`` the same by ``id``.
      Duplicates (a replay overlapping live events, reconnects) are dropped, by ``id`` and by
      position.
    * ``cursor`` (``stream -> n``) is how far each of the viewer's streams has been received
      with nothing missing (it may start from ``last``, an earlier run's cursor). An event that
      skips ahead of it is a gap: the event is held and a replay after the cursor asked for
      (one at a time); reconnects resume from the cursor too. While a replay is under way,
      whatever arrives is held and merged in order once it is done (``replayed``), so events
      are taken in log order: replayed ones first, live ones that were not in it after.
    * ``offset`` is the server clock minus the local clock (measured with the ``time`` call on
      every connect); ``countdown(instant)`` uses it.
    * New events go to ``queue`` (in the order taken) and to ``on_event``; ``wait_for`` waits
      for an event matching a predicate.
    """

    def __init__(
        self,
        client: HallClient,
        session_id: str,
        *,
        last: Mapping[str, int] | None = None,
        on_event: EventCallback | None = None,
        on_notice: NoticeCallback | None = None,
        reconnection: bool = True,
        clock_samples: int = 3,
        resync_seconds: float = 300.0,
    ) -> None:
        self.client = client
        self.session_id = session_id
        self.events: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}
        self.cursor: Cursor = {t: int(n) for t, n in (last or {}).items()}
        self.offset = timedelta(0)
        self.round_trip: timedelta | None = None
        self.duplicates = 0
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
        self._held: dict[str, tuple[int, dict[str, Any]]] = {}  # id -> (arrival, event)
        self._arrivals = itertools.count()
        self._replay_pending = False
        self._stalled = False  # a replay left the gap as it was: wait for news before asking again
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

    def feed(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """Take one received event; returns the events it let through, in order (itself, and
        held ones it completed; none when it is a duplicate, is held behind a gap, or a replay
        is under way). Each is queued and wakes the waiters."""
        if not well_formed(record):
            log.warning("not an event of the hall: %r", record)
            return []
        key = record["id"]
        if key in self.by_id or key in self._held:
            self.duplicates += 1
            return []
        if classify(record, self.cursor) == DUPLICATE:
            # At or below the cursor: seen in an earlier run or covered by a finished replay.
            self.duplicates += 1
            return []
        self._held[key] = (next(self._arrivals), record)
        self._stalled = False
        if self._replay_pending:
            return []  # merged once the replay is done (mark_replayed)
        return self._release()

    def mark_replayed(self, pos: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
        """A replay is done and nothing at or below ``pos`` is missing: merge what was held, in
        order, and move the cursor up to ``pos``. Returns the events let through."""
        floor = {t: int(n) for t, n in (pos or {}).items()}
        out = self._release()
        while True:
            # Numbers still missing at or below ``pos`` do not exist for this viewer (the server
            # says so): skip each hole up to the lowest number held in that stream.
            before = dict(self.cursor)
            ranked = self.held
            for t, top in floor.items():
                held = [r["pos"][t] for r in ranked if t in members(r)]
                self.cursor[t] = max(
                    self.cursor.get(t, 0), min(top, min(held, default=top + 1) - 1)
                )
            if self.cursor == before:
                break
            out += self._release()
        return out

    def _release(self) -> list[dict[str, Any]]:
        """Take the held events that are next, in order (``order_key``, then arrival), until
        the first that still has a gap before it: a later one may come after what is missing.
        Events of one rank (non-public, after as many public ones) that share no stream have
        no order between them but their arrival: each of them is tried."""
        out: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []  # gaps of the rank reached: retried after each take

        def settle(record: dict[str, Any]) -> bool:
            """Drop or take ``record`` if it can be; False when it has a gap before it."""
            verdict = classify(record, self.cursor)
            if verdict == GAP:
                return False
            del self._held[record["id"]]
            if verdict == DUPLICATE:
                self.duplicates += 1
            else:
                self._take(record)
                out.append(record)
            return True

        for record in self.held:
            if waiting and order_key(waiting[0]) != order_key(record):
                break  # behind a gap
            if not settle(record):
                waiting.append(record)
                continue
            progress = True
            while progress and waiting:
                progress = False
                for other in list(waiting):
                    if settle(other):
                        waiting.remove(other)
                        progress = True
        return out

    def _take(self, record: dict[str, Any]) -> None:
        pos: Mapping[str, int] = record["pos"]
        for t in members(record):
            self.cursor[t] = max(self.cursor.get(t, 0), pos[t])
        self._insert(record)
        self.by_id[record["id"]] = record
        self.queue.put_nowait(record)
        for w in list(self._waiters):
            if not w.future.done() and w.predicate(record):
                w.future.set_result(record)

    def _insert(self, record: dict[str, Any]) -> None:
        """Into ``events`` in log order: after every event before it by ``order_key``, or by
        a stream both are members of (nearly always: at the end)."""
        i = len(self.events)
        rank = order_key(record)
        mine = set(members(record))
        while i > 0:
            before = self.events[i - 1]
            if order_key(before) > rank:
                i -= 1
                continue
            if order_key(before) == rank:
                shared = mine.intersection(members(before))
                if any(before["pos"][t] > record["pos"][t] for t in shared):
                    i -= 1
                    continue
            break
        self.events.insert(i, record)

    @property
    def held(self) -> list[dict[str, Any]]:
        """Events received but not taken yet (behind a gap, or during a replay), in order."""
        ranked = sorted(self._held.values(), key=lambda held: (order_key(held[1]), held[0]))
        return [record for _, record in ranked]

    @property
    def gap(self) -> bool:
        """Something is missing: a held event skips ahead of the cursor."""
        return any(classify(r, self.cursor) == GAP for _, r in self._held.values())

    def missing(self) -> dict[str, list[int]]:
        """The numbers of each stream known to be missing (below a held event's), by stream."""
        need: dict[str, int] = {}
        have: dict[str, set[int]] = {}
        for _, r in self._held.values():
            pos = r["pos"]
            for t in members(r):
                need[t] = max(need.get(t, 0), pos[t] - 1)
                have.setdefault(t, set()).add(pos[t])
            if not is_public(r):
                need[ALL] = max(need.get(ALL, 0), pos.get(ALL, 0))
        out: dict[str, list[int]] = {}
        for t, top in sorted(need.items()):
            gone = [
                n for n in range(self.cursor.get(t, 0) + 1, top + 1) if n not in have.get(t, set())
            ]
            if gone:
                out[t] = gone
        return out

    def ordered(self) -> list[dict[str, Any]]:
        """The events taken, in log order."""
        return list(self.events)

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
        """The connect payload, computed at each (re)connect: a fresh token and the cursor."""
        if self._relogin or not self.client.token_fresh(timedelta(seconds=60)):
            self._relogin = False
            await self.client.login()
        # The server replays after the cursor on every connect, possibly before our "connect"
        # handler runs: mark the replay as pending here, before the CONNECT packet goes out.
        self._replay_pending = True
        return {
            "token": self.client.token,
            "session_id": self.session_id,
            "last": dict(self.cursor),
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
            "connected",
            {
                "cursor": dict(self.cursor),
                "events": len(self.events),
                "connections": self.connections,
            },
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

    async def _deliver(self, records: list[dict[str, Any]]) -> None:
        if self.on_event is None:
            return
        for record in records:
            result = self.on_event(record)
            if inspect.isawaitable(result):
                await result

    async def _on_event(self, data: Any = None) -> None:
        await self._deliver(self.feed(data))
        self._maybe_request_replay()

    async def _on_events(self, data: Any = None) -> None:
        """A commit's events in one message, in log order: each is taken as if alone (all of
        them before any is handed on, so that no other message is taken in between)."""
        if isinstance(data, list):
            await self._deliver([taken for record in data for taken in self.feed(record)])
            self._maybe_request_replay()

    async def _on_replayed(self, data: Any = None) -> None:
        pos = data.get("pos") if isinstance(data, dict) else None
        before = (dict(self.cursor), len(self._held))
        self._replay_pending = False
        taken = self.mark_replayed(pos if isinstance(pos, dict) else None)
        # A replay that left a gap as it was is not asked for again until something new comes.
        self._stalled = not taken and before == (dict(self.cursor), len(self._held))
        self.replayed.set()
        await self._deliver(taken)
        self._maybe_request_replay()

    def _maybe_request_replay(self) -> None:
        """Ask for a replay after the cursor when something is missing (one at a time)."""
        if self.gap and not self._replay_pending and not self._stalled and self.sio.connected:
            self._replay_pending = True
            self._spawn(
                self.sio.emit(
                    "replay",
                    {"after": dict(self.cursor)},
                    namespace=NAMESPACE,
                    callback=self._on_replay_answer,
                )
            )

    async def _on_replay_answer(self, answer: Any = None) -> None:
        """The acknowledgement of a ``replay``: None once done, or the server's refusal."""
        if isinstance(answer, dict) and answer.get("code"):
            log.warning("replay refused: %s %s", answer.get("code"), answer.get("en"))
            self._replay_pending = False
            self._stalled = True
            await self._deliver(self._release())
            await self._notice("refused", answer)

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float | None = None
    ) -> dict[str, Any]:
        """The first event (taken already, in log order, or new) matching ``predicate``."""
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
