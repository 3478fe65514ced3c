"""The supervisor wall (监管大屏) in Chromium, and the routes it adds.

The wall is opened through a supervisor's one-time link like every page; it lists every session
through ``GET /api/supervision/sessions`` and follows each one with its own hall connection. The
sessions are real ones driven through the API: a closed opening, its evaluation (drawn, rooms
linked over real WebRTC with synthetic cameras) and a second opening in its sign-in stage.
Screenshots go to test-artifacts/pages/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from room_client.media import RoomMedia
from schemas.events import EventRecord, NewEvent
from tests.support.evaluation import Eval, new_evaluation
from tests.support.hall import Hall, P
from tests.support.pages import WALL, Browsing, Line, card, followed, shot, status_is, tid


@pytest.fixture
def store_url() -> None:
    """The ``hall`` fixture on the server's default store: these tests run once, not once per
    database."""
    return None


MINUTE = timedelta(minutes=1)


async def live_opening(hall: Hall) -> str:
    """A second opening, in its sign-in stage now (whatever the clock says)."""
    now = hall.clock.now()
    sid = await hall.create_session(
        sign_in_opens=(now + MINUTE).isoformat(), deadline=(now + 60 * MINUTE).isoformat()
    )
    await hall.at(now + 5 * MINUTE)
    return sid


async def feed(page: Page, sid: str) -> list[Line]:
    """A card's feed, newest first, checked to hold the supervisor's events once each, in log
    order, with nothing missing (tests.support.pages.followed)."""
    return await followed(card(page, sid).get_by_test_id("feed"))


async def feed_items(page: Page, sid: str) -> dict[str, tuple[str, str]]:
    """event id -> (type, text) of what a card's feed shows."""
    return {line.id: (line.type, line.text) for line in await feed(page, sid)}


async def card_markup(page: Page, sid: str, testids: list[str]) -> dict[str, str]:
    return {t: await card(page, sid).get_by_test_id(t).inner_html() for t in testids}


def verify_archive_cli(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "verify-archive", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- the routes ------------------------------------------------------------------------------------


async def test_supervision_routes_list_every_session_and_refuse_everyone_else(
    hall: Hall, tmp_path: Path
) -> None:
    e = await new_evaluation(hall, tmp_path)
    live = await live_opening(hall)
    sup = P(hall, "supervisor")
    listed = {
        s["session_id"]: s
        for s in (await hall.request("GET", "/api/supervision/sessions", sup))["sessions"]
    }
    assert set(listed) == {e.opening, e.sid, live}
    assert (listed[e.opening]["kind"], listed[e.opening]["status"]) == ("opening", "closed")
    assert (listed[e.sid]["kind"], listed[e.sid]["status"]) == ("evaluation", "draft")
    assert listed[e.sid]["opening_session_id"] == e.opening
    assert (listed[live]["kind"], listed[live]["status"]) == ("opening", "sign_in")
    assert listed[live]["deadline"] and listed[live]["pos"]["all"] >= 1
    assert all("seq" not in s for s in listed.values()), listed  # rule 4: no global number
    for who in ("host", "a", "centre"):
        await hall.refused(403, "NOT_PERMITTED", "GET", "/api/supervision/sessions", P(hall, who))
        await hall.refused(
            403,
            "NOT_PERMITTED",
            "GET",
            f"/api/supervision/sessions/{e.opening}/archive",
            P(hall, who),
        )
    await hall.refused(401, "TOKEN_INVALID", "GET", "/api/supervision/sessions", None)
    await hall.refused(
        404, "NOT_FOUND", "GET", "/api/supervision/sessions/no-such-session/archive", sup
    )
    # Rule 4: before the deadline an archive would tell who bid (a bid is in already).
    await hall.upload(live, P(hall, "a"), hall.seal(tmp_path, P(hall, "a"), name="a"))
    err = await hall.refused(
        409, "ARCHIVE_NOT_YET", "GET", f"/api/supervision/sessions/{live}/archive", sup
    )
    assert "投标截止前" in err.body["zh"]

    # A closed opening's archive is a download that verify-archive accepts as it is.
    async with hall.http.get(
        f"{hall.url}/api/supervision/sessions/{e.opening}/archive",
        headers={"Authorization": f"Bearer {sup.token}"},
    ) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"] == "application/zip"
        assert r.headers["Content-Disposition"].startswith('attachment; filename="bidbridge-')
        data = await r.read()
    assert int(r.headers["Content-Length"]) == len(data)
    path = tmp_path / "opening.zip"
    path.write_bytes(data)
    done = await asyncio.to_thread(verify_archive_cli, path)
    assert done.returncode == 0, done.stdout + done.stderr
    # Nothing of the export is left behind in the data folder.
    assert not list((hall.hub.settings.data_dir).glob("archive-*"))


# --- the wall ----------------------------------------------------------------------------------------


async def link_rooms(e: Eval, rooms: list[str]) -> list[RoomMedia]:
    links = []
    for room_id in rooms:
        link = RoomMedia("synthetic", label=room_id)
        party = e.rooms[room_id]

        async def signal(offer: dict[str, str], party: Any = party) -> dict[str, str]:
            return dict(await e.post(party, "media", "offer", body=offer))

        await link.connect(signal)
        links.append(link)
    for link in links:
        await link.wait_connected()
    return links


async def test_wall_follows_openings_and_an_evaluation_live(
    hall: Hall, browsing: Browsing, tmp_path: Path
) -> None:
    e = await new_evaluation(hall, tmp_path)
    live = await live_opening(hall)
    host, supervisor = P(hall, "host"), P(hall, "supervisor")

    wall = await browsing.open(hall, live, "supervisor", "supervisor")
    await expect(wall.locator("h1")).to_have_text("监管大屏（监督）")
    await expect(tid(wall, "session-card")).to_have_count(3)
    await expect(tid(wall, "conn")).to_have_text("3/3 个会话实时连接")
    # The session the link named comes first; every card shows its state.
    await expect(tid(wall, "session-card").first).to_have_attribute("data-session", live)
    await expect(card(wall, e.opening).get_by_test_id("session-status")).to_have_attribute(
        "data-status", "closed"
    )
    await expect(card(wall, e.sid).get_by_test_id("session-status")).to_have_text("草稿")
    await expect(card(wall, live).get_by_test_id("session-status")).to_have_text(
        "签到中（投标截止前）"
    )
    await expect(card(wall, live).get_by_test_id("fact-bids")).to_have_text(
        "截止前不显示投标数量（规则 4）"
    )
    # The closed opening's bidders all uploaded from this machine: its real signals are listed.
    same_address = wall.locator('[data-testid="signal"][data-kind="same_origin_address"]')
    await expect(same_address.first).to_be_visible()
    await expect(tid(wall, "overview-row")).to_have_count(3)

    # The evaluation's feed grows live with the draw (newest first, readable labels).
    drawn_before = await feed(wall, e.sid)
    await e.post(host, "draw", "begin")
    await e.post(supervisor, "draw", "entropy", body={"value": "ab" * 32})
    await e.post(host, "draw", "entropy", body={"value": "cd" * 32})
    await e.post(host, "draw")
    ecard = card(wall, e.sid)
    await expect(ecard.get_by_test_id("session-status")).to_have_text("专家签到中")
    await expect(
        ecard.get_by_test_id("feed").locator('li[data-type="committee_drawn"]')
    ).to_contain_text("评标委员会抽取完成")
    drawn_after = await feed(wall, e.sid)
    assert len(drawn_after) > len(drawn_before), drawn_after
    assert {line.id for line in drawn_before} <= {line.id for line in drawn_after}

    # A warning raised on the wall: in its feed and list, and delivered to the host's hall.
    host_hall = await hall.listen(e.sid, host)
    text = "副场摄像头角度不全，请调整。"
    await ecard.get_by_test_id("warning-send").click()
    await expect(ecard.get_by_test_id("session-error")).to_contain_text("请填写预警内容。")
    await ecard.get_by_test_id("warning-text").fill(text)
    await ecard.get_by_test_id("warning-send").click()
    await expect(ecard.get_by_test_id("warning-1")).to_contain_text(text)
    warning = ecard.get_by_test_id("feed").locator('li[data-type="supervisor_warning"]')
    await expect(warning).to_contain_text("监督预警")
    await expect(warning).to_contain_text(text)
    got = await host_hall.until_type("supervisor_warning")
    assert got["payload"]["text"] == text
    # The same event (by its id); public, so the wall and the host number it alike.
    assert got["id"] == await warning.get_attribute("data-id")
    await expect(warning.locator(".seq")).to_have_text(f"#{got['pos']['all']}")
    await expect(ecard.get_by_test_id("session-ok")).to_contain_text(f"#{got['pos']['all']}")

    # An opening's suspension with a reason: the bidder's and the host's pages show it.
    bidder = await browsing.open(hall, live, "a", "bidder")
    console = await browsing.open(hall, live, "host", "host")
    ocard = card(wall, live)
    reason = "监督发现网络异常，暂停核查 / network anomaly, paused to check"
    await ocard.get_by_test_id("reason-text").fill(reason)
    await ocard.get_by_test_id("suspend-button").click()
    await status_is([bidder, console], "suspended")
    await expect(tid(bidder, "banner")).to_contain_text("开标已暂停：监督发现网络异常")
    await expect(ocard.get_by_test_id("session-banner")).to_contain_text(reason)
    await expect(ocard.get_by_test_id("session-status")).to_have_attribute(
        "data-status", "suspended"
    )
    await expect(ocard.get_by_test_id("resume-button")).to_be_enabled()
    await shot(wall, "10-supervisor-wall-suspended-warning")

    # A room's video plays on the wall (a synthetic camera through the lead site).
    rooms = sorted((await e.view(supervisor))["rooms"])
    links = await link_rooms(e, rooms)
    try:
        watched = rooms[-1]
        await expect(ecard.get_by_test_id(f"watch-{watched}")).to_contain_text(f"观看 {watched}")
        await ecard.get_by_test_id(f"watch-{watched}").click()
        tile = ecard.get_by_test_id("video-tile")
        await expect(tile).to_have_attribute("data-state", "playing", timeout=20000)
        width = await ecard.get_by_test_id("video").evaluate("(v) => v.videoWidth")
        assert width > 0
        await expect(ecard.get_by_test_id("video-state")).to_have_text(f"正在播放 {watched}")
        await shot(wall, "11-supervisor-wall-video")
        await wall.set_viewport_size(WALL)
        await shot(wall, "11-supervisor-wall-video-wall-screen")
        await wall.set_viewport_size({"width": 1366, "height": 768})
    finally:
        for link in links:
            await link.close()

    # The resume comes back the same way; a reload shows what the wall showed.
    await ocard.get_by_test_id("reason-text").fill("核查完毕 / checked")
    await ocard.get_by_test_id("resume-button").click()
    await status_is([bidder, console], "sign_in")
    await expect(ocard.get_by_test_id("session-banner")).to_be_hidden()
    await expect(ocard.get_by_test_id("session-ok")).to_contain_text("已完成：恢复开标")
    sessions = (live, e.sid, e.opening)
    before = {sid: await feed_items(wall, sid) for sid in sessions}
    parts = ["session-status", "session-banner"]
    shown = {sid: await card_markup(wall, sid, parts) for sid in sessions}
    await wall.reload()
    await expect(tid(wall, "conn")).to_have_attribute("data-state", "live")
    for sid in sessions:
        # The same events, folded the same way; the reload itself adds only the wall's own
        # presence (left, joined again) to each session.
        after: dict[str, tuple[str, str]] = {}
        for _ in range(50):
            after = await feed_items(wall, sid)
            if set(before[sid].items()) <= set(after.items()):
                break
            await wall.wait_for_timeout(100)
        assert set(before[sid].items()) <= set(after.items()), (before[sid], after)
        added = {after[k][0] for k in set(after) - set(before[sid])}
        assert added <= {"party_joined", "party_left"}, added
        latest = max(line.pos["all"] for line in await feed(wall, sid) if line.public)
        await expect(card(wall, sid).get_by_test_id("fact-latest")).to_have_text(f"#{latest}")
        row = wall.locator(f'[data-testid="overview-row"][data-session="{sid}"]')
        await expect(row.get_by_test_id("overview-latest")).to_have_text(f"#{latest}")
        assert await card_markup(wall, sid, parts) == shown[sid]
    await expect(card(wall, e.sid).get_by_test_id("warning-1")).to_contain_text(text)

    # The closed opening's archive downloads from the wall and verifies offline; the live one's
    # is refused with its code (rule 4).
    async with wall.expect_download() as info:
        await card(wall, e.opening).get_by_test_id("archive-download").click()
    download = await info.value
    assert re.fullmatch(r"bidbridge-[A-Za-z0-9_.-]+\.zip", download.suggested_filename)
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    done = await asyncio.to_thread(verify_archive_cli, saved)
    assert done.returncode == 0, done.stdout + done.stderr
    await expect(card(wall, e.opening).get_by_test_id("archive-state")).to_contain_text(
        "bidbridge verify-archive"
    )
    await card(wall, live).get_by_test_id("archive-download").click()
    await expect(card(wall, live).get_by_test_id("session-error")).to_contain_text(
        "ARCHIVE_NOT_YET"
    )
    await shot(wall, "12-supervisor-wall")
    await wall.set_viewport_size(WALL)
    await shot(wall, "12-supervisor-wall-wall-screen")
    await hall.hang_up(host_hall)


async def test_wall_in_english_keyboard_and_labels(hall: Hall, browsing: Browsing) -> None:
    sid = await live_opening(hall)
    wall = await browsing.open(hall, sid, "supervisor", "supervisor")
    await expect(tid(wall, "session-card")).to_have_count(1)
    unnamed = await wall.evaluate(
        """() => [...document.querySelectorAll('button, input, textarea, select, video')]
            .filter((el) => !el.closest('[hidden]'))
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !el.getAttribute('aria-describedby') && !el.textContent.trim())
            .map((el) => el.outerHTML)"""
    )
    assert unnamed == [], unnamed
    await tid(wall, "lang-switch").focus()
    await wall.keyboard.press("Enter")
    await expect(wall.locator("h1")).to_have_text("Supervisor wall")
    await expect(tid(wall, "session-status")).to_have_text("sign-in open (before the deadline)")
    await expect(tid(wall, "suspend-button")).to_have_text("Suspend the opening")
    await expect(tid(wall, "feed").locator('li[data-type="session_published"]')).to_contain_text(
        "Session published"
    )
    # Keyboard only: the reason field, then suspend.
    await tid(wall, "reason-text").focus()
    await wall.keyboard.type("power cut at the lead site")
    await wall.keyboard.press("Tab")
    await expect(tid(wall, "suspend-button")).to_be_focused()
    await wall.keyboard.press("Enter")
    await expect(tid(wall, "session-status")).to_have_attribute("data-status", "suspended")
    await expect(tid(wall, "session-banner")).to_have_text("Suspended: power cut at the lead site")
    await shot(wall, "13-supervisor-wall-english")


async def test_a_page_open_longer_than_a_token_lives_keeps_working(
    hall: Hall, browsing: Browsing
) -> None:
    """The page renews its token before it runs out: long after the first token's end it acts."""
    sid = await live_opening(hall)
    wall = await browsing.open(hall, sid, "supervisor", "supervisor")
    start = hall.clock.now()
    # Each step leaves less than half of the current token's life (30 min): the page renews it.
    # After the last step the first token is 18 minutes dead (the deadline is still ahead).
    for n, minutes in enumerate((16, 32, 48), start=1):
        await hall.at(start + minutes * MINUTE)
        await expect(wall.locator("body")).to_have_attribute("data-token-renewals", str(n))
    await tid(wall, "reason-text").fill("still here after an hour")
    await tid(wall, "suspend-button").click()
    await expect(tid(wall, "session-status")).to_have_attribute("data-status", "suspended")
    # A reload in the same tab uses the renewed token.
    await wall.reload()
    await expect(tid(wall, "conn")).to_have_attribute("data-state", "live")
    await expect(tid(wall, "session-banner")).to_contain_text("still here after an hour")


async def append_signals(hall: Hall, sid: str, *payloads: dict[str, Any]) -> list[EventRecord]:
    """``signal`` events in the session's supervisor channel, written as the server writes every
    event (issue 6's signals will arrive this way) but not published; they change no state."""
    store = hall.hub.store
    row = await store.load_session(sid)
    assert row is not None
    return await store.append(
        sid,
        expected_version=row.version,
        events=[
            NewEvent(type="signal", actor="server", audience=["supervisor"], payload=p)
            for p in payloads
        ],
        at=hall.clock.now(),
        snapshot=row.snapshot,
        status=row.status,
        next_due=row.next_due,
    )


async def publish_signal(hall: Hall, sid: str, payload: dict[str, Any]) -> str:
    """A ``signal`` event written and published as the server does; its id (the chain hash, as
    viewers get it)."""
    records = await append_signals(hall, sid, payload)
    await hall.hub.hall.publish(sid, records)
    return records[0].hash


def quiet_signal(ident: str) -> dict[str, Any]:
    return {
        "id": ident,
        "kind": "price_patterns",
        "score": 0.1,
        "subjects": [],
        "explanation_zh": f"测试信号 {ident}",
        "explanation_en": f"test signal {ident}",
        "evidence": [],
    }


async def test_signals_are_listed_newest_first_with_their_evidence_linked_to_the_feed(
    hall: Hall, browsing: Browsing, tmp_path: Path
) -> None:
    sid = await live_opening(hall)
    a, b = P(hall, "a"), P(hall, "b")
    for who in (a, b):
        await hall.upload(sid, who, hall.seal(tmp_path, who, name=who.name))
    wall = await browsing.open(hall, sid, "supervisor", "supervisor")
    bidder = await browsing.open(hall, sid, "a", "bidder")
    await expect(tid(wall, "signals-none")).to_have_text(re.compile("暂无预警信号"))
    (published,) = [line for line in await feed(wall, sid) if line.type == "session_published"]
    assert published.public and published.shown == f"#{published.pos['all']}"
    first = await publish_signal(
        hall,
        sid,
        {
            "id": "s1",
            "kind": "same_origin",
            "score": 0.82,
            "subjects": [a.code, b.code],
            "explanation_zh": "投标人甲与乙的投标文件在 2 分钟内从同一网络地址 10.0.0.7 上传",
            "explanation_en": "bids of A and B were uploaded from the same address 10.0.0.7 2 minutes apart",
            "evidence": [
                {"session_id": sid, "id": published.id, "ref": f"event:{published.id}", "note": ""}
            ],
        },
    )
    second = await publish_signal(
        hall,
        sid,
        {
            "id": "s2",
            "kind": "price_patterns",
            "score": 0.4,
            "subjects": [a.code],
            "explanation_zh": "报价呈等差排列",
            "explanation_en": "prices in an arithmetic progression",
            "evidence": [{"session_id": sid, "id": first, "ref": f"event:{first}", "note": "s1"}],
        },
    )
    signals = tid(wall, "signal")
    await expect(signals).to_have_count(2)
    await expect(signals.nth(0)).to_have_attribute("data-id", second)  # newest first
    await expect(signals.nth(1)).to_contain_text("同一网络地址 10.0.0.7")
    await expect(signals.nth(1)).to_contain_text("可疑程度 0.82")
    await expect(signals.nth(1)).to_contain_text(a.code or "")
    # Evidence names the event it points at by its public number and label (a private one, the
    # first signal, by its label only).
    link = signals.nth(1).get_by_test_id("evidence-link")
    await expect(link).to_have_attribute("data-id", published.id)
    await expect(link).to_have_text(f"{published.shown} 发布开标会")
    back = signals.nth(0).get_by_test_id("evidence-link")
    await expect(back).to_have_attribute("data-id", first)
    await expect(back).to_have_text("预警信号 — s1")
    await link.click()
    target = card(wall, sid).locator(f'li[data-id="{published.id}"]')
    await expect(target).to_be_focused()
    await expect(card(wall, sid).locator(f'li[data-id="{second}"]')).to_contain_text("预警信号")
    # Both signals in the feed in their place, numbered in the supervisor's own stream only.
    lines = await feed(wall, sid)
    assert [line.id for line in lines[:2]] == [second, first], lines[:2]
    assert not lines[0].public and lines[0].shown == ""
    await tid(wall, "lang-switch").click()
    await expect(signals.nth(1)).to_contain_text("uploaded from the same address 10.0.0.7")
    await shot(wall, "14-supervisor-wall-signals")
    # The supervisor channel only: the bidder's page never sees a signal.
    await expect(tid(bidder, "log").locator('li[data-type="signal"]')).to_have_count(0)
    await expect(tid(bidder, "own-status")).to_be_visible()
    assert "10.0.0.7" not in await bidder.content()


async def test_a_live_event_lost_on_its_way_is_replayed_in_its_place(
    hall: Hall, browsing: Browsing
) -> None:
    """The hall never sends the wall one event (lost on its way) and sends the next: the next
    one's position in the supervisor's stream shows the gap, the wall asks for a replay after its
    cursor and shows both, in log order, once each, then follows live again."""
    sid = await live_opening(hall)
    wall = await browsing.open(hall, sid, "supervisor", "supervisor")
    before = await feed(wall, sid)
    lost, sent = await append_signals(hall, sid, quiet_signal("lost"), quiet_signal("sent"))
    await hall.hub.hall.publish(sid, [sent])
    await expect(card(wall, sid).locator(f'li[data-id="{lost.hash}"]')).to_have_count(1)
    await expect(tid(wall, "conn")).to_have_attribute("data-state", "live")
    after = await feed(wall, sid)
    assert [line.id for line in after[:2]] == [sent.hash, lost.hash], after[:2]
    assert [line.id for line in after[2:]] == [line.id for line in before]
    await expect(tid(wall, "signal")).to_have_count(2)
    # Live again: the next event comes straight on.
    nxt = await publish_signal(hall, sid, quiet_signal("next"))
    await expect(card(wall, sid).locator("li[data-id]").first).to_have_attribute("data-id", nxt)
    assert len(await feed(wall, sid)) == len(before) + 3
