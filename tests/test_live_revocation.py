"""Live revocation (issue 15, attack 2): a CRL that names a certificate ends its tokens at once.

The trust folder is reloaded while the server runs; a token whose certificate a newly loaded
CRL names is refused CERT_REVOKED on every route (refresh included) and in the hall, and its
live hall connections are closed; expired CRLs are replaced without a restart, from the folder
or fetched over HTTP (a real aiohttp server on loopback); every revocation enters the record.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from crypto import ca
from server.app import build_hub
from server.auth import TokenRevoked
from server.clock import ManualClock
from server.core import Settings
from server.identity import cert_pem, cert_sha256, load_trust
from server.work.crl_fetch import CrlFetcher
from server.work.revocation_record import verify_journal
from tests.support.hall import (
    ApiError,
    ConnectionRefused,
    Hall,
    Listener,
    P,
    Party,
    company,
    first_instant,
    platform_identity,
    serve_hall,
    stop_hall,
)
from tests.support.pki import CODE_A, Pki, credit_code
from tests.support.servers import (
    REPO,
    Client,
    ServerProcess,
    free_port,
    prepare_site,
    register,
)

CODE_D = credit_code("91110000MA0DDDDD1")


# --- a hall whose trust comes from a folder ----------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def crl_der(
    issuer: ca.Issued,
    revoked: list[x509.Certificate],
    *,
    this_update: datetime,
    next_update: datetime,
    number: int,
) -> bytes:
    entries = [
        ca.RevokedEntry(c.serial_number, this_update, x509.ReasonFlags.key_compromise)
        for c in revoked
    ]
    crl = ca.issue_crl(
        issuer, entries, this_update=this_update, next_update=next_update, crl_number=number
    )
    return crl.public_bytes(serialization.Encoding.DER)


class Folder:
    """The trust folder: the test PKI's CAs, and one CRL file per CA."""

    def __init__(self, path: Path, pki: Pki, t0: datetime) -> None:
        self.path, self.pki, self.t0 = path, pki, t0
        self.number = 1
        path.mkdir(parents=True)
        for name, issued in self.cas().items():
            pem = issued.certificate.public_bytes(serialization.Encoding.PEM)
            (path / f"{name}.pem").write_bytes(pem)
        self.publish()

    def cas(self) -> dict[str, ca.Issued]:
        return {"root_a": self.pki.root_a, "root_b": self.pki.root_b, "sub_b": self.pki.sub_b}

    def publish(
        self,
        revoked: Sequence[x509.Certificate] = (),
        *,
        this_update: datetime | None = None,
        next_update: datetime | None = None,
    ) -> None:
        """New CRLs for every CA, naming ``revoked`` under their issuers."""
        this = this_update or self.t0 - timedelta(minutes=30)
        nxt = next_update or self.t0 + timedelta(days=7)
        for name, issued in self.cas().items():
            mine = [c for c in revoked if c.issuer == issued.certificate.subject]
            der = crl_der(issued, mine, this_update=this, next_update=nxt, number=self.number)
            write_atomically(self.path / f"{name}.crl", der)
        self.number += 1


async def start_live_hall(
    pki: Pki, tmp: Path, database_url: str, **settings: Any
) -> tuple[Hall, Folder]:
    """As ``tests.support.hall.start_hall``, with the trust read from a folder it reloads."""
    t0 = first_instant(pki)
    clock = ManualClock(t0)
    folder = Folder(tmp / "trust", pki, t0)
    config = Settings(
        data_dir=tmp / "data",
        database_url=database_url,
        scheduler=False,
        trust_dir=folder.path,
        **settings,
    )
    trust = load_trust(folder.path)
    hub = await build_hub(config, trust=trust, identity=platform_identity(pki), clock=clock)
    return await serve_hall(hub, clock, pki, t0), folder


@pytest_asyncio.fixture
async def live(pki: Pki, tmp_path: Path, store_url: str) -> AsyncIterator[tuple[Hall, Folder]]:
    hall, folder = await start_live_hall(pki, tmp_path, store_url)
    try:
        yield hall, folder
    finally:
        await stop_hall(hall)


def record(hall: Hall) -> list[dict[str, Any]]:
    return verify_journal(hall.hub.settings.data_dir / "trust-state" / "revocations.jsonl")


def sha(cert: x509.Certificate) -> str:
    return cert_sha256(cert)


async def until(done: Callable[[], Any], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await done():
            await asyncio.sleep(0.02)


async def until_revoked(
    who: Party, token: str | None, request: Callable[[], Awaitable[Any]]
) -> None:
    """Until ``request``, made by ``who`` with ``token`` again each time, is refused as
    CERT_REVOKED."""

    async def refused() -> bool:
        who.token = token
        try:
            await request()
        except ApiError as exc:
            assert exc.code == "CERT_REVOKED", exc.body
            return True
        return False

    await until(refused)


# --- tokens end when the CRL names the certificate ---------------------------------------------


async def test_a_revoked_bidders_token_is_refused_at_once_and_cannot_be_refreshed(
    live: tuple[Hall, Folder],
) -> None:
    hall, folder = live
    a, b = P(hall, "a"), P(hall, "b")
    sid = await hall.create_session()
    await hall.login(a)
    await hall.login(b)
    stolen = a.token
    await hall.request("GET", f"/api/sessions/{sid}", a)
    await hall.request("POST", "/api/auth/refresh", a)

    folder.publish([a.cert])
    assert await hall.hub.live_trust.reload() is True

    a.token = stolen
    for method, path in (("GET", f"/api/sessions/{sid}"), ("POST", "/api/auth/refresh")):
        err = await hall.refused(401, "CERT_REVOKED", method, path, a)
        assert "keyCompromise" in err.body["detail"]
    with pytest.raises(ApiError) as login:  # a new sign-in is refused by path validation
        await hall.login(a)
    assert login.value.code == "CERT_REVOKED"
    # another company's token is untouched
    await hall.request("GET", f"/api/sessions/{sid}", b)

    entries = record(hall)
    kinds = [(e["kind"], e["cert_sha256"]) for e in entries]
    assert ("certificate_revoked", sha(a.cert)) in kinds
    assert ("token_refused", sha(a.cert)) in kinds
    assert all(e["cert_sha256"] != sha(b.cert) for e in entries)
    revoked = next(e for e in entries if e["kind"] == "certificate_revoked")
    assert revoked["serial"] == f"{a.cert.serial_number:x}"
    assert revoked["reason"] == "keyCompromise" and revoked["signature"]
    # once each, however often the token is tried
    a.token = stolen
    await hall.refused(401, "CERT_REVOKED", "GET", f"/api/sessions/{sid}", a)
    assert len(record(hall)) == len(entries)


async def test_a_staff_persons_token_ends_when_the_crl_names_the_person_certificate(
    live: tuple[Hall, Folder],
) -> None:
    hall, folder = live
    host, supervisor = P(hall, "host"), P(hall, "supervisor")
    sid = await hall.create_session()
    await hall.login(supervisor)
    folder.publish([host.cert])
    await hall.hub.live_trust.reload()
    err = await hall.refused(401, "CERT_REVOKED", "GET", f"/api/sessions/{sid}", host)
    assert err.body["zh"] and err.body["en"]
    await hall.request("GET", f"/api/sessions/{sid}", supervisor)


async def test_a_revoked_certificates_hall_connection_is_closed_and_cannot_come_back(
    live: tuple[Hall, Folder],
) -> None:
    hall, folder = live
    a, c = P(hall, "a"), P(hall, "c")
    sid = await hall.create_session()
    revoked_sock = await hall.listen(sid, a)
    kept_sock = await hall.listen(sid, c)
    token = a.token
    folder.publish([a.cert])
    await hall.hub.live_trust.reload()

    async def gone() -> bool:
        return not revoked_sock.client.connected

    await until(gone)
    assert kept_sock.client.connected
    again = Listener()
    hall.listeners.append(again)
    with pytest.raises(ConnectionRefused) as err:
        await again.connect(hall.url, token or "", sid)
    assert err.value.code == "CERT_REVOKED" and err.value.data["zh"] and err.value.data["en"]


async def test_the_server_notices_a_changed_trust_folder_by_itself(
    pki: Pki, tmp_path: Path, store_url: str
) -> None:
    hall, folder = await start_live_hall(pki, tmp_path, store_url, trust_poll_seconds=0.05)
    try:
        a = P(hall, "a")
        sid = await hall.create_session()
        await hall.login(a)
        token = a.token
        folder.publish([a.cert])
        await until_revoked(a, token, lambda: hall.request("GET", f"/api/sessions/{sid}", a))
    finally:
        await stop_hall(hall)


# --- the folder is reloaded: fresh CRLs help, broken files do not hurt -------------------------


async def test_expired_start_up_crls_are_replaced_from_the_folder_without_a_restart(
    live: tuple[Hall, Folder],
) -> None:
    hall, folder = live
    a = P(hall, "a")
    t0 = hall.t0
    folder.publish(this_update=t0 - timedelta(minutes=30), next_update=t0 + timedelta(minutes=10))
    await hall.hub.live_trust.reload()
    await hall.login(a)
    hall.clock.set(t0 + timedelta(minutes=20))  # every CRL has expired
    with pytest.raises(ApiError) as stale:
        await hall.login(a)
    assert stale.value.code == "CERT_REVOCATION_UNKNOWN"
    folder.publish(this_update=t0 + timedelta(minutes=15), next_update=t0 + timedelta(days=1))
    assert await hall.hub.live_trust.reload() is True
    await hall.login(a)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_broken_trust_file_is_refused_and_the_previous_store_stays(
    live: tuple[Hall, Folder], caplog: pytest.LogCaptureFixture
) -> None:
    hall, folder = live
    a, b = P(hall, "a"), P(hall, "b")
    folder.publish([b.cert])
    await hall.hub.live_trust.reload()
    before = hall.hub.trust
    with caplog.at_level(logging.ERROR, logger="server.work.trust_reload"):
        write_atomically(folder.path / "root_a.crl", b"-----BEGIN X509 CRL-----\ngarbage\n")
        assert await hall.hub.live_trust.reload() is False
    assert hall.hub.trust is before
    assert any("not reloaded" in r.getMessage() for r in caplog.records)
    await hall.login(a)  # the old store still validates
    with pytest.raises(ApiError) as err:
        await hall.login(b)  # and still knows the revocation
    assert err.value.code == "CERT_REVOKED"
    # a folder left without a root (a copy half done) is refused the same way
    folder.publish()
    for name in ("root_a", "root_b"):
        (folder.path / f"{name}.pem").unlink()
    assert await hall.hub.live_trust.reload(force=True) is False
    assert hall.hub.trust is before


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_crl_not_signed_by_its_ca_revokes_nothing(live: tuple[Hall, Folder]) -> None:
    hall, folder = live
    a = P(hall, "a")
    sid = await hall.create_session()
    await hall.login(a)
    rogue = ca.create_root_ca("Test CA A Root", organization="Test CA A", key_type="rsa2048")
    forged = crl_der(
        rogue,
        [a.cert],
        this_update=hall.t0 - timedelta(minutes=5),
        next_update=hall.t0 + timedelta(days=1),
        number=99,
    )
    write_atomically(folder.path / "forged.crl", forged)
    await hall.hub.live_trust.reload()
    await hall.request("GET", f"/api/sessions/{sid}", a)
    assert not (hall.hub.settings.data_dir / "trust-state" / "revocations.jsonl").exists()


# --- CRLs fetched over HTTP --------------------------------------------------------------------


class CrlServer:
    """A real HTTP server on loopback that serves whatever CRL bytes the test puts in it."""

    def __init__(self) -> None:
        self.body: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        app = web.Application()
        app.router.add_get("/{name}", self._get)
        self.server = TestServer(app, host="127.0.0.1")

    async def _get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name not in self.body:
            raise web.HTTPNotFound()
        return web.Response(body=self.body[name], content_type="application/pkix-crl")

    def url(self, name: str) -> str:
        return str(self.server.make_url(f"/{name}"))


@pytest_asyncio.fixture
async def crl_server() -> AsyncIterator[CrlServer]:
    s = CrlServer()
    await s.server.start_server()
    try:
        yield s
    finally:
        await s.server.close()


def with_distribution_point(
    issuer: ca.Issued, cert: x509.Certificate, url: str
) -> x509.Certificate:
    """``cert`` again (same subject, key and extensions, a new serial) with a CRL DP."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    dp = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
    builder = builder.add_extension(x509.CRLDistributionPoints([dp]), critical=False)
    assert issuer.key is not None
    return builder.sign(issuer.key, hashes.SHA256())  # type: ignore[arg-type]


async def register_company_d(hall: Hall, url: str) -> Party:
    pair = ca.issue_company_pair(
        hall.pki.root_a, credit_code=CODE_D, company_name="丁水利工程有限公司"
    )
    pair.signing = ca.Issued(
        with_distribution_point(hall.pki.root_a, pair.signing.certificate, url), pair.signing.key
    )
    d = company(pair, "丁水利工程有限公司", CODE_D, [])
    assert d.enc_cert is not None
    body = {
        "credit_code": CODE_D,
        "name": d.name,
        "signing_cert_pem": cert_pem(d.cert),
        "encryption_cert_pem": cert_pem(d.enc_cert),
    }
    await hall.request("POST", "/api/companies", P(hall, "centre"), body)
    return d


async def test_crls_are_fetched_from_the_distribution_point_and_an_expired_one_is_replaced(
    pki: Pki, tmp_path: Path, store_url: str, crl_server: CrlServer
) -> None:
    hall, _folder = await start_live_hall(pki, tmp_path, store_url, fetch_crls=True)
    try:
        t0 = hall.t0
        url = crl_server.url("ca-a.crl")
        d = await register_company_d(hall, url)
        crl_server.body["ca-a.crl"] = crl_der(
            pki.root_a, [], this_update=t0 - timedelta(minutes=1),
            next_update=t0 + timedelta(minutes=10), number=100,
        )  # fmt: skip
        await hall.hub.live_trust.reload(force=True)
        assert crl_server.hits["ca-a.crl"] == 1
        sid = await hall.create_session()
        await hall.login(d)
        token = d.token

        # The CA publishes a CRL that names D; the one held is current, so it is not asked yet.
        crl_server.body["ca-a.crl"] = crl_der(
            pki.root_a, [d.cert], this_update=t0 + timedelta(minutes=5),
            next_update=t0 + timedelta(days=1), number=101,
        )  # fmt: skip
        await hall.hub.live_trust.reload(force=True)
        assert crl_server.hits["ca-a.crl"] == 1
        await hall.request("GET", f"/api/sessions/{sid}", d)

        hall.clock.set(t0 + timedelta(minutes=11))  # the fetched CRL has expired: fetch again
        await hall.hub.live_trust.reload(force=True)
        assert crl_server.hits["ca-a.crl"] == 2
        d.token = token
        await hall.refused(401, "CERT_REVOKED", "GET", f"/api/sessions/{sid}", d)
        assert ("certificate_revoked", sha(d.cert)) in [
            (e["kind"], e["cert_sha256"]) for e in record(hall)
        ]
        cached = list((hall.hub.settings.data_dir / "trust-state" / "crls").glob("*.crl"))
        assert len(cached) == 1

        # an older CRL served later (a replay on the plain-HTTP path) is not taken
        crl_server.body["ca-a.crl"] = crl_der(
            pki.root_a, [], this_update=t0 - timedelta(minutes=1),
            next_update=t0 + timedelta(days=2), number=100,
        )  # fmt: skip
        hall.clock.set(t0 + timedelta(hours=2))
        await hall.hub.live_trust.reload(force=True)
        assert crl_server.hits["ca-a.crl"] == 3
        assert hall.hub.live_trust.lookup(sha(d.cert)) is not None
    finally:
        await stop_hall(hall)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_without_fetch_crls_the_server_never_asks_the_distribution_point(
    live: tuple[Hall, Folder], crl_server: CrlServer
) -> None:
    hall, _folder = live
    await register_company_d(hall, crl_server.url("ca-a.crl"))
    await hall.hub.live_trust.reload(force=True)
    assert crl_server.hits == {}


async def test_a_fetched_crl_is_used_only_if_its_ca_signed_it_and_it_is_small(
    pki: Pki, tmp_path: Path, crl_server: CrlServer
) -> None:
    now = datetime.now(UTC)
    cas = [pki.root_a.certificate, pki.root_b.certificate, pki.sub_b.certificate]
    rogue = ca.create_root_ca("Test CA A Root", organization="Test CA A", key_type="rsa2048")
    window = {"this_update": now - timedelta(minutes=1), "next_update": now + timedelta(days=1)}
    crl_server.body["forged.crl"] = crl_der(rogue, [], number=1, **window)
    crl_server.body["huge.crl"] = crl_der(pki.root_a, [], number=1, **window) + b"\0" * 70_000
    crl_server.body["junk.crl"] = b"<html>not a CRL</html>"
    crl_server.body["good.crl"] = crl_der(pki.sub_b, [], number=1, **window)
    fetcher = CrlFetcher(tmp_path / "crls", max_bytes=64_000)
    names = ["forged.crl", "huge.crl", "junk.crl", "missing.crl", "good.crl"]
    changed = await fetcher.refresh([crl_server.url(n) for n in names], cas, now)
    assert changed is True
    assert [c.issuer for c in fetcher.crls()] == [pki.sub_b.certificate.subject]
    assert len(list((tmp_path / "crls").glob("*.crl"))) == 1
    # a failed URL is not asked again at once
    await fetcher.refresh([crl_server.url(n) for n in names], cas, now)
    assert crl_server.hits["forged.crl"] == 1 and crl_server.hits["good.crl"] == 1


async def test_a_fetch_that_hangs_times_out(pki: Pki, tmp_path: Path) -> None:
    started = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/slow.crl", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        fetcher = CrlFetcher(tmp_path / "crls", timeout=aiohttp.ClientTimeout(total=0.5))
        url = str(server.make_url("/slow.crl"))
        changed = await fetcher.refresh([url], [pki.root_a.certificate], datetime.now(UTC))
        assert started.is_set() and changed is False and fetcher.crls() == []
    finally:
        await server.close()


async def test_another_process_sharing_the_data_folder_refuses_the_token_too(
    live: tuple[Hall, Folder],
) -> None:
    """A token issued by one process for a certificate only it has seen (a second certificate
    of company A from another CA, bound by the centre after registration, so not among the
    registered certificates a reload reads) is refused by a second process."""
    hall, folder = live
    pair = ca.issue_company_pair(
        hall.pki.sub_b, credit_code=CODE_A, company_name="甲建设工程有限公司", key_type="ec-p256"
    )
    second = company(pair, "甲建设工程有限公司", CODE_A, [hall.pki.sub_b.certificate])
    binding = {"credit_code": CODE_A, "usage": "signing", "cert_pem": cert_pem(second.cert)}
    await hall.request("POST", "/api/bindings", P(hall, "centre"), binding)
    await hall.login(second)
    assert second.token is not None
    other = await build_hub(
        hall.hub.settings, trust=load_trust(folder.path), identity=hall.hub.identity,
        clock=hall.clock,
    )  # fmt: skip
    try:
        await other.live_trust.reload(force=True)
        assert other.tokens.check(second.token, hall.clock.now()).party_id == CODE_A
        folder.publish([second.cert])
        await other.live_trust.reload()
        with pytest.raises(TokenRevoked):
            other.tokens.check(second.token, hall.clock.now())
    finally:
        await other.store.close()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_rewrite_the_file_times_do_not_show_is_found_by_the_periodic_full_read(
    pki: Pki, tmp_path: Path, store_url: str
) -> None:
    """Same name, same size, same modification time: only the content check finds it."""
    hall, folder = await start_live_hall(
        pki, tmp_path, store_url, trust_poll_seconds=0.05, trust_reload_seconds=0.5
    )
    try:
        a, c = P(hall, "a"), P(hall, "c")
        sid = await hall.create_session()
        window = {"this_update": hall.t0 - timedelta(minutes=5), "next_update": hall.t0 + timedelta(days=1)}  # fmt: skip

        def pem(revoked: x509.Certificate, number: int) -> bytes:
            der = crl_der(pki.root_a, [revoked], number=number, **window)
            crl = x509.load_der_x509_crl(der)
            return crl.public_bytes(serialization.Encoding.PEM)

        first, second = pem(c.cert, 50), pem(a.cert, 51)
        size = max(len(first), len(second))
        first, second = first.ljust(size, b"\n"), second.ljust(size, b"\n")
        target = folder.path / "root_a.crl"
        write_atomically(target, first)
        await hall.hub.live_trust.reload()
        await hall.login(a)
        token = a.token
        stat = target.stat()
        target.write_bytes(second)  # in place: same size
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert target.stat().st_mtime_ns == stat.st_mtime_ns
        await until_revoked(a, token, lambda: hall.request("GET", f"/api/sessions/{sid}", a))
    finally:
        await stop_hall(hall)


async def test_bidbridge_serve_reloads_its_trust_folder_by_itself(pki: Pki, tmp_path: Path) -> None:
    """The real command (a child process, SQLite): a CRL dropped into ``--trust`` ends the
    bidder's token within the poll interval, with no restart (and ``--fetch-crls`` parses)."""
    site = prepare_site(pki, tmp_path, None)
    # this checkout's code, not whatever the installed command's editable path points to
    site.env["PYTHONPATH"] = str(REPO)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    port = free_port()
    server = ServerProcess(
        site.serve_argv(port, "--fetch-crls"), site.env, tmp_path / "server.log",
        f"http://127.0.0.1:{port}",
    )  # fmt: skip
    try:
        await server.start(http)
        client = Client(http, server.url, site.parties)
        await register(client)
        a = site.parties["a"]
        await client.login(a)
        token = a.token
        await client.request("POST", "/api/auth/refresh", a)
        entry = ca.RevokedEntry(a.cert.serial_number, pki.now, x509.ReasonFlags.key_compromise)
        crl = pki.crl(pki.root_a, [entry], number=2)
        write_atomically(site.trust / "root_a.crl", crl.public_bytes(serialization.Encoding.PEM))
        await until_revoked(a, token, lambda: client.request("POST", "/api/auth/refresh", a))
        assert "trust store reloaded" in server.tail()
    finally:
        server.kill()
        await http.close()
