"""A bidder's bid before the deadline (rules 1-4): hall sign-in, upload with receipt, withdrawal, download, rehearsal, deposit and guarantee."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from crypto.envelope import inspect_envelope, is_addressed_to
from crypto.errors import BidBridgeError
from crypto.guarantee import Expectation, verify_guarantee
from schemas import api as S
from schemas.events import EventRecord
from schemas.time import iso
from server.api.bindings import bound_caller
from server.api.origin import request_origin
from server.api.routing import Ctx, Route, delete, execute, get, load_session, pos_of, post, put
from server.api.shared import CHUNK, stored_cert
from server.auth import (
    PartyUnknown,
)
from server.domain import binding
from server.domain import errors as E
from server.domain import opening as op
from server.work.decryption import session_info

log = logging.getLogger(__name__)


class UploadTruncated(BidBridgeError):
    code = "UPLOAD_TRUNCATED"
    zh = "上传不完整（连接中断或长度不符），请重新上传"
    en = "the upload is incomplete (connection dropped or length mismatch); upload again"
    status = 400


async def _body_chunks(
    request: web.Request,
    declared: int | None,
    at_end: Callable[[], Awaitable[None]] | None = None,
) -> Any:
    """The request body in chunks; ``at_end`` runs once the last byte is in (it may refuse)."""
    received = 0
    try:
        async for chunk in request.content.iter_chunked(CHUNK):
            received += len(chunk)
            yield chunk
    except Exception as exc:  # aiohttp's payload errors: the client went away mid-upload
        raise UploadTruncated(type(exc).__name__) from None
    if declared is not None and received != declared:
        raise UploadTruncated(f"{received} of {declared} bytes")
    if at_end is not None:
        await at_end()


async def deposit(ctx: Ctx, body: S.DepositIn) -> S.OkOut:
    """Confirm a bidder's deposit (投标保证金)"""
    loaded = await load_session(ctx)
    sec = op.deposit_security(loaded.state, body.amount_fen, body.reference)
    return await execute(ctx, op.SetSecurity(actor=ctx.actor, bidder=body.bidder, security=sec))


async def upload(ctx: Ctx) -> S.ReceiptOut:
    """Upload or replace the sealed bid (streamed; rules 1-3); returns the signed receipt"""
    hub = ctx.hub
    loaded = await load_session(ctx)

    # Refuse before reading a byte when the upload could not be accepted anyway (rule 1).
    op.may_upload(loaded.state, ctx.actor, hub.clock.now())
    company = await hub.store.get_company(ctx.who.party_id)
    if company is None:
        raise PartyUnknown(ctx.who.party_id)
    declared = ctx.request.content_length
    if declared is not None and declared > hub.settings.upload_limit:
        from server.store import BlobTooLarge

        raise BlobTooLarge(hub.settings.upload_limit)
    # The company acts only through its bound certificates: the one this token was issued for
    # must still be bound (an unbinding takes effect at once), and rule 3 below accepts an
    # envelope addressed to any encryption certificate bound to the company now.
    rows = await bound_caller(ctx)
    recipients = binding.bound_now(binding.from_rows(rows), "encryption", hub.clock.now())
    pems = {r.cert_sha256: r.cert_pem for r in rows}
    enc_certs = [stored_cert(pems[sha], "bound encryption certificate") for sha in recipients]
    origin = await request_origin(ctx)
    received: list[datetime] = []
    async with contextlib.AsyncExitStack() as hold:

        async def last_byte_in_time() -> None:
            # Rule 1: server time when the last byte arrived decides. From here until the upload
            # is committed the session's next transition waits (the scheduler holds a session
            # with work in flight), so an upload in time is never refused because the deadline
            # fired while it was being stored. Held first, then judged: a deadline that the
            # scheduler found due before the hold is also past by this clock.
            await hold.enter_async_context(
                hub.coord.busy(ctx.session_id, "upload:" + secrets.token_hex(8))
            )
            now = hub.clock.now()
            op.may_upload((await load_session(ctx)).state, ctx.actor, now)
            received.append(now)

        def check(path: Path) -> None:
            # Rule 3: a valid envelope addressed to one of the company's bound encryption
            # certificates.
            info = inspect_envelope(path)
            op.check_recipient(any(is_addressed_to(info, c) for c in enc_certs))

        blob = await hub.blobs.receive(
            _body_chunks(ctx.request, declared, last_byte_in_time),
            limit=hub.settings.upload_limit,
            check=check,
        )
        now = received[0]  # time of receipt: when the last byte arrived
        receipt = {
            "receipt_id": secrets.token_hex(8),
            "session_id": ctx.session_id,
            "lot_id": loaded.state.lot_id,
            "bidder": ctx.who.party_id,
            "bidder_name": company.name,
            "envelope_sha256": blob.sha256,
            "size": blob.size,
            "received_at": iso(now),
        }
        signature = hub.identity.sign_json(receipt, now)
        try:
            records = await hub.service.execute(
                ctx.session_id,
                op.Upload(
                    actor=ctx.actor,
                    envelope_sha256=blob.sha256,
                    size=blob.size,
                    receipt=receipt,
                    receipt_signature=signature,
                    origin=origin,
                ),
                now=now,
            )
        except E.Refusal:
            await hub.blobs.discard(blob)  # refused: never recorded, so nothing is kept
            raise
        # Any other failure leaves the file staged: the record may hold the upload (a lost
        # database answer) and the blob collector settles it against the log.
        try:
            await hub.blobs.keep(blob)
        except OSError:  # recorded, so the collector places it from tmp; the bid is not lost
            log.exception("upload %s recorded but not yet placed", blob.sha256)
    return S.ReceiptOut(receipt=receipt, signature=signature, pos=pos_of(ctx, records))


async def download_own(ctx: Ctx) -> web.StreamResponse:
    """Download one's own stored envelope (for the rehearsal)"""
    loaded = await load_session(ctx)
    await bound_caller(ctx)
    bid = loaded.state.bids.get(ctx.who.party_id)
    if bid is None or bid.status == "retracted":
        raise E.NoBid()
    path = ctx.hub.blobs.path(bid.envelope_sha256)
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/pkcs7-mime",
            "X-Envelope-SHA256": bid.envelope_sha256,
        },
    )


async def own_receipt(ctx: Ctx) -> S.ReceiptOut:
    """One's own receipt and its signature"""
    await load_session(ctx)
    await bound_caller(ctx)
    tag = op.bidder_tag(ctx.who.party_id)
    last: EventRecord | None = None
    for r in await ctx.hub.store.events_after(ctx.session_id, 0):
        if r.type == "bid_uploaded" and r.audience == [tag]:
            last = r
    if last is None:
        raise E.NoBid()
    return S.ReceiptOut(
        receipt=last.payload["receipt"],
        signature=last.payload["receipt_signature"],
        pos=pos_of(ctx, [last]),
    )


async def retract(ctx: Ctx) -> S.OkOut:
    """Withdraw the bid before the deadline (撤回)"""
    await bound_caller(ctx)
    return await execute(ctx, op.Retract(actor=ctx.actor))


async def rehearsal(ctx: Ctx, body: S.RehearsalIn) -> S.OkOut:
    """Report the decryption rehearsal's result"""
    origin = await request_origin(ctx)
    return await execute(
        ctx,
        op.Rehearse(
            actor=ctx.actor,
            passed=body.passed,
            code=body.code,
            message=body.message,
            origin=origin,
        ),
    )


async def guarantee(ctx: Ctx, body: S.GuaranteeIn) -> S.OkOut:
    """Lodge an electronic guarantee (电子保函)"""
    hub = ctx.hub
    loaded = await load_session(ctx)
    info = await session_info(hub, ctx.session_id)
    state = loaded.state
    expect = Expectation(
        bidder=ctx.who.party_id,
        beneficiary_credit_code=info["tenderer_credit_code"],
        project_code=info["project_code"],
        lot_code=info["lot_code"],
        min_amount_fen=state.timetable.security_required_fen or 0,
        cover_until=(
            state.timetable.deadline + timedelta(days=info.get("bid_valid_days", 90))
        ).date(),
    )
    g = await verify_guarantee(body.signature, expect, hub.trust, hub.clock.now())
    sec = op.Security(
        kind="guarantee",
        status="valid",
        amount_fen=g.amount_fen,
        detail=f"{g.guarantor_name} {g.guarantee_no}",
    )
    return await execute(
        ctx, op.SetSecurity(actor=op.SERVER, bidder=ctx.who.party_id, security=sec)
    )


async def sign_in(ctx: Ctx) -> S.OkOut:
    """签到: sign in to the hall"""
    return await execute(ctx, op.SignIn(actor=ctx.actor, origin=await request_origin(ctx)))


# fmt: off
ROUTES: list[Route] = [
    post("/api/sessions/{session_id}/deposits", deposit, ("centre",), body=S.DepositIn, response=S.OkOut, tag="centre"),
    post("/api/sessions/{session_id}/sign-in", sign_in, ("bidder",), response=S.OkOut),
    put("/api/sessions/{session_id}/bid", upload, ("bidder",), response=S.ReceiptOut, raw="application/octet-stream"),
    delete("/api/sessions/{session_id}/bid", retract, ("bidder",), response=S.OkOut),
    get("/api/sessions/{session_id}/bid", download_own, ("bidder",), raw="application/pkcs7-mime"),
    get("/api/sessions/{session_id}/receipt", own_receipt, ("bidder",), response=S.ReceiptOut),
    post("/api/sessions/{session_id}/rehearsal", rehearsal, ("bidder",), body=S.RehearsalIn, response=S.OkOut),
    post("/api/sessions/{session_id}/guarantee", guarantee, ("bidder",), body=S.GuaranteeIn, response=S.OkOut),
]
# fmt: on
