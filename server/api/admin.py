"""The centre's records: companies, staff accounts, projects, lots, sites, rooms, the expert pool."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator
from typing import Any

from crypto import errors as CE
from crypto.ca import credit_code_of
from schemas import api as S
from schemas import evaluation as EV
from server.api.routing import Ctx, Invalid, Route, get, post, read_body
from server.api.shared import STAFF, sites_of, stored_cert
from server.domain.pool import parse_pool
from server.store import NotFound

POOL_LIMIT = 64 * 1024**2


async def add_company(ctx: Ctx, body: S.CompanyIn) -> S.OkOut:
    """Register a bidder company with its two certificates"""
    hub = ctx.hub
    now = hub.clock.now()
    signing = stored_cert(body.signing_cert_pem, "signing certificate")
    encryption = stored_cert(body.encryption_cert_pem, "encryption certificate")
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


async def add_account(ctx: Ctx, body: S.AccountIn) -> S.AccountOut:
    """Register a host, supervisor or centre account bound to its certificate (a supervisor with its remit)"""
    hub = ctx.hub
    if body.remit is not None and body.role != "supervisor":
        raise Invalid("remit: supervisors only / 仅监管人员账户可设监管范围")
    cert = stored_cert(body.cert_pem, "account certificate")
    await hub.trust.avalidate(cert, "login", hub.clock.now())
    remit = _body(body.remit)
    row = await hub.store.add_account(body.role, body.name, body.cert_pem, hub.clock.now(), remit)
    return S.AccountOut(id=row.id, role=row.role, name=row.name, remit=body.remit)


async def add_project(ctx: Ctx, body: S.ProjectIn) -> S.OkOut:
    """Create a project, with its supervising body (监管主体) if it names one"""
    await ctx.hub.store.add_project(
        body.code,
        body.name,
        body.tenderer_name,
        body.tenderer_credit_code,
        _body(body.supervising_body),
    )
    return S.OkOut()


def _body(given: S.SupervisingBody | None) -> tuple[str, str] | None:
    return (given.region, given.industry) if given is not None else None


async def add_lot(ctx: Ctx, body: S.LotIn) -> S.LotOut:
    """Create a lot (标段) of a project"""
    if await ctx.hub.store.get_project(body.project_code) is None:
        raise NotFound(body.project_code)
    row = await ctx.hub.store.add_lot(body.project_code, body.code, body.name)
    return S.LotOut(id=row.id)


async def import_experts(ctx: Ctx) -> EV.ImportOut:
    """Import experts into the pool (CSV or JSON body; ?format=csv|json); all rows or none"""
    fmt = ctx.request.query.get("format") or (
        "json" if "json" in ctx.request.content_type else "csv"
    )
    if fmt not in ("csv", "json"):
        raise Invalid("format: csv or json / 格式须为 csv 或 json")
    data = await read_body(ctx.request, POOL_LIMIT)
    # Parsed and checked in a worker thread: a pool of 100,000 rows takes seconds of CPU, and
    # every hall on this process must keep its latency meanwhile. The millions of objects the
    # rows are made of would set off full collections of the cycle collector, each a pause of
    # the whole process (hundreds of ms to seconds); the rows hold no cycles, so the collector
    # waits until the import is done (scripts/bench_pool_import.py).
    with _collector_paused():
        rows = await asyncio.to_thread(_pool_rows, data, fmt)
        now = ctx.hub.clock.now()
        await ctx.hub.store.import_experts(rows, now)
        imported = len(rows)
        await asyncio.to_thread(_free, rows)
    return EV.ImportOut(imported=imported, total=await ctx.hub.store.count_experts())


_PAUSES = [0]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cycle collector off while at least one import runs (imports may overlap)."""
    if _PAUSES[0] == 0:
        gc.disable()
    _PAUSES[0] += 1
    try:
        yield
    finally:
        _PAUSES[0] -= 1
        if _PAUSES[0] == 0:
            gc.enable()


def _pool_rows(data: bytes, fmt: str) -> list[dict[str, Any]]:
    experts = parse_pool(data, fmt)  # type: ignore[arg-type]
    rows = [e.model_dump(mode="json") for e in experts]
    _free(experts)
    return rows


def _free(items: list[Any]) -> None:
    """Let go of a large list a slice at a time, in a worker thread: freeing 100,000 rows in one
    call holds the interpreter for most of a second, and the halls' loop with it."""
    while items:
        del items[-1000:]


async def add_site(ctx: Ctx, body: EV.SiteIn) -> S.OkOut:
    """Add a site (场地) of the rooms network"""
    await ctx.hub.store.add_site(body.id, body.name, body.city)
    return S.OkOut()


async def add_room(ctx: Ctx, body: EV.RoomIn) -> S.OkOut:
    """Add an evaluation room with its device certificate"""
    cert = stored_cert(body.cert_pem, "room device certificate")
    await ctx.hub.trust.avalidate(cert, "login", ctx.hub.clock.now())
    site_id = ctx.request.match_info["site_id"]
    await ctx.hub.store.add_room(
        body.id, site_id, body.name, body.cert_pem, ctx.hub.clock.now(), body.seats
    )
    return S.OkOut()


async def list_sites(ctx: Ctx) -> EV.SitesOut:
    """Sites and their rooms"""
    return EV.SitesOut(sites=[s.model_dump(mode="json") for s in await sites_of(ctx.hub)])


# fmt: off
ROUTES: list[Route] = [
    post("/api/companies", add_company, ("centre",), body=S.CompanyIn, response=S.OkOut, tag="centre"),
    post("/api/accounts", add_account, ("centre",), body=S.AccountIn, response=S.AccountOut, tag="centre"),
    post("/api/projects", add_project, ("centre", "host"), body=S.ProjectIn, response=S.OkOut, tag="centre"),
    post("/api/lots", add_lot, ("centre", "host"), body=S.LotIn, response=S.LotOut, tag="centre"),
    post("/api/experts/import", import_experts, ("centre",), response=EV.ImportOut, tag="centre"),
    post("/api/sites", add_site, ("centre",), body=EV.SiteIn, response=S.OkOut, tag="centre"),
    post("/api/sites/{site_id}/rooms", add_room, ("centre",), body=EV.RoomIn, response=S.OkOut, tag="centre"),
    get("/api/sites", list_sites, STAFF, response=EV.SitesOut, tag="centre"),
]
# fmt: on
