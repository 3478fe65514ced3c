"""The browser pages' sign-in: a one-time link from an agent that logged in with its CA key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest_asyncio

from tests.conftest import Pki
from tests.hall import Hall, start_hall, stop_hall
from tests.test_hall_api import P


@pytest_asyncio.fixture
async def hall(pki: Pki, tmp_path: Path) -> AsyncIterator[Hall]:
    h = await start_hall(pki, tmp_path)
    try:
        yield h
    finally:
        await stop_hall(h)


def code_of(url: str) -> str:
    assert url.startswith("/web/enter.html#code=")
    return url.split("#code=", 1)[1]


async def test_link_is_good_once_and_becomes_a_session_token(hall: Hall) -> None:
    sid = await hall.create_session()
    out = await hall.request(
        "POST", "/api/auth/web-link", P(hall, "a"), {"session_id": sid, "page": "bidder"}
    )
    code = code_of(out["url"])
    got = await hall.request("POST", "/api/auth/web-link/redeem", None, {"code": code})
    assert (got["role"], got["session_id"], got["page"]) == ("bidder", sid, "bidder")
    assert got["party_id"] == P(hall, "a").code
    view = await hall.request(
        "GET", f"/api/sessions/{sid}", headers={"Authorization": f"Bearer {got['token']}"}
    )
    assert view["session_id"] == sid
    await hall.refused(
        401, "CHALLENGE_INVALID", "POST", "/api/auth/web-link/redeem", None, {"code": code}
    )


async def test_link_expires_after_a_minute(hall: Hall) -> None:
    sid = await hall.create_session()
    out = await hall.request(
        "POST", "/api/auth/web-link", P(hall, "host"), {"session_id": sid, "page": "host"}
    )
    hall.clock.set(hall.clock.now() + timedelta(seconds=61))
    await hall.refused(
        401,
        "CHALLENGE_INVALID",
        "POST",
        "/api/auth/web-link/redeem",
        None,
        {"code": code_of(out["url"])},
    )


async def test_link_cannot_be_forged_or_opened_on_another_roles_page(hall: Hall) -> None:
    sid = await hall.create_session()
    out = await hall.request(
        "POST", "/api/auth/web-link", P(hall, "a"), {"session_id": sid, "page": "bidder"}
    )
    raw, mac = code_of(out["url"]).split(".")
    forged = raw[:-2] + ("AA" if raw[-2:] != "AA" else "BB") + "." + mac
    await hall.refused(
        401, "CHALLENGE_INVALID", "POST", "/api/auth/web-link/redeem", None, {"code": forged}
    )
    await hall.refused(
        403,
        "NOT_PERMITTED",
        "POST",
        "/api/auth/web-link",
        P(hall, "a"),
        {"session_id": sid, "page": "host"},
    )
    await hall.refused(
        404,
        "NOT_FOUND",
        "POST",
        "/api/auth/web-link",
        P(hall, "a"),
        {"session_id": "no-such-session", "page": "bidder"},
    )


async def test_pages_and_the_socketio_client_are_served(hall: Hall) -> None:
    async with hall.http.get(hall.url + "/web/vendor/socket.io.esm.min.js") as r:
        assert r.status == 200 and "javascript" in r.headers["Content-Type"]
        assert b"io" in await r.read()
    async with hall.http.get(hall.url + "/web/node_modules/socket.io-client/package.json") as r:
        assert r.status == 404  # packages are not served wholesale
