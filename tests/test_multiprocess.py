"""Several ``bidbridge serve`` processes over one PostgreSQL database and Redis (DESIGN.md 9).

Real services on loopback: the machine's PostgreSQL (a fresh database per test) and, where a
test breaks a service, an instance of our own (Redis, PostgreSQL) on a free port; nginx in front
where the test goes through it. Every server is a child process with the same accelerated clock
(same anchor and factor), so they share one time line.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import socketio

from schemas.time import iso, parse_iso
from tests.support.dbs import _pg_database
from tests.support.hall import ApiError
from tests.support.pki import Pki
from tests.support.servers import (
    Client,
    Nginx,
    Postgres,
    RedisServer,
    Seen,
    ServerProcess,
    SiteData,
    check_log,
    check_shown,
    free_port,
    prepare_site,
    published_session,
    register,
    seal,
    to_opening,
    union,
    until,
)

FACTOR = 10.0
SHARED_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Cluster:
    site: SiteData
    servers: list[ServerProcess]
    clients: list[Client]
    http: aiohttp.ClientSession
    tmp: Path
    nginx: Nginx | None = None
    extra: list[Any] = field(default_factory=list)

    def via(self, i: int) -> Client:
        return self.clients[i]

    async def close(self) -> None:
        for c in self.clients:
            await c.close_sockets()
        for s in self.servers:
            s.kill()
        if self.nginx is not None:
            self.nginx.stop()
        await self.http.close()


async def start_cluster(
    pki: Pki,
    tmp: Path,
    database_url: str,
    redis_url: str,
    processes: int = 2,
    nginx: bool = False,
) -> Cluster:
    site = prepare_site(pki, tmp, database_url)
    anchor = iso(datetime.now(UTC))
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    servers: list[ServerProcess] = []
    for i in range(processes):
        port = free_port()
        argv = site.serve_argv(
            port,
            "--redis-url", redis_url,
            "--accelerate", str(FACTOR), "--accelerate-from", anchor,
        )  # fmt: skip
        server = ServerProcess(argv, site.env, tmp / f"server{i}.log", f"http://127.0.0.1:{port}")
        await server.start(http)
        servers.append(server)
    cluster = Cluster(site, servers, [], http, tmp)
    # One set of parties (tokens are valid on every process: they share the token secret).
    cluster.clients = [Client(http, s.url, site.parties) for s in servers]
    if nginx:
        cluster.nginx = Nginx(tmp / "nginx", [int(s.url.rsplit(":", 1)[1]) for s in servers])
        cluster.nginx.start()
        cluster.clients.append(Client(http, cluster.nginx.url, site.parties))
    return cluster


@pytest_asyncio.fixture
async def pg_url() -> AsyncIterator[str]:
    async for url in _pg_database():
        yield url


@dataclass
class Follower:
    """A hall connection that notes every event it is sent (``arrived``: ids, duplicates
    included) and checks them by the cursor rule (``seen``)."""

    who: str
    arrived: list[str] = field(default_factory=list)
    seen: Seen = field(default_factory=Seen)
    sio: socketio.AsyncClient | None = None

    async def connect(self, client: Client, sid: str, last: dict[str, int] | None = None) -> None:
        async def on_event(data: dict[str, Any]) -> None:
            self.arrived.append(data["id"])
            self.seen.take(data)

        self.sio = await client.follow(sid, self.who, last, on_event)


async def visible(client: Client, sid: str, who: str) -> list[str]:
    """The ids of the events ``who`` may see, in log order (the list checked: each stream it
    follows numbered without a hole)."""
    return [e["id"] for e in await client.events(sid, who)]


async def check_stored(cluster: Cluster, via: Client, sid: str) -> list[dict[str, Any]]:
    """The log as stored: a chain without a gap, every stream numbered without a hole, and
    what each party is shown over the API exactly its part of it."""
    views = await via.views(sid)
    log = await cluster.site.stored_log(sid)
    check_log(log)
    # Only the server's own supervisor warnings may be committed after the lists were read.
    check_shown(log, via.parties, views, later=lambda e: e["type"] == "signal")
    return log


async def test_events_caused_through_one_process_reach_another_in_order(
    pki: Pki, tmp_path: Path, pg_url: str
) -> None:
    """A bidder connected to one process sees, in order and without gaps, what another caused;
    through nginx too (websocket transport, no sticky sessions)."""
    cluster = await start_cluster(pki, tmp_path, pg_url, SHARED_REDIS, nginx=True)
    try:
        one, two, front = cluster.clients
        sid, _ = await to_opening(one, tmp_path)
        followers = {k: Follower(k) for k in ("a", "b", "c", "host")}
        for k, f in followers.items():
            await f.connect(front if k == "c" else two, sid)
        p = one.parties
        for i in range(30):  # caused through process one only
            await one.request(
                "POST",
                f"/api/sessions/{sid}/incidents",
                p["host"],
                {
                    "reason": f"网络抖动 {i} / network jitter {i}",
                    "bidders": [p["a"].code, p["b"].code, p["c"].code],
                },
            )
        for k, f in followers.items():
            want = await visible(one, sid, k)

            async def complete(f: Follower = f, want: list[str] = want) -> bool:
                return set(f.arrived) == set(want)

            await until(complete, f"{k}'s events on the other process", seconds=10)
            assert f.arrived == want, f"{k} got events out of order or twice"
            f.seen.check(k)
        await check_stored(cluster, one, sid)
    finally:
        await cluster.close()


async def test_redis_restart_loses_no_event(pki: Pki, tmp_path: Path, pg_url: str) -> None:
    """Redis is killed and restarted while one process commits ~100 events/s to bidders
    connected to another: afterwards every bidder has every event it may see, once, in order."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    cluster = await start_cluster(pki, tmp_path, pg_url, redis.url)
    try:
        one, two = cluster.clients
        sid, _ = await to_opening(one, tmp_path)
        followers = {k: Follower(k) for k in ("a", "b", "c", "host")}
        for f in followers.values():
            await f.connect(two, sid)
        p = one.parties
        everyone = [p["a"].code, p["b"].code, p["c"].code]
        committed_during_outage = 0
        outage = False

        async def emit(seconds: float) -> None:
            nonlocal committed_during_outage
            end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < end:
                started = time.monotonic()
                await one.request(
                    "POST",
                    f"/api/sessions/{sid}/incidents",
                    p["host"],
                    {"reason": f"抖动 {i} / jitter {i}", "bidders": everyone},
                )  # three events: one per bid
                if outage:
                    committed_during_outage += 3
                i += 1
                await asyncio.sleep(max(0.0, 0.03 - (time.monotonic() - started)))

        emitter = asyncio.ensure_future(emit(6.0))
        await asyncio.sleep(1.5)
        outage = True
        redis.stop()
        await asyncio.sleep(2.0)
        redis.start()  # same port, empty: subscriptions and presence must be rebuilt
        outage = False
        await emitter
        assert committed_during_outage > 0, "nothing was committed while Redis was away"

        for k, f in followers.items():
            want = await visible(one, sid, k)

            async def complete(f: Follower = f, want: list[str] = want) -> bool:
                return set(f.arrived) == set(want)

            await until(complete, f"{k} to have every event after the Redis restart", seconds=10)
            assert f.arrived == want, f"{k} got events out of order or twice"
            f.seen.check(k)
        total = len(await visible(one, sid, "host"))
        print(f"{total} events, {committed_during_outage} committed while Redis was down")
    finally:
        await cluster.close()
        redis.stop()


async def test_sigkill_of_the_bidders_process_during_decryption(
    pki: Pki, tmp_path: Path, pg_url: str
) -> None:
    """The process a bidder is connected to dies (SIGKILL) in the decryption window: the bidder
    reconnects to another, gets what it missed, decrypts, and the window closes on time, once."""
    cluster = await start_cluster(pki, tmp_path, pg_url, SHARED_REDIS)
    try:
        one, two = cluster.clients
        sid, envelopes = await to_opening(one, tmp_path)
        p = one.parties
        await one.request("POST", f"/api/sessions/{sid}/decryption", p["host"])
        closes_at = parse_iso((await one.view(sid, "host"))["view"]["decrypt_closes_at"])

        a = Follower("a")
        await a.connect(two, sid)
        cluster.servers[1].kill()
        assert cluster.servers[1].proc is not None
        assert cluster.servers[1].proc.returncode == -signal.SIGKILL
        two.sockets.clear()

        out = await one.submit_key(sid, "b", envelopes["b"])  # while a is away
        assert out["ok"], out
        await one.request(
            "POST",
            f"/api/sessions/{sid}/incidents",
            p["host"],
            {"reason": "甲方连接中断 / a's connection dropped", "bidders": [p["a"].code]},
        )
        had = len(a.seen.events)
        await a.connect(one, sid, last=dict(a.seen.cursor))
        assert len(a.seen.events) > had, "the reconnect brought nothing it missed"
        assert a.seen.duplicates == 0, "the reconnect brought again what a had"
        out = await one.submit_key(sid, "a", envelopes["a"])
        assert out["ok"], out

        async def announcing() -> bool:
            return (await one.view(sid, "host"))["view"]["status"] == "announcing"

        wait = (closes_at - await one.now()).total_seconds() / FACTOR
        await until(announcing, "the window to close", seconds=wait + 5)
        log = await check_stored(cluster, one, sid)
        closed = [e for e in log if e["type"] == "decryption_closed"]
        assert len(closed) == 1, "the window closed more than once"
        late = parse_iso(closed[0]["at"]) - closes_at
        assert timedelta(0) <= late <= timedelta(seconds=2 * FACTOR), late
        want = await visible(one, sid, "a")

        async def caught_up() -> bool:
            return set(a.seen.by_id) == set(want)

        await until(caught_up, "a's socket to have what it may see", seconds=5)
        assert a.seen.ids == want, "a missed events, or got them out of order"
        assert a.seen.duplicates == 0, "a got an event twice"
        a.seen.check("a")
    finally:
        await cluster.close()


async def test_deadline_fires_when_its_process_is_killed(
    pki: Pki, tmp_path: Path, pg_url: str
) -> None:
    """The process that set a deadline (and would fire it) is SIGKILLed just before it: another
    process fires the transition within two seconds of the instant, once."""
    cluster = await start_cluster(pki, tmp_path, pg_url, SHARED_REDIS)
    try:
        one, two = cluster.clients
        sid, _ = await to_opening(one, tmp_path)
        p = one.parties
        await one.request("POST", f"/api/sessions/{sid}/decryption", p["host"])  # via one
        closes_at = parse_iso((await one.view(sid, "host"))["view"]["decrypt_closes_at"])
        before = (closes_at - await one.now()).total_seconds() / FACTOR
        assert before > 1.5, "the test ran too slowly to kill before the deadline"
        await asyncio.sleep(before - 1.0)
        cluster.servers[0].kill()

        async def announcing() -> bool:
            return (await two.view(sid, "host"))["view"]["status"] == "announcing"

        await until(announcing, "the other process to fire the deadline", seconds=6)
        await check_stored(cluster, two, sid)
        closed = [e for e in union(await two.views(sid)) if e["type"] == "decryption_closed"]
        assert len(closed) == 1
        late = parse_iso(closed[0]["at"]) - closes_at
        # Two seconds of real time (the clock runs FACTOR times faster).
        assert timedelta(0) <= late <= timedelta(seconds=2 * FACTOR), late
    finally:
        await cluster.close()


async def test_database_lost_mid_upload_stores_nothing_and_the_retry_succeeds(
    pki: Pki, tmp_path: Path
) -> None:
    """PostgreSQL goes away while a bid is being uploaded: the upload fails with a clear error,
    nothing of it is stored, and the same upload succeeds once the database is back."""
    pg = Postgres(tmp_path / "pg")
    pg.init()
    pg.start()
    cluster: Cluster | None = None
    try:
        redis = RedisServer(tmp_path / "redis")
        redis.start()
        cluster = await start_cluster(pki, tmp_path, pg.url, redis.url, processes=1)
        cluster.extra.append(redis)
        client = cluster.clients[0]
        p = client.parties
        await register(client)
        sid = await published_session(client, timedelta(hours=2))
        envelope = seal(tmp_path, p["a"], "a", 8_000_000, 12_000_000_000).read_bytes()
        await client.login(p["a"])
        half = len(envelope) // 2

        async def body() -> AsyncIterator[bytes]:
            for i in range(0, half, 256 * 1024):
                yield envelope[i : min(i + 256 * 1024, half)]
            pg.stop()  # the database dies with the upload half-sent
            for i in range(half, len(envelope), 256 * 1024):
                yield envelope[i : i + 256 * 1024]

        headers = {
            "Authorization": f"Bearer {p['a'].token}",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(envelope)),
        }
        async with cluster.http.put(
            f"{client.url}/api/sessions/{sid}/bid", data=body(), headers=headers
        ) as r:
            answer = await r.json(content_type=None)
            assert r.status == 503, (r.status, answer)
        assert answer["code"] == "STORE_UNAVAILABLE", answer
        assert answer["zh"] and answer["en"]

        pg.start()

        async def receipt_absent() -> bool:
            try:
                await client.request("GET", f"/api/sessions/{sid}/receipt", p["a"])
            except ApiError as exc:
                return exc.status == 404
            except aiohttp.ClientError:
                return False
            pytest.fail("a receipt exists for an upload that failed")

        await until(receipt_absent, "the server to reach the database again", seconds=15)
        assert not [e for e in await client.events(sid, "a") if e["type"] == "bid_uploaded"]

        out = await client.request(
            "PUT",
            f"/api/sessions/{sid}/bid",
            p["a"],
            data=envelope,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert out["receipt"]["bidder"] == p["a"].code
        uploads = [e for e in await client.events(sid, "a") if e["type"] == "bid_uploaded"]
        assert len(uploads) == 1
        await check_stored(cluster, client, sid)
    finally:
        if cluster is not None:
            await cluster.close()
            for r in cluster.extra:
                r.stop()
        pg.remove()
