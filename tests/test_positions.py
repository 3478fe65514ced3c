"""Rule 4, numbering: nothing a viewer can see counts the events it may not see (docs/positions.md).

Two sessions of the same lot live through the same visible story. In one of them, before the
deadline, bidders a and b upload, replace a bid, rehearse, sign in and withdraw (hidden events).
Every other party -- host, supervisor, centre, and bidder c -- must then see exactly the same in
both: the session view and its positions, the events route, the socket's replay and its
``replayed`` message, the live events, the answers to their own commands (the host's ``extend``,
c's sign-in), and the supervisor wall's list. Checkpoints (which name the log's ``seq``) reach
no viewer, and no answer or event names ``seq`` or ``prev_hash``. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.hall import (
    ApiError,
    ConnectionRefused,
    Hall,
    Listener,
    P,
    cursor_of,
    members,
)
from tests.support.opening import SIGN_IN

OBSERVERS = ("host", "supervisor", "centre", "c")
"""Everyone who may not see a's and b's events before the deadline: staff and another bidder."""

FORBIDDEN_KEYS = {"seq", "prev_hash", "hash", "version"}


def keys_in(value: Any) -> set[str]:
    """Every key of every object in ``value`` (a JSON answer), at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


def same_story(value: Any, sid: str) -> Any:
    """An observation with what differs between two sessions of the same story taken out: the
    session's id and each event's id (a hash over the session's own log)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True).replace(sid, "<session>")
    out = json.loads(text)

    def strip(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "id"}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip(out)


async def hidden_activity(hall: Hall, sid: str, tmp: Path) -> None:
    """Before the deadline: a uploads and replaces its bid and rehearses, b uploads, signs in
    and withdraws. None of it is any other party's business (rule 4)."""
    a, b = P(hall, "a"), P(hall, "b")
    await hall.upload(sid, a, hall.seal(tmp, a, name="a1"))
    await hall.upload(sid, a, hall.seal(tmp, a, name="a2", price_fen=12_300_000_000))
    await hall.request("POST", f"/api/sessions/{sid}/rehearsal", a, {"passed": True})
    await hall.upload(sid, b, hall.seal(tmp, b, name="b"))
    await hall.request("POST", f"/api/sessions/{sid}/sign-in", b)
    await hall.request("DELETE", f"/api/sessions/{sid}/bid", b)


async def live_story(hall: Hall, sid: str, watchers: dict[str, Listener]) -> dict[str, Any]:
    """What every session goes through in view of everyone: the host extends the deadline, c
    signs in. Returns the answers (each caller's own)."""
    host, c = P(hall, "host"), P(hall, "c")
    extend = await hall.request(
        "POST", f"/api/sessions/{sid}/extend", host, {"minutes": 5, "reason": "网络故障"}
    )
    signed = await hall.request("POST", f"/api/sessions/{sid}/sign-in", c)
    for name, watcher in watchers.items():
        rest = await hall.events(sid, P(hall, name))
        await watcher.until(lambda w=watcher, r=rest: w.ids[-1:] == [e["id"] for e in r[-1:]])
        assert watcher.ids == [e["id"] for e in rest], name
    return {"host": extend, "c": signed}


async def observe(
    hall: Hall, sid: str, who: str, answers: dict[str, Any], watcher: Listener
) -> dict[str, Any]:
    party = P(hall, who)
    view = await hall.request("GET", f"/api/sessions/{sid}", party)
    events = await hall.events(sid, party)
    replay = await hall.listen(sid, party)
    seen = {
        "view": view,
        "events": events,
        "events_after_the_first_two": await hall.events(sid, party, after=cursor_of(events[:2])),
        "socket_replay": replay.events,
        "socket_replayed": replay.replayed,
        "socket_live": watcher.events,
        "answer": answers.get(who),
    }
    await replay.close()  # its account stays present through the watcher
    if who == "supervisor":
        wall = await hall.request("GET", "/api/supervision/sessions", party)
        seen["wall"] = next(s for s in wall["sessions"] if s["session_id"] == sid)
    return seen


async def stories(hall: Hall, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The quiet session and the busy one, side by side on the same clock: created together,
    watched by the same parties, with the same visible story; only the busy one has hidden
    events. Returns what each party saw of each."""
    runs = [{"sid": await hall.create_session()} for _ in range(2)]
    await hall.at(hall.t0 + SIGN_IN)
    for run in runs:
        run["watchers"] = {who: await hall.listen(run["sid"], P(hall, who)) for who in OBSERVERS}
    await hidden_activity(hall, runs[1]["sid"], tmp)
    for run in runs:
        run["answers"] = await live_story(hall, run["sid"], run["watchers"])
    for run in runs:
        sid, watchers = run["sid"], run["watchers"]
        run["seen"] = {
            who: await observe(hall, sid, who, run["answers"], watchers[who]) for who in OBSERVERS
        }
    for run in runs:
        for watcher in run["watchers"].values():
            await hall.hang_up(watcher)
    return runs[0], runs[1]


@pytest.mark.parametrize("who", OBSERVERS)
async def test_rule_04_positions_do_not_count_other_parties_hidden_events(
    hall: Hall, tmp_path: Path, who: str
) -> None:
    quiet, busy = await stories(hall, tmp_path)
    mine = quiet["seen"][who], busy["seen"][who]
    assert same_story(mine[1], busy["sid"]) == same_story(mine[0], quiet["sid"]), who
    for seen in mine:
        assert not keys_in(seen) & FORBIDDEN_KEYS, (who, keys_in(seen) & FORBIDDEN_KEYS)
        for e in seen["events"] + seen["socket_replay"] + seen["socket_live"]:
            assert e["type"] != "checkpoint"
            assert set(e["pos"]) <= {"all", *members(e)}
    # The numbers are the viewer's own: every stream it follows runs 1, 2, 3, ...
    events = mine[1]["events"]
    assert mine[1]["socket_replay"] == events
    assert mine[1]["view"]["pos"] == {
        t: max([e["pos"][t] for e in events if t in members(e)], default=0)
        for t in mine[1]["view"]["pos"]
    }


async def test_rule_04_a_bidders_own_numbers_count_only_its_own_and_public_events(
    hall: Hall, tmp_path: Path
) -> None:
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    await hidden_activity(hall, sid, tmp_path)
    a = P(hall, "a")
    events = await hall.events(sid, a)
    mine = [e for e in events if "all" not in e["audience"]]
    assert [e["type"] for e in mine] == ["bid_uploaded", "bid_uploaded", "rehearsal_reported"]
    assert [e["pos"][f"bidder:{a.code}"] for e in mine] == [1, 2, 3]
    view = await hall.request("GET", f"/api/sessions/{sid}", a)
    assert view["pos"] == {"all": cursor_of(events)["all"], f"bidder:{a.code}": 3}
    receipt = await hall.request("GET", f"/api/sessions/{sid}/receipt", a)
    assert receipt["pos"] == {"all": cursor_of(events)["all"], f"bidder:{a.code}": 2}


async def test_rule_04_a_cursor_cannot_ask_about_another_partys_stream(
    hall: Hall, tmp_path: Path
) -> None:
    """Naming b's stream in a cursor (with any number) changes nothing for c: the server only
    looks at the caller's own streams, over REST and over the socket."""
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    await hidden_activity(hall, sid, tmp_path)
    b, c = P(hall, "b"), P(hall, "c")
    plain = await hall.events(sid, c)
    for n in (0, 1, 2, 3, 99):
        probe = {f"bidder:{b.code}": n, "staff": n}
        assert await hall.events(sid, c, after=probe) == plain, n
        listener = await hall.listen(sid, c, last=probe)
        assert listener.events == plain and listener.replayed == [{"all": len(plain)}], n
        await hall.hang_up(listener)
    for query in ("after=all", "after=all:-1", "after=all:x", "after=:3", "after=all:99999999999"):
        with pytest.raises(ApiError) as err:
            await hall.request("GET", f"/api/sessions/{sid}/events?{query}", c)
        assert err.value.status == 422 and err.value.code == "INVALID_INPUT", query
        assert err.value.body["zh"] and err.value.body["en"]
    too_many = "&".join(f"after=s{i}:0" for i in range(17))
    with pytest.raises(ApiError) as err:
        await hall.request("GET", f"/api/sessions/{sid}/events?{too_many}", c)
    assert err.value.code == "INVALID_INPUT"
    refused = Listener()
    hall.listeners.append(refused)
    with pytest.raises(ConnectionRefused) as refusal:
        await refused.connect(hall.url, c.token or "", sid, {f"s{i}": 0 for i in range(17)})
    assert refusal.value.code == "INVALID_INPUT"
