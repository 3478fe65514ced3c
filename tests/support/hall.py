"""A real opening hall for tests: PKI, a server on a loopback port, parties that log in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import aiohttp
import socketio
from aiohttp.test_utils import TestServer
from cryptography import x509

from crypto import ca
from crypto.attest import b64encode, sign_document
from crypto.bid import seal_bid
from crypto.envelope import Recipient
from crypto.keys import SoftwareKey
from crypto.package import SealingMachine
from crypto.trust import TrustStore
from schemas.canonical import canonical_json
from server.app import Hub, Settings, build_app, build_hub
from server.clock import ManualClock
from server.identity import ServerIdentity, cert_pem
from tests.support.pki import CODE_A, CODE_B, CODE_C, Pki, credit_code, make_package, summary_for

TENDERER_CODE = credit_code("91320100MA0TTTTT6")  # the tenderer is none of the bidders


@dataclass
class Party:
    """Someone who logs in with a key: a bidder company or a staff account."""

    name: str
    key: SoftwareKey
    cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)
    enc_key: SoftwareKey | None = None
    enc_cert: x509.Certificate | None = None
    code: str | None = None
    token: str | None = None


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.code = body.get("code")


class SignsIn:
    """What every client of the API in the tests shares: a party without a token first logs in by
    signing the server's challenge, then each request carries its bearer token; a bid is uploaded
    the same way.

    A client gives its ``http`` session and ``url``, how it reads an answer (``_answer``: the body,
    ApiError for a refusal) and the time it signs the challenge at (``signing_time``); with
    ``relogin`` a refused, expired token is renewed once."""

    relogin: ClassVar[bool] = False
    http: aiohttp.ClientSession
    url: str

    async def request(
        self,
        method: str,
        path: str,
        who: Party | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        h = await self.authorized(who, headers)
        try:
            return await self._send(method, path, h, json_body, data)
        except ApiError as exc:
            if who is None or exc.code != "TOKEN_INVALID" or not self.relogin:
                raise
        await self.login(who)
        h["Authorization"] = f"Bearer {who.token}"
        return await self._send(method, path, h, json_body, data)

    async def _send(
        self, method: str, path: str, h: dict[str, str], json_body: Any, data: Any
    ) -> Any:
        async with self.http.request(
            method, self.url + path, json=json_body, data=data, headers=h
        ) as r:
            return await self._answer(r)

    async def _answer(self, r: aiohttp.ClientResponse) -> Any:
        raise NotImplementedError

    async def signing_time(self) -> datetime:
        raise NotImplementedError

    async def authorized(self, who: Party | None, headers: dict[str, str] | None) -> dict[str, str]:
        """``headers`` with ``who``'s bearer token (logging in first when ``who`` has none)."""
        h = dict(headers or {})
        if who is not None:
            if who.token is None:
                await self.login(who)
            h["Authorization"] = f"Bearer {who.token}"
        return h

    async def login(self, who: Party) -> dict[str, Any]:
        ch = await self.request("POST", "/api/auth/challenge")
        at = await self.signing_time()
        sig = sign_document(ch["document"].encode(), who.key, who.cert, at=at, chain=who.chain)
        out = await self.request("POST", "/api/auth/login", json_body={"signature": b64encode(sig)})
        who.token = out["token"]
        return dict(out)

    async def upload(self, sid: str, bidder: Party, path: Path) -> dict[str, Any]:
        data = path.read_bytes()
        return dict(
            await self.request(
                "PUT",
                f"/api/sessions/{sid}/bid",
                bidder,
                data=data,
                headers={"Content-Type": "application/octet-stream"},
            )
        )


def seal_party(
    tmp: Path,
    bidder: Party,
    *,
    name: str = "bid",
    documents: dict[str, bytes] | None = None,
    to: x509.Certificate | None = None,
    extra_recipients: list[x509.Certificate] | None = None,
    sealing_machine: SealingMachine = None,
    **summary: Any,
) -> Path:
    """``tmp/<name>.p7m``: the bidder's package (``summary`` changes its summary.json) signed with
    its login key and chain, sealed to its encryption certificate (or ``to``) and
    ``extra_recipients``."""
    assert bidder.code is not None and bidder.enc_cert is not None
    folder = make_package(
        tmp / f"{name}-src",
        bidder.code,
        documents=documents,
        summary=summary_for(bidder.code, bidder_name=bidder.name, **summary),
    )
    out = tmp / f"{name}.p7m"
    recipients = [Recipient(to or bidder.enc_cert)] + [Recipient(c) for c in extra_recipients or []]
    seal_bid(
        folder,
        out,
        signer=bidder.key,
        signer_cert=bidder.cert,
        chain=bidder.chain,
        recipients=recipients,
        sealing_machine=sealing_machine,
    )
    return out


@dataclass
class Hall(SignsIn):
    hub: Hub
    server: TestServer
    clock: ManualClock
    http: aiohttp.ClientSession
    pki: Pki
    t0: datetime
    parties: dict[str, Party]
    listeners: list[Listener] = field(default_factory=list)
    relogin: ClassVar[bool] = True  # the manual clock may jump past a token's life

    @property
    def url(self) -> str:
        return str(self.server.make_url(""))

    async def _answer(self, r: aiohttp.ClientResponse) -> Any:
        body = await r.read()
        ctype = r.headers.get("Content-Type", "")
        if r.status >= 400:
            raise ApiError(r.status, json.loads(body))
        return json.loads(body) if ctype.startswith("application/json") else body

    async def signing_time(self) -> datetime:
        return self.clock.now()

    def sign(self, who: Party, content: bytes) -> str:
        return b64encode(
            sign_document(content, who.key, who.cert, at=self.clock.now(), chain=who.chain)
        )

    def sign_json(self, who: Party, value: Any) -> str:
        return self.sign(who, canonical_json(value))

    async def create_session(self, **overrides: Any) -> str:
        body = {
            "lot_id": "JS-2026-0101/01",
            "title": "市政道路改造工程 01 标段",
            "sign_in_opens": (self.t0 + timedelta(minutes=5)).isoformat(),
            "deadline": (self.t0 + timedelta(hours=1)).isoformat(),
            "decrypt_minutes": 30,
            "confirm_minutes": 10,
            "min_bids": 3,
            "security_required_fen": 100_000_00,
        }
        body.update(overrides)
        out = await self.request("POST", "/api/sessions", self.parties["host"], body)
        sid = out["session_id"]
        await self.request("POST", f"/api/sessions/{sid}/publish", self.parties["host"])
        return str(sid)

    def seal(
        self,
        tmp: Path,
        bidder: Party,
        *,
        to: x509.Certificate | None = None,
        name: str = "bid",
        extra_recipients: list[x509.Certificate] | None = None,
        **summary: Any,
    ) -> Path:
        return seal_party(
            tmp, bidder, name=name, to=to, extra_recipients=extra_recipients, **summary
        )

    async def at(self, when: datetime) -> None:
        """Move the clock and fire what is due (as the scheduler would)."""
        self.clock.set(when)
        await self.hub.scheduler.fire_due()

    async def view(self, sid: str, who: Party) -> dict[str, Any]:
        return dict((await self.request("GET", f"/api/sessions/{sid}", who))["view"])

    async def events(
        self, sid: str, who: Party, after: dict[str, int] | None = None
    ) -> list[dict[str, Any]]:
        """The viewer's log as the events route gives it, after the cursor ``after``."""
        query = urlencode([("after", f"{t}:{n}") for t, n in (after or {}).items()])
        out = await self.request("GET", f"/api/sessions/{sid}/events?{query}", who)
        return list(out["events"])

    async def upload_paused_once_stored(
        self, sid: str, bidder: Party, path: Path
    ) -> tuple[asyncio.Task[dict[str, Any]], asyncio.Event]:
        """Start an upload through the real blob store, paused once the file is stored and
        before the command that records it: returns the upload's task and the event that lets
        it go on (set it, then await the task)."""
        stored, go_on = asyncio.Event(), asyncio.Event()
        receive = self.hub.blobs.receive

        async def paused(*args: Any, **kwargs: Any) -> Any:
            blob = await receive(*args, **kwargs)
            stored.set()
            await go_on.wait()
            return blob

        self.hub.blobs.receive = paused  # type: ignore[method-assign]
        uploading = asyncio.create_task(self.upload(sid, bidder, path))
        await asyncio.wait_for(stored.wait(), timeout=60)
        return uploading, go_on

    def blob_listing(self) -> list[str]:
        """Every stored blob (relative path), temp files of uploads in progress excluded."""
        root = self.hub.settings.data_dir / "blobs"
        if not root.exists():
            return []
        return sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.is_file() and p.relative_to(root).parts[0] != "tmp"
        )

    def temp_files(self) -> list[str]:
        root = self.hub.settings.data_dir / "blobs" / "tmp"
        return sorted(p.name for p in root.iterdir()) if root.exists() else []

    async def snapshot(self) -> dict[str, Any]:
        """What a refused request must not change: every session's log and state, the parties,
        the stored bid keys and the blob folder."""
        store = self.hub.store
        sessions: dict[str, Any] = {}
        for row in await store.list_sessions():
            events = await store.events_after(row.id, 0)
            sessions[row.id] = {
                "version": row.version,
                "status": row.status,
                "events": [(r.seq, r.type, r.hash) for r in events],
                "keys": await store.bid_keys(row.id),
            }
        return {
            "sessions": sessions,
            "companies": sorted(c.credit_code for c in await store.list_companies()),
            "accounts": sorted(a.id for a in await store.list_accounts()),
            "blobs": self.blob_listing(),
        }

    async def refused(
        self,
        status: int,
        code: str,
        method: str,
        path: str,
        who: Party | None = None,
        json_body: Any = None,
        **sent: Any,
    ) -> ApiError:
        """The request (``sent``: its ``data`` and ``headers``, as for ``request``) is refused
        with ``status`` and ``code`` (zh and en filled in), and nothing in the store changes."""
        before = await self.snapshot()
        try:
            out = await self.request(method, path, who, json_body, **sent)
        except ApiError as exc:
            err = exc
        else:
            raise AssertionError(f"{method} {path} was accepted: {out!r:.300}")
        assert (err.status, err.code) == (status, code), f"{method} {path}: {err}"
        assert err.body.get("zh") and err.body.get("en"), err.body
        assert await self.snapshot() == before, f"{method} {path} changed the store"
        return err

    async def upload_refused(
        self, status: int, code: str, sid: str, bidder: Party, path: Path
    ) -> ApiError:
        """``upload`` of ``path`` is refused with ``status`` and ``code`` (see ``refused``)."""
        return await self.refused(
            status,
            code,
            "PUT",
            f"/api/sessions/{sid}/bid",
            bidder,
            data=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )

    async def listen(self, sid: str, who: Party, last: Any = None) -> Listener:
        """A socket.io client in the hall of ``sid``, logged in as ``who``, replayed after the
        cursor ``last`` (None: from the start)."""
        if who.token is None or not self._token_valid(who.token):
            await self.login(who)
        listener = Listener()
        self.listeners.append(listener)
        await listener.connect(self.url, who.token or "", sid, last)
        p = self.hub.tokens.check(who.token or "", self.clock.now())
        if p.role in ("host", "supervisor", "centre"):
            listener.present = (sid, p.party_id)
            await self.until_present(sid, p.party_id, True)
        return listener

    def _token_valid(self, token: str) -> bool:
        try:
            self.hub.tokens.check(token, self.clock.now())
        except Exception:
            return False
        return True

    async def hang_up(self, listener: Listener) -> None:
        """Disconnect; for staff, wait until the server has recorded that they left."""
        await listener.close()
        if listener.present is not None:
            await self.until_present(*listener.present, False)

    async def until_present(self, sid: str, account: str, present: bool) -> None:
        async with asyncio.timeout(5):
            while True:
                loaded = await self.hub.service.load(sid, kind=None)
                assert loaded is not None
                if (account in loaded.state.present) == present:
                    return
                await asyncio.sleep(0.005)


def members(event: dict[str, Any]) -> list[str]:
    """The streams an event (as a viewer received it) is a member of (docs/positions.md)."""
    own = [t for t in event["pos"] if t != "all"]
    return (["all"] if "all" in event["audience"] else []) + own


def cursor_of(events: list[dict[str, Any]]) -> dict[str, int]:
    """The cursor a client holds after receiving ``events``: each stream's highest number."""
    cursor: dict[str, int] = {}
    for e in events:
        for t in members(e):
            cursor[t] = max(cursor.get(t, 0), e["pos"][t])
    return cursor


def after(event: dict[str, Any], cursor: dict[str, int]) -> bool:
    """Whether ``event`` is past ``cursor`` in one of its streams (a client has not had it)."""
    return any(event["pos"][t] > cursor.get(t, 0) for t in members(event))


class ConnectionRefused(Exception):
    """The hall refused a socket connection; ``data`` is its {code, zh, en}."""

    def __init__(self, data: Any) -> None:
        super().__init__(repr(data))
        self.data = data
        self.code = data.get("code") if isinstance(data, dict) else None


class Listener:
    """A hall socket.io client that keeps what it receives, in arrival order."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: list[dict[str, Any]] = []
        self.times: list[str] = []
        self.replayed: list[dict[str, int]] = []  # each replay's ``pos``
        self.present: tuple[str, str] | None = None  # (session, account) of a staff member
        self._changed = asyncio.Event()
        self.client.on("event", self._on_event, namespace="/hall")
        self.client.on("time", self._on_time, namespace="/hall")
        self.client.on("replayed", self._on_replayed, namespace="/hall")
        self.client.on("connect_error", self._on_refused, namespace="/hall")
        self.refusal: Any = None

    async def _on_refused(self, data: Any) -> None:
        self.refusal = data

    async def _on_event(self, data: dict[str, Any]) -> None:
        self.events.append(data)
        self._changed.set()

    async def _on_time(self, data: dict[str, Any]) -> None:
        self.times.append(data["now"])
        self._changed.set()

    async def _on_replayed(self, data: dict[str, Any]) -> None:
        self.replayed.append(data["pos"])
        self._changed.set()

    async def connect(self, url: str, token: str, sid: str, last: Any = None) -> None:
        auth = {"token": token, "session_id": sid}
        await self.connect_with(url, auth if last is None else {**auth, "last": last})

    async def connect_with(self, url: str, auth: Any) -> None:
        """Connect with any ``auth`` (hostile ones too); ConnectionRefused if the hall says no."""
        try:
            await self.client.connect(
                url, namespaces=["/hall"], transports=["websocket"], auth=auth, wait_timeout=5
            )
        except socketio.exceptions.ConnectionError as exc:
            raise ConnectionRefused(self.refusal) from exc
        await self.until(lambda: bool(self.replayed))

    async def until(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait (without sleeping blindly) until ``done()`` holds."""
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def until_type(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:
        await self.until(lambda: any(e["type"] == type_ for e in self.events), timeout)
        return next(e for e in self.events if e["type"] == type_)

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.events]

    async def call_time(self) -> str:
        out = await self.client.call("time", namespace="/hall", timeout=5)
        return str(out["now"])

    async def close(self) -> None:
        await self.client.disconnect()


def person(
    issuer: ca.Issued, name: str, role: str, pid: str, chain: list[x509.Certificate]
) -> Party:
    issued = ca.issue_person(issuer, name=name, role=role, person_id=pid, key_type="ec-p256")  # type: ignore[arg-type]
    assert issued.key is not None
    return Party(name, SoftwareKey(issued.key), issued.certificate, chain)


def company(pair: ca.CompanyPair, name: str, code: str, chain: list[x509.Certificate]) -> Party:
    assert pair.signing.key is not None and pair.encryption.key is not None
    return Party(
        name,
        SoftwareKey(pair.signing.key),
        pair.signing.certificate,
        chain,
        SoftwareKey(pair.encryption.key),
        pair.encryption.certificate,
        code,
    )


def first_instant(pki: Pki) -> datetime:
    """A hall's start time: after the certificates issued for it (valid from a minute before
    now), whenever this runs."""
    return max(pki.now, datetime.now(UTC)).replace(microsecond=0) + timedelta(minutes=1)


def platform_person(pki: Pki) -> ca.Issued:
    """The server's own signing certificate (the platform's seal)."""
    issued = ca.issue_person(
        pki.root_a, name="平台签章", role="centre", person_id="PLATFORM1", key_type="ec-p256"
    )
    assert issued.key is not None
    return issued


def platform_identity(pki: Pki) -> ServerIdentity:
    issued = platform_person(pki)
    assert issued.key is not None
    return ServerIdentity(SoftwareKey(issued.key), issued.certificate, [])


def standard_parties(pki: Pki) -> dict[str, Party]:
    """The centre, host and supervisor accounts and the bidders a, b and c."""
    return {
        "centre": person(pki.root_a, "中心管理员", "centre", "C001", []),
        "host": person(pki.root_a, "主持人王", "host", "H001", []),
        "supervisor": person(pki.root_b, "监管李", "supervisor", "S001", []),
        "a": company(pki.bidder_rsa, "甲建设工程有限公司", CODE_A, []),
        "b": company(pki.bidder_ec, "乙路桥集团有限公司", CODE_B, [pki.sub_b.certificate]),
        "c": company(pki.other_rsa, "丙市政工程有限公司", CODE_C, []),
    }


async def serve_hall(hub: Hub, clock: ManualClock, pki: Pki, t0: datetime) -> Hall:
    """``hub`` on a loopback port, with the first centre account and the standard parties
    registered through the API."""
    server = TestServer(build_app(hub), host="127.0.0.1")
    await server.start_server()
    parties = standard_parties(pki)
    await hub.store.add_account("centre", "中心管理员", cert_pem(parties["centre"].cert), t0)
    hall = Hall(hub, server, clock, aiohttp.ClientSession(), pki, t0, parties)
    await register_parties(hall.request, parties)
    return hall


async def start_hall(pki: Pki, tmp: Path, database_url: str | None = None) -> Hall:
    t0 = first_instant(pki)
    clock = ManualClock(t0)
    trust: TrustStore = pki.trust()
    settings = Settings(data_dir=tmp / "data", database_url=database_url, scheduler=False)
    hub = await build_hub(settings, trust=trust, identity=platform_identity(pki), clock=clock)
    return await serve_hall(hub, clock, pki, t0)


async def register_parties(request: Any, parties: dict[str, Party]) -> None:
    """Through the API, as the centre: host and supervisor accounts, bidders a/b/c, project, lot.

    ``request(method, path, who, body)`` is the caller's HTTP helper (in-process or a child).
    """
    centre = parties["centre"]
    for role in ("host", "supervisor"):
        body = {"role": role, "name": parties[role].name, "cert_pem": cert_pem(parties[role].cert)}
        await request("POST", "/api/accounts", centre, body)
    for key in ("a", "b", "c"):
        p = parties[key]
        assert p.enc_cert is not None
        body = {
            "credit_code": p.code,
            "name": p.name,
            "signing_cert_pem": cert_pem(p.cert),
            "encryption_cert_pem": cert_pem(p.enc_cert),
        }
        await request("POST", "/api/companies", centre, body)
    project = {
        "code": "JS-2026-0101",
        "name": "市政道路改造工程",
        "tenderer_name": "某市城投公司",
        "tenderer_credit_code": TENDERER_CODE,
    }
    await request("POST", "/api/projects", centre, project)
    lot = {"project_code": "JS-2026-0101", "code": "01", "name": "01 标段"}
    await request("POST", "/api/lots", centre, lot)


async def stop_hall(hall: Hall) -> None:
    for listener in hall.listeners:
        if listener.client.connected:
            await listener.client.disconnect()
    await hall.http.close()
    await hall.server.close()


def P(hall: Hall, key: str) -> Party:
    return hall.parties[key]
