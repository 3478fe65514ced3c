"""room_client without a BidBridge server: signing, the follower's bookkeeping, uploads, the CLI.

A small in-process aiohttp stub stands in for the server where the HTTP plumbing itself is under
test (login, re-login on 401, error bodies, streamed upload, download check).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from crypto.attest import b64decode, read_document, sign_document
from crypto.errors import BidBridgeError, KeyCertificateMismatch, KeyLoadFailed
from crypto.keys import SoftwareKey
from room_client import bidder_cli
from room_client.agent import (
    CHUNK,
    AgentError,
    Credentials,
    HallClient,
    HallFollower,
    backup_approval_document,
    clock_offset,
    file_chunks,
    record_bytes,
    sign_login,
    sign_table,
    verify_receipt,
)
from schemas.canonical import canonical_json
from tests.support.hall import Hall
from tests.support.pki import CODE_A, Pki, write_pair

SID = "JS-2026-0101/01/ab12cd34"


def creds_of(pki: Pki, ec: bool = False) -> Credentials:
    pair = pki.bidder_ec if ec else pki.bidder_rsa
    assert pair.signing.key is not None and pair.encryption.key is not None
    return Credentials(
        SoftwareKey(pair.signing.key),
        pair.signing.certificate,
        [],
        SoftwareKey(pair.encryption.key),
        pair.encryption.certificate,
    )


def login_doc(nonce: str = "ab" * 32, server: str = "lead-site") -> str:
    return canonical_json({"purpose": "bidbridge-login", "nonce": nonce, "server": server}).decode(
        "utf-8"
    )


# --- signing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ec", [False, True])
def test_login_signature_round_trip(pki: Pki, ec: bool) -> None:
    creds = creds_of(pki, ec)
    doc = login_doc()
    at = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    signed = read_document(b64decode(sign_login(doc, creds, at)))
    assert signed.content == doc.encode("utf-8")
    assert signed.signer == creds.signing_cert
    assert signed.signing_time == at


def test_table_signature_covers_canonical_json(pki: Pki) -> None:
    creds = creds_of(pki)
    table = {
        "session_id": SID,
        "lot_id": "JS-2026-0101/01",
        "rows": [{"bidder": CODE_A, "bidder_name": "甲建设工程有限公司", "price_fen": 12800}],
    }
    reordered = json.loads(json.dumps(table, sort_keys=False))
    reordered = {k: reordered[k] for k in reversed(list(reordered))}
    signed = read_document(b64decode(sign_table(reordered, creds)))
    assert signed.content == canonical_json(table)
    assert "甲建设".encode() in signed.content  # UTF-8, not \\u escapes


def test_record_bytes_checks_the_digest() -> None:
    record = {"title": "开标记录", "rows": [1, 2, 3]}
    raw = canonical_json(record)
    assert record_bytes(record, hashlib.sha256(raw).hexdigest()) == raw
    with pytest.raises(AgentError) as info:
        record_bytes(record, "0" * 64)
    assert info.value.code == "RECORD_MISMATCH"


def test_backup_approval_document_sorts_bidders() -> None:
    doc = json.loads(backup_approval_document(SID, "r1", ["b", "a"]))
    assert doc == {
        "purpose": "bidbridge-backup-approval",
        "session_id": SID,
        "request_id": "r1",
        "bidders": ["a", "b"],
    }


def test_verify_receipt(pki: Pki) -> None:
    server = pki.other_rsa.signing
    assert server.key is not None
    receipt = {"receipt_id": "1", "size": 10, "bidder_name": "甲"}
    sig = sign_document(
        canonical_json(receipt),
        SoftwareKey(server.key),
        server.certificate,
        at=datetime.now(UTC),
    )
    from crypto.attest import b64encode

    assert verify_receipt(receipt, b64encode(sig)).signer == server.certificate
    with pytest.raises(BidBridgeError):
        verify_receipt({**receipt, "size": 11}, b64encode(sig))


def test_credentials_from_files(pki: Pki, tmp_path: Path) -> None:
    files = write_pair(tmp_path, pki, pki.bidder_rsa)
    creds = Credentials.load(
        key=files.sign_key,
        cert=files.sign_cert,
        decrypt_key=files.enc_key,
        decrypt_cert=files.enc_cert,
    )
    assert creds.signing_cert == pki.bidder_rsa.signing.certificate
    assert creds.decrypt_cert == pki.bidder_rsa.encryption.certificate
    creds.close()
    with pytest.raises(KeyCertificateMismatch):
        Credentials.load(key=files.sign_key, cert=files.enc_cert)
    with pytest.raises(KeyLoadFailed):
        Credentials.load(key=files.sign_key)  # a PEM key carries no certificate
    with pytest.raises(KeyLoadFailed):
        Credentials.load(key=files.sign_key, cert=files.sign_cert, decrypt_cert=files.enc_cert)
    no_decrypt = Credentials.load(key=files.sign_key, cert=files.sign_cert)
    with pytest.raises(KeyLoadFailed):
        no_decrypt.require_decrypt()


def test_agent_error_is_a_bidbridge_error() -> None:
    err = AgentError("DEADLINE_PASSED", "已过投标截止时间", "the deadline has passed", "x", 409)
    assert isinstance(err, BidBridgeError)
    assert err.line() == "DEADLINE_PASSED: 已过投标截止时间 / the deadline has passed (x)"
    assert err.status == 409


def test_session_path_encodes_the_slashes() -> None:
    assert HallClient.sid_path(SID, "objections", "3", "reply") == (
        "/api/sessions/JS-2026-0101%2F01%2Fab12cd34/objections/3/reply"
    )


# --- upload body ---------------------------------------------------------------------------------


async def test_file_chunks_reports_progress(tmp_path: Path) -> None:
    path = tmp_path / "bid.p7m"
    data = bytes(range(256)) * (CHUNK * 5 // 2 // 256)
    path.write_bytes(data)
    calls: list[tuple[int, int]] = []
    chunks = [c async for c in file_chunks(path, lambda s, t: calls.append((s, t)))]
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, len(data) - 2 * CHUNK]
    assert b"".join(chunks) == data
    total = len(data)
    assert calls == [(0, total), (CHUNK, total), (2 * CHUNK, total), (total, total)]


async def test_file_chunks_notices_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "bid.p7m"
    path.write_bytes(b"x" * 200_000)

    def shrink(sent: int, total: int) -> None:
        if sent == 20_000:
            path.write_bytes(b"x" * 30_000)

    with pytest.raises(AgentError) as info:
        async for _ in file_chunks(path, shrink, chunk_size=20_000):
            pass
    assert info.value.code == "FILE_CHANGED"


def test_progress_bar_without_a_terminal() -> None:
    stream = io.StringIO()
    bar = bidder_cli.ProgressBar(stream=stream)
    for sent in range(0, 101, 5):
        bar(sent, 100)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("0% (0 B/100 B)")
    assert lines[-1].startswith("上传 uploading 100%")
    assert len(lines) == 11


# --- the follower's bookkeeping -------------------------------------------------------------------


B = f"bidder:{CODE_A}"


def ev(
    pos: dict[str, int], type_: str = "x", audience: tuple[str, ...] = ("all",), **payload: Any
) -> dict[str, Any]:
    """An event as the hall shows it to a viewer: an ``id`` (its chain hash) and ``pos``."""
    digest = hashlib.sha256(json.dumps([pos, audience, type_], sort_keys=True).encode())
    return {
        "session_id": SID,
        "id": digest.hexdigest(),
        "at": "2026-03-01T01:30:00.000000Z",
        "type": type_,
        "actor": "server:server",
        "audience": list(audience),
        "payload": payload,
        "pos": pos,
    }


def rec(n: int, type_: str = "x", **payload: Any) -> dict[str, Any]:
    """The ``n``-th public event."""
    return ev({"all": n}, type_, **payload)


def own(n: int, after_public: int, type_: str = "x", **payload: Any) -> dict[str, Any]:
    """The bidder's own ``n``-th event (audience: the bidder alone), after ``after_public``
    public ones."""
    return ev({"all": after_public, B: n}, type_, (B,), **payload)


def follower(last: dict[str, int] | None = None) -> HallFollower:
    return HallFollower(HallClient("http://127.0.0.1:9", None), SID, last=last)


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in records]


def queued(f: HallFollower) -> list[dict[str, Any]]:
    return [f.queue.get_nowait() for _ in range(f.queue.qsize())]


async def test_follower_drops_duplicates_by_id_and_by_position() -> None:
    f = follower()
    assert f.feed(rec(1)) == [rec(1)] and f.feed(rec(2))
    assert not f.feed(rec(2))  # the same id again
    assert not f.feed({**rec(2), "id": "e" * 64})  # another id, but no position moves
    assert f.duplicates == 2
    assert (f.cursor, f.gap, f.held) == ({"all": 2}, False, [])
    assert ids(queued(f)) == ids([rec(1), rec(2)])
    assert set(f.by_id) == set(ids([rec(1), rec(2)]))
    assert not f.feed({"seq": 3, "type": "x"})  # the old wire form is not an event
    assert not f.feed({**rec(3), "pos": {"all": "3"}}) and f.cursor == {"all": 2}


async def test_follower_gap_detection_and_replay_cover() -> None:
    f = follower()
    f.feed(rec(1))
    f.feed(rec(2))
    assert not f.feed(rec(5))  # held behind the gap
    assert f.gap and f.missing() == {"all": [3, 4]}
    assert f.cursor == {"all": 2} and ids(f.held) == ids([rec(5)])
    assert f.feed(rec(3)) == [rec(3)]  # a late arrival fills part of the gap
    assert f.missing() == {"all": [4]} and f.cursor == {"all": 3}
    # The server replayed everything up to 5 for this viewer: 4 is not missing after all.
    assert f.mark_replayed({"all": 5}) == [rec(5)]
    assert not f.gap and f.cursor == {"all": 5} and not f.held
    assert not f.feed(rec(4))  # at or below the cursor: nothing new
    assert f.feed(rec(6)) and f.cursor == {"all": 6}
    assert ids(f.ordered()) == ids([rec(1), rec(2), rec(3), rec(5), rec(6)])


async def test_follower_out_of_order_and_starting_point() -> None:
    f = follower(last={"all": 10})
    assert not f.feed(rec(9))
    assert not f.feed(rec(12)) and f.gap and f.missing() == {"all": [11]}
    assert ids(f.feed(rec(11))) == ids([rec(11), rec(12)])  # 11, then the held 12
    assert not f.gap and f.cursor == {"all": 12}
    assert ids(f.ordered()) == ids([rec(11), rec(12)])


async def test_follower_follows_its_own_stream_and_places_it_among_the_public_one() -> None:
    f = follower()
    f.feed(rec(1))
    assert f.feed(own(1, 1, "bid_uploaded"))
    assert f.cursor == {"all": 1, B: 1}
    # Its own second event skips one of its own: a gap in its stream.
    assert not f.feed(own(3, 1)) and f.missing() == {B: [2]}
    assert ids(f.feed(own(2, 1))) == ids([own(2, 1), own(3, 1)])
    # An own event after three public ones when only one was received: two public are missing.
    assert not f.feed(own(4, 3)) and f.missing() == {"all": [2, 3]}
    assert not f.feed(rec(3)) and f.missing() == {"all": [2]}
    assert ids(f.feed(rec(2))) == ids([rec(2), rec(3), own(4, 3)])
    assert f.cursor == {"all": 3, B: 4} and not f.held
    order = [rec(1), own(1, 1, "bid_uploaded"), own(2, 1), own(3, 1), rec(2), rec(3), own(4, 3)]
    assert ids(f.ordered()) == ids(order)


async def test_follower_keeps_the_log_order_when_a_hidden_stream_comes_late() -> None:
    # A staff member's host-only event after public 1 arrives after public 2: nothing told of
    # it (its stream's next number is simply next), it is taken, and placed before public 2.
    host_only = ev({"all": 1, "host": 1}, "party_joined", ("host",))
    f = follower()
    f.feed(rec(1))
    f.feed(rec(2))
    assert f.feed(host_only) == [host_only]
    assert ids(f.ordered()) == ids([rec(1), host_only, rec(2)])
    assert ids(queued(f)) == ids([rec(1), rec(2), host_only])  # the order they were taken


async def test_follower_merges_live_events_after_the_replay() -> None:
    # Reconnecting after own event 1 and public event 2: while the server replays, a live
    # event (own 4) and a live copy of a replayed one (own 3) come before the replay's own.
    f = follower(last={"all": 2, B: 1})
    f.client.token = "t"
    f.client.token_expires_at = datetime.now(UTC) + timedelta(minutes=10)
    assert (await f._auth())["last"] == {"all": 2, B: 1} and f._replay_pending
    for record in (own(4, 3), own(3, 3), own(2, 2), rec(3), own(3, 3), rec(4)):
        assert not f.feed(record)  # nothing is taken before the replay is done
    assert f.duplicates == 1
    merged = f.mark_replayed({"all": 3, B: 3})
    assert ids(merged) == ids([own(2, 2), rec(3), own(3, 3), own(4, 3), rec(4)])
    assert ids(queued(f)) == ids(merged) == ids(f.ordered())
    assert f.cursor == {"all": 4, B: 4} and not f.held and f.duplicates == 1


async def test_follower_wait_for() -> None:
    f = follower()
    f.feed(rec(1, "session_sealed"))
    got = await f.wait_for(lambda r: r["type"] == "session_sealed", timeout=1)
    assert got["pos"] == {"all": 1}
    import asyncio

    waiting = asyncio.ensure_future(f.wait_for(lambda r: r["type"] == "opening_started", 5))
    await asyncio.sleep(0)
    f.feed(rec(2, "bids_counted"))
    assert not waiting.done()
    f.feed(rec(3, "opening_started"))
    assert (await waiting)["pos"] == {"all": 3}
    with pytest.raises(AgentError) as info:
        await f.wait_for(lambda r: r["type"] == "never", timeout=0.01)
    assert info.value.code == "WAIT_TIMEOUT"


async def test_follower_auth_resumes_from_the_cursor() -> None:
    f = follower()
    f.client.token = "t"
    f.client.token_expires_at = datetime.now(UTC) + timedelta(minutes=10)
    f.feed(rec(1))
    f.feed(own(1, 1))
    f.feed(rec(4))  # held: 2 and 3 are missing
    assert await f._auth() == {
        "token": "t",
        "session_id": SID,
        "last": {"all": 1, B: 1},
        "batch": True,
    }


async def test_follower_replay_may_finish_before_the_connect_handler() -> None:
    # The server replays inside its connect handler, so "replayed" can arrive before the
    # client's "connect" event; the replay must not be left marked as pending.
    f = follower()
    f.client.token = "t"
    f.client.token_expires_at = datetime.now(UTC) + timedelta(minutes=10)
    await f._auth()
    assert f._replay_pending
    await f._on_event(rec(1))
    await f._on_replayed({"pos": {"all": 3}})
    await f._on_connect()
    assert not f._replay_pending and f.cursor == {"all": 3} and f.connections == 1
    assert ids(f.ordered()) == ids([rec(1)])
    await f.close()


async def test_follower_asks_for_one_replay_after_its_cursor() -> None:
    import asyncio

    f = follower()
    asked: list[Any] = []

    async def emit(name: str, data: Any, namespace: str, callback: Any = None) -> None:
        asked.append((name, data, namespace))

    f.sio.emit = emit  # type: ignore[method-assign]
    f.sio.connected = True
    taken: list[str] = []
    f.on_event = lambda r: taken.append(r["id"])
    await f._on_events([rec(1), own(1, 1)])
    await f._on_event(own(3, 1))  # own 2 is missing
    await asyncio.sleep(0)
    assert asked == [("replay", {"after": {"all": 1, B: 1}}, "/hall")]
    await f._on_event(rec(2))  # arrives during the replay: held until it is done
    await asyncio.sleep(0)
    assert len(asked) == 1 and taken == ids([rec(1), own(1, 1)])
    await f._on_event(own(2, 1))  # the replay's
    await f._on_replayed({"pos": {"all": 1, B: 3}})
    assert taken == ids([rec(1), own(1, 1), own(2, 1), own(3, 1), rec(2)])
    assert f.cursor == {"all": 2, B: 3} and not f.gap
    # A replay that leaves a gap as it was is not asked for again until something comes.
    await f._on_event(rec(4))
    await asyncio.sleep(0)
    assert len(asked) == 2 and asked[-1][1] == {"after": {"all": 2, B: 3}}
    await f._on_replayed({"pos": {"all": 2, B: 3}})
    await asyncio.sleep(0)
    assert len(asked) == 2 and f.gap
    await f._on_event(rec(5))
    await asyncio.sleep(0)
    assert len(asked) == 3
    f.sio.connected = False
    await f.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_bidders_positions_do_not_move_when_another_bidder_uploads(
    hall: Hall, tmp_path: Path
) -> None:
    """Rule 4 through the agent, against a real hall (in process): before the deadline another
    bidder's uploads leave every number bidder a is shown where it was (the follower's cursor,
    the session view's ``pos``, the next public event's number), and the host's as well; a's
    own upload moves a's own stream by one. The follower ends with exactly what the REST route
    lists for a, in the same order, and never a ``seq``."""
    sid = await hall.create_session()
    await hall.at(hall.t0 + timedelta(minutes=10))  # sign-in is open, the deadline an hour off
    a, b, host = hall.parties["a"], hall.parties["b"], hall.parties["host"]
    mine = f"bidder:{a.code}"
    await hall.login(a)
    client = HallClient(hall.url, None)
    client.token = a.token
    client.token_expires_at = datetime.now(UTC) + timedelta(hours=1)
    follower = HallFollower(client, sid, reconnection=False)

    def heads(pos: dict[str, int]) -> dict[str, int]:
        return {t: n for t, n in pos.items() if n}

    async def host_heads() -> dict[str, int]:
        return heads((await hall.request("GET", f"/api/sessions/{sid}", host))["pos"])

    try:
        await follower.connect(timeout=10)
        before = dict(follower.cursor)
        assert before["all"] >= 1 and set(before) <= {"all", mine}, before
        view = heads((await client.session(sid))["pos"])
        assert view == before
        staff = await host_heads()
        for i in range(3):
            await hall.upload(sid, b, hall.seal(tmp_path, b, name=f"b{i}"))
        assert heads((await client.session(sid))["pos"]) == view
        assert await host_heads() == staff, "the host could count bids"
        assert await client.events(sid, follower.cursor) == []
        assert follower.cursor == before

        await hall.request(
            "POST", f"/api/sessions/{sid}/extend", host, {"minutes": 1, "reason": "顺延"}
        )
        extended = await follower.wait_for(lambda e: e["type"] == "window_extended", 5)
        assert extended["pos"] == {"all": before["all"] + 1}
        await hall.upload(sid, a, hall.seal(tmp_path, a, name="a"))
        uploaded = await follower.wait_for(lambda e: e["type"] == "bid_uploaded", 5)
        assert uploaded["pos"] == {"all": before["all"] + 1, mine: before.get(mine, 0) + 1}
        assert follower.cursor == {"all": before["all"] + 1, mine: before.get(mine, 0) + 1}
        assert heads((await client.session(sid))["pos"]) == follower.cursor
        assert await host_heads() == {**staff, "all": staff["all"] + 1}

        seen = follower.ordered()
        assert seen == await client.events(sid)
        assert not [e for e in seen if b.code in json.dumps(e["payload"])]
        assert not [e for e in seen if {"seq", "prev_hash", "hash"} & set(e)]
    finally:
        await follower.close()
        await client.close()


async def test_follower_countdown_uses_the_offset() -> None:
    f = follower()
    f.offset = timedelta(seconds=30)  # the server is 30 s ahead
    target = datetime.now(UTC) + timedelta(minutes=2)
    left = f.countdown(target.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert timedelta(seconds=89) < left <= timedelta(seconds=90)


def test_clock_offset_takes_the_midpoint() -> None:
    sent = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    server = datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC)
    assert clock_offset(server, sent, timedelta(seconds=2)) == timedelta(seconds=9)


# --- HTTP plumbing against a stub ---------------------------------------------------------------


class Stub:
    """Just enough of the hall's API to exercise the client."""

    def __init__(self) -> None:
        self.logins = 0
        self.expire_next = False
        self.uploaded = b""
        self.upload_length: int | None = None
        self.stored = b"sealed bid bytes" * 1000
        self.lie_about_digest = False
        self.after: list[list[str]] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * CHUNK)
        r = app.router
        r.add_post("/api/auth/challenge", self.challenge)
        r.add_post("/api/auth/login", self.login)
        r.add_get("/api/sessions/{sid}", self.session)
        r.add_get("/api/sessions/{sid}/events", self.events)
        r.add_post("/api/sessions/{sid}/sign-in", self.refuse)
        r.add_put("/api/sessions/{sid}/bid", self.upload)
        r.add_get("/api/sessions/{sid}/bid", self.download)
        return app

    async def challenge(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "nonce": "ab" * 32,
                "server": "lead-site",
                "expires_at": "2030-01-01T00:00:00Z",
                "document": login_doc(),
            }
        )

    async def login(self, request: web.Request) -> web.Response:
        body = await request.json()
        doc = read_document(b64decode(body["signature"]))
        assert doc.content == login_doc().encode()
        self.logins += 1
        return web.json_response(
            {
                "token": f"tok{self.logins}",
                "role": "bidder",
                "party_id": CODE_A,
                "name": "甲",
                "expires_at": "2030-01-01T00:00:00Z",
            }
        )

    def _authorised(self, request: web.Request) -> web.Response | None:
        if self.expire_next or request.headers.get("Authorization") != f"Bearer tok{self.logins}":
            self.expire_next = False
            return web.json_response(
                {
                    "code": "TOKEN_INVALID",
                    "zh": "登录凭证无效",
                    "en": "token invalid",
                    "detail": "",
                },
                status=401,
            )
        return None

    async def session(self, request: web.Request) -> web.Response:
        if (refused := self._authorised(request)) is not None:
            return refused
        sid = request.match_info["sid"]
        return web.json_response(
            {"session_id": sid, "view": {"status": "sign_in"}, "pos": {"all": 3}}
        )

    async def events(self, request: web.Request) -> web.Response:
        if (refused := self._authorised(request)) is not None:
            return refused
        self.after.append(request.query.getall("after", []))
        return web.json_response({"events": [rec(1)]})

    async def refuse(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"code": "DEADLINE_PASSED", "zh": "已过截止时间", "en": "too late", "detail": "d"},
            status=409,
        )

    async def upload(self, request: web.Request) -> web.Response:
        if (refused := self._authorised(request)) is not None:
            return refused
        self.upload_length = request.content_length
        self.uploaded = await request.read()
        return web.json_response(
            {"receipt": {"size": len(self.uploaded)}, "signature": "", "pos": {"all": 3, B: 1}}
        )

    async def download(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256(self.stored).hexdigest()
        if self.lie_about_digest:
            digest = "0" * 64
        return web.Response(body=self.stored, headers={"X-Envelope-SHA256": digest})


@pytest.fixture
async def stub_client(aiohttp_server: Any, pki: Pki) -> Any:
    stub = Stub()
    server = await aiohttp_server(stub.app())
    client = HallClient(str(server.make_url("")), creds_of(pki))
    yield stub, client
    await client.close()


async def test_client_logs_in_and_again_on_401(stub_client: Any) -> None:
    stub, client = stub_client
    out = await client.session(SID)
    assert out["session_id"] == SID  # the encoded slashes arrive decoded
    assert (stub.logins, client.role, client.party_id) == (1, "bidder", CODE_A)
    stub.expire_next = True
    assert (await client.session(SID))["pos"] == {"all": 3}
    assert stub.logins == 2 and client.token == "tok2"


async def test_client_asks_for_events_after_a_cursor(stub_client: Any) -> None:
    stub, client = stub_client
    assert await client.events(SID) == [rec(1)]
    assert await client.events(SID, {"all": 3, B: 2}) == [rec(1)]
    assert stub.after == [[], ["all:3", f"{B}:2"]]


async def test_client_raises_the_servers_error(stub_client: Any) -> None:
    _, client = stub_client
    with pytest.raises(AgentError) as info:
        await client.sign_in(SID)
    err = info.value
    assert (err.code, err.zh, err.en, err.detail, err.status) == (
        "DEADLINE_PASSED", "已过截止时间", "too late", "d", 409
    )  # fmt: skip


async def test_client_upload_streams_with_a_length(stub_client: Any, tmp_path: Path) -> None:
    stub, client = stub_client
    path = tmp_path / "bid.p7m"
    path.write_bytes(b"z" * (CHUNK + 123))
    seen: list[int] = []
    receipt = await client.upload(SID, path, progress=lambda s, t: seen.append(s))
    assert stub.uploaded == path.read_bytes()
    assert stub.upload_length == CHUNK + 123
    assert receipt["receipt"]["size"] == CHUNK + 123
    assert seen == [0, CHUNK, CHUNK + 123]


async def test_client_upload_again_after_401(stub_client: Any, tmp_path: Path) -> None:
    stub, client = stub_client
    await client.login()
    stub.expire_next = True
    path = tmp_path / "bid.p7m"
    path.write_bytes(b"y" * 5000)
    await client.upload(SID, path)
    assert stub.uploaded == path.read_bytes() and stub.logins == 2


async def test_client_download_checks_the_digest(stub_client: Any, tmp_path: Path) -> None:
    stub, client = stub_client
    dest = tmp_path / "own.p7m"
    assert await client.download_own(SID, dest) == hashlib.sha256(stub.stored).hexdigest()
    assert dest.read_bytes() == stub.stored
    stub.lie_about_digest = True
    with pytest.raises(AgentError) as info:
        await client.download_own(SID, tmp_path / "again.p7m")
    assert info.value.code == "DOWNLOAD_CORRUPT"
    assert not (tmp_path / "again.p7m").exists()


async def test_client_unreachable(pki: Pki) -> None:
    async with HallClient("http://127.0.0.1:9", creds_of(pki)) as client:
        with pytest.raises(AgentError) as info:
            await client.login()
    assert info.value.code == "SERVER_UNREACHABLE"


# --- CLI ------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bidbridge")
    sub = p.add_subparsers(dest="command", required=True)
    bidder_cli.register(sub)
    return p


COMMANDS = [
    ["bidder"],
    *[["bidder", c] for c in ("sessions", "upload", "withdraw", "receipt", "rehearse",
                              "sign-in", "follow", "decrypt", "object", "confirm")],
    ["host"],
    *[["host", c] for c in ("publish", "start", "decrypt", "confirmation", "suspend", "resume",
                            "extend", "reply", "sign-record", "status", "follow")],
    ["supervisor"],
    *[["supervisor", c] for c in ("join", "sign-record", "status", "suspend", "resume")],
]  # fmt: skip


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a))
def test_cli_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parser().parse_args([*argv, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: bidbridge " + " ".join(argv))


def test_cli_parses_the_options() -> None:
    args = parser().parse_args(
        [
            "host",
            "extend",
            "--server",
            "https://x",
            "--session",
            SID,
            "--key",
            "k.pem",
            "--minutes",
            "15",
            "--reason",
            "网络故障",
        ]
    )
    assert (args.minutes, args.reason, args.session) == (15, "网络故障", SID)
    args = parser().parse_args(["bidder", "follow", "--until", "closed", "--decrypt"])
    assert args.until == "closed" and args.decrypt and not args.confirm


def test_cli_refuses_without_a_key_or_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIDBRIDGE_SERVER", raising=False)
    args = parser().parse_args(["bidder", "sessions", "--key", "k.pem"])
    with pytest.raises(bidder_cli.UsageError):
        args.handler(args)
    args = parser().parse_args(["bidder", "sessions", "--server", "http://127.0.0.1:9"])
    with pytest.raises(bidder_cli.UsageError):
        args.handler(args)


def test_describe_and_formatting() -> None:
    table = {
        "lot_id": "JS-2026-0101/01",
        "rows": [
            {
                "bidder": CODE_A,
                "bidder_name": "甲建设工程有限公司",
                "status": "decrypted",
                "price_fen": 12_800_000_000,
                "duration_days": 365,
                "fields": {},
            }
        ],
    }
    published = rec(7, "table_published", table=table)
    text = bidder_cli.describe(published, CODE_A)
    assert "开标记录表已公布" in text and "128,000,000.00 元" in text
    assert text.startswith(f"[{published['id'][:8]}] 2026-03-01 09:30:00 ")  # no count shown
    assert "本单位" in bidder_cli.describe(rec(8, "bid_decrypted", bidder=CODE_A), CODE_A)
    assert bidder_cli.show_time("2026-03-01T01:30:00.000000Z") == "2026-03-01 09:30:00 北京时间"
    assert bidder_cli.show_span(timedelta(days=1, seconds=3723)) == "1天 days 01:02:03"
    assert bidder_cli.show_span(timedelta(seconds=-1)) == "已到 reached"
    view = {"status": "decrypting", "decrypt_closes_at": "2026-03-01T02:00:00Z", "timetable": {}}
    assert bidder_cli.next_deadline(view) == (
        "距解密截止 until decryption closes",
        "2026-03-01T02:00:00Z",
    )
