"""Crash recovery (DESIGN.md sections 4 and 5).

Kill the server process (SIGKILL) while decrypting, restart it: every event, receipt and
decrypted bid is still there, no ``seq`` gap, and the window still closes at its instant.

The server runs as a separate ``bidbridge serve`` process with an accelerated clock (10x)
anchored at one instant, so the restarted process continues the same time line. Everything
goes through real HTTP and socket.io; the store is read directly only at the very end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import socketio
from cryptography.hazmat.primitives import serialization

from crypto import ca
from crypto.attest import b64decode, b64encode, sign_document, verify_document
from crypto.bid import seal_bid, unwrap
from crypto.envelope import Recipient
from schemas.canonical import canonical_json
from schemas.time import iso, parse_iso
from server.audit.chain import GENESIS, event_hash
from server.store import open_store
from tests.conftest import (
    CODE_A,
    CODE_B,
    CODE_C,
    Pki,
    make_package,
    summary_for,
    write_cert,
    write_key,
)
from tests.hall import ApiError, Party, company, person, register_parties

FACTOR = 10.0
"""The server's clock runs this many times faster than real time."""
LATE = timedelta(seconds=10)
"""How late (clock time, i.e. 1 s real) the window may close after its instant."""
CLOCK_SLACK = timedelta(seconds=2)
"""How far (clock time) the restarted server's clock may be off the time line (0.2 s real)."""
DEADLINE_AHEAD = timedelta(seconds=40)
DECRYPT_MINUTES = 2

REPO = Path(__file__).resolve().parents[1]


def _bidbridge() -> str:
    here = Path(sys.executable).with_name("bidbridge")
    found = str(here) if here.exists() else shutil.which("bidbridge")
    assert found, "the bidbridge command is not installed"
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the server process ----------------------------------------------------------------------


@dataclass
class ServerProcess:
    """``bidbridge serve`` in a child process; started again with the very same arguments."""

    argv: list[str]
    env: dict[str, str]
    log: Path
    url: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    async def start(self, http: aiohttp.ClientSession) -> None:
        assert self.proc is None or self.proc.poll() is not None
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n--- start {self.starts} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        give_up = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                async with http.get(
                    self.url + "/api/time", timeout=aiohttp.ClientTimeout(total=1)
                ) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            if time.monotonic() > give_up:
                pytest.fail(f"the server did not answer /api/time in 15 s:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, no flushing, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text("utf-8", "replace")[-4000:] if self.log.exists() else ""


# --- a client of the real API ----------------------------------------------------------------


@dataclass
class Client:
    http: aiohttp.ClientSession
    url: str
    parties: dict[str, Party]
    sockets: list[socketio.AsyncClient] = field(default_factory=list)

    async def now(self) -> datetime:
        return parse_iso(str((await self.request("GET", "/api/time"))["now"]))

    async def request(
        self,
        method: str,
        path: str,
        who: Party | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        h = dict(headers or {})
        if who is not None:
            if who.token is None:
                await self.login(who)
            h["Authorization"] = f"Bearer {who.token}"
        async with self.http.request(
            method, self.url + path, json=json_body, data=data, headers=h
        ) as r:
            body = await r.json(content_type=None)
            if r.status >= 400:
                raise ApiError(r.status, body)
            return body

    async def login(self, who: Party) -> None:
        ch = await self.request("POST", "/api/auth/challenge")
        at = await self.now()
        sig = sign_document(ch["document"].encode(), who.key, who.cert, at=at, chain=who.chain)
        out = await self.request("POST", "/api/auth/login", json_body={"signature": b64encode(sig)})
        who.token = out["token"]

    async def view(self, sid: str, who: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/api/sessions/{sid}", self.parties[who]))

    async def events(self, sid: str, who: str) -> list[dict[str, Any]]:
        out = await self.request("GET", f"/api/sessions/{sid}/events", self.parties[who])
        return list(out["events"])

    async def full_log(self, sid: str) -> list[dict[str, Any]]:
        """Every event, as the union of what all audiences see (no one party sees them all)."""
        by_seq: dict[int, dict[str, Any]] = {}
        for who in ("host", "supervisor", "a", "b", "c"):
            seen = await self.events(sid, who)
            seqs = [e["seq"] for e in seen]
            assert seqs == sorted(set(seqs)), f"{who}'s events are out of order or repeated"
            for e in seen:
                assert by_seq.setdefault(e["seq"], e) == e, f"seq {e['seq']} differs by viewer"
        return [by_seq[s] for s in sorted(by_seq)]

    async def submit_key(self, sid: str, who: str, envelope: Path) -> dict[str, Any]:
        p = self.parties[who]
        assert p.enc_key is not None
        cek = unwrap(envelope, p.enc_key, p.enc_cert)
        return dict(
            await self.request("POST", f"/api/sessions/{sid}/key", p, {"cek": b64encode(cek)})
        )

    async def hall_socket(
        self, sid: str, who: str, last_seq: int, got: dict[int, dict[str, Any]]
    ) -> socketio.AsyncClient:
        """A socket.io client in the hall; waits until the server says the replay is done."""
        p = self.parties[who]
        if p.token is None:
            await self.login(p)
        sio = socketio.AsyncClient(reconnection=False)
        replayed = asyncio.Event()

        async def on_event(data: dict[str, Any]) -> None:
            old = got.setdefault(data["seq"], data)
            assert old == data, f"seq {data['seq']} arrived twice with different content"

        async def on_replayed(data: Any) -> None:
            replayed.set()

        sio.on("event", on_event, namespace="/hall")
        sio.on("replayed", on_replayed, namespace="/hall")
        await sio.connect(
            self.url,
            namespaces=["/hall"],
            transports=["websocket"],
            auth={"token": p.token, "session_id": sid, "last_seq": last_seq},
            wait_timeout=5,
        )
        await asyncio.wait_for(replayed.wait(), 5)
        self.sockets.append(sio)
        return sio

    async def close_sockets(self) -> None:
        for sio in self.sockets:
            with contextlib.suppress(Exception):  # the server may be gone: this test kills it
                await asyncio.wait_for(sio.disconnect(), 2)
        self.sockets.clear()


async def until(
    check: Callable[[], Awaitable[Any]], what: str, seconds: float = 10, every: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something true; fail after ``seconds`` of real time."""
    give_up = time.monotonic() + seconds
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > give_up:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(every)


# --- fixture: data, identity, trust, the first centre account, the server ------------------


@dataclass
class Site:
    server: ServerProcess
    client: Client
    data: Path
    database_url: str | None
    tmp: Path
    server_cert_pem: bytes


def _write_pem_crl(path: Path, crl: Any) -> None:
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


@pytest_asyncio.fixture
async def site(pki: Pki, tmp_path: Path, store_url: str) -> AsyncIterator[Site]:
    data = tmp_path / "data"
    identity = tmp_path / "identity"
    trust = tmp_path / "trust"
    for d in (data, identity, trust):
        d.mkdir()
    platform = ca.issue_person(
        pki.root_a, name="平台签章", role="centre", person_id="PLATFORM1", key_type="ec-p256"
    )
    write_key(identity / "server.key", platform)
    write_cert(identity / "server.pem", platform.certificate)
    for name, issuer in (("root_a", pki.root_a), ("root_b", pki.root_b), ("sub_b", pki.sub_b)):
        write_cert(trust / f"{name}.pem", issuer.certificate)
        _write_pem_crl(trust / f"{name}.crl", pki.crl(issuer))

    database_url = None if store_url.startswith("sqlite") else store_url
    db_args = ["--database-url", database_url] if database_url else []
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["PYTHONUNBUFFERED"] = "1"
    bidbridge = _bidbridge()

    parties = {
        "centre": person(pki.root_a, "中心管理员", "centre", "C001", []),
        "host": person(pki.root_a, "主持人王", "host", "H001", []),
        "supervisor": person(pki.root_b, "监管李", "supervisor", "S001", []),
        "a": company(pki.bidder_rsa, "甲建设工程有限公司", CODE_A, []),
        "b": company(pki.bidder_ec, "乙路桥集团有限公司", CODE_B, [pki.sub_b.certificate]),
        "c": company(pki.other_rsa, "丙市政工程有限公司", CODE_C, []),
    }
    centre_pem = write_cert(tmp_path / "centre.pem", parties["centre"].cert)
    added = subprocess.run(
        [bidbridge, "admin", "add-account", "--data", str(data), *db_args,
         "--role", "centre", "--name", "中心管理员", "--cert", str(centre_pem)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    port = _free_port()
    anchor = iso(datetime.now(UTC))  # computed once: the restarted server keeps this time line
    argv = [
        bidbridge, "serve", "--data", str(data), *db_args, "--host", "127.0.0.1",
        "--port", str(port), "--identity", str(identity), "--trust", str(trust),
        "--accelerate", str(FACTOR), "--accelerate-from", anchor,
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(argv, env, tmp_path / "server.log", url)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    client = Client(http, url, parties)
    try:
        await server.start(http)
        yield Site(
            server,
            client,
            data,
            database_url,
            tmp_path,
            platform.certificate.public_bytes(serialization.Encoding.PEM),
        )
    finally:
        await client.close_sockets()
        server.kill()
        await http.close()


# --- setup through the API -------------------------------------------------------------------


async def register(client: Client) -> None:
    await register_parties(client.request, client.parties)


def seal(tmp: Path, bidder: Party, name: str, document_bytes: int, price_fen: int) -> Path:
    assert bidder.code is not None and bidder.enc_cert is not None
    folder = make_package(
        tmp / f"{name}-src",
        bidder.code,
        documents={"商务标.pdf": b"%PDF-1.7 bid\n" + os.urandom(document_bytes)},
        summary=summary_for(bidder.code, bidder_name=bidder.name, price_fen=price_fen),
    )
    out = tmp / f"{name}.p7m"
    seal_bid(
        folder,
        out,
        signer=bidder.key,
        signer_cert=bidder.cert,
        chain=bidder.chain,
        recipients=[Recipient(bidder.enc_cert)],
    )
    return out


def check_chain(log: list[dict[str, Any]]) -> None:
    """seq 1..n, no gap, no duplicate, every link hashes to the next (from GENESIS)."""
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1)), "a seq gap or duplicate"
    prev = GENESIS
    for e in log:
        assert e["prev_hash"] == prev, f"seq {e['seq']}: prev_hash does not link"
        assert event_hash(prev, e) == e["hash"], f"seq {e['seq']}: hash does not match content"
        prev = e["hash"]


# --- the test ----------------------------------------------------------------------------------


async def test_sigkill_while_decrypting_loses_nothing(site: Site) -> None:
    client, server, tmp = site.client, site.server, site.tmp
    p = client.parties
    host = p["host"]

    # Sealed before the session exists: the deadline is only 4 real seconds away.
    envelopes = {
        "a": seal(tmp, p["a"], "a", 4_000, 12_800_000_000),
        # b's bid is larger so that its decryption takes a while and the kill lands in it.
        "b": seal(tmp, p["b"], "b", 12_000_000, 12_650_000_000),
        "c": seal(tmp, p["c"], "c", 4_000, 12_900_000_000),
    }
    await register(client)

    now = await client.now()
    created = await client.request(
        "POST",
        "/api/sessions",
        host,
        {
            "lot_id": "JS-2026-0101/01",
            "title": "市政道路改造工程 01 标段",
            "sign_in_opens": iso(now),
            "deadline": iso(now + DEADLINE_AHEAD),
            "decrypt_minutes": DECRYPT_MINUTES,
            "confirm_minutes": 10,
            "min_bids": 3,
        },
    )
    sid = created["session_id"]
    await client.request("POST", f"/api/sessions/{sid}/publish", host)

    receipts: dict[str, dict[str, Any]] = {}
    for k, path in envelopes.items():
        receipts[k] = dict(
            await client.request(
                "PUT",
                f"/api/sessions/{sid}/bid",
                p[k],
                data=path.read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
        )

    async def status_is(status: str) -> bool:
        return (await client.view(sid, "host"))["view"]["status"] == status

    await until(lambda: status_is("sealed"), "the deadline to seal the lot", seconds=8)

    supervisor_got: dict[int, dict[str, Any]] = {}
    await client.hall_socket(sid, "supervisor", 0, supervisor_got)

    async def supervisor_present() -> bool:
        return bool((await client.view(sid, "host"))["view"]["supervisors_present"])

    await until(supervisor_present, "the supervisor's presence")
    await client.request("POST", f"/api/sessions/{sid}/start", host)
    await client.request("POST", f"/api/sessions/{sid}/decryption", host)
    view = (await client.view(sid, "host"))["view"]
    assert view["status"] == "decrypting"
    closes_at = parse_iso(view["decrypt_closes_at"])

    out = await client.submit_key(sid, "a", envelopes["a"])
    assert out["ok"] is True, out

    before = await client.full_log(sid)
    host_before = await client.events(sid, "host")
    check_chain(before)

    clock_before, real_before = await client.now(), time.monotonic()

    # --- b sends its key; the server dies (SIGKILL) while the request is in flight ---------
    await client.login(p["b"])
    cek_b = unwrap(envelopes["b"], p["b"].enc_key, p["b"].enc_cert)  # type: ignore[arg-type]
    in_flight = asyncio.ensure_future(
        client.request("POST", f"/api/sessions/{sid}/key", p["b"], {"cek": b64encode(cek_b)})
    )
    await asyncio.sleep(0.02)
    server.kill()
    killed_at = time.monotonic()
    answer: Any
    try:
        answer = await asyncio.wait_for(in_flight, 10)
    except (aiohttp.ClientError, OSError) as exc:  # the connection died with the server
        answer = exc
    assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
    await client.close_sockets()

    await server.start(client.http)
    restart_seconds = time.monotonic() - killed_at

    # The restarted process continues the same accelerated time line (same anchor and factor).
    clock_after, real_after = await client.now(), time.monotonic()
    drift = clock_after - (clock_before + timedelta(seconds=(real_after - real_before) * FACTOR))
    assert abs(drift) < CLOCK_SLACK, f"the server clock jumped by {drift} across the restart"

    # --- after the restart: nothing lost, nothing changed, no gap -------------------------
    after_restart = await client.full_log(sid)
    check_chain(after_restart)
    assert after_restart[: len(before)] == before, "an event changed or vanished"
    host_now = await client.events(sid, "host")
    assert host_now[: len(host_before)] == host_before

    for k, r in receipts.items():
        signed = verify_document(b64decode(r["signature"]), canonical_json(r["receipt"]))
        assert signed.signer.public_bytes(serialization.Encoding.PEM) == site.server_cert_pem
        assert (
            r["receipt"]["envelope_sha256"] == hashlib.sha256(envelopes[k].read_bytes()).hexdigest()
        )
        assert r["receipt"]["bidder"] == p[k].code
        stored = await client.request("GET", f"/api/sessions/{sid}/receipt", p[k])
        assert (stored["receipt"], stored["signature"], stored["seq"]) == (
            r["receipt"],
            r["signature"],
            r["seq"],
        )

    statuses = {b["bidder"]: b["status"] for b in (await client.view(sid, "host"))["view"]["bids"]}
    assert statuses[p["a"].code] == "decrypted"
    assert statuses[p["c"].code] != "decrypted"
    committed = statuses[p["b"].code] == "decrypted"
    if committed:  # the kill came after the commit: the decryption is kept, once
        assert not isinstance(answer, dict) or answer["ok"] is True
        try:
            await client.submit_key(sid, "b", envelopes["b"])
            pytest.fail("a second decryption of b's bid was accepted")
        except ApiError as exc:
            assert exc.code == "ALREADY_DONE", exc.body
    else:  # killed before the commit: nothing half-done is left behind, b simply sends again
        assert not isinstance(answer, dict), f"answered {answer} but not recorded"
        assert not [
            e
            for e in after_restart
            if e["type"] == "bid_decrypted" and e["payload"]["bidder"] == p["b"].code
        ]
        out = await client.submit_key(sid, "b", envelopes["b"])
        assert out["ok"] is True, out
    print(
        f"kill landed {'after' if committed else 'before'} the commit; "
        f"client saw {type(answer).__name__}; restart took {restart_seconds:.2f} s"
    )

    supervisor_seen = max(supervisor_got)
    await client.hall_socket(sid, "supervisor", supervisor_seen, supervisor_got)

    # --- the window still closes at its instant -------------------------------------------
    remaining = (closes_at - await client.now()).total_seconds() / FACTOR
    assert remaining > 0.5, "the test ran too slowly to check the window before it closed"
    await asyncio.sleep(remaining - 0.3)

    async def window_passed() -> bool:
        return await client.now() >= closes_at

    await until(window_passed, "the server clock to reach closes_at", every=0.01)
    try:
        await client.submit_key(sid, "c", envelopes["c"])
        pytest.fail("a key sent after the window closed was accepted")
    except ApiError as exc:
        assert exc.code == "WINDOW_CLOSED", exc.body

    await until(lambda: status_is("announcing"), "the scheduler to close the window", seconds=3)

    log = await client.full_log(sid)
    check_chain(log)
    assert log[: len(after_restart)] == after_restart
    closed = [e for e in log if e["type"] == "decryption_closed"]
    tables = [e for e in log if e["type"] == "table_published"]
    assert len(closed) == 1 and len(tables) == 1, "the window closed or the table published twice"
    closed_at = parse_iso(closed[0]["at"])
    assert closes_at <= closed_at <= closes_at + LATE, (closes_at, closed_at)
    revoked = [e for e in log if e["type"] == "bid_revoked"]
    assert [e["payload"]["bidder"] for e in revoked] == [p["c"].code]
    assert revoked[0]["payload"]["evidence"]["finding"] == "no_key_sent"
    assert not [e for e in log if e["type"] == "bid_withdrawn"]

    view_out = await client.view(sid, "host")
    assert view_out["seq"] == len(log), "the session's version is not the log's head"
    statuses = {b["bidder"]: b["status"] for b in view_out["view"]["bids"]}
    assert statuses == {
        p["a"].code: "decrypted",
        p["b"].code: "decrypted",
        p["c"].code: "revoked",
    }
    rows = {r["bidder"]: r for r in tables[0]["payload"]["table"]["rows"]}
    assert rows[p["a"].code]["price_fen"] == 12_800_000_000
    assert rows[p["b"].code]["price_fen"] == 12_650_000_000
    assert rows[p["c"].code]["status"] == "revoked"
    decrypted = [e["payload"]["bidder"] for e in log if e["type"] == "bid_decrypted"]
    assert sorted(decrypted) == sorted([CODE_A, CODE_B]), "a bid decrypted twice"

    # The supervisor's live socket got (by replay or live) exactly what it may see.
    supervisor_log = await client.events(sid, "supervisor")

    async def socket_caught_up() -> bool:
        return max(supervisor_got) >= supervisor_log[-1]["seq"]

    await until(socket_caught_up, "the supervisor's socket to catch up", seconds=3)
    assert [supervisor_got[s] for s in sorted(supervisor_got)] == supervisor_log

    # --- and the store itself agrees with what the API served ------------------------------
    await client.close_sockets()
    server.kill()
    store = await open_store(site.database_url, site.data)
    try:
        stored = [e.model_dump() for e in await store.events_after(sid, 0)]
        row = await store.load_session(sid)
    finally:
        await store.close()
    assert stored == log
    assert row is not None and row.version == len(log) and row.status == "announcing"
