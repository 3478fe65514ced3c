"""Server processes for tests: ``bidbridge serve`` children, a client of the real API, the data
folder a server needs (identity, trust, the centre account), and own instances of the services
(Redis, PostgreSQL, nginx) for tests that stop, restart or kill them.

The machine's shared PostgreSQL and Redis are never stopped: a test that needs to break a service
starts its own from the installed Debian packages on a free loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import aiohttp
import pytest
import socketio
from cryptography.hazmat.primitives import serialization

from crypto import ca
from crypto.attest import b64encode
from crypto.bid import unwrap
from schemas.events import EventRecord
from schemas.time import iso, parse_iso
from server.audit.chain import GENESIS, event_hash
from server.domain.opening_model import viewer_tags
from server.store import open_store
from tests.support.hall import (
    ApiError,
    Party,
    SignsIn,
    platform_person,
    register_parties,
    seal_party,
    standard_parties,
)
from tests.support.pki import (
    Pki,
    write_cert,
    write_key,
)

REPO = Path(__file__).resolve().parents[2]


def bidbridge_command() -> str:
    here = Path(sys.executable).with_name("bidbridge")
    found = str(here) if here.exists() else shutil.which("bidbridge")
    assert found, "the bidbridge command is not installed"
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the server process ----------------------------------------------------------------------


START_SECONDS = 90
"""How long a starting server may take to answer (a loaded 2-core machine took over 15 s to
import the project and open its store)."""


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
        give_up = time.monotonic() + START_SECONDS
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
                pytest.fail(
                    f"the server did not answer /api/time in {START_SECONDS} s:\n{self.tail()}"
                )
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no cleanup handlers, no flushing, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text("utf-8", "replace")[-4000:] if self.log.exists() else ""


# --- what a viewer is shown (docs/positions.md) ----------------------------------------------


ALL = "all"
WIRE_FIELDS = {"session_id", "id", "at", "type", "actor", "audience", "payload", "pos"}
"""The fields of an event as a viewer receives it: never ``seq``, ``prev_hash`` or ``hash``."""


def tags_of(parties: dict[str, Party], who: str) -> frozenset[str]:
    """The audience tags (streams, besides ``all``) of one of the standard parties."""
    if who in ("host", "supervisor", "centre"):
        return viewer_tags(who, "")
    code = parties[who].code
    assert code is not None, who
    return viewer_tags("bidder", code)


def visible(record: dict[str, Any], tags: frozenset[str]) -> bool:
    return ALL in record["audience"] or not tags.isdisjoint(record["audience"])


def shown(record: dict[str, Any], tags: frozenset[str]) -> dict[str, Any]:
    """A stored record as a viewer with ``tags`` is shown it (docs/positions.md): its hash as
    ``id``, its positions in the viewer's own streams and ``all``, no ``seq``."""
    return {
        "session_id": record["session_id"],
        "id": record["hash"],
        "at": record["at"],
        "type": record["type"],
        "actor": record["actor"],
        "audience": record["audience"],
        "payload": record["payload"],
        "pos": {t: n for t, n in record["pos"].items() if t == ALL or t in tags},
    }


def _members(e: dict[str, Any]) -> list[str]:
    return [t for t in e["pos"] if t != ALL] + ([ALL] if ALL in e["audience"] else [])


@dataclass
class Seen:
    """What one viewer was sent over the hall (over any number of connections), taken in
    arrival order and checked by the cursor rule of docs/positions.md. A repeat of an ``id``
    must be identical and is dropped, counted in ``duplicates`` (a connection sends each event
    once; one may come again after a reconnect from an older cursor); an event that skips
    ahead of the cursor (``gaps``: something before it was not sent first) or that takes
    numbers already used by another event (``reused``) is a fault of the server, as is one
    with other fields than ``WIRE_FIELDS`` or an ``id`` repeated with other content
    (``wrong``). Faults are noted, not raised (a socket.io handler would swallow the
    exception): ``check`` raises them."""

    events: list[dict[str, Any]] = field(default_factory=list)
    by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    cursor: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    gaps: list[dict[str, Any]] = field(default_factory=list)
    reused: list[dict[str, Any]] = field(default_factory=list)
    wrong: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, events: list[dict[str, Any]]) -> Seen:
        seen = cls()
        for e in events:
            seen.take(e)
        return seen

    def take(self, e: dict[str, Any]) -> None:
        if not isinstance(e, dict) or set(e) != WIRE_FIELDS:
            self.wrong.append(e)
            return
        old = self.by_id.get(e["id"])
        if old is not None:
            if old != e:
                self.wrong.append(e)
            self.duplicates += 1
            return
        pos, members = e["pos"], _members(e)
        if members and all(pos[t] <= self.cursor.get(t, 0) for t in members):
            self.reused.append(e)
        elif any(pos[t] > self.cursor.get(t, 0) + 1 for t in members) or (
            ALL not in e["audience"] and pos.get(ALL, 0) > self.cursor.get(ALL, 0)
        ):
            self.gaps.append(e)
        for t in members:
            self.cursor[t] = max(self.cursor.get(t, 0), pos[t])
        self.events.append(e)
        self.by_id[e["id"]] = e

    def check(self, who: str) -> None:
        assert not self.wrong, f"{who} was sent malformed or changed events: {self.wrong}"
        assert not self.gaps, f"{who} was sent events before what precedes them: {self.gaps}"
        assert not self.reused, f"{who} was sent events with numbers already used: {self.reused}"

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]


def checked(events: list[dict[str, Any]], who: str) -> list[dict[str, Any]]:
    """A viewer's list of events (a REST answer): each once, in order, every stream it follows
    numbered 1, 2, 3, ... without a hole (nothing it may see is left out)."""
    seen = Seen.of(events)
    seen.check(who)
    assert seen.duplicates == 0, f"{who}'s events list one twice"
    return events


def union(views: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every event some viewer is shown, once (by ``id``): for looking events up by type. No
    order across viewers: that would need the log's ``seq``, which no viewer gets."""
    out: dict[str, dict[str, Any]] = {}
    for events in views.values():
        for e in events:
            out.setdefault(e["id"], e)
    return list(out.values())


# --- a client of the real API ----------------------------------------------------------------


VIEWERS = ("host", "supervisor", "a", "b", "c")


@dataclass
class Client(SignsIn):
    http: aiohttp.ClientSession
    url: str
    parties: dict[str, Party]
    sockets: list[socketio.AsyncClient] = field(default_factory=list)

    async def now(self) -> datetime:
        return parse_iso(str((await self.request("GET", "/api/time"))["now"]))

    async def _answer(self, r: aiohttp.ClientResponse) -> Any:
        body = await r.json(content_type=None)
        if r.status >= 400:
            raise ApiError(r.status, body)
        return body

    async def signing_time(self) -> datetime:
        return await self.now()

    async def view(self, sid: str, who: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/api/sessions/{sid}", self.parties[who]))

    async def events(
        self, sid: str, who: str, after: Mapping[str, int] | None = None
    ) -> list[dict[str, Any]]:
        """What ``who`` may see (after the cursor ``after``), checked: from the start, each
        stream it follows is numbered without a hole."""
        query = "&".join(f"after={quote(t, safe='')}:{n}" for t, n in (after or {}).items())
        path = f"/api/sessions/{sid}/events" + (f"?{query}" if query else "")
        out = list((await self.request("GET", path, self.parties[who]))["events"])
        return checked(out, who) if not after else out

    async def views(self, sid: str) -> dict[str, list[dict[str, Any]]]:
        """What each of the standard parties may see of the session, each list checked."""
        return {who: await self.events(sid, who) for who in VIEWERS}

    async def submit_key(self, sid: str, who: str, envelope: Path) -> dict[str, Any]:
        p = self.parties[who]
        assert p.enc_key is not None
        cek = unwrap(envelope, p.enc_key, p.enc_cert)
        return dict(
            await self.request("POST", f"/api/sessions/{sid}/key", p, {"cek": b64encode(cek)})
        )

    async def hall_socket(
        self,
        sid: str,
        who: str,
        last: Mapping[str, int] | int | None,
        got: Seen | dict[str, dict[str, Any]],
    ) -> socketio.AsyncClient:
        """A socket.io client in the hall that keeps each event in ``got``: a ``Seen`` (checked
        by the cursor rule) or a dict by ``id`` (a repeat must be identical); waits until the
        server says the replay is done. ``last``: the cursor to resume from (0 or None: from
        the start)."""

        async def on_event(data: dict[str, Any]) -> None:
            if isinstance(got, Seen):
                got.take(data)
                return
            old = got.setdefault(data["id"], data)
            assert old == data, f"event {data['id']} arrived twice with different content"

        assert isinstance(last, Mapping) or not last, "a cursor is stream -> n"
        return await self.follow(sid, who, last or None, on_event)

    async def follow(
        self,
        sid: str,
        who: str,
        last: Mapping[str, int] | None,
        on_event: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> socketio.AsyncClient:
        """A socket.io client in the hall that hands each event to ``on_event``; waits until the
        server says the replay is done. ``last``: the cursor to resume from (None: all)."""
        p = self.parties[who]
        if p.token is None:
            await self.login(p)
        sio = socketio.AsyncClient(reconnection=False)
        replayed = asyncio.Event()

        async def on_replayed(data: Any) -> None:
            replayed.set()

        sio.on("event", on_event, namespace="/hall")
        sio.on("replayed", on_replayed, namespace="/hall")
        auth: dict[str, Any] = {"token": p.token, "session_id": sid}
        if last is not None:
            auth["last"] = dict(last)
        await sio.connect(
            self.url,
            namespaces=["/hall"],
            transports=["websocket"],
            auth=auth,
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


# --- the data folder a server needs ------------------------------------------------------------


@dataclass
class SiteData:
    data: Path
    identity: Path
    trust: Path
    parties: dict[str, Party]
    env: dict[str, str]
    db_args: list[str]
    server_cert_pem: bytes

    @property
    def database_url(self) -> str | None:
        return self.db_args[1] if self.db_args else None

    async def stored_log(self, sid: str) -> list[dict[str, Any]]:
        return await stored_log(self.database_url, self.data, sid)

    def serve_argv(self, port: int, *extra: str) -> list[str]:
        return [
            bidbridge_command(), "serve", "--data", str(self.data), *self.db_args,
            "--host", "127.0.0.1", "--port", str(port), "--identity", str(self.identity),
            "--trust", str(self.trust), *extra,
        ]  # fmt: skip


def _write_pem_crl(path: Path, crl: Any) -> None:
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def prepare_site(pki: Pki, tmp_path: Path, database_url: str | None) -> SiteData:
    """Data, identity and trust folders, the parties, and the first centre account."""
    data = tmp_path / "data"
    identity = tmp_path / "identity"
    trust = tmp_path / "trust"
    for d in (data, identity, trust):
        d.mkdir()
    platform = platform_person(pki)
    write_key(identity / "server.key", platform)
    write_cert(identity / "server.pem", platform.certificate)
    for name, issuer in (("root_a", pki.root_a), ("root_b", pki.root_b), ("sub_b", pki.sub_b)):
        write_cert(trust / f"{name}.pem", issuer.certificate)
        _write_pem_crl(trust / f"{name}.crl", pki.crl(issuer))

    db_args = ["--database-url", database_url] if database_url else []
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BIDBRIDGE_REDIS_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    parties = standard_parties(pki)
    centre_pem = write_cert(tmp_path / "centre.pem", parties["centre"].cert)
    added = subprocess.run(
        [bidbridge_command(), "admin", "add-account", "--data", str(data), *db_args,
         "--role", "centre", "--name", "中心管理员", "--cert", str(centre_pem)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    return SiteData(
        data,
        identity,
        trust,
        parties,
        env,
        db_args,
        platform.certificate.public_bytes(serialization.Encoding.PEM),
    )


# --- setup through the API -------------------------------------------------------------------


async def register(client: Client) -> None:
    await register_parties(client.request, client.parties)


def seal(tmp: Path, bidder: Party, name: str, document_bytes: int, price_fen: int) -> Path:
    return seal_party(
        tmp,
        bidder,
        name=name,
        documents={"商务标.pdf": b"%PDF-1.7 bid\n" + os.urandom(document_bytes)},
        price_fen=price_fen,
    )


async def stored_log(database_url: str | None, data: Path, sid: str) -> list[dict[str, Any]]:
    """The session's log as the store holds it (``seq``, hashes, every stream's numbers), read
    directly: what no viewer is shown whole."""
    store = await open_store(database_url, data)
    try:
        return [as_stored(r) for r in await store.events_after(sid, 0)]
    finally:
        await store.close()


def as_stored(record: EventRecord) -> dict[str, Any]:
    """A record of the store as a dict: its hashed fields, hashes and positions."""
    return {**record.model_dump(mode="json"), "pos": dict(record.pos)}


def check_log(log: list[dict[str, Any]]) -> None:
    """The stored log: a chain without a gap (``check_chain``), and each event numbered in the
    stream of every tag of its audience, 1, 2, 3, ... in log order, and under ``all`` with its
    number among the public events (or, not public, how many came before it)."""
    check_chain(log)
    heads: dict[str, int] = {}
    for e in log:
        expected: dict[str, int] = {}
        for tag in dict.fromkeys(e["audience"]):
            heads[tag] = heads.get(tag, 0) + 1
            expected[tag] = heads[tag]
        expected.setdefault(ALL, heads.get(ALL, 0))
        assert e["pos"] == expected, f"seq {e['seq']} is numbered {e['pos']}, not {expected}"


def check_shown(
    log: list[dict[str, Any]],
    parties: dict[str, Party],
    views: dict[str, list[dict[str, Any]]],
    *,
    later: Callable[[dict[str, Any]], bool] = lambda e: False,
) -> None:
    """Each viewer's list (``views``) is the stored ``log``'s events it may see, as it is to be
    shown them, in log order: all of them, but for ones committed after the list was read,
    which ``later`` must allow."""
    for who, seen in views.items():
        tags = tags_of(parties, who)
        expected = [shown(e, tags) for e in log if visible(e, tags)]
        assert seen == expected[: len(seen)], f"{who} was not shown the log as stored"
        rest = expected[len(seen) :]
        assert all(later(e) for e in rest), f"{who} was not shown {rest}"


def check_chain(log: list[dict[str, Any]]) -> None:
    """seq 1..n, no gap, no duplicate, every link hashes to the next (from GENESIS)."""
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1)), "a seq gap or duplicate"
    prev = GENESIS
    for e in log:
        assert e["prev_hash"] == prev, f"seq {e['seq']}: prev_hash does not link"
        assert event_hash(prev, e) == e["hash"], f"seq {e['seq']}: hash does not match content"
        prev = e["hash"]


async def published_session(client: Client, deadline: timedelta, min_bids: int = 1) -> str:
    """A session published by the host, open for sign-in now, with its deadline ``deadline``
    from the server's now."""
    now = await client.now()
    created = await client.request(
        "POST",
        "/api/sessions",
        client.parties["host"],
        {
            "lot_id": "JS-2026-0101/01",
            "title": "市政道路改造工程 01 标段",
            "sign_in_opens": iso(now),
            "deadline": iso(now + deadline),
            "decrypt_minutes": 2,
            "confirm_minutes": 10,
            "min_bids": min_bids,
        },
    )
    sid = str(created["session_id"])
    await client.request("POST", f"/api/sessions/{sid}/publish", client.parties["host"])
    return sid


async def to_opening(
    client: Client, tmp: Path, deadline_s: float = 30, factor: float = 10.0
) -> tuple[str, dict[str, Path]]:
    """A session with three sealed bids, started (status ``opening``); the supervisor present."""
    p = client.parties
    envelopes = {k: seal(tmp, p[k], k, 2_000, 12_000_000_000 + i) for i, k in enumerate("abc")}
    await register(client)
    sid = await published_session(client, timedelta(seconds=deadline_s), min_bids=3)
    for k, path in envelopes.items():
        await client.upload(sid, p[k], path)

    async def sealed() -> bool:
        return (await client.view(sid, "host"))["view"]["status"] == "sealed"

    await until(sealed, "the deadline to seal the lot", seconds=deadline_s / factor + 8)
    await client.hall_socket(sid, "supervisor", None, {})

    async def supervisor_present() -> bool:
        return bool((await client.view(sid, "host"))["view"]["supervisors_present"])

    await until(supervisor_present, "the supervisor's presence")
    await client.request("POST", f"/api/sessions/{sid}/start", p["host"])
    return sid, envelopes


# --- own instances of the services -----------------------------------------------------------


def _wait_port(port: int, seconds: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    give_up = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if time.monotonic() > give_up:
            pytest.fail(f"{what} did not listen on {port} within {seconds} s")
        time.sleep(0.05)


def need(binary: str) -> str:
    """A Debian-installed service binary; skipped visibly when absent, never under CI."""
    # PostgreSQL's server binaries live in the versioned folder of the Debian package.
    found = next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{binary}"))), None
    ) or shutil.which(binary)
    if not found:
        message = f"{binary} is not installed (scripts/setup.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class OwnService:
    """A service of our own in ``folder``, on a free loopback port, at ``URL``."""

    URL: ClassVar[str]
    folder: Path
    port: int = field(default_factory=free_port, kw_only=True)
    proc: subprocess.Popen[bytes] | None = field(default=None, kw_only=True)

    @property
    def url(self) -> str:
        return self.URL.format(port=self.port)


@dataclass
class RedisServer(OwnService):
    """``redis-server`` of our own on a free loopback port (nothing kept on disk)."""

    URL: ClassVar[str] = "redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [
            need("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.folder),
        ]  # fmt: skip
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _wait_port(self.port, 10, "redis-server", self.proc)
        self._check_ours()

    def _check_ours(self) -> None:
        """The port answers as Redis and our process still runs: another program that took the
        port between ``free_port`` and the bind would otherwise leave clients waiting forever."""
        with socket.create_connection(("127.0.0.1", self.port), 5) as probe:
            probe.settimeout(5)
            probe.sendall(b"PING\r\n")
            answer = probe.recv(64)
        if answer != b"+PONG\r\n" or (self.proc is not None and self.proc.poll() is not None):
            pytest.fail(f"port {self.port} is not our redis-server (it answered {answer!r})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # a crash: in-flight pub/sub messages are lost
            self.proc.wait(10)


@dataclass
class Postgres(OwnService):
    """A PostgreSQL cluster of our own (initdb in a temporary folder, run as user postgres)."""

    URL: ClassVar[str] = "postgresql://postgres@127.0.0.1:{port}/postgres"

    def _as_postgres(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    def init(self) -> None:
        # Under root the server runs as user postgres, who cannot enter pytest's private tmp:
        # its folder is a fresh one of its own (removed by ``remove``).
        if os.geteuid() == 0:
            self.folder = Path(tempfile.mkdtemp(prefix="bidbridge-pg-"))
            shutil.chown(self.folder, "postgres", "postgres")
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "pgdata"
        subprocess.run(
            self._as_postgres(
                [need("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        argv = [
            need("postgres"), "-D", str(self.folder / "pgdata"), "-p", str(self.port),
            "-h", "127.0.0.1", "-k", str(self.folder), "-c", "fsync=off",
        ]  # fmt: skip
        log = (self.folder / "postgres.log").open("ab")
        self.proc = subprocess.Popen(self._as_postgres(argv), stdout=log, stderr=subprocess.STDOUT)
        _wait_port(self.port, 30, "postgres", self.proc)

    def signal(self, sig: int) -> None:
        """Signal the postmaster itself (runuser does not pass signals on): SIGTERM is a smart
        shutdown (new connections refused, open sessions carry on), SIGQUIT an immediate one."""
        assert self.proc is not None
        pid_file = self.folder / "pgdata" / "postmaster.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), sig)
        except (OSError, ValueError, IndexError):
            self.proc.send_signal(sig)

    def stop(self) -> None:
        """Immediate shutdown: every connection is cut, like a crash of the database."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGQUIT)
            self.proc.wait(30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {folder}/error.log warn;
pid {folder}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream bidbridge {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_request_buffering off;
        location / {{
            proxy_pass http://bidbridge;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_read_timeout 3600s;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 1s;
        }}
    }}
}}
"""


@dataclass
class Nginx(OwnService):
    """Debian's nginx in front of the server processes (websocket upgrade, no stickiness)."""

    URL: ClassVar[str] = "http://127.0.0.1:{port}"
    upstreams: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in self.upstreams
        )
        conf = self.folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(folder=self.folder, servers=servers, port=self.port))
        log = (self.folder / "nginx.out").open("ab")
        self.proc = subprocess.Popen(
            [need("nginx"), "-c", str(conf), "-p", str(self.folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        _wait_port(self.port, 10, "nginx", self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


# --- TLS on loopback ---------------------------------------------------------------------------


def worktree_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child ``bidbridge`` that runs this checkout's code: the console script's
    editable install may point at another checkout, so this one goes first on PYTHONPATH."""
    paths = [str(REPO), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**env, "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}


def issue_tls_files(
    folder: Path,
    issuer: ca.Issued,
    *,
    dns: tuple[str, ...] = ("localhost",),
    ips: tuple[str, ...] = ("127.0.0.1",),
    key_type: ca.KeyType = "rsa2048",
) -> tuple[Path, Path]:
    """``server.crt.pem`` and ``server.key.pem`` in ``folder``, as ``bidbridge ca issue-server``
    writes them (PEM certificate, unencrypted PKCS#8 key), issued by ``issuer``."""
    folder.mkdir(parents=True, exist_ok=True)
    issued = ca.issue_server(issuer, dns_names=list(dns), ip_addresses=list(ips), key_type=key_type)
    assert issued.key is not None
    key = folder / "server.key.pem"
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    cert = folder / "server.crt.pem"
    cert.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key


DEPLOYED_NGINX_CONF = REPO / "deploy" / "nginx.conf"


def deployed_nginx_conf(
    work: Path, upstream: dict[str, str], http_port: int, https_port: int, tls_dir: Path
) -> Path:
    """deploy/nginx.conf with its paths in ``work``, its upstreams at ``upstream``, its two
    listeners on loopback ports and its certificate folder ``tls_dir``; everything else (TLS
    protocols and ciphers, HSTS, the redirect, the proxying) as deployed."""
    text = DEPLOYED_NGINX_CONF.read_text()
    text = text.replace("pid /run/nginx.pid;", f"pid {work}/nginx.pid;")
    text = text.replace("/var/cache/nginx/", f"{work}/")
    text = text.replace("error_log /dev/stderr", f"error_log {work}/error.log")
    text = text.replace("access_log /dev/stdout", f"access_log {work}/access.log")
    text = text.replace("/etc/nginx/tls/", f"{tls_dir}/")
    for port in ("80", "443 ssl"):
        assert f"listen [::]:{port};" in text and f"listen {port};" in text, port
        text = text.replace(f"listen [::]:{port};", "")
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    for name, addr in upstream.items():
        text = re.sub(rf"server {name}:\d+", f"server {addr}", text)
    if os.geteuid() == 0:
        text = "user root;\n" + text
    conf = work / "nginx.conf"
    conf.write_text(text)
    return conf


def start_deployed_nginx(work: Path, conf: Path, port: int) -> subprocess.Popen[bytes]:
    """nginx in the foreground with ``conf``; returns once it listens on ``port``."""
    proc = subprocess.Popen(
        [need("nginx"), "-c", str(conf), "-p", str(work), "-e", str(work / "error.log"),
         "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        _wait_port(port, 10, "nginx", proc)
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise
    return proc
