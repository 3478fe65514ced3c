"""TURN credentials (server/api/media.py) against a real coturn started on loopback with the
project's configuration (deploy/coturn/turnserver.conf): the server's credentials allocate a
relay; expired or forged ones are refused; only media roles get them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aioice import stun
from aioice.turn import create_turn_endpoint

from server.api.media import TURN_TTL, turn_credentials
from tests.support.hall import ApiError, P, start_hall, stop_hall
from tests.support.janus import free_port, terminate
from tests.support.pki import Pki

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "coturn" / "turnserver.conf"
SECRET = "turn-test-secret-0f3a9c"


@dataclass
class LocalTurn:
    port: int
    min_port: int
    max_port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"


@contextlib.asynccontextmanager
async def local_turn(
    work: Path, secret: str = SECRET, *, verbose: bool = False
) -> AsyncIterator[LocalTurn]:
    """coturn on loopback with the project's configuration (``verbose``: it logs each session's
    requests, e.g. ``ALLOCATE processed, success`` under the user name)."""
    binary = shutil.which("turnserver")
    if binary is None:
        if os.environ.get("CI") == "1":
            pytest.fail("turnserver missing under CI: scripts/setup.sh installs coturn")
        pytest.skip("turnserver not installed (Debian package coturn)")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    min_port = 40000 + (os.getpid() % 200) * 50
    log = (work / "turn.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "-c",
            str(CONFIG),
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={port}",
            f"--min-port={min_port}",
            f"--max-port={min_port + 49}",
            f"--static-auth-secret={secret}",
            f"--pidfile={work / 'turn.pid'}",
            f"--userdb={work / 'turndb'}",
            *(["--verbose"] if verbose else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        deadline = time.monotonic() + 15
        while b"Total General servers" not in (work / "turn.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "turn.log").read_text()[-2000:])
            await asyncio.sleep(0.1)
        yield LocalTurn(port, min_port, min_port + 49, proc)
    finally:
        await terminate(proc)


async def allocate(turn: LocalTurn, username: str, password: str) -> tuple[str, int]:
    """A TURN Allocate with these credentials; the relayed address coturn gives."""
    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, ("127.0.0.1", turn.port), username, password, lifetime=60
    )
    try:
        host, port = transport.get_extra_info("sockname")[:2]
        return str(host), int(port)
    finally:
        transport.close()


async def test_server_credentials_allocate_a_relay_on_coturn(pki: Pki, tmp_path: Path) -> None:
    async with local_turn(tmp_path / "turn") as turn:
        hall = await start_hall(pki, tmp_path)
        try:
            hall.hub.settings.turn_secret = SECRET  # type: ignore[attr-defined]
            hall.hub.settings.turn_urls = [turn.url]  # type: ignore[attr-defined]
            supervisor = (await hall.login(P(hall, "supervisor")))["party_id"]
            out = await hall.request("GET", "/api/media/turn", P(hall, "supervisor"))
            assert out["urls"] == [turn.url]
            assert out["ttl"] == int(TURN_TTL.total_seconds())
            expiry, party = out["username"].split(":", 1)
            assert party == supervisor
            assert int(expiry) == int((hall.clock.now() + TURN_TTL).timestamp())
            host, port = await allocate(turn, out["username"], out["credential"])
            assert host == "127.0.0.1" and turn.min_port <= port <= turn.max_port
        finally:
            await stop_hall(hall)


async def test_expired_or_forged_credentials_are_refused_by_coturn(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    async with local_turn(tmp_path / "turn") as turn:
        fresh = turn_credentials(SECRET, "NJ-01", now, timedelta(minutes=5), [turn.url])
        await allocate(turn, fresh.username, fresh.credential)  # the control: it works
        expired = turn_credentials(SECRET, "NJ-01", now - timedelta(hours=2), TURN_TTL / 12, [])
        assert int(expired.username.split(":")[0]) < now.timestamp()
        with pytest.raises(stun.TransactionFailed) as caught:
            await allocate(turn, expired.username, expired.credential)
        assert caught.value.response.attributes["ERROR-CODE"][0] == 401
        forged = turn_credentials("another-secret", "NJ-01", now, TURN_TTL, [])
        with pytest.raises(stun.TransactionFailed) as caught:
            await allocate(turn, forged.username, forged.credential)
        assert caught.value.response.attributes["ERROR-CODE"][0] == 401
        # a later expiry written into a real credential's username does not verify either
        stretched = f"{int(now.timestamp()) + 10 * 86400}:NJ-01"
        with pytest.raises(stun.TransactionFailed):
            await allocate(turn, stretched, fresh.credential)


async def test_turn_route_is_for_media_roles_and_needs_a_configured_relay(
    pki: Pki, tmp_path: Path
) -> None:
    hall = await start_hall(pki, tmp_path)
    try:
        with pytest.raises(ApiError) as caught:
            await hall.request("GET", "/api/media/turn", P(hall, "supervisor"))
        assert caught.value.code == "TURN_NOT_CONFIGURED"
        assert caught.value.status == 404
        hall.hub.settings.turn_secret = SECRET  # type: ignore[attr-defined]
        hall.hub.settings.turn_urls = ["turn:turn.example:3478"]  # type: ignore[attr-defined]
        for role in ("host", "supervisor"):
            party_id = (await hall.login(P(hall, role)))["party_id"]
            out = await hall.request("GET", "/api/media/turn", P(hall, role))
            assert out["username"].endswith(":" + party_id) and out["credential"]
        with pytest.raises(ApiError) as caught:
            await hall.request("GET", "/api/media/turn", P(hall, "a"))  # a bidder
        assert caught.value.status == 403
        with pytest.raises(ApiError) as caught:
            await hall.request("GET", "/api/media/turn")  # nobody
        assert caught.value.status == 401
    finally:
        await stop_hall(hall)


async def test_room_agent_allocates_its_relay_with_the_servers_credentials(
    pki: Pki, tmp_path: Path
) -> None:
    """``bidbridge room run`` asks the server for TURN credentials and gathers a relayed
    candidate on coturn with them (coturn's own log shows the allocation under the room's
    time-limited username); the link still comes up."""
    from tests.support.cli import bidbridge, write_party
    from tests.support.evaluation import drawn

    async with local_turn(tmp_path / "turn", verbose=True) as turn:
        hall = await start_hall(pki, tmp_path)
        try:
            hall.hub.settings.turn_secret = SECRET  # type: ignore[attr-defined]
            hall.hub.settings.turn_urls = [turn.url]  # type: ignore[attr-defined]
            e, _sup = await drawn(hall, tmp_path)
            room_id = sorted(e.rooms)[0]
            key, cert = write_party(tmp_path / "room", "room", e.rooms[room_id])
            argv = [
                "room", "run", "--server", hall.url, "--session", e.sid, "--key", key,
                "--cert", cert, "--source", "synthetic", "--label", room_id, "--seconds", "6",
            ]  # fmt: skip
            r = await bidbridge(*argv)
            assert r.code == 0, r
            assert f"TURN relay offered: {turn.url}" in r.out, r
            assert "audio and video linked" in r.out, r
            log = (tmp_path / "turn" / "turn.log").read_text(errors="replace")
            allocations = [
                line
                for line in log.splitlines()
                if f":{room_id}>" in line and "ALLOCATE processed, success" in line
            ]
            assert allocations, log[-3000:]
        finally:
            await stop_hall(hall)
