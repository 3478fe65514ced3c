"""Who may join a session's live feed (issue 15, attack 7): only that session's parties.

An opening hall admits its staff and its bidders (any company before the deadline; after it,
only one with a bid it did not withdraw, or that signed in); a room device or an expert is
refused with real tokens. An evaluation's feed admits its staff, its drawn rooms and its own
committee members only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.auth import Principal
from server.domain import opening as op
from server.domain.opening_model import Bid, OpeningState, Timetable
from tests.support.evaluation import drawn
from tests.support.hall import ConnectionRefused, Hall, Listener, P


async def refused_in(hall: Hall, sid: str, token: str) -> ConnectionRefused:
    listener = Listener()
    hall.listeners.append(listener)
    with pytest.raises(ConnectionRefused) as err:
        await listener.connect(hall.url, token, sid)
    assert err.value.code == "NOT_PERMITTED"
    assert err.value.data["zh"] and err.value.data["en"]
    return err.value


async def admitted_in(hall: Hall, sid: str, token: str) -> None:
    listener = Listener()
    hall.listeners.append(listener)
    await listener.connect(hall.url, token, sid)
    assert listener.client.connected


async def test_a_room_device_and_a_signed_in_expert_cannot_join_an_opening_hall(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    members = sorted((await e.committee()).items())
    expert_id, member = members[0]
    room = e.rooms[member["room_id"]]
    await hall.login(room)
    out = await e.sign_in(expert_id, member["room_id"])
    assert room.token is not None
    now = hall.clock.now()
    fresh = await hall.create_session(
        title="另一标段",
        sign_in_opens=(now + timedelta(minutes=5)).isoformat(),
        deadline=(now + timedelta(hours=1)).isoformat(),
    )
    for opening in (e.opening, fresh):
        err = await refused_in(hall, opening, room.token)
        assert "opening hall" in err.data["en"]
        await refused_in(hall, opening, out["token"])
    # the same tokens are good where they belong
    await admitted_in(hall, e.sid, room.token)
    await admitted_in(hall, e.sid, out["token"])


async def test_an_evaluations_feed_admits_only_its_rooms_members_and_staff(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    loaded = await hall.hub.service.load(e.sid, kind=None)
    assert loaded is not None
    committee = await e.committee()
    now = hall.clock.now()
    # a room device whose room was not drawn for this evaluation
    spare_rooms = sorted(set(e.rooms) - set(loaded.state.rooms))
    assert spare_rooms, "the network has rooms this draw did not use"
    stranger = e.rooms[spare_rooms[0]]
    await hall.login(stranger)
    assert stranger.token is not None
    err = await refused_in(hall, e.sid, stranger.token)
    assert "evaluation" in err.data["en"]
    # an expert of the pool who is not on this committee, even with a token for this evaluation
    outsider = next(f"E{n:03d}" for n in range(1, 100) if f"E{n:03d}" not in committee)
    forged, _ = hall.hub.tokens.issue(Principal("expert", outsider, "专家", "0" * 64, e.sid), now)
    await refused_in(hall, e.sid, forged)
    # a bidder has no business in an evaluation
    a = P(hall, "a")
    await hall.login(a)
    assert a.token is not None
    await refused_in(hall, e.sid, a.token)
    # staff are admitted
    for role in ("host", "centre"):
        who = P(hall, role)
        await hall.login(who)
        assert who.token is not None
        await admitted_in(hall, e.sid, who.token)


async def test_after_the_deadline_the_opening_hall_admits_only_its_bidders(
    hall: Hall, tmp_path: Path
) -> None:
    sid = await hall.create_session(min_bids=1)
    a, b, c = P(hall, "a"), P(hall, "b"), P(hall, "c")
    for who in (a, b):
        await hall.upload(sid, who, hall.seal(tmp_path / who.name, who))
    await hall.request("DELETE", f"/api/sessions/{sid}/bid", b)
    for who in (a, b, c):
        await hall.login(who)
        assert who.token is not None
        await admitted_in(hall, sid, who.token)  # before the deadline any company may watch
    await hall.at(hall.t0 + timedelta(hours=1, seconds=1))
    view = await hall.view(sid, P(hall, "host"))
    assert view["status"] == "sealed"
    for who in (a, b, c):
        await hall.login(who)  # the clock moved past their first tokens' life
    assert a.token is not None and b.token is not None and c.token is not None
    await admitted_in(hall, sid, a.token)
    await refused_in(hall, sid, b.token)  # withdrew its bid before the deadline
    await refused_in(hall, sid, c.token)  # never bid
    for role in ("host", "supervisor", "centre"):
        who = P(hall, role)
        await hall.login(who)
        assert who.token is not None
        await admitted_in(hall, sid, who.token)


def test_rule_the_opening_hall_admits_bidders_by_their_part_in_the_session() -> None:
    """The pure rule (``opening`` machine's viewer_tags), for the cases the API test does not
    reach: a sign-in without a bid, and a suspension that began before the deadline."""
    at = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    timetable = Timetable(sign_in_opens=at, deadline=at + timedelta(hours=1))
    bid = Bid(bidder="A", envelope_sha256="0" * 64, size=1, received_at="x", receipt_id="r")
    state = OpeningState(
        session_id="s",
        lot_id="p/01",
        timetable=timetable,
        status="sealed",
        bids={"A": bid, "B": bid.model_copy(update={"bidder": "B", "status": "retracted"})},
        signed_in=["S"],
    )
    machine = op.MACHINE
    assert machine.viewer_tags(state, "bidder", "A") == frozenset({op.bidder_tag("A")})
    assert machine.viewer_tags(state, "bidder", "S") == frozenset({op.bidder_tag("S")})
    assert machine.viewer_tags(state, "bidder", "B") is None  # withdrew before the deadline
    assert machine.viewer_tags(state, "bidder", "N") is None  # never bid
    for role in ("room", "expert"):
        assert machine.viewer_tags(state, role, "A") is None
    for role in ("host", "supervisor", "centre"):
        assert machine.viewer_tags(state, role, "X") is not None
    before = state.model_copy(update={"status": "suspended", "suspended_from": "sign_in"})
    assert machine.viewer_tags(before, "bidder", "N") == frozenset({op.bidder_tag("N")})
    assert machine.viewer_tags(before, "room", "N") is None
