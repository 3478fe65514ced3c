"""A real evaluation for tests: a closed opening, a rooms network, a pool, experts with keys."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from crypto import ca
from crypto.keys import SoftwareKey
from schemas import evaluation as EV
from schemas.canonical import canonical_json
from server.identity import cert_pem
from tests.support.hall import Hall, P, Party, person
from tests.support.opening import announcing
from tests.support.pki import CODE_A, CODE_B, CODE_C
from tests.support.rules import METHOD, REVIEW_ITEMS

LEAD_CITY, SZ_CITY, WX_CITY = "320100", "320500", "320200"
SITES = {  # site -> (city, rooms)
    "NJ": (LEAD_CITY, ["NJ-01"]),
    "SZ": (SZ_CITY, ["SZ-01"]),
    "WX": (WX_CITY, ["WX-01"]),
}
THREE_ROOMS = {  # a draw that links the lead room and both secondary rooms
    "lead_site_id": "NJ",
    "secondary_sites": 2,
    "categories": [{"category": "A08.01", "count": 5, "spares": 2}],
    "min_outside_lead": 2,
}


def pool_csv(avoid_code: str) -> bytes:
    """36 experts in three cities; two lead-city experts work for a bidder (avoidance)."""
    rows = ["name,id,categories,city,employer,employer_credit_code,status,contact"]
    n = 0
    for city, count in ((LEAD_CITY, 14), (SZ_CITY, 11), (WX_CITY, 11)):
        for i in range(count):
            n += 1
            employer_code = avoid_code if (city == LEAD_CITY and i < 2) else ""
            status = "suspended" if i == count - 1 else "active"
            rows.append(
                f"专家{n:03d},E{n:03d},A08.01.{1 + i % 3:02d},{city},某设计院{n},"
                f"{employer_code},{status},1390000{n:04d}"
            )
    return ("\n".join(rows) + "\n").encode("utf-8")


@dataclass
class Eval:
    hall: Hall
    sid: str
    opening: str
    rooms: dict[str, Party]
    experts: dict[str, Party] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def path(self, *rest: str) -> str:
        return f"/api/evaluations/{quote(self.sid, safe='')}" + "".join(
            "/" + quote(r, safe="") for r in rest
        )

    async def post(self, who: Party, *rest: str, body: Any = None) -> Any:
        return await self.hall.request("POST", self.path(*rest), who, body)

    async def view(self, who: Party) -> dict[str, Any]:
        return dict((await self.hall.request("GET", self.path(), who))["view"])

    async def events(self, who: Party) -> list[dict[str, Any]]:
        return list((await self.hall.request("GET", self.path("events"), who))["events"])

    def expert(self, expert_id: str) -> Party:
        if expert_id not in self.experts:
            self.experts[expert_id] = person(
                self.hall.pki.root_b, f"专家{expert_id}", "expert", expert_id, []
            )
        return self.experts[expert_id]

    def as_expert(self, expert_id: str) -> Party:
        """The expert's party with the token the room got at sign-in."""
        p = self.expert(expert_id)
        p.token = self.tokens[expert_id]
        return p

    def nth_expert(self, committee: dict[str, Any], n: int) -> tuple[str, Party]:
        """The id of ``committee``'s ``n``-th member (by id), and that expert with the token the
        room got at sign-in."""
        mid = sorted(committee)[n]
        return mid, self.as_expert(mid)

    async def sign_in(self, expert_id: str, room_id: str) -> dict[str, Any]:
        hall = self.hall
        ch = await hall.request("POST", "/api/auth/challenge")
        doc = EV.sign_in_document(ch["server"], self.sid, room_id, expert_id, ch["nonce"])
        body = {
            "expert_id": expert_id,
            "nonce": ch["nonce"],
            "signature": hall.sign(self.expert(expert_id), doc),
        }
        out = dict(await self.post(self.rooms[room_id], "sign-in", body=body))
        self.tokens[expert_id] = out["token"]
        return out

    async def members(self) -> dict[str, dict[str, Any]]:
        view = await self.view(P(self.hall, "supervisor"))
        return {m["id"]: m for m in view["members"]}

    async def committee(self) -> dict[str, dict[str, Any]]:
        return {
            k: m
            for k, m in (await self.members()).items()
            if m["status"] in ("drawn", "signed_in", "no_key")
        }

    async def sheet(self, expert_id: str, stage: str, content: dict[str, Any]) -> Any:
        who = self.as_expert(expert_id)
        doc = EV.sheet_document(self.sid, expert_id, stage, content)
        body = {"stage": stage, "content": content, "signature": self.hall.sign(who, doc)}
        return await self.post(who, "sheets", body=body)


async def closed_opening(hall: Hall, tmp: Path) -> str:
    """An opening with three decrypted bids, confirmed by silence and closed."""
    sid, _sup = await announcing(hall, tmp)
    await hall.request("POST", f"/api/sessions/{sid}/confirmation", P(hall, "host"))
    view = await hall.view(sid, P(hall, "host"))
    closes = view["confirm_closes_at"]
    from schemas.time import parse_iso

    await hall.at(parse_iso(closes) + timedelta(seconds=1))
    rec = await hall.request("GET", f"/api/sessions/{sid}/record", P(hall, "host"))
    raw = canonical_json(rec["record"])
    for role in ("host", "supervisor"):
        who = P(hall, role)
        await hall.request(
            "POST", f"/api/sessions/{sid}/record/sign", who, {"signature": hall.sign(who, raw)}
        )
    assert (await hall.view(sid, P(hall, "host")))["status"] == "closed"
    return sid


async def network(hall: Hall) -> dict[str, Party]:
    """Sites, rooms with device certificates, and the pool, registered by the centre."""
    centre = P(hall, "centre")
    rooms: dict[str, Party] = {}
    for site, (city, room_ids) in SITES.items():
        await hall.request("POST", "/api/sites", centre, {"id": site, "name": site, "city": city})
        for room_id in room_ids:
            issued = ca.issue_room_device(
                hall.pki.root_a, room_id=room_id, site=site, key_type="ec-p256"
            )
            assert issued.key is not None
            party = Party(room_id, SoftwareKey(issued.key), issued.certificate, [])
            body = {"id": room_id, "name": room_id, "cert_pem": cert_pem(issued.certificate)}
            await hall.request("POST", f"/api/sites/{site}/rooms", centre, body)
            rooms[room_id] = party
    out = await hall.request(
        "POST",
        "/api/experts/import?format=csv",
        centre,
        data=pool_csv(CODE_A),
        headers={"Content-Type": "text/csv"},
    )
    assert out["imported"] == 36
    return rooms


def evaluation_body(opening: str, hall: Hall, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "opening_session_id": opening,
        "title": "市政道路改造工程 01 标段 评标",
        "convene_at": (hall.clock.now() + timedelta(hours=1)).isoformat(),
        "grace_minutes": 30,
        "method": METHOD,
        "review_items": REVIEW_ITEMS,
        "draw": {
            "lead_site_id": "NJ",
            "secondary_sites": 1,
            "categories": [{"category": "A08.01", "count": 5, "spares": 3}],
            "min_outside_lead": 2,
        },
        "rescore_threshold_points": 1500,
    }
    body.update(overrides)
    return body


async def new_evaluation(hall: Hall, tmp: Path, **overrides: Any) -> Eval:
    opening = await closed_opening(hall, tmp)
    rooms = await network(hall)
    out = await hall.request(
        "POST", "/api/evaluations", P(hall, "host"), evaluation_body(opening, hall, **overrides)
    )
    return Eval(hall, out["session_id"], opening, rooms)


async def drawn(hall: Hall, tmp: Path, **overrides: Any) -> tuple[Eval, Any]:
    """An evaluation whose committee is drawn, with the supervisor listening."""
    e = await new_evaluation(hall, tmp, **overrides)
    sup = await hall.listen(e.sid, P(hall, "supervisor"))
    host, supervisor = P(hall, "host"), P(hall, "supervisor")
    await e.post(host, "draw", "begin")
    await e.post(supervisor, "draw", "entropy", body={"value": "ab" * 32})
    await e.post(host, "draw", "entropy", body={"value": "cd" * 32})
    await e.post(host, "draw")
    return e, sup


async def drawn_with_member(
    hall: Hall, tmp: Path, n: int = 0
) -> tuple[Eval, dict[str, dict[str, Any]], str]:
    """A drawn evaluation (see ``drawn``), its committee, and the id of its ``n``-th member."""
    e, _sup = await drawn(hall, tmp)
    committee = await e.committee()
    return e, committee, sorted(committee)[n]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def scores(
    expert: str, t1: int = 3000, c1: int = 2500, bidders: Sequence[str] = (CODE_A, CODE_B, CODE_C)
) -> dict[str, Any]:
    """A detailed-stage score sheet: ``t1`` and ``c1`` points (x100) for each bidder."""
    return {
        "expert": expert,
        "stage": "detailed",
        "scores": [
            {"bidder": b, "criterion": c, "points_x100": v}
            for b in bidders
            for c, v in (("T1", t1), ("C1", c1))
        ],
    }


def review(
    expert: str, stage: str, item: str, fail: dict[str, str] | None = None
) -> dict[str, Any]:
    fail = fail or {}
    return {
        "expert": expert,
        "stage": stage,
        "verdicts": [
            {"bidder": b, "item": item, "passed": b not in fail, "reason": fail.get(b, "")}
            for b in (CODE_A, CODE_B, CODE_C)
        ],
    }


async def past_review(e: Eval, ids: list[str]) -> Party:
    """Started; ``ids[0]`` elected chair by the first three; every member of ``ids`` passes
    every bidder in the qualification and preliminary stages, each closed by the chair.
    Returns the chair."""
    await e.post(P(e.hall, "host"), "start")
    for mid in ids[:3]:
        await e.post(e.as_expert(mid), "vote", body={"candidate": ids[0]})
    chair = e.as_expert(ids[0])
    for stage, item in (("qualification", "Q1"), ("preliminary", "P1")):
        for mid in ids:
            await e.sheet(mid, stage, review(mid, stage, item))
        await e.post(chair, "close-stage")
    return chair
