"""An evaluation's committee at its desks: signed in, through qualification, up to signing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from room_client.agent import Credentials
from room_client.evaluation import EvalClient, ExpertDesk
from tests.support.cli import write_party
from tests.support.evaluation import Eval, drawn, scores
from tests.support.hall import Hall, P
from tests.support.pki import CODE_A, CODE_B, CODE_C

BIDS = (CODE_A, CODE_B, CODE_C)


async def signed_in(hall: Hall, tmp: Path) -> tuple[Eval, dict[str, dict[str, Any]]]:
    """A drawn evaluation whose whole committee signed in at their rooms (not started)."""
    e, _sup = await drawn(hall, tmp)
    committee = await e.committee()
    for mid, m in sorted(committee.items()):
        await e.sign_in(mid, m["room_id"])
    return e, committee


async def qualification(hall: Hall, tmp: Path) -> tuple[Eval, dict[str, dict[str, Any]]]:
    """Started, the chair (the first member) elected by three votes: qualification is open."""
    e, committee = await signed_in(hall, tmp)
    await e.post(P(hall, "host"), "start")
    ids = sorted(committee)
    for mid in ids[:3]:
        await e.post(e.as_expert(mid), "vote", body={"candidate": ids[0]})
    assert (await e.view(P(hall, "host")))["stage"] == "qualification"
    return e, committee


def review(expert_id: str, stage: str = "qualification", item: str = "Q1") -> dict[str, Any]:
    return {
        "expert": expert_id,
        "stage": stage,
        "verdicts": [{"bidder": b, "item": item, "passed": True, "reason": ""} for b in BIDS],
    }


async def room_desk(e: Eval, expert_id: str, room_id: str, folder: Path) -> ExpertDesk:
    """The room device's desk for ``expert_id``: the real room_client signing path, with the
    room's and the expert's keys loaded from files as the room operator has them."""
    room_key, room_cert = write_party(folder, "room", e.rooms[room_id])
    expert_key, expert_cert = write_party(folder, "expert", e.expert(expert_id))
    room = EvalClient(e.hall.url, Credentials.load(key=room_key, cert=room_cert))
    expert = Credentials.load(key=expert_key, cert=expert_cert)
    client = await room.sign_in_expert(e.sid, expert_id, expert)

    async def confirm(draft: dict[str, Any]) -> bool:
        return True

    return ExpertDesk(client, e.sid, confirm=confirm)


async def close_desk(desk: ExpertDesk) -> None:
    await desk.expert.close()
    await desk.expert.room.close()


async def detailed(hall: Hall, tmp: Path) -> tuple[Eval, dict[str, dict[str, Any]]]:
    """Qualification and preliminary review passed by everyone: the detailed stage is open."""
    e, committee = await qualification(hall, tmp)
    ids = sorted(committee)
    chair = e.as_expert(ids[0])
    for stage, item in (("qualification", "Q1"), ("preliminary", "P1")):
        for mid in ids:
            await e.sheet(mid, stage, review(mid, stage, item))
        await e.post(chair, "close-stage")
    return e, committee


async def signing(hall: Hall, tmp: Path) -> tuple[Eval, dict[str, dict[str, Any]]]:
    """Every stage passed by everyone, the ranking computed: the report waits for signatures."""
    e, committee = await detailed(hall, tmp)
    ids = sorted(committee)
    chair = e.as_expert(ids[0])
    for mid in ids:
        await e.sheet(mid, "detailed", scores(mid))
    await e.post(chair, "close-stage")
    await e.post(chair, "summarize")
    assert (await e.view(P(hall, "host")))["status"] == "signing"
    return e, committee
