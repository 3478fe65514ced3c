"""The opening hall's REST API against every role, the 13 rules and hostile input (SQLite and
PostgreSQL). Every refusal is checked for its status, its stable code, a message in Chinese and
English, and an unchanged store (event logs, states, parties, bid keys and blob files)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from crypto import ca
from crypto.attest import b64decode, b64encode, verify_document
from crypto.keys import SoftwareKey
from schemas.canonical import canonical_json
from schemas.time import iso, parse_iso
from server.api.routes import ROUTES
from server.auth import Principal, Tokens, login_document
from server.domain.opening import MAX_VERSIONS
from server.identity import cert_pem
from tests.support.hall import ApiError, Hall, P, Party, after, person
from tests.support.opening import (
    HOUR,
    SIGN_IN,
    announcing,
    cek,
    decrypting,
    send_key,
    supervise,
    with_bids,
)
from tests.support.pki import Pki

OCTET = {"Content-Type": "application/octet-stream"}


# --- helpers ----------------------------------------------------------------------------------


def mentions(event: dict[str, Any], code: str | None) -> bool:
    return code is not None and code in json.dumps(event, ensure_ascii=False)


# --- the matrix: every route against every role ----------------------------------------------

ROLES = ("anonymous", "bidder", "host", "supervisor", "centre", "room", "expert")
PUBLIC = {
    ("GET", "/api/openapi.json"),
    ("GET", "/api/time"),
    ("POST", "/api/auth/challenge"),
    ("POST", "/api/auth/web-link/redeem"),
    ("POST", "/api/auth/login"),
}


def test_public_routes_are_exactly_the_login_clock_and_openapi() -> None:
    assert {(r.method, r.path) for r in ROUTES if r.roles is None} == PUBLIC
    for r in ROUTES:
        assert r.roles is None or set(r.roles) <= set(ROLES) - {"anonymous"}, r.path


async def test_route_role_matrix(hall: Hall, tmp_path: Path) -> None:
    """Every role not named by a route is refused before anything happens: 401 without a valid
    token, 403 NOT_PERMITTED with another role's token; bodies are not even parsed."""
    sid, _ = await with_bids(hall, tmp_path, "a")
    await hall.request("POST", f"/api/sessions/{sid}/rehearsal", P(hall, "a"), {"passed": True})
    tokens = {
        "bidder": P(hall, "a"),
        "host": P(hall, "host"),
        "supervisor": P(hall, "supervisor"),
        "centre": P(hall, "centre"),
    }
    for p in tokens.values():
        await hall.login(p)
    # A room device and a signed-in expert hold tokens like anyone else's (minted here: the
    # matrix is about what a role may call, not about how the token was obtained).
    for role, pid in (("room", "R-TEST"), ("expert", "E-TEST")):
        token, _ = hall.hub.tokens.issue(Principal(role, pid, pid, "0" * 64), hall.clock.now())
        party = Party(pid, P(hall, "host").key, P(hall, "host").cert)
        party.token = token
        tokens[role] = party
    failures: list[str] = []
    checked = 0
    for route in ROUTES:
        if route.roles is None:
            continue
        path = route.path.format(
            session_id=sid,
            objection_id="1",
            request_id="r1",
            expert_id="E1",
            site_id="S1",
            stage="detailed",
            subscription="a1b2c3.x",
        )
        kw: dict[str, Any] = {}
        if route.body is not None:
            kw["json_body"] = {}
        elif route.raw and route.method in ("PUT", "POST"):
            kw["data"] = b"\x30\x80" + b"x" * 100
            kw["headers"] = OCTET
        for role in ROLES:
            if role in route.roles:
                continue
            cases: list[tuple[int, str, Party | None, dict[str, str] | None]]
            if role == "anonymous":
                cases = [
                    (401, "TOKEN_INVALID", None, None),
                    (401, "TOKEN_INVALID", None, {"Authorization": "Bearer not.a-token"}),
                    (401, "TOKEN_INVALID", None, {"Authorization": "Basic YTpi"}),
                ]
            else:
                cases = [(403, "NOT_PERMITTED", tokens[role], None)]
            for status, code, who, headers in cases:
                h = {**kw.get("headers", {}), **(headers or {})}
                try:
                    await hall.refused(
                        status, code, route.method, path, who,
                        json_body=kw.get("json_body"), data=kw.get("data"), headers=h,
                    )  # fmt: skip
                except AssertionError as exc:
                    failures.append(f"{role}: {exc}")
                checked += 1
    assert not failures, "\n".join(failures)
    assert checked >= 3 * len([r for r in ROUTES if r.roles])


async def test_tampered_and_expired_tokens(hall: Hall, tmp_path: Path) -> None:
    sid, _ = await with_bids(hall, tmp_path, "a")
    a = P(hall, "a")
    await hall.login(a)
    assert a.token is not None
    body, mac = a.token.split(".")
    raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw["role"] = "host"
    forged = base64.urlsafe_b64encode(canonical_json(raw)).rstrip(b"=").decode() + "." + mac
    bearer = {"Authorization": f"Bearer {forged}"}
    await hall.refused(401, "TOKEN_INVALID", "POST", f"/api/sessions/{sid}/start", headers=bearer)
    # A token made with another server's secret is worthless here.
    other = Tokens(b"another secret").issue(
        hall.hub.tokens.check(a.token, hall.clock.now()), hall.clock.now()
    )[0]
    bearer = {"Authorization": f"Bearer {other}"}
    await hall.refused(401, "TOKEN_INVALID", "GET", f"/api/sessions/{sid}/receipt", headers=bearer)
    hall.clock.advance(31 * 60)
    await hall.refused(
        401,
        "TOKEN_INVALID",
        "GET",
        f"/api/sessions/{sid}/receipt",
        headers={"Authorization": f"Bearer {a.token}"},
    )


# --- login ------------------------------------------------------------------------------------


async def _signed_challenge(hall: Hall, who: Party) -> str:
    ch = await hall.request("POST", "/api/auth/challenge")
    return hall.sign(who, ch["document"].encode())


async def _login_refused(hall: Hall, status: int, code: str, signature: str) -> ApiError:
    """Logging in with ``signature`` is refused with ``status`` and ``code``."""
    return await hall.refused(
        status, code, "POST", "/api/auth/login", json_body={"signature": signature}
    )


async def test_login_replayed_signature_is_refused(hall: Hall) -> None:
    sig = await _signed_challenge(hall, P(hall, "a"))
    out = await hall.request("POST", "/api/auth/login", json_body={"signature": sig})
    assert (out["role"], out["party_id"]) == ("bidder", P(hall, "a").code)
    await _login_refused(hall, 401, "CHALLENGE_INVALID", sig)


async def test_login_stale_challenge_is_refused(hall: Hall) -> None:
    sig = await _signed_challenge(hall, P(hall, "host"))
    hall.clock.advance(61)
    await _login_refused(hall, 401, "CHALLENGE_INVALID", sig)


async def test_login_unknown_nonce_or_other_server_is_refused(hall: Hall) -> None:
    host = P(hall, "host")
    made_up = hall.sign(host, login_document("00" * 32, hall.hub.settings.server_id))
    await _login_refused(hall, 401, "CHALLENGE_INVALID", made_up)
    ch = await hall.request("POST", "/api/auth/challenge")
    elsewhere = hall.sign(host, login_document(ch["nonce"], "another-server"))
    await _login_refused(hall, 401, "CHALLENGE_INVALID", elsewhere)
    not_login = hall.sign(host, b'{"hello":"world"}')
    await _login_refused(hall, 401, "CHALLENGE_INVALID", not_login)
    await _login_refused(hall, 422, "ENVELOPE_MALFORMED", "***")


async def test_login_with_unregistered_certificate(hall: Hall, pki: Pki) -> None:
    stranger = person(pki.root_a, "陌生人", "host", "X999", [])
    await _login_refused(hall, 403, "PARTY_UNKNOWN", await _signed_challenge(hall, stranger))
    # The bidder's encryption certificate is not a login certificate (wrong key usage).
    a = P(hall, "a")
    assert a.enc_key is not None and a.enc_cert is not None
    sig = await _signed_challenge(hall, Party("甲-enc", a.enc_key, a.enc_cert))
    await _login_refused(hall, 422, "CERT_WRONG_USAGE", sig)


async def test_login_with_revoked_certificate(hall: Hall, pki: Pki) -> None:
    issued = ca.issue_person(
        pki.root_a, name="主持人赵", role="host", person_id="H777", key_type="ec-p256"
    )
    assert issued.key is not None
    zhao = Party("主持人赵", SoftwareKey(issued.key), issued.certificate)
    await hall.request(
        "POST",
        "/api/accounts",
        P(hall, "centre"),
        {"role": "host", "name": zhao.name, "cert_pem": cert_pem(zhao.cert)},
    )
    await hall.login(zhao)  # registered and valid: accepted
    revoked = ca.RevokedEntry(issued.certificate.serial_number, pki.now - timedelta(minutes=30))
    trust = pki.trust(crls=False)
    trust.add_crl(pki.crl(pki.root_a, [revoked], number=2))
    trust.add_crl(pki.crl(pki.root_b))
    trust.add_crl(pki.crl(pki.sub_b))
    hall.hub.trust = trust
    await _login_refused(hall, 422, "CERT_REVOKED", await _signed_challenge(hall, zhao))
    await hall.login(P(hall, "host"))  # the others are not affected


# --- malformed bodies -------------------------------------------------------------------------


async def test_malformed_json_and_wrong_types(hall: Hall, tmp_path: Path) -> None:
    sid, _ = await with_bids(hall, tmp_path, "a")
    host = P(hall, "host")
    path = f"/api/sessions/{sid}/suspend"
    json_h = {"Content-Type": "application/json"}
    for raw in (b"{not json", b"", b'{"reason": "x"', b"\xff\xfe\x00"):
        await hall.refused(400, "BAD_REQUEST", "POST", path, host, data=raw, headers=json_h)
    for body in (
        {"reason": 5},
        {"reason": ["a"]},
        {},
        [],
        "reason",
        {"reason": "x", "extra": 1},
        None,
    ):
        await hall.refused(
            422, "INVALID_INPUT", "POST", path, host, data=json.dumps(body).encode(), headers=json_h
        )
    big = json.dumps({"reason": "x" * (1024 * 1024 + 10)}).encode()
    await hall.refused(400, "BAD_REQUEST", "POST", path, host, data=big, headers=json_h)
    for where, wrong in (
        (f"/api/sessions/{sid}/extend", {"minutes": "ten", "reason": "r"}),
        (f"/api/sessions/{sid}/extend", {"minutes": 0, "reason": "r"}),
        (f"/api/sessions/{sid}/incidents", {"reason": "r", "bidders": ["not-a-code"]}),
        (
            "/api/sessions",
            {"lot_id": "JS-2026-0101/01", "sign_in_opens": "yesterday", "deadline": 3},
        ),
    ):
        await hall.refused(422, "INVALID_INPUT", "POST", where, host, wrong)


async def test_bad_query_and_path_values(hall: Hall, tmp_path: Path) -> None:
    sid, _ = await with_bids(hall, tmp_path, "a")
    await hall.refused(
        422, "INVALID_INPUT", "GET", f"/api/sessions/{sid}/events?after=abc", P(hall, "host")
    )
    await hall.refused(404, "NOT_FOUND", "GET", "/api/sessions/no-such-session", P(hall, "host"))
    await hall.refused(
        404, "NOT_FOUND", "POST", "/api/sessions/no-such-session/start", P(hall, "host")
    )
    await hall.refused(
        404, "NOT_FOUND", "GET", "/api/sessions/no-such-session/events", P(hall, "a")
    )
    await hall.at(hall.t0 + HOUR)
    await hall.refused(
        404,
        "OBJECTION_UNKNOWN",
        "POST",
        f"/api/sessions/{sid}/objections/x/reply",
        P(hall, "host"),
        {"text": "答复"},
    )
    await hall.refused(
        404,
        "OBJECTION_UNKNOWN",
        "POST",
        f"/api/sessions/{sid}/objections/7/reply",
        P(hall, "host"),
        {"text": "答复"},
    )


# --- uploads: size and truncation -------------------------------------------------------------


async def test_upload_too_large_is_refused_and_nothing_stored(hall: Hall, tmp_path: Path) -> None:
    sid, _ = await with_bids(hall, tmp_path, "")
    env = hall.seal(tmp_path, P(hall, "a"), name="a")
    limit = env.stat().st_size // 2  # the limit is met halfway through the upload
    assert limit > 1024
    hall.hub.settings.upload_limit = limit
    path = f"/api/sessions/{sid}/bid"
    await hall.refused(
        413, "UPLOAD_TOO_LARGE", "PUT", path, P(hall, "a"), data=env.read_bytes(), headers=OCTET
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit is met mid-stream
        data = env.read_bytes()
        for i in range(0, len(data), 1024):
            yield data[i : i + 1024]

    before = await hall.snapshot()
    try:
        await hall.request("PUT", path, P(hall, "a"), data=chunks(), headers=OCTET)
    except ApiError as exc:
        assert (exc.status, exc.code) == (413, "UPLOAD_TOO_LARGE")
    except Exception:  # the server may answer and close before the client finished sending
        pass
    else:
        raise AssertionError("an upload over the limit was accepted")
    assert await hall.snapshot() == before
    assert hall.temp_files() == []


async def test_truncated_upload_leaves_nothing(hall: Hall, tmp_path: Path) -> None:
    sid, _ = await with_bids(hall, tmp_path, "")
    a = P(hall, "a")
    await hall.login(a)
    before = await hall.snapshot()
    env = hall.seal(tmp_path, a, name="a").read_bytes()
    host, port = hall.server.host, hall.server.port
    _reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"PUT /api/sessions/{sid}/bid HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {a.token}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: 100000\r\n\r\n"
    ).encode()
    writer.write(head + env[:1000])
    await writer.drain()
    # The server is now streaming the body into a temp file; then the client goes away.
    async with asyncio.timeout(5):
        while not hall.temp_files():
            await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()
    async with asyncio.timeout(5):
        while hall.temp_files():
            await asyncio.sleep(0.01)
    assert await hall.snapshot() == before
    # The bidder can simply upload again.
    await hall.upload(sid, a, tmp_path / "a.p7m")


# --- rule 1: the deadline; replace and withdraw -----------------------------------------------


async def test_rule_01_upload_one_microsecond_before_and_one_second_after(
    hall: Hall, tmp_path: Path
) -> None:
    sid, _ = await with_bids(hall, tmp_path, "")
    a, b = P(hall, "a"), P(hall, "b")
    env_a, env_b = hall.seal(tmp_path, a, name="a"), hall.seal(tmp_path, b, name="b")
    deadline = hall.t0 + HOUR

    async def upload_refused(who: Party, env: Path) -> None:
        await hall.upload_refused(409, "DEADLINE_PASSED", sid, who, env)

    hall.clock.set(deadline - timedelta(microseconds=1))
    r = await hall.upload(sid, a, env_a)
    assert r["receipt"]["received_at"] == iso(deadline - timedelta(microseconds=1))
    hall.clock.set(deadline)
    await upload_refused(b, env_b)
    await hall.at(deadline + timedelta(seconds=1))
    await upload_refused(b, env_b)
    await upload_refused(a, env_a)
    await hall.refused(409, "DEADLINE_PASSED", "DELETE", f"/api/sessions/{sid}/bid", a)
    assert (await hall.view(sid, a))["own_bid"]["status"] == "uploaded"


async def test_rule_01_upload_finishing_after_the_deadline_is_refused(
    hall: Hall, tmp_path: Path
) -> None:
    """Server time at the last byte decides; a late upload leaves no blob behind either."""
    sid, _ = await with_bids(hall, tmp_path, "")
    a = P(hall, "a")
    env = hall.seal(tmp_path, a, name="a").read_bytes()
    deadline = hall.t0 + HOUR
    hall.clock.set(deadline - timedelta(seconds=1))
    await hall.login(a)
    before = await hall.snapshot()

    async def slow() -> AsyncIterator[bytes]:
        yield env[:1000]
        async with asyncio.timeout(5):  # the server took the upload and is writing it
            while not hall.temp_files():
                await asyncio.sleep(0.005)
        hall.clock.set(deadline + timedelta(seconds=1))  # the deadline passes mid-upload
        yield env[1000:]

    with pytest.raises(ApiError) as err:
        await hall.request("PUT", f"/api/sessions/{sid}/bid", a, data=slow(), headers=OCTET)
    assert (err.value.status, err.value.code) == (409, "DEADLINE_PASSED")
    assert await hall.snapshot() == before
    assert hall.temp_files() == []


async def test_rule_01_replace_and_withdraw_before_the_deadline(hall: Hall, tmp_path: Path) -> None:
    sid, envs = await with_bids(hall, tmp_path, "a")
    a = P(hall, "a")
    first = hashlib.sha256(envs["a"].read_bytes()).hexdigest()
    second_env = hall.seal(tmp_path, a, name="a2", price_fen=12_700_000_000)
    second = await hall.upload(sid, a, second_env)
    assert (
        second["receipt"]["envelope_sha256"] == hashlib.sha256(second_env.read_bytes()).hexdigest()
    )
    uploads = [e for e in await hall.events(sid, a) if e["type"] == "bid_uploaded"]
    assert [e["payload"]["replaces"] for e in uploads] == [None, first]
    assert (await hall.view(sid, a))["own_bid"]["envelope_sha256"] == second["receipt"][
        "envelope_sha256"
    ]
    got = await hall.request("GET", f"/api/sessions/{sid}/bid", a)
    assert got == second_env.read_bytes()
    out = await hall.request("DELETE", f"/api/sessions/{sid}/bid", a)
    assert out["ok"]
    assert (await hall.view(sid, a))["own_bid"]["status"] == "retracted"
    await hall.refused(404, "NO_BID", "GET", f"/api/sessions/{sid}/bid", a)
    await hall.refused(404, "NO_BID", "DELETE", f"/api/sessions/{sid}/bid", a)
    again = await hall.upload(sid, a, envs["a"])
    uploads = [e for e in await hall.events(sid, a) if e["type"] == "bid_uploaded"]
    assert uploads[-1]["payload"]["replaces"] is None
    assert (await hall.view(sid, a))["own_bid"]["status"] == "uploaded"
    assert again["receipt"]["envelope_sha256"] == first


async def test_rule_01_versions_of_a_bid_are_bounded_and_the_refused_one_leaves_no_file(
    hall: Hall, tmp_path: Path
) -> None:
    sid, envs = await with_bids(hall, tmp_path, "a")
    a = P(hall, "a")
    for _ in range(MAX_VERSIONS - 1):
        await hall.upload(sid, a, envs["a"])
    assert (await hall.view(sid, a))["own_bid"]["uploads"] == MAX_VERSIONS
    last = hall.seal(tmp_path, a, name="a-last", price_fen=12_100_000_000)
    await hall.upload_refused(409, "TOO_MANY_VERSIONS", sid, a, last)
    assert not hall.hub.blobs.has(hashlib.sha256(last.read_bytes()).hexdigest())
    got = await hall.request("GET", f"/api/sessions/{sid}/bid", a)
    assert got == envs["a"].read_bytes(), "the latest accepted version no longer stands"


# --- rule 2: the receipt ----------------------------------------------------------------------


async def test_rule_02_receipt_is_server_signed(hall: Hall, tmp_path: Path) -> None:
    sid, _ = await with_bids(hall, tmp_path, "")
    a = P(hall, "a")
    env = hall.seal(tmp_path, a, name="a")
    hall.clock.advance(1.25)
    out = await hall.upload(sid, a, env)
    receipt = out["receipt"]
    doc = verify_document(b64decode(out["signature"]), canonical_json(receipt))
    assert doc.signer == hall.hub.identity.certificate
    data = env.read_bytes()
    assert receipt["envelope_sha256"] == hashlib.sha256(data).hexdigest()
    assert receipt["size"] == len(data)
    assert receipt["received_at"] == iso(hall.clock.now())
    assert (receipt["bidder"], receipt["session_id"], receipt["lot_id"]) == (
        a.code,
        sid,
        "JS-2026-0101/01",
    )
    again = await hall.request("GET", f"/api/sessions/{sid}/receipt", a)
    assert (again["receipt"], again["signature"], again["pos"]) == (
        receipt,
        out["signature"],
        out["pos"],
    )
    # Nobody else reads it, nor the bid: another bidder has none of its own, staff have no route.
    b = P(hall, "b")
    await hall.refused(404, "NO_BID", "GET", f"/api/sessions/{sid}/receipt", b)
    await hall.refused(404, "NO_BID", "GET", f"/api/sessions/{sid}/bid", b)
    for staff in ("host", "supervisor", "centre"):
        await hall.refused(
            403, "NOT_PERMITTED", "GET", f"/api/sessions/{sid}/receipt", P(hall, staff)
        )
        await hall.refused(403, "NOT_PERMITTED", "GET", f"/api/sessions/{sid}/bid", P(hall, staff))
    await hall.upload(sid, b, hall.seal(tmp_path, b, name="b"))
    mine = await hall.request("GET", f"/api/sessions/{sid}/receipt", b)
    assert mine["receipt"]["bidder"] == b.code
    assert (
        await hall.request("GET", f"/api/sessions/{sid}/bid", b)
        == (tmp_path / "b.p7m").read_bytes()
    )


# --- rule 3: only a valid envelope to one's own encryption certificate -------------------------


async def test_rule_03_not_an_envelope_or_not_to_own_certificate(
    hall: Hall, tmp_path: Path
) -> None:
    sid, _ = await with_bids(hall, tmp_path, "")
    a, c = P(hall, "a"), P(hall, "c")
    path = f"/api/sessions/{sid}/bid"
    pem = c.cert.public_bytes(serialization.Encoding.PEM)
    for data, code in (
        (b"%PDF-1.7 a plain bid document\n" * 50, "ENVELOPE_MALFORMED"),
        (b"PK\x03\x04" + b"\0" * 200, "ENVELOPE_NOT_ENCRYPTED"),
        (pem, "ENVELOPE_MALFORMED"),
        (b"", "ENVELOPE_MALFORMED"),
    ):
        await hall.refused(422, code, "PUT", path, a, data=data, headers=OCTET)
    to_c = hall.seal(tmp_path, a, to=c.enc_cert, name="to-c")
    err = await hall.refused(
        422, "ENVELOPE_NOT_FOR_RECIPIENT", "PUT", path, a, data=to_c.read_bytes(), headers=OCTET
    )
    assert "加密证书" in err.body["zh"] + err.body["detail"]
    truncated = hall.seal(tmp_path, a, name="whole").read_bytes()[:400]
    before = await hall.snapshot()
    with pytest.raises(ApiError) as bad:
        await hall.request("PUT", path, a, data=truncated, headers=OCTET)
    assert bad.value.status == 422 and bad.value.code.startswith("ENVELOPE_")
    assert bad.value.body["zh"] and bad.value.body["en"]
    assert await hall.snapshot() == before
    assert hall.blob_listing() == [] and hall.temp_files() == []


# --- rule 4: nobody learns who or how many before the deadline ---------------------------------

BID_TYPES = {
    "bid_uploaded",
    "bid_retracted",
    "bidder_signed_in",
    "rehearsal_reported",
    "security_recorded",
}


async def test_rule_04_staff_learn_nothing_of_bids_before_the_deadline(
    hall: Hall, tmp_path: Path
) -> None:
    sid, _ = await with_bids(hall, tmp_path, "abc")
    for k in "ab":
        await hall.request("POST", f"/api/sessions/{sid}/sign-in", P(hall, k))
        await hall.request("POST", f"/api/sessions/{sid}/rehearsal", P(hall, k), {"passed": True})
    await hall.request("DELETE", f"/api/sessions/{sid}/bid", P(hall, "c"))
    codes = [P(hall, k).code for k in "abc"]
    for role in ("host", "supervisor", "centre"):
        who = P(hall, role)
        view = await hall.view(sid, who)
        assert "bids" not in view and "signed_in_count" not in view, view
        assert not any(mentions({"v": view}, code) for code in codes)
        events = await hall.events(sid, who)
        assert not {e["type"] for e in events} & BID_TYPES
        assert not any(mentions(e, code) for e in events for code in codes)
        sock = await hall.listen(sid, who)
        assert not {e["type"] for e in sock.events} & BID_TYPES
        assert not any(mentions(e, code) for e in sock.events for code in codes)
        await hall.hang_up(sock)
        listing = await hall.request("GET", "/api/sessions", who)
        assert not any(mentions(s, code) for s in listing["sessions"] for code in codes)
    for k in "abc":
        me = P(hall, k)
        others = [P(hall, o).code for o in "abc" if o != k]
        view = await hall.view(sid, me)
        assert not any(mentions({"v": view}, code) for code in others)
        assert not any(mentions(e, code) for e in await hall.events(sid, me) for code in others)
    # Nor can anyone decrypt, open or extract before the deadline.
    env = tmp_path / "a.p7m"
    await hall.refused(
        409,
        "BEFORE_DEADLINE",
        "POST",
        f"/api/sessions/{sid}/key",
        P(hall, "a"),
        {"cek": cek(hall, "a", env)},
    )
    await hall.refused(
        409, "BEFORE_DEADLINE", "POST", f"/api/sessions/{sid}/start", P(hall, "host")
    )
    await hall.refused(
        409,
        "BEFORE_DEADLINE",
        "POST",
        f"/api/sessions/{sid}/backup-requests",
        P(hall, "host"),
        {"bidders": [codes[0]], "reason": "备用解密"},
    )
    await hall.refused(
        409, "NOT_ALLOWED_IN_STATE", "GET", f"/api/sessions/{sid}/record", P(hall, "host")
    )
    # After the deadline staff see the count.
    await hall.at(hall.t0 + HOUR)
    view = await hall.view(sid, P(hall, "host"))
    assert sorted(b["bidder"] for b in view["bids"]) == sorted(codes[:2])
    counted = [
        e for e in await hall.events(sid, P(hall, "supervisor")) if e["type"] == "bids_counted"
    ]
    assert counted[0]["payload"]["bids"] == 2


async def test_rule_04_seq_does_not_count_hidden_bids(hall: Hall, tmp_path: Path) -> None:
    """Three uploads before the deadline move no number the host sees (the whole matrix of
    viewers, routes and socket messages is in tests/test_positions.py)."""
    sid0 = await hall.create_session()
    sid3 = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    for k in "abc":
        await hall.upload(sid3, P(hall, k), hall.seal(tmp_path, P(hall, k), name=k))
    host = P(hall, "host")
    seen = []
    for sid in (sid0, sid3):
        extended = await hall.request(
            "POST", f"/api/sessions/{sid}/extend", host, {"minutes": 5, "reason": "网络故障"}
        )
        events = await hall.events(sid, host)
        seen.append(
            (
                [e["pos"] for e in events],
                (await hall.request("GET", f"/api/sessions/{sid}", host))["pos"],
                extended["pos"],
            )
        )
        assert not any("seq" in e or "prev_hash" in e for e in events)
    assert seen[0] == seen[1]


async def a_decrypted_b_refused_and_objecting(hall: Hall, tmp: Path) -> tuple[str, Any]:
    """Decrypting (see ``decrypting``): a and b signed in, a's key opened a's bid, b's try with
    a's key failed, and b objected."""
    sid, envs, sup = await decrypting(hall, tmp)
    for k in "ab":
        await hall.request("POST", f"/api/sessions/{sid}/sign-in", P(hall, k))
    assert (await send_key(hall, sid, "a", cek(hall, "a", envs["a"])))["ok"]
    assert not (await send_key(hall, sid, "b", cek(hall, "a", envs["a"])))["ok"]
    await hall.request("POST", f"/api/sessions/{sid}/objections", P(hall, "b"), {"text": "请核实"})
    return sid, sup


async def test_rule_04_bidders_see_only_their_own_until_the_table(
    hall: Hall, tmp_path: Path
) -> None:
    sid, sup = await a_decrypted_b_refused_and_objecting(hall, tmp_path)
    for k in "abc":
        me = P(hall, k)
        others = [P(hall, o).code for o in "abc" if o != k]
        events = await hall.events(sid, me)
        assert not any(mentions(e, code) for e in events for code in others), k
        view = await hall.view(sid, me)
        assert "bids" not in view and not any(mentions({"v": view}, code) for code in others)
    await hall.hang_up(sup)


# --- rule 6: a supervisor must be present ------------------------------------------------------


async def test_rule_06_start_needs_a_supervisor_in_the_hall(hall: Hall, tmp_path: Path) -> None:
    sid, _ = await with_bids(hall, tmp_path, "abc")
    await hall.at(hall.t0 + HOUR)
    host = P(hall, "host")
    start = f"/api/sessions/{sid}/start"
    await hall.refused(409, "SUPERVISOR_ABSENT", "POST", start, host)
    # The host and the centre in the hall do not count.
    h = await hall.listen(sid, host)
    await h.until_type("party_joined")
    c = await hall.listen(sid, P(hall, "centre"))
    await h.until(lambda: len([e for e in h.events if e["type"] == "party_joined"]) >= 2)
    await hall.refused(409, "SUPERVISOR_ABSENT", "POST", start, host)
    sup = await supervise(hall, sid)
    assert (await hall.view(sid, host))["supervisors_present"] == 1
    await hall.hang_up(sup)
    await h.until(
        lambda: any(
            e["type"] == "party_left" and e["payload"]["role"] == "supervisor" for e in h.events
        )
    )
    assert (await hall.view(sid, host))["supervisors_present"] == 0
    await hall.refused(409, "SUPERVISOR_ABSENT", "POST", start, host)
    sup = await supervise(hall, sid)
    out = await hall.request("POST", start, host)
    assert out["ok"]
    assert (await hall.view(sid, host))["status"] == "opening"
    for x in (h, c, sup):
        await hall.hang_up(x)


# --- rule 7: decryption in the window ------------------------------------------------------------


async def test_rule_07_someone_elses_key_fails_own_bid_only(hall: Hall, tmp_path: Path) -> None:
    sid, envs, sup = await decrypting(hall, tmp_path)
    a, b = P(hall, "a"), P(hall, "b")

    async def key_refused(status: int, code: str, who: Party, key: object) -> None:
        await hall.refused(status, code, "POST", f"/api/sessions/{sid}/key", who, {"cek": key})

    b_events = await hall.events(sid, b)
    out = await send_key(hall, sid, "a", cek(hall, "b", envs["b"]))  # b's key, sent by a
    assert out["ok"] is False and out["code"] == "ENVELOPE_TAMPERED"
    assert "密钥" in out["zh"] and "key" in out["en"]
    own = (await hall.view(sid, a))["own_bid"]
    assert own["status"] == "failed" and own["attempts"][0]["cause"] == "bidder"
    assert (await hall.view(sid, b))["own_bid"]["status"] == "uploaded"
    assert (await hall.view(sid, b))["own_bid"]["attempts"] == []
    assert await hall.events(sid, b) == b_events
    # Retry with the right key in the window.
    ok = await send_key(hall, sid, "a", cek(hall, "a", envs["a"]))
    assert ok["ok"] and ok["summary"]["bidder_credit_code"] == a.code
    await key_refused(409, "ALREADY_DONE", a, cek(hall, "a", envs["a"]))
    # Malformed keys are refused without recording an attempt.
    await key_refused(422, "ENVELOPE_MALFORMED", b, "%%%")
    await key_refused(422, "KEY_UNWRAP_FAILED", b, b64encode(b"short"))
    await key_refused(422, "INVALID_INPUT", b, 12)
    # After the window closes (even before the scheduler fires), no key is taken.
    closes = parse_iso((await hall.view(sid, b))["decrypt_closes_at"])
    hall.clock.set(closes)
    await key_refused(409, "WINDOW_CLOSED", b, cek(hall, "b", envs["b"]))
    await hall.at(closes + timedelta(seconds=1))
    await key_refused(409, "WINDOW_CLOSED", b, cek(hall, "b", envs["b"]))
    await hall.hang_up(sup)


async def test_rule_07_decryption_only_in_the_window(hall: Hall, tmp_path: Path) -> None:
    sid, envs = await with_bids(hall, tmp_path, "abc")
    await hall.at(hall.t0 + HOUR)
    key = {"cek": cek(hall, "a", envs["a"])}
    await hall.refused(409, "WINDOW_CLOSED", "POST", f"/api/sessions/{sid}/key", P(hall, "a"), key)
    sup = await supervise(hall, sid)
    await hall.request("POST", f"/api/sessions/{sid}/start", P(hall, "host"))
    await hall.refused(409, "WINDOW_CLOSED", "POST", f"/api/sessions/{sid}/key", P(hall, "a"), key)
    await hall.request("POST", f"/api/sessions/{sid}/decryption", P(hall, "host"))
    assert (await send_key(hall, sid, "a", key["cek"]))["ok"]
    await hall.hang_up(sup)


# --- rule 8: revoked or withdrawn at the close ---------------------------------------------------


async def test_rule_08_revoked_and_withdrawn_with_evidence(hall: Hall, tmp_path: Path) -> None:
    sid, envs, sup = await decrypting(hall, tmp_path)
    a, b, c = (P(hall, k) for k in "abc")
    assert (await send_key(hall, sid, "a", cek(hall, "a", envs["a"])))["ok"]
    # b sends nothing; c's bid is hit by a platform fault the centre records.
    incidents = f"/api/sessions/{sid}/incidents"
    for code, reason in (("INVALID_INPUT", ""), ("REASON_REQUIRED", "  ")):
        body = {"reason": reason, "bidders": [c.code]}
        await hall.refused(422, code, "POST", incidents, P(hall, "host"), body)
    await hall.request(
        "POST",
        incidents,
        P(hall, "centre"),
        {"reason": "存储节点故障，文件读取失败", "bidders": [c.code]},
    )
    assert not any(e["type"] == "incident_recorded" for e in await hall.events(sid, a))
    assert any(e["type"] == "incident_recorded" for e in await hall.events(sid, c))
    closes = parse_iso((await hall.view(sid, a))["decrypt_closes_at"])
    await hall.at(closes)
    events = await hall.events(sid, P(hall, "host"))
    revoked = [e for e in events if e["type"] == "bid_revoked"]
    withdrawn = [e for e in events if e["type"] == "bid_withdrawn"]
    assert [e["payload"]["bidder"] for e in revoked] == [b.code]
    assert revoked[0]["payload"]["evidence"]["finding"] == "no_key_sent"
    assert [e["payload"]["bidder"] for e in withdrawn] == [c.code]
    evidence = withdrawn[0]["payload"]["evidence"]
    assert evidence["finding"] == "platform_fault"
    assert evidence["incidents"][0]["reason"] == "存储节点故障，文件读取失败"
    rows = {r["bidder"]: r["status"] for r in (await hall.view(sid, a))["table"]["rows"]}
    assert rows == {a.code: "decrypted", b.code: "revoked", c.code: "withdrawn"}
    await hall.hang_up(sup)


# --- rules 10-12: table, objections, confirmation, record ---------------------------------------


async def test_rule_10_table_published_to_every_bidder(hall: Hall, tmp_path: Path) -> None:
    sid, sup = await announcing(hall, tmp_path)
    tables = []
    for k in ("a", "b", "c", "host", "supervisor"):
        view = await hall.view(sid, P(hall, k))
        assert view["status"] == "announcing"
        tables.append(view["table"])
        published = [
            e for e in await hall.events(sid, P(hall, k)) if e["type"] == "table_published"
        ]
        assert len(published) == 1 and published[0]["payload"]["table"] == view["table"]
    assert all(t == tables[0] for t in tables)
    rows = tables[0]["rows"]
    assert sorted(r["bidder"] for r in rows) == sorted(P(hall, k).code for k in "abc")
    assert all(r["price_fen"] == 12_800_000_000 and r["status"] == "decrypted" for r in rows)
    await hall.hang_up(sup)


async def test_rule_11_objections_before_and_after_the_table(hall: Hall, tmp_path: Path) -> None:
    sid, envs, sup = await decrypting(hall, tmp_path)
    a, b = P(hall, "a"), P(hall, "b")
    await hall.refused(
        422, "INVALID_INPUT", "POST", f"/api/sessions/{sid}/objections", a, {"text": ""}
    )
    await hall.request("POST", f"/api/sessions/{sid}/objections", a, {"text": "解密系统响应缓慢"})
    await sup.until_type("objection_raised")
    assert not any(e["type"] == "objection_raised" for e in await hall.events(sid, b))
    assert (await hall.view(sid, b))["objections"] == []
    assert len((await hall.view(sid, a))["objections"]) == 1
    for staff in ("host", "supervisor", "centre"):
        assert len((await hall.view(sid, P(hall, staff)))["objections"]) == 1
    await hall.request(
        "POST",
        f"/api/sessions/{sid}/objections/1/reply",
        P(hall, "host"),
        {"text": "已核实，系统正常"},
    )
    assert not any(e["type"] == "objection_answered" for e in await hall.events(sid, b))
    for k in "abc":
        await send_key(hall, sid, k, cek(hall, k, envs[k]))
    await hall.at(parse_iso((await hall.view(sid, a))["decrypt_closes_at"]))
    await hall.request("POST", f"/api/sessions/{sid}/objections", b, {"text": "甲公司报价有误"})
    for k in "ac":
        events = await hall.events(sid, P(hall, k))
        assert any(
            e["type"] == "objection_raised" and e["payload"]["bidder"] == b.code for e in events
        )
    await hall.refused(
        409, "OBJECTIONS_PENDING", "POST", f"/api/sessions/{sid}/confirmation", P(hall, "host")
    )
    await hall.request(
        "POST",
        f"/api/sessions/{sid}/objections/2/reply",
        P(hall, "host"),
        {"text": "报价以解密结果为准"},
    )
    await hall.refused(
        409,
        "ALREADY_DONE",
        "POST",
        f"/api/sessions/{sid}/objections/2/reply",
        P(hall, "host"),
        {"text": "再答复"},
    )
    await hall.request("POST", f"/api/sessions/{sid}/confirmation", P(hall, "host"))
    await hall.hang_up(sup)


async def test_rule_11_duplicate_objections_answered_together_and_raised_at_a_bounded_rate(
    hall: Hall, tmp_path: Path
) -> None:
    sid, _envs, sup = await decrypting(hall, tmp_path)
    a, b, host = P(hall, "a"), P(hall, "b"), P(hall, "host")
    objections = f"/api/sessions/{sid}/objections"
    for who in (a, b):
        await hall.request("POST", objections, who, {"text": "解密系统响应缓慢"})
    for bad in ([0], ["1"], [2**63], list(range(1, 102))):
        await hall.refused(
            422, "INVALID_INPUT", "POST", f"{objections}/1/reply", host, {"text": "x", "also": bad}
        )
    await hall.refused(
        404, "OBJECTION_UNKNOWN", "POST", f"{objections}/1/reply", host, {"text": "x", "also": [7]}
    )
    await hall.request("POST", f"{objections}/1/reply", host, {"text": "系统正常", "also": [2]})
    for who in (a, b):  # each bidder sees the answer to its own objection, not the other's
        answers = [e for e in await hall.events(sid, who) if e["type"] == "objection_answered"]
        assert [(e["payload"]["bidder"], e["payload"]["text"]) for e in answers] == [
            (who.code, "系统正常")
        ]
    # a raises objection after objection, each answered at once: the rate stops it.
    for i in range(4):
        await hall.request("POST", objections, a, {"text": f"第 {i + 2} 条"})
        await hall.request("POST", f"{objections}/{i + 3}/reply", host, {"text": "已答复"})
    await hall.refused(429, "OBJECTIONS_TOO_FREQUENT", "POST", objections, a, {"text": "再一条"})
    await hall.request("POST", objections, b, {"text": "乙的第二条"})  # b is not held up
    await hall.hang_up(sup)


async def test_rule_11_12_confirmation_and_record(hall: Hall, tmp_path: Path) -> None:
    sid, sup = await announcing(hall, tmp_path)
    host, supervisor = P(hall, "host"), P(hall, "supervisor")
    a, b = P(hall, "a"), P(hall, "b")
    table = (await hall.view(sid, a))["table"]
    confirm = f"/api/sessions/{sid}/confirm"

    async def confirm_refused(status: int, code: str, who: Party, signature: str) -> None:
        await hall.refused(status, code, "POST", confirm, who, {"signature": signature})

    await confirm_refused(409, "NOT_ALLOWED_IN_STATE", a, hall.sign_json(a, table))
    await hall.request("POST", f"/api/sessions/{sid}/confirmation", host)
    other = json.loads(json.dumps(table))
    other["rows"][0]["price_fen"] = 1
    await confirm_refused(409, "TABLE_MISMATCH", a, hall.sign_json(a, other))
    await confirm_refused(422, "SIGNER_NOT_BIDDER", a, hall.sign_json(b, table))
    await confirm_refused(422, "ENVELOPE_MALFORMED", a, "not base64!")
    await hall.request("POST", confirm, a, {"signature": hall.sign_json(a, table)})
    await confirm_refused(409, "ALREADY_DONE", a, hall.sign_json(a, table))
    await hall.refused(409, "NOT_ALLOWED_IN_STATE", "GET", f"/api/sessions/{sid}/record", host)
    closes = parse_iso((await hall.view(sid, a))["confirm_closes_at"])
    hall.clock.set(closes)
    await confirm_refused(409, "WINDOW_CLOSED", b, hall.sign_json(b, table))
    await hall.at(closes)
    rec = await hall.request("GET", f"/api/sessions/{sid}/record", a)
    raw = canonical_json(rec["record"])
    assert hashlib.sha256(raw).hexdigest() == rec["sha256"]
    verify_document(b64decode(rec["signatures"]["server"]), raw)
    confirmations = {x["bidder"]: x["confirmation"] for x in rec["record"]["bids"]}
    assert confirmations == {a.code: "signed", b.code: "deemed", P(hall, "c").code: "deemed"}
    sign = f"/api/sessions/{sid}/record/sign"
    await hall.refused(403, "NOT_PERMITTED", "POST", sign, a, {"signature": hall.sign(a, raw)})
    await hall.refused(
        409, "TABLE_MISMATCH", "POST", sign, host, {"signature": hall.sign(host, raw + b" ")}
    )
    await hall.refused(
        422, "SIGNATURE_INVALID", "POST", sign, host, {"signature": hall.sign(supervisor, raw)}
    )
    await hall.request("POST", sign, host, {"signature": hall.sign(host, raw)})
    assert (await hall.view(sid, host))["status"] == "confirming"
    await hall.refused(409, "ALREADY_DONE", "POST", sign, host, {"signature": hall.sign(host, raw)})
    await hall.request("POST", sign, supervisor, {"signature": hall.sign(supervisor, raw)})
    view = await hall.view(sid, a)
    assert view["status"] == "closed" and view["record_signatures"] == ["host", "supervisor"]
    rec = await hall.request("GET", f"/api/sessions/{sid}/record", b)
    for role, who in (("host", host), ("supervisor", supervisor)):
        assert verify_document(b64decode(rec["signatures"][role]), raw).signer == who.cert
    await hall.hang_up(sup)


# --- rule 13: suspend, resume, extend ------------------------------------------------------------


async def test_rule_13_suspend_and_resume_shift_the_window(hall: Hall, tmp_path: Path) -> None:
    sid, envs, sup = await decrypting(hall, tmp_path)
    host = P(hall, "host")
    await hall.refused(
        422, "INVALID_INPUT", "POST", f"/api/sessions/{sid}/suspend", host, {"reason": ""}
    )
    await hall.refused(422, "INVALID_INPUT", "POST", f"/api/sessions/{sid}/suspend", host, {})
    await hall.refused(
        422, "REASON_REQUIRED", "POST", f"/api/sessions/{sid}/suspend", host, {"reason": " \t"}
    )
    closes = parse_iso((await hall.view(sid, host))["decrypt_closes_at"])
    await hall.request(
        "POST", f"/api/sessions/{sid}/suspend", P(hall, "supervisor"), {"reason": "音视频中断"}
    )
    event = await sup.until_type("session_suspended")
    assert event["payload"]["reason"] == "音视频中断"
    await hall.refused(
        409,
        "NOT_ALLOWED_IN_STATE",
        "POST",
        f"/api/sessions/{sid}/key",
        P(hall, "a"),
        {"cek": cek(hall, "a", envs["a"])},
    )
    await hall.at(hall.clock.now() + timedelta(minutes=10))
    await hall.refused(
        422, "REASON_REQUIRED", "POST", f"/api/sessions/{sid}/resume", host, {"reason": "   "}
    )
    await hall.request("POST", f"/api/sessions/{sid}/resume", host, {"reason": "已恢复"})
    await sup.until_type("session_resumed")
    view = await hall.view(sid, host)
    assert view["status"] == "decrypting"
    assert parse_iso(view["decrypt_closes_at"]) == closes + timedelta(minutes=10)
    # The old closing instant no longer closes the window.
    await hall.at(closes + timedelta(minutes=5))
    assert (await send_key(hall, sid, "a", cek(hall, "a", envs["a"])))["ok"]
    await hall.hang_up(sup)


async def test_rule_13_extend_moves_the_deadline(hall: Hall, tmp_path: Path) -> None:
    sid, _ = await with_bids(hall, tmp_path, "")
    host, a = P(hall, "host"), P(hall, "a")
    sup = await supervise(hall, sid)
    extend = f"/api/sessions/{sid}/extend"
    await hall.refused(422, "INVALID_INPUT", "POST", extend, host, {"minutes": 30, "reason": ""})
    await hall.refused(
        422, "REASON_REQUIRED", "POST", extend, host, {"minutes": 30, "reason": "  "}
    )
    await hall.refused(
        403, "NOT_PERMITTED", "POST", extend, P(hall, "supervisor"), {"minutes": 30, "reason": "x"}
    )
    await hall.request("POST", extend, host, {"minutes": 30, "reason": "答疑澄清，顺延截止时间"})
    event = await sup.until_type("window_extended")
    assert (event["payload"]["window"], event["payload"]["minutes"]) == ("deadline", 30)
    assert parse_iso(
        (await hall.view(sid, a))["timetable"]["deadline"]
    ) == hall.t0 + HOUR + timedelta(minutes=30)
    await hall.at(hall.t0 + HOUR + timedelta(seconds=1))
    assert (await hall.view(sid, a))["status"] == "sign_in"
    await hall.upload(sid, a, hall.seal(tmp_path, a, name="a"))
    await hall.at(hall.t0 + HOUR + timedelta(minutes=30))
    assert (await hall.view(sid, host))["status"] == "failed"  # one bid, min_bids 3 (rule 5)
    await hall.refused(409, "NOT_ALLOWED_IN_STATE", "POST", f"/api/sessions/{sid}/start", host)
    await hall.hang_up(sup)


# --- the event matrix: who sees which event --------------------------------------------------


async def test_event_audience_matrix_over_a_whole_opening(hall: Hall, tmp_path: Path) -> None:
    """Every event of a whole opening, for every viewer: bidders never see another bidder's
    events before the table, staff see no bid activity before the deadline, and REST and
    socket replay agree."""
    sid, sup = await a_decrypted_b_refused_and_objecting(hall, tmp_path)
    await hall.request(
        "POST", f"/api/sessions/{sid}/objections/1/reply", P(hall, "host"), {"text": "已核实"}
    )
    await hall.request(
        "POST",
        f"/api/sessions/{sid}/incidents",
        P(hall, "host"),
        {"reason": "网络故障", "bidders": [P(hall, "c").code]},
    )
    await hall.at(parse_iso((await hall.view(sid, P(hall, "a")))["decrypt_closes_at"]))
    await hall.request("POST", f"/api/sessions/{sid}/confirmation", P(hall, "host"))
    await hall.at(parse_iso((await hall.view(sid, P(hall, "a")))["confirm_closes_at"]))
    await hall.hang_up(sup)
    everything = await hall.hub.store.events_after(sid, 0)
    sealed = next(r.hash for r in everything if r.type == "session_sealed")
    table = next(r.hash for r in everything if r.type == "table_published")
    codes = {k: P(hall, k).code for k in "abc"}
    for viewer in ("a", "b", "c", "host", "supervisor", "centre"):
        who = P(hall, viewer)
        rest = await hall.events(sid, who)
        everything = await hall.hub.store.events_after(sid, 0)  # staff sockets add presence
        sock = await hall.listen(sid, who)
        assert [e for e in sock.events if not after(e, sock.replayed[0])] == rest, viewer
        await hall.hang_up(sock)
        ids = [e["id"] for e in rest]
        assert len(ids) == len(set(ids))
        if viewer in codes:
            tags = {f"bidder:{codes[viewer]}", "all"}
            expected = [r.shown_to(frozenset(tags)) for r in everything if tags & set(r.audience)]
            assert rest == expected, viewer
            others = [c for k, c in codes.items() if k != viewer]
            for e in rest:
                if ids.index(e["id"]) < ids.index(table):
                    assert not any(mentions(e, code) for code in others), (viewer, e["type"])
                assert "staff" not in e["audience"] or f"bidder:{codes[viewer]}" in e["audience"]
        else:
            mine = frozenset({"all", "staff", viewer})
            expected = [r.shown_to(mine) for r in everything if mine & set(r.audience)]
            assert rest == expected, viewer
            assert len(rest) == len(everything) - sum(
                1 for r in everything if not {"all", "staff", viewer} & set(r.audience)
            )
            for e in rest:
                if ids.index(e["id"]) < ids.index(sealed):
                    assert e["type"] not in BID_TYPES, (viewer, e)
                    assert not any(mentions(e, code) for code in codes.values()), (
                        viewer,
                        e["type"],
                    )
