"""The opening's windows in time: the host extends one (rule 13), a pause moves the pending
ones (rule 13, DESIGN section 5), a platform outage extends the open one (rule 8)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas.events import NewEvent
from schemas.time import iso
from server.domain import errors as E
from server.domain.machine import event as _ev
from server.domain.machine import reason_text as _reason
from server.domain.opening_model import (
    ALL,
    BEFORE_DEADLINE,
    Extend,
    OpeningState,
    PlatformOutage,
    bidder_tag,
)

WINDOWS = {
    "published": "deadline",
    "sign_in": "deadline",
    "decrypting": "decryption",
    "confirming": "confirmation",
}


def extend(state: OpeningState, cmd: Extend, now: datetime) -> list[NewEvent]:
    """Rule 13: extending a window needs a reason and is an event every party sees."""
    window = WINDOWS[state.status]
    if window == "confirmation" and (state.record_pending or state.record_sha256):
        raise E.WindowClosed()
    closes = {
        "deadline": state.timetable.deadline,
        "decryption": state.decrypt_closes_at,
        "confirmation": state.confirm_closes_at,
    }[window]
    if closes is not None and now >= closes:
        # The scheduler may not have fired yet; server time has already closed the window.
        if window == "deadline":
            raise E.DeadlinePassed(f"deadline {iso(closes)}")
        raise E.WindowClosed(f"{window} closed at {iso(closes)}")
    return [
        _ev(
            "window_extended",
            cmd.actor,
            ALL,
            window=window,
            minutes=cmd.minutes,
            reason=_reason(cmd.reason),
        )
    ]


def platform_outage(state: OpeningState, cmd: PlatformOutage, now: datetime) -> list[NewEvent]:
    """Rule 8, downtime fairness: an outage that overlapped an open window (decryption,
    confirmation) extends it by the outage, and is a platform incident for every bid not yet
    decrypted when it began, so a missed decryption is the platform's (撤回), never the bidder's.

    Once per outage (by its start); an outage that began after the window had closed, or that
    took no time, changes nothing.
    """
    down_from, down_until = cmd.down_from, cmd.down_until
    if down_until <= down_from or iso(down_from) in state.outages:
        return []
    window, closes = {
        "decrypting": ("decryption", state.decrypt_closes_at),
        "confirming": ("confirmation", state.confirm_closes_at),
    }.get(state.status, (None, None))
    if window is None or closes is None or closes <= down_from:
        return []
    if window == "confirmation" and (state.record_pending or state.record_sha256):
        return []
    outage = _ev(
        "platform_outage",
        cmd.actor,
        ALL,
        window=window,
        down_from=iso(down_from),
        down_until=iso(down_until),
        extended_seconds=(down_until - down_from).total_seconds(),
    )
    if window != "decryption":
        return [outage]
    reason = (
        f"平台中断 {iso(down_from)} 至 {iso(down_until)}，解密时间已相应延长 / "
        f"platform outage from {iso(down_from)} to {iso(down_until)}; the window was extended"
    )
    return [outage] + [
        _ev(
            "incident_recorded",
            cmd.actor,
            [bidder_tag(b.bidder), "staff"],
            reason=reason,
            bidders=[b.bidder],
        )
        for b in sorted(state.live_bids(), key=lambda b: b.bidder)
        if b.status != "decrypted"
    ]


def no_window(state: OpeningState, cmd: Any = None) -> E.Refusal:
    return E.NotAllowedInState(f"no window to extend in status {state.status}")


def shift_future(s: OpeningState, shift: timedelta, paused_at: datetime | None) -> None:
    """Rule 13 / DESIGN section 5: deadlines that had not passed when paused move by the pause.

    A deadline that had already passed (the scheduler had not fired yet) stays passed: moving it
    would reopen uploads or a window after server time had closed it.
    """

    def pending(at: datetime) -> bool:
        return paused_at is None or at > paused_at

    status = s.status
    if status in BEFORE_DEADLINE and pending(s.timetable.deadline):
        s.timetable.deadline += shift
        if status == "published" and pending(s.timetable.sign_in_opens):
            s.timetable.sign_in_opens += shift
    if status == "decrypting" and s.decrypt_closes_at and pending(s.decrypt_closes_at):
        s.decrypt_closes_at += shift
    if status == "confirming" and s.confirm_closes_at and pending(s.confirm_closes_at):
        s.confirm_closes_at += shift


def fold_window(s: OpeningState, t: str, p: dict[str, Any]) -> None:
    """A window moved: by the host (``window_extended``, rule 13) or by an outage (rule 8)."""
    if t == "platform_outage":
        s.outages.append(p["down_from"])
        extra = timedelta(seconds=p["extended_seconds"])
    else:
        extra = timedelta(minutes=p["minutes"])
    if p["window"] == "deadline":
        s.timetable.deadline += extra
    elif p["window"] == "decryption" and s.decrypt_closes_at is not None:
        s.decrypt_closes_at += extra
    elif p["window"] == "confirmation" and s.confirm_closes_at is not None:
        s.confirm_closes_at += extra
