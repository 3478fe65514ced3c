"""Scopes in the evaluation (issue: trust and secrecy, attack 6): an expert's token is good for
its own evaluation only, on every route an expert may call; and what the host or the centre says
about an expert (declined, to be replaced) is answered the same whether or not the expert was
drawn, and moves what they can see by the same amount (两随机四不知)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from server.api.routes import ROUTES
from server.auth import Principal
from tests.support.evaluation import Eval, drawn, drawn_with_member
from tests.support.hall import ApiError, Hall, P, Party


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def concrete(path: str, e: Eval, expert_id: str) -> str:
    """A route's path with its parameters filled in for evaluation ``e``."""
    values = {"expert_id": expert_id, "stage": "qualification", "subscription": "sub-1"}
    out = path.replace("{session_id}", e.sid.replace("~", "%7E"))
    for name, value in values.items():
        out = out.replace("{" + name + "}", value)
    assert "{" not in out, out
    return out


async def test_an_expert_token_of_another_evaluation_is_refused_on_every_evaluation_route(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee, mid = await drawn_with_member(hall, tmp_path)
    own = (await e.sign_in(mid, committee[mid]["room_id"]))["token"]
    p = hall.hub.tokens.check(own, hall.clock.now())
    # the same expert, signed in at another evaluation (where they were drawn too)
    elsewhere, _ = hall.hub.tokens.issue(
        Principal("expert", mid, p.name, p.cert_sha256, "JS-2026-0101~01~eval~0ther"),
        hall.clock.now(),
    )
    routes = [
        r
        for r in ROUTES
        if r.roles is not None and "expert" in r.roles and "{session_id}" in r.path
    ]
    assert len(routes) >= 12, [r.path for r in routes]  # every route of the expert desk
    for r in routes:
        path = concrete(r.path, e, mid)
        err = await hall.refused(
            403, "NOT_PERMITTED", r.method, path, json_body={}, headers=bearer(elsewhere)
        )
        assert "another session" in err.body["en"], (r.method, r.path, err.body)
    # nor a page link to this evaluation's desk, nor a renewal that drops the binding
    await hall.refused(
        403,
        "NOT_PERMITTED",
        "POST",
        "/api/auth/web-link",
        json_body={"session_id": e.sid, "page": "expert"},
        headers=bearer(elsewhere),
    )
    renewed = await hall.request("POST", "/api/auth/refresh", headers=bearer(elsewhere))
    assert hall.hub.tokens.check(renewed["token"], hall.clock.now()).session_id != e.sid
    # the expert's own token for this evaluation reads it (so the refusals above mean something)
    view = (await hall.request("GET", e.path(), headers=bearer(own)))["view"]
    assert view["session_id"] == e.sid


async def test_an_expert_token_does_not_reach_the_evaluations_opening(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee, mid = await drawn_with_member(hall, tmp_path)
    own = (await e.sign_in(mid, committee[mid]["room_id"]))["token"]
    for path in (
        f"/api/sessions/{e.opening}",
        f"/api/sessions/{e.opening}/events",
        f"/api/sessions/{e.opening}/record",
        "/api/sessions",
        "/api/supervision/sessions",
    ):
        await hall.refused(403, "NOT_PERMITTED", "GET", path, headers=bearer(own))


# --- decline and replace: the same answer whoever is named -----------------------------------


async def seen_by(
    e: Eval, who: Party
) -> tuple[dict[str, int], dict[str, Any], list[dict[str, Any]]]:
    """What ``who`` can see of the evaluation: its positions, the view, the events."""
    out = await e.hall.request("GET", e.path(), who)
    return out["pos"], out["view"], await e.events(who)


async def answer(e: Eval, who: Party, expert_id: str, what: str) -> tuple[int, Any]:
    try:
        out = await e.post(who, "members", expert_id, what, body={"reason": "电话告知无法参加"})
    except ApiError as exc:
        return exc.status, exc.body
    return 200, out


SPARES = {  # enough spares, no region rule: every replacement of a member succeeds
    "lead_site_id": "NJ",
    "secondary_sites": 1,
    "categories": [{"category": "A08.01", "count": 5, "spares": 8}],
    "min_outside_lead": 0,
}


async def test_decline_and_replace_answer_the_same_for_a_member_and_a_non_member(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path, draw=SPARES)
    supervisor = P(hall, "supervisor")
    committee = await e.committee()
    members = sorted(committee)
    signed = members[-1]
    await e.sign_in(signed, committee[signed]["room_id"])  # public: the host sees its name
    pool_ids = {f"E{n:03d}" for n in range(1, 37)}
    outsiders = sorted(pool_ids - set(await e.members()))  # in the pool, never drawn
    cases = (
        (P(hall, "host"), "decline", members[0], outsiders[0]),
        (P(hall, "centre"), "decline", members[1], "E999"),  # not even in the pool
        (P(hall, "host"), "replace", members[2], signed),  # signed in: not replaceable
        (P(hall, "centre"), "replace", members[3], outsiders[1]),
    )
    for who, what, member, other in cases:
        answers = []
        for expert_id in (member, other):
            pos, view, events = await seen_by(e, who)
            status, body = await answer(e, who, expert_id, what)
            pos2, view2, events2 = await seen_by(e, who)
            # the same status and body, and the caller's positions did not move (what the
            # report appended is for the supervisor: the caller is shown none of it)
            answers.append((status, body, pos2 == pos))
            # nothing else the caller can see changed: the view, the events it is shown
            assert view2 == view, (who.name, what, expert_id)
            assert events2 == events, (who.name, what, expert_id)
        assert answers == [(200, {"ok": True, "pos": None}, True)] * 2, (who.name, what, answers)
    # the supervisor (who knows who was drawn) reads what each report did
    seen = await e.events(supervisor)
    types = [(x["type"], x["payload"].get("expert_id")) for x in seen]
    for m in members[:2]:
        assert ("member_declined", m) in types and ("member_replaced", m) in types
    for m in members[2:4]:
        assert ("replacement_requested", m) in types and ("member_replaced", m) in types
    assert ("decline_reported", outsiders[0]) in types and ("decline_reported", "E999") in types
    assert ("replacement_requested", signed) in types
    not_applied = {
        x["payload"]["expert_id"]: x["payload"]["code"]
        for x in seen
        if x["type"] == "report_not_applied"
    }
    assert not_applied == {
        outsiders[0]: "NOT_A_MEMBER",
        "E999": "NOT_A_MEMBER",
        signed: "ALREADY_DONE",
        outsiders[1]: "NOT_A_MEMBER",
    }
    now = await e.members()
    assert [now[m]["status"] for m in members[:4]] == ["declined"] * 2 + ["replaced"] * 2
    assert now[signed]["status"] == "signed_in"
    assert outsiders[0] not in now and "E999" not in now
    assert len(await e.committee()) == 5


async def test_decline_refusals_do_not_depend_on_membership(hall: Hall, tmp_path: Path) -> None:
    e, _sup = await drawn(hall, tmp_path)
    host = P(hall, "host")
    member = sorted(await e.committee())[0]
    bodies: dict[str, list[dict[str, Any]]] = {}
    for expert_id in (member, "E035", "E999"):
        for what in ("decline", "replace"):
            path = e.path("members", expert_id, what)
            blank = await hall.refused(422, "REASON_REQUIRED", "POST", path, host, {"reason": " "})
            other = await hall.refused(
                403, "NOT_PERMITTED", "POST", path, P(hall, "supervisor"), {"reason": "出差"}
            )
            bodies.setdefault(what, []).append({"blank": blank.body, "role": other.body})
    for what, seen in bodies.items():
        assert seen[0] == seen[1] == seen[2], (what, seen)
    # a malformed id is refused for its form, before anything is looked up
    for bad in ("E 1", "x" * 65):
        await hall.refused(
            422,
            "INVALID_INPUT",
            "POST",
            e.path("members", bad, "decline"),
            host,
            {"reason": "出差"},
        )


async def test_no_key_answers_the_same_for_another_rooms_member_and_a_stranger(
    hall: Hall, tmp_path: Path
) -> None:
    e, committee, mid = await drawn_with_member(hall, tmp_path)
    other_room = next(r for r in e.rooms if r != committee[mid]["room_id"])
    bodies = []
    for expert_id in (mid, "E999"):
        err = await hall.refused(
            403, "NOT_A_MEMBER", "POST", e.path("members", expert_id, "no-key"), e.rooms[other_room]
        )
        bodies.append({k: v for k, v in err.body.items() if k != "detail"})
        assert mid not in err.body["zh"] + err.body["en"]
    assert bodies[0] == bodies[1]


async def test_a_decline_with_no_spare_left_is_recorded_not_applied_and_answered_the_same(
    hall: Hall, tmp_path: Path
) -> None:
    no_spares = {**SPARES, "categories": [{"category": "A08.01", "count": 5, "spares": 0}]}
    e, _sup = await drawn(hall, tmp_path, draw=no_spares)
    host = P(hall, "host")
    member = sorted(await e.committee())[0]
    answers = []
    for expert_id in (member, "E999"):
        before = await seen_by(e, host)
        status, body = await answer(e, host, expert_id, "decline")
        assert await seen_by(e, host) == before
        answers.append((status, body))
    assert answers == [(200, {"ok": True, "pos": None})] * 2
    # the member stays on the committee (the committee is not silently short); the supervisor
    # reads why, and the centre must draw again
    assert (await e.committee())[member]["status"] == "drawn"
    last = [x for x in await e.events(P(hall, "supervisor")) if x["type"] == "report_not_applied"]
    assert [(x["payload"]["expert_id"], x["payload"]["code"]) for x in last] == [
        (member, "NO_SPARE_LEFT"),
        ("E999", "NOT_A_MEMBER"),
    ]
