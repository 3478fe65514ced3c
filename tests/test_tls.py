"""TLS on loopback: `bidbridge serve --tls-cert/--tls-key` serves HTTPS and socket.io over wss
with the files `bidbridge ca issue-server` writes; the agents and CLIs verify the server (the
system's CAs, plus `--ca-file`), and an untrusted or misnamed certificate is a clear refusal,
never a silent downgrade; plain HTTP to the TLS port gets nothing; old protocols and ciphers
without forward secrecy are refused, by the server and by the shipped nginx configuration, which
also redirects HTTP to HTTPS and sends HSTS. Bad TLS files stop `serve` at start with a stable
code in Chinese and English. (Issue: trust and secrecy, item 10 "no TLS anywhere".)"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from crypto import ca
from room_client.client import AgentError, HallClient, client_tls
from room_client.credentials import Credentials
from room_client.follower import HallFollower
from server.tls import HSTS, server_context
from tests.support.cli import _env as cli_env
from tests.support.cli import write_party
from tests.support.hall import start_hall, stop_hall
from tests.support.janus import terminate
from tests.support.pki import Pki
from tests.support.servers import (
    REPO,
    Client,
    ServerProcess,
    SiteData,
    bidbridge_command,
    deployed_nginx_conf,
    free_port,
    issue_tls_files,
    need,
    prepare_site,
    published_session,
    register,
    start_deployed_nginx,
    worktree_env,
)

# --- helpers -----------------------------------------------------------------------------------


def run_bidbridge(*argv: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """This checkout's ``bidbridge`` in a child process (the CLIs' own environment)."""
    return subprocess.run(
        [bidbridge_command(), *map(str, argv)],
        cwd=REPO,
        env=worktree_env(cli_env()),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class TlsCa:
    """A centre's own TLS CA made with `bidbridge ca init`, and a server certificate for
    127.0.0.1 and localhost made with `bidbridge ca issue-server` (files as written)."""

    cert: Path
    key: Path
    ca_file: Path  # chain.pem, as issue-server writes it beside the certificate


def make_tls_ca(folder: Path) -> TlsCa:
    init = run_bidbridge("ca", "init", "--dir", folder / "ca", "--name", "Test Centre TLS Root")
    assert init.returncode == 0, init.stderr
    out = folder / "server"
    issued = run_bidbridge(
        "ca", "issue-server", "--dir", folder / "ca", "--ip", "127.0.0.1", "--dns", "localhost",
        "--out", out,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    return TlsCa(out / "server.crt.pem", out / "server.key.pem", out / "chain.pem")


@dataclass
class TlsSite:
    site: SiteData
    server: ServerProcess
    tls: TlsCa
    http: aiohttp.ClientSession  # trusts the site's TLS CA
    port: int

    @property
    def url(self) -> str:
        return self.server.url

    def log(self) -> str:
        return self.server.log.read_text("utf-8", "replace")


@pytest_asyncio.fixture
async def tls_site(pki: Pki, tmp_path: Path) -> AsyncIterator[TlsSite]:
    """`bidbridge serve --tls-cert server.crt.pem --tls-key server.key.pem` in a child process."""
    tls = make_tls_ca(tmp_path / "tls")
    site = prepare_site(pki, tmp_path, None)
    port = free_port()
    argv = site.serve_argv(port, "--tls-cert", str(tls.cert), "--tls-key", str(tls.key))
    server = ServerProcess(
        argv, worktree_env(site.env), tmp_path / "server.log", f"https://127.0.0.1:{port}"
    )
    http = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_tls(tls.ca_file)),
        timeout=aiohttp.ClientTimeout(total=30),
    )
    try:
        await server.start(http)
        yield TlsSite(site, server, tls, http, port)
    finally:
        server.kill()
        await http.close()


def credentials(tmp: Path, site: SiteData, who: str) -> Credentials:
    key, cert = write_party(tmp / "keys", who, site.parties[who])
    return Credentials.load(key=key, cert=cert)


async def handshake(
    port: int,
    cafile: Path,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> str:
    """A bare TLS handshake with 127.0.0.1:``port``; the negotiated version, or the failure."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 on purpose
        if maximum is not None:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"), 10
    )
    try:
        obj = writer.get_extra_info("ssl_object")
        return str(obj.version())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


OLD_TLS = (ssl.TLSVersion.TLSv1_1, "DEFAULT:@SECLEVEL=0")
NO_FORWARD_SECRECY = (ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256")  # RSA key exchange


@contextlib.asynccontextmanager
async def permissive_server(cert: Path, key: Path) -> AsyncIterator[int]:
    """A TLS server that accepts anything (TLS 1.0 up, any cipher): the control showing that
    the probes below really offer what they say, so a refusal elsewhere is the server's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.load_cert_chain(str(cert), str(key))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def assert_modern_tls_only(port: int, cafile: Path, cert: Path, key: Path) -> None:
    """TLS 1.3 and TLS 1.2 with ECDHE + AES-GCM are accepted; TLS 1.1 and a TLS 1.2 cipher
    without forward secrecy are refused (which a permissive server with the same certificate
    accepts from the very same client)."""
    async with permissive_server(cert, key) as control:
        assert await handshake(control, cafile, *OLD_TLS) == "TLSv1.1"
        assert await handshake(control, cafile, *NO_FORWARD_SECRECY) == "TLSv1.2"
    assert await handshake(port, cafile) == "TLSv1.3"
    modern = await handshake(port, cafile, maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE+AESGCM")
    assert modern == "TLSv1.2"
    for probe in (OLD_TLS, NO_FORWARD_SECRECY):
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await handshake(port, cafile, *probe)


# --- bidbridge serve with TLS ------------------------------------------------------------------


async def test_an_agent_with_ca_file_logs_in_and_follows_the_hall_over_tls(
    tls_site: TlsSite, tmp_path: Path
) -> None:
    # the API over HTTPS, with HSTS
    async with tls_site.http.get(tls_site.url + "/api/time") as r:
        assert r.status == 200
        assert r.headers["Strict-Transport-Security"] == HSTS
    client = Client(tls_site.http, tls_site.url, tls_site.site.parties)
    await register(client)
    sid = await published_session(client, timedelta(hours=1))
    # the agent: CA login and the hall's socket.io over wss, verified with --ca-file's CA
    async with HallClient(
        tls_site.url,
        credentials(tmp_path, tls_site.site, "host"),
        ssl_context=client_tls(tls_site.tls.ca_file),
    ) as agent:
        me = await agent.login()
        assert agent.role == "host", me
        follower = HallFollower(agent, sid, reconnection=False)
        try:
            await follower.connect(timeout=15)
            assert follower.ordered(), "the replay over wss brought the session's events"
        finally:
            await follower.close()
    # the bidder's CLI with --ca-file
    key, cert = write_party(tmp_path / "cli", "a", tls_site.site.parties["a"])
    listed = run_bidbridge(
        "bidder", "sessions", "--server", tls_site.url, "--ca-file", tls_site.tls.ca_file,
        "--key", key, "--cert", cert,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert sid in listed.stdout
    assert "Traceback" not in tls_site.log()


async def test_an_agent_without_the_centres_ca_is_refused_tls_untrusted(
    tls_site: TlsSite, tmp_path: Path
) -> None:
    # no --ca-file: the system's CAs do not know the centre's own CA
    async with HallClient(tls_site.url, credentials(tmp_path, tls_site.site, "host")) as agent:
        with pytest.raises(AgentError) as refused:
            await agent.login()
    assert refused.value.code == "TLS_UNTRUSTED"
    assert "--ca-file" in refused.value.zh and "--ca-file" in refused.value.en
    # another CA given (the test PKI's): still untrusted; the option adds, never disables
    other = tmp_path / "other-ca.pem"
    other.write_bytes(tls_site.site.parties["centre"].cert.public_bytes(serialization.Encoding.PEM))
    key, cert = write_party(tmp_path / "cli", "a", tls_site.site.parties["a"])
    for extra in ([], ["--ca-file", str(other)]):
        cli = run_bidbridge(
            "bidder", "sessions", "--server", tls_site.url,
            "--key", key, "--cert", cert, *extra,
        )  # fmt: skip
        assert cli.returncode == 2, cli
        assert "TLS_UNTRUSTED" in cli.stderr and "--ca-file" in cli.stderr, cli.stderr
        assert "Traceback" not in cli.stderr
    # a --ca-file that is not a CA certificate is named as such
    bad = run_bidbridge(
        "bidder", "sessions", "--server", tls_site.url, "--ca-file", key,
        "--key", key, "--cert", cert,
    )  # fmt: skip
    assert bad.returncode == 2 and "TLS_CA_FILE_INVALID" in bad.stderr, bad.stderr


async def test_plain_http_to_the_tls_port_gets_nothing_and_the_server_keeps_serving(
    tls_site: TlsSite,
) -> None:
    async with aiohttp.ClientSession() as plain:
        for _ in range(3):
            with pytest.raises(aiohttp.ClientError):
                async with plain.get(f"http://127.0.0.1:{tls_site.port}/api/time") as r:
                    await r.read()
    # an agent pointed at http:// on the TLS port gets a clear error, not a hang
    async with HallClient(f"http://127.0.0.1:{tls_site.port}", None, timeout=10) as agent:
        with pytest.raises(AgentError) as refused:
            await agent.server_time()
    assert refused.value.code == "SERVER_UNREACHABLE"
    async with tls_site.http.get(tls_site.url + "/api/time") as r:
        assert r.status == 200
    assert tls_site.server.proc is not None and tls_site.server.proc.poll() is None
    assert "Traceback" not in tls_site.log()


async def test_serve_accepts_only_tls_1_2_and_1_3_with_forward_secret_ciphers(
    tls_site: TlsSite,
) -> None:
    await assert_modern_tls_only(
        tls_site.port, tls_site.tls.ca_file, tls_site.tls.cert, tls_site.tls.key
    )
    assert "Traceback" not in tls_site.log()


async def test_a_certificate_for_another_name_is_refused_even_with_its_ca(
    pki: Pki, tmp_path: Path
) -> None:
    """The agent checks the name too: a certificate from a trusted CA, issued for another host,
    is TLS_UNTRUSTED (a stolen certificate of another site does not pass)."""
    cert, key = issue_tls_files(tmp_path / "other", pki.root_a, dns=("bid.example.cn",), ips=())
    ctx = server_context(str(cert), str(key))
    app = web.Application()

    async def now(request: web.Request) -> web.Response:
        return web.json_response({"now": datetime.now(UTC).isoformat()})

    app.router.add_get("/api/time", now)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    ca_file = tmp_path / "root_a.pem"
    ca_file.write_bytes(pki.root_a.certificate.public_bytes(serialization.Encoding.PEM))
    try:
        url = f"https://127.0.0.1:{port}"
        async with HallClient(url, None, ssl_context=client_tls(ca_file)) as agent:
            with pytest.raises(AgentError) as refused:
                await agent.server_time()
        assert refused.value.code == "TLS_UNTRUSTED"
        assert "127.0.0.1" in str(refused.value.detail)
    finally:
        await runner.cleanup()


# --- bad TLS files stop serve at start ---------------------------------------------------------


def _expired(folder: Path, pki: Pki) -> tuple[Path, Path]:
    folder.mkdir(parents=True)
    issued = ca.issue_server(
        pki.root_a,
        dns_names=["localhost"],
        not_before=datetime.now(UTC) - timedelta(days=10),
        days=2,
    )
    assert issued.key is not None
    cert, key = folder / "server.crt.pem", folder / "server.key.pem"
    cert.write_bytes(issued.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def _encrypted(folder: Path, pki: Pki) -> tuple[Path, Path]:
    cert, key = issue_tls_files(folder, pki.root_a)
    loaded = serialization.load_pem_private_key(key.read_bytes(), None)
    key.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return cert, key


@pytest.mark.parametrize(
    "case, code",
    [
        ("missing certificate", "TLS_FILE_MISSING"),
        ("missing key", "TLS_FILE_MISSING"),
        ("key of another certificate", "TLS_KEY_MISMATCH"),
        ("key given as certificate", "TLS_CERT_INVALID"),
        ("certificate given as key", "TLS_KEY_INVALID"),
        ("encrypted key", "TLS_KEY_INVALID"),
        ("expired certificate", "TLS_CERT_NOT_VALID_NOW"),
        ("certificate without key", "TLS_OPTIONS_INCOMPLETE"),
    ],
)
def test_serve_refuses_bad_tls_files_at_start_with_a_clear_code(
    pki: Pki, tmp_path: Path, case: str, code: str
) -> None:
    cert, key = issue_tls_files(tmp_path / "good", pki.root_a)
    other_cert, other_key = issue_tls_files(tmp_path / "other", pki.root_a)
    options = {
        "missing certificate": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(key)],
        "missing key": ["--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.key")],
        "key of another certificate": ["--tls-cert", str(cert), "--tls-key", str(other_key)],
        "key given as certificate": ["--tls-cert", str(key), "--tls-key", str(key)],
        "certificate given as key": ["--tls-cert", str(cert), "--tls-key", str(other_cert)],
        "certificate without key": ["--tls-cert", str(cert)],
    }
    if case == "expired certificate":
        c, k = _expired(tmp_path / "expired", pki)
        options[case] = ["--tls-cert", str(c), "--tls-key", str(k)]
    if case == "encrypted key":
        c, k = _encrypted(tmp_path / "encrypted", pki)
        options[case] = ["--tls-cert", str(c), "--tls-key", str(k)]
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    started = run_bidbridge(
        "serve", "--data", data, "--host", "127.0.0.1", "--port", str(port), *options[case],
        timeout=30,
    )  # fmt: skip
    assert started.returncode == 2, started
    line = started.stderr.strip().splitlines()[-1]
    assert line.startswith(f"ERROR {code}: "), started.stderr
    zh, en = line.split(": ", 1)[1].split(" / ", 1)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh), zh  # Chinese first
    assert en.split(" (", 1)[0].isascii() and en.strip(), en  # then English (then the detail)
    assert "Traceback" not in started.stderr
    assert not list(data.iterdir()), "nothing opened before the TLS files were checked"


# --- the shipped nginx configuration, for real -------------------------------------------------


async def test_shipped_nginx_config_redirects_http_sends_hsts_and_refuses_old_tls(
    pki: Pki, tmp_path: Path
) -> None:
    need("nginx")
    hall = await start_hall(pki, tmp_path)
    work = tmp_path / "nginx"
    work.mkdir()
    cert, key = issue_tls_files(work / "tls", pki.root_a)
    ca_file = tmp_path / "root_a.pem"
    ca_file.write_bytes(pki.root_a.certificate.public_bytes(serialization.Encoding.PEM))
    addr = f"127.0.0.1:{hall.server.port}"
    http_port, https_port = free_port(), free_port()
    conf = deployed_nginx_conf(
        work, {"server1": addr, "server2": addr}, http_port, https_port, work / "tls"
    )
    proc = start_deployed_nginx(work, conf, https_port)
    try:
        tls = aiohttp.TCPConnector(ssl=client_tls(ca_file))
        async with aiohttp.ClientSession(connector=tls) as http:
            # HTTP on 80: every path only redirects, keeping path and query, sends no API
            for path in ("/api/time", "/api/sessions?after=3", "/socket.io/?EIO=4"):
                async with http.get(
                    f"http://127.0.0.1:{http_port}{path}", allow_redirects=False
                ) as r:
                    assert r.status == 301
                    assert r.headers["Location"] == f"https://127.0.0.1{path}"
                    assert "now" not in await r.text()
            # HTTPS: the API, with HSTS on answers and on refusals alike
            async with http.get(f"https://127.0.0.1:{https_port}/api/time") as r:
                assert r.status == 200
                assert r.headers["Strict-Transport-Security"] == HSTS
            async with http.get(f"https://127.0.0.1:{https_port}/api/sessions") as r:
                assert r.status == 401
                assert r.headers["Strict-Transport-Security"] == HSTS
        await assert_modern_tls_only(https_port, ca_file, cert, key)
    finally:
        await terminate(proc)
        await stop_hall(hall)
