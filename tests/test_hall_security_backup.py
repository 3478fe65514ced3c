"""Bid security (保证金 / 电子保函) and backup quorum decryption (rule 9) through the API."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import socketio

from crypto import ca
from crypto.attest import b64encode, sign_document
from crypto.bid import unwrap
from crypto.keys import SoftwareKey
from crypto.quorum import open_share, split_backup_key
from schemas.canonical import canonical_json
from server.api.backup import backup_approval_document
from server.identity import cert_sha256
from tests.support.hall import TENDERER_CODE, ApiError, Hall, Party
from tests.support.pki import credit_code


async def _supervisor_present(hall: Hall, sid: str) -> socketio.AsyncClient:
    sup = hall.parties["supervisor"]
    await hall.login(sup)
    client = socketio.AsyncClient()
    await client.connect(
        hall.url,
        namespaces=["/hall"],
        auth={"token": sup.token, "session_id": sid, "last_seq": 0},
        transports=["websocket"],
    )
    for _ in range(100):
        if (await hall.view(sid, hall.parties["host"])).get("supervisors_present"):
            return client
        await asyncio.sleep(0.02)
    raise AssertionError("supervisor presence was not recorded")


def _guarantee(hall: Hall, guarantor: ca.CompanyPair, bidder: str, **changes: object) -> str:
    doc: dict[str, object] = {
        "format": "bidbridge-guarantee",
        "guarantee_no": "BH-2026-0001",
        "guarantor_name": "某担保有限公司",
        "guarantor_credit_code": GUARANTOR,
        "applicant_credit_code": bidder,
        "beneficiary_name": "某市城投公司",
        "beneficiary_credit_code": TENDERER_CODE,
        "project_code": "JS-2026-0101",
        "lot_code": "01",
        "amount_fen": 100_000_00,
        "valid_from": (hall.t0 - timedelta(days=1)).date().isoformat(),
        "valid_until": (hall.t0 + timedelta(days=200)).date().isoformat(),
    }
    doc.update(changes)
    assert guarantor.signing.key is not None
    sig = sign_document(
        canonical_json(doc),
        SoftwareKey(guarantor.signing.key),
        guarantor.signing.certificate,
        at=hall.clock.now(),
    )
    return b64encode(sig)


async def _post_refused(hall: Hall, path: str, who: Party, body: Any) -> ApiError:
    """The POST of ``body`` to ``path`` by ``who`` is refused: its error."""
    with pytest.raises(ApiError) as refused:
        await hall.request("POST", path, who, body)
    return refused.value


GUARANTOR = credit_code("91110108MA0GUAR00")


async def test_bid_security_deposit_and_guarantee_show_in_the_table(
    hall: Hall, tmp_path: Path
) -> None:
    P = hall.parties
    guarantor = ca.issue_company_pair(
        hall.pki.root_a, credit_code=GUARANTOR, company_name="某担保有限公司"
    )
    sid = await hall.create_session()
    await hall.at(hall.t0 + timedelta(minutes=10))
    for k in "abc":
        await hall.upload(sid, P[k], hall.seal(tmp_path, P[k], name=k))
    assert P["a"].code and P["b"].code
    # A guarantee for too little, or for another bidder, is refused with its reasons.
    low = await _post_refused(
        hall,
        f"/api/sessions/{sid}/guarantee",
        P["a"],
        {"signature": _guarantee(hall, guarantor, P["a"].code, amount_fen=1)},
    )
    assert low.code == "GUARANTEE_INVALID" and "amount" in low.body["detail"]
    other = await _post_refused(
        hall,
        f"/api/sessions/{sid}/guarantee",
        P["a"],
        {"signature": _guarantee(hall, guarantor, P["b"].code)},
    )
    assert other.code == "GUARANTEE_INVALID" and "applicant" in other.body["detail"]
    short = (hall.t0 + timedelta(days=30)).date().isoformat()
    brief = await _post_refused(
        hall,
        f"/api/sessions/{sid}/guarantee",
        P["a"],
        {"signature": _guarantee(hall, guarantor, P["a"].code, valid_until=short)},
    )
    assert brief.code == "GUARANTEE_INVALID" and "validity" in brief.body["detail"]
    await hall.request(
        "POST",
        f"/api/sessions/{sid}/guarantee",
        P["a"],
        {"signature": _guarantee(hall, guarantor, P["a"].code)},
    )
    own = (await hall.view(sid, P["a"]))["own_bid"]["security"]
    assert own == {
        "kind": "guarantee",
        "status": "valid",
        "amount_fen": 100_000_00,
        "detail": "某担保有限公司 BH-2026-0001",
    }
    await hall.at(hall.t0 + timedelta(hours=1))
    # After the deadline the centre confirms b's deposit; c's deposit is short.
    # The centre confirms b's deposit; c's deposit is short.
    await hall.request(
        "POST",
        f"/api/sessions/{sid}/deposits",
        P["centre"],
        {"bidder": P["b"].code, "amount_fen": 100_000_00, "reference": "银行流水 001"},
    )
    await hall.request(
        "POST",
        f"/api/sessions/{sid}/deposits",
        P["centre"],
        {"bidder": P["c"].code, "amount_fen": 10_00},
    )
    host_deposit = await _post_refused(
        hall, f"/api/sessions/{sid}/deposits", P["host"], {"bidder": P["b"].code, "amount_fen": 1}
    )
    assert host_deposit.status == 403
    sup = await _supervisor_present(hall, sid)
    try:
        await hall.request("POST", f"/api/sessions/{sid}/start", P["host"])
        await hall.request("POST", f"/api/sessions/{sid}/decryption", P["host"])
        for k in "abc":
            assert P[k].enc_key and P[k].enc_cert
            cek = unwrap(tmp_path / f"{k}.p7m", P[k].enc_key, P[k].enc_cert)
            await hall.request("POST", f"/api/sessions/{sid}/key", P[k], {"cek": b64encode(cek)})
        await hall.at(hall.t0 + timedelta(hours=2))
    finally:
        await sup.disconnect()
    rows = {r["bidder"]: r for r in (await hall.view(sid, P["b"]))["table"]["rows"]}
    assert rows[P["a"].code]["security"]["kind"] == "guarantee"
    assert rows[P["b"].code]["security"] == {
        "kind": "deposit",
        "status": "valid",
        "amount_fen": 100_000_00,
        "detail": "银行流水 001",
    }
    assert rows[P["c"].code]["security"]["status"] == "invalid"


async def test_rule_09_backup_quorum_decrypts_only_named_bids_with_k_approvals(
    hall: Hall, tmp_path: Path
) -> None:
    P = hall.parties
    root = hall.pki.root_a
    backup = ca.issue_company_pair(
        root, credit_code=credit_code("12100000MB0000001"), company_name="交易中心备用解密"
    ).encryption
    custodians = {
        role: ca.issue_person(
            root,
            name=role,
            role=role,
            person_id=f"K-{role}",
            usage="encryption",
            key_type="ec-p256",
        )
        for role in ("host", "supervisor", "centre")
    }
    assert backup.key is not None
    bundle = split_backup_key(
        backup.key,
        backup.certificate,
        [c.certificate for c in custodians.values()],
        2,
        label="JS-2026-0101",
    )
    accounts = {role: cert_sha256(P[role].cert)[:32] for role in custodians}
    sid = await hall.create_session(
        backup={"k": 2, "custodians": list(accounts.values()), "bundle_json": bundle.to_json()}
    )
    await hall.at(hall.t0 + timedelta(minutes=10))
    for k in "abc":
        env = hall.seal(tmp_path, P[k], name=k, extra_recipients=[backup.certificate])
        await hall.upload(sid, P[k], env)
    assert P["b"].code and P["c"].code
    # Before the deadline nobody may even ask (rule 4 and 9).
    early = await _post_refused(
        hall,
        f"/api/sessions/{sid}/backup-requests",
        P["host"],
        {"bidders": [P["b"].code], "reason": "演练"},
    )
    assert early.code == "BEFORE_DEADLINE"
    await hall.at(hall.t0 + timedelta(hours=1))
    sup = await _supervisor_present(hall, sid)
    try:
        await hall.request("POST", f"/api/sessions/{sid}/start", P["host"])
        await hall.request("POST", f"/api/sessions/{sid}/decryption", P["host"])
        assert P["a"].enc_key and P["a"].enc_cert
        cek = unwrap(tmp_path / "a.p7m", P["a"].enc_key, P["a"].enc_cert)
        await hall.request("POST", f"/api/sessions/{sid}/key", P["a"], {"cek": b64encode(cek)})
        req = await hall.request(
            "POST",
            f"/api/sessions/{sid}/backup-requests",
            P["host"],
            {"bidders": [P["b"].code], "reason": "投标人 CA 锁损坏，平台备用解密"},
        )
        rid = req["request_id"]

        async def approve(role: str, signer: str | None = None) -> object:
            c = custodians[role]
            assert c.key is not None
            share = open_share(bundle, SoftwareKey(c.key), c.certificate)
            who = P[signer or role]
            doc = backup_approval_document(sid, rid, [P["b"].code or ""])
            return await hall.request(
                "POST",
                f"/api/sessions/{sid}/backup-requests/{rid}/approve",
                who,
                {"signature": hall.sign(who, doc), "share": share.to_json()},
            )

        before = await hall.hub.store.events_after(sid, 0)
        with pytest.raises(ApiError) as bidder_approves:
            await approve("centre", signer="a")
        assert bidder_approves.value.status == 403
        await approve("supervisor")
        view = await hall.view(sid, P["host"])
        assert {b["bidder"]: b["status"] for b in view["bids"]}[P["b"].code] == "uploaded"
        await approve("centre")
        with pytest.raises(ApiError) as twice:
            await approve("host")
        assert twice.value.code == "ALREADY_DONE"
        after = await hall.hub.store.events_after(sid, len(before))
        types = [e.type for e in after]
        assert types.count("backup_approved") == 2 and "backup_quorum_reached" in types
        decrypted = [e for e in after if e.type == "bid_decrypted"]
        assert [(e.payload["bidder"], e.payload["via"]) for e in decrypted] == [
            (P["b"].code, "backup")
        ]
        assert await hall.hub.store.shares(rid) == {}  # the shares are gone after use
        await hall.at(hall.t0 + timedelta(hours=2))
    finally:
        await sup.disconnect()
    rows = {r["bidder"]: r["status"] for r in (await hall.view(sid, P["c"]))["table"]["rows"]}
    assert rows == {P["a"].code: "decrypted", P["b"].code: "decrypted", P["c"].code: "revoked"}
