"""The evaluation through its API on a real server (SQLite and PostgreSQL): the rules of
DESIGN.md section 6 as the parties meet them."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from crypto.attest import b64decode, verify_document
from schemas import evaluation as EV
from schemas.canonical import canonical_json
from server.domain import draw as D
from tests.support.evaluation import Eval, drawn, drawn_with_member, new_evaluation, review, scores
from tests.support.hall import Hall, P
from tests.support.pki import CODE_A, CODE_B, CODE_C


async def sign_in_all(e: Eval) -> dict[str, dict[str, Any]]:
    committee = await e.committee()
    for mid, m in sorted(committee.items()):
        await e.sign_in(mid, m["room_id"])
    return committee


async def test_eval_rule_01_draw_is_committed_seeded_and_recomputable(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    events = await e.events(P(hall, "supervisor"))
    types = [ev["type"] for ev in events]
    committed = next(ev for ev in events if ev["type"] == "draw_committed")
    entropy = [ev for ev in events if ev["type"] == "draw_entropy"]
    done = next(ev for ev in events if ev["type"] == "draw_completed")
    # the commitment came before any entropy, and the revealed value opens it
    assert types.index("draw_committed") < types.index("draw_entropy")
    server_random = bytes.fromhex(done["payload"]["server_random"])
    assert D.commitment(server_random) == committed["payload"]["commitment"]
    values = {x["payload"]["role"]: bytes.fromhex(x["payload"]["value"]) for x in entropy}
    seed = D.seed(server_random, values["supervisor"], values["host"])
    assert done["payload"]["result"]["seed"] == seed.hex()
    # anyone can recompute the committee from the archived input
    blob = hall.hub.blobs.path(done["payload"]["pool_blob"]).read_bytes()
    snapshot = json.loads(blob)
    from schemas.experts import DrawRequest, DrawResult, PoolSnapshotRow, Site

    problems = D.verify(
        [PoolSnapshotRow.model_validate(r) for r in snapshot["pool"]],
        [Site.model_validate(s) for s in snapshot["sites"]],
        DrawRequest.model_validate(done["payload"]["request"]),
        server_random,
        values["supervisor"],
        values["host"],
        DrawResult.model_validate(done["payload"]["result"]),
    )
    assert problems == []


async def test_eval_rule_01_no_draw_without_both_entropies_or_a_present_supervisor(
    hall: Hall, tmp_path: Path
) -> None:
    e = await new_evaluation(hall, tmp_path)
    host, supervisor = P(hall, "host"), P(hall, "supervisor")
    await e.post(host, "draw", "begin")
    await hall.refused(
        409,
        "SUPERVISOR_ABSENT",
        "POST",
        e.path("draw", "entropy"),
        supervisor,
        {"value": "ab" * 32},
    )
    await e.post(host, "draw", "entropy", body={"value": "cd" * 32})
    await hall.refused(
        409, "ENTROPY_GIVEN", "POST", e.path("draw", "entropy"), host, {"value": "ef" * 32}
    )
    await hall.refused(409, "ENTROPY_MISSING", "POST", e.path("draw"), host)


async def test_eval_rule_02_identities_hidden_from_host_until_sign_in(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    committee = await e.committee()
    assert len(committee) == 5
    host_view = await e.view(P(hall, "host"))
    host_events = json.dumps(await e.events(P(hall, "host")), ensure_ascii=False)
    assert "members" not in host_view and host_view["committee_size"] == 5
    for mid, m in committee.items():
        assert mid not in host_events and m["room_id"] not in host_events
    # two randoms: the secondary room was drawn too, and its city is not the lead's. The draw
    # may seat every member outside the lead city, so the lead room need not hold one.
    rooms = {m["room_id"] for m in committee.values()}
    assert len(rooms - {"NJ-01"}) == 1  # one secondary site (draw.secondary_sites)
    outside = [m for m in committee.values() if m["room_id"] != "NJ-01"]
    assert len(outside) >= 2  # region spread: at least two of five from outside the lead city
    first = sorted(committee)[0]
    await e.sign_in(first, committee[first]["room_id"])
    host_view = await e.view(P(hall, "host"))
    assert [m["id"] for m in host_view["signed_in"]] == [first]


async def test_eval_rule_03_avoidance_of_bidders_employees(hall: Hall, tmp_path: Path) -> None:
    e, _sup = await drawn(hall, tmp_path)
    committee = await e.committee()
    # E001 and E002 work for bidder A (pool_csv): never drawn, never spares
    done = next(x for x in await e.events(P(hall, "supervisor")) if x["type"] == "draw_completed")
    result = done["payload"]["result"]
    spares = {s["expert_id"] for c in result["categories"] for s in c["spares"]}
    assert not ({"E001", "E002"} & (set(committee) | spares))
    assert CODE_A in done["payload"]["request"]["avoid_credit_codes"]
    assert result["counts"]["avoided"] >= 2


async def test_eval_rule_05_decline_and_absence_draw_the_next_spare(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    host = P(hall, "host")
    committee = await e.committee()
    first, second = sorted(committee)[:2]
    await e.post(host, "members", first, "decline", body={"reason": "出差在外"})
    after = await e.committee()
    assert first not in after and len(after) == 5
    members = await e.members()
    assert members[first]["status"] == "declined" and members[first]["replaced_by"] in after
    # everyone but `second` signs in; at the deadline `second` is absent and replaced
    for mid, m in sorted(after.items()):
        if mid != second:
            await e.sign_in(mid, m["room_id"])
    view = await e.view(P(hall, "supervisor"))
    convene = view["timetable"]["convene_at"]
    from schemas.time import parse_iso

    await hall.at(parse_iso(convene) + timedelta(minutes=31))
    members = await e.members()
    assert members[second]["status"] == "absent"
    new = members[second]["replaced_by"]
    assert new and members[new]["status"] == "drawn"
    # the replacement signs in late: recorded against them
    await e.sign_in(new, members[new]["room_id"])
    members = await e.members()
    assert members[new]["late"] is True
    types = [x["type"] for x in await e.events(P(hall, "supervisor"))]
    assert types.count("member_replaced") == 2 and "member_absent" in types


async def test_eval_rule_05_sign_in_only_at_own_room_with_own_key(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee, mid = await drawn_with_member(hall, tmp_path)
    other_room = next(r for r in e.rooms if r != committee[mid]["room_id"])
    ch = await hall.request("POST", "/api/auth/challenge")
    doc = EV.sign_in_document(ch["server"], e.sid, other_room, mid, ch["nonce"])
    body = {"expert_id": mid, "nonce": ch["nonce"], "signature": hall.sign(e.expert(mid), doc)}
    if other_room in (await e.view(P(hall, "supervisor")))["rooms"]:
        await hall.refused(
            409 if False else 403,
            "WRONG_ROOM",
            "POST",
            e.path("sign-in"),
            e.rooms[other_room],
            body,
        )
    # someone else's key for this expert
    ch = await hall.request("POST", "/api/auth/challenge")
    room = committee[mid]["room_id"]
    doc = EV.sign_in_document(ch["server"], e.sid, room, mid, ch["nonce"])
    impostor = e.expert("E999")
    body = {"expert_id": mid, "nonce": ch["nonce"], "signature": hall.sign(impostor, doc)}
    await hall.refused(422, "SIGNATURE_INVALID", "POST", e.path("sign-in"), e.rooms[room], body)
    # no key: recorded against the expert
    await e.post(e.rooms[room], "members", mid, "no-key")
    assert (await e.members())[mid]["status"] == "no_key"


async def test_eval_full_comprehensive_scoring_signed_report(hall: Hall, tmp_path: Path) -> None:
    e, _sup = await drawn(hall, tmp_path)
    host, supervisor = P(hall, "host"), P(hall, "supervisor")
    committee = await e.committee()
    ids = sorted(committee)
    await e.sign_in(ids[0], committee[ids[0]]["room_id"])
    # Eval rule 4: not before every member has signed in
    await hall.refused(409, "MEMBERS_NOT_SIGNED_IN", "POST", e.path("start"), host)
    for mid in ids[1:]:
        await e.sign_in(mid, committee[mid]["room_id"])
    await hall.refused(403, "NOT_PERMITTED", "POST", e.path("start"), supervisor)
    await e.post(host, "start")
    # Eval rule 6: chair by majority
    for mid in ids[:3]:
        await e.post(e.as_expert(mid), "vote", body={"candidate": ids[0]})
    view = await e.view(host)
    assert view["chair"] == ids[0] and view["stage"] == "qualification"
    chair = e.as_expert(ids[0])
    # qualification: bidder C fails Q1 by majority (3 of 5), with reasons; one dissent
    for i, mid in enumerate(ids):
        fail = {CODE_C: "资质证书已过期"} if i < 3 else {}
        await e.sheet(mid, "qualification", review(mid, "qualification", "Q1", fail))
    # Eval rule 7: a fail needs a reason; the stage's sheets only when open
    bad = review(ids[0], "preliminary", "P1", {CODE_A: ""})
    await hall.refused(
        409,
        "WRONG_STAGE",
        "POST",
        e.path("sheets"),
        e.as_expert(ids[0]),
        {
            "stage": "preliminary",
            "content": bad,
            "signature": hall.sign(
                e.as_expert(ids[0]), EV.sheet_document(e.sid, ids[0], "preliminary", bad)
            ),
        },
    )
    await e.post(chair, "close-stage")
    view = await e.view(host)
    assert view["stage"] == "preliminary"
    assert view["outcomes"]["qualification"]["passed"] == sorted([CODE_A, CODE_B])
    # preliminary: only A and B are still in
    for mid in ids:
        sheet = review(mid, "preliminary", "P1")
        sheet["verdicts"] = [v for v in sheet["verdicts"] if v["bidder"] != CODE_C]
        await e.sheet(mid, "preliminary", sheet)
    await e.post(chair, "close-stage")
    # detailed: ids[4] deviates far on A; Eval rule 8: others' sheets only after one's own
    for i, mid in enumerate(ids[:4]):
        await e.sheet(mid, "detailed", scores(mid, 3000 + 100 * i, 2500, [CODE_A, CODE_B]))
        if i == 0:
            before = await hall.request("GET", e.path("sheets", "detailed"), e.as_expert(ids[4]))
            assert before["own"] is None and before["others"] == []
    own = await hall.request("GET", e.path("sheets", "detailed"), e.as_expert(ids[1]))
    assert own["own"]["expert"] == ids[1] and len(own["others"]) >= 1
    outlier = scores(ids[4], 3100, 2500, [CODE_A, CODE_B])
    outlier["scores"][0]["points_x100"] = 500  # A on T1
    await e.sheet(ids[4], "detailed", outlier)
    # Eval rule 10: a re-score only where the deviation exceeds the threshold
    await hall.refused(
        409,
        "NO_DEVIATION",
        "POST",
        e.path("rescore"),
        chair,
        {"expert_id": ids[1], "reason": "复核"},
    )
    await e.post(chair, "rescore", body={"expert_id": ids[4], "reason": "偏离过大，请复核"})
    await hall.refused(409, "SHEETS_MISSING", "POST", e.path("close-stage"), chair)
    fixed = scores(ids[4], 3100, 2500, [CODE_A, CODE_B])
    await e.sheet(ids[4], "detailed", fixed)
    await e.post(chair, "close-stage")
    await e.post(chair, "summarize")
    view = await e.view(host)
    assert view["status"] == "signing" and view["report_sha256"]
    ranking = view["ranking"]["ranking"]
    assert [x["bidder"] for x in ranking["excluded"]] == [CODE_C]
    assert len(ranking["entries"]) == 2
    # Eval rule 11: disagree needs a reason; refusal without reason counts as agreement
    report = await hall.request("GET", e.path("report"), chair)
    raw = canonical_json(report["report"])
    assert hashlib.sha256(raw).hexdigest() == report["sha256"]
    verify_document(b64decode(report["server_signature"]), raw)
    dissenter = e.as_expert(ids[1])
    doc = EV.report_document(e.sid, ids[1], report["sha256"], False, "")
    await hall.refused(
        422,
        "REASON_REQUIRED",
        "POST",
        e.path("report", "sign"),
        dissenter,
        {"agree": False, "reason": "", "signature": hall.sign(dissenter, doc)},
    )
    doc = EV.report_document(e.sid, ids[1], report["sha256"], False, "价格分计算有误")
    await e.post(
        dissenter,
        "report",
        "sign",
        body={"agree": False, "reason": "价格分计算有误", "signature": hall.sign(dissenter, doc)},
    )
    await e.post(e.as_expert(ids[2]), "report", "refuse", body={"reason": ""})
    for mid in (ids[0], ids[3], ids[4]):
        who = e.as_expert(mid)
        doc = EV.report_document(e.sid, mid, report["sha256"], True, "")
        await e.post(
            who,
            "report",
            "sign",
            body={"agree": True, "reason": "", "signature": hall.sign(who, doc)},
        )
    view = await e.view(host)
    assert view["status"] == "closed"
    final = await hall.request("GET", e.path("report"), host)
    sigs = final["signatures"]
    assert sigs[ids[1]]["agree"] is False and sigs[ids[1]]["reason"] == "价格分计算有误"
    assert sigs[ids[2]]["deemed"] is True and sigs[ids[2]]["agree"] is True
    assert "视为同意" in final["text"] and "价格分计算有误" in final["text"]


async def test_eval_rule_09_suspended_over_four_hours_is_void(hall: Hall, tmp_path: Path) -> None:
    e, _sup = await drawn(hall, tmp_path)
    host = P(hall, "host")
    await e.post(host, "suspend", body={"reason": "副场网络中断"})
    t = hall.clock.now()
    await hall.at(t + timedelta(hours=1))
    await e.post(host, "resume", body={"reason": "网络已恢复"})
    assert (await e.view(host))["status"] == "convening"
    await e.post(host, "suspend", body={"reason": "副场停电"})
    t = hall.clock.now()
    await hall.at(t + timedelta(hours=4, seconds=1))
    view = await e.view(host)
    assert view["status"] == "void" and view["void_reason"] == "suspended_over_4h"
    await hall.refused(
        409, "NOT_ALLOWED_IN_STATE", "POST", e.path("resume"), host, {"reason": "恢复"}
    )


async def test_eval_rule_12_supervisor_warns_everyone_and_changes_nothing(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee, mid = await drawn_with_member(hall, tmp_path)
    supervisor = P(hall, "supervisor")
    room = e.rooms[committee[mid]["room_id"]]
    listener = await hall.listen(e.sid, room)
    await e.post(supervisor, "warnings", body={"text": "请注意评标纪律"})
    warning = await listener.until_type("supervisor_warning")
    assert warning["payload"]["text"] == "请注意评标纪律"
    for path, body in (("start", None), ("suspend", {"reason": "x"}), ("draw", None)):
        await hall.refused(403, "NOT_PERMITTED", "POST", e.path(path), supervisor, body)
    # bidders are not admitted to an evaluation at all
    await hall.refused(403, "NOT_PERMITTED", "GET", e.path(), P(hall, "a"))


async def test_eval_rule_05_signing_in_again_renews_the_token_without_a_new_event(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee, mid = await drawn_with_member(hall, tmp_path)
    await e.sign_in(mid, committee[mid]["room_id"])
    before = len(await e.events(P(hall, "supervisor")))
    await e.sign_in(mid, committee[mid]["room_id"])  # e.g. the token expired
    assert len(await e.events(P(hall, "supervisor"))) == before
    assert (await e.view(e.as_expert(mid)))["status"] == "convening"
