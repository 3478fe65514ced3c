"""The committee (评标委员会): the verifiable draw, members declining or replaced, sign-in at the room, the chair's election.

两随机四不知: the host and the centre do not know who was drawn, so what they say about an
expert (declined, to be replaced) is answered the same whether or not the expert is a member,
and moves what they can see by the same amount (server/domain/evaluation_committee.py)."""

from __future__ import annotations

import hashlib
import secrets

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import TypeAdapter, ValidationError

from crypto.attest import b64decode, read_document
from schemas import api as S
from schemas import evaluation as EV
from schemas.canonical import canonical_json
from schemas.experts import Expert, Ident
from server.api.routing import Ctx, Invalid, Route, command, execute, get, pos_of, post
from server.api.shared import (
    MEMBER_ROLES,
    SignatureInvalid,
    eval_actor,
    in_remit,
    load_evaluation,
    sites_of,
    supervisors_in_remit,
)
from server.auth import (
    ChallengeInvalid,
    Principal,
    token_lifetime,
)
from server.core import Hub
from server.domain import draw as D
from server.domain import errors as E
from server.domain import evaluation as ev
from server.identity import cert_sha256

_IDENT: TypeAdapter[str] = TypeAdapter(Ident)


def person_id_of(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None


def _expert_token(
    hub: Hub, session_id: str, expert_id: str, name: str, fp: str, pos: dict[str, int] | None
) -> EV.ExpertSignInOut:
    """The member's bearer token, named for their certificate and bound to this evaluation."""
    member = Principal("expert", expert_id, name, fp, session_id)
    token, exp = hub.tokens.issue(member, hub.clock.now())
    return EV.ExpertSignInOut(
        token=token,
        expert_id=expert_id,
        name=name,
        expires_at=exp,
        expires_in=token_lifetime(hub.tokens, hub.clock),
        pos=pos,
    )


def _common_name(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else ""


async def begin_draw(ctx: Ctx) -> S.OkOut:
    """Begin the draw: the server commits to its random value (published)"""
    await load_evaluation(ctx)
    stored = await ctx.hub.store.put_draw_secret(ctx.session_id, secrets.token_hex(32))
    commitment = D.commitment(bytes.fromhex(stored))
    return await execute(ctx, ev.BeginDraw(actor=eval_actor(ctx), commitment=commitment))


async def run_draw(ctx: Ctx) -> S.OkOut:
    """Draw the committee and the secondary rooms; the server reveals its random value"""
    hub = ctx.hub
    loaded = await load_evaluation(ctx)
    secret = await hub.store.draw_secret(ctx.session_id)
    if secret is None:
        raise E.NotAllowedInState("the draw has not begun / 抽取尚未开始")
    pool = [Expert.model_validate(e) for e in await hub.store.list_experts()]
    sites = await sites_of(hub)
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
        # seed 002 二(一)四: no draw without a supervisor of the project's remit present
        supervisors_in_remit=await supervisors_in_remit(hub, loaded.state.lot_id),
    )
    ev.decide(loaded.state, cmd, hub.clock.now())  # a refusal here leaves nothing behind
    await hub.blobs.put_bytes(raw)  # the draw's input is kept before the draw is recorded
    return await execute(ctx, cmd)


def _named_expert(ctx: Ctx) -> str:
    """The expert id in the path, checked as a pool id is (the same answer for any member)."""
    try:
        return _IDENT.validate_python(ctx.request.match_info["expert_id"])
    except ValidationError:
        raise Invalid("expert_id: not an expert id / 专家编号格式不符") from None


async def decline(ctx: Ctx, body: EV.ExpertReasonIn) -> S.OkOut:
    """Report that a drawn expert declined; a member is replaced by the next spare (the answer is the same whoever is named)"""
    cmd = ev.ReportDecline(actor=eval_actor(ctx), expert_id=_named_expert(ctx), reason=body.reason)
    return await execute(ctx, cmd)


async def replace(ctx: Ctx, body: EV.ExpertReasonIn) -> S.OkOut:
    """Ask that a member who cannot serve be replaced by the next spare (the answer is the same whoever is named)"""
    expert_id = _named_expert(ctx)
    cmd = ev.RequestReplacement(actor=eval_actor(ctx), expert_id=expert_id, reason=body.reason)
    return await execute(ctx, cmd)


async def expert_sign_in(ctx: Ctx, body: EV.ExpertSignInIn) -> EV.ExpertSignInOut:
    """Sign an expert in at this room with the expert's CA key (returns the expert's token)"""
    hub = ctx.hub
    now = hub.clock.now()
    loaded = await load_evaluation(ctx)
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
        return _expert_token(hub, ctx.session_id, body.expert_id, name, fp, None)
    cmd = ev.ExpertSignIn(
        actor=eval_actor(ctx),
        expert_id=body.expert_id,
        name=name,
        cert_sha256=fp,
        nonce=body.nonce,
        signature=body.signature,
    )
    records = await hub.service.execute(ctx.session_id, cmd)
    return _expert_token(hub, ctx.session_id, body.expert_id, name, fp, pos_of(ctx, records))


async def no_key(ctx: Ctx) -> S.OkOut:
    """Record that an expert came to the room without a CA key"""
    expert_id = ctx.request.match_info["expert_id"]
    return await execute(ctx, ev.NoKey(actor=eval_actor(ctx), expert_id=expert_id))


async def get_to_sign(ctx: Ctx) -> EV.ToSignOut:
    """The draft waiting for an expert's signature (the expert, or the expert's room device)"""
    loaded = await load_evaluation(ctx)
    expert_id = ctx.request.match_info["expert_id"]
    draft = ev.draft_for(loaded.state, ctx.who.role, ctx.who.party_id, expert_id)
    return EV.ToSignOut(draft=draft or None)


# fmt: off
ROUTES: list[Route] = [
    post("/api/evaluations/{session_id}/draw/begin", begin_draw, ("host", "centre"), response=S.OkOut, tag="evaluation"),
    in_remit(command("/api/evaluations/{session_id}/draw/entropy", ev.AddEntropy, ("host", "supervisor"), "Add the supervisor's or the host's random value to the draw", body=EV.EntropyIn, tag="evaluation"), load_evaluation),
    post("/api/evaluations/{session_id}/draw", run_draw, ("host", "centre"), response=S.OkOut, tag="evaluation"),
    post("/api/evaluations/{session_id}/members/{expert_id}/decline", decline, ("host", "centre"), body=EV.ExpertReasonIn, response=S.OkOut, tag="evaluation"),
    post("/api/evaluations/{session_id}/members/{expert_id}/replace", replace, ("host", "centre"), body=EV.ExpertReasonIn, response=S.OkOut, tag="evaluation"),
    post("/api/evaluations/{session_id}/sign-in", expert_sign_in, ("room",), body=EV.ExpertSignInIn, response=EV.ExpertSignInOut, tag="room"),
    post("/api/evaluations/{session_id}/members/{expert_id}/no-key", no_key, ("room",), response=S.OkOut, tag="room"),
    command("/api/evaluations/{session_id}/vote", ev.Vote, MEMBER_ROLES, "Vote for the chair (推选评标委员会主任)", body=EV.VoteIn, tag="committee"),
    get("/api/evaluations/{session_id}/members/{expert_id}/to-sign", get_to_sign, ("expert", "room"), response=EV.ToSignOut, tag="committee"),
]
# fmt: on
