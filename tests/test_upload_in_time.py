"""Rule 1, in time is in time: an upload whose last byte arrived before the deadline is never
refused because the deadline fired while the upload was being stored (DESIGN.md section 5).
The server holds the session's next transition from the last byte to the commit."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.hall import Hall, P, Party


async def just_before_the_deadline(
    hall: Hall, tmp: Path, **summary: Any
) -> tuple[str, datetime, Party, Path]:
    """A session that needs one bid, bidder a's sealed bid (not uploaded yet), and the clock a
    second before the deadline; returns the session, the deadline, a and the bid."""
    sid = await hall.create_session(min_bids=1)
    deadline = hall.t0 + timedelta(hours=1)
    a = P(hall, "a")
    bid = hall.seal(tmp, a, **summary)
    await hall.at(deadline - timedelta(seconds=1))
    return sid, deadline, a, bid


async def test_rule_01_an_upload_in_time_is_never_refused_because_the_deadline_fired_meanwhile(
    hall: Hall, tmp_path: Path
) -> None:
    sid, deadline, a, bid = await just_before_the_deadline(hall, tmp_path, price_fen=123_456_00)

    # The real blob store, paused between storing the file and returning: the moment the
    # deadline may fire while the upload commits.
    uploading, go_on = await hall.upload_paused_once_stored(sid, a, bid)

    hall.clock.set(deadline + timedelta(seconds=5))  # the deadline is due now...
    assert await hall.hub.scheduler.fire_due() == 0  # ...but waits for the upload in flight
    assert hall.hub.scheduler.held
    go_on.set()
    out = await asyncio.wait_for(uploading, timeout=60)
    assert out["receipt"]["received_at"] < deadline.isoformat().replace("+00:00", "Z")

    assert await hall.hub.scheduler.fire_due() == 1  # now the lot is sealed, with the bid
    events = await hall.events(sid, P(hall, "host"))
    types = [e["type"] for e in events]
    assert types.index("session_sealed") > 0 and "session_failed" not in types
    counted = next(e for e in events if e["type"] == "bids_counted")
    assert counted["payload"]["bids"] == 1


async def test_rule_01_an_upload_whose_last_byte_is_late_is_refused_and_leaves_no_file(
    hall: Hall, tmp_path: Path
) -> None:
    sid, deadline, a, bid = await just_before_the_deadline(hall, tmp_path)
    # the last byte arrives after the deadline (which has not fired yet)
    hall.clock.set(deadline + timedelta(milliseconds=1))
    blobs_before = hall.blob_listing()
    await hall.upload_refused(409, "DEADLINE_PASSED", sid, a, bid)
    assert hall.blob_listing() == blobs_before
    assert not hall.hub.coord.held_here(sid)  # the hold ended with the refusal
