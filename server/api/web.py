"""The browser pages' way in: a one-time link instead of a CA plugin in the browser.

An agent that logged in with its CA key asks for a link (``POST /api/auth/web-link``); the link
carries a code that is HMAC-signed by the server, names the party, the session and the page, and
is good for one minute and one use (its nonce is consumed in the store, like a login challenge).
The page redeems it (``POST /api/auth/web-link/redeem``) for an ordinary bearer token, and
renews that token before it runs out (``POST /api/auth/refresh``), so a page left open all day
keeps working; an expired token is never renewed (the agent makes a new link).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from schemas import api as S
from schemas.canonical import canonical_json
from server.api.hall import Ctx, routes
from server.auth import ChallengeInvalid, Principal, new_nonce, token_lifetime
from server.store import NotFound

LINK_SECONDS = 60
LINK_PURPOSE = b"bidbridge/web-link/v1\x00"
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
Page = Literal["bidder", "host", "supervisor", "expert"]
PAGE_ROLES: dict[str, tuple[str, ...]] = {
    "bidder": ("bidder",),
    "host": ("host", "centre"),
    "supervisor": ("supervisor",),
    "expert": ("expert",),
}


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


@routes.route(
    "POST",
    "/api/auth/web-link",
    "A one-time link (one use, one minute) that opens a page of this session in a browser",
    body=WebLinkIn,
    response=WebLinkOut,
    roles=("bidder", "host", "supervisor", "centre", "expert"),
    tag="auth",
)
async def web_link(ctx: Ctx, body: WebLinkIn) -> WebLinkOut:
    hub = ctx.hub
    p = ctx.who
    if p.role not in PAGE_ROLES[body.page]:
        from server.domain import errors as E

        raise E.NotPermitted(f"{p.role} may not open the {body.page} page")
    if await hub.store.load_session(body.session_id) is None:
        raise NotFound(body.session_id)
    now = hub.clock.now()
    exp = now + timedelta(seconds=LINK_SECONDS)
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


@routes.route(
    "POST",
    "/api/auth/web-link/redeem",
    "Redeem a one-time link's code for a bearer token (once, within a minute)",
    body=RedeemIn,
    response=RedeemOut,
    tag="auth",
)
async def redeem(ctx: Ctx, body: RedeemIn) -> RedeemOut:
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
    p = Principal(claims["role"], claims["sub"], claims["name"], claims["cert"])
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


@routes.route(
    "POST",
    "/api/auth/refresh",
    "A fresh bearer token for the same party, in exchange for one that has not expired yet",
    response=S.RefreshOut,
    roles=("bidder", "host", "supervisor", "centre", "room", "expert"),
    tag="auth",
)
async def refresh(ctx: Ctx) -> S.RefreshOut:
    # ``dispatch`` has checked the token (signature, expiry) and read its principal: an expired
    # token never gets here. The new one names the same party and certificate.
    now = ctx.hub.clock.now()
    token, exp = ctx.hub.tokens.issue(ctx.who, now)
    return S.RefreshOut(
        token=token,
        issued_at=now.isoformat(),
        expires_at=exp.isoformat(),
        expires_in=token_lifetime(ctx.hub.tokens, ctx.hub.clock),
    )


def add_static(app: web.Application) -> None:
    """The pages (``/web/...``) and the front-end packages installed from npm."""
    vendor = WEB_ROOT / "node_modules" / "socket.io-client" / "dist"
    pages = WEB_ROOT / "static"

    async def socketio_client(request: web.Request) -> web.StreamResponse:
        path = vendor / "socket.io.esm.min.js"
        if not path.is_file():
            raise web.HTTPNotFound(text="socket.io-client is not installed: run `make setup`")
        return web.FileResponse(path, headers={"Content-Type": "text/javascript"})

    async def index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/web/index.html")

    app.router.add_get("/web/vendor/socket.io.esm.min.js", socketio_client)
    app.router.add_get("/web/", index)
    if pages.is_dir():
        app.router.add_static("/web/", pages, show_index=False, follow_symlinks=False)


# The supervisor wall's routes live in their own module, on the same route table.
from server.api import supervision as _supervision  # noqa: E402, F401
