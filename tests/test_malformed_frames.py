"""Malformed engine.io and socket.io packets, over a real WebSocket and over long-polling, and
oversized request headers and URLs, sent to a running `bidbridge serve`: each is a 4xx or a clean
close, never a 500; the server keeps serving (a real socket.io client joins the hall afterwards)
and its log holds no traceback. (Issue: trust and secrecy, item 8 "500 answers with tracebacks".)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from server.edge import MAX_DEPTH, MAX_PACKET
from tests.support.pki import Pki
from tests.support.servers import (
    Client,
    ServerProcess,
    free_port,
    prepare_site,
    published_session,
    register,
    worktree_env,
)

EIO = "/socket.io/?EIO=4"


@dataclass
class Running:
    server: ServerProcess
    client: Client
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.server.url

    async def assert_still_serving(self) -> None:
        """The API answers, a real socket.io client joins a hall and gets its replay, and the
        log has no traceback and no 5xx."""
        async with self.http.get(self.url + "/api/time") as r:
            assert r.status == 200
        await register(self.client)
        sid = await published_session(self.client, timedelta(hours=1))
        await self.client.hall_socket(sid, "host", 0, {})
        await self.client.close_sockets()
        assert self.server.proc is not None and self.server.proc.poll() is None
        log = self.server.log.read_text("utf-8", "replace")
        assert "Traceback" not in log, log[-4000:]
        assert not re.search(r'HTTP/1\.1" 5\d\d ', log), "a 5xx in the access log"


@pytest_asyncio.fixture
async def running(pki: Pki, tmp_path: Path) -> AsyncIterator[Running]:
    """`bidbridge serve` (SQLite) in a child process, its log in tmp_path/server.log."""
    site = prepare_site(pki, tmp_path, None)
    port = free_port()
    server = ServerProcess(
        site.serve_argv(port),
        worktree_env(site.env),
        tmp_path / "server.log",
        f"http://127.0.0.1:{port}",
    )
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        await server.start(http)
        yield Running(server, Client(http, server.url, site.parties), http)
    finally:
        server.kill()
        await http.close()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- WebSocket ----------------------------------------------------------------------------------

WEBSOCKET_FRAMES: list[tuple[str, str | bytes]] = [
    ("unknown engine.io packet type", "9"),
    ("an open packet from a client", "0"),
    ("a noop from a client", "6"),
    ("empty frame", ""),
    ("not a packet at all", "x"),
    ("base64 binary packet", "b" + base64.b64encode(b"\x00\x01").decode()),
    ("binary garbage", b"\xff\xfe" + os.urandom(4096)),
    ("broken JSON in a socket.io connect", '40/hall,{"token":'),
    ("broken JSON in an event", '42/hall,["replay",{'),
    ("unknown socket.io packet type", "49"),
    ("event without a name", "42/hall,"),
    ("event whose name is not a string", "42/hall,[1,2]"),
    ("binary event", '451-/hall,["replay",{"_placeholder":true,"num":0}]'),
    ("JSON nested past any stack", "42/hall," + nested(20_000)),
    ("JSON nested past the limit", '42/hall,["replay",' + nested(MAX_DEPTH + 1) + "]"),
]


async def send_frame(
    http: aiohttp.ClientSession, url: str, frame: str | bytes
) -> aiohttp.WSMessage:
    """Open an engine.io WebSocket, send ``frame``, and return what the server does next."""
    ws_url = url.replace("http://", "ws://") + EIO + "&transport=websocket"
    async with http.ws_connect(ws_url, max_msg_size=0) as ws:
        hello = await ws.receive_str(timeout=10)
        assert hello.startswith("0{")  # engine.io's open packet
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
        while True:
            msg = await ws.receive(timeout=10)
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data in ("2", "6"):
                continue  # a ping or noop on the way
            return msg


async def test_malformed_websocket_frames_close_the_connection_cleanly(running: Running) -> None:
    for name, frame in WEBSOCKET_FRAMES:
        msg = await send_frame(running.http, running.url, frame)
        assert msg.type == aiohttp.WSMsgType.CLOSE, (name, msg)
        assert msg.data == aiohttp.WSCloseCode.OK, (name, msg)
    log = running.server.log.read_text("utf-8", "replace")
    assert log.count("websocket closed after a malformed frame") == len(WEBSOCKET_FRAMES)
    await running.assert_still_serving()


async def test_a_websocket_frame_over_the_size_limit_is_closed_as_too_big(
    running: Running,
) -> None:
    msg = await send_frame(running.http, running.url, "4" + "a" * (MAX_PACKET + 1))
    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    # A 2 MB frame: the server closes as soon as it has read the frame's length, so the client
    # may still be writing it when the connection goes (seen on a loaded machine); either way
    # the connection ends, as too big, and the server goes on serving.
    try:
        msg = await send_frame(running.http, running.url, "4" + "a" * 2_000_000)
    except (ConnectionError, aiohttp.ClientConnectionError):
        pass
    else:
        assert msg.type == aiohttp.WSMsgType.CLOSE
        assert msg.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    await running.assert_still_serving()


# --- long-polling -------------------------------------------------------------------------------

POLLING_BODIES: list[tuple[str, bytes, int, str]] = [
    ("not UTF-8", b"\xff\xfe" + os.urandom(512), 400, "SOCKET_PACKET_MALFORMED"),
    ("not a packet", b"garbage", 400, "SOCKET_PACKET_MALFORMED"),
    ("broken JSON", b'42/hall,["replay",{', 400, "SOCKET_PACKET_MALFORMED"),
    ("a bad packet among good ones", "\x1e".join(["3", "9", "x"]).encode(), 400, "SOCKET_PACKET_MALFORMED"),
    ("too many packets", "\x1e".join(["3"] * 17).encode(), 400, "SOCKET_PACKET_MALFORMED"),
    # engine.io closes a session for these with a wait for the next poll: the POST hung
    ("a noop from the client", b"6", 400, "SOCKET_PACKET_MALFORMED"),
    ("a ping from the client", b"2", 400, "SOCKET_PACKET_MALFORMED"),
    ("an upgrade over polling", b"5", 400, "SOCKET_PACKET_MALFORMED"),
    ("JSONP body", b"d=4x", 400, "SOCKET_PACKET_MALFORMED"),
    ("event without a name", b"42/hall,", 400, "SOCKET_PACKET_MALFORMED"),
    ("deeply nested JSON", ("42/hall," + nested(20_000)).encode(), 400, "SOCKET_PACKET_MALFORMED"),
    ("over the size limit", b"4" + b"a" * (MAX_PACKET + 1), 413, "SOCKET_PACKET_TOO_LARGE"),
    ("2 MB", b"4" + b"a" * 2_000_000, 413, "SOCKET_PACKET_TOO_LARGE"),
]  # fmt: skip


async def open_polling(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + EIO + "&transport=polling") as r:
        assert r.status == 200
        text = await r.text()
    assert text.startswith("0{")
    return str(json.loads(text[1:])["sid"])


@pytest.mark.parametrize(
    "name, body, status, code", POLLING_BODIES, ids=[b[0] for b in POLLING_BODIES]
)
async def test_malformed_long_polling_bodies_are_refused_and_end_the_session(
    running: Running, name: str, body: bytes, status: int, code: str
) -> None:
    sid = await open_polling(running.http, running.url)
    poll = running.url + EIO + f"&transport=polling&sid={sid}"
    async with running.http.post(poll, data=body) as r:
        assert r.status == status, name
        refusal = await r.json()
    assert refusal["code"] == code
    assert refusal["zh"] and refusal["en"] and refusal["zh"] != refusal["en"]
    # the session is over: its next poll is refused, not left hanging
    async with running.http.get(poll) as r:
        assert r.status == 400
    await running.assert_still_serving()


async def test_a_well_formed_polling_body_is_still_accepted(running: Running) -> None:
    sid = await open_polling(running.http, running.url)
    poll = running.url + EIO + f"&transport=polling&sid={sid}"
    async with running.http.post(poll, data=b"3") as r:  # pong
        assert r.status == 200
        assert await r.text() == "OK"
    async with running.http.post(poll, data=b"40/hall,{}") as r:  # a connect (refused later)
        assert r.status == 200
        assert await r.text() == "OK"
    await running.assert_still_serving()


async def test_polling_requests_for_unknown_sessions_or_versions_are_400(running: Running) -> None:
    for query in ("EIO=99&transport=polling", "EIO=4&transport=bogus", "EIO=x", ""):
        for method in ("GET", "POST"):
            async with running.http.request(
                method, running.url + "/socket.io/?" + query, data=b"3"
            ) as r:
                assert r.status == 400, (method, query)
    async with running.http.post(running.url + EIO + "&transport=polling&sid=nope", data=b"3") as r:
        assert r.status == 400
    await running.assert_still_serving()


# --- oversized requests -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/time", "/socket.io/?EIO=4&transport=polling"])
async def test_oversized_headers_and_urls_are_400_without_a_traceback(
    running: Running, path: str
) -> None:
    attempts: list[tuple[str, str, dict[str, str]]] = [
        ("a 100 KB header", path, {"X-Big": "a" * 100_000}),
        ("a 100 KB bearer token", path, {"Authorization": "Bearer " + "a" * 100_000}),
        ("2,000 headers", path, {f"X-H{i}": "v" for i in range(2000)}),
        ("a 100 KB query", path + ("&" if "?" in path else "?") + "a" * 100_000, {}),
        ("a 100 KB path", "/api/" + "a" * 100_000, {}),
    ]
    for name, target, headers in attempts:
        async with running.http.get(running.url + target, headers=headers) as r:
            assert r.status == 400, name
    log = running.server.log.read_text("utf-8", "replace")
    assert len(re.findall(r"aiohttp\.server: .*refused 400", log)) == len(attempts)
    await running.assert_still_serving()


async def test_raw_garbage_instead_of_http_is_400_without_a_traceback(running: Running) -> None:
    port = int(running.url.rsplit(":", 1)[1])
    for garbage in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64),  # a TLS hello
        b"GET /api/time HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"GET /api/time HTTP/9.9\r\n\r\n",
        b"GET " + b"/" * 20_000 + b" HTTP/1.1\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(garbage)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        await writer.wait_closed()
        assert answer == b"" or re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer[:80]
    await running.assert_still_serving()
