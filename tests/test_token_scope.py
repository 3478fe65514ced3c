"""A token made for one session acts on that session only: a bidder's page link for lot 01 does
not upload to (or even read) another session, and an expert's sign-in at a room is good for that
evaluation only — on REST routes, for new page links and in the live hall. Tokens from a CA
login are not bound: a company acts on all its lots. (Issue: trust and secrecy, "scopes".)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.auth import Principal
from tests.support.evaluation import drawn
from tests.support.hall import ConnectionRefused, Hall, Listener, P


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def page_token(hall: Hall, who: Any, sid: str, page: str) -> str:
    out = await hall.request("POST", "/api/auth/web-link", who, {"session_id": sid, "page": page})
    code = out["url"].split("#code=", 1)[1]
    got = await hall.request("POST", "/api/auth/web-link/redeem", None, {"code": code})
    return str(got["token"])


async def test_a_bidders_page_token_for_one_lot_cannot_upload_to_or_read_another(
    hall: Hall, tmp_path: Path
) -> None:
    mine, other = await hall.create_session(), await hall.create_session(title="另一标段")
    a = P(hall, "a")
    token = await page_token(hall, a, mine, "bidder")
    assert hall.hub.tokens.check(token, hall.clock.now()).session_id == mine
    await hall.request("GET", f"/api/sessions/{mine}", headers=bearer(token))  # its own: fine
    bid = hall.seal(tmp_path, a)
    for method, path, data in (
        ("PUT", f"/api/sessions/{other}/bid", bid.read_bytes()),
        ("GET", f"/api/sessions/{other}", None),
        ("GET", f"/api/sessions/{other}/events", None),
        ("POST", f"/api/sessions/{other}/sign-in", None),
    ):
        err = await hall.refused(
            403, "NOT_PERMITTED", method, path, data=data, headers=bearer(token)
        )
        assert "another session" in err.body["en"]
    # nor can it ask for a page link to the other session
    await hall.refused(
        403,
        "NOT_PERMITTED",
        "POST",
        "/api/auth/web-link",
        json_body={"session_id": other, "page": "bidder"},
        headers=bearer(token),
    )
    # a renewed page token keeps its session
    renewed = await hall.request("POST", "/api/auth/refresh", headers=bearer(token))
    assert hall.hub.tokens.check(renewed["token"], hall.clock.now()).session_id == mine
    # the company's own CA login still acts on every lot
    await hall.upload(other, a, bid)


async def test_a_bidders_page_token_cannot_join_another_sessions_hall(hall: Hall) -> None:
    mine, other = await hall.create_session(), await hall.create_session(title="另一标段")
    token = await page_token(hall, P(hall, "a"), mine, "bidder")
    listener = Listener()
    hall.listeners.append(listener)
    with pytest.raises(ConnectionRefused) as err:
        await listener.connect_with(hall.url, {"token": token, "session_id": other})
    assert err.value.code == "NOT_PERMITTED" and err.value.data["zh"]
    ok = Listener()
    hall.listeners.append(ok)
    await ok.connect_with(hall.url, {"token": token, "session_id": mine})


async def test_an_experts_sign_in_is_good_for_that_evaluation_only(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    mid, member = sorted((await e.committee()).items())[0]
    out = await e.sign_in(mid, member["room_id"])
    p = hall.hub.tokens.check(out["token"], hall.clock.now())
    assert (p.role, p.party_id, p.session_id) == ("expert", mid, e.sid)
    await hall.request("GET", e.path(), headers=bearer(out["token"]))
    # the same expert's token bound to another evaluation reads nothing of this one
    elsewhere, _ = hall.hub.tokens.issue(
        Principal("expert", mid, p.name, p.cert_sha256, "another-evaluation"), hall.clock.now()
    )
    for path in (e.path(), e.path("events"), e.path("forms")):
        await hall.refused(403, "NOT_PERMITTED", "GET", path, headers=bearer(elsewhere))
    await hall.refused(
        403,
        "NOT_PERMITTED",
        "POST",
        e.path("vote"),
        json_body={"candidate": mid},
        headers=bearer(elsewhere),
    )
    listener = Listener()
    hall.listeners.append(listener)
    with pytest.raises(ConnectionRefused) as err:
        await listener.connect_with(hall.url, {"token": elsewhere, "session_id": e.sid})
    assert err.value.code == "NOT_PERMITTED"
