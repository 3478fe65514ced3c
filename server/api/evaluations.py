"""Evaluation sessions (远程异地评标): creation, the view each party may see, events, start, suspension, warnings."""

from __future__ import annotations

import secrets

from schemas import api as S
from schemas import evaluation as EV
from schemas.experts import DrawRequest
from server.api.routing import (
    Ctx,
    Invalid,
    Route,
    after_cursor,
    command,
    execute,
    get,
    post,
)
from server.api.shared import (
    STAFF,
    eval_actor,
    in_remit,
    load_evaluation,
    sites_of,
    supervisors_in_remit,
    view_positions,
    visible_events,
)
from server.domain import draw as D
from server.domain import errors as E
from server.domain import evaluation as ev
from server.domain.views import evaluation_view
from server.store import NotFound


async def create_evaluation(ctx: Ctx, body: EV.EvaluationIn) -> S.SessionOut:
    """Create the evaluation of a closed opening (draft)"""
    hub = ctx.hub
    opening = await hub.service.load(body.opening_session_id, kind="opening")
    if opening is None:
        raise NotFound(body.opening_session_id)
    if opening.state.status != "closed":
        raise E.NotAllowedInState("the opening has not closed / 开标尚未结束")
    info = (await hub.store.events_after(body.opening_session_id, 0, limit=1))[0].payload
    bids = {}
    for b in opening.state.bids.values():
        if b.status == "decrypted" and b.summary:
            bids[b.bidder] = ev.BidEntry(
                bidder=b.bidder,
                name=b.bidder_name or b.summary.get("bidder_name", ""),
                price_fen=int(b.summary.get("price_fen") or 0),
                envelope_sha256=b.envelope_sha256,
                summary=b.summary,
            )
    if not bids:
        raise E.NotAllowedInState("no decrypted bid to evaluate / 没有可评审的投标文件")
    session_id = f"{opening.state.lot_id.replace('/', '~')}~eval~{secrets.token_hex(4)}"
    try:
        draw = DrawRequest.model_validate({**body.draw, "session_id": session_id})
    except ValueError as exc:
        raise Invalid(f"draw: {exc}"[:1000]) from None
    site_ids = {s.id for s in await sites_of(hub)}
    if draw.lead_site_id not in site_ids:
        raise NotFound(f"site {draw.lead_site_id}")
    if len(body.owner_reps) != draw.owner_reps:
        raise Invalid("owner_reps: one person id per owner representative / 业主代表人数不符")
    D.check_committee(draw.experts, draw.owner_reps)
    state = ev.EvaluationState(
        session_id=session_id,
        lot_id=opening.state.lot_id,
        opening_session_id=body.opening_session_id,
        title=body.title or opening.state.title,
        timetable=ev.Timetable(convene_at=body.convene_at, grace_minutes=body.grace_minutes),
        config=ev.EvalConfig(
            method=body.method,
            review_items=body.review_items,
            draw=draw,
            owner_reps=body.owner_reps,
            rescore_threshold_points=body.rescore_threshold_points,
        ),
        tenderer_credit_code=info.get("tenderer_credit_code", ""),
        tenderer_name=info.get("tenderer_name", ""),
        bids=bids,
    )
    extra = {
        "opening_session_id": body.opening_session_id,
        "config": state.config.model_dump(mode="json"),
        "bids": {k: v.model_dump(mode="json") for k, v in sorted(bids.items())},
        "tenderer_credit_code": state.tenderer_credit_code,
    }
    records = await hub.service.create(state, ctx.actor, extra, kind="evaluation")
    return S.SessionOut(
        session_id=state.session_id,
        view=evaluation_view(state, ctx.who.role, ctx.who.party_id),
        pos=await view_positions(ctx, records[-1].seq, state.session_id),
    )


async def get_evaluation(ctx: Ctx) -> S.SessionOut:
    """The evaluation as the caller may see it (两随机四不知)"""
    loaded = await load_evaluation(ctx)
    return S.SessionOut(
        session_id=ctx.session_id,
        view=evaluation_view(loaded.state, ctx.who.role, ctx.who.party_id),
        pos=await view_positions(ctx, loaded.version),
    )


async def evaluation_events(ctx: Ctx) -> S.EventsOut:
    """The evaluation's log, filtered by role; ?after=<stream>:<n> (repeated) to replay"""
    after = after_cursor(ctx.request)
    await load_evaluation(ctx)
    return await visible_events(ctx, ev.viewer_tags(ctx.who.role, ctx.who.party_id), after)


async def start_evaluation(ctx: Ctx) -> S.OkOut:
    """Start the evaluation (a supervisor of the project's remit present, every member signed in)"""
    loaded = await load_evaluation(ctx)
    # Eval rule 4 (seed 002 二(一)四): only a supervisor of the project's remit counts.
    in_remit = await supervisors_in_remit(ctx.hub, loaded.state.lot_id)
    return await execute(
        ctx, ev.StartEvaluation(actor=eval_actor(ctx), supervisors_in_remit=in_remit)
    )


# fmt: off
ROUTES: list[Route] = [
    post("/api/evaluations", create_evaluation, ("host", "centre"), body=EV.EvaluationIn, response=S.SessionOut, tag="evaluation"),
    get("/api/evaluations/{session_id}", get_evaluation, (*STAFF, "room", "expert"), response=S.SessionOut, tag="evaluation"),
    get("/api/evaluations/{session_id}/events", evaluation_events, (*STAFF, "room", "expert"), response=S.EventsOut, tag="evaluation"),
    post("/api/evaluations/{session_id}/start", start_evaluation, ("host",), response=S.OkOut, tag="evaluation"),
    command("/api/evaluations/{session_id}/suspend", ev.Suspend, ("host",), "Suspend the evaluation (fault); it is void unless resumed within four hours", body=S.ReasonIn, tag="evaluation"),
    command("/api/evaluations/{session_id}/resume", ev.Resume, ("host",), "Resume a suspended evaluation", body=S.ReasonIn, tag="evaluation"),
    in_remit(command("/api/evaluations/{session_id}/warnings", ev.Warn, ("supervisor",), "A supervisor's warning, seen by every participant", body=S.TextIn, tag="evaluation"), load_evaluation),
]
# fmt: on
