"""After decryption: objections (异议) and answers, confirmation, and the signed opening record (rules 10-12)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from crypto import errors as CE
from crypto.attest import b64decode, read_document
from crypto.ca import credit_code_of
from schemas import api as S
from schemas.canonical import canonical_json
from server.api.bindings import bound_caller
from server.api.routing import Ctx, Route, command, execute, get, load_session, post
from server.api.shared import STAFF, check_own_signature, in_remit, load_opening
from server.core import Hub
from server.domain import errors as E
from server.domain import opening as op
from server.store import NotFound
from server.work.record import generate_record_if_due


async def record_of(hub: Hub, session_id: str) -> tuple[dict[str, Any], bytes, dict[str, str]]:
    loaded = await hub.service.load(session_id)
    if loaded is None:
        raise NotFound(session_id)
    sha = loaded.state.record_sha256
    if sha is None:
        raise E.NotAllowedInState("the record has not been generated yet / 开标记录尚未生成")
    raw = hub.blobs.path(sha).read_bytes()
    signatures: dict[str, str] = {}
    for r in await hub.store.events_after(session_id, 0):
        if r.type == "record_generated":
            signatures["server"] = r.payload["signature"]
        elif r.type == "record_signed":
            signatures[r.payload["role"]] = r.payload["signature"]
    return json.loads(raw), raw, signatures


async def reply(ctx: Ctx, body: S.ReplyIn) -> S.OkOut:
    """Answer an objection, and with ``also`` the others that say the same (rule 11)"""
    try:
        oid = int(ctx.request.match_info["objection_id"])
    except ValueError:
        raise E.UnknownObjection() from None
    done = await execute(
        ctx, op.Reply(actor=ctx.actor, objection_id=oid, text=body.text, also=body.also)
    )
    await generate_record_if_due(ctx.hub, ctx.session_id)  # the last answer may release it
    return done


async def confirm(ctx: Ctx, body: S.SignatureIn) -> S.OkOut:
    """Confirm the opening table with a CA signature (rule 11)"""
    hub = ctx.hub
    await bound_caller(ctx)
    loaded = await load_session(ctx)
    table = loaded.state.table
    if table is None:
        raise E.NotAllowedInState("no table yet / 尚未公布开标记录表")
    doc = read_document(b64decode(body.signature))
    if doc.content != canonical_json(table):
        raise E.TableMismatch()
    if credit_code_of(doc.signer) != ctx.who.party_id:
        raise CE.SignerNotBidder(
            "the confirmation is not signed by your company / 确认签名不是本单位证书"
        )
    await hub.trust.avalidate(
        doc.signer, "bid_signature", hub.clock.now(), extra_intermediates=doc.certificates
    )
    sha = hashlib.sha256(doc.content).hexdigest()
    return await execute(
        ctx, op.Confirm(actor=ctx.actor, table_sha256=sha, signature=body.signature)
    )


async def get_record(ctx: Ctx) -> S.RecordOut:
    """The opening record (JSON and text) with its signatures"""
    record, raw, signatures = await record_of(ctx.hub, ctx.session_id)
    return S.RecordOut(
        record=record,
        text=op.record_text(record),
        sha256=hashlib.sha256(raw).hexdigest(),
        signatures=signatures,
    )


async def sign_record(ctx: Ctx, body: S.SignatureIn) -> S.OkOut:
    """Host or supervisor signs the record (rule 12)"""
    hub = ctx.hub
    _, raw, _ = await record_of(hub, ctx.session_id)
    doc = read_document(b64decode(body.signature))
    if doc.content != raw:
        raise E.TableMismatch("the signature covers another document / 签名内容不是当前开标记录")
    await check_own_signature(ctx, doc, "bid_signature")
    sha = hashlib.sha256(raw).hexdigest()
    return await execute(
        ctx, op.SignRecord(actor=ctx.actor, record_sha256=sha, signature=body.signature)
    )


# fmt: off
ROUTES: list[Route] = [
    command("/api/sessions/{session_id}/confirmation", op.OpenConfirmation, ("host",), "Open the confirmation window (rule 11)", tag="host"),
    post("/api/sessions/{session_id}/objections/{objection_id}/reply", reply, ("host",), body=S.ReplyIn, response=S.OkOut, tag="host"),
    command("/api/sessions/{session_id}/objections", op.Object, ("bidder",), "Raise an objection (异议, rule 11)", body=S.TextIn),
    post("/api/sessions/{session_id}/confirm", confirm, ("bidder",), body=S.SignatureIn, response=S.OkOut),
    in_remit(get("/api/sessions/{session_id}/record", get_record, ("bidder", *STAFF), response=S.RecordOut), load_opening),
    in_remit(post("/api/sessions/{session_id}/record/sign", sign_record, ("host", "supervisor"), body=S.SignatureIn, response=S.OkOut, tag="host"), load_opening),
]
# fmt: on
