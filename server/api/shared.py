"""What several API modules share: roles, stored certificates, visible events, the evaluation's actor and sites, supervision by remit."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509

from crypto import errors as CE
from crypto.attest import SignedDocument
from crypto.keys import parse_certificate
from crypto.trust import Purpose
from schemas import api as S
from schemas.events import Cursor
from schemas.experts import Room, Site
from server.api.routing import Ctx, Route, caller_tags, load_session
from server.core import Hub
from server.domain import errors as E
from server.domain import evaluation as ev
from server.domain.remit import Body, supervises
from server.identity import cert_sha256
from server.store import NotFound

STAFF = ("host", "supervisor", "centre")
CHUNK = 1024 * 1024


def stored_cert(pem: str, what: str) -> x509.Certificate:
    return parse_certificate(pem.encode("ascii", "replace"), what)


async def visible_events(ctx: Ctx, tags: frozenset[str], after: Cursor) -> S.EventsOut:
    """The session's log after the cursor ``after``, as far as a viewer with ``tags`` may see
    it, each event as that viewer is shown it (no ``seq``: rule 4, docs/positions.md)."""
    records = await ctx.hub.store.events_for(ctx.session_id, tags, after)
    return S.EventsOut(events=[r.shown_to(tags) for r in records])


async def view_positions(ctx: Ctx, version: int, session_id: str | None = None) -> dict[str, int]:
    """The caller's stream heads as of the ``version`` a view was read at: where the view
    stands, in numbers that count only what the caller may see (rule 4)."""
    sid = session_id or ctx.session_id
    return await ctx.hub.store.stream_heads(sid, caller_tags(ctx.who), upto=version)


MEMBER_ROLES = ("expert",)


SignatureInvalid = E.refusal(
    "SignatureInvalid",
    "SIGNATURE_INVALID",
    422,
    "签名无效：签名内容或签名证书与所需不符",
    "the signature is not valid: the signed content or the signer's certificate is not the one expected",
)


def eval_actor(ctx: Ctx) -> ev.Actor:
    return ev.Actor(role=ctx.who.role, id=ctx.who.party_id)  # type: ignore[arg-type]


async def load_evaluation(ctx: Ctx) -> Any:
    """The caller's evaluation, if the caller is admitted to it (a supervisor: of its remit)."""
    loaded = await ctx.hub.service.load(ctx.session_id, kind="evaluation")
    if loaded is None:
        raise NotFound(ctx.session_id)
    if not ev.admitted(loaded.state, ctx.who.role, ctx.who.party_id):
        raise E.NotPermitted("not a party to this evaluation / 您不是本次评标的参与方")
    await check_remit(ctx, loaded.state.lot_id)
    return loaded


# --- supervision by remit (监管主体, seed 002) ---------------------------------------------------

OutsideRemit = E.OutsideRemit


async def remit_of(hub: Hub, account_id: str) -> Body:
    """A supervisor account's remit (region, industry); None: centre-wide."""
    account = await hub.store.get_account(account_id)
    if account is None:
        raise OutsideRemit("no such account / 账户不存在")
    return account.remit


async def body_of_lot(hub: Hub, lot_id: str | None) -> Body:
    """The supervising body of a lot's project; None: the project names none."""
    lot = await hub.store.get_lot(lot_id) if lot_id else None
    project = await hub.store.get_project(lot.project_code) if lot else None
    return project.supervising_body if project else None


async def check_remit(ctx: Ctx, lot_id: str | None) -> None:
    """A supervisor acts only on the sessions of projects in its remit; other roles pass."""
    if ctx.who.role != "supervisor":
        return
    if not supervises(
        await remit_of(ctx.hub, ctx.who.party_id), await body_of_lot(ctx.hub, lot_id)
    ):
        raise OutsideRemit()


async def supervisors_in_remit(hub: Hub, lot_id: str | None) -> list[str]:
    """The supervisor accounts of a lot's remit: the presence rule counts only them."""
    body = await body_of_lot(hub, lot_id)
    return [a.id for a in await hub.store.list_accounts("supervisor") if supervises(a.remit, body)]


async def load_opening(ctx: Ctx) -> Any:
    """The caller's opening session (a supervisor: of its remit), or NOT_FOUND."""
    loaded = await load_session(ctx)
    await check_remit(ctx, loaded.state.lot_id)
    return loaded


def in_remit(route: Route, load: Callable[[Ctx], Awaitable[Any]]) -> Route:
    """The same route, but the session is loaded with ``load`` first, so a supervisor outside
    the project's remit is refused before anything happens."""
    inner = route.handler

    async def handler(ctx: Ctx, *args: Any) -> Any:
        await load(ctx)
        return await inner(ctx, *args)

    handler.__name__ = handler.__qualname__ = inner.__name__
    return dataclasses.replace(route, handler=handler)


async def sites_of(hub: Hub) -> list[Site]:
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


async def check_own_signature(ctx: Ctx, doc: SignedDocument, purpose: Purpose) -> None:
    """The document is signed with the certificate the caller logged in with, valid now for
    ``purpose`` (a staff approval, a record signature)."""
    if cert_sha256(doc.signer) != ctx.who.cert_sha256:
        raise CE.SignatureInvalid(
            "signed with another certificate than the login / 签名证书与登录证书不同"
        )
    hub = ctx.hub
    await hub.trust.avalidate(
        doc.signer, purpose, hub.clock.now(), extra_intermediates=doc.certificates
    )
