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


def rec(seq: int, type_: str = "x", **payload: Any) -> dict[str, Any]:
    h = f"{seq:064x}"
    prev = f"{seq - 1:064x}"
    return {
        "session_id": SID,
        "seq": seq,
        "at": "2026-03-01T01:30:00.000000Z",
        "type": type_,
        "actor": "server:server",
        "audience": ["all"],
        "payload": payload,
        "prev_hash": prev,
        "hash": h,
    }


def follower(last_seq: int = 0) -> HallFollower:
    return HallFollower(HallClient("http://127.0.0.1:9", None), SID, last_seq=last_seq)


async def test_follower_drops_duplicates_and_tracks_seq() -> None:
    f = follower()
    assert f.feed(rec(1)) and f.feed(rec(2))
    assert not f.feed(rec(2))
    assert f.duplicates == 1
    assert (f.last_seq, f.resume_seq, f.gap) == (2, 2, False)
    assert [f.queue.get_nowait()["seq"] for _ in range(f.queue.qsize())] == [1, 2]


async def test_follower_gap_detection_and_replay_cover() -> None:
    f = follower()
    f.feed(rec(1))
    f.feed(rec(2))
    assert f.feed(rec(5))
    assert f.gap and f.missing() == [3, 4]
    assert (f.last_seq, f.resume_seq) == (5, 2)
    f.feed(rec(3))  # a late arrival fills part of the gap
    assert f.missing() == [4] and f.resume_seq == 3
    f.mark_replayed(5)  # the server replayed everything visible up to 5: 4 is not for us
    assert not f.gap and f.resume_seq == 5
    assert not f.feed(rec(4))  # below the covered point: nothing new
    assert f.feed(rec(6)) and f.resume_seq == 6


async def test_follower_out_of_order_and_starting_point() -> None:
    f = follower(last_seq=10)
    assert not f.feed(rec(9))
    assert f.feed(rec(12)) and f.gap and f.missing() == [11]
    assert f.feed(rec(11)) and not f.gap and f.resume_seq == 12
    assert [r["seq"] for r in f.ordered()] == [11, 12]


async def test_follower_notices_a_broken_chain() -> None:
    f = follower()
    f.feed(rec(1))
    bad = {**rec(2), "prev_hash": "f" * 64}
    f.feed(bad)
    assert f.chain_breaks == [2]
    f.feed(rec(4))
    f.feed(rec(3))  # fits both neighbours
    assert f.chain_breaks == [2]


async def test_follower_wait_for() -> None:
    f = follower()
    f.feed(rec(1, "session_sealed"))
    got = await f.wait_for(lambda r: r["type"] == "session_sealed", timeout=1)
    assert got["seq"] == 1
    import asyncio

    waiting = asyncio.ensure_future(f.wait_for(lambda r: r["type"] == "opening_started", 5))
    await asyncio.sleep(0)
    f.feed(rec(2, "bids_counted"))
    assert not waiting.done()
    f.feed(rec(3, "opening_started"))
    assert (await waiting)["seq"] == 3
    with pytest.raises(AgentError) as info:
        await f.wait_for(lambda r: r["type"] == "never", timeout=0.01)
    assert info.value.code == "WAIT_TIMEOUT"


async def test_follower_auth_resumes_from_the_contiguous_seq() -> None:
    f = follower()
    f.client.token = "t"
    f.client.token_expires_at = datetime.now(UTC) + timedelta(minutes=10)
    f.feed(rec(1))
    f.feed(rec(4))
    assert await f._auth() == {"token": "t", "session_id": SID, "last_seq": 1, "batch": True}


async def test_follower_replay_may_finish_before_the_connect_handler() -> None:
    # The server replays inside its connect handler, so "replayed" can arrive before the
    # client's "connect" event; the replay must not be left marked as pending.
    f = follower()
    f.client.token = "t"
    f.client.token_expires_at = datetime.now(UTC) + timedelta(minutes=10)
    await f._auth()
    assert f._replay_pending
    await f._on_event(rec(1))
    await f._on_replayed({"seq": 3})
    await f._on_connect()
    assert not f._replay_pending and f.resume_seq == 3 and f.connections == 1
    await f.close()


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

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * CHUNK)
        r = app.router
        r.add_post("/api/auth/challenge", self.challenge)
        r.add_post("/api/auth/login", self.login)
        r.add_get("/api/sessions/{sid}", self.session)
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
        return web.json_response({"session_id": sid, "view": {"status": "sign_in"}, "seq": 3})

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
            {"receipt": {"size": len(self.uploaded)}, "signature": "", "seq": 4}
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
    assert (await client.session(SID))["seq"] == 3
    assert stub.logins == 2 and client.token == "tok2"


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
    text = bidder_cli.describe(rec(7, "table_published", table=table), CODE_A)
    assert "开标记录表已公布" in text and "128,000,000.00 元" in text
    assert "本单位" in bidder_cli.describe(rec(8, "bid_decrypted", bidder=CODE_A), CODE_A)
    assert bidder_cli.show_time("2026-03-01T01:30:00.000000Z") == "2026-03-01 09:30:00 北京时间"
    assert bidder_cli.show_span(timedelta(days=1, seconds=3723)) == "1天 days 01:02:03"
    assert bidder_cli.show_span(timedelta(seconds=-1)) == "已到 reached"
    view = {"status": "decrypting", "decrypt_closes_at": "2026-03-01T02:00:00Z", "timetable": {}}
    assert bidder_cli.next_deadline(view) == (
        "距解密截止 until decryption closes",
        "2026-03-01T02:00:00Z",
    )
