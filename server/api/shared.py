"""What several API modules share: roles, stored certificates, visible events, the evaluation's actor and sites."""

from __future__ import annotations

from typing import Any

from cryptography import x509

from crypto import errors as CE
from crypto.attest import SignedDocument
from crypto.keys import parse_certificate
from crypto.trust import Purpose
from schemas import api as S
from schemas.experts import Room, Site
from server.api.routing import Ctx
from server.core import Hub
from server.domain import errors as E
from server.domain import evaluation as ev
from server.identity import cert_sha256
from server.store import NotFound

STAFF = ("host", "supervisor", "centre")
CHUNK = 1024 * 1024


def stored_cert(pem: str, what: str) -> x509.Certificate:
    return parse_certificate(pem.encode("ascii", "replace"), what)


async def visible_events(ctx: Ctx, tags: frozenset[str], after: int) -> S.EventsOut:
    """The session's log after ``after``, as far as a viewer with ``tags`` may see it."""
    records = await ctx.hub.store.events_after(ctx.session_id, after)
    return S.EventsOut(events=[r.model_dump() for r in records if r.visible_to(tags)])


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
    loaded = await ctx.hub.service.load(ctx.session_id, kind="evaluation")
    if loaded is None:
        raise NotFound(ctx.session_id)
    if not ev.admitted(loaded.state, ctx.who.role, ctx.who.party_id):
        raise E.NotPermitted("not a party to this evaluation / 您不是本次评标的参与方")
    return loaded


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
