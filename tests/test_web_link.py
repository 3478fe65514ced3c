"""The browser pages' sign-in: a one-time link from an agent that logged in with its CA key."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.hall import Hall, P


@pytest.fixture
def store_url() -> None:
    """The ``hall`` fixture on the server's default store: these tests run once, not once per
    database."""
    return None


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


# --- token refresh ------------------------------------------------------------------------------


async def test_a_token_is_renewed_before_it_expires_but_never_after(hall: Hall) -> None:
    """A page open longer than a token lives renews it; an expired one stays expired."""
    sid = await hall.create_session()
    out = await hall.request(
        "POST", "/api/auth/web-link", P(hall, "a"), {"session_id": sid, "page": "bidder"}
    )
    got = await hall.request(
        "POST", "/api/auth/web-link/redeem", None, {"code": code_of(out["url"])}
    )
    assert got["issued_at"] == hall.clock.now().isoformat()
    hall.clock.set(hall.clock.now() + timedelta(minutes=29))
    bearer = {"Authorization": f"Bearer {got['token']}"}
    fresh = await hall.request("POST", "/api/auth/refresh", headers=bearer)
    assert fresh["token"] != got["token"]
    assert fresh["issued_at"] == hall.clock.now().isoformat()
    assert fresh["expires_at"] == (hall.clock.now() + timedelta(minutes=30)).isoformat()
    # the old token's life ends as it did; the new one names the same party
    hall.clock.set(hall.clock.now() + timedelta(minutes=2))
    await hall.refused(401, "TOKEN_INVALID", "GET", f"/api/sessions/{sid}", None, headers=bearer)
    await hall.refused(401, "TOKEN_INVALID", "POST", "/api/auth/refresh", None, headers=bearer)
    renewed = {"Authorization": f"Bearer {fresh['token']}"}
    view = await hall.request("GET", f"/api/sessions/{sid}", headers=renewed)
    assert view["session_id"] == sid
    again = await hall.request("POST", "/api/auth/refresh", headers=renewed)
    assert hall.hub.tokens.check(again["token"], hall.clock.now()).party_id == P(hall, "a").code
    await hall.refused(
        401, "TOKEN_INVALID", "POST", "/api/auth/refresh", None, headers={"Authorization": "x"}
    )


def write_party(folder: Path, name: str, who: Any) -> tuple[Path, Path]:
    """A party's signing key and certificate as PEM files, as `bidbridge demo` saves them."""
    from cryptography.hazmat.primitives import serialization

    from server.identity import cert_pem

    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / f"{name}.key.pem", folder / f"{name}.pem"
    key.write_bytes(
        who.key.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert.write_text(cert_pem(who.cert))
    return key, cert


async def link_command(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "link", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_link_command_logs_in_with_a_ca_key_and_prints_a_working_link(
    hall: Hall, tmp_path: Path
) -> None:
    """`bidbridge link` as a person would run it: CA login with key files, a link on stdout."""
    sid = await hall.create_session()
    key, cert = write_party(tmp_path, "sup", P(hall, "supervisor"))
    args = ["--server", hall.url, "--page", "supervisor", "--session", sid]
    status, out, err = await link_command(*args, "--key", str(key), "--cert", str(cert))
    assert status == 0, err
    url = out.strip()
    assert url.startswith(hall.url + "/web/enter.html#code=")
    got = await hall.request(
        "POST", "/api/auth/web-link/redeem", None, {"code": url.split("#code=", 1)[1]}
    )
    assert (got["role"], got["page"], got["session_id"]) == ("supervisor", "supervisor", sid)
    # With a demo folder's keys: a bidder may not open the wall (the server's refusal, coded).
    write_party(tmp_path / "keys", "bidder1", P(hall, "a"))
    status, out, err = await link_command(*args, "--demo", str(tmp_path), "--as", "bidder1")
    assert (status, out) == (2, "")
    assert err.startswith("ERROR NOT_PERMITTED: "), err
