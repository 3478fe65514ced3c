"""The hall's socket.io namespace: replay by stream positions, reconnects without gaps, the
server clock and events filtered by role (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from crypto.attest import b64encode
from crypto.bid import unwrap
from schemas.time import parse_iso
from tests.support.hall import (
    ConnectionRefused,
    Hall,
    Listener,
    Party,
    after,
    cursor_of,
    members,
)

HOUR = timedelta(hours=1)


def P(hall: Hall, key: str) -> Party:
    return hall.parties[key]


async def extend(hall: Hall, sid: str, reason: str = "顺延") -> int:
    """The host extends the deadline; the extension's number in the public stream."""
    out = await hall.request(
        "POST", f"/api/sessions/{sid}/extend", P(hall, "host"), {"minutes": 1, "reason": reason}
    )
    return int(out["pos"]["all"])


async def in_sign_in(hall: Hall, extensions: int = 0) -> str:
    """A session in sign-in, extended ``extensions`` times by the host (reasons 第0次, 第1次...)."""
    sid = await hall.create_session()
    await hall.at(hall.t0 + timedelta(minutes=10))
    for i in range(extensions):
        await extend(hall, sid, f"第{i}次")
    return sid


def unique(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a client keeps: events by id, duplicates dropped, in arrival order."""
    return list({e["id"]: e for e in events}.values())


def public(events: list[dict[str, Any]]) -> list[int]:
    return [e["pos"]["all"] for e in events if "all" in e["audience"]]


def contiguous(events: list[dict[str, Any]]) -> bool:
    """Each stream's numbers run 1, 2, 3, ... in the order received, none twice."""
    seen: dict[str, int] = {}
    for e in events:
        for t in members(e):
            if e["pos"][t] != seen.get(t, 0) + 1:
                return False
            seen[t] = e["pos"][t]
    return True


async def test_replay_from_last_seq_then_live(hall: Hall) -> None:
    sid = await in_sign_in(hall, extensions=4)
    host = P(hall, "host")
    visible = await hall.events(sid, host)
    assert len(visible) >= 6
    # A bidder (no presence events of its own) replays from the middle of the log.
    a = P(hall, "a")
    mine = await hall.events(sid, a)
    assert contiguous(mine) and public(mine) == list(range(1, len(mine) + 1))
    k = cursor_of(mine[:3])
    listener = await hall.listen(sid, a, last=k)
    assert listener.events == mine[3:]
    assert listener.replayed == [cursor_of(mine)]
    assert await hall.events(sid, a, after=k) == mine[3:]
    live = [await extend(hall, sid, "现场顺延"), await extend(hall, sid, "再顺延")]
    await listener.until(lambda: public(listener.events)[-1:] == live[-1:])
    assert listener.events == (await hall.events(sid, a))[3:]
    assert contiguous(mine[:3] + listener.events)
    # Staff replay the same way (their own presence arrives live after the replay).
    k_staff = cursor_of(visible[:3])
    staff = await hall.listen(sid, host, last=k_staff)
    replayed = [e for e in staff.events if not after(e, staff.replayed[0])]
    assert replayed == [
        e
        for e in await hall.events(sid, host)
        if after(e, k_staff) and not after(e, staff.replayed[0])
    ]
    assert contiguous(visible[:3] + replayed)
    # An empty cursor (or none) means everything visible.
    for empty in ({}, None):
        again = await hall.listen(sid, a, last=empty)
        assert again.events == await hall.events(sid, a), empty
        await hall.hang_up(again)
    # A malformed cursor is refused with its code.
    for bad in (-5, "x", {"all": -1}, {"all": "3"}, {"all": True}, [1]):
        refused = Listener()
        hall.listeners.append(refused)
        with pytest.raises(ConnectionRefused) as err:
            await refused.connect(hall.url, a.token or "", sid, bad)
        assert err.value.code == "INVALID_INPUT", bad
        assert err.value.data["zh"] and err.value.data["en"]
    await hall.hang_up(listener)
    await hall.hang_up(staff)


async def test_reconnect_gets_exactly_what_it_missed(hall: Hall, tmp_path: Path) -> None:
    sid = await in_sign_in(hall)
    a, b = P(hall, "a"), P(hall, "b")
    first = await hall.listen(sid, a)
    await hall.upload(sid, a, hall.seal(tmp_path, a, name="a"))
    await first.until_type("bid_uploaded")
    last_seen = cursor_of(first.events)
    await hall.hang_up(first)
    # While a is away: b uploads (not a's business), a replaces its bid elsewhere, the host
    # extends the deadline, b signs in.
    await hall.upload(sid, b, hall.seal(tmp_path, b, name="b"))
    await hall.upload(sid, a, hall.seal(tmp_path, a, name="a2", price_fen=12_700_000_000))
    await extend(hall, sid, "答疑")
    await hall.request("POST", f"/api/sessions/{sid}/sign-in", b)
    missed = [e for e in await hall.events(sid, a) if after(e, last_seen)]
    assert [e["type"] for e in missed] == ["bid_uploaded", "window_extended"]
    assert missed == await hall.events(sid, a, after=last_seen)
    second = await hall.listen(sid, a, last=last_seen)
    assert second.events == missed
    # Nothing a missed is lost when the two connections' events are put together.
    assert unique(first.events + second.events) == await hall.events(sid, a)
    await hall.hang_up(second)


async def test_a_reconnect_during_a_burst_misses_nothing(hall: Hall) -> None:
    """Rooms are joined before the replay: what is committed meanwhile arrives once, in order."""
    sid = await in_sign_in(hall)
    a = P(hall, "a")
    await hall.login(a)
    await hall.login(P(hall, "host"))

    async def burst() -> None:
        for i in range(12):
            await extend(hall, sid, f"burst {i}")

    task = asyncio.create_task(burst())
    listener = await hall.listen(sid, a)
    await task
    final = (await hall.events(sid, a))[-1]["id"]
    await listener.until(lambda: final in listener.ids)
    # Live events committed during the replay were held back and sent after it, minus those
    # the replay sent (also one whose live publish came after the replay had read it): the
    # client receives its log once, in order.
    rest = await hall.events(sid, a)
    assert listener.events == rest
    assert contiguous(listener.events)
    await hall.hang_up(listener)


async def test_time_is_the_servers_clock(hall: Hall) -> None:
    sid = await in_sign_in(hall)
    listener = await hall.listen(sid, P(hall, "supervisor"))
    assert [parse_iso(t) for t in listener.times] == [hall.clock.now()]
    assert parse_iso(await listener.call_time()) == hall.clock.now()
    hall.clock.advance(1234.5)
    assert parse_iso(await listener.call_time()) == hall.clock.now()
    rest = await hall.request("GET", "/api/time")
    assert parse_iso(rest["now"]) == hall.clock.now()
    await hall.hang_up(listener)


async def test_refused_connections_change_nothing(hall: Hall) -> None:
    sid = await in_sign_in(hall)
    a = P(hall, "a")
    await hall.login(a)
    assert a.token is not None
    before = await hall.snapshot()
    cases: list[tuple[Any, str]] = [
        (None, "TOKEN_INVALID"),
        ("not a dict", "TOKEN_INVALID"),
        ({"session_id": sid}, "TOKEN_INVALID"),
        ({"token": "forged.token", "session_id": sid}, "TOKEN_INVALID"),
        ({"token": a.token, "session_id": "no-such-session"}, "NOT_FOUND"),
    ]
    for auth, code in cases:
        listener = Listener()
        hall.listeners.append(listener)
        with pytest.raises(ConnectionRefused) as err:
            await listener.connect_with(hall.url, auth)
        assert err.value.code == code, (auth, err.value.data)
        assert err.value.data["zh"] and err.value.data["en"]
    hall.clock.advance(31 * 60)  # the token expires
    listener = Listener()
    hall.listeners.append(listener)
    with pytest.raises(ConnectionRefused) as err:
        await listener.connect_with(hall.url, {"token": a.token, "session_id": sid})
    assert err.value.code == "TOKEN_INVALID"
    assert await hall.snapshot() == before


async def test_replay_on_request(hall: Hall) -> None:
    """A client that noticed a gap asks again for everything after its cursor; a malformed
    cursor is answered INVALID_INPUT and replays nothing."""
    sid = await in_sign_in(hall, extensions=3)
    a = P(hall, "a")
    listener = await hall.listen(sid, a)
    mine = await hall.events(sid, a)
    assert listener.events == mine
    k = cursor_of(mine[:2])
    await listener.client.emit("replay", {"after": k}, namespace="/hall")
    await listener.until(lambda: len(listener.replayed) == 2)
    assert listener.events[len(mine) :] == mine[2:]
    assert listener.replayed[1] == cursor_of(mine)
    for bad in (3, {"all": 2**31}, {"all": None}, {f"s{i}": 0 for i in range(17)}):
        ack = await listener.client.call("replay", {"after": bad}, namespace="/hall", timeout=5)
        assert ack["code"] == "INVALID_INPUT" and ack["zh"] and ack["en"], bad
    assert len(listener.replayed) == 2
    await hall.hang_up(listener)


def _mentions(event: dict[str, Any], code: str | None) -> bool:
    return code is not None and code in json.dumps(event, ensure_ascii=False)


async def test_live_events_are_filtered_by_role(hall: Hall, tmp_path: Path) -> None:
    """Connected from the start of sign-in to the end of decryption: bidder a never receives
    an event audienced to b (or staff only), staff receive no bid activity before the
    deadline, and what each socket received equals that viewer's REST log."""
    sid = await in_sign_in(hall)
    viewers = {k: await hall.listen(sid, P(hall, k)) for k in ("a", "b", "c")}
    viewers["host"] = await hall.listen(sid, P(hall, "host"))
    viewers["supervisor"] = await hall.listen(sid, P(hall, "supervisor"))
    envs = {}
    for k in "abc":
        envs[k] = hall.seal(tmp_path, P(hall, k), name=k)
        await hall.upload(sid, P(hall, k), envs[k])
        await hall.request("POST", f"/api/sessions/{sid}/sign-in", P(hall, k))
        await hall.request("POST", f"/api/sessions/{sid}/rehearsal", P(hall, k), {"passed": True})
    await hall.at(hall.t0 + HOUR)
    await hall.request("POST", f"/api/sessions/{sid}/start", P(hall, "host"))
    await hall.request("POST", f"/api/sessions/{sid}/decryption", P(hall, "host"))
    for k in "ab":
        p = P(hall, k)
        assert p.enc_key is not None
        cek = b64encode(unwrap(envs[k], p.enc_key, p.enc_cert))
        await hall.request("POST", f"/api/sessions/{sid}/key", p, {"cek": cek})
    await hall.request("POST", f"/api/sessions/{sid}/objections", P(hall, "a"), {"text": "请核实"})
    closes = parse_iso((await hall.view(sid, P(hall, "a")))["decrypt_closes_at"])
    await hall.at(closes)
    everything = await hall.hub.store.events_after(sid, 0)
    sealed = next(r.hash for r in everything if r.type == "session_sealed")
    table = next(r.hash for r in everything if r.type == "table_published")
    codes = {k: P(hall, k).code for k in "abc"}
    for name, listener in viewers.items():
        rest = await hall.events(sid, P(hall, name))
        await listener.until(
            lambda listener=listener, rest=rest: listener.ids[-1:] == [rest[-1]["id"]]
        )
        assert unique(listener.events) == rest, name
        assert contiguous(rest), name
        ids = [e["id"] for e in rest]
        if name in codes:
            own = f"bidder:{codes[name]}"
            for e in listener.events:
                assert "all" in e["audience"] or own in e["audience"], (name, e["type"])
                if ids.index(e["id"]) < ids.index(table):
                    others = [c for k, c in codes.items() if k != name]
                    assert not any(_mentions(e, c) for c in others), (name, e["type"])
            assert any(e["type"] == "table_published" for e in listener.events)
        else:
            for e in listener.events:
                if ids.index(e["id"]) < ids.index(sealed):
                    assert e["type"] not in {
                        "bid_uploaded",
                        "bidder_signed_in",
                        "rehearsal_reported",
                    }
                    assert not any(_mentions(e, c) for c in codes.values()), (name, e["type"])
    # Objections before the table reached only their author and staff.
    objection = next(r for r in everything if r.type == "objection_raised")
    receivers = {
        n for n, lis in viewers.items() if any(e["id"] == objection.hash for e in lis.events)
    }
    assert receivers == {"a", "host", "supervisor"}
    for listener in viewers.values():
        await hall.hang_up(listener)


async def test_a_batching_client_gets_a_commits_events_in_one_message(hall: Hall) -> None:
    sid = await hall.create_session()
    await hall.at(hall.t0 + timedelta(minutes=10))
    host, supervisor = hall.parties["host"], hall.parties["supervisor"]
    await hall.login(host)
    batches: list[list[dict[str, Any]]] = []
    batching = Listener()
    hall.listeners.append(batching)

    async def on_events(data: Any) -> None:
        batches.append(data)
        batching._changed.set()

    batching.client.on("events", on_events, namespace="/hall")
    await batching.connect_with(hall.url, {"token": host.token, "session_id": sid, "batch": True})
    plain = await hall.listen(sid, supervisor)
    await batching.until(lambda: batching.events[-1]["type"] == "party_joined")
    # A commit that shows this client one event comes as a plain ``event``.
    await extend(hall, sid, "答疑")
    await batching.until(lambda: batching.events[-1]["type"] == "window_extended")
    assert batches == []
    # At the deadline the scheduler commits the lot's end (public) and the count of bids
    # (staff); the signed checkpoint with them is for the record only.
    await hall.at(hall.t0 + HOUR + timedelta(minutes=2))  # the deadline, extended above
    await batching.until(lambda: bool(batches))
    assert [e["type"] for e in batches[0]] == ["session_failed", "bids_counted"]
    await plain.until(lambda: plain.ids[-2:] == [e["id"] for e in batches[0]])

    # One message with the commit's events, in log order, each as this viewer is shown it:
    # the plain client (another staff member) got the same events one message each.
    def without(events: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
        return [{**e, "pos": {t: n for t, n in e["pos"].items() if t != tag}} for e in events]

    assert without(batches[0], "host") == without(plain.events[-2:], "supervisor")
    assert contiguous(plain.events) and contiguous(batching.events + batches[0])
    assert "checkpoint" not in [e["type"] for e in plain.events + batching.events + batches[0]]
    await hall.hang_up(batching)
    await hall.hang_up(plain)
