"""How a route is declared and served: ``Route`` and its constructors, one request's ``Ctx``,
``dispatch`` (token, role, body), the command helper, the OpenAPI document (from the same
``schemas`` models that parse the requests) and the one error-to-response middleware."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from crypto.errors import BidBridgeError
from schemas.api import ErrorOut, OkOut
from schemas.events import MAX_SEQ, MAX_STREAMS, Cursor, EventRecord, parse_cursor
from server.auth import Principal, TokenInvalid
from server.core import HUB_KEY, Hub
from server.domain import errors as E
from server.domain import evaluation_model as evm
from server.domain import opening as op
from server.domain.errors import Refusal
from server.store import NotFound, StoreError

log = logging.getLogger(__name__)

MAX_JSON = 1024 * 1024
MAX_DEPTH = 32
"""How deep a request's JSON may nest: every model of ours needs fewer than ten levels, and a
deeper document could exhaust the recursion of whatever walks it later."""

Handler = Callable[..., Awaitable[Any]]


@dataclass
class Route:
    """One route: what it answers, who may call it, and the models it reads and writes."""

    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    roles: tuple[str, ...] | None = None  # None: no login needed
    raw: str | None = None  # content type of a raw (streamed) request or response body
    tag: str = "hall"


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    """OpenAPI 3.1 document of every route (served at ``/api/openapi.json``)."""
    schemas: dict[str, Any] = {
        "ErrorOut": ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}")
    }
    paths: dict[str, Any] = {}

    def ref(model: type[BaseModel]) -> dict[str, str]:
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in js.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = js
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    error = {
        "description": "refused: a stable code and a message in Chinese and English",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag], "responses": {}}
        params = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in r.path.split("/")
            if part.startswith("{")
        ]
        if params:
            op["parameters"] = params
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": ref(r.body)}},
            }
        elif r.raw and r.method in ("PUT", "POST"):
            op["requestBody"] = {
                "required": True,
                "content": {r.raw: {"schema": {"type": "string", "format": "binary"}}},
            }
        if r.response is not None:
            op["responses"]["200"] = {
                "description": "OK",
                "content": {"application/json": {"schema": ref(r.response)}},
            }
        elif r.raw:
            op["responses"]["200"] = {
                "description": "OK",
                "content": {r.raw: {"schema": {"type": "string", "format": "binary"}}},
            }
        else:
            op["responses"]["200"] = {"description": "OK"}
        op["responses"]["4XX"] = error
        if r.roles is not None:
            op["security"] = [{"bearer": []}]
            op["description"] = "roles: " + ", ".join(r.roles)
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "BidBridge opening hall API",
            "version": "1",
            "description": "不见面开标 no-show bid opening: REST API of the lead site's server.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def error_response(code: str, zh: str, en: str, status: int, detail: str = "") -> web.Response:
    body = ErrorOut(code=code, zh=zh, en=en, detail=detail).model_dump()
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False))


class BadRequest(BidBridgeError):
    code = "BAD_REQUEST"
    zh = "请求格式错误"
    en = "the request is malformed"
    status = 400


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body (``content.read(n)`` may return less), refused past ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise BadRequest(f"body larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def after_cursor(request: web.Request) -> Cursor:
    """``?after=<stream>:<n>`` of the event routes, repeated for each stream (split at the last
    colon; docs/positions.md): at most ``MAX_STREAMS`` streams, each ``n`` from 0 to ``MAX_SEQ``.
    None given: from the start."""
    bad = Invalid(
        f"after: <stream>:<n>, n from 0 to {MAX_SEQ}, at most {MAX_STREAMS} streams / "
        f"after 须为 <事件流>:<序号>，序号为 0 到 {MAX_SEQ} 的整数，最多 {MAX_STREAMS} 项"
    )
    values = request.query.getall("after", [])
    if len(values) > MAX_STREAMS:
        raise bad
    given: dict[str, int] = {}
    for value in values:
        stream, sep, n = value.rpartition(":")
        if not sep or not n.isascii() or not n.isdigit() or len(n) > 10:
            raise bad
        given[stream] = int(n)
    cursor = parse_cursor(given)  # the socket's rule: names, ranges, how many
    if cursor is None:
        raise bad
    return cursor


def caller_tags(who: Principal) -> frozenset[str]:
    """The audience tags (streams) of a caller, whatever the session's kind."""
    return op.viewer_tags(who.role, who.party_id) | evm.viewer_tags(who.role, who.party_id)


def positions(records: Sequence[EventRecord], tags: frozenset[str]) -> dict[str, int] | None:
    """The positions a caller with ``tags`` is shown of ``records`` (each stream's highest),
    or None when it is shown none of them: what a command answers instead of ``seq``."""
    out: dict[str, int] = {}
    for r in records:
        if r.visible_to(tags):
            for t, n in r.shown_to(tags)["pos"].items():
                out[t] = max(out.get(t, 0), n)
    return out or None


async def parse_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    raw = await read_body(request, MAX_JSON)
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if _deeper_than(data, MAX_DEPTH):
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise Invalid(f"{where}: {first.get('msg', '')}") from None


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


class OtherSession(E.Refusal):
    """A token for one session (a bidder's page link, an expert's sign-in) used on another."""

    code = "NOT_PERMITTED"
    status = 403
    zh = "此登录仅用于另一会话，请从该会话的页面或评标室重新进入"
    en = "this sign-in is for another session: enter from that session's page or room"


class Invalid(BidBridgeError):
    code = "INVALID_INPUT"
    zh = "输入内容不符合要求"
    en = "the input is not valid"
    status = 422


STORE_STATUS = {
    "NOT_FOUND": 404,
    "UPLOAD_TOO_LARGE": 413,
    "BAD_BLOB_ID": 400,
    "STORE_UNAVAILABLE": 503,
}
"""HTTP statuses of the store's errors (which know nothing of HTTP); others answer 409."""


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One error-to-response mapping for the whole API."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response("HTTP_" + str(exc.status), "请求无法处理", exc.reason, exc.status)
    except Refusal as exc:
        return error_response(exc.code, exc.zh, exc.en, exc.status, exc.detail)
    except StoreError as exc:
        status = getattr(exc, "status", None) or STORE_STATUS.get(exc.code, 409)
        return error_response(
            exc.code, exc.zh, exc.en, status, str(getattr(exc, "detail", "") or "")
        )
    except BidBridgeError as exc:
        status = getattr(exc, "status", 422)
        return error_response(exc.code, exc.zh, exc.en, status, exc.detail or "")
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(
            "INTERNAL", "服务器内部错误，请稍后重试", "internal server error", 500
        )


# --- one request: who calls, for which session, and the answer ---------------------------------


@dataclass
class Ctx:
    """What a handler gets: the server, the request and the caller (None on public routes)."""

    hub: Hub
    request: web.Request
    principal: Principal | None

    @property
    def who(self) -> Principal:
        assert self.principal is not None
        return self.principal

    @property
    def actor(self) -> op.Actor:
        """The caller as the opening machine names its actors."""
        return op.Actor(role=self.who.role, id=self.who.party_id)  # type: ignore[arg-type]

    @property
    def session_id(self) -> str:
        return self.request.match_info["session_id"]


async def dispatch(request: web.Request, route: Route) -> web.StreamResponse:
    """Authenticate (bearer token, role), parse the body into its model, call, answer JSON."""
    hub = request.app[HUB_KEY]
    principal = None
    if route.roles is not None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise TokenInvalid("no bearer token / 缺少登录凭证")
        # Signature, expiry, and the certificate against the CRLs as last reloaded (a set
        # lookup: CERT_REVOKED), so a revoked certificate's token is refused here, refresh too.
        principal = hub.tokens.check(header[7:].strip(), hub.clock.now())
        if principal.role not in route.roles:
            raise E.NotPermitted(f"{principal.role} may not call {route.method} {route.path}")
        scope = principal.session_id
        if scope is not None and request.match_info.get("session_id", scope) != scope:
            raise OtherSession()
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


def pos_of(ctx: Ctx, records: Sequence[EventRecord]) -> dict[str, int] | None:
    """The caller's positions of what its request appended (None: nothing it is shown)."""
    return positions(records, caller_tags(ctx.who))


async def load_session(ctx: Ctx) -> Any:
    """The caller's session (state, version, head), or NOT_FOUND."""
    out = await ctx.hub.service.load(ctx.session_id)
    if out is None:
        raise NotFound(ctx.session_id)
    return out


async def execute(ctx: Ctx, cmd: Any) -> OkOut:
    """Run one command on the caller's session; answer the caller's positions it reached."""
    return OkOut(pos=pos_of(ctx, await ctx.hub.service.execute(ctx.session_id, cmd)))


def _verb(method: str) -> Callable[..., Route]:
    def make(
        path: str,
        handler: Handler,
        roles: tuple[str, ...] | None = None,
        *,
        body: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        raw: str | None = None,
        tag: str = "hall",
    ) -> Route:
        """A route whose summary is the first line of its handler's docstring."""
        summary = (handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else ""
        return Route(method, path, handler, summary, body, response, roles, raw, tag)

    make.__name__ = method.lower()
    return make


get = _verb("GET")
post = _verb("POST")
put = _verb("PUT")
delete = _verb("DELETE")


def command(
    path: str,
    command_class: type[BaseModel],
    roles: tuple[str, ...],
    summary: str,
    *,
    body: type[BaseModel] | None = None,
    method: str = "POST",
    tag: str = "hall",
) -> Route:
    """A route that only turns the request into one command and executes it: the caller is the
    command's actor and the body's fields are the command's fields (the same names)."""

    async def handler(ctx: Ctx, parsed: BaseModel | None = None) -> OkOut:
        fields = parsed.model_dump() if parsed is not None else {}
        actor = {"role": ctx.who.role, "id": ctx.who.party_id}
        return await execute(ctx, command_class(actor=actor, **fields))

    handler.__name__ = handler.__qualname__ = f"{command_class.__name__}:{path}"
    return Route(method, path, handler, summary, body, OkOut, roles, tag=tag)


ROUTES_KEY: web.AppKey[Sequence[Route]] = web.AppKey("routes")
"""The application's route list (the OpenAPI route describes it)."""
