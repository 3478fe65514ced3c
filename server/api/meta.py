"""The API's description of itself and the server's clock."""

from __future__ import annotations

from aiohttp import web

from schemas import api as S
from server.api.routing import ROUTES_KEY, Ctx, Route, get, openapi_document


async def openapi(ctx: Ctx) -> web.Response:
    """OpenAPI document of this API"""
    return web.json_response(openapi_document(ctx.request.app[ROUTES_KEY]))


async def server_time(ctx: Ctx) -> S.TimeOut:
    """Server time (the only authority for countdowns)"""
    return S.TimeOut(now=ctx.hub.clock.now())


# fmt: off
ROUTES: list[Route] = [
    get("/api/openapi.json", openapi, None, tag="meta"),
    get("/api/time", server_time, None, response=S.TimeOut, tag="meta"),
]
# fmt: on
