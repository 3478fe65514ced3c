"""The hall namespace (socket.io): token auth, replay by stream positions, live events by role.

A client connects with ``{"token", "session_id", "last"}`` (``last``: its cursor, stream -> n;
and ``"batch": true`` if it takes a commit's live events as one ``events`` list; see
``Hall.publish``). It joins the rooms of its audience tags first and replays from the log second,
so nothing committed in between is missed; the client drops duplicates by ``id``. Viewers never
see the log's ``seq``: every event carries its positions in the viewer's own streams only
(rule 4, docs/positions.md).
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet

from crypto.errors import BidBridgeError
from schemas.events import ALL, MAX_SEQ, MAX_STREAMS, Cursor, EventRecord, parse_cursor
from server.auth import Principal, Tokens
from server.clock import Clock
from server.domain import opening as op
from server.domain.errors import OutsideRemit
from server.domain.sessions import MACHINES
from server.store import Store

log = logging.getLogger(__name__)

NAMESPACE = "/hall"
REPLAY_PAGE = 500


def room(session_id: str, tag: str) -> str:
    return f"{session_id}|{tag}"


def refuse(code: str, zh: str, en: str) -> socketio.exceptions.ConnectionRefusedError:
    """A refused connection. The ``connect_error`` payload carries the refusal at the top level
    (``code``, ``zh``, ``en``: what Python clients read) and in ``message``/``data`` (what the
    socket.io JavaScript client turns into ``err.message`` and ``err.data``). A plain dict
    argument would arrive as its Python repr."""
    refusal = {"code": code, "zh": zh, "en": en}
    exc = socketio.exceptions.ConnectionRefusedError(f"{code}: {en}", refusal)
    exc.error_args = {"message": f"{code}: {en}", "data": refusal, **refusal}
    return exc


CURSOR_INVALID = (
    f"位置须为对象：事件流名称到 0 至 {MAX_SEQ} 的整数，最多 {MAX_STREAMS} 项",
    f"a cursor is an object: stream name -> integer from 0 to {MAX_SEQ}, at most {MAX_STREAMS}",
)
"""The refusal of a malformed cursor (``last`` on connect, ``after`` in ``replay``)."""

FREEZE_AFTER_JOINS = 200
"""Connections joined since the hall last froze the heap that make it freeze again, once settled."""
FREEZE_QUIET_SECONDS = 1.0
"""How long no connection must join before the hall counts a burst as settled."""

NOT_A_PARTY = {
    "opening": (
        "您无权进入该开标大厅：只有本场的投标人和工作人员可以进入",
        "you may not join this opening hall: it admits only this session's bidders and staff",
    ),
    "evaluation": (
        "您无权进入该评标：只有本评标委员会成员、抽中的评标室和工作人员可以进入",
        "you may not join this evaluation: it admits only its committee, its drawn rooms and staff",
    ),
    "": ("您无权进入该会话", "you may not join this session"),
}
"""What a refused viewer is told, by session kind (who decides: the machine's viewer_tags)."""

PRESENCE_ROLES = (*op.STAFF_ROLES, "room")
"""Whose presence is recorded: staff (a supervisor must be present) and room devices (links)."""


def freeze_heap() -> None:
    """Move the long-lived objects (connections, sessions) out of the collector's way: collect
    the young garbage only (a full pass is the stall this avoids), then freeze the rest. Used by
    the periodic freezer (server/app.py) and once a burst of connections has settled."""
    gc.collect(1)
    gc.freeze()


class Hall(socketio.AsyncNamespace):
    def __init__(self, store: Store, tokens: Tokens, clock: Clock) -> None:
        super().__init__(NAMESPACE)
        self.store = store
        self.tokens = tokens
        self.clock = clock
        self.on_presence: Any = None  # async (session_id, principal, joined: bool) -> None
        # async (principal, lot_id) -> bool: a supervisor watches only sessions of its remit
        self.in_remit: Any = None
        self.fanout: Any = None  # server.realtime.fanout.Fanout: live events after the replay
        self.batched: set[str] = set()  # connections that take a commit's events as one list
        # Connections being replayed: their live events wait here (shown dicts, one list per
        # message) and are sent after the replay, so every connection receives its events in
        # log order (docs/positions.md).
        self.held: dict[str, list[list[dict[str, Any]]]] = {}
        # Connection -> the last seq its latest replay sent: an event can be read by a replay
        # before its own live publish runs (commit, then publish); that publish skips it. Kept
        # until the first live event past it (publishes come in seq order).
        self.floor: dict[str, int] = {}
        self.certs: dict[str, str] = {}  # connection -> SHA-256 of its token's certificate
        self._joined = 0  # connections joined since the hall last froze the heap
        self._freeze_timer: asyncio.TimerHandle | None = None

    async def publish(self, session_id: str, records: list[EventRecord]) -> None:
        """Send ``records`` (in log order) to this process's connections in their audience.

        A connection gets each of its events as one ``event`` message, or, if it asked for
        batches (``"batch": true`` in its connect payload) and is shown more than one of them,
        all of them in one ``events`` message (a list in log order): one frame for a commit's
        events instead of one each. Each connection is shown an event's positions in its own
        streams only (the rooms it matched through), never another party's.

        Each distinct message is encoded once, and each connection is handed all of its
        messages in one go, in order, with no task per recipient and no yield in between, so
        its writer wakes once per publish. With thousands of connections the per-recipient task,
        writer wake-up and frame were most of the server's cost (scripts/bench_cluster.py).
        """
        server = self.server
        if server is None or not records:
            return
        # No collection in the middle: each would walk the young (and large) outbox again, every
        # 700 allocations. What the loop leaves behind goes to the first collection after it.
        collecting = gc.isenabled()
        gc.disable()
        try:
            await self._send(session_id, records, server)
        finally:
            if collecting:
                gc.enable()

    async def _send(self, session_id: str, records: list[EventRecord], server: Any) -> None:
        # eio_sid -> (sid, {index into records: the tags it matched through}); dicts keep the
        # order recipients and records were met in.
        outbox: dict[str, tuple[str, dict[int, list[str]]]] = {}
        manager = server.manager
        for i, r in enumerate(records):
            for tag in dict.fromkeys(r.audience):
                for sid, eio_sid in manager.get_participants(NAMESPACE, room(session_id, tag)):
                    entry = outbox.get(eio_sid)
                    if entry is None:
                        outbox[eio_sid] = (sid, {i: [tag]})
                    else:
                        entry[1].setdefault(i, []).append(tag)
        if not outbox:
            return
        shown_cache: dict[tuple[int, tuple[str, ...]], dict[str, Any]] = {}
        encoded: dict[tuple[str, tuple[tuple[int, tuple[str, ...]], ...]], list[Any]] = {}

        def shown(key: tuple[int, tuple[str, ...]]) -> dict[str, Any]:
            out = shown_cache.get(key)
            if out is None:
                out = shown_cache[key] = records[key[0]].shown_to(frozenset(key[1]))
            return out

        def message(name: str, keys: tuple[tuple[int, tuple[str, ...]], ...]) -> list[Any]:
            parts = encoded.get((name, keys))
            if parts is None:
                data = shown(keys[0]) if name == "event" else [shown(k) for k in keys]
                out = server.packet_class(
                    packet.EVENT, namespace=NAMESPACE, data=[name, data]
                ).encode()
                # One engine.io packet for every recipient shown the same, as python-socketio's
                # own broadcast does: it caches its encoding, so the frame text is built once too.
                parts = encoded[(name, keys)] = [
                    eio_packet.Packet(eio_packet.MESSAGE, data=part)
                    for part in (out if isinstance(out, list) else [out])
                ]
            return parts

        batched = self.batched
        held = self.held
        floor = self.floor
        for eio_sid, (sid, matched) in outbox.items():
            keys = tuple((i, tuple(tags)) for i, tags in matched.items())
            if floor and (below := floor.get(sid)) is not None:
                keys = tuple(k for k in keys if records[k[0]].seq > below)
                if not keys:
                    continue
                # A session publishes in seq order: nothing at or below the floor comes later.
                del floor[sid]
            waiting = held.get(sid)
            if waiting is not None:
                waiting.append([shown(k) for k in keys])
                continue
            if len(keys) > 1 and sid in batched:
                queued = message("events", keys)
            elif len(keys) == 1:
                queued = message("event", keys)
            else:
                queued = [part for k in keys for part in message("event", (k,))]
            try:
                for part in queued:
                    await server.eio.send_packet(eio_sid, part)
            except Exception as exc:  # one connection going away must not hold up the others
                log.debug("hall: not sent to %s (%s)", eio_sid, exc)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not isinstance(auth, dict):
            raise refuse("TOKEN_INVALID", "缺少登录凭证", "no token")
        try:
            p = self.tokens.check(str(auth.get("token", "")), self.clock.now())
        except BidBridgeError as exc:
            raise refuse(exc.code, exc.zh, exc.en) from None
        session_id = str(auth.get("session_id", ""))
        if p.session_id is not None and p.session_id != session_id:
            raise refuse(
                "NOT_PERMITTED",
                "此登录仅用于另一会话",
                "this sign-in is for another session",
            )
        row = await self.store.load_session(session_id)
        if row is None:
            raise refuse("NOT_FOUND", "会话不存在", "no such session")
        last = parse_cursor(auth.get("last", {}))
        if last is None:
            raise refuse("INVALID_INPUT", *CURSOR_INVALID)
        machine = MACHINES[row.kind]
        tags = machine.viewer_tags(
            machine.state.model_validate(row.snapshot["state"]), p.role, p.party_id
        )
        if tags is None:
            zh, en = NOT_A_PARTY.get(row.kind, NOT_A_PARTY[""])
            raise refuse("NOT_PERMITTED", zh, en)
        if self.in_remit is not None and not await self.in_remit(p, row.lot_id):
            raise refuse(OutsideRemit.code, OutsideRemit.zh, OutsideRemit.en)
        await self.save_session(sid, {"principal": p, "session_id": session_id, "tags": tags})
        self.certs[sid] = p.cert_sha256
        if auth.get("batch") is True:
            self.batched.add(sid)
        self.held[sid] = []  # from the first room joined: live events wait for the replay
        try:
            for tag in ("all", *tags):
                await self.enter_room(sid, room(session_id, tag))
            if self.fanout is not None:
                await self.fanout.watch(session_id)
            await self.emit("time", {"now": self.clock.now().isoformat()}, to=sid)
            await self._replay(sid, session_id, tags, last, holding=True)
            if self.on_presence is not None and p.role in PRESENCE_ROLES:
                await self.on_presence(session_id, p, True)
        except BaseException:
            self.batched.discard(sid)  # a connection that never joined gets no disconnect
            self.held.pop(sid, None)
            self.floor.pop(sid, None)
            self.certs.pop(sid, None)
            raise
        self._joined_one()

    def _joined_one(self) -> None:
        """A connection joined: once a burst of them has settled, freeze the heap.

        Each connection leaves thousands of long-lived objects. Until they are frozen, every full
        collection walks them all (with 2,500 connections in a process: 150-350 ms with nothing
        delivered), and a burst of deliveries allocates enough to start one or two. The periodic
        freezer (server/app.py, every 30 s) catches them in time; a hall that has just filled up
        for an opening should not wait for it (scripts/bench_cluster.py).
        """
        self._joined += 1
        if self._joined < FREEZE_AFTER_JOINS:
            return
        if self._freeze_timer is not None:
            self._freeze_timer.cancel()
        loop = asyncio.get_running_loop()
        self._freeze_timer = loop.call_later(FREEZE_QUIET_SECONDS, self._freeze)

    def _freeze(self) -> None:
        self._freeze_timer = None
        self._joined = 0
        freeze_heap()

    async def _replay(
        self,
        sid: str,
        session_id: str,
        tags: frozenset[str],
        after: Cursor,
        *,
        holding: bool = False,
    ) -> None:
        """Everything the viewer has not had after its cursor, in log order, then ``replayed``
        with the positions up to which nothing is missing now (its cursor moved past what was
        sent). Only the viewer's own streams are looked at or named."""
        streams = frozenset({ALL, *tags})
        reached = {t: n for t, n in after.items() if t in streams}
        paged = 0  # internal: the last page's last seq, never sent
        sent: set[str] = set()
        # ``holding``: the caller already holds live events back (a connect, from before it
        # joined its rooms). A replay asked for while another runs leaves the release to it.
        nested = not holding and sid in self.held
        self.held.setdefault(sid, [])
        try:
            while True:
                page = await self.store.events_for(
                    session_id, tags, reached, after_seq=paged, limit=REPLAY_PAGE
                )
                for r in page:
                    await self.emit("event", r.shown_to(tags), to=sid)
                    sent.add(r.hash)
                    self.floor[sid] = max(self.floor.get(sid, 0), r.seq)
                    for t in r.audience:
                        if t in streams:
                            reached[t] = max(reached.get(t, 0), r.pos[t])
                if len(page) < REPLAY_PAGE:
                    break
                paged = page[-1].seq
            await self.emit("replayed", {"pos": reached}, to=sid)
        finally:
            if not nested:
                await self._release(sid, sent)

    async def _release(self, sid: str, sent: set[str]) -> None:
        """Send what was held for ``sid`` during its replay, minus what the replay sent, then
        deliver live again. The last check and the release happen with no await in between, so
        nothing published meanwhile is left behind or overtakes what was held."""
        waiting = self.held.get(sid)
        while waiting:
            shown = [e for e in waiting.pop(0) if e["id"] not in sent]
            try:
                if len(shown) > 1 and sid in self.batched:
                    await self.emit("events", shown, to=sid)
                else:
                    for e in shown:
                        await self.emit("event", e, to=sid)
            except Exception as exc:  # the connection went away
                log.debug("hall: held events not sent to %s (%s)", sid, exc)
        self.held.pop(sid, None)

    async def drop_certificates(self, revoked: Callable[[str], bool], why: BidBridgeError) -> int:
        """Close this process's connections whose token names a certificate ``revoked`` says
        is (a CRL named it): each first gets a ``refused`` message with the code. How many."""
        dropped = 0
        refusal = {"code": why.code, "zh": why.zh, "en": why.en}
        for sid, sha in list(self.certs.items()):
            if not revoked(sha):
                continue
            dropped += 1
            try:
                await self.emit("refused", refusal, to=sid)
                await self.disconnect(sid)
            except Exception as exc:  # already gone
                log.debug("hall: %s not dropped (%s)", sid, exc)
            self.certs.pop(sid, None)
        return dropped

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        self.batched.discard(sid)
        self.held.pop(sid, None)
        self.floor.pop(sid, None)
        self.certs.pop(sid, None)
        try:
            data = await self.get_session(sid)
        except KeyError:
            return
        p: Principal = data["principal"]
        if self.on_presence is not None and p.role in PRESENCE_ROLES:
            await self.on_presence(data["session_id"], p, False)

    async def on_time(self, sid: str, data: Any = None) -> dict[str, str]:
        """Clock sync: the client measures its offset from the server's clock (the authority)."""
        return {"now": self.clock.now().isoformat()}

    async def on_replay(self, sid: str, data: Any = None) -> dict[str, str] | None:
        """Ask again for everything after a cursor (a client that noticed a gap). A bad
        ``after`` is answered (in the acknowledgement) with INVALID_INPUT and replays nothing."""
        info = await self.get_session(sid)
        after = parse_cursor(data.get("after") if isinstance(data, dict) else None)
        if after is None:
            zh, en = CURSOR_INVALID
            return {"code": "INVALID_INPUT", "zh": zh, "en": en}
        await self._replay(sid, info["session_id"], info["tags"], after)
        return None
