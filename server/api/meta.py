"""The API's description of itself and the server's clock."""

from __future__ import annotations

from aiohttp import web

from schemas import api as S
from server.api.routing import ROUTES_KEY, Ctx, Route, openapi_document


async def openapi(ctx: Ctx) -> web.Response:
    return web.json_response(openapi_document(ctx.request.app[ROUTES_KEY]))


async def server_time(ctx: Ctx) -> S.TimeOut:
    return S.TimeOut(now=ctx.hub.clock.now())


ROUTES: list[Route] = [
    Route("GET", "/api/openapi.json", openapi, "OpenAPI document of this API", tag="meta"),
    Route(
        "GET",
        "/api/time",
        server_time,
        "Server time (the only authority for countdowns)",
        response=S.TimeOut,
        tag="meta",
    ),
]
