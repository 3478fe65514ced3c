"""Bid substitution (issue: trust and secrecy, attack 1): a certificate from any trusted CA that
carries company A's credit code used to log in as A, download A's envelope, withdraw A's bid and
upload a substitute. A company now acts only through certificates *bound* to it (一证通用:
several, from any trusted CA): bound by the centre, or by the company itself with a request
signed by a certificate already bound to it; every binding and unbinding is logged. Login, the
upload's recipient (rule 3) and the bid's inner signer at decryption (bound when the bid was
sealed) all ask the bindings. Through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy.ext.asyncio import create_async_engine

from crypto import ca
from crypto.attest import b64encode
from crypto.bid import unwrap
from schemas.binding import binding_document
from schemas.time import parse_iso
from server.domain import binding as bd
from server.identity import cert_pem, cert_sha256
from server.store import open_store
from server.store.db import MIGRATIONS, database_url
from tests.support.hall import Hall, P, Party, company, seal_party
from tests.support.opening import HOUR, SIGN_IN, cek, send_key, supervise
from tests.support.pki import CODE_A, Pki

OCTET = {"Content-Type": "application/octet-stream"}


def second_ca_pair(pki: Pki) -> Party:
    """Company A's certificates from the other CA (B's issuing CA): the same credit code, the
    same name, a different CA — what anyone who talks a trusted CA into issuing can hold."""
    pair = ca.issue_company_pair(
        pki.sub_b, credit_code=CODE_A, company_name="甲建设工程有限公司", key_type="ec-p256"
    )
    return company(pair, "甲建设工程有限公司", CODE_A, [pki.sub_b.certificate])


def signed_by(signer: Party, bidder: Party) -> Party:
    """``bidder``'s encryption certificate, but ``signer``'s signing key: a bid sealed to the
    company's registered recipient and signed with another certificate."""
    return Party(
        bidder.name, signer.key, signer.cert, signer.chain, bidder.enc_key, bidder.enc_cert, CODE_A
    )


async def signed_challenge(hall: Hall, who: Party) -> str:
    ch = await hall.request("POST", "/api/auth/challenge")
    return hall.sign(who, ch["document"].encode())


async def bind(hall: Hall, who: Party, usage: str, cert: Any) -> dict[str, Any]:
    body = {"credit_code": CODE_A, "usage": usage, "cert_pem": cert_pem(cert)}
    return dict(await hall.request("POST", "/api/bindings", P(hall, "centre"), body))


async def unbind(hall: Hall, usage: str, cert: Any) -> None:
    body = {"credit_code": CODE_A, "usage": usage, "cert_sha256": cert_sha256(cert)}
    await hall.request("POST", "/api/bindings/unbind", P(hall, "centre"), body)


async def self_bind_body(hall: Hall, signer: Party, usage: str, cert: Any) -> dict[str, Any]:
    nonce = (await hall.request("POST", "/api/auth/challenge"))["nonce"]
    doc = binding_document(hall.hub.settings.server_id, nonce, CODE_A, usage, cert_sha256(cert))
    return {"usage": usage, "cert_pem": cert_pem(cert), "signature": hall.sign(signer, doc)}


async def bindings(hall: Hall, who: Party, query: str = "") -> list[dict[str, Any]]:
    return list((await hall.request("GET", f"/api/bindings{query}", who))["bindings"])


async def open_bindings(hall: Hall) -> set[tuple[str, str]]:
    rows = await bindings(hall, P(hall, "centre"), f"?company={CODE_A}")
    return {(r["usage"], r["cert_sha256"]) for r in rows if r["unbound_at"] is None}


# --- login --------------------------------------------------------------------------------------


async def test_certificate_of_another_ca_with_the_same_credit_code_cannot_log_in(
    hall: Hall, pki: Pki
) -> None:
    rogue = second_ca_pair(pki)
    err = await hall.refused(
        403,
        "CERT_NOT_BOUND",
        "POST",
        "/api/auth/login",
        json_body={"signature": await signed_challenge(hall, rogue)},
    )
    assert "未绑定" in err.body["zh"] and "not bound" in err.body["en"]
    # so none of the attack's steps can even start: no token, no download, no withdrawal
    assert rogue.token is None
    # the company's own registered certificate still logs in as A
    assert (await hall.login(P(hall, "a")))["party_id"] == CODE_A


async def test_bound_second_ca_certificate_logs_in(hall: Hall, pki: Pki, tmp_path: Path) -> None:
    second = second_ca_pair(pki)
    out = await bind(hall, P(hall, "centre"), "signing", second.cert)
    assert (out["usage"], out["cert_sha256"]) == ("signing", cert_sha256(second.cert))
    assert out["bound_by"].startswith("centre:") and "Test CA B Issuing" in out["issuer"]
    assert second.enc_cert is not None
    await bind(hall, P(hall, "centre"), "encryption", second.enc_cert)
    login = await hall.login(second)
    assert (login["role"], login["party_id"]) == ("bidder", CODE_A)
    # 一证通用: a whole bid with the second CA's pair, sealed to its encryption certificate,
    # signed with its signing certificate, uploaded and decrypted
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    env = seal_party(tmp_path, second, name="a2")
    await hall.upload(sid, second, env)
    for k in "bc":
        await hall.upload(sid, P(hall, k), hall.seal(tmp_path, P(hall, k), name=k))
    await hall.at(hall.t0 + HOUR)
    await supervise(hall, sid)
    await hall.request("POST", f"/api/sessions/{sid}/start", P(hall, "host"))
    await hall.request("POST", f"/api/sessions/{sid}/decryption", P(hall, "host"))
    assert second.enc_key is not None
    key = b64encode(unwrap(env, second.enc_key, second.enc_cert))
    got = await hall.request("POST", f"/api/sessions/{sid}/key", second, {"cek": key})
    assert got["ok"], got
    # and once the centre unbinds it, that certificate logs in no more
    await unbind(hall, "signing", second.cert)
    await hall.refused(
        403,
        "CERT_NOT_BOUND",
        "POST",
        "/api/auth/login",
        json_body={"signature": await signed_challenge(hall, second)},
    )


# --- binding requests ---------------------------------------------------------------------------


async def test_self_binding_needs_a_bound_signer(hall: Hall, pki: Pki) -> None:
    a = P(hall, "a")
    new = second_ca_pair(pki)
    path = "/api/bindings/self"
    before = await open_bindings(hall)
    # signed by the new certificate itself (not bound): refused
    body = await self_bind_body(hall, new, "signing", new.cert)
    await hall.refused(403, "BIND_SIGNER_NOT_BOUND", "POST", path, a, body)
    # signed by another company's bound certificate: refused
    body = await self_bind_body(hall, P(hall, "b"), "signing", new.cert)
    await hall.refused(403, "BIND_SIGNER_NOT_BOUND", "POST", path, a, body)
    # a request for another certificate or usage than the one sent: refused
    body = await self_bind_body(hall, a, "encryption", new.cert)
    await hall.refused(422, "SIGNATURE_INVALID", "POST", path, a, {**body, "usage": "signing"})
    # B, with its own bound certificate, cannot bind a certificate naming A to itself
    b_body = {"usage": "signing", "cert_pem": cert_pem(new.cert)}
    b_doc = binding_document(
        hall.hub.settings.server_id,
        (await hall.request("POST", "/api/auth/challenge"))["nonce"],
        P(hall, "b").code or "",
        "signing",
        cert_sha256(new.cert),
    )
    b_body["signature"] = hall.sign(P(hall, "b"), b_doc)
    await hall.refused(422, "CERT_OTHER_COMPANY", "POST", path, P(hall, "b"), b_body)
    assert await open_bindings(hall) == before
    await hall.refused(403, "CERT_NOT_BOUND", "POST", "/api/auth/login",
                       json_body={"signature": await signed_challenge(hall, new)})  # fmt: skip

    # signed with A's registered (bound) signing certificate: bound, and it logs in
    good = await self_bind_body(hall, a, "signing", new.cert)
    out = await hall.request("POST", path, a, good)
    assert out["bound_by"] == f"bidder:{CODE_A}"
    assert (await hall.login(new))["party_id"] == CODE_A
    # the same signed request cannot be used twice (after an unbinding it would re-bind)
    await hall.refused(409, "CERT_ALREADY_BOUND", "POST", path, a, good)
    await unbind(hall, "signing", new.cert)
    await hall.refused(401, "CHALLENGE_INVALID", "POST", path, a, good)
    assert ("signing", cert_sha256(new.cert)) not in await open_bindings(hall)


# --- rule 3: the upload's recipient -------------------------------------------------------------


async def test_upload_to_unbound_encryption_certificate_refused(
    hall: Hall, pki: Pki, tmp_path: Path
) -> None:
    a = P(hall, "a")
    second = second_ca_pair(pki)
    assert second.enc_cert is not None and a.enc_cert is not None
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    # sealed to A's second-CA encryption certificate, not bound: refused
    to_second = hall.seal(tmp_path, a, to=second.enc_cert, name="to-second")
    path = f"/api/sessions/{sid}/bid"
    err = await hall.refused(
        422, "ENVELOPE_NOT_FOR_RECIPIENT", "PUT", path, a, data=to_second.read_bytes(),
        headers=OCTET,
    )  # fmt: skip
    assert err.body["zh"] and err.body["en"]
    # once bound, that recipient is one of the company's: accepted
    await bind(hall, P(hall, "centre"), "encryption", second.enc_cert)
    await hall.upload(sid, a, to_second)
    # the registered encryption certificate unbound: a bid sealed to it is refused from now on
    await unbind(hall, "encryption", a.enc_cert)
    to_registered = hall.seal(tmp_path, a, name="to-registered")
    await hall.refused(
        422, "ENVELOPE_NOT_FOR_RECIPIENT", "PUT", path, a, data=to_registered.read_bytes(),
        headers=OCTET,
    )  # fmt: skip


async def test_token_of_a_certificate_unbound_since_login_cannot_upload(
    hall: Hall, pki: Pki, tmp_path: Path
) -> None:
    second = second_ca_pair(pki)
    await bind(hall, P(hall, "centre"), "signing", second.cert)
    await hall.login(second)
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    await unbind(hall, "signing", second.cert)
    bid = hall.seal(tmp_path, P(hall, "a"))
    await hall.refused(
        403, "CERT_NOT_BOUND", "PUT", f"/api/sessions/{sid}/bid", second, data=bid.read_bytes(),
        headers=OCTET,
    )  # fmt: skip
    await hall.upload(sid, P(hall, "a"), bid)  # the registered certificate's token still can
    # nor renew its token to go on reading the hall
    await hall.refused(403, "CERT_NOT_BOUND", "POST", "/api/auth/refresh", second)
    assert (await hall.request("POST", "/api/auth/refresh", P(hall, "a")))["token"]


# --- rule 3 at decryption: the inner signer -----------------------------------------------------


async def _opening_with(hall: Hall, tmp_path: Path, a_env: Path) -> str:
    """A session with A's ``a_env`` and B's and C's own bids, in its decryption window."""
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    await hall.upload(sid, P(hall, "a"), a_env)
    for k in "bc":
        await hall.upload(sid, P(hall, k), hall.seal(tmp_path, P(hall, k), name=k))
    return sid


async def _decrypt_window(hall: Hall, sid: str) -> None:
    await hall.at(hall.t0 + HOUR)
    await supervise(hall, sid)
    await hall.request("POST", f"/api/sessions/{sid}/start", P(hall, "host"))
    await hall.request("POST", f"/api/sessions/{sid}/decryption", P(hall, "host"))


async def test_bid_signed_by_unbound_certificate_refused_at_decryption(
    hall: Hall, pki: Pki, tmp_path: Path
) -> None:
    rogue = second_ca_pair(pki)
    # the substitute: sealed to A's registered recipient (so the upload cannot tell), signed
    # with a certificate that carries A's credit code but was never bound to A
    env = seal_party(tmp_path, signed_by(rogue, P(hall, "a")), name="substitute")
    sid = await _opening_with(hall, tmp_path, env)
    # binding it after the bid was sealed does not make the bid A's
    hall.clock.advance(1)
    await bind(hall, P(hall, "centre"), "signing", rogue.cert)
    await _decrypt_window(hall, sid)
    got = await send_key(hall, sid, "a", cek(hall, "a", env))
    assert (got["ok"], got["code"]) == (False, "SIGNER_NOT_BOUND")
    assert "未绑定" in got["zh"] and "not bound" in got["en"]
    failed = [e for e in await hall.events(sid, P(hall, "a")) if e["type"] == "decryption_failed"]
    evidence = failed[-1]["payload"]["attempt"]["evidence"]
    assert evidence["signer_sha256"] == cert_sha256(rogue.cert)
    assert "Test CA B Issuing" in evidence["signer_issuer"]
    receipt = (await hall.request("GET", f"/api/sessions/{sid}/receipt", P(hall, "a")))["receipt"]
    assert evidence["sealed_at"] == receipt["received_at"]
    assert evidence["envelope_sha256"] == receipt["envelope_sha256"]
    # the summary was never read: nothing of the substitute's price reaches anyone
    assert "summary" not in failed[-1]["payload"]
    # at the window's end the bid is revoked (the bidder's cause), with that evidence
    closes = parse_iso((await hall.view(sid, P(hall, "host")))["decrypt_closes_at"])
    await hall.at(closes)
    staff = await hall.events(sid, P(hall, "host"))
    revoked = [e for e in staff if e["type"] == "bid_revoked" and e["payload"]["bidder"] == CODE_A]
    assert revoked, [e["type"] for e in staff]
    attempts = revoked[0]["payload"]["evidence"]["attempts"]
    assert attempts[-1]["code"] == "SIGNER_NOT_BOUND"
    assert attempts[-1]["evidence"]["signer_sha256"] == cert_sha256(rogue.cert)


async def test_bid_signed_by_a_certificate_bound_at_sealing_opens_after_an_unbinding(
    hall: Hall, pki: Pki, tmp_path: Path
) -> None:
    second = second_ca_pair(pki)
    await bind(hall, P(hall, "centre"), "signing", second.cert)
    env = seal_party(tmp_path, signed_by(second, P(hall, "a")), name="a2")
    sid = await _opening_with(hall, tmp_path, env)
    # unbound after the bid was received (a lost key, say): the bid was sealed under a binding
    hall.clock.advance(1)
    await unbind(hall, "signing", second.cert)
    await _decrypt_window(hall, sid)
    got = await send_key(hall, sid, "a", cek(hall, "a", env))
    assert got["ok"], got


# --- the binding log ----------------------------------------------------------------------------


async def test_binding_events_are_recorded(hall: Hall, pki: Pki) -> None:
    a, centre = P(hall, "a"), P(hall, "centre")
    second, third = second_ca_pair(pki), second_ca_pair(pki)
    assert a.enc_cert is not None and second.enc_cert is not None
    await bind(hall, centre, "encryption", second.enc_cert)
    hall.clock.advance(5)
    await hall.request(
        "POST", "/api/bindings/self", a, await self_bind_body(hall, a, "signing", third.cert)
    )
    hall.clock.advance(5)
    await unbind(hall, "encryption", a.enc_cert)
    log = (await hall.request("GET", f"/api/bindings/events?company={CODE_A}", centre))["events"]
    centre_id = (await hall.login(centre))["party_id"]
    got = [(e["action"], e["usage"], e["cert_sha256"], e["actor"], e["via"]) for e in log]
    assert got == [
        ("bound", "signing", cert_sha256(a.cert), "registration", "registration"),
        ("bound", "encryption", cert_sha256(a.enc_cert), "registration", "registration"),
        ("bound", "encryption", cert_sha256(second.enc_cert), f"centre:{centre_id}", "centre"),
        ("bound", "signing", cert_sha256(third.cert), f"bidder:{CODE_A}", "self"),
        ("unbound", "encryption", cert_sha256(a.enc_cert), f"centre:{centre_id}", "centre"),
    ]
    assert log[3]["signer_sha256"] == cert_sha256(a.cert)
    assert [parse_iso(e["at"]) for e in log[2:]] == [
        hall.t0,
        hall.t0 + timedelta(seconds=5),
        hall.t0 + timedelta(seconds=10),
    ]
    # the company sees its own certificates and log (no query needed), the ended one included
    own = await bindings(hall, a)
    ended = [r for r in own if r["cert_sha256"] == cert_sha256(a.enc_cert)]
    assert ended[0]["unbound_by"] == f"centre:{centre_id}" and ended[0]["unbound_at"]
    assert len((await hall.request("GET", "/api/bindings/events", a))["events"]) == 5
    # another company, or the host, sees nothing of A's
    for path in (f"/api/bindings?company={CODE_A}", f"/api/bindings/events?company={CODE_A}"):
        await hall.refused(403, "NOT_PERMITTED", "GET", path, P(hall, "b"))
        await hall.refused(403, "NOT_PERMITTED", "GET", path, P(hall, "host"))
    # the centre's own mistakes are refused with a code, not a 500
    await hall.refused(404, "NOT_FOUND", "GET", "/api/bindings?company=91000000000000000X", centre)
    await hall.refused(
        409, "CERT_ALREADY_BOUND", "POST", "/api/bindings", centre,
        {"credit_code": CODE_A, "usage": "signing", "cert_pem": cert_pem(a.cert)},
    )  # fmt: skip
    await hall.refused(
        422, "CERT_OTHER_COMPANY", "POST", "/api/bindings", centre,
        {"credit_code": CODE_A, "usage": "signing", "cert_pem": cert_pem(P(hall, "b").cert)},
    )  # fmt: skip
    await hall.refused(
        403, "CERT_NOT_BOUND", "POST", "/api/bindings/unbind", centre,
        {"credit_code": CODE_A, "usage": "encryption", "cert_sha256": cert_sha256(a.enc_cert)},
    )  # fmt: skip


# --- existing data ------------------------------------------------------------------------------


def _migrate(connection: sa.Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_companies_registered_before_binding_keep_their_certificates_bound(
    store_url: str, pki: Pki, tmp_path: Path
) -> None:
    engine = create_async_engine(database_url(store_url, tmp_path))
    pair = pki.bidder_rsa
    pems = [
        c.certificate.public_bytes(Encoding.PEM).decode() for c in (pair.signing, pair.encryption)
    ]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_migrate, "0002")
            await conn.execute(
                sa.text(
                    "INSERT INTO companies (credit_code, name, signing_cert_pem, "
                    "encryption_cert_pem, registered_at) VALUES (:c, :n, :s, :e, :t)"
                ),
                {"c": CODE_A, "n": "甲", "s": pems[0], "e": pems[1], "t": pki.now},
            )
    finally:
        await engine.dispose()
    store = await open_store(store_url, tmp_path)  # migrates to the newest schema
    try:
        rows = await store.bindings_of(CODE_A)
        assert [(r.usage, r.cert_sha256, r.unbound_at) for r in rows] == [
            ("signing", hashlib.sha256(pair.signing.certificate.public_bytes(Encoding.DER)).hexdigest(), None),
            ("encryption", hashlib.sha256(pair.encryption.certificate.public_bytes(Encoding.DER)).hexdigest(), None),
        ]  # fmt: skip
        assert [e.via for e in await store.binding_events(CODE_A)] == ["registration"] * 2
    finally:
        await store.close()


async def test_a_certificate_unbound_after_login_cannot_touch_the_bid(
    hall: Hall, pki: Pki, tmp_path: Path
) -> None:
    """The attack's steps (download the envelope, read the receipt, withdraw) with a token issued
    before the centre unbound its certificate: refused at once, not when the token runs out."""
    second = second_ca_pair(pki)
    await bind(hall, P(hall, "centre"), "signing", second.cert)
    await hall.login(second)
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    await hall.upload(sid, P(hall, "a"), hall.seal(tmp_path, P(hall, "a")))
    await hall.request("GET", f"/api/sessions/{sid}/receipt", second)  # bound: fine
    await unbind(hall, "signing", second.cert)
    for method, path in (
        ("GET", f"/api/sessions/{sid}/bid"),
        ("GET", f"/api/sessions/{sid}/receipt"),
        ("DELETE", f"/api/sessions/{sid}/bid"),
    ):
        await hall.refused(403, "CERT_NOT_BOUND", method, path, second)
    await hall.request("DELETE", f"/api/sessions/{sid}/bid", P(hall, "a"))  # A itself still can


def test_a_binding_holds_from_its_instant_until_its_unbinding_exclusive() -> None:
    """The domain's rule, without a server: bound at the sealing instant counts, unbound at it
    does not; another usage or another certificate never counts."""
    t = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    rows = [bd.Bound("s" * 64, "signing", t, t + timedelta(hours=1))]
    assert bd.signer_failure(rows, "s" * 64, t) is None
    assert bd.signer_failure(rows, "s" * 64, t + timedelta(minutes=59)) is None
    assert bd.signer_failure(rows, "s" * 64, t + timedelta(hours=1)) == "SIGNER_NOT_BOUND"
    assert bd.signer_failure(rows, "s" * 64, t - timedelta(seconds=1)) == "SIGNER_NOT_BOUND"
    assert bd.signer_failure(rows, "e" * 64, t) == "SIGNER_NOT_BOUND"
    enc = [bd.Bound("s" * 64, "encryption", t)]
    assert bd.signer_failure(enc, "s" * 64, t) == "SIGNER_NOT_BOUND"
    assert bd.bound_now(enc, "encryption", t) == ["s" * 64]
    assert bd.bound_now(rows, "signing", t + timedelta(hours=2)) == []
