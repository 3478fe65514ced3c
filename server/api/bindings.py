"""证书绑定: the certificates bound to a company (the centre binds and unbinds; a company binds a
new one itself with a request signed by a certificate already bound to it), and the binding log."""

from __future__ import annotations

import json

from crypto.attest import b64decode, read_document
from crypto.ca import credit_code_of
from crypto.trust import Purpose
from schemas import api as S
from schemas import binding as B
from server.api.routing import Ctx, Invalid, Route, get, post
from server.api.shared import SignatureInvalid, stored_cert
from server.auth import ChallengeInvalid
from server.core import Hub
from server.domain import binding as bd
from server.domain import errors as E
from server.identity import cert_sha256
from server.store import AlreadyExists, BindingRow, NotFound

PURPOSE_OF: dict[str, Purpose] = {"signing": "bid_signature", "encryption": "encryption"}
"""The trust purpose a certificate is checked for before it is bound for a usage."""

VIEWERS = ("centre", "supervisor", "bidder")


def _company_code(ctx: Ctx, asked: str | None) -> str:
    """The company asked about (``?company=`` or the body): a bidder may only ask about its own,
    refused before any lookup so that the answer says nothing about other companies."""
    if ctx.who.role == "bidder":
        if asked not in (None, ctx.who.party_id):
            raise E.NotPermitted("another company's certificates / 不能查看或绑定其他单位的证书")
        return ctx.who.party_id
    if not asked:
        raise Invalid("company: the credit code is needed / 须指明单位的统一社会信用代码")
    return asked


async def bound_caller(ctx: Ctx) -> list[BindingRow]:
    """A bidder's act on its bid (upload, download, receipt, withdrawal, key): the certificate
    its token was issued for must still be a bound signing certificate of the company, so an
    unbinding takes effect at once, not when the token runs out. Returns the company's
    bindings (the caller may need them)."""
    hub = ctx.hub
    rows = await hub.store.bindings_of(ctx.who.party_id)
    bd.check_acts_with(bd.from_rows(rows), ctx.who.cert_sha256, hub.clock.now())
    return rows


async def _company_bindings(hub: Hub, code: str) -> list[BindingRow]:
    if await hub.store.get_company(code) is None:
        raise NotFound(f"company {code}")
    return await hub.store.bindings_of(code)


def _out(row: BindingRow) -> B.BindingOut:
    cert = stored_cert(row.cert_pem, "bound certificate")
    return B.BindingOut(
        credit_code=row.credit_code,
        cert_sha256=row.cert_sha256,
        usage=row.usage,  # type: ignore[arg-type]
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        bound_at=row.bound_at,
        bound_by=row.bound_by,
        unbound_at=row.unbound_at,
        unbound_by=row.unbound_by,
    )


async def list_bindings(ctx: Ctx) -> B.BindingsOut:
    """A company's certificates: every binding, open or ended"""
    code = _company_code(ctx, ctx.request.query.get("company"))
    return B.BindingsOut(bindings=[_out(r) for r in await _company_bindings(ctx.hub, code)])


async def list_binding_events(ctx: Ctx) -> B.BindingEventsOut:
    """The binding log of a company: who bound or unbound which certificate, when and how"""
    code = _company_code(ctx, ctx.request.query.get("company"))
    await _company_bindings(ctx.hub, code)
    rows = await ctx.hub.store.binding_events(code)
    return B.BindingEventsOut(
        events=[
            B.BindingEventOut(
                id=r.id,
                at=r.at,
                credit_code=r.credit_code,
                action=r.action,  # type: ignore[arg-type]
                cert_sha256=r.cert_sha256,
                usage=r.usage,  # type: ignore[arg-type]
                actor=r.actor,
                via=r.via,  # type: ignore[arg-type]
                signer_sha256=r.signer_sha256,
            )
            for r in rows
        ]
    )


async def _checked_new(
    ctx: Ctx, code: str, rows: list[BindingRow], usage: str, pem: str
) -> tuple[str, str]:
    """The new certificate: trusted now for its usage, naming the company, not bound yet."""
    hub = ctx.hub
    now = hub.clock.now()
    cert = stored_cert(pem, "certificate to bind")
    await hub.trust.avalidate(cert, PURPOSE_OF[usage], now)
    sha = cert_sha256(cert)
    bd.check_bind(bd.from_rows(rows), code, credit_code_of(cert), sha, usage, now)
    return sha, pem


async def _bind(ctx: Ctx, code: str, sha: str, usage: str, pem: str, **how: str) -> B.BindingOut:
    try:
        row = await ctx.hub.store.bind_certificate(
            code, sha, usage, pem, ctx.hub.clock.now(), **how
        )
    except AlreadyExists:  # a concurrent request bound it first
        raise bd.CertAlreadyBound(f"{usage} {sha}") from None
    return _out(row)


async def bind(ctx: Ctx, body: B.BindIn) -> B.BindingOut:
    """The centre binds a certificate (any trusted CA) to a company for signing or encryption"""
    code = _company_code(ctx, body.credit_code)
    rows = await _company_bindings(ctx.hub, code)
    sha, pem = await _checked_new(ctx, code, rows, body.usage, body.cert_pem)
    return await _bind(
        ctx, code, sha, body.usage, pem, actor=f"centre:{ctx.who.party_id}", via="centre"
    )


async def bind_self(ctx: Ctx, body: B.SelfBindIn) -> B.BindingOut:
    """A company binds a new certificate itself, with a request signed by a bound signing
    certificate (the document of schemas.binding.binding_document, on a fresh challenge)"""
    hub = ctx.hub
    now = hub.clock.now()
    code = _company_code(ctx, None)
    rows = await _company_bindings(hub, code)
    new = stored_cert(body.cert_pem, "certificate to bind")
    doc = read_document(b64decode(body.signature))
    try:
        nonce = json.loads(doc.content)["nonce"]
    except (ValueError, KeyError, TypeError):
        raise SignatureInvalid("not a binding request / 不是绑定申请") from None
    expected = B.binding_document(
        hub.settings.server_id, str(nonce), code, body.usage, cert_sha256(new)
    )
    if not isinstance(nonce, str) or doc.content != expected:
        raise SignatureInvalid("not this binding request / 绑定申请内容不符")
    await hub.trust.avalidate(doc.signer, "login", now, extra_intermediates=doc.certificates)
    signer = cert_sha256(doc.signer)
    bd.check_self_bind_signer(bd.from_rows(rows), signer, now)
    sha, pem = await _checked_new(ctx, code, rows, body.usage, body.cert_pem)
    if not await hub.store.consume_challenge(nonce, now):
        raise ChallengeInvalid("replayed or stale / 重放或过期")
    return await _bind(
        ctx,
        code,
        sha,
        body.usage,
        pem,
        actor=f"bidder:{code}",
        via="self",
        signer_sha256=signer,
        signature=body.signature,
    )


async def unbind(ctx: Ctx, body: B.UnbindIn) -> S.OkOut:
    """The centre unbinds a company's certificate (a bid sealed before is still judged by the
    binding it was sealed under)"""
    hub = ctx.hub
    code = _company_code(ctx, body.credit_code)
    now = hub.clock.now()
    rows = await _company_bindings(hub, code)
    bd.check_unbind(bd.from_rows(rows), body.cert_sha256, body.usage, now)
    actor = f"centre:{ctx.who.party_id}"
    try:
        await hub.store.unbind_certificate(code, body.cert_sha256, body.usage, now, actor=actor)
    except NotFound:  # a concurrent request unbound it first
        raise bd.CertNotBound(f"{body.usage} {body.cert_sha256}") from None
    return S.OkOut()


# fmt: off
ROUTES: list[Route] = [
    get("/api/bindings", list_bindings, VIEWERS, response=B.BindingsOut, tag="centre"),
    get("/api/bindings/events", list_binding_events, VIEWERS, response=B.BindingEventsOut, tag="centre"),
    post("/api/bindings", bind, ("centre",), body=B.BindIn, response=B.BindingOut, tag="centre"),
    post("/api/bindings/self", bind_self, ("bidder",), body=B.SelfBindIn, response=B.BindingOut, tag="centre"),
    post("/api/bindings/unbind", unbind, ("centre",), body=B.UnbindIn, response=S.OkOut, tag="centre"),
]
# fmt: on
