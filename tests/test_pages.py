"""The browser pages through Chromium: a full opening with two bidder pages and the host page.

The pages run against the in-process hall (manual clock): links come from POST
/api/auth/web-link as each party, the session's steps are driven through the API (uploads, keys,
clock moves) and the host page's own buttons (start, decryption, confirmation), and what each page
shows is asserted by its data-testid attributes. Screenshots of each page at its key steps are
saved to test-artifacts/pages/ (git-ignored).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from server.realtime.hall import NAMESPACE, room
from tests.support.hall import Hall, P
from tests.support.opening import cek, send_key
from tests.support.pages import (
    WALL,
    Browsing,
    followed,
    parse_pos,
    reloaded_same,
    shot,
    status_is,
    tid,
)

MINUTE = timedelta(minutes=1)


@pytest.fixture
def store_url() -> None:
    """The ``hall`` fixture on the server's default store: these tests run once, not once per
    database."""
    return None


async def readme_shot(page: Page, name: str, full_page: bool = False) -> None:
    """The README's pictures (scripts/screenshots.py sets BIDBRIDGE_README_SHOTS): the page laid
    out in a 1366x768 window, what the screen shows or (``full_page``) the whole page."""
    folder = os.environ.get("BIDBRIDGE_README_SHOTS")
    if folder:
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=full_page)


async def remaining(page: Page) -> int:
    return int(await tid(page, "countdown").get_attribute("data-remaining") or -1)


async def sees_no_other_bidder(hall: Hall, page: Page, me: str) -> None:
    """Rule 4: before the table, a bidder's page holds nothing about another bidder, and no
    number that counts what it may not see: its positions are in its own streams only."""
    html = await page.content()
    for key in "abc":
        other = P(hall, key)
        if key != me:
            assert other.code is not None
            assert other.code not in html, f"{me}'s page shows {other.code}"
            assert other.name not in html, f"{me}'s page shows {other.name}"
    assert "data-seq" not in html
    heads = parse_pos(await page.locator("body").get_attribute("data-pos") or "")
    assert set(heads) <= {"all", f"bidder:{P(hall, me).code}"}, heads
    for line in await followed(tid(page, "log")):
        assert set(line.pos) <= set(heads), line


async def drop_sockets(hall: Hall, sid: str, tag: str) -> int:
    """Cut the hall's sockets of audience ``tag`` from the server side (a dropped connection)."""
    sio = hall.hub.sio
    sids = [s for s, _ in sio.manager.get_participants(NAMESPACE, room(sid, tag))]
    for s in sids:
        await sio.disconnect(s, namespace=NAMESPACE)
    return len(sids)


# --- the full opening ------------------------------------------------------------------------------


async def test_full_opening_through_the_pages(
    hall: Hall, browsing: Browsing, tmp_path: Path
) -> None:
    t0 = hall.t0
    sid = await hall.create_session(
        sign_in_opens=(t0 + 5 * MINUTE).isoformat(),
        deadline=(t0 + 20 * MINUTE).isoformat(),
        decrypt_minutes=5,
        confirm_minutes=5,
    )
    await hall.at(t0 + 10 * MINUTE)
    a, b, c = P(hall, "a"), P(hall, "b"), P(hall, "c")
    host = await browsing.open(hall, sid, "host", "host")
    pa = await browsing.open(hall, sid, "a", "bidder")
    pb = await browsing.open(hall, sid, "b", "bidder")
    bidders = [pa, pb]
    everyone = [host, *bidders]
    await status_is(everyone, "sign_in")
    await expect(tid(pa, "title")).to_have_text("市政道路改造工程 01 标段")
    await expect(tid(pa, "project")).to_have_text("JS-2026-0101")

    # Bids, receipts and the rehearsal (each bidder's own, live).
    envs = {}
    prices = {"a": 12_800_000_000, "b": 12_650_000_000, "c": 13_100_000_000}
    receipts = {}
    for key in "abc":
        envs[key] = hall.seal(tmp_path, P(hall, key), name=key, price_fen=prices[key])
        receipts[key] = await hall.upload(sid, P(hall, key), envs[key])
    for page, key in ((pa, "a"), (pb, "b")):
        await expect(tid(page, "own-status")).to_have_attribute("class", re.compile("bid-uploaded"))
        await expect(tid(page, "receipt")).to_contain_text(receipts[key]["receipt"]["receipt_id"])
    await hall.request("POST", f"/api/sessions/{sid}/rehearsal", a, {"passed": True})
    await hall.request(
        "POST",
        f"/api/sessions/{sid}/rehearsal",
        b,
        {
            "passed": False,
            "code": "KEY_UNWRAP_FAILED",
            "message": "无法解开内容密钥 / cannot unwrap",
        },
    )
    await expect(tid(pa, "rehearsal-state")).to_have_attribute("data-state", "passed")
    await expect(tid(pb, "rehearsal-state")).to_have_attribute("data-state", "failed")
    await expect(tid(pb, "rehearsal")).to_contain_text("无法解开内容密钥")
    await expect(tid(pb, "cmd-rehearse")).to_have_text(f"bidbridge bidder rehearse --session {sid}")
    await tid(pa, "signin-button").click()
    await expect(tid(pa, "signin-status")).to_have_text("已签到")

    # The countdown follows the server's clock, not the browser's.
    await expect(tid(pa, "countdown-label")).to_have_text("距投标截止")
    first = await remaining(pa)
    assert 540 <= first <= 600, first
    await hall.at(t0 + 15 * MINUTE)
    for page in bidders:
        await expect(tid(page, "countdown")).to_have_attribute(
            "data-remaining", re.compile(r"^(2[4-9]\d|300)$")
        )
    # Before the deadline nobody learns who or how many bid, the host included (rule 4).
    await expect(tid(host, "bidders-hidden")).to_be_visible()
    await expect(tid(host, "bids-table")).to_have_count(0)
    await expect(tid(host, "start-button")).to_be_disabled()
    await expect(tid(host, "why-start")).to_have_text("投标截止后才能开标。")
    for page, key in ((pa, "a"), (pb, "b")):
        await sees_no_other_bidder(hall, page, key)
    await shot(pa, "01-bidder-a-before-deadline")
    await shot(pb, "01-bidder-b-rehearsal-failed")
    await shot(host, "01-host-before-deadline")

    # A supervisor joins; the deadline seals the lot; the host starts from the page.
    sup = await hall.listen(sid, P(hall, "supervisor"))
    await expect(tid(host, "supervisors-present")).to_have_text("监督在线：1")
    await hall.at(t0 + 20 * MINUTE)
    await status_is(everyone, "sealed")
    await expect(tid(host, "bid-count")).to_have_text("有效投标文件：3")
    await expect(tid(host, "signed-in-count")).to_have_text("已签到投标人：1")
    await expect(tid(host, "bids-table").locator("tbody tr")).to_have_count(3)
    await tid(host, "start-button").click()
    await status_is(everyone, "opening")
    await expect(tid(pa, "bids-opened")).to_have_text("3")
    await tid(host, "decryption-button").click()
    await status_is(everyone, "decrypting")
    for page in bidders:
        await expect(tid(page, "decrypt-state")).to_have_attribute("data-state", "open")
        await expect(tid(page, "cmd-decrypt")).to_have_text(
            f"bidbridge bidder decrypt --session {sid}"
        )
        await expect(tid(page, "countdown-label")).to_have_text("距解密结束")

    # Decryption statuses change live on every page (each bidder sees its own).
    assert (await send_key(hall, sid, "a", cek(hall, "a", envs["a"])))["ok"]
    await expect(tid(pa, "decrypt-state")).to_have_attribute("data-state", "decrypted")
    await expect(tid(host, f"bid-status-{a.code}")).to_have_attribute("data-status", "decrypted")
    await expect(tid(pb, "decrypt-state")).to_have_attribute("data-state", "open")
    wrong = await send_key(hall, sid, "b", cek(hall, "a", envs["a"]))
    assert not wrong["ok"] and wrong["code"] == "ENVELOPE_TAMPERED"
    await expect(tid(pb, "decrypt-state")).to_have_attribute("data-state", "failed")
    await expect(tid(pb, "decrypt-code")).to_have_text("ENVELOPE_TAMPERED")
    await expect(tid(pb, "decrypt-message")).to_contain_text(wrong["zh"])
    await expect(tid(pb, "decrypt-next")).to_contain_text("重新执行")
    await expect(tid(host, f"bid-status-{b.code}")).to_have_attribute("data-status", "failed")
    await expect(tid(pa, "decrypt-state")).to_have_attribute("data-state", "decrypted")
    await shot(pb, "02-bidder-b-decryption-failed")

    # An objection typed in a bidder page reaches the host page; the reply comes back.
    objection = "我方解密失败系证书问题，请主持人说明可否在窗口内重试。"
    await tid(pb, "objection-text").fill(objection)
    await tid(pb, "objection-send").click()
    await expect(tid(pb, "objection-text-1")).to_have_text(objection)
    await expect(tid(pb, "objection-awaiting-1")).to_be_visible()
    await expect(tid(host, "objection-text-1")).to_have_text(objection)
    # a raises the same question; the host answers both at once (rule 11: duplicates together).
    await tid(pa, "objection-text").fill("请说明解密失败后可否重试。")
    await tid(pa, "objection-send").click()
    await expect(tid(host, "objection-text-2")).to_have_text("请说明解密失败后可否重试。")
    reply = "解密时间结束前可重试，请使用投标时的 CA 锁。"
    await tid(host, "reply-text-1").fill(reply)
    await tid(host, "reply-also-1").fill("abc")
    await tid(host, "reply-send-1").click()
    await expect(tid(host, "objection-1").get_by_role("alert")).to_contain_text("异议编号")
    await tid(host, "reply-also-1").fill("2")
    await shot(host, "02-host-objection-and-failed-decryption")
    await tid(host, "reply-send-1").click()
    await expect(tid(pb, "objection-reply-1")).to_contain_text(reply)
    await expect(tid(host, "objection-reply-1")).to_contain_text(reply)
    await expect(tid(host, "objection-reply-2")).to_contain_text(reply)
    await expect(tid(pa, "objection-reply-2")).to_contain_text(reply)
    await expect(tid(pa, "objection-1")).to_have_count(0)  # private before the table
    await expect(tid(pb, "objection-2")).to_have_count(0)
    for page, key in ((pa, "a"), (pb, "b")):
        await sees_no_other_bidder(hall, page, key)

    # A reload mid-session restores the same state (bidder and host pages).
    await reloaded_same(
        pb,
        ["status", "stages", "own-bid", "rehearsal", "decryption", "objections", "times"],
    )
    await reloaded_same(
        host, ["status", "stages", "bids", "objections", "presence", "times", "table"]
    )
    await expect(tid(pb, "decrypt-code")).to_have_text("ENVELOPE_TAMPERED")

    # A dropped connection resumes after its cursor: what happened meanwhile shows, once, in
    # its place, with nothing missing in the bidder's streams.
    before = await followed(tid(pb, "log"))
    assert await drop_sockets(hall, sid, f"bidder:{b.code}") == 1
    await expect(tid(pb, "conn")).to_have_attribute("data-state", "reconnecting")
    assert (await send_key(hall, sid, "b", cek(hall, "b", envs["b"])))["ok"]
    await expect(tid(pb, "conn")).to_have_attribute("data-state", "live")
    await expect(tid(pb, "decrypt-state")).to_have_attribute("data-state", "decrypted")
    after = await followed(tid(pb, "log"))
    assert {line.id for line in before} < {line.id for line in after}
    assert [line.type for line in after].count("bid_decrypted") == 1, after
    await expect(pb.locator("body")).to_have_attribute("data-events", str(len(after)))
    await expect(tid(host, f"bid-status-{b.code}")).to_have_attribute("data-status", "decrypted")
    await sees_no_other_bidder(hall, pb, "b")

    # The window closes: c (no key sent) is revoked and the table appears on every page at the
    # same step (the same table_published event).
    await hall.at(t0 + 25 * MINUTE)
    await status_is(everyone, "announcing")
    seen = set()
    for page in everyone:
        table = tid(page, "opening-table")
        await expect(table.locator("tbody tr")).to_have_count(3)
        seen.add(
            (
                await table.get_attribute("data-event-id"),
                await table.get_attribute("data-table-sha256"),
            )
        )
    assert len(seen) == 1, seen
    (table_event, table_sha), *_ = seen
    assert table_event and re.fullmatch(r"[0-9a-f]{64}", table_event) and table_sha
    # The same event in every log: public, shown with the same public number.
    numbers = set()
    for page in everyone:
        line = tid(page, "log").locator(f'li[data-id="{table_event}"]')
        await expect(line).to_have_attribute("data-type", "table_published")
        numbers.add(await line.locator(".seq").text_content())
    assert len(numbers) == 1 and re.fullmatch(r"#\d+", numbers.pop() or ""), numbers
    await expect(tid(host, f"bid-status-{c.code}")).to_have_attribute("data-status", "revoked")
    await expect(tid(pa, "opening-table")).to_contain_text(b.name)
    await expect(tid(pa, "opening-table")).to_contain_text("128,000,000.00")
    await expect(tid(pb, "opening-table")).to_contain_text("126,500,000.00")
    await expect(tid(pa, "others-hidden")).to_be_hidden()
    await shot(pa, "03-bidder-a-table")
    await shot(pb, "03-bidder-b-table")
    await shot(host, "03-host-table")
    await readme_shot(pa, "bidder-hall")
    await readme_shot(host, "host-console", full_page=True)  # the table is below the fold

    # Confirmation: the page says it needs the CA signature and shows the agent's command.
    await tid(host, "confirmation-button").click()
    await status_is(everyone, "confirming")
    await tid(pa, "confirm-button").click()
    await expect(tid(pa, "confirm-panel")).to_be_visible()
    await expect(tid(pa, "cmd-confirm")).to_have_text(f"bidbridge bidder confirm --session {sid}")
    await expect(tid(pa, "confirm-sha")).to_have_text(table_sha)
    await shot(pa, "04-bidder-a-confirm")
    table_doc = (await hall.view(sid, a))["table"]
    await hall.request(
        "POST", f"/api/sessions/{sid}/confirm", a, {"signature": hall.sign_json(a, table_doc)}
    )
    await expect(tid(pa, "confirm-state")).to_have_attribute("data-state", "signed")
    await expect(tid(pb, f"confirmation-{a.code}")).to_have_text("已签名确认")

    # The window closes; the record is generated and shown on the host page.
    await hall.at(t0 + 30 * MINUTE)
    await expect(tid(pb, "confirm-state")).to_have_attribute("data-state", "deemed")
    await expect(tid(host, "record-text")).to_contain_text("开标记录 / Opening record")
    await expect(tid(host, "record-text")).to_contain_text(reply)
    await shot(host, "05-host-record")
    await host.set_viewport_size(WALL)
    await shot(host, "05-host-record-wall-screen")
    await hall.hang_up(sup)


# --- the link, the language, the leak ------------------------------------------------------------


async def test_link_works_once_and_expires_after_a_minute(hall: Hall, browsing: Browsing) -> None:
    sid = await hall.create_session()
    await hall.at(hall.t0 + 10 * MINUTE)
    link = await hall.request(
        "POST", "/api/auth/web-link", P(hall, "a"), {"session_id": sid, "page": "bidder"}
    )
    first = await browsing.new_tab()
    await first.goto(hall.url + link["url"])
    await first.wait_for_url(re.compile(r"/web/bidder\.html\?session="))
    await expect(tid(first, "me")).to_contain_text(P(hall, "a").name)

    again = await browsing.new_tab()
    await again.goto(hall.url + link["url"])
    await expect(tid(again, "enter-error")).to_be_visible()
    assert "#code=" not in again.url  # the code leaves the address bar at once
    await expect(tid(again, "error-code")).to_have_text("CHALLENGE_INVALID")
    await expect(tid(again, "error-zh")).to_have_text("登录挑战无效、已使用或已过期，请重新获取")
    await expect(tid(again, "error-en")).to_have_text(
        "the login challenge is unknown, already used or expired; ask for a new one"
    )
    await expect(tid(again, "enter-error")).to_contain_text("请在代理程序中重新生成一次性链接")
    await expect(tid(again, "enter-status")).to_have_text("无法进入页面")
    await shot(again, "00-enter-link-used")

    late = await hall.request(
        "POST", "/api/auth/web-link", P(hall, "host"), {"session_id": sid, "page": "host"}
    )
    hall.clock.set(hall.clock.now() + timedelta(seconds=61))
    expired = await browsing.new_tab()
    await expired.goto(hall.url + late["url"])
    await expect(tid(expired, "error-code")).to_have_text("CHALLENGE_INVALID")
    await expect(tid(expired, "enter-error")).to_contain_text("ask the agent for a new link")
    assert "/web/enter.html" in expired.url

    # A page opened without a sign-in in this tab says what to do.
    stray = await browsing.new_tab()
    await stray.goto(f"{hall.url}/web/bidder.html?session={sid}")
    await expect(tid(stray, "fatal")).to_contain_text("NO_SIGN_IN")
    await expect(tid(stray, "fatal")).to_contain_text("one-time link")
    # The landing page explains where links come from.
    await stray.goto(f"{hall.url}/web/")
    await expect(stray.locator("h1")).to_have_text("开标大厅网页")
    await expect(stray.locator("main")).to_contain_text("一次性链接")


async def test_english_switch_is_kept_across_a_reload(hall: Hall, browsing: Browsing) -> None:
    sid = await hall.create_session()
    await hall.at(hall.t0 + 10 * MINUTE)
    page = await browsing.open(hall, sid, "a", "bidder")
    await expect(page.locator("h1")).to_have_text("开标大厅（投标人）")
    await expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    switch = tid(page, "lang-switch")
    await expect(switch).to_have_accessible_name(re.compile("Switch to English"))
    await switch.focus()
    await page.keyboard.press("Enter")  # keyboard-usable
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.locator("h1")).to_have_text("Opening hall (bidder)")
    await expect(tid(page, "status")).to_have_text("sign-in open (before the deadline)")
    await expect(tid(page, "countdown-label")).to_have_text("Until the bid deadline")
    await expect(page.get_by_label("Your objection")).to_be_visible()
    await page.reload()
    await expect(page.locator("h1")).to_have_text("Opening hall (bidder)")
    await expect(tid(page, "status")).to_have_text("sign-in open (before the deadline)")
    await shot(page, "00-bidder-english")
    await tid(page, "lang-switch").click()
    await expect(page.locator("h1")).to_have_text("开标大厅（投标人）")


async def test_every_control_is_labelled(hall: Hall, browsing: Browsing) -> None:
    """Buttons, fields and text areas of both pages have an accessible name."""
    sid = await hall.create_session()
    await hall.at(hall.t0 + 10 * MINUTE)
    for who, name in (("a", "bidder"), ("host", "host")):
        page = await browsing.open(hall, sid, who, name)
        unnamed = await page.evaluate(
            """() => [...document.querySelectorAll('button, input, textarea, select')]
                .filter((el) => !el.closest('[hidden]'))
                .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                                && !el.textContent.trim())
                .map((el) => el.outerHTML)"""
        )
        assert unnamed == [], unnamed


async def test_host_suspends_resumes_and_extends_with_a_reason(
    hall: Hall, browsing: Browsing
) -> None:
    """Rule 13 from the console; the bidder page's countdown freezes, then moves with the pause."""
    t0 = hall.t0
    sid = await hall.create_session()  # deadline t0 + 1 h
    await hall.at(t0 + 10 * MINUTE)
    host = await browsing.open(hall, sid, "host", "host")
    pa = await browsing.open(hall, sid, "a", "bidder")
    await expect(tid(pa, "countdown")).to_have_attribute("data-remaining", re.compile(r"^2\d{3}$"))

    await tid(host, "lang-switch").click()  # the host works in English
    await expect(tid(host, "suspend-button")).to_have_text("Suspend")
    await tid(host, "suspend-button").click()
    await expect(tid(host, "host-error")).to_contain_text("A reason is required.")
    await tid(host, "action-reason").fill("视频链路中断 / video link down")
    await tid(host, "suspend-button").click()
    await status_is([host, pa], "suspended")
    await expect(tid(pa, "banner")).to_contain_text("开标已暂停：视频链路中断")
    await expect(tid(pa, "countdown-label")).to_have_text("已暂停（剩余时间冻结）")
    await expect(tid(pa, "countdown")).to_have_attribute("data-remaining", "3000")
    await expect(tid(host, "resume-button")).to_be_enabled()
    await shot(pa, "06-bidder-suspended")

    await hall.at(t0 + 15 * MINUTE)  # paused for five minutes: the time left stays frozen
    await pa.wait_for_timeout(600)
    await expect(tid(pa, "countdown")).to_have_attribute("data-remaining", "3000")
    await tid(host, "action-reason").fill("链路恢复 / link restored")
    await tid(host, "resume-button").click()
    await status_is([host, pa], "sign_in")
    await expect(tid(pa, "countdown")).to_have_attribute(
        "data-remaining", re.compile(r"^(299\d|3000)$")
    )
    await tid(host, "extend-minutes").fill("10")
    await tid(host, "action-reason").fill("应投标人申请 / on a bidder's request")
    await tid(host, "extend-button").click()
    await expect(tid(host, "host-ok")).to_have_text("Done: Extend the current window")
    await expect(tid(pa, "banner")).to_contain_text("投标截止时间已延长 10 分钟")
    await expect(tid(pa, "countdown")).to_have_attribute(
        "data-remaining", re.compile(r"^(359\d|3600)$")
    )
    await shot(host, "06-host-extended-english")
    # The page's fold moved the deadline exactly as the server did.
    await reloaded_same(pa, ["status", "times", "banner"])
    await reloaded_same(host, ["status", "times", "banner", "presence"])
