"""CA login (challenge, signed answer, token), token renewal, and one-time page links."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any, Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field

from schemas import api as S
from schemas.canonical import canonical_json
from server.api.bindings import bound_caller
from server.api.routing import Ctx, OtherSession, Route, post
from server.api.shared import check_remit
from server.auth import (
    CHALLENGE_SECONDS,
    ChallengeInvalid,
    PartyUnknown,
    Principal,
    login_document,
    new_nonce,
    token_lifetime,
    verify_login,
)
from server.core import Hub
from server.domain import binding
from server.identity import cert_sha256
from server.store import NotFound


async def _principal_for(hub: Hub, cert: x509.Certificate, code: str | None) -> Principal:
    """Who logs in with ``cert``: a staff or room account registered with this very certificate,
    or a company to which it is bound as a signing certificate (证书绑定). A certificate that
    only carries a company's credit code (any trusted CA can issue one) is refused
    ``CERT_NOT_BOUND``."""
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
            bound = binding.from_rows(await hub.store.bindings_of(code))
            binding.check_acts_with(bound, fp, hub.clock.now())
            return Principal("bidder", code, company.name, fp)
    raise PartyUnknown(cert.subject.rfc4514_string())


LINK_SECONDS = 60


LINK_PURPOSE = b"bidbridge/web-link/v1\x00"


Page = Literal["bidder", "host", "supervisor", "expert"]


PAGE_ROLES: dict[str, tuple[str, ...]] = {
    "bidder": ("bidder",),
    "host": ("host", "centre"),
    "supervisor": ("supervisor",),
    "expert": ("expert",),
}


SCOPED_ROLES = ("bidder", "expert")
"""Roles whose page tokens are bound to the session of their link."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


_Out = _In


class WebLinkIn(_In):
    session_id: str = Field(min_length=1, max_length=200)
    page: Page


class WebLinkOut(_Out):
    url: str = Field(description="path of the page that redeems the code; good once, for 60 s")
    expires_at: str


class RedeemIn(_In):
    code: str = Field(min_length=10, max_length=4000)


class RedeemOut(_Out):
    token: str
    role: str
    party_id: str
    name: str
    issued_at: str = Field(description="the server's clock when the token was issued")
    expires_at: str
    expires_in: float | None = Field(
        None,
        description="real seconds the token lasts from now (RFC 6749 5.1), whatever the clocks say",
    )
    session_id: str
    page: str


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, raw: bytes) -> bytes:
    return hmac.new(secret, LINK_PURPOSE + raw, hashlib.sha256).digest()


async def challenge(ctx: Ctx) -> S.ChallengeOut:
    """CA login, step 1: a fresh challenge"""
    hub = ctx.hub
    now = hub.clock.now()
    nonce = new_nonce()
    # Real seconds, as a person or a token needs them to sign: on the demo's accelerated clock a
    # challenge of 60 clock seconds would last half a real second.
    expires = now + timedelta(seconds=CHALLENGE_SECONDS * hub.clock.rate)
    await hub.store.add_challenge(nonce, expires)
    doc = login_document(nonce, hub.settings.server_id).decode("utf-8")
    return S.ChallengeOut(
        nonce=nonce, server=hub.settings.server_id, expires_at=expires, document=doc
    )


async def login(ctx: Ctx, body: S.LoginIn) -> S.LoginOut:
    """CA login, step 2: the signed challenge -> a token"""
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


async def web_link(ctx: Ctx, body: WebLinkIn) -> WebLinkOut:
    """A one-time link (one use, one minute) that opens a page of this session in a browser"""
    hub = ctx.hub
    p = ctx.who
    if p.role not in PAGE_ROLES[body.page]:
        from server.domain import errors as E

        raise E.NotPermitted(f"{p.role} may not open the {body.page} page")
    if p.session_id is not None and p.session_id != body.session_id:
        raise OtherSession()
    row = await hub.store.load_session(body.session_id)
    if row is None:
        raise NotFound(body.session_id)
    await check_remit(ctx, row.lot_id)  # a supervisor gets links to its remit's sessions only
    now = hub.clock.now()
    exp = now + timedelta(seconds=LINK_SECONDS * hub.clock.rate)  # real seconds, as above
    nonce = new_nonce()
    await hub.store.add_challenge(nonce, exp)
    raw = canonical_json(
        {
            "role": p.role,
            "sub": p.party_id,
            "name": p.name,
            "cert": p.cert_sha256,
            "session": body.session_id,
            "page": body.page,
            "nonce": nonce,
            "exp": int(exp.timestamp()),
        }
    )
    code = f"{_b64u(raw)}.{_b64u(_mac(hub.tokens.secret, raw))}"
    return WebLinkOut(url=f"/web/enter.html#code={code}", expires_at=exp.isoformat())


async def redeem(ctx: Ctx, body: RedeemIn) -> RedeemOut:
    """Redeem a one-time link's code for a bearer token (once, within a minute)"""
    hub = ctx.hub
    now = hub.clock.now()
    try:
        raw_b64, mac_b64 = body.code.split(".", 1)
        raw, mac = _unb64u(raw_b64), _unb64u(mac_b64)
        claims: dict[str, Any] = json.loads(raw)
    except (ValueError, TypeError):
        raise ChallengeInvalid("not a link code / 链接无效") from None
    if not hmac.compare_digest(mac, _mac(hub.tokens.secret, raw)):
        raise ChallengeInvalid("not a link code / 链接无效")
    if claims["exp"] <= now.timestamp() or not await hub.store.consume_challenge(
        claims["nonce"], now
    ):
        raise ChallengeInvalid("used or expired: ask the agent for a new link / 链接已使用或已过期")
    # A bidder's page and an expert's desk act on the one session the link names (a link for
    # lot 01 must not upload to lot 02); staff pages follow every session their role may see.
    scope = claims["session"] if claims["role"] in SCOPED_ROLES else None
    p = Principal(claims["role"], claims["sub"], claims["name"], claims["cert"], scope)
    token, exp = hub.tokens.issue(p, now)
    return RedeemOut(
        token=token,
        role=p.role,
        party_id=p.party_id,
        name=p.name,
        issued_at=now.isoformat(),
        expires_at=exp.isoformat(),
        expires_in=token_lifetime(hub.tokens, hub.clock),
        session_id=claims["session"],
        page=claims["page"],
    )


async def refresh(ctx: Ctx) -> S.RefreshOut:
    # ``dispatch`` has checked the token (signature, expiry) and read its principal: an expired
    # token never gets here. The new one names the same party and certificate.
    """A fresh bearer token for the same party, in exchange for one that has not expired yet"""
    if ctx.who.role == "bidder":  # an unbound certificate's token is not renewed
        await bound_caller(ctx)
    now = ctx.hub.clock.now()
    token, exp = ctx.hub.tokens.issue(ctx.who, now)
    return S.RefreshOut(
        token=token,
        issued_at=now.isoformat(),
        expires_at=exp.isoformat(),
        expires_in=token_lifetime(ctx.hub.tokens, ctx.hub.clock),
    )


# fmt: off
ROUTES: list[Route] = [
    post("/api/auth/challenge", challenge, None, response=S.ChallengeOut, tag="auth"),
    post("/api/auth/login", login, None, body=S.LoginIn, response=S.LoginOut, tag="auth"),
    post("/api/auth/web-link", web_link, ("bidder", "host", "supervisor", "centre", "expert"), body=WebLinkIn, response=WebLinkOut, tag="auth"),
    post("/api/auth/web-link/redeem", redeem, None, body=RedeemIn, response=RedeemOut, tag="auth"),
    post("/api/auth/refresh", refresh, ("bidder", "host", "supervisor", "centre", "room", "expert"), response=S.RefreshOut, tag="auth"),
]
# fmt: on
