"""Opening sessions (开标): creation, the session as each party may see it, its events, and the host's and supervisor's steps."""

from __future__ import annotations

import secrets
from typing import Any

from crypto.quorum import QuorumBundle
from schemas import api as S
from server.api.routing import Ctx, Route, after_cursor, command, execute, get, post
from server.api.shared import (
    STAFF,
    in_remit,
    load_opening,
    remit_of,
    supervisors_in_remit,
    view_positions,
    visible_events,
)
from server.domain import errors as E
from server.domain import opening as op
from server.domain.remit import supervises
from server.domain.views import view_for
from server.identity import cert_sha256
from server.store import NotFound


async def create_session(ctx: Ctx, body: S.SessionIn) -> S.SessionOut:
    """Create a lot's opening session with its timetable (draft)"""
    hub = ctx.hub
    lot = await hub.store.get_lot(body.lot_id)
    if lot is None:
        raise NotFound(body.lot_id)
    project = await hub.store.get_project(lot.project_code)
    assert project is not None
    backup = None
    extra: dict[str, Any] = {
        "project_code": project.code,
        "lot_code": lot.code,
        "tenderer_name": project.tenderer_name,
        "tenderer_credit_code": project.tenderer_credit_code,
        "bid_valid_days": 90,
    }
    if body.backup is not None:
        bundle = QuorumBundle.from_json(body.backup.bundle_json)
        if bundle.k != body.backup.k or bundle.n != len(body.backup.custodians):
            raise E.TimetableInvalid(
                "backup k/n do not match the bundle / 备用密钥 k/n 与分片包不符"
            )
        for account in body.backup.custodians:
            if await hub.store.get_account(account) is None:
                raise NotFound(account)
        blob = await hub.blobs.put_bytes(body.backup.bundle_json.encode("utf-8"))
        backup = op.BackupConfig(
            k=bundle.k, custodians=body.backup.custodians, bundle_sha256=blob.sha256
        )
        extra["backup_certificate_sha256"] = cert_sha256(bundle.certificate)
    timetable = op.Timetable(
        sign_in_opens=body.sign_in_opens,
        deadline=body.deadline,
        decrypt_minutes=body.decrypt_minutes,
        confirm_minutes=body.confirm_minutes,
        min_bids=body.min_bids,
        table_fields=body.table_fields,
        security_required_fen=body.security_required_fen,
        backup=backup,
    )
    if not timetable.sign_in_opens <= timetable.deadline:
        raise E.TimetableInvalid("sign_in_opens must not be after the deadline")
    session_id = f"{lot.id.replace('/', '~')}~{secrets.token_hex(4)}"
    state = op.new_session(session_id, lot.id, timetable, body.title or project.name)
    records = await hub.service.create(state, ctx.actor, extra)
    return S.SessionOut(
        session_id=session_id,
        view=view_for(state, ctx.who.role, ctx.who.party_id),
        pos=await view_positions(ctx, records[-1].seq, session_id),
    )


async def list_sessions(ctx: Ctx) -> S.SessionList:
    """Sessions (status and timetable only; a supervisor's: those of its remit)"""
    rows = await ctx.hub.store.list_sessions(kind="opening")
    if ctx.who.role == "supervisor":
        remit = await remit_of(ctx.hub, ctx.who.party_id)
        bodies = await ctx.hub.store.supervising_bodies()
        rows = [r for r in rows if supervises(remit, bodies.get(r.lot_id or ""))]
    out = []
    for row in rows:
        st = row.snapshot["state"]
        out.append(
            {
                "session_id": row.id,
                "lot_id": row.lot_id,
                "title": st.get("title", ""),
                "status": row.status,
                "deadline": st["timetable"]["deadline"],
            }
        )
    return S.SessionList(sessions=out)


async def get_session(ctx: Ctx) -> S.SessionOut:
    """The session as the caller may see it (rule 4)"""
    loaded = await load_opening(ctx)
    return S.SessionOut(
        session_id=ctx.session_id,
        view=view_for(loaded.state, ctx.who.role, ctx.who.party_id),
        pos=await view_positions(ctx, loaded.version),
    )


async def get_events(ctx: Ctx) -> S.EventsOut:
    """The log, filtered by role; ?after=<stream>:<n> (repeated) to replay"""
    after = after_cursor(ctx.request)
    await load_opening(ctx)
    return await visible_events(ctx, op.viewer_tags(ctx.who.role, ctx.who.party_id), after)


async def start(ctx: Ctx) -> S.OkOut:
    """Start the opening (rule 6: after the deadline, a supervisor of the project's remit present)"""
    loaded = await load_opening(ctx)
    # Rule 6 (seed 002 二(一)四): the fact the domain needs, who supervises this project.
    in_remit = await supervisors_in_remit(ctx.hub, loaded.state.lot_id)
    return await execute(ctx, op.Start(actor=ctx.actor, supervisors_in_remit=in_remit))


# fmt: off
ROUTES: list[Route] = [
    post("/api/sessions", create_session, ("host", "centre"), body=S.SessionIn, response=S.SessionOut, tag="host"),
    get("/api/sessions", list_sessions, ("bidder", *STAFF), response=S.SessionList),
    get("/api/sessions/{session_id}", get_session, ("bidder", *STAFF), response=S.SessionOut),
    get("/api/sessions/{session_id}/events", get_events, ("bidder", *STAFF), response=S.EventsOut),
    command("/api/sessions/{session_id}/publish", op.Publish, ("host", "centre"), "Publish the session (招标公告)", tag="host"),
    post("/api/sessions/{session_id}/start", start, ("host",), response=S.OkOut, tag="host"),
    in_remit(command("/api/sessions/{session_id}/suspend", op.Suspend, ("host", "supervisor"), "Suspend with a reason (rule 13)", body=S.ReasonIn, tag="host"), load_opening),
    in_remit(command("/api/sessions/{session_id}/resume", op.Resume, ("host", "supervisor"), "Resume with a reason (rule 13)", body=S.ReasonIn, tag="host"), load_opening),
    command("/api/sessions/{session_id}/extend", op.Extend, ("host",), "Extend the current window with a reason (rule 13)", body=S.ExtendIn, tag="host"),
]
# fmt: on
