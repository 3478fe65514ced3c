"""Chromium for the page tests: a browser with one context per party, and page helpers."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, ViewportSize, async_playwright, expect

from tests.support.hall import Hall, P, Party

CHROMIUM = "/usr/bin/chromium"

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "pages"

VIEWPORT: ViewportSize = {"width": 1366, "height": 768}

WALL: ViewportSize = {"width": 2560, "height": 1440}


@dataclass
class Browsing:
    """Chromium with one context per party; uncaught page errors are collected."""

    browser: Browser
    errors: list[str] = field(default_factory=list)

    async def open(
        self,
        hall: Hall,
        sid: str,
        who: str | Party,
        page: str,
        viewport: ViewportSize = VIEWPORT,
    ) -> Page:
        """A fresh browser context entering ``page`` of ``sid`` through ``who``'s one-time link
        (``who``: a party, or the name of one of the hall's parties)."""
        party = P(hall, who) if isinstance(who, str) else who
        link = await hall.request(
            "POST", "/api/auth/web-link", party, {"session_id": sid, "page": page}
        )
        tab = await self.new_tab(viewport)
        await tab.goto(hall.url + link["url"])
        await tab.wait_for_url(re.compile(rf"/web/{page}\.html\?session="))
        await expect(tab.locator("body")).to_have_attribute("data-events", re.compile(r"^\d+$"))
        await expect(tid(tab, "conn")).to_have_attribute("data-state", "live")
        return tab

    async def new_tab(self, viewport: ViewportSize = VIEWPORT) -> Page:
        context = await self.browser.new_context(
            viewport=viewport,
            locale="zh-CN",
            timezone_id="Europe/Berlin",  # not Beijing: the pages must show Asia/Shanghai anyway
        )
        # The manual clock jumps: let the pages measure the server's clock often.
        # (Guarded: the script also runs in frames without storage, e.g. the PDF viewer's.)
        await context.add_init_script(
            "try { localStorage.setItem('bidbridge.clockSyncMs', '250') } catch (e) {}"
        )
        tab = await context.new_page()
        tab.on("pageerror", lambda exc: self.errors.append(f"{tab.url}: {exc}"))
        return tab


def tid(page: Page, testid: str) -> Any:
    return page.get_by_test_id(testid)


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def status_is(pages: list[Page], status: str) -> None:
    for page in pages:
        await expect(tid(page, "status")).to_have_attribute("data-status", status)


async def markup(page: Page, testids: list[str]) -> dict[str, str]:
    return {t: await tid(page, t).inner_html() for t in testids}


async def reloaded_same(page: Page, testids: list[str]) -> None:
    """A reload mid-session shows what the page showed before it (same events, same fold)."""
    before = await markup(page, testids)
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-events", re.compile(r"^\d+$"))
    await expect(tid(page, "conn")).to_have_attribute("data-state", "live")
    after: dict[str, str] = {}
    for _ in range(50):
        after = await markup(page, testids)
        if after == before:
            return
        await page.wait_for_timeout(100)
    diff = {t: (before[t], after[t]) for t in testids if before[t] != after[t]}
    raise AssertionError(f"the reloaded page differs: {diff}")


@dataclass(frozen=True)
class Line:
    """One line of a page's event log as the page shows it (docs/positions.md)."""

    id: str
    type: str
    pos: dict[str, int]
    public: bool
    shown: str
    """The number the line shows: ``#<pos.all>`` for a public event, nothing for a private one."""
    text: str

    def members(self) -> dict[str, int]:
        """The streams the event is a member of and its numbers in them."""
        return {t: n for t, n in self.pos.items() if t != "all" or self.public}


def parse_pos(text: str) -> dict[str, int]:
    """``"all:7 bidder:9111…:3"`` (a stream's name may hold colons: split at the last one)."""
    pos = {}
    for item in text.split():
        stream, _, n = item.rpartition(":")
        pos[stream] = int(n)
    return pos


async def log_lines(log: Any) -> list[Line]:
    """The event lines of a log element (``ol``), top first."""
    rows = await log.locator("li[data-id]").evaluate_all(
        """(items) => items.map((li) => [li.dataset.id, li.dataset.type, li.dataset.pos,
            li.hasAttribute('data-public'), li.querySelector('.seq').textContent, li.textContent])"""
    )
    return [Line(i, t, parse_pos(p), bool(pub), s, x) for i, t, p, pub, s, x in rows]


async def followed(log: Any) -> list[Line]:
    """A log shown newest first holds every event of the viewer's streams once, in log order:
    the ids are distinct chain hashes; the lines go down by ``(pos.all, public before private)``;
    in each stream the numbers down the log are n, n-1, ..., 1 (nothing missing, nothing twice);
    a public event shows its public number and a private one none. No global ``seq`` anywhere."""
    lines = await log_lines(log)
    ids = [line.id for line in lines]
    assert len(ids) == len(set(ids)), ids
    assert all(re.fullmatch(r"[0-9a-f]{64}", i) for i in ids), ids
    keys = [(line.pos["all"], 0 if line.public else 1) for line in lines]
    assert keys == sorted(keys, reverse=True), keys
    streams: dict[str, list[int]] = {}
    for line in lines:
        for stream, n in line.members().items():
            streams.setdefault(stream, []).append(n)
    for stream, numbers in streams.items():
        assert numbers == list(range(len(numbers), 0, -1)), (stream, numbers)
    for line in lines:
        assert line.shown == (f"#{line.pos['all']}" if line.public else ""), line
    assert await log.locator("[data-seq]").count() == 0
    return lines


def card(page: Page, sid: str) -> Any:
    return page.locator(f'[data-testid="session-card"][data-session="{sid}"]')


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browsing]:
    """Chromium from Debian, headless; on leaving, no page may have had an uncaught error."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        try:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
            )
        except Exception as exc:  # a missing or broken Chromium is a failure, never a skip
            pytest.fail(
                f"Chromium cannot start from {CHROMIUM}: {exc}\n"
                "Install Debian's chromium (scripts/setup.sh) to run the page tests.",
                pytrace=False,
            )
        b = Browsing(browser)
        try:
            yield b
        finally:
            await browser.close()
        assert not b.errors, "uncaught errors in the pages:\n" + "\n".join(b.errors)
