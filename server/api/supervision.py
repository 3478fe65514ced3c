"""Routes of the supervisor wall (监管): every session in one list, and a session's archive as a file.

A supervisor's remit is the sessions of the projects whose supervising body (监管主体: region and
industry, seed 002) is its own, openings and evaluations alike; a supervisor without a remit
(centre-wide) has the projects that name none (server/domain/remit.py). The list
gives what the wall needs to follow each one (its kind, title and status, and the supervisor's
stream positions the status is at: never the log's ``seq``, rule 4); the live part comes from the hall namespace, one connection per session. The
archive is the one ``bidbridge export-archive`` writes (:mod:`server.audit.export`), streamed as a
download; before an opening's deadline there is none (rule 4: it would tell who bid).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from server.api.routing import Ctx, Route, caller_tags, get
from server.api.shared import check_remit, remit_of
from server.audit.export import export_session
from server.domain import errors as E
from server.domain.remit import supervises
from server.domain.sessions import MACHINES
from server.store import NotFound

ArchiveNotYet = E.refusal(
    "ArchiveNotYet",
    "ARCHIVE_NOT_YET",
    409,
    "投标截止前不能导出开标档案（档案会显示投标人数量和名称）",
    "an opening's archive cannot be exported before the bid deadline (it would tell who bid)",
)

CHUNK = 256 * 1024


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SupervisedSession(_Out):
    session_id: str
    kind: Literal["opening", "evaluation"]
    title: str
    lot_id: str | None
    status: str
    suspended_from: str | None = None
    pos: dict[str, int] = Field(
        description="the supervisor's stream heads when the status was read (docs/positions.md)"
    )
    deadline: str | None = Field(default=None, description="openings: the bid deadline")
    opening_session_id: str | None = Field(default=None, description="evaluations: the opening")
    rooms: list[str] = Field(default_factory=list, description="evaluations: the drawn rooms")


class SupervisedSessions(_Out):
    sessions: list[SupervisedSession]


async def supervised_sessions(ctx: Ctx) -> SupervisedSessions:
    """Every opening and evaluation of the supervisor's remit with its state (the supervisor wall's list)"""
    remit = await remit_of(ctx.hub, ctx.who.party_id)
    bodies = await ctx.hub.store.supervising_bodies()
    rows = [
        row
        for row in await ctx.hub.store.list_sessions()
        if supervises(remit, bodies.get(row.lot_id or ""))
    ]
    heads = await ctx.hub.store.stream_heads_of(
        {row.id: row.version for row in rows}, caller_tags(ctx.who)
    )
    out = []
    for row in rows:
        st: dict[str, Any] = row.snapshot["state"]
        entry: dict[str, Any] = {
            "session_id": row.id,
            "kind": row.kind,
            "title": st.get("title", ""),
            "lot_id": row.lot_id,
            "status": row.status,
            "suspended_from": st.get("suspended_from"),
            "pos": heads[row.id],
        }
        machine = MACHINES[row.kind]
        entry |= machine.supervision(machine.state.model_validate(st))
        out.append(SupervisedSession.model_validate(entry))
    return SupervisedSessions(sessions=out)


def archive_name(session_id: str) -> str:
    """A file name for the download: the session id with anything unsafe replaced."""
    return "bidbridge-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", session_id).strip("-.") + ".zip"


async def download_archive(ctx: Ctx) -> web.StreamResponse:
    """The session's archive (as `bidbridge export-archive` writes it), as a file download"""
    hub = ctx.hub
    row = await hub.store.load_session(ctx.session_id)
    if row is None:
        raise NotFound(ctx.session_id)
    await check_remit(ctx, row.lot_id)
    machine = MACHINES[row.kind]
    if machine.before_deadline(machine.state.model_validate(row.snapshot["state"])):
        raise ArchiveNotYet(f"status {row.status}")  # Rule 4
    work = Path(tempfile.mkdtemp(prefix="archive-", dir=hub.settings.data_dir))
    path = work / "archive.zip"
    try:
        await export_session(
            hub.store,
            hub.blobs,
            hub.trust,
            hub.identity,
            ctx.session_id,
            path,
            hub.clock.now(),
            server_id=hub.settings.server_id,
        )
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="{archive_name(ctx.session_id)}"',
                "Content-Length": str(path.stat().st_size),
                "Cache-Control": "no-store",
            }
        )
        await resp.prepare(ctx.request)
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                await resp.write(chunk)
        await resp.write_eof()
        return resp
    finally:
        shutil.rmtree(work, ignore_errors=True)


# fmt: off
ROUTES: list[Route] = [
    get("/api/supervision/sessions", supervised_sessions, ("supervisor",), response=SupervisedSessions, tag="supervision"),
    get("/api/supervision/sessions/{session_id}/archive", download_archive, ("supervisor",), raw="application/zip", tag="supervision"),
]
# fmt: on
