"""The deployment files: docker-compose.yml has the topology DESIGN.md section 9 describes and its
ports agree with the Janus, coturn and nginx configurations; deploy/nginx.conf passes ``nginx -t``
and really proxies the API and socket.io's WebSocket over TLS to a running server (plain HTTP only
redirects; tests/test_tls.py checks its protocols, ciphers and HSTS); the compose file
validates with Docker Compose where a Compose CLI is installed (no Docker engine is needed)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from schemas.time import parse_iso
from tests.support.hall import start_hall, stop_hall
from tests.support.janus import terminate
from tests.support.pki import Pki, write_cert
from tests.support.servers import (
    deployed_nginx_conf,
    free_port,
    issue_tls_files,
    start_deployed_nginx,
)

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
JANUS_DIR = ROOT / "deploy" / "janus"
TURN_CONF = ROOT / "deploy" / "coturn" / "turnserver.conf"
SERVICES = {"nginx", "server1", "server2", "postgres", "redis", "janus", "coturn"}
ENV = {"POSTGRES_PASSWORD": "pw-for-config", "BIDBRIDGE_TURN_SECRET": "secret-for-config"}


def compose() -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        if os.environ.get("CI") == "1":
            pytest.fail("PyYAML missing under CI (a dev dependency)")
        pytest.skip("PyYAML not installed: cannot parse docker-compose.yml")
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _udp_range(ports: list[str]) -> list[tuple[int, int]]:
    out = []
    for p in ports:
        m = re.fullmatch(r"(\d+)(?:-(\d+))?:(\d+)(?:-(\d+))?/udp", p)
        if m:
            first, last = int(m[1]), int(m[2] or m[1])
            assert (int(m[3]), int(m[4] or m[3])) == (first, last), p  # published as is
            out.append((first, last))
    return out


def _upstreams(conf: str) -> list[str]:
    block = re.search(r"upstream bidbridge \{(.*?)\}", conf, re.S)
    assert block is not None
    return re.findall(r"^\s*server\s+(\S+?)(?:\s|;)", block[1], re.M)


def test_compose_has_the_whole_topology_with_health_checks() -> None:
    c = compose()
    services = c["services"]
    assert set(services) == SERVICES
    for name, s in services.items():
        assert s.get("healthcheck", {}).get("test"), f"{name} has no health check"
        image = str(s.get("image", ""))
        first = image.split("/")[0]
        # generic image names only: no registry host in the repository
        assert "/" not in image or ("." not in first and ":" not in first), image
    # two replicas of the same server, with the multi-process settings
    s1, s2 = services["server1"], services["server2"]
    assert s1["command"] == s2["command"] and _env(s1) == _env(s2) and s1["image"] == s2["image"]
    env = _env(s1)
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["BIDBRIDGE_REDIS_URL"].startswith("redis://redis:6379")
    assert env["BIDBRIDGE_MEDIA"] == "janus"
    assert env["BIDBRIDGE_TURN_SECRET"] and env["BIDBRIDGE_TURN_URLS"].startswith("turn:")
    assert "/api/time" in " ".join(s1["healthcheck"]["test"])
    for dep in ("postgres", "redis", "janus"):
        assert s1["depends_on"][dep]["condition"] == "service_healthy"
    for replica in ("server1", "server2"):
        assert services["nginx"]["depends_on"][replica]["condition"] == "service_healthy"
    # volumes for blobs and recordings; the recordings are the same folder for Janus and server
    assert {"blobs", "recordings", "pgdata"} <= set(c["volumes"])
    mounts = {v.split(":")[0]: v.split(":")[1] for v in s1["volumes"]}
    assert mounts["blobs"] == "/data/blobs" and "/data" in s1["command"]
    janus_mounts = {v.split(":")[0]: v.split(":")[1] for v in services["janus"]["volumes"]}
    assert janus_mounts["recordings"] == mounts["recordings"] == env["BIDBRIDGE_JANUS_RECORDINGS"]
    assert "pgdata" in services["postgres"]["volumes"][0]


def test_compose_ports_agree_with_janus_coturn_and_nginx_configs() -> None:
    services = compose()["services"]
    env = _env(services["server1"])
    # the Janus API port is the transport's, and it is not published
    ws_port = re.search(
        r"ws_port = (\d+)", (JANUS_DIR / "janus.transport.websockets.jcfg").read_text()
    )
    assert ws_port is not None
    assert env["BIDBRIDGE_JANUS_URL"] == f"ws://janus:{ws_port[1]}/"
    janus_ports = services["janus"].get("ports", [])
    assert not any(str(p).split(":")[0] == ws_port[1] for p in janus_ports)
    assert "admin_ws = false" in (JANUS_DIR / "janus.transport.websockets.jcfg").read_text()
    rtp = re.search(r'rtp_port_range = "(\d+)-(\d+)"', (JANUS_DIR / "janus.jcfg").read_text())
    assert rtp is not None
    assert _udp_range(janus_ports) == [(int(rtp[1]), int(rtp[2]))]
    turn = TURN_CONF.read_text()
    lo = re.search(r"^min-port=(\d+)", turn, re.M)
    hi = re.search(r"^max-port=(\d+)", turn, re.M)
    assert lo and hi
    assert (int(lo[1]), int(hi[1])) in _udp_range(services["coturn"]["ports"])
    assert "use-auth-secret" in turn and "static-auth-secret" not in turn.split("#")[0]
    assert any(
        "--static-auth-secret=${BIDBRIDGE_TURN_SECRET" in a for a in services["coturn"]["command"]
    )
    # nginx sends to both replicas on the port they serve
    command = services["server1"]["command"]
    port = command[command.index("--port") + 1]
    assert sorted(_upstreams(NGINX_CONF.read_text())) == [f"server1:{port}", f"server2:{port}"]
    # nginx publishes HTTPS, and mounts the certificate folder where its config reads it
    nginx = services["nginx"]
    assert any(str(p).endswith(":443") for p in nginx["ports"])
    tls_mounts = [v.rsplit(":", 2)[1] for v in nginx["volumes"] if "/etc/nginx/tls" in v]
    assert tls_mounts == ["/etc/nginx/tls"]
    conf = NGINX_CONF.read_text()
    assert "ssl_certificate /etc/nginx/tls/server.crt.pem;" in conf
    assert "ssl_certificate_key /etc/nginx/tls/server.key.pem;" in conf
    assert "https://" in " ".join(nginx["healthcheck"]["test"])


def tls_ca_file(tmp_path: Path, pki: Pki) -> Path:
    return write_cert(tmp_path / "tls-ca.pem", pki.root_a.certificate)


def _nginx_or_skip() -> str:
    path = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if path is None:
        if os.environ.get("CI") == "1":
            pytest.fail("nginx missing under CI: scripts/setup.sh installs it")
        pytest.skip("nginx not installed")
    return path


def local_nginx_conf(work: Path, upstream: dict[str, str], listen: int, pki: Pki) -> Path:
    """deploy/nginx.conf with its paths in ``work``, its upstreams at ``upstream``, its HTTP
    listener on ``listen``, its HTTPS listener on a free port (written to ``work/https_port``)
    and a certificate for 127.0.0.1 from ``pki.root_a``; everything else as deployed."""
    https = free_port()
    (work / "https_port").write_text(str(https))
    issue_tls_files(work / "tls", pki.root_a)
    return deployed_nginx_conf(work, upstream, listen, https, work / "tls")


def test_nginx_config_passes_nginx_t(tmp_path: Path, pki: Pki) -> None:
    nginx = _nginx_or_skip()
    conf = local_nginx_conf(tmp_path, {"server1": "127.0.0.1:1", "server2": "127.0.0.1:2"}, 8, pki)
    run = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert "syntax is ok" in run.stderr
    text = NGINX_CONF.read_text()
    size = re.search(r"client_max_body_size (\d+)m;", text)
    assert size and int(size[1]) * 1024**2 >= 2 * 1024**3
    assert "proxy_request_buffering off;" in text
    socketio = re.search(r"location /socket.io/ \{(.*?)\}", text, re.S)
    assert socketio and "Upgrade $http_upgrade" in socketio[1]


async def test_nginx_proxies_the_api_and_socketio_websocket_to_a_server(
    pki: Pki, tmp_path: Path
) -> None:
    _nginx_or_skip()
    hall = await start_hall(pki, tmp_path)
    port = free_port()
    addr = f"127.0.0.1:{hall.server.port}"
    work = tmp_path / "nginx"
    work.mkdir()
    conf = local_nginx_conf(work, {"server1": addr, "server2": addr}, port, pki)
    https = int((work / "https_port").read_text())
    proc = start_deployed_nginx(work, conf, https)
    tls = ssl.create_default_context(cafile=str(tls_ca_file(tmp_path, pki)))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as http:
            # plain HTTP only points to HTTPS
            async with http.get(f"http://127.0.0.1:{port}/api/time", allow_redirects=False) as r:
                assert r.status == 301
                assert r.headers["Location"] == "https://127.0.0.1/api/time"
            deadline = time.monotonic() + 10
            while True:
                try:
                    async with http.get(f"https://127.0.0.1:{https}/api/time") as r:
                        assert r.status == 200
                        body = await r.json()
                        break
                except aiohttp.ClientConnectorError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    await asyncio.sleep(0.1)
            assert parse_iso(body["now"]) == hall.clock.now()  # the server's (manual) clock
            url = f"wss://127.0.0.1:{https}/socket.io/?EIO=4&transport=websocket"
            async with http.ws_connect(url) as ws:
                hello = await ws.receive_str(timeout=5)
            assert hello.startswith("0{") and '"sid"' in hello  # engine.io's open packet
    finally:
        await terminate(proc)
        await stop_hall(hall)


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_file_validates_with_docker_compose(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip(
            "no Docker Compose CLI (neither the `docker compose` plugin nor `docker-compose`): "
            "`config` runs offline, without an engine, once one is installed"
        )
    env = {**os.environ, **ENV, "DOCKER_CONFIG": str(tmp_path)}
    for key in ("PUBLIC_IP", "PUBLIC_HOST", "HTTP_PORT", "HTTPS_PORT", "TLS_DIR"):
        env.pop(key, None)
    ok = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr
    # and it is really checked: without the database password the file is refused
    missing = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    bad = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=missing
    )
    assert bad.returncode != 0 and "POSTGRES_PASSWORD" in bad.stderr
