"""The expert desk's routes on a real server (SQLite and PostgreSQL): the bids' documents for the
committee once the evaluation has started, served so that a hostile document cannot script the
page, and the signature relay (the page drafts, the room device signs with the expert's key)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from server.auth import Principal
from tests.support.cli import bidbridge, write_party
from tests.support.desk import (
    BIDS,
    close_desk,
    qualification,
    review,
    room_desk,
    signed_in,
    signing,
)
from tests.support.evaluation import Eval, drawn
from tests.support.hall import Hall, P, Party
from tests.support.pki import CODE_A, CODE_B, pdf_document


def stranger(hall: Hall, role: str, pid: str) -> Party:
    """A valid token of ``role`` for someone who is not on this evaluation."""
    token, _ = hall.hub.tokens.issue(Principal(role, pid, pid, "0" * 64), hall.clock.now())
    party = Party(pid, P(hall, "host").key, P(hall, "host").cert)
    party.token = token
    return party


async def raw_get(hall: Hall, path: str, who: Party) -> tuple[int, dict[str, str], bytes]:
    async with hall.http.get(
        hall.url + path, headers={"Authorization": f"Bearer {who.token}"}
    ) as r:
        return r.status, dict(r.headers), await r.read()


def document_path(e: Eval, bidder: str, name: str) -> str:
    from urllib.parse import urlencode

    return e.path("document") + "?" + urlencode({"bidder": bidder, "path": name})


# --- documents --------------------------------------------------------------------------------------


async def test_members_see_the_bids_documents_only_once_the_evaluation_has_started(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee = await signed_in(hall, tmp_path)
    _mid, member = e.nth_expert(committee, 0)
    await hall.refused(409, "DOCUMENTS_CLOSED", "GET", e.path("bids"), member)
    await hall.refused(
        409, "DOCUMENTS_CLOSED", "GET", document_path(e, CODE_A, "summary.json"), member
    )
    await e.post(P(hall, "host"), "start")
    bids = (await hall.request("GET", e.path("bids"), member))["bids"]
    assert [b["bidder"] for b in bids] == sorted(BIDS)
    for b in bids:
        names = {d["path"]: d for d in b["documents"]}
        assert set(names) == {"summary.json", "商务标.pdf"}
        assert names["商务标.pdf"]["content_type"] == "application/pdf"
        assert names["summary.json"]["content_type"] == "text/plain; charset=utf-8"
        # the package is the one the opening decrypted and stored
        assert hall.hub.blobs.has(b["package_sha256"])

    a = next(b for b in bids if b["bidder"] == CODE_A)
    pdf = next(d for d in a["documents"] if d["path"] == "商务标.pdf")
    status, headers, body = await raw_get(hall, document_path(e, CODE_A, "商务标.pdf"), member)
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == pdf["sha256"] == headers["X-Document-SHA256"]
    assert body == pdf_document()
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"].startswith("inline;")
    assert headers["X-Content-Type-Options"] == "nosniff"
    csp = headers["Content-Security-Policy"]
    assert csp.split(";")[0] == "sandbox" and "default-src 'none'" in csp
    status, headers, body = await raw_get(hall, document_path(e, CODE_B, "summary.json"), member)
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert json.loads(body)["bidder_credit_code"] == CODE_B


async def test_documents_are_refused_to_non_members_and_outside_the_package(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee = await signed_in(hall, tmp_path)
    await e.post(P(hall, "host"), "start")
    member = e.as_expert(sorted(committee)[0])
    outsider = stranger(hall, "expert", "E999")  # a valid expert token, not on this committee
    for path in (e.path("bids"), document_path(e, CODE_A, "summary.json")):
        await hall.refused(403, "NOT_PERMITTED", "GET", path, outsider)
        for staff in ("host", "supervisor"):
            await hall.refused(403, "NOT_PERMITTED", "GET", path, P(hall, staff))
    for bad in (
        "../summary.json",
        "../../../../etc/passwd",
        "/etc/passwd",
        "a/../summary.json",
        "./summary.json",
        "C:\\boot.ini",
        "",
        "manifest.json",
    ):
        await hall.refused(
            422, "DOCUMENT_PATH_INVALID", "GET", document_path(e, CODE_A, bad), member
        )
    await hall.refused(404, "NOT_FOUND", "GET", document_path(e, CODE_A, "技术标.pdf"), member)
    await hall.refused(404, "NOT_FOUND", "GET", document_path(e, "91000000000000000X", "summary.json"), member)  # fmt: skip


async def test_forms_name_each_criterion_with_its_maximum(hall: Hall, tmp_path: Path) -> None:
    e, committee = await signed_in(hall, tmp_path)
    out = await hall.request("GET", e.path("forms"), e.as_expert(sorted(committee)[0]))
    maxima = {c["id"]: c["max_points_x100"] for c in out["method"]["criteria"]}
    assert maxima == {"T1": 4000, "C1": 3000}
    assert out["stages"] == ["qualification", "preliminary", "detailed"]
    assert {i["id"]: i["stage"] for i in out["review_items"]} == {
        "Q1": "qualification",
        "P1": "preliminary",
    }
    # the method shapes the forms: the page never needs to know which method it is
    assert out["scored_stages"] == ["detailed"]
    assert [c["id"] for c in out["criteria"]] == ["T1", "C1"]
    assert {stage: [i["id"] for i in items] for stage, items in out["items"].items()} == {
        "qualification": ["Q1"],
        "preliminary": ["P1"],
    }


async def test_forms_of_the_lowest_price_method_give_its_detailed_items_and_no_scores(
    hall: Hall, tmp_path: Path
) -> None:
    detailed = [{"id": "L1", "stage": "detailed", "text": "技术标响应招标文件实质性要求"}]
    method = {"method": "lowest_price", "items": detailed}
    e, _sup = await drawn(hall, tmp_path, method=method)
    mid, member = sorted((await e.committee()).items())[0]
    await e.sign_in(mid, member["room_id"])
    out = await hall.request("GET", e.path("forms"), e.as_expert(mid))
    assert out["scored_stages"] == [] and out["criteria"] == []
    assert {stage: [i["id"] for i in items] for stage, items in out["items"].items()} == {
        "qualification": ["Q1"],
        "preliminary": ["P1"],
        "detailed": ["L1"],
    }


# --- the signature relay -------------------------------------------------------------------------------


async def test_a_drafted_sheet_is_signed_by_the_room_device_with_the_experts_key(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee = await qualification(hall, tmp_path)
    ids = sorted(committee)
    mid, other = ids[1], ids[2]
    seat = committee[mid]["room_id"]
    member = e.as_expert(mid)
    sheet = review(mid)
    # The draft is checked like the sheet it becomes (the server decides, not the page).
    short = {**sheet, "verdicts": sheet["verdicts"][:2]}
    await hall.refused(422, "SHEET_INCOMPLETE", "POST", e.path("to-sign"), member,
                       {"kind": "sheet", "stage": "qualification", "content": short})  # fmt: skip
    await hall.refused(409, "WRONG_STAGE", "POST", e.path("to-sign"), member,
                       {"kind": "sheet", "stage": "detailed", "content": sheet})  # fmt: skip
    await e.post(
        member, "to-sign", body={"kind": "sheet", "stage": "qualification", "content": sheet}
    )
    draft = (await hall.request("GET", e.path("members", mid, "to-sign"), member))["draft"]
    assert draft["content"] == sheet and draft["kind"] == "sheet"
    # another member's draft, and another room's, are refused; the expert's own room sees it
    await hall.refused(403, "NOT_YOUR_DRAFT", "GET", e.path("members", mid, "to-sign"), e.as_expert(other))  # fmt: skip
    # The draw may seat the whole committee in one room: then any other room of the network.
    seated = {m["room_id"] for m in committee.values()}
    others = [r for r in e.rooms if r != seat]
    other_room = next((r for r in others if r in seated), others[0])
    await hall.refused(403, "NOT_YOUR_DRAFT", "GET", e.path("members", mid, "to-sign"), e.rooms[other_room])  # fmt: skip
    assert (await hall.request("GET", e.path("members", mid, "to-sign"), e.rooms[seat]))[
        "draft"
    ] == draft
    for staff in ("host", "supervisor"):
        await hall.refused(403, "NOT_PERMITTED", "GET", e.path("members", mid, "to-sign"), P(hall, staff))  # fmt: skip
        await hall.refused(403, "NOT_PERMITTED", "POST", e.path("to-sign"), P(hall, staff),
                           {"kind": "sheet", "stage": "qualification", "content": sheet})  # fmt: skip
    # nobody but the author and that room learns the draft's content
    host_events = json.dumps(await e.events(P(hall, "host")), ensure_ascii=False)
    assert "sheet_to_sign" not in host_events
    assert "sheet_to_sign" not in json.dumps(await e.events(e.as_expert(other)))
    assert "sheet_to_sign" in json.dumps(await e.events(e.rooms[seat]))

    desk = await room_desk(e, mid, seat, tmp_path / "desk")
    try:
        out = await desk.check()
        assert out is not None and out["ok"]
        assert await desk.check() is None  # nothing left to sign
    finally:
        await close_desk(desk)
    assert (await hall.request("GET", e.path("members", mid, "to-sign"), member))["draft"] is None
    own = (await hall.request("GET", e.path("sheets", "qualification"), member))["own"]
    assert own["content"] == sheet and own["sha256"] == draft["sha256"]
    # the signature is the expert's own, made on the room device over the sheet document
    from crypto.attest import b64decode, read_document
    from schemas import evaluation as EV

    doc = read_document(b64decode(own["signature"]))
    assert doc.content == EV.sheet_document(e.sid, mid, "qualification", sheet)
    assert doc.signer == e.expert(mid).cert


async def test_the_report_answer_is_relayed_and_a_disagreement_needs_its_reason(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee = await signing(hall, tmp_path)
    mid, member = e.nth_expert(committee, 1)
    await hall.refused(422, "REASON_REQUIRED", "POST", e.path("to-sign"), member,
                       {"kind": "report", "agree": False, "reason": "  "})  # fmt: skip
    await hall.refused(422, "INVALID_INPUT", "POST", e.path("to-sign"), member,
                       {"kind": "vote", "agree": True})  # fmt: skip
    reason = "价格分计算口径有误 / the price score basis is wrong"
    await e.post(member, "to-sign", body={"kind": "report", "agree": False, "reason": reason})
    draft = (await hall.request("GET", e.path("members", mid, "to-sign"), member))["draft"]
    assert draft["report_sha256"] == (await e.view(member))["report_sha256"]
    desk = await room_desk(e, mid, committee[mid]["room_id"], tmp_path / "desk")
    try:
        out = await desk.check()
        assert out is not None and out["ok"]
    finally:
        await close_desk(desk)
    report = await hall.request("GET", e.path("report"), member)
    sig = report["signatures"][mid]
    assert (sig["agree"], sig["reason"], sig["deemed"]) == (False, reason, False)
    assert sig["signature"]
    await hall.refused(409, "ALREADY_DONE", "POST", e.path("to-sign"), member,
                       {"kind": "report", "agree": True})  # fmt: skip


async def test_room_desk_prints_a_one_time_link_to_the_expert_desk(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee = await signed_in(hall, tmp_path)
    mid = sorted(committee)[0]
    seat = committee[mid]["room_id"]
    room_key, room_cert = write_party(tmp_path, "room", e.rooms[seat])
    expert_key, expert_cert = write_party(tmp_path, "expert", e.expert(mid))
    r = await bidbridge(
        "room", "desk", "--server", hall.url, "--session", e.sid,
        "--key", room_key, "--cert", room_cert, "--expert-id", mid,
        "--expert-key", expert_key, "--expert-cert", expert_cert, "--link-only",
    )  # fmt: skip
    assert r.code == 0, r
    link = next(line.strip() for line in r.out.splitlines() if "/web/enter.html#code=" in line)
    assert link.startswith(hall.url + "/web/enter.html#code=")
    code = link.split("#code=", 1)[1]
    out = await hall.request("POST", "/api/auth/web-link/redeem", None, {"code": code})
    assert (out["role"], out["party_id"], out["page"], out["session_id"]) == (
        "expert",
        mid,
        "expert",
        e.sid,
    )
    await hall.refused(401, "CHALLENGE_INVALID", "POST", "/api/auth/web-link/redeem", None, {"code": code})  # fmt: skip


async def test_room_desk_signs_a_waiting_draft_only_when_confirmed(
    hall: Hall, tmp_path: Path
) -> None:
    """``bidbridge room desk`` as a room operator runs it: without a confirmation (no terminal,
    no --yes) nothing is signed; with --yes the waiting draft is signed with the expert's key."""
    e, committee = await qualification(hall, tmp_path)
    mid = sorted(committee)[4]
    seat = committee[mid]["room_id"]
    member = e.as_expert(mid)
    await e.post(member, "to-sign", body={"kind": "sheet", "stage": "qualification", "content": review(mid)})  # fmt: skip
    room_key, room_cert = write_party(tmp_path, "room", e.rooms[seat])
    expert_key, expert_cert = write_party(tmp_path, "expert", e.expert(mid))
    argv = [
        "room", "desk", "--server", hall.url, "--session", e.sid,
        "--key", room_key, "--cert", room_cert, "--expert-id", mid,
        "--expert-key", expert_key, "--expert-cert", expert_cert, "--seconds", "2",
    ]  # fmt: skip
    r = await bidbridge(*argv)
    assert r.code == 0, r
    assert "no terminal input: not signed" in r.out, r
    assert mid not in (await e.view(P(hall, "host")))["submitted"].get("qualification", [])
    r = await bidbridge(*argv, "--yes")
    assert r.code == 0, r
    assert "signed and submitted" in r.out, r
    assert mid in (await e.view(P(hall, "host")))["submitted"]["qualification"]
    assert (await hall.request("GET", e.path("members", mid, "to-sign"), member))["draft"] is None
