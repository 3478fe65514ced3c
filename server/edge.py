"""What reaches the server before any route: malformed HTTP requests and malformed engine.io and
socket.io packets are refused at the edge, answered 4xx or closed, and logged as one line.

python-engineio and python-socketio decode whatever a client sends and let unexpected input
escape as exceptions: a frame with an unknown packet type or none at all, broken or deeply nested
JSON, binary garbage, an event without a name. Those became 500s, garbage bytes on an upgraded
WebSocket and tracebacks in the log. Here every packet is checked before the libraries see it:

* a WebSocket frame that is not a well-formed engine.io packet closes the connection, as if the
  client had closed it (``GuardedWebSocket``);
* a long-polling POST is read (at most ``MAX_PACKET`` bytes), checked, and refused 400 or 413
  with the session closed (``GuardedEngine``);
* a socket.io packet that does not decode, or that the hall never accepts (binary events and
  acks, an event without a name), closes the connection (``GuardedServer``). A connect with a
  bad auth is the hall's to refuse, with its own code.

aiohttp itself answers 400 to a request line, header or URL over its limits; ``REQUEST_LOG``
keeps that to a line in the log instead of a traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from typing import Any

import engineio
import socketio
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from engineio.async_drivers import aiohttp as engineio_aiohttp
from socketio import packet as sio_packet

from server.domain.errors import refusal

log = logging.getLogger(__name__)

MAX_PACKET = 64 * 1024
"""The largest engine.io message or polling body a client may send. The hall's clients send a
few hundred bytes (the connect auth with its token, ``time``, ``replay``); nothing sends more."""
MAX_PAYLOAD_PACKETS = 16
"""Packets in one long-polling POST (engine.io's own limit)."""
MAX_DEPTH = 32
"""JSON nesting in a packet, as for REST bodies (server/api/routing.py)."""

CLIENT_TYPES = frozenset("134")
"""engine.io packets a client sends on either transport: close, pong, message. (Open, ping and
noop come from the server; engine.io answers them from a client by closing the session, which on
long-polling waits for a poll that may never come. Binary, "b", the hall never uses.)"""
UPGRADE_PACKETS = frozenset({"2probe", "5"})
"""What a client sends on a WebSocket to upgrade a polling session: the probe, then upgrade."""
SOCKET_TYPES = frozenset(
    {sio_packet.CONNECT, sio_packet.DISCONNECT, sio_packet.EVENT, sio_packet.ACK}
)
"""socket.io packet types a hall client may send (no binary events or acks, no CONNECT_ERROR)."""

PacketMalformed = refusal(
    "PacketMalformed",
    "SOCKET_PACKET_MALFORMED",
    400,
    "实时连接收到格式错误的数据包，连接已关闭",
    "a malformed real-time (engine.io/socket.io) packet was received; the connection is closed",
)
PacketTooLarge = refusal(
    "PacketTooLarge",
    "SOCKET_PACKET_TOO_LARGE",
    413,
    "实时连接的数据包过大，连接已关闭",
    f"a real-time packet is larger than {MAX_PACKET} bytes; the connection is closed",
)


# --- JSON with bounded depth -------------------------------------------------------------------


def _deeper_than(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return False


class BoundedJson:
    """The ``json`` module engine.io and socket.io decode packets with: too deep a document is a
    ``ValueError`` (which both libraries treat as malformed), never a ``RecursionError``."""

    JSONDecodeError = json.JSONDecodeError

    @staticmethod
    def dumps(*args: Any, **kwargs: Any) -> str:
        return json.dumps(*args, **kwargs)

    @staticmethod
    def loads(*args: Any, **kwargs: Any) -> Any:
        try:
            value = json.loads(*args, **kwargs)
        except RecursionError:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        if _deeper_than(value, MAX_DEPTH):
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        return value


# --- the checks (pure) -------------------------------------------------------------------------


def socket_packet_problem(data: Any) -> str | None:
    """What is wrong with a socket.io packet (an engine.io message's data), or None."""
    if not isinstance(data, str):
        return "binary socket.io packet"
    try:
        pkt = sio_packet.Packet(encoded_packet=data)
    except (ValueError, IndexError, TypeError, KeyError, RecursionError) as exc:
        return f"undecodable socket.io packet ({type(exc).__name__})"
    if pkt.packet_type not in SOCKET_TYPES:
        return f"socket.io packet type {pkt.packet_type} not accepted"
    if pkt.packet_type == sio_packet.EVENT and not (
        isinstance(pkt.data, list) and pkt.data and isinstance(pkt.data[0], str)
    ):
        return "socket.io event without a name"
    if pkt.packet_type == sio_packet.ACK and not isinstance(pkt.data, list):
        return "socket.io ack without arguments"
    return None


def engine_packet_problem(data: Any, *, websocket: bool) -> str | None:
    """What is wrong with one engine.io packet as a client sends it, or None."""
    if isinstance(data, bytes | bytearray):
        return "binary frame"  # the hall's clients send text only
    if not isinstance(data, str) or not data:
        return "empty engine.io packet"
    if websocket and data in UPGRADE_PACKETS:
        return None
    if data[0] not in CLIENT_TYPES:
        return f"engine.io packet type {data[0]!r} not accepted from a client"
    if len(data) > MAX_PACKET:
        return "engine.io packet too large"
    if data[0] == "4":
        return socket_packet_problem(data[1:])
    return None


def payload_problem(body: bytes) -> str | None:
    """What is wrong with a long-polling POST body (packets separated by 0x1e), or None."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "polling body is not UTF-8"
    if not text:
        return None
    if text.startswith("d="):
        return "JSONP polling is not accepted"
    packets = text.split("\x1e")
    if len(packets) > MAX_PAYLOAD_PACKETS:
        return "too many packets in one polling body"
    for p in packets:
        problem = engine_packet_problem(p, websocket=False)
        if problem:
            return problem
    return None


# --- the transports ----------------------------------------------------------------------------


class GuardedWebSocket(engineio_aiohttp.WebSocket):
    """engine.io's aiohttp WebSocket: a malformed frame ends the connection like a close."""

    async def wait(self) -> Any:
        data = await super().wait()
        problem = engine_packet_problem(data, websocket=True)
        if problem:
            log.warning("websocket closed after a malformed frame: %s", problem)
            return None
        return data


_BODY: web.RequestKey[bytes] = web.RequestKey("bidbridge-engineio-body", bytes)


class _Body:
    """The checked body of a polling POST, read again by engine.io as its ``wsgi.input``."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self, n: int = -1) -> bytes:
        out, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
        return out


def _translate(request: web.Request) -> MutableMapping[str, Any]:
    environ: MutableMapping[str, Any] = engineio_aiohttp.translate_request(request)
    body = request.get(_BODY)
    if body is not None:
        environ["wsgi.input"] = _Body(body)
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


class GuardedEngine(engineio.AsyncServer):
    """engine.io's server with every polling body and WebSocket frame checked first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async = {
            **self._async,  # type: ignore[has-type]
            "websocket": GuardedWebSocket,
            "translate_request": _translate,
        }

    async def handle_request(self, request: web.Request) -> web.StreamResponse:
        if request.method == "POST":
            request[_BODY] = await self._checked_body(request)
        response: web.StreamResponse = await super().handle_request(request)
        return response

    async def _checked_body(self, request: web.Request) -> bytes:
        sid = request.query.get("sid")
        chunks: list[bytes] = []
        size = 0
        too_large = (request.content_length or 0) > MAX_PACKET
        while not too_large:
            chunk = await request.content.read(MAX_PACKET + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            too_large = size > MAX_PACKET
        if too_large:
            await self._end(sid, "polling body too large")
            raise PacketTooLarge()
        body = b"".join(chunks)
        problem = payload_problem(body)
        if problem:
            await self._end(sid, problem)
            raise PacketMalformed(problem)
        return body

    async def _end(self, sid: str | None, problem: str) -> None:
        log.warning("long-polling request refused: %s", problem)
        if sid is not None:
            await self.drop(sid)

    async def drop(self, sid: str) -> None:
        """Close an engine.io session now. (``disconnect`` waits until a poll fetches the
        CLOSE packet, which a misbehaving polling client may never do.)"""
        socket = self.sockets.pop(sid, None)
        if socket is not None:
            await socket.close(wait=False, reason=self.reason.SERVER_DISCONNECT)


class GuardedServer(socketio.AsyncServer):
    """socket.io's server on ``GuardedEngine``, with each packet checked before it is handled."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_http_buffer_size", MAX_PACKET)
        kwargs.setdefault("json", BoundedJson)
        super().__init__(**kwargs)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return GuardedEngine

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        problem = socket_packet_problem(data)
        if problem:
            log.warning("socket.io connection closed after a malformed packet: %s", problem)
            await self.eio.drop(eio_sid)
            return
        await super()._handle_eio_message(eio_sid, data)


# --- aiohttp's own refusals --------------------------------------------------------------------


class _RequestLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's server log: a request its parser refuses (a header, request line or URL over
    the limits, bad syntax) has already been answered 400; it is one line, not a traceback.
    Anything else keeps its traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            self.logger.warning(
                "%s: refused %s %s",
                str(msg) % args if args else msg,
                exc_info.code,
                type(exc_info).__name__,
            )
            return
        self.logger.exception(msg, *args, exc_info=exc_info, **kw)


REQUEST_LOG = _RequestLog(logging.getLogger("aiohttp.server"), {})
HANDLER_ARGS: dict[str, Any] = {
    "logger": REQUEST_LOG,
    # aiohttp's defaults, stated: a request line or header field over 8 KiB, or more than 128
    # header fields, is answered 400 before any route runs
    "max_line_size": 8190,
    "max_field_size": 8190,
    "max_headers": 128,
}
"""The aiohttp request handler's settings for ``web.Application(handler_args=...)``."""
