"""REST handlers of the evaluation (远程异地评标): thin, like the hall's.

Registered on the hall's route table, so one OpenAPI document and one error format cover both.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from aiohttp import web
from cryptography import x509
from cryptography.x509.oid import NameOID

from crypto.attest import b64decode, read_document
from crypto.bid import decrypt_with_key
from crypto.errors import PackageError
from crypto.package import MANIFEST_NAME, check_member_name, verify_package
from schemas import api as S
from schemas import evaluation as EV
from schemas.canonical import canonical_json
from schemas.experts import DrawRequest, Expert, Room, Site
from server.api.hall import Ctx, _seq, routes, visible_events
from server.api.routing import Invalid, after_seq, read_body
from server.app import Hub
from server.auth import ChallengeInvalid, Principal, token_lifetime
from server.domain import draw as D
from server.domain import errors as E
from server.domain import evaluation as ev
from server.domain.pool import parse_pool
from server.domain.views import evaluation_view
from server.identity import cert_sha256
from server.store import NotFound

STAFF = ("host", "supervisor", "centre")
MEMBER_ROLES = ("expert",)
POOL_LIMIT = 64 * 1024**2

SignatureInvalid = E.refusal(
    "SignatureInvalid",
    "SIGNATURE_INVALID",
    422,
    "签名无效：签名内容或签名证书与所需不符",
    "the signature is not valid: the signed content or the signer's certificate is not the one expected",
)


def _actor(ctx: Ctx) -> ev.Actor:
    return ev.Actor(role=ctx.who.role, id=ctx.who.party_id)  # type: ignore[arg-type]


async def _eval(ctx: Ctx) -> Any:
    loaded = await ctx.hub.service.load(ctx.session_id, kind="evaluation")
    if loaded is None:
        raise NotFound(ctx.session_id)
    if not ev.admitted(loaded.state, ctx.who.role, ctx.who.party_id):
        raise E.NotPermitted("not a party to this evaluation / 您不是本次评标的参与方")
    return loaded


async def _do(ctx: Ctx, cmd: ev.Command) -> S.OkOut:
    return S.OkOut(seq=_seq(await ctx.hub.service.execute(ctx.session_id, cmd)))


def person_id_of(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None


# --- centre: expert pool, sites and rooms ----------------------------------------------------------


@routes.route(
    "POST",
    "/api/experts/import",
    "Import experts into the pool (CSV or JSON body; ?format=csv|json); all rows or none",
    response=EV.ImportOut,
    roles=("centre",),
    tag="centre",
)
async def import_experts(ctx: Ctx) -> EV.ImportOut:
    fmt = ctx.request.query.get("format") or (
        "json" if "json" in ctx.request.content_type else "csv"
    )
    if fmt not in ("csv", "json"):
        raise Invalid("format: csv or json / 格式须为 csv 或 json")
    data = await read_body(ctx.request, POOL_LIMIT)
    experts = parse_pool(data, fmt)  # type: ignore[arg-type]
    now = ctx.hub.clock.now()
    await ctx.hub.store.import_experts([e.model_dump(mode="json") for e in experts], now)
    return EV.ImportOut(imported=len(experts), total=await ctx.hub.store.count_experts())


@routes.route(
    "POST",
    "/api/sites",
    "Add a site (场地) of the rooms network",
    body=EV.SiteIn,
    response=S.OkOut,
    roles=("centre",),
    tag="centre",
)
async def add_site(ctx: Ctx, body: EV.SiteIn) -> S.OkOut:
    await ctx.hub.store.add_site(body.id, body.name, body.city)
    return S.OkOut()


@routes.route(
    "POST",
    "/api/sites/{site_id}/rooms",
    "Add an evaluation room with its device certificate",
    body=EV.RoomIn,
    response=S.OkOut,
    roles=("centre",),
    tag="centre",
)
async def add_room(ctx: Ctx, body: EV.RoomIn) -> S.OkOut:
    from server.api.hall import _cert

    cert = _cert(body.cert_pem, "room device certificate")
    await ctx.hub.trust.avalidate(cert, "login", ctx.hub.clock.now())
    site_id = ctx.request.match_info["site_id"]
    await ctx.hub.store.add_room(
        body.id, site_id, body.name, body.cert_pem, ctx.hub.clock.now(), body.seats
    )
    return S.OkOut()


@routes.route(
    "GET",
    "/api/sites",
    "Sites and their rooms",
    response=EV.SitesOut,
    roles=STAFF,
    tag="centre",
)
async def list_sites(ctx: Ctx) -> EV.SitesOut:
    return EV.SitesOut(sites=[s.model_dump(mode="json") for s in await _sites(ctx.hub)])


async def _sites(hub: Hub) -> list[Site]:
    rooms = await hub.store.list_rooms()
    out = []
    for s in await hub.store.list_sites():
        mine = [
            Room(id=r.id, name=r.name, seats=r.seats)
            for r in rooms
            if r.site_id == s.id and r.available
        ]
        out.append(Site(id=s.id, name=s.name, city=s.city, rooms=mine))
    return out


# --- host: the evaluation session and the draw ---------------------------------------------------


@routes.route(
    "POST",
    "/api/evaluations",
    "Create the evaluation of a closed opening (draft)",
    body=EV.EvaluationIn,
    response=S.SessionOut,
    roles=("host", "centre"),
    tag="evaluation",
)
async def create_evaluation(ctx: Ctx, body: EV.EvaluationIn) -> S.SessionOut:
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
    site_ids = {s.id for s in await _sites(hub)}
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
        seq=records[-1].seq,
    )


@routes.route(
    "GET",
    "/api/evaluations/{session_id}",
    "The evaluation as the caller may see it (两随机四不知)",
    response=S.SessionOut,
    roles=(*STAFF, "room", "expert"),
    tag="evaluation",
)
async def get_evaluation(ctx: Ctx) -> S.SessionOut:
    loaded = await _eval(ctx)
    return S.SessionOut(
        session_id=ctx.session_id,
        view=evaluation_view(loaded.state, ctx.who.role, ctx.who.party_id),
        seq=loaded.version,
    )


@routes.route(
    "GET",
    "/api/evaluations/{session_id}/events",
    "The evaluation's log, filtered by role; ?after=seq to replay",
    response=S.EventsOut,
    roles=(*STAFF, "room", "expert"),
    tag="evaluation",
)
async def evaluation_events(ctx: Ctx) -> S.EventsOut:
    after = after_seq(ctx.request)
    await _eval(ctx)
    return await visible_events(ctx, ev.viewer_tags(ctx.who.role, ctx.who.party_id), after)


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/draw/begin",
    "Begin the draw: the server commits to its random value (published)",
    response=S.OkOut,
    roles=("host", "centre"),
    tag="evaluation",
)
async def begin_draw(ctx: Ctx) -> S.OkOut:
    await _eval(ctx)
    stored = await ctx.hub.store.put_draw_secret(ctx.session_id, secrets.token_hex(32))
    commitment = D.commitment(bytes.fromhex(stored))
    return await _do(ctx, ev.BeginDraw(actor=_actor(ctx), commitment=commitment))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/draw/entropy",
    "Add the supervisor's or the host's random value to the draw",
    body=EV.EntropyIn,
    response=S.OkOut,
    roles=("host", "supervisor"),
    tag="evaluation",
)
async def add_entropy(ctx: Ctx, body: EV.EntropyIn) -> S.OkOut:
    return await _do(ctx, ev.AddEntropy(actor=_actor(ctx), value=body.value))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/draw",
    "Draw the committee and the secondary rooms; the server reveals its random value",
    response=S.OkOut,
    roles=("host", "centre"),
    tag="evaluation",
)
async def run_draw(ctx: Ctx) -> S.OkOut:
    hub = ctx.hub
    loaded = await _eval(ctx)
    secret = await hub.store.draw_secret(ctx.session_id)
    if secret is None:
        raise E.NotAllowedInState("the draw has not begun / 抽取尚未开始")
    pool = [Expert.model_validate(e) for e in await hub.store.list_experts()]
    sites = await _sites(hub)
    snapshot = {
        "format": "bidbridge-draw-input",
        "pool": D.pool_snapshot(pool),
        "sites": [s.model_dump(mode="json") for s in sites],
    }
    raw = canonical_json(snapshot)
    cmd = ev.Draw(
        actor=ev.SERVER,
        server_random=secret,
        pool=pool,
        sites=sites,
        pool_blob=hashlib.sha256(raw).hexdigest(),
    )
    ev.decide(loaded.state, cmd, hub.clock.now())  # a refusal here leaves nothing behind
    await hub.blobs.put_bytes(raw)  # the draw's input is kept before the draw is recorded
    return await _do(ctx, cmd)


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/members/{expert_id}/decline",
    "Record that a drawn expert declined; the next spare is drawn",
    body=EV.ExpertReasonIn,
    response=S.OkOut,
    roles=("host", "centre"),
    tag="evaluation",
)
async def decline(ctx: Ctx, body: EV.ExpertReasonIn) -> S.OkOut:
    expert_id = ctx.request.match_info["expert_id"]
    return await _do(ctx, ev.Decline(actor=_actor(ctx), expert_id=expert_id, reason=body.reason))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/members/{expert_id}/replace",
    "Replace a member who cannot serve by the next spare",
    body=EV.ExpertReasonIn,
    response=S.OkOut,
    roles=("host", "centre"),
    tag="evaluation",
)
async def replace(ctx: Ctx, body: EV.ExpertReasonIn) -> S.OkOut:
    expert_id = ctx.request.match_info["expert_id"]
    return await _do(ctx, ev.Replace(actor=_actor(ctx), expert_id=expert_id, reason=body.reason))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/start",
    "Start the evaluation (supervisor present, every member signed in)",
    response=S.OkOut,
    roles=("host",),
    tag="evaluation",
)
async def start(ctx: Ctx) -> S.OkOut:
    return await _do(ctx, ev.StartEvaluation(actor=_actor(ctx)))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/suspend",
    "Suspend the evaluation (fault); it is void unless resumed within four hours",
    body=S.ReasonIn,
    response=S.OkOut,
    roles=("host",),
    tag="evaluation",
)
async def suspend(ctx: Ctx, body: S.ReasonIn) -> S.OkOut:
    return await _do(ctx, ev.Suspend(actor=_actor(ctx), reason=body.reason))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/resume",
    "Resume a suspended evaluation",
    body=S.ReasonIn,
    response=S.OkOut,
    roles=("host",),
    tag="evaluation",
)
async def resume(ctx: Ctx, body: S.ReasonIn) -> S.OkOut:
    return await _do(ctx, ev.Resume(actor=_actor(ctx), reason=body.reason))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/warnings",
    "A supervisor's warning, seen by every participant",
    body=S.TextIn,
    response=S.OkOut,
    roles=("supervisor",),
    tag="evaluation",
)
async def warn(ctx: Ctx, body: S.TextIn) -> S.OkOut:
    return await _do(ctx, ev.Warn(actor=_actor(ctx), text=body.text))


# --- room device: sign-in, no key, media -----------------------------------------------------------


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/sign-in",
    "Sign an expert in at this room with the expert's CA key (returns the expert's token)",
    body=EV.ExpertSignInIn,
    response=EV.ExpertSignInOut,
    roles=("room",),
    tag="room",
)
async def expert_sign_in(ctx: Ctx, body: EV.ExpertSignInIn) -> EV.ExpertSignInOut:
    hub = ctx.hub
    now = hub.clock.now()
    loaded = await _eval(ctx)
    doc = read_document(b64decode(body.signature))
    expected = EV.sign_in_document(
        hub.settings.server_id, ctx.session_id, ctx.who.party_id, body.expert_id, body.nonce
    )
    if doc.content != expected:
        raise SignatureInvalid("not this sign-in / 签到文档不符")
    await hub.trust.avalidate(doc.signer, "login", now, extra_intermediates=doc.certificates)
    if person_id_of(doc.signer) != body.expert_id:
        raise SignatureInvalid("the certificate is not the expert's / 证书不属于该专家")
    if not await hub.store.consume_challenge(body.nonce, now):
        raise ChallengeInvalid("replayed or stale / 重放或过期")
    name = _common_name(doc.signer)
    fp = cert_sha256(doc.signer)
    member = loaded.state.members.get(body.expert_id)
    if (
        member is not None
        and member.status == "signed_in"
        and member.room_id == ctx.who.party_id
        and member.cert_sha256 == fp
    ):
        # Signed in already (the token expired, the room device restarted): a new token, no
        # new event; the same key at the same room proves it is the same member.
        token, exp = hub.tokens.issue(Principal("expert", body.expert_id, name, fp), now)
        return EV.ExpertSignInOut(
            token=token,
            expert_id=body.expert_id,
            name=name,
            expires_at=exp,
            expires_in=token_lifetime(hub.tokens, hub.clock),
        )
    cmd = ev.ExpertSignIn(
        actor=_actor(ctx),
        expert_id=body.expert_id,
        name=name,
        cert_sha256=fp,
        nonce=body.nonce,
        signature=body.signature,
    )
    records = await hub.service.execute(ctx.session_id, cmd)
    token, exp = hub.tokens.issue(Principal("expert", body.expert_id, name, fp), now)
    return EV.ExpertSignInOut(
        token=token,
        expert_id=body.expert_id,
        name=name,
        expires_at=exp,
        expires_in=token_lifetime(hub.tokens, hub.clock),
        seq=_seq(records),
    )


def _common_name(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/members/{expert_id}/no-key",
    "Record that an expert came to the room without a CA key",
    response=S.OkOut,
    roles=("room",),
    tag="room",
)
async def no_key(ctx: Ctx) -> S.OkOut:
    expert_id = ctx.request.match_info["expert_id"]
    return await _do(ctx, ev.NoKey(actor=_actor(ctx), expert_id=expert_id))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/media/offer",
    "WebRTC: a room publishes its feed and receives the host's; a supervisor watches a room",
    body=EV.OfferIn,
    response=EV.AnswerOut,
    roles=("room", "supervisor"),
    tag="room",
)
async def media_offer(ctx: Ctx, body: EV.OfferIn) -> EV.AnswerOut:
    hub = ctx.hub
    loaded = await _eval(ctx)
    state: ev.EvaluationState = loaded.state
    if hub.media is None:
        raise E.NotAllowedInState("no media backend on this server / 本服务器未启用音视频")
    role = ctx.who.role
    if role == "room" and ctx.who.party_id not in state.rooms:
        raise E.NotPermitted("this room is not drawn for this evaluation / 本评标室未被抽中")
    if role == "supervisor" and (body.watch is None or body.watch not in state.rooms):
        raise Invalid("watch: a room of this evaluation / watch 须为本评标的评标室")
    watch_by_subscription = bool(getattr(hub.media, "watch_by_subscription", False))
    if role == "supervisor" and watch_by_subscription:
        raise MediaSubscribe()
    offer = {"sdp": body.sdp, "type": body.type}
    peer = ctx.who.party_id
    lead = role == "room" and state.rooms.get(peer, {}).get("role") == "lead"
    try:
        answer = await _answer(hub, ctx, peer, role, offer, body, state, lead)
    except (ValueError, LookupError) as exc:
        raise Invalid(f"offer: {exc}"[:500]) from None
    return EV.AnswerOut(
        sdp=answer["sdp"], type=answer["type"], watch_by_subscription=watch_by_subscription
    )


MediaSubscribe = E.refusal(
    "MediaSubscribe",
    "MEDIA_SUBSCRIBE",
    409,
    "本服务器的音视频由媒体服务器发起观看连接：请改用 media/subscribe",
    "this server's media server offers watched feeds itself: use media/subscribe",
)
MediaWatchByOffer = E.refusal(
    "MediaWatchByOffer",
    "MEDIA_WATCH_BY_OFFER",
    409,
    "本服务器在 media/offer 的连接上发送观看画面，无需订阅",
    "this server sends watched feeds on the media/offer link: no subscription is needed",
)
MediaNotLinked = E.refusal(
    "MediaNotLinked",
    "MEDIA_NOT_LINKED",
    409,
    "该评标室尚未连线，请稍后重试",
    "that room is not linked yet: try again shortly",
)

MediaUnavailable = E.refusal(
    "MediaUnavailable",
    "MEDIA_UNAVAILABLE",
    503,
    "媒体服务器暂不可用，请稍后重试",
    "the media server is not available at the moment: try again shortly",
)


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/media/subscribe",
    "WebRTC through a media server (Janus): receive a room's feed; the server offers it. A "
    "secondary room receives the lead room's (the host feed); a supervisor any room's",
    body=EV.SubscribeIn,
    response=EV.SubscriptionOut,
    roles=("room", "supervisor"),
    tag="room",
)
async def media_subscribe(ctx: Ctx, body: EV.SubscribeIn) -> EV.SubscriptionOut:
    hub = ctx.hub
    state: ev.EvaluationState = (await _eval(ctx)).state
    if hub.media is None:
        raise E.NotAllowedInState("no media backend on this server / 本服务器未启用音视频")
    if not getattr(hub.media, "watch_by_subscription", False):
        raise MediaWatchByOffer()
    peer = ctx.who.party_id
    watch = body.watch
    if ctx.who.role == "room":
        # a room receives the host feed only, and is not told which room is the lead (views)
        lead = next((r for r, v in state.rooms.items() if v.get("role") == "lead"), None)
        if peer not in state.rooms:
            raise E.NotPermitted("this room is not drawn for this evaluation / 本评标室未被抽中")
        if watch is not None or lead is None or lead == peer:
            raise E.NotPermitted(
                "a secondary room receives only the host feed; leave watch out / "
                "副场评标室只能接收主场画面，请勿指定 watch"
            )
        watch = lead
    elif watch is None or watch not in state.rooms:
        raise Invalid("watch: a room of this evaluation / watch 须为本评标的评标室")
    try:
        offer = await hub.media.subscribe(ctx.session_id, peer, watch)
    except LookupError:
        raise MediaNotLinked() from None
    except Exception as exc:  # Janus away or refusing: nothing was set up
        raise MediaUnavailable(str(exc)[:300]) from None
    return EV.SubscriptionOut(
        subscription=hub.relay.name(offer["subscription"]), sdp=offer["sdp"], type="offer"
    )


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/media/subscriptions/{subscription}/answer",
    "WebRTC through a media server: the watcher's answer to the offer of media/subscribe (any "
    "server process takes it and hands it to the one holding the subscription)",
    body=EV.SubscriptionAnswerIn,
    response=S.OkOut,
    roles=("room", "supervisor"),
    tag="room",
)
async def media_subscription_answer(ctx: Ctx, body: EV.SubscriptionAnswerIn) -> S.OkOut:
    hub = ctx.hub
    await _eval(ctx)  # the session exists and the caller is admitted
    answer = {"sdp": body.sdp, "type": body.type}
    subscription = ctx.request.match_info["subscription"]
    await hub.relay.answer(subscription, ctx.session_id, ctx.who.party_id, answer)
    return S.OkOut()


async def _answer(
    hub: Hub,
    ctx: Ctx,
    peer: str,
    role: str,
    offer: dict[str, Any],
    body: EV.OfferIn,
    state: ev.EvaluationState,
    lead: bool,
) -> dict[str, Any]:
    answer: dict[str, Any] = await hub.media.answer(
        ctx.session_id,
        peer,
        role,
        offer,
        watch=body.watch,
        host_feed=lead,
        recorded=int(state.rooms.get(peer, {}).get("segments", 0)),
    )
    return answer


# --- committee members -------------------------------------------------------------------------------


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/vote",
    "Vote for the chair (推选评标委员会主任)",
    body=EV.VoteIn,
    response=S.OkOut,
    roles=MEMBER_ROLES,
    tag="committee",
)
async def vote(ctx: Ctx, body: EV.VoteIn) -> S.OkOut:
    return await _do(ctx, ev.Vote(actor=_actor(ctx), candidate=body.candidate))


async def _member_cert(ctx: Ctx, signature: str, expected: bytes) -> None:
    """The signature is the member's own, over exactly ``expected``, with the signed-in cert."""
    loaded = await _eval(ctx)
    member = loaded.state.members.get(ctx.who.party_id)
    doc = read_document(b64decode(signature))
    if doc.content != expected:
        raise SignatureInvalid("the signed content differs / 签名内容不符")
    if member is None or member.cert_sha256 != cert_sha256(doc.signer):
        raise SignatureInvalid("not the certificate used at sign-in / 非签到时使用的证书")
    await ctx.hub.trust.avalidate(
        doc.signer, "login", ctx.hub.clock.now(), extra_intermediates=doc.certificates
    )


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/sheets",
    "Submit one's review or score sheet for the current stage, signed with one's CA key",
    body=EV.SheetIn,
    response=S.OkOut,
    roles=MEMBER_ROLES,
    tag="committee",
)
async def submit_sheet(ctx: Ctx, body: EV.SheetIn) -> S.OkOut:
    expected = EV.sheet_document(ctx.session_id, ctx.who.party_id, body.stage, body.content)
    await _member_cert(ctx, body.signature, expected)
    cmd = ev.SubmitSheet(
        actor=_actor(ctx), stage=body.stage, content=body.content, signature=body.signature
    )
    return await _do(ctx, cmd)


@routes.route(
    "GET",
    "/api/evaluations/{session_id}/sheets/{stage}",
    "One's own sheet, and the others' once one's own is in",
    response=EV.SheetsOut,
    roles=(*MEMBER_ROLES, "supervisor"),
    tag="committee",
)
async def get_sheets(ctx: Ctx) -> EV.SheetsOut:
    loaded = await _eval(ctx)
    stage = ctx.request.match_info["stage"]
    sheets = loaded.state.sheets.get(stage, {})
    me = ctx.who.party_id
    own = sheets.get(me)
    # Eval rule 8: the others' sheets only after one's own is in (the supervisor sees all).
    show = ctx.who.role == "supervisor" or (
        own is not None and me not in loaded.state.reopened.get(stage, [])
    )
    others = [s.model_dump(mode="json") for k, s in sorted(sheets.items()) if k != me and show]
    return EV.SheetsOut(
        stage=stage, own=own.model_dump(mode="json") if own else None, others=others
    )


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/rescore",
    "The chair calls a re-score where an expert deviates beyond the threshold",
    body=EV.RescoreIn,
    response=S.OkOut,
    roles=MEMBER_ROLES,
    tag="committee",
)
async def rescore(ctx: Ctx, body: EV.RescoreIn) -> S.OkOut:
    cmd = ev.CallRescore(actor=_actor(ctx), expert_id=body.expert_id, reason=body.reason)
    return await _do(ctx, cmd)


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/close-stage",
    "The chair concludes the current stage (every member's sheet in)",
    response=S.OkOut,
    roles=MEMBER_ROLES,
    tag="committee",
)
async def close_stage(ctx: Ctx) -> S.OkOut:
    return await _do(ctx, ev.CloseStage(actor=_actor(ctx)))


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/summarize",
    "The chair computes the ranking; the server issues the report for signing",
    response=S.OkOut,
    roles=MEMBER_ROLES,
    tag="committee",
)
async def summarize(ctx: Ctx) -> S.OkOut:
    records = await ctx.hub.service.execute(ctx.session_id, ev.Summarize(actor=_actor(ctx)))
    more = await generate_report(ctx.hub, ctx.session_id)
    return S.OkOut(seq=_seq(more) or _seq(records))


async def generate_report(hub: Hub, session_id: str) -> list[Any]:
    loaded = await hub.service.load(session_id, kind="evaluation")
    if loaded is None or loaded.state.status != "signing" or loaded.state.report_sha256:
        return []
    report = ev.build_report(loaded.state, loaded.version, loaded.head_hash)
    raw = canonical_json(report)
    blob = await hub.blobs.put_bytes(raw)
    signature = hub.identity.sign_json(report, hub.clock.now())
    cmd = ev.GenerateReport(actor=ev.SERVER, report_sha256=blob.sha256, signature=signature)
    return await hub.service.execute(session_id, cmd)


async def report_of(hub: Hub, state: ev.EvaluationState) -> tuple[dict[str, Any], str]:
    if state.report_sha256 is None:
        raise E.NotAllowedInState("the report is not ready / 评标报告尚未生成")
    blob = hub.blobs.path(state.report_sha256)
    report: dict[str, Any] = json.loads(blob.read_bytes())
    if hashlib.sha256(canonical_json(report)).hexdigest() != state.report_sha256:
        raise E.NotAllowedInState("stored report damaged / 存储的报告已损坏")
    events = await hub.store.events_after(state.session_id, 0)
    sig = next(e.payload["signature"] for e in events if e.type == "report_generated")
    return report, sig


@routes.route(
    "GET",
    "/api/evaluations/{session_id}/report",
    "The evaluation report (JSON and text) with the members' signatures",
    response=EV.ReportOut,
    roles=(*STAFF, "expert", "room"),
    tag="committee",
)
async def get_report(ctx: Ctx) -> EV.ReportOut:
    loaded = await _eval(ctx)
    state: ev.EvaluationState = loaded.state
    report, sig = await report_of(ctx.hub, state)
    signatures = {k: v.model_dump(mode="json") for k, v in state.report_signatures.items()}
    return EV.ReportOut(
        report=report,
        text=ev.report_text(report, signatures),
        sha256=state.report_sha256 or "",
        server_signature=sig,
        signatures=signatures,
    )


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/report/sign",
    "Sign the report: agree, or disagree with a written reason",
    body=EV.ReportSignIn,
    response=S.OkOut,
    roles=MEMBER_ROLES,
    tag="committee",
)
async def sign_report(ctx: Ctx, body: EV.ReportSignIn) -> S.OkOut:
    loaded = await _eval(ctx)
    sha = loaded.state.report_sha256 or ""
    expected = EV.report_document(ctx.session_id, ctx.who.party_id, sha, body.agree, body.reason)
    await _member_cert(ctx, body.signature, expected)
    cmd = ev.SignReport(
        actor=_actor(ctx), agree=body.agree, reason=body.reason, signature=body.signature
    )
    return await _do(ctx, cmd)


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/report/refuse",
    "Refuse to sign; without a reason this counts as agreement (实施条例 art. 53)",
    body=EV.RefuseIn,
    response=S.OkOut,
    roles=MEMBER_ROLES,
    tag="committee",
)
async def refuse_report(ctx: Ctx, body: EV.RefuseIn) -> S.OkOut:
    return await _do(ctx, ev.RefuseToSign(actor=_actor(ctx), reason=body.reason))


# --- the expert desk: the bids' documents, the forms, the signature relay ---------------------------

DocumentPathInvalid = E.refusal(
    "DocumentPathInvalid",
    "DOCUMENT_PATH_INVALID",
    422,
    "文件路径无效：须为投标文件包清单中的文件",
    "the document path is not valid: give a file listed in the bid package's manifest",
)

# How a document is served: never as something the browser would run (HTML, SVG, scripts are
# text or a download), and always sandboxed (Content-Security-Policy: sandbox), so a hostile
# document cannot script the desk.
SAFE_TYPES = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".txt": "text/plain; charset=utf-8",
    ".json": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8",
    ".xml": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".html": "text/plain; charset=utf-8",
    ".htm": "text/plain; charset=utf-8",
}
DOCUMENT_CSP = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
_CHUNK = 256 * 1024

# envelope SHA-256 -> (package SHA-256, manifest): the same envelope always opens to the same
# package, so this is a cache, never a source of truth.
_PACKAGES: dict[str, tuple[str, Any]] = {}


def content_type_of(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    return SAFE_TYPES.get(suffix, "application/octet-stream")


async def _member_view(ctx: Ctx) -> ev.EvaluationState:
    loaded = await _eval(ctx)
    state: ev.EvaluationState = loaded.state
    ev.documents_open(state, ctx.who.role, ctx.who.party_id)
    return state


async def _package(hub: Hub, state: ev.EvaluationState, bidder: str) -> tuple[Path, Any]:
    """The decrypted package of ``bidder``'s bid (a blob) and its checked manifest.

    The opening stored the package when it decrypted the bid and kept the content key; the
    package's own hash is not in the opening's log, so it is found again by opening the stored
    envelope with the kept key (the tag and the bidder's signature are checked once more)."""
    bid = state.bids.get(bidder)
    if bid is None:
        raise NotFound(f"bid {bidder}")
    cached = _PACKAGES.get(bid.envelope_sha256)
    if cached is not None and hub.blobs.has(cached[0]):
        return hub.blobs.path(cached[0]), cached[1]
    keys = await hub.store.bid_keys(state.opening_session_id)
    cek = keys.get(bid.envelope_sha256)
    if cek is None:
        raise E.NotAllowedInState("the bid's content key is not on record / 未找到该投标的解密记录")
    work = Path(tempfile.mkdtemp(prefix="desk-", dir=hub.settings.data_dir))
    try:
        out = work / "package.zip"
        envelope = hub.blobs.path(bid.envelope_sha256)
        await asyncio.to_thread(decrypt_with_key, envelope, bytes.fromhex(cek), out)
        blob = await hub.blobs.put_file(out)  # stored by the opening already: the same blob
    finally:
        shutil.rmtree(work, ignore_errors=True)
    path = hub.blobs.path(blob.sha256)
    info = await asyncio.to_thread(verify_package, path)
    _PACKAGES[bid.envelope_sha256] = (blob.sha256, info.manifest)
    return path, info.manifest


@routes.route(
    "GET",
    "/api/evaluations/{session_id}/forms",
    "The review forms' definition: criteria with their maxima, pass/fail items per stage",
    response=EV.FormsOut,
    roles=(*STAFF, "expert"),
    tag="committee",
)
async def forms(ctx: Ctx) -> EV.FormsOut:
    loaded = await _eval(ctx)
    state: ev.EvaluationState = loaded.state
    return EV.FormsOut(
        method=state.config.method.model_dump(mode="json"),
        review_items=[i.model_dump(mode="json") for i in state.config.review_items],
        stages=state.stages(),
    )


@routes.route(
    "GET",
    "/api/evaluations/{session_id}/bids",
    "The bids under evaluation with their documents (committee members, once started)",
    response=EV.BidsOut,
    roles=("expert",),
    tag="committee",
)
async def list_bids(ctx: Ctx) -> EV.BidsOut:
    state = await _member_view(ctx)
    out = []
    for bidder in sorted(state.bids):
        bid = state.bids[bidder]
        path, manifest = await _package(ctx.hub, state, bidder)
        out.append(
            EV.BidDocuments(
                bidder=bidder,
                name=bid.name,
                price_fen=bid.price_fen,
                envelope_sha256=bid.envelope_sha256,
                package_sha256=path.name,
                documents=[
                    EV.BidDocument(
                        path=f.path,
                        size=f.size,
                        sha256=f.sha256,
                        content_type=content_type_of(f.path),
                    )
                    for f in manifest.files
                ],
            )
        )
    return EV.BidsOut(bids=out)


@routes.route(
    "GET",
    "/api/evaluations/{session_id}/document",
    "One document of a bid (?bidder=CODE&path=FILE), served inline, sandboxed and not sniffed",
    roles=("expert",),
    raw="application/octet-stream",
    tag="committee",
)
async def get_document(ctx: Ctx) -> web.StreamResponse:
    query = ctx.request.query
    name, bidder = query.get("path", ""), query.get("bidder", "")
    try:
        check_member_name(name)
    except PackageError:
        raise DocumentPathInvalid(repr(name)[:200]) from None
    if name == MANIFEST_NAME:
        raise DocumentPathInvalid(name)
    state = await _member_view(ctx)
    if not bidder:
        raise Invalid("bidder: the bidder's credit code / 须给出投标人代码")
    path, manifest = await _package(ctx.hub, state, bidder)
    entry = next((f for f in manifest.files if f.path == name), None)
    if entry is None:
        raise NotFound(f"document {name}")
    filename = quote(PurePosixPath(name).name, safe="")
    response = web.StreamResponse(
        headers={
            "Content-Type": content_type_of(name),
            "Content-Disposition": f"inline; filename*=UTF-8''{filename}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": DOCUMENT_CSP,
            "Cache-Control": "private, no-store",
            "X-Document-SHA256": entry.sha256,
            "Content-Length": str(entry.size),
        }
    )
    await response.prepare(ctx.request)
    with zipfile.ZipFile(path) as zf, zf.open(name) as member:
        while chunk := await asyncio.to_thread(member.read, _CHUNK):
            await response.write(chunk)
    await response.write_eof()
    return response


@routes.route(
    "POST",
    "/api/evaluations/{session_id}/to-sign",
    "Hand a draft (a sheet, or one's answer to the report) to one's room device for signing",
    body=EV.SignRequestIn,
    response=S.OkOut,
    roles=MEMBER_ROLES,
    tag="committee",
)
async def request_signature(ctx: Ctx, body: EV.SignRequestIn) -> S.OkOut:
    await _eval(ctx)
    cmd = ev.RequestSignature(
        actor=_actor(ctx),
        kind=body.kind,  # type: ignore[arg-type]
        stage=body.stage,
        content=body.content,
        agree=body.agree,
        reason=body.reason,
    )
    return await _do(ctx, cmd)


@routes.route(
    "GET",
    "/api/evaluations/{session_id}/members/{expert_id}/to-sign",
    "The draft waiting for an expert's signature (the expert, or the expert's room device)",
    response=EV.ToSignOut,
    roles=("expert", "room"),
    tag="committee",
)
async def get_to_sign(ctx: Ctx) -> EV.ToSignOut:
    loaded = await _eval(ctx)
    expert_id = ctx.request.match_info["expert_id"]
    draft = ev.draft_for(loaded.state, ctx.who.role, ctx.who.party_id, expert_id)
    return EV.ToSignOut(draft=draft or None)
