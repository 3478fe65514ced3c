"""``bidbridge room``: the evaluation room's agent from a terminal, as a room operator runs it.

Every command runs as a child process of the ``bidbridge`` console script against a real server in
this process (SQLite), started with ``asyncio.create_subprocess_exec`` so that the server keeps
serving while the child talks to it. The room device and the experts use the keys and
certificates the evaluation harness registered, written out as PEM files.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Result, bidbridge, write_party
from tests.support.evaluation import Eval, drawn
from tests.support.hall import Hall, P
from tests.support.pki import CODE_A, CODE_B, CODE_C

CHINESE = re.compile(r"[\u4e00-\u9fff]")
ERROR_LINE = re.compile(r"^ERROR ([A-Z0-9_]+): (.+?) / (.+)$", re.MULTILINE)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def store_url() -> None:
    """The ``hall`` fixture on the server's default store: these tests run once, not once per
    database."""
    return None


class Desk:
    """One drawn expert at their room: the files a room operator has at hand."""

    def __init__(self, e: Eval, expert_id: str, room_id: str, folder: Path) -> None:
        self.e, self.expert_id, self.room_id = e, expert_id, room_id
        self.room_key, self.room_cert = write_party(folder, "room", e.rooms[room_id])
        self.expert_key, self.expert_cert = write_party(folder, "expert", e.expert(expert_id))
        self.saved = folder / "exp.json"

    def room_args(self) -> list[str | Path]:
        return [
            "--server", self.e.hall.url, "--session", self.e.sid,
            "--key", self.room_key, "--cert", self.room_cert,
        ]  # fmt: skip

    def expert_key_args(self) -> list[str | Path]:
        return ["--expert-key", self.expert_key, "--expert-cert", self.expert_cert]

    async def sign_in(self) -> Result:
        return await bidbridge(
            "room", "sign-in", *self.room_args(), "--expert-id", self.expert_id,
            *self.expert_key_args(), "--save", self.saved,
        )  # fmt: skip

    async def expert(self, action: str, *rest: str | Path) -> Result:
        return await bidbridge("room", "expert", action, "--expert-session", self.saved, *rest)


async def first_desk(e: Eval, folder: Path) -> tuple[Desk, dict[str, dict[str, Any]]]:
    committee = await e.committee()
    mid = sorted(committee)[0]
    return Desk(e, mid, committee[mid]["room_id"], folder), committee


def qualification_sheet(expert_id: str) -> dict[str, Any]:
    """Every bidder passes Q1 (the sheet format of the evaluation API tests)."""
    return {
        "expert": expert_id,
        "stage": "qualification",
        "verdicts": [
            {"bidder": b, "item": "Q1", "passed": True, "reason": ""}
            for b in (CODE_A, CODE_B, CODE_C)
        ],
    }


# --- 1. help -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["room", "--help"],
        ["room", "run", "--help"],
        ["room", "sign-in", "--help"],
        ["room", "expert", "sheet", "--help"],
    ],
    ids=["room", "run", "sign-in", "expert-sheet"],
)
async def test_room_help_is_bilingual(argv: list[str]) -> None:
    r = await bidbridge(*argv)
    assert r.code == 0, r
    assert r.out.startswith("usage: bidbridge " + " ".join(argv[:-1])), r
    assert CHINESE.search(r.out), r
    words = set(re.findall(r"[A-Za-z]{4,}", r.out))
    assert len(words - {"usage", "bidbridge", "help", "options"}) >= 5, r
    assert r.err == "", r
    if argv == ["room", "--help"]:
        for command in ("run", "sign-in", "expert"):
            assert command in r.out, r
    if argv[1] == "run":
        assert "--source" in r.out and "--seconds" in r.out and "synthetic" in r.out, r
    if argv[1] == "sign-in":
        for option in ("--expert-id", "--expert-key", "--expert-cert", "--save", "--key"):
            assert option in r.out, r
    if argv[1] == "expert":
        assert "--stage" in r.out and "--expert-session" in r.out and "--expert-key" in r.out, r


# --- 2. and 3. sign-in and view ------------------------------------------------------------------


async def test_room_sign_in_saves_the_expert_session_and_view_prints_the_evaluation(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    desk, _committee = await first_desk(e, tmp_path / "desk")
    assert (await e.members())[desk.expert_id]["status"] == "drawn"

    r = await desk.sign_in()
    assert r.code == 0, r
    assert desk.expert_id in r.out and "signed in" in r.out and CHINESE.search(r.out), r
    saved = json.loads(desk.saved.read_text(encoding="utf-8"))
    assert isinstance(saved["token"], str) and len(saved["token"]) > 20, saved
    assert saved["expert_id"] == desk.expert_id and saved["session"] == e.sid, saved
    assert saved["server"] == hall.url, saved
    assert desk.saved.stat().st_mode & 0o077 == 0  # the session is a secret: owner only

    members = await e.members()
    assert members[desk.expert_id]["status"] == "signed_in", members[desk.expert_id]
    signed = [x for x in await e.events(P(hall, "supervisor")) if x["type"] == "member_signed_in"]
    assert any(desk.expert_id in json.dumps(x["payload"]) for x in signed), signed

    r = await desk.expert("view")
    assert r.code == 0, r
    shown = json.loads(r.out)
    view = shown.get("view", shown)
    assert view["status"] == "convening", view
    assert view["committee_size"] == 5, view
    assert desk.expert_id in [m["id"] for m in view["signed_in"]], view


# --- 4. and 5. vote, sheet, a refusal -----------------------------------------------------------


async def test_room_expert_votes_submits_a_signed_sheet_and_a_refusal_is_bilingual(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    desk, committee = await first_desk(e, tmp_path / "desk")
    ids = sorted(committee)
    r = await desk.sign_in()
    assert r.code == 0, r
    for mid in ids:
        if mid != desk.expert_id:
            await e.sign_in(mid, committee[mid]["room_id"])
    host = P(hall, "host")
    await e.post(host, "start")
    assert (await e.view(host))["stage"] == "chair"

    chair = desk.expert_id
    r = await desk.expert("vote", chair)
    assert r.code == 0, r
    json.loads(r.out)
    votes = [x for x in await e.events(P(hall, "supervisor")) if x["type"] == "chair_vote"]
    assert len(votes) == 1 and desk.expert_id in json.dumps(votes[0]["payload"]), votes
    for mid in [m for m in ids if m != desk.expert_id][:2]:  # a majority: 3 of 5
        await e.post(e.as_expert(mid), "vote", body={"candidate": chair})
    view = await e.view(host)
    assert view["chair"] == chair and view["stage"] == "qualification", view

    sheet = tmp_path / "sheet.json"
    content = qualification_sheet(desk.expert_id)
    sheet.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    argv = ["--stage", "qualification", *desk.expert_key_args(), sheet]
    r = await desk.expert("sheet", *argv)
    assert r.code == 0, r
    json.loads(r.out)
    view = await e.view(host)
    assert view["submitted"]["qualification"] == [desk.expert_id], view
    events = await e.events(P(hall, "supervisor"))
    submitted = [x["payload"] for x in events if x["type"] == "sheet_submitted"]
    assert [(s["expert_id"], s["stage"]) for s in submitted] == [(desk.expert_id, "qualification")]

    # the same sheet again: refused, on stderr, in both languages, with a non-zero exit
    r = await desk.expert("sheet", *argv)
    assert r.code != 0, r
    assert r.out == "", r
    m = ERROR_LINE.search(r.err)
    assert m is not None, r
    assert m.group(1) == "ALREADY_DONE", r
    assert CHINESE.search(m.group(2)) and re.search(r"[a-z]{4}", m.group(3)), r
    assert "Traceback" not in r.err, r
    after = await e.events(P(hall, "supervisor"))
    assert len([x for x in after if x["type"] == "sheet_submitted"]) == 1


# --- 6. the room's live link ---------------------------------------------------------------------


async def test_room_run_links_audio_and_video_and_is_recorded(hall: Hall, tmp_path: Path) -> None:
    e, _sup = await drawn(hall, tmp_path)
    committee = await e.committee()
    room_id = sorted({m["room_id"] for m in committee.values()})[0]
    room_key, room_cert = write_party(tmp_path / "room", "room", e.rooms[room_id])
    supervisor = P(hall, "supervisor")
    before = await e.view(supervisor)
    assert before["rooms_up"] == 0, before

    argv = [
        "room", "run", "--server", hall.url, "--session", e.sid, "--key", room_key,
        "--cert", room_cert, "--source", "synthetic", "--label", room_id, "--seconds", "8",
    ]  # fmt: skip
    seen_up: list[int] = []
    run = asyncio.create_task(bidbridge(*argv))
    while not run.done():
        seen_up.append((await e.view(supervisor))["rooms_up"])
        await asyncio.sleep(0.25)
    r = await run
    assert r.code == 0, r
    assert "audio and video linked" in r.out and "音视频已连接" in r.out, r
    assert "logged in" in r.out, r
    assert "host feed frames" in r.out, r

    events = await e.events(supervisor)
    links = [x["payload"] for x in events if x["type"] == "room_link"]
    assert max(seen_up) == before["rooms_up"] + 1 or {"room_id": room_id, "up": True} in links, (
        seen_up,
        links,
    )
    assert {"room_id": room_id, "up": True} in links, links

    await hall.hub.media.close()  # flushes the last partial segment into the record
    events = await e.events(supervisor)
    segments = [x["payload"] for x in events if x["type"] == "media_segment"]
    mine = [s for s in segments if s["room_id"] == room_id]
    assert mine, segments
    assert all(s["error"] is None for s in mine), mine
    for s in mine:
        assert hall.hub.blobs.path(s["sha256"]).stat().st_size == s["size"]
