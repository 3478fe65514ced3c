"""The expert desk and the host console's evaluation view through Chromium.

An evaluation is started through the harness; the expert desk opens through a one-time link made
with the expert's token; a bid's documents are viewed in the page; a sheet filled in the page is
signed by the room device's agent (room_client's ExpertDesk, the code behind ``bidbridge room
desk``, with the expert's key loaded from files) and shows as submitted from the events; the
others' sheets show only after one's own; a reload restores the state. Screenshots go to
test-artifacts/pages/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.support.desk import close_desk, detailed, qualification, review, room_desk, signing
from tests.support.evaluation import Eval
from tests.support.hall import Hall, P
from tests.support.pages import WALL, Browsing, reloaded_same, shot, tid
from tests.support.pki import CODE_A, CODE_B, CODE_C


@pytest.fixture
def store_url() -> None:
    """The ``hall`` fixture on the server's default store: these tests run once, not once per
    database."""
    return None


BIDS = (CODE_A, CODE_B, CODE_C)


async def unlabelled(page: Page) -> list[str]:
    found: list[str] = await page.evaluate(
        """() => [...document.querySelectorAll('button, input, textarea, select')]
            .filter((el) => !el.closest('[hidden]'))
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !el.textContent.trim())
            .map((el) => el.outerHTML)"""
    )
    return found


async def open_desk(
    browsing: Browsing, e: Eval, committee: dict[str, Any], n: int
) -> tuple[str, Page]:
    """The expert desk page of ``committee``'s ``n``-th member (by id), and that member's id."""
    mid, member = e.nth_expert(committee, n)
    return mid, await browsing.open(e.hall, e.sid, member, "expert")


@contextlib.asynccontextmanager
async def desk_running(e: Eval, expert_id: str, room_id: str, folder: Path) -> Any:
    """The room device's agent following the session and signing the desk's drafts."""
    desk = await room_desk(e, expert_id, room_id, folder)
    stop = asyncio.Event()
    task = asyncio.create_task(desk.run(stop))
    try:
        yield desk
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await close_desk(desk)


async def test_expert_desk_submits_a_sheet_signed_at_the_room_device(
    hall: Hall, browsing: Browsing, tmp_path: Path
) -> None:
    e, committee = await qualification(hall, tmp_path)
    ids = sorted(committee)
    mid, other = ids[1], ids[2]
    seat = committee[mid]["room_id"]
    page = await browsing.open(hall, e.sid, e.as_expert(mid), "expert")
    await expect(page.locator("h1")).to_have_text("专家评标（评标专家）")
    await expect(tid(page, "status")).to_have_attribute("data-status", "evaluating")
    await expect(tid(page, "status")).to_have_attribute("data-stage", "qualification")
    await expect(tid(page, "me")).to_contain_text(mid)

    # The bids' documents, viewed in the page.
    for code in BIDS:
        await expect(tid(page, f"bid-{code}")).to_be_visible()
    a_docs = tid(page, f"bid-{CODE_A}")
    await a_docs.get_by_role("button", name=re.compile("summary.json")).click()
    await expect(tid(page, "doc-viewer")).to_have_attribute("data-state", "shown")
    await expect(tid(page, "doc-text")).to_contain_text(f'"bidder_credit_code": "{CODE_A}"')
    await a_docs.get_by_role("button", name=re.compile("商务标.pdf")).click()
    await expect(tid(page, "doc-viewer")).to_have_attribute("data-type", "application/pdf")
    await expect(tid(page, "doc-object")).to_have_attribute("data", re.compile(r"^blob:"))
    await shot(page, "20-expert-documents")

    # Another member's sheet is in, but not visible before one's own.
    await e.sheet(other, "qualification", review(other))
    await expect(tid(page, "others-hidden")).to_be_visible()
    assert other not in await tid(page, "others").inner_text()

    # The form mirrors the server's checks: a fail without a reason is caught in the page.
    for code in BIDS:
        await tid(page, f"verdict-{code}-Q1").select_option("pass")
    await tid(page, f"verdict-{CODE_C}-Q1").select_option("fail")
    await tid(page, "sheet-submit").click()
    await expect(tid(page, "form-error")).to_contain_text("判为不合格的项须写明理由")
    await expect(tid(page, f"reason-{CODE_C}-Q1")).to_be_focused()
    reason = "资质证书已过期"
    await tid(page, f"reason-{CODE_C}-Q1").fill(reason)

    async with desk_running(e, mid, seat, tmp_path / "desk") as desk:
        # Submitted from the page: the room device confirms and signs with the expert's key.
        await tid(page, "sheet-submit").click()
        await expect(tid(page, "sheet-state")).to_have_attribute(
            "data-state", re.compile("waiting|submitted")
        )
        await expect(tid(page, "sheet-state")).to_have_attribute("data-state", "submitted")
        assert [d["kind"] for d in desk.signed] == ["sheet"]
    await expect(tid(page, "submitted")).to_contain_text("已签名提交")
    own = (await hall.request("GET", e.path("sheets", "qualification"), e.as_expert(mid)))["own"]
    failed = [v for v in own["content"]["verdicts"] if not v["passed"]]
    assert failed == [{"bidder": CODE_C, "item": "Q1", "passed": False, "reason": reason}]
    await expect(tid(page, "own-sha")).to_have_text(own["sha256"])
    # Now the other member's sheet shows.
    await expect(tid(page, f"other-{other}")).to_be_visible()
    await shot(page, "21-expert-sheet-submitted")
    await reloaded_same(page, ["status", "stages", "sheet-state", "others"])
    # the form shows the sheet as signed (read-only), from the server after the reload
    await expect(tid(page, f"verdict-{CODE_C}-Q1")).to_have_value("fail")
    await expect(tid(page, f"reason-{CODE_C}-Q1")).to_have_value(reason)
    await expect(tid(page, f"reason-{CODE_C}-Q1")).to_be_disabled()
    await expect(tid(page, "doc-viewer")).to_contain_text("选择一个文件在此查看")
    assert await unlabelled(page) == []


async def test_expert_desk_waits_for_the_room_device_and_survives_a_reload(
    hall: Hall, browsing: Browsing, tmp_path: Path
) -> None:
    e, committee = await qualification(hall, tmp_path)
    mid, page = await open_desk(browsing, e, committee, 3)
    for code in BIDS:
        await tid(page, f"verdict-{code}-Q1").select_option("pass")
    await tid(page, "sheet-submit").click()
    await expect(tid(page, "sheet-state")).to_have_attribute("data-state", "waiting")
    await expect(tid(page, "waiting-room")).to_contain_text("等待评标室终端签名")
    await expect(tid(page, "cmd-desk")).to_contain_text(f"bidbridge room desk --session {e.sid}")
    await expect(tid(page, f"verdict-{CODE_A}-Q1")).to_be_disabled()
    await shot(page, "22-expert-waiting-for-the-room-device")
    await reloaded_same(page, ["status", "sheet-state", "others"])
    await expect(tid(page, f"verdict-{CODE_B}-Q1")).to_have_value("pass")
    await expect(tid(page, f"verdict-{CODE_B}-Q1")).to_be_disabled()
    first = await tid(page, "draft-sha").inner_text()
    # The expert changes their mind before the room device signed: the new draft replaces it.
    await tid(page, "sheet-edit").click()
    await tid(page, f"verdict-{CODE_B}-Q1").select_option("fail")
    await tid(page, f"reason-{CODE_B}-Q1").fill("投标函未盖章")
    await tid(page, "sheet-submit").click()
    await expect(tid(page, "sheet-state")).to_have_attribute("data-state", "waiting")
    await expect(tid(page, "draft-sha")).not_to_have_text(first)
    # The room device signs what the page drafted last (after the reload too).
    async with desk_running(e, mid, committee[mid]["room_id"], tmp_path / "desk") as desk:
        await expect(tid(page, "sheet-state")).to_have_attribute("data-state", "submitted")
        assert len(desk.signed) == 1
    own = (await hall.request("GET", e.path("sheets", "qualification"), e.as_expert(mid)))["own"]
    assert [v["bidder"] for v in own["content"]["verdicts"] if not v["passed"]] == [CODE_B]
    # English, by keyboard.
    await tid(page, "lang-switch").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("h1")).to_have_text("Expert desk")
    await expect(tid(page, "submitted")).to_contain_text("Signed and submitted")


async def test_expert_desk_signs_the_report_and_the_host_console_follows_the_evaluation(
    hall: Hall, browsing: Browsing, tmp_path: Path
) -> None:
    e, committee = await signing(hall, tmp_path)
    ids = sorted(committee)
    mid = ids[2]
    page = await browsing.open(hall, e.sid, e.as_expert(mid), "expert")
    await expect(tid(page, "status")).to_have_attribute("data-status", "signing")
    await expect(tid(page, "report-text")).to_contain_text("评标报告 / Evaluation report")
    # Disagreeing needs the reason; the room device signs the answer with it.
    await tid(page, "report-disagree").click()
    await expect(tid(page, "report-error")).to_contain_text("REASON_REQUIRED")
    reason = "价格分计算口径有误"
    await tid(page, "report-reason").fill(reason)
    async with desk_running(e, mid, committee[mid]["room_id"], tmp_path / "desk") as desk:
        await tid(page, "report-disagree").click()
        await expect(tid(page, "report-state")).to_have_attribute("data-state", "signed")
        assert [d["kind"] for d in desk.signed] == ["report"]
    await expect(tid(page, "report-signed")).to_contain_text(f"不同意：{reason}")
    await shot(page, "23-expert-report-signed")

    # The host console's evaluation view, at 1366x768 and on a wall screen.
    host = await browsing.open(hall, e.sid, P(hall, "host"), "host")
    await expect(tid(host, "ev-status")).to_have_attribute("data-status", "signing")
    await expect(tid(host, "ev-signed-in")).to_contain_text(f"{len(ids)}/{len(ids)}")
    await expect(tid(host, "ev-report-signed")).to_contain_text(f"1/{len(ids)}")
    await expect(tid(host, "ev-members")).to_contain_text(ids[0])
    await shot(host, "24-host-evaluation-signing")
    assert await unlabelled(host) == []
    wall = await browsing.open(hall, e.sid, P(hall, "host"), "host", viewport=WALL)
    await expect(tid(wall, "ev-status")).to_have_attribute("data-status", "signing")
    await shot(wall, "24-host-evaluation-wall")

    # Suspend and resume with a reason from the console; the desk shows it.
    await tid(host, "ev-suspend").click()
    await expect(tid(host, "ev-error")).to_contain_text("REASON_REQUIRED")
    await tid(host, "ev-reason").fill("副场视频中断 / a room's video is down")
    await tid(host, "ev-suspend").click()
    await expect(tid(host, "ev-status")).to_have_attribute("data-status", "suspended")
    await expect(tid(page, "banner")).to_contain_text("评标已暂停：副场视频中断")
    await shot(host, "25-host-evaluation-suspended")
    await reloaded_same(host, ["ev-status", "ev-stages", "ev-committee", "ev-rooms"])
    await tid(host, "ev-reason").fill("已恢复 / restored")
    await tid(host, "ev-resume").click()
    await expect(tid(host, "ev-status")).to_have_attribute("data-status", "signing")
    await expect(tid(page, "status")).to_have_attribute("data-status", "signing")


async def test_score_form_shows_each_maximum_and_checks_points_like_the_server(
    hall: Hall, browsing: Browsing, tmp_path: Path
) -> None:
    e, committee = await detailed(hall, tmp_path)
    mid, page = await open_desk(browsing, e, committee, 1)
    await expect(tid(page, "status")).to_have_attribute("data-stage", "detailed")
    await expect(tid(page, "max-T1")).to_have_text("满分 40.00")
    await expect(tid(page, "max-C1")).to_have_text("满分 30.00")
    for code in BIDS:
        await tid(page, f"points-{code}-T1").fill("35.5")
        await tid(page, f"points-{code}-C1").fill("28")
    await tid(page, f"points-{CODE_B}-C1").fill("30.01")  # above the maximum
    await tid(page, "sheet-submit").click()
    await expect(tid(page, "form-error")).to_contain_text("分数须为 0 到满分之间")
    await expect(tid(page, f"points-{CODE_B}-C1")).to_be_focused()
    await tid(page, f"points-{CODE_B}-C1").fill("30")
    await tid(page, "sheet-submit").click()
    await expect(tid(page, "sheet-state")).to_have_attribute("data-state", "waiting")
    await shot(page, "26-expert-score-sheet-waiting")
    draft = (await hall.request("GET", e.path("members", mid, "to-sign"), e.as_expert(mid)))[
        "draft"
    ]
    points = {(s["bidder"], s["criterion"]): s["points_x100"] for s in draft["content"]["scores"]}
    assert points[(CODE_A, "T1")] == 3550 and points[(CODE_B, "C1")] == 3000
    assert points[(CODE_C, "C1")] == 2800 and len(points) == 6
