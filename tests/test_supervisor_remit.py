"""Supervision by remit (监管主体, seed 002 二(一)): a project names its supervising body (region and
industry); only supervisors of that remit see and act on its sessions (lists, views, events,
members, suspension, warnings, the archive), and the presence rule (rule 6, eval rule 4: no
opening, draw or evaluation without a supervisor) needs one of them. A project that names no
body is the centre-wide supervisors' (no remit), as every project was before.
(Issue: trust and secrecy, attack 6.)"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from server.domain.remit import remit_present, supervises
from server.identity import cert_pem
from tests.support.evaluation import Eval, drawn, new_evaluation
from tests.support.hall import TENDERER_CODE, ConnectionRefused, Hall, Listener, P, Party, person
from tests.support.opening import HOUR, with_bids

BODY = {"region": "150700", "industry": "住建"}
PROJECT = "HB-2026-0007"
LOT = f"{PROJECT}/01"


async def supervisor(hall: Hall, key: str, name: str, pid: str, remit: Any) -> Party:
    """A supervisor account, registered by the centre with ``remit`` (None: centre-wide)."""
    party = person(hall.pki.root_b, name, "supervisor", pid, [])
    body: dict[str, Any] = {"role": "supervisor", "name": name, "cert_pem": cert_pem(party.cert)}
    if remit is not None:
        body["remit"] = remit
    out = await hall.request("POST", "/api/accounts", P(hall, "centre"), body)
    assert out["remit"] == remit
    hall.parties[key] = party
    return party


async def remit_world(hall: Hall) -> dict[str, Party]:
    """A project supervised by 150700/住建 with one lot, and three more supervisors: of that
    remit, of the same region but another industry, of another region; the hall's own
    supervisor has no remit (centre-wide)."""
    project = {
        "code": PROJECT,
        "name": "呼伦贝尔市政工程",
        "tenderer_name": "某市城投公司",
        "tenderer_credit_code": TENDERER_CODE,
        "supervising_body": BODY,
    }
    await hall.request("POST", "/api/projects", P(hall, "host"), project)
    lot = {"project_code": PROJECT, "code": "01", "name": "01 标段"}
    await hall.request("POST", "/api/lots", P(hall, "centre"), lot)
    return {
        "ours": await supervisor(hall, "sup_ours", "住建监管赵", "S101", BODY),
        "industry": await supervisor(
            hall, "sup_jt", "交通监管钱", "S102", {"region": "150700", "industry": "交通"}
        ),
        "region": await supervisor(
            hall, "sup_bt", "包头住建孙", "S103", {"region": "150200", "industry": "住建"}
        ),
        "centre_wide": P(hall, "supervisor"),
    }


@contextmanager
def on_our_lot(hall: Hall, sup: Party) -> Iterator[None]:
    """The shared steps (tests/support) run on the remit's lot, its bids name it, and ``sup``
    is the supervisor."""
    create, seal, usual = hall.create_session, hall.seal, hall.parties["supervisor"]

    async def on_lot(**overrides: Any) -> str:
        return await create(**{"lot_id": LOT, **overrides})

    def sealed_for_lot(tmp: Path, bidder: Party, **kw: Any) -> Path:
        return seal(tmp, bidder, **{"project_code": PROJECT, **kw})

    hall.create_session = on_lot  # type: ignore[method-assign]
    hall.seal = sealed_for_lot  # type: ignore[method-assign]
    hall.parties["supervisor"] = sup
    try:
        yield
    finally:
        hall.create_session = create  # type: ignore[method-assign]
        hall.seal = seal  # type: ignore[method-assign]
        hall.parties["supervisor"] = usual


async def evaluation_on_our_lot(hall: Hall, tmp: Path, sup: Party) -> Eval:
    """A new evaluation (``tests.support.evaluation.new_evaluation``) of the remit's lot."""
    with on_our_lot(hall, sup):
        return await new_evaluation(hall, tmp)


async def listed(hall: Hall, who: Party) -> tuple[set[str], set[str]]:
    sessions = await hall.request("GET", "/api/sessions", who)
    wall = await hall.request("GET", "/api/supervision/sessions", who)
    return (
        {s["session_id"] for s in sessions["sessions"]},
        {s["session_id"] for s in wall["sessions"]},
    )


async def test_a_supervisor_sees_and_acts_only_on_the_sessions_of_its_remit(
    hall: Hall, tmp_path: Path
) -> None:
    sups = await remit_world(hall)
    ours = await hall.create_session(lot_id=LOT, title="呼伦贝尔 01 标段")
    usual = await hall.create_session()  # the hall's project names no supervising body
    assert await listed(hall, sups["ours"]) == ({ours}, {ours})
    assert await listed(hall, sups["centre_wide"]) == ({usual}, {usual})
    for key in ("industry", "region"):
        assert await listed(hall, sups[key]) == (set(), set())
    # the host and the centre still list every session
    hosts = await hall.request("GET", "/api/sessions", P(hall, "host"))
    assert {ours, usual} <= {s["session_id"] for s in hosts["sessions"]}
    reason = {"reason": "网络故障 / network fault"}
    for who, sid in (
        (sups["industry"], ours),
        (sups["region"], ours),
        (sups["centre_wide"], ours),
        (sups["ours"], usual),
    ):
        for method, path, body in (
            ("GET", f"/api/sessions/{sid}", None),
            ("GET", f"/api/sessions/{sid}/events", None),
            ("GET", f"/api/sessions/{sid}/record", None),
            ("POST", f"/api/sessions/{sid}/record/sign", {"signature": "AAAA"}),
            ("GET", f"/api/supervision/sessions/{sid}/archive", None),
            ("POST", f"/api/sessions/{sid}/suspend", reason),
            ("POST", f"/api/sessions/{sid}/resume", reason),
            (
                "POST",
                f"/api/sessions/{sid}/backup-requests/r1/approve",
                {"signature": "AAAA", "share": "{}"},
            ),
        ):
            err = await hall.refused(403, "OUTSIDE_REMIT", method, path, who, body)
            assert "监管" in err.body["zh"] and "remit" in err.body["en"]
    # its own supervisor reads it and may suspend and resume it (rule 13)
    view = await hall.view(ours, sups["ours"])
    assert view["session_id"] == ours
    await hall.request("POST", f"/api/sessions/{ours}/suspend", sups["ours"], reason)
    await hall.request("POST", f"/api/sessions/{ours}/resume", sups["ours"], reason)
    types = [e["type"] for e in await hall.events(ours, sups["ours"]) if e["type"] != "checkpoint"]
    assert types[-2:] == ["session_suspended", "session_resumed"]


async def test_a_supervisor_outside_the_remit_gets_no_live_feed_and_no_page_link(
    hall: Hall,
) -> None:
    sups = await remit_world(hall)
    ours = await hall.create_session(lot_id=LOT, title="呼伦贝尔 01 标段")
    link = {"session_id": ours, "page": "supervisor"}
    for key in ("industry", "region", "centre_wide"):
        who = sups[key]
        await hall.refused(403, "OUTSIDE_REMIT", "POST", "/api/auth/web-link", who, link)
        await hall.login(who)
        listener = Listener()
        hall.listeners.append(listener)
        with pytest.raises(ConnectionRefused) as err:
            assert who.token is not None
            await listener.connect(hall.url, who.token, ours)
        assert err.value.code == "OUTSIDE_REMIT"
        assert "监管" in err.value.data["zh"] and "remit" in err.value.data["en"]
    # its own supervisor follows the hall and gets a link
    own = sups["ours"]
    assert (await hall.request("POST", "/api/auth/web-link", own, link))["url"]
    assert own.token is not None
    listener = Listener()
    hall.listeners.append(listener)
    await listener.connect(hall.url, own.token, ours)
    assert listener.client.connected


async def test_rule_06_the_opening_needs_a_supervisor_of_the_projects_remit(
    hall: Hall, tmp_path: Path
) -> None:
    sups = await remit_world(hall)
    sid, _envs = await with_bids(hall, tmp_path, lot_id=LOT)
    await hall.at(hall.t0 + HOUR)
    host = P(hall, "host")
    # supervisors of other remits cannot even join the hall (their presence would not count)
    for key in ("centre_wide", "industry", "region"):
        with pytest.raises(ConnectionRefused, match="OUTSIDE_REMIT"):
            await hall.listen(sid, sups[key])
    await hall.refused(409, "SUPERVISOR_ABSENT", "POST", f"/api/sessions/{sid}/start", host)
    await hall.listen(sid, sups["ours"])
    await hall.request("POST", f"/api/sessions/{sid}/start", host)
    assert (await hall.view(sid, host))["status"] == "opening"


async def test_eval_rule_04_evaluation_views_members_and_warnings_are_for_its_remit_only(
    hall: Hall, tmp_path: Path
) -> None:
    sups = await remit_world(hall)
    with on_our_lot(hall, sups["ours"]):
        e, _sup = await drawn(hall, tmp_path)  # the draw needed a supervisor of the remit
    view = await e.view(sups["ours"])
    assert len(view["members"]) == 5  # its supervisor sees who was drawn
    for key in ("centre_wide", "industry", "region"):
        who = sups[key]
        for method, path, body in (
            ("GET", e.path(), None),
            ("GET", e.path("events"), None),
            ("GET", e.path("report"), None),
            ("GET", e.path("forms"), None),
            ("GET", e.path("sheets", "qualification"), None),
            ("POST", e.path("warnings"), {"text": "请注意评标纪律"}),
            ("POST", e.path("draw", "entropy"), {"value": "ef" * 32}),
            ("GET", f"/api/supervision/sessions/{e.sid}/archive", None),
        ):
            err = await hall.refused(403, "OUTSIDE_REMIT", method, path, who, body)
            assert not any(m["id"] in str(err.body) for m in view["members"])
        assert e.sid not in (await listed(hall, who))[1]
    assert e.sid in (await listed(hall, sups["ours"]))[1]
    await e.post(sups["ours"], "warnings", body={"text": "请注意评标纪律"})


async def test_eval_rule_04_draw_and_start_need_a_supervisor_of_the_projects_remit(
    hall: Hall, tmp_path: Path
) -> None:
    sups = await remit_world(hall)
    host = P(hall, "host")
    with on_our_lot(hall, sups["ours"]):
        e, sup = await drawn(hall, tmp_path)
        committee = await e.committee()
        for mid, m in sorted(committee.items()):
            await e.sign_in(mid, m["room_id"])
    await hall.hang_up(sup)
    for key in ("centre_wide", "industry", "region"):
        with pytest.raises(ConnectionRefused, match="OUTSIDE_REMIT"):
            await hall.listen(e.sid, sups[key])
    await hall.refused(409, "SUPERVISOR_ABSENT", "POST", e.path("start"), host)
    await hall.listen(e.sid, sups["ours"])
    await e.post(host, "start")
    assert (await e.view(host))["status"] == "evaluating"


async def test_eval_rule_01_the_draw_needs_a_supervisor_of_the_projects_remit(
    hall: Hall, tmp_path: Path
) -> None:
    sups = await remit_world(hall)
    host = P(hall, "host")
    e = await evaluation_on_our_lot(hall, tmp_path, sups["ours"])
    ours = await hall.listen(e.sid, sups["ours"])
    await e.post(host, "draw", "begin")
    await e.post(sups["ours"], "draw", "entropy", body={"value": "ab" * 32})
    await e.post(host, "draw", "entropy", body={"value": "cd" * 32})
    await hall.hang_up(ours)
    with pytest.raises(ConnectionRefused, match="OUTSIDE_REMIT"):
        await hall.listen(e.sid, sups["centre_wide"])
    await hall.refused(409, "SUPERVISOR_ABSENT", "POST", e.path("draw"), host)
    await hall.listen(e.sid, sups["ours"])
    await e.post(host, "draw")
    assert (await e.view(host))["status"] == "convening"


async def test_a_remit_is_for_supervisors_and_names_a_region_and_an_industry(
    hall: Hall,
) -> None:
    centre = P(hall, "centre")
    party = person(hall.pki.root_a, "主持人甲", "host", "H101", [])
    base = {"name": "主持人甲", "cert_pem": cert_pem(party.cert)}
    for body in (
        {**base, "role": "host", "remit": BODY},
        {**base, "role": "supervisor", "remit": {"region": "1507", "industry": "住建"}},
        {**base, "role": "supervisor", "remit": {"region": "150700", "industry": "住\u200b建"}},
        {**base, "role": "supervisor", "remit": {"region": "150700"}},
    ):
        await hall.refused(422, "INVALID_INPUT", "POST", "/api/accounts", centre, body)
    project = {
        "code": "X-1",
        "name": "项目",
        "tenderer_name": "某公司",
        "tenderer_credit_code": TENDERER_CODE,
        "supervising_body": {"region": "15070A", "industry": "住建"},
    }
    await hall.refused(422, "INVALID_INPUT", "POST", "/api/projects", centre, project)


def test_remit_rule_is_equality_of_region_and_industry() -> None:
    ours, body = ("150700", "住建"), ("150700", "住建")
    assert supervises(ours, body) and supervises(None, None)
    for other in (("150700", "交通"), ("150200", "住建"), ("150000", "住建"), None):
        assert not supervises(other, body)  # nothing is inherited up the administrative tree
    assert not supervises(ours, None)  # a body-less project is the centre-wide supervisors'
    present = {"S101": "supervisor", "H001": "host", "S001": "supervisor"}
    assert remit_present(present, ["S101"]) and not remit_present(present, ["S102"])
    assert not remit_present({"H001": "host"}, ["H001"])  # a host is no supervisor
    assert remit_present(present, None)  # no facts gathered (the machines' pure tests)
