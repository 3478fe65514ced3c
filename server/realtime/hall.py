"""The hall namespace (socket.io): token auth, replay by ``seq``, live events filtered by role.

A client connects with ``{"token", "session_id", "last_seq"}``. It joins the rooms of its
audience tags first and replays from the log second, so nothing committed in between is missed;
the client drops duplicates by ``seq``. Every event carries the session's ``seq``.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio

from crypto.errors import BidBridgeError
from schemas.events import EventRecord
from server.auth import Principal, Tokens
from server.clock import Clock
from server.domain import evaluation as ev
from server.domain import opening as op
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


PRESENCE_ROLES = (*op.STAFF_ROLES, "room")
"""Whose presence is recorded: staff (a supervisor must be present) and room devices (links)."""


class Hall(socketio.AsyncNamespace):
    def __init__(self, store: Store, tokens: Tokens, clock: Clock) -> None:
        super().__init__(NAMESPACE)
        self.store = store
        self.tokens = tokens
        self.clock = clock
        self.on_presence: Any = None  # async (session_id, principal, joined: bool) -> None
        self.fanout: Any = None  # server.realtime.fanout.Fanout: live events after the replay

    async def publish(self, session_id: str, records: list[EventRecord]) -> None:
        for r in records:
            rooms = [room(session_id, tag) for tag in r.audience]
            await self.emit("event", r.model_dump(), to=rooms)

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if not isinstance(auth, dict):
            raise refuse("TOKEN_INVALID", "缺少登录凭证", "no token")
        try:
            p = self.tokens.check(str(auth.get("token", "")), self.clock.now())
        except BidBridgeError as exc:
            raise refuse(exc.code, exc.zh, exc.en) from None
        session_id = str(auth.get("session_id", ""))
        row = await self.store.load_session(session_id)
        if row is None:
            raise refuse("NOT_FOUND", "会话不存在", "no such session")
        try:
            last_seq = max(0, int(auth.get("last_seq", 0)))
        except (TypeError, ValueError):
            last_seq = 0
        if row.kind == "evaluation":
            state = ev.EvaluationState.model_validate(row.snapshot["state"])
            if p.role not in ev.EVALUATION_ROLES or not ev.admitted(state, p.role, p.party_id):
                raise refuse("NOT_PERMITTED", "您无权进入该评标会话", "you may not join")
            tags = ev.viewer_tags(p.role, p.party_id)
        else:
            tags = op.viewer_tags(p.role, p.party_id)
        await self.save_session(sid, {"principal": p, "session_id": session_id, "tags": tags})
        for tag in ("all", *tags):
            await self.enter_room(sid, room(session_id, tag))
        if self.fanout is not None:
            await self.fanout.watch(session_id)
        await self.emit("time", {"now": self.clock.now().isoformat()}, to=sid)
        await self._replay(sid, session_id, tags, last_seq)
        if self.on_presence is not None and p.role in PRESENCE_ROLES:
            await self.on_presence(session_id, p, True)

    async def _replay(self, sid: str, session_id: str, tags: frozenset[str], after: int) -> None:
        while True:
            page = await self.store.events_after(session_id, after, limit=REPLAY_PAGE)
            for r in page:
                if r.visible_to(tags):
                    await self.emit("event", r.model_dump(), to=sid)
            if len(page) < REPLAY_PAGE:
                break
            after = page[-1].seq
        await self.emit("replayed", {"seq": after if not page else page[-1].seq}, to=sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
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

    async def on_replay(self, sid: str, data: Any = None) -> None:
        """Ask again for everything after a ``seq`` (a client that noticed a gap)."""
        info = await self.get_session(sid)
        after = int(data.get("after", 0)) if isinstance(data, dict) else 0
        await self._replay(sid, info["session_id"], info["tags"], after)
