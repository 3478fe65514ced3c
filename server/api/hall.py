"""REST handlers of the opening hall: thin (authenticate, parse, domain, store, publish)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import logging
import secrets
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from pydantic import BaseModel

from crypto import errors as CE
from crypto.attest import b64decode, b64encode, read_document
from crypto.bid import decrypt_with_key
from crypto.ca import credit_code_of
from crypto.envelope import inspect_envelope, is_addressed_to, unwrap_content_key
from crypto.errors import BidBridgeError
from crypto.fingerprint import FINGERPRINT
from crypto.fingerprint import HEADER as MACHINE_HEADER
from crypto.guarantee import Expectation, verify_guarantee
from crypto.keys import parse_certificate
from crypto.quorum import DecryptedShare, QuorumBundle, rebuild_backup_key
from schemas import api as S
from schemas.canonical import canonical_json
from schemas.events import EventRecord
from schemas.time import iso
from server.api.routing import Route, RouteTable, after_seq, parse_body
from server.app import HUB_KEY, Hub
from server.auth import (
    CHALLENGE_SECONDS,
    ChallengeInvalid,
    PartyUnknown,
    Principal,
    TokenInvalid,
    login_document,
    new_nonce,
    token_lifetime,
    verify_login,
)
from server.domain import errors as E
from server.domain import opening as op
from server.domain.views import view_for
from server.identity import cert_sha256
from server.realtime.coord import Busy
from server.service import cek_fingerprint
from server.store import NotFound

log = logging.getLogger(__name__)
routes = RouteTable()
STAFF = ("host", "supervisor", "centre")
CHUNK = 1024 * 1024
BACKUP_PURPOSE = "bidbridge-backup-approval"


@dataclass
class Ctx:
    hub: Hub
    request: web.Request
    principal: Principal | None

    @property
    def who(self) -> Principal:
        assert self.principal is not None
        return self.principal

    @property
    def actor(self) -> op.Actor:
        return op.Actor(role=self.who.role, id=self.who.party_id)  # type: ignore[arg-type]

    @property
    def session_id(self) -> str:
        return self.request.match_info["session_id"]


async def dispatch(request: web.Request, route: Route) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    principal = None
    if route.roles is not None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise TokenInvalid("no bearer token / 缺少登录凭证")
        principal = hub.tokens.check(header[7:].strip(), hub.clock.now())
        if principal.role not in route.roles:
            raise E.NotPermitted(f"{principal.role} may not call {route.method} {route.path}")
    ctx = Ctx(hub, request, principal)
    if route.body is not None:
        body = await parse_body(request, route.body)
        result = await route.handler(ctx, body)
    else:
        result = await route.handler(ctx)
    if isinstance(result, web.StreamResponse):
        return result
    assert isinstance(result, BaseModel)
    return web.json_response(
        result.model_dump(mode="json"), dumps=lambda v: json.dumps(v, ensure_ascii=False)
    )


async def _loaded(ctx: Ctx) -> Any:
    loaded = await ctx.hub.service.load(ctx.session_id)
    if loaded is None:
        raise NotFound(ctx.session_id)
    return loaded


async def _session_info(hub: Hub, session_id: str) -> dict[str, Any]:
    """The session's creation payload (lot, project, tenderer, backup bundle ...)."""
    first = await hub.store.events_after(session_id, 0, limit=1)
    if not first:
        raise NotFound(session_id)
    return first[0].payload


def _seq(records: list[EventRecord]) -> int | None:
    return records[-1].seq if records else None


# --- general ------------------------------------------------------------------------------------


@routes.route("GET", "/api/openapi.json", "OpenAPI document of this API", tag="meta")
async def openapi(ctx: Ctx) -> web.Response:
    return web.json_response(routes.openapi())


@routes.route(
    "GET",
    "/api/time",
    "Server time (the only authority for countdowns)",
    response=S.TimeOut,
    tag="meta",
)
async def server_time(ctx: Ctx) -> S.TimeOut:
    return S.TimeOut(now=ctx.hub.clock.now())


@routes.route(
    "POST",
    "/api/auth/challenge",
    "CA login, step 1: a fresh challenge",
    response=S.ChallengeOut,
    tag="auth",
)
async def challenge(ctx: Ctx) -> S.ChallengeOut:
    hub = ctx.hub
    now = hub.clock.now()
    nonce = new_nonce()
    expires = now + timedelta(seconds=CHALLENGE_SECONDS)
    await hub.store.add_challenge(nonce, expires)
    doc = login_document(nonce, hub.settings.server_id).decode("utf-8")
    return S.ChallengeOut(
        nonce=nonce, server=hub.settings.server_id, expires_at=expires, document=doc
    )


@routes.route(
    "POST",
    "/api/auth/login",
    "CA login, step 2: the signed challenge -> a token",
    body=S.LoginIn,
    response=S.LoginOut,
    tag="auth",
)
async def login(ctx: Ctx, body: S.LoginIn) -> S.LoginOut:
    hub = ctx.hub
    now = hub.clock.now()
    verified = await verify_login(body.signature, hub.settings.server_id, hub.trust, now)
    if not await hub.store.consume_challenge(verified.nonce, now):
        raise ChallengeInvalid("replayed or stale / 重放或过期")
    principal = await _principal_for(hub, verified.certificate, verified.credit_code)
    token, exp = hub.tokens.issue(principal, now)
    return S.LoginOut(
        token=token,
        role=principal.role,
        party_id=principal.party_id,
        name=principal.name,
        expires_at=exp,
        expires_in=token_lifetime(hub.tokens, hub.clock),
    )


async def _principal_for(hub: Hub, cert: x509.Certificate, code: str | None) -> Principal:
    fp = cert_sha256(cert)
    account = await hub.store.get_account(fp[:32])
    if account is not None:
        if account.role == "room":  # a room device acts as its room
            room = await hub.store.room_of_account(account.id)
            if room is None:
                raise PartyUnknown("room device without a room / 设备未绑定评标室")
            return Principal("room", room.id, account.name, fp)
        return Principal(account.role, account.id, account.name, fp)
    if code is not None:
        company = await hub.store.get_company(code)
        if company is not None:
            return Principal("bidder", code, company.name, fp)
    raise PartyUnknown(cert.subject.rfc4514_string())


# --- centre: parties, projects, lots, sessions --------------------------------------------------


def _cert(pem: str, what: str) -> x509.Certificate:
    return parse_certificate(pem.encode("ascii", "replace"), what)


@routes.route(
    "POST",
    "/api/companies",
    "Register a bidder company with its two certificates",
    body=S.CompanyIn,
    response=S.OkOut,
    roles=("centre",),
    tag="centre",
)
async def add_company(ctx: Ctx, body: S.CompanyIn) -> S.OkOut:
    hub = ctx.hub
    now = hub.clock.now()
    signing = _cert(body.signing_cert_pem, "signing certificate")
    encryption = _cert(body.encryption_cert_pem, "encryption certificate")
    for cert, purpose in ((signing, "bid_signature"), (encryption, "encryption")):
        await hub.trust.avalidate(cert, purpose, now)  # type: ignore[arg-type]
        if credit_code_of(cert) != body.credit_code:
            raise CE.CertificateError(
                f"{purpose}: 证书中的信用代码不符 / the certificate names another credit code"
            )
    await hub.store.add_company(
        body.credit_code, body.name, body.signing_cert_pem, body.encryption_cert_pem, now
    )
    return S.OkOut()


@routes.route(
    "POST",
    "/api/accounts",
    "Register a host, supervisor or centre account bound to its certificate",
    body=S.AccountIn,
    response=S.AccountOut,
    roles=("centre",),
    tag="centre",
)
async def add_account(ctx: Ctx, body: S.AccountIn) -> S.AccountOut:
    hub = ctx.hub
    cert = _cert(body.cert_pem, "account certificate")
    await hub.trust.avalidate(cert, "login", hub.clock.now())
    row = await hub.store.add_account(body.role, body.name, body.cert_pem, hub.clock.now())
    return S.AccountOut(id=row.id, role=row.role, name=row.name)


@routes.route(
    "POST",
    "/api/projects",
    "Create a project",
    body=S.ProjectIn,
    response=S.OkOut,
    roles=("centre", "host"),
    tag="centre",
)
async def add_project(ctx: Ctx, body: S.ProjectIn) -> S.OkOut:
    await ctx.hub.store.add_project(
        body.code, body.name, body.tenderer_name, body.tenderer_credit_code
    )
    return S.OkOut()


@routes.route(
    "POST",
    "/api/lots",
    "Create a lot (标段) of a project",
    body=S.LotIn,
    response=S.LotOut,
    roles=("centre", "host"),
    tag="centre",
)
async def add_lot(ctx: Ctx, body: S.LotIn) -> S.LotOut:
    if await ctx.hub.store.get_project(body.project_code) is None:
        raise NotFound(body.project_code)
    row = await ctx.hub.store.add_lot(body.project_code, body.code, body.name)
    return S.LotOut(id=row.id)


@routes.route(
    "POST",
    "/api/sessions",
    "Create a lot's opening session with its timetable (draft)",
    body=S.SessionIn,
    response=S.SessionOut,
    roles=("host", "centre"),
    tag="host",
)
async def create_session(ctx: Ctx, body: S.SessionIn) -> S.SessionOut:
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
        seq=records[-1].seq,
    )


@routes.route(
    "GET",
    "/api/sessions",
    "Sessions (status and timetable only)",
    response=S.SessionList,
    roles=("bidder", *STAFF),
)
async def list_sessions(ctx: Ctx) -> S.SessionList:
    out = []
    for row in await ctx.hub.store.list_sessions(kind="opening"):
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


@routes.route(
    "GET",
    "/api/sessions/{session_id}",
    "The session as the caller may see it (rule 4)",
    response=S.SessionOut,
    roles=("bidder", *STAFF),
)
async def get_session(ctx: Ctx) -> S.SessionOut:
    loaded = await _loaded(ctx)
    return S.SessionOut(
        session_id=ctx.session_id,
        view=view_for(loaded.state, ctx.who.role, ctx.who.party_id),
        seq=loaded.version,
    )


@routes.route(
    "GET",
    "/api/sessions/{session_id}/events",
    "The log, filtered by role; ?after=seq to replay",
    response=S.EventsOut,
    roles=("bidder", *STAFF),
)
async def get_events(ctx: Ctx) -> S.EventsOut:
    after = after_seq(ctx.request)
    await _loaded(ctx)
    return await visible_events(ctx, op.viewer_tags(ctx.who.role, ctx.who.party_id), after)


async def visible_events(ctx: Ctx, tags: frozenset[str], after: int) -> S.EventsOut:
    """The session's log after ``after``, as far as a viewer with ``tags`` may see it."""
    records = await ctx.hub.store.events_after(ctx.session_id, after)
    return S.EventsOut(events=[r.model_dump() for r in records if r.visible_to(tags)])


# --- where a bidder's request came from (for the bid-rigging signals) ----------------------------


def _networks(entries: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            log.warning("trusted proxy %r is not an address or network; ignored", entry)
    return out


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def client_address(request: web.Request, trusted_proxies: tuple[str, ...]) -> str | None:
    """The client's network address: the direct peer, unless the peer is a trusted proxy; then
    X-Forwarded-For is walked from the right past trusted proxies to the first other address.
    From an untrusted peer the header is ignored (anyone can write it)."""
    peer = _address(request.remote or "")
    if peer is None:
        return None
    nets = _networks(trusted_proxies)

    def trusted(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(a in n for n in nets)

    hops = [
        hop for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")
    ]
    current = peer
    while trusted(current) and hops:
        forwarded = _address(hops.pop())
        if forwarded is None:
            break  # a malformed entry: the last address vouched for is the client
        current = forwarded
    return str(current)


async def request_origin(ctx: Ctx) -> op.Origin:
    """Where this bidder's request came from: address, machine fingerprint (validated: 64 hex
    digits, else dropped) and the serial of the certificate the bidder logged in with."""
    machine = ctx.request.headers.get(MACHINE_HEADER, "").strip().lower()
    serial = None
    company = await ctx.hub.store.get_company(ctx.who.party_id)
    if company is not None:
        with contextlib.suppress(ValueError, BidBridgeError):
            cert = _cert(company.signing_cert_pem, "signing certificate")
            if cert_sha256(cert) == ctx.who.cert_sha256:
                serial = format(cert.serial_number, "x")
    return op.Origin(
        addr=client_address(ctx.request, ctx.hub.settings.trusted_proxies),
        machine=machine if FINGERPRINT.fullmatch(machine) else None,
        cert_serial=serial,
    )


async def _command(ctx: Ctx, cmd: op.Command) -> S.OkOut:
    return S.OkOut(seq=_seq(await ctx.hub.service.execute(ctx.session_id, cmd)))


# --- host and supervisor -------------------------------------------------------------------------


@routes.route(
    "POST",
    "/api/sessions/{session_id}/publish",
    "Publish the session (招标公告)",
    response=S.OkOut,
    roles=("host", "centre"),
    tag="host",
)
async def publish(ctx: Ctx) -> S.OkOut:
    return await _command(ctx, op.Publish(actor=ctx.actor))


@routes.route(
    "POST",
    "/api/sessions/{session_id}/start",
    "Start the opening (rule 6)",
    response=S.OkOut,
    roles=("host",),
    tag="host",
)
async def start(ctx: Ctx) -> S.OkOut:
    return await _command(ctx, op.Start(actor=ctx.actor))


@routes.route(
    "POST",
    "/api/sessions/{session_id}/decryption",
    "Open the decryption window (rule 7)",
    response=S.OkOut,
    roles=("host",),
    tag="host",
)
async def open_decryption(ctx: Ctx) -> S.OkOut:
    return await _command(ctx, op.OpenDecryption(actor=ctx.actor))


@routes.route(
    "POST",
    "/api/sessions/{session_id}/confirmation",
    "Open the confirmation window (rule 11)",
    response=S.OkOut,
    roles=("host",),
    tag="host",
)
async def open_confirmation(ctx: Ctx) -> S.OkOut:
    return await _command(ctx, op.OpenConfirmation(actor=ctx.actor))


@routes.route(
    "POST",
    "/api/sessions/{session_id}/suspend",
    "Suspend with a reason (rule 13)",
    body=S.ReasonIn,
    response=S.OkOut,
    roles=("host", "supervisor"),
    tag="host",
)
async def suspend(ctx: Ctx, body: S.ReasonIn) -> S.OkOut:
    return await _command(ctx, op.Suspend(actor=ctx.actor, reason=body.reason))


@routes.route(
    "POST",
    "/api/sessions/{session_id}/resume",
    "Resume with a reason (rule 13)",
    body=S.ReasonIn,
    response=S.OkOut,
    roles=("host", "supervisor"),
    tag="host",
)
async def resume(ctx: Ctx, body: S.ReasonIn) -> S.OkOut:
    return await _command(ctx, op.Resume(actor=ctx.actor, reason=body.reason))


@routes.route(
    "POST",
    "/api/sessions/{session_id}/extend",
    "Extend the current window with a reason (rule 13)",
    body=S.ExtendIn,
    response=S.OkOut,
    roles=("host",),
    tag="host",
)
async def extend(ctx: Ctx, body: S.ExtendIn) -> S.OkOut:
    return await _command(ctx, op.Extend(actor=ctx.actor, minutes=body.minutes, reason=body.reason))


@routes.route(
    "POST",
    "/api/sessions/{session_id}/incidents",
    "Record a platform fault affecting named bids (rule 8)",
    body=S.IncidentIn,
    response=S.OkOut,
    roles=("host", "centre"),
    tag="host",
)
async def incident(ctx: Ctx, body: S.IncidentIn) -> S.OkOut:
    return await _command(
        ctx, op.RecordIncident(actor=ctx.actor, reason=body.reason, bidders=body.bidders)
    )


@routes.route(
    "POST",
    "/api/sessions/{session_id}/objections/{objection_id}/reply",
    "Answer an objection (rule 11)",
    body=S.TextIn,
    response=S.OkOut,
    roles=("host",),
    tag="host",
)
async def reply(ctx: Ctx, body: S.TextIn) -> S.OkOut:
    try:
        oid = int(ctx.request.match_info["objection_id"])
    except ValueError:
        raise E.UnknownObjection() from None
    done = await _command(ctx, op.Reply(actor=ctx.actor, objection_id=oid, text=body.text))
    await generate_record_if_due(ctx.hub, ctx.session_id)  # the last answer may release it
    return done


@routes.route(
    "POST",
    "/api/sessions/{session_id}/deposits",
    "Confirm a bidder's deposit (投标保证金)",
    body=S.DepositIn,
    response=S.OkOut,
    roles=("centre",),
    tag="centre",
)
async def deposit(ctx: Ctx, body: S.DepositIn) -> S.OkOut:
    loaded = await _loaded(ctx)
    required = loaded.state.timetable.security_required_fen or 0
    ok = body.amount_fen >= required
    detail = body.reference or ("" if ok else f"below the required {required} fen / 低于要求金额")
    sec = op.Security(
        kind="deposit",
        status="valid" if ok else "invalid",
        amount_fen=body.amount_fen,
        detail=detail,
    )
    return await _command(ctx, op.SetSecurity(actor=ctx.actor, bidder=body.bidder, security=sec))


# --- bidder ---------------------------------------------------------------------------------------


@routes.route(
    "POST",
    "/api/sessions/{session_id}/sign-in",
    "签到: sign in to the hall",
    response=S.OkOut,
    roles=("bidder",),
)
async def sign_in(ctx: Ctx) -> S.OkOut:
    return await _command(ctx, op.SignIn(actor=ctx.actor, origin=await request_origin(ctx)))


@routes.route(
    "PUT",
    "/api/sessions/{session_id}/bid",
    "Upload or replace the sealed bid (streamed; rules 1-3); returns the signed receipt",
    response=S.ReceiptOut,
    roles=("bidder",),
    raw="application/octet-stream",
)
async def upload(ctx: Ctx) -> S.ReceiptOut:
    hub = ctx.hub
    loaded = await _loaded(ctx)

    def may_upload(state: op.OpeningState, now: datetime) -> None:
        # The domain decides (rule 1): the same refusal as the real command, without its data.
        probe = op.Upload(
            actor=ctx.actor, envelope_sha256="0" * 64, size=0, receipt={}, receipt_signature=""
        )
        op.decide(state, probe, now)

    # Refuse before reading a byte when the upload could not be accepted anyway.
    may_upload(loaded.state, hub.clock.now())
    company = await hub.store.get_company(ctx.who.party_id)
    if company is None:
        raise PartyUnknown(ctx.who.party_id)
    declared = ctx.request.content_length
    if declared is not None and declared > hub.settings.upload_limit:
        from server.store import BlobTooLarge

        raise BlobTooLarge(hub.settings.upload_limit)
    enc_cert = _cert(company.encryption_cert_pem, "registered encryption certificate")
    origin = await request_origin(ctx)
    received: list[datetime] = []

    async def last_byte_in_time() -> None:
        # Rule 1: server time when the last byte arrived decides. Checked before the bytes are
        # committed, so a late upload leaves no blob behind.
        now = hub.clock.now()
        may_upload((await _loaded(ctx)).state, now)
        received.append(now)

    def check(path: Path) -> None:
        # Rule 3: a valid envelope addressed to the bidder's own registered encryption certificate.
        info = inspect_envelope(path)
        if not is_addressed_to(info, enc_cert):
            raise CE.NotARecipient(
                "投标文件未使用您登记的加密证书加密 / the bid is not sealed to your registered encryption certificate"
            )

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
    return S.ReceiptOut(receipt=receipt, signature=signature, seq=records[-1].seq)


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


@routes.route(
    "DELETE",
    "/api/sessions/{session_id}/bid",
    "Withdraw the bid before the deadline (撤回)",
    response=S.OkOut,
    roles=("bidder",),
)
async def retract(ctx: Ctx) -> S.OkOut:
    return await _command(ctx, op.Retract(actor=ctx.actor))


@routes.route(
    "GET",
    "/api/sessions/{session_id}/bid",
    "Download one's own stored envelope (for the rehearsal)",
    roles=("bidder",),
    raw="application/pkcs7-mime",
)
async def download_own(ctx: Ctx) -> web.StreamResponse:
    loaded = await _loaded(ctx)
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


@routes.route(
    "GET",
    "/api/sessions/{session_id}/receipt",
    "One's own receipt and its signature",
    response=S.ReceiptOut,
    roles=("bidder",),
)
async def own_receipt(ctx: Ctx) -> S.ReceiptOut:
    await _loaded(ctx)
    tag = op.bidder_tag(ctx.who.party_id)
    last: EventRecord | None = None
    for r in await ctx.hub.store.events_after(ctx.session_id, 0):
        if r.type == "bid_uploaded" and r.audience == [tag]:
            last = r
    if last is None:
        raise E.NoBid()
    return S.ReceiptOut(
        receipt=last.payload["receipt"], signature=last.payload["receipt_signature"], seq=last.seq
    )


@routes.route(
    "POST",
    "/api/sessions/{session_id}/rehearsal",
    "Report the decryption rehearsal's result",
    body=S.RehearsalIn,
    response=S.OkOut,
    roles=("bidder",),
)
async def rehearsal(ctx: Ctx, body: S.RehearsalIn) -> S.OkOut:
    origin = await request_origin(ctx)
    return await _command(
        ctx,
        op.Rehearse(
            actor=ctx.actor,
            passed=body.passed,
            code=body.code,
            message=body.message,
            origin=origin,
        ),
    )


@routes.route(
    "POST",
    "/api/sessions/{session_id}/guarantee",
    "Lodge an electronic guarantee (电子保函)",
    body=S.GuaranteeIn,
    response=S.OkOut,
    roles=("bidder",),
)
async def guarantee(ctx: Ctx, body: S.GuaranteeIn) -> S.OkOut:
    hub = ctx.hub
    loaded = await _loaded(ctx)
    info = await _session_info(hub, ctx.session_id)
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
    return await _command(
        ctx, op.SetSecurity(actor=op.SERVER, bidder=ctx.who.party_id, security=sec)
    )


@routes.route(
    "POST",
    "/api/sessions/{session_id}/key",
    "Send the unwrapped content key; the server decrypts and verifies (rule 7)",
    body=S.KeyIn,
    response=S.DecryptOut,
    roles=("bidder",),
)
async def submit_key(ctx: Ctx, body: S.KeyIn) -> S.DecryptOut:
    hub = ctx.hub
    code = ctx.who.party_id
    submitted = hub.clock.now()
    loaded = await _loaded(ctx)
    op.decide(loaded.state, op.SubmitKey(actor=ctx.actor), submitted)  # refuses outside the window
    cek = b64decode(body.cek, "cek")
    origin = await request_origin(ctx)
    if len(cek) not in (16, 24, 32):
        raise CE.KeyUnwrapFailed("内容密钥长度无效 / the content key has an invalid length")
    try:
        async with hub.coord.busy(ctx.session_id, code):
            result = await _decrypt(
                hub, ctx.session_id, loaded.state, code, cek, submitted, via="bidder"
            )
            result = result.model_copy(update={"origin": origin})
            records = await hub.service.execute(ctx.session_id, result)
    except Busy:
        raise E.AlreadyDone("a decryption of this bid is in progress / 正在解密") from None
    finally:
        hub.scheduler.wake()
    return _decrypt_out(result, records[-1].seq)


def _decrypt_out(result: op.DecryptionResult, seq: int) -> S.DecryptOut:
    if result.ok:
        return S.DecryptOut(
            ok=True, code="OK", zh="解密成功", en="decrypted", summary=result.summary, seq=seq
        )
    zh, _, en = result.message.partition(" / ")
    return S.DecryptOut(ok=False, code=result.code, zh=zh, en=en or zh, seq=seq)


_HINTS = {
    "ENVELOPE_TAMPERED": (
        "发送的密钥无法解开投标文件：请确认使用投标时所用的加密证书（CA 锁）",
        "the key sent does not open the bid: use the encryption certificate (CA key) the bid was sealed with",
    ),
    "SIGNER_NOT_BIDDER": (
        "投标文件不是由本单位签名：请用本单位签名证书重新封装（截止后无法更换）",
        "the bid is not signed by your company: it must be sealed with your own signing certificate",
    ),
}


async def _decrypt(
    hub: Hub,
    session_id: str,
    state: op.OpeningState,
    code: str,
    cek: bytes,
    submitted: Any,
    *,
    via: str,
) -> op.DecryptionResult:
    """Decrypt, check the tag, verify the bidder's signature and summary; attribute a failure."""
    bid = state.bids[code]
    info = await _session_info(hub, session_id)
    work = Path(tempfile.mkdtemp(prefix="open-", dir=hub.settings.data_dir))
    out = work / "package.zip"
    base = {"actor": op.SERVER, "bidder": code, "submitted_at": submitted, "via": via}
    try:
        try:
            envelope = hub.blobs.path(bid.envelope_sha256)
        except NotFound:
            return op.DecryptionResult(
                **base,
                ok=False,
                code="ENVELOPE_MISSING",
                cause="platform",
                message="平台存储中找不到投标文件 / the platform cannot find the stored bid",
            )
        try:
            opened = await asyncio.to_thread(
                decrypt_with_key,
                envelope,
                cek,
                out,
                expected_credit_code=code,
                trust=hub.trust,
                at=submitted,
            )
        except BidBridgeError as exc:
            zh, en = _HINTS.get(exc.code, (exc.zh, exc.en))
            detail = f" ({exc.detail})" if exc.detail else ""
            return op.DecryptionResult(
                **base, ok=False, code=exc.code, cause="bidder", message=f"{zh} / {en}{detail}"
            )
        except OSError as exc:
            return op.DecryptionResult(
                **base,
                ok=False,
                code="PLATFORM_IO",
                cause="platform",
                message=f"平台读写故障 / platform storage error: {exc.strerror}",
            )
        summary = opened.summary
        if (summary.project_code, summary.lot_code) != (info["project_code"], info["lot_code"]):
            return op.DecryptionResult(
                **base,
                ok=False,
                code="SUMMARY_LOT_MISMATCH",
                cause="bidder",
                message=f"投标摘要中的项目/标段 {summary.project_code}/{summary.lot_code} 与本标段不符 / the summary names another lot",
            )
        await hub.blobs.put_file(out)
        await hub.store.put_bid_key(session_id, bid.envelope_sha256, cek.hex())
        return op.DecryptionResult(
            **base,
            ok=True,
            summary=summary.model_dump(mode="json"),
            cek_sha256=cek_fingerprint(cek),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


@routes.route(
    "POST",
    "/api/sessions/{session_id}/objections",
    "Raise an objection (异议, rule 11)",
    body=S.TextIn,
    response=S.OkOut,
    roles=("bidder",),
)
async def raise_objection(ctx: Ctx, body: S.TextIn) -> S.OkOut:
    return await _command(ctx, op.Object(actor=ctx.actor, text=body.text))


@routes.route(
    "POST",
    "/api/sessions/{session_id}/confirm",
    "Confirm the opening table with a CA signature (rule 11)",
    body=S.SignatureIn,
    response=S.OkOut,
    roles=("bidder",),
)
async def confirm(ctx: Ctx, body: S.SignatureIn) -> S.OkOut:
    hub = ctx.hub
    loaded = await _loaded(ctx)
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
    return await _command(
        ctx, op.Confirm(actor=ctx.actor, table_sha256=sha, signature=body.signature)
    )


# --- backup decryption (rule 9) -----------------------------------------------------------------


def backup_approval_document(session_id: str, request_id: str, bidders: list[str]) -> bytes:
    return canonical_json(
        {
            "purpose": BACKUP_PURPOSE,
            "session_id": session_id,
            "request_id": request_id,
            "bidders": sorted(bidders),
        }
    )


@routes.route(
    "POST",
    "/api/sessions/{session_id}/backup-requests",
    "Request backup decryption of named bids (rule 9)",
    body=S.BackupRequestIn,
    response=S.BackupRequestOut,
    roles=("host",),
    tag="host",
)
async def request_backup(ctx: Ctx, body: S.BackupRequestIn) -> S.BackupRequestOut:
    rid = secrets.token_hex(8)
    records = await ctx.hub.service.execute(
        ctx.session_id,
        op.RequestBackup(actor=ctx.actor, request_id=rid, bidders=body.bidders, reason=body.reason),
    )
    return S.BackupRequestOut(request_id=rid, seq=records[-1].seq)


@routes.route(
    "POST",
    "/api/sessions/{session_id}/backup-requests/{request_id}/approve",
    "A custodian approves with a signature and its share (rule 9)",
    body=S.BackupApproveIn,
    response=S.OkOut,
    roles=STAFF,
    tag="host",
)
async def approve_backup(ctx: Ctx, body: S.BackupApproveIn) -> S.OkOut:
    hub = ctx.hub
    rid = ctx.request.match_info["request_id"]
    loaded = await _loaded(ctx)
    state = loaded.state
    request = state.backup_requests.get(rid)
    if request is None or state.timetable.backup is None:
        raise E.BackupUnavailable("no such request / 无此申请")
    doc = read_document(b64decode(body.signature))
    if doc.content != backup_approval_document(ctx.session_id, rid, request.bidders):
        raise CE.SignatureInvalid("the approval does not name this request / 审批内容与申请不符")
    if cert_sha256(doc.signer) != ctx.who.cert_sha256:
        raise CE.SignatureInvalid(
            "signed with another certificate than the login / 签名证书与登录证书不同"
        )
    await hub.trust.avalidate(
        doc.signer, "login", hub.clock.now(), extra_intermediates=doc.certificates
    )
    share = DecryptedShare.from_json(body.share)
    bundle = QuorumBundle.from_json(
        hub.blobs.path(state.timetable.backup.bundle_sha256).read_text("utf-8")
    )
    if share.key_id != bundle.key_id:
        raise CE.QuorumRebuildFailed(
            "the share belongs to another backup key / 分片不属于本项目备用密钥"
        )
    op.decide(state, op.ApproveBackup(actor=ctx.actor, request_id=rid), hub.clock.now())
    await hub.store.put_share(rid, ctx.who.party_id, body.share)
    records = await hub.service.execute(
        ctx.session_id, op.ApproveBackup(actor=ctx.actor, request_id=rid)
    )
    if any(r.type == "backup_quorum_reached" for r in records):
        await _backup_decrypt(hub, ctx.session_id, rid, bundle)
    return S.OkOut(seq=_seq(records))


async def _backup_decrypt(hub: Hub, session_id: str, rid: str, bundle: QuorumBundle) -> None:
    shares = [DecryptedShare.from_json(s) for s in (await hub.store.shares(rid)).values()]
    try:
        key = rebuild_backup_key(bundle, shares)
    finally:
        await hub.store.drop_shares(rid)
    loaded = await hub.service.load(session_id)
    assert loaded is not None
    for code in loaded.state.backup_requests[rid].bidders:
        bid = loaded.state.bids[code]
        now = hub.clock.now()
        try:
            cek = unwrap_content_key(
                inspect_envelope(hub.blobs.path(bid.envelope_sha256)), key, bundle.certificate
            )
        except BidBridgeError as exc:
            result = op.DecryptionResult(
                actor=op.SERVER,
                bidder=code,
                submitted_at=now,
                ok=False,
                code=exc.code,
                cause="bidder",
                message=f"{exc.zh} / {exc.en}",
                via="backup",
            )
        else:
            result = await _decrypt(hub, session_id, loaded.state, code, cek, now, via="backup")
        await hub.service.execute(session_id, result)


# --- the record (rule 12) ----------------------------------------------------------------------


async def generate_record_if_due(hub: Hub, session_id: str) -> None:
    loaded = await hub.service.load(session_id)
    if loaded is None or not loaded.state.record_pending:
        return
    if any(o.reply is None for o in loaded.state.objections):
        return  # generated once the host has answered (see ``reply``)
    record = op.build_record(loaded.state, loaded.version, loaded.head_hash)
    raw = canonical_json(record)
    now = hub.clock.now()
    blob = await hub.blobs.put_bytes(raw)
    signature = b64encode(hub.identity.sign(raw, now))
    await hub.service.execute(
        session_id,
        op.GenerateRecord(actor=op.SERVER, record_sha256=blob.sha256, signature=signature),
    )


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


@routes.route(
    "GET",
    "/api/sessions/{session_id}/record",
    "The opening record (JSON and text) with its signatures",
    response=S.RecordOut,
    roles=("bidder", *STAFF),
)
async def get_record(ctx: Ctx) -> S.RecordOut:
    record, raw, signatures = await record_of(ctx.hub, ctx.session_id)
    return S.RecordOut(
        record=record,
        text=op.record_text(record),
        sha256=hashlib.sha256(raw).hexdigest(),
        signatures=signatures,
    )


@routes.route(
    "POST",
    "/api/sessions/{session_id}/record/sign",
    "Host or supervisor signs the record (rule 12)",
    body=S.SignatureIn,
    response=S.OkOut,
    roles=("host", "supervisor"),
    tag="host",
)
async def sign_record(ctx: Ctx, body: S.SignatureIn) -> S.OkOut:
    hub = ctx.hub
    _, raw, _ = await record_of(hub, ctx.session_id)
    doc = read_document(b64decode(body.signature))
    if doc.content != raw:
        raise E.TableMismatch("the signature covers another document / 签名内容不是当前开标记录")
    if cert_sha256(doc.signer) != ctx.who.cert_sha256:
        raise CE.SignatureInvalid(
            "signed with another certificate than the login / 签名证书与登录证书不同"
        )
    await hub.trust.avalidate(
        doc.signer, "bid_signature", hub.clock.now(), extra_intermediates=doc.certificates
    )
    sha = hashlib.sha256(raw).hexdigest()
    return await _command(
        ctx, op.SignRecord(actor=ctx.actor, record_sha256=sha, signature=body.signature)
    )
