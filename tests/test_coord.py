"""Coordination between server processes through Redis (server/realtime/coord.py).

Everything runs against a real ``redis-server`` of our own on a free loopback port: the machine's
shared Redis also carries the presence keys of other test runs' servers, whose reapers would take
over (and record elsewhere) the counts of a process this file kills. A "process" is a
``Coordination`` instance; a dead one is a real child process holding instances, SIGKILLed, so
Redis sees exactly what a crash leaves behind (keys that are no longer renewed).

The end-to-end test runs two ``bidbridge serve`` processes over one PostgreSQL database and that
Redis, SIGKILLs the one a staff member is connected to, and watches the survivor record the
departure once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import socketio

from server.app import REAP_SECONDS
from server.realtime.coord import (
    ALIVE_MS,
    BUSY_MS,
    HEARTBEAT_SECONDS,
    PREFIX,
    RENEW_SECONDS,
    Busy,
    Coordination,
)
from tests.support.dbs import _pg_database
from tests.support.pki import Pki
from tests.support.servers import (
    REPO,
    Client,
    RedisServer,
    ServerProcess,
    free_port,
    prepare_site,
    published_session,
    register,
)

# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """Our own redis-server (skipped visibly when not installed, a failure under CI)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def rd(redis_server: RedisServer) -> AsyncIterator[Any]:
    """A plain client for looking at the keys; the database is emptied after each test."""
    client = aioredis.Redis.from_url(
        redis_server.url, decode_responses=True, socket_connect_timeout=5, socket_timeout=30
    )
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest_asyncio.fixture
async def process(
    redis_server: RedisServer, rd: Any
) -> AsyncIterator[Callable[[], Awaitable[Coordination]]]:
    """Started ``Coordination`` instances with unique names (closed before ``rd`` empties Redis)."""
    started: list[Coordination] = []

    async def make() -> Coordination:
        coord = Coordination(redis_server.url, f"test-{uuid.uuid4().hex[:10]}")
        await coord.start()
        started.append(coord)
        return coord

    try:
        yield make
    finally:
        for coord in started:
            await coord.close()


# A child process holding Coordination instances: joins, decryptions in flight, then waits to die.
_HOLDER = """
import asyncio, json, sys
from server.realtime.coord import Coordination

async def main(spec):
    held = []
    for inst in spec["instances"]:
        coord = Coordination(spec["redis_url"], inst["name"])
        await coord.start()
        for session_id, role, party in inst.get("joined", []):
            await coord.joined(session_id, role, party)
        for session_id, key in inst.get("busy", []):
            work = coord.busy(session_id, key)
            await work.__aenter__()
            held.append(work)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main(json.loads(sys.argv[1])))
"""


class Holder:
    """``python -c _HOLDER``: Coordination instances in a process this test can SIGKILL."""

    def __init__(self, redis_url: str, instances: list[dict[str, Any]]) -> None:
        self.spec = {"redis_url": redis_url, "instances": instances}
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _HOLDER,
            json.dumps(self.spec),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 20)
        if line.strip() != b"ready":
            rest = await asyncio.wait_for(self.proc.stdout.read(), 5)
            pytest.fail(f"the holder process did not start: {(line + rest).decode()}")

    async def kill(self) -> None:
        """SIGKILL: no ``close()``, no release; its keys stay until they expire."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(self.proc.wait(), 10) == -signal.SIGKILL


StartHolder = Callable[[list[dict[str, Any]]], Awaitable[Holder]]


@pytest_asyncio.fixture
async def holder(redis_server: RedisServer) -> AsyncIterator[StartHolder]:
    """Starts a holder process of ``instances`` on the test Redis; each is killed after the test."""
    made: list[Holder] = []

    async def start(instances: list[dict[str, Any]]) -> Holder:
        h = Holder(redis_server.url, instances)
        made.append(h)
        await h.start()
        return h

    try:
        yield start
    finally:
        for h in made:
            await h.kill()


async def poll(check: Callable[[], Awaitable[Any]], what: str, seconds: float) -> float:
    """Poll until ``check`` is true; returns the seconds it took (fails after ``seconds``)."""
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > seconds:
            pytest.fail(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - began


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# --- presence over two live processes ----------------------------------------------------------


async def test_presence_is_summed_over_both_processes(
    process: Callable[[], Awaitable[Coordination]], rd: Any
) -> None:
    one, two = await process(), await process()
    s = unique("session")
    assert await one.joined(s, "supervisor", "S1") == 1
    assert await two.joined(s, "supervisor", "S1") == 2  # the first one's connection counts
    assert await one.joined(s, "supervisor", "S1") == 3  # a second tab on the first process
    assert await one.total(s, "supervisor", "S1") == 3
    assert await two.total(s, "supervisor", "S1") == 3
    # Counts are per session, role and party.
    assert await two.total(s, "host", "S1") == 0
    assert await two.total(s, "supervisor", "S2") == 0
    assert await two.total(unique("other"), "supervisor", "S1") == 0
    assert await rd.hgetall(f"{PREFIX}:presence:{one.instance}") == {
        f"{s}\x1fsupervisor\x1fS1": "2"
    }

    assert await two.left(s, "supervisor", "S1") == 2
    assert await one.left(s, "supervisor", "S1") == 1
    assert await one.left(s, "supervisor", "S1") == 0  # the last connection anywhere
    assert await one.left(s, "supervisor", "S1") == 0  # a stray leave never goes below zero
    assert await two.joined(s, "supervisor", "S1") == 1
    assert await two.left(s, "supervisor", "S1") == 0
    for coord in (one, two):  # nothing left behind, and each process is alive
        assert not await rd.exists(f"{PREFIX}:presence:{coord.instance}")
        assert await rd.exists(f"{PREFIX}:alive:{coord.instance}")
    assert await one.reap() == [] and await two.reap() == []


async def test_after_a_redis_restart_counts_come_back_and_nothing_is_reaped(
    process: Callable[[], Awaitable[Coordination]], rd: Any
) -> None:
    """Redis restarts empty (FLUSHDB is what the keys look like afterwards): a connection counted
    before the next heartbeat must not make its live process look dead to the others' reapers,
    and the next heartbeat puts back the counts Redis lost."""
    one, two = await process(), await process()
    s = unique("session")
    assert await one.joined(s, "host", "H1") == 1
    await rd.flushdb()
    assert await one.joined(s, "supervisor", "S1") == 1
    assert await two.total(s, "supervisor", "S1") == 1
    assert await two.reap() == [], "a live process's connection was reaped as a departure"
    assert await two.total(s, "supervisor", "S1") == 1

    async def restored() -> bool:
        return await two.total(s, "host", "H1") == 1

    await poll(restored, "the heartbeat to put the lost count back", HEARTBEAT_SECONDS + 1)
    assert await two.reap() == []


# --- work in flight ------------------------------------------------------------------------------


async def test_busy_refuses_a_second_holder_here_and_in_the_other_process(
    process: Callable[[], Awaitable[Coordination]], rd: Any
) -> None:
    one, two = await process(), await process()
    s, other = unique("session"), unique("session")
    key = f"{PREFIX}:busy:{s}:A"
    async with one.busy(s, "A"):
        assert await rd.get(key) == one.instance
        assert 0 < await rd.pttl(key) <= BUSY_MS
        assert one.held_here(s) and one.any_held_here()
        assert not two.held_here(s) and await two.held(s)  # seen from the other process
        assert not await two.held(other)
        with pytest.raises(Busy):
            async with one.busy(s, "A"):
                pass
        with pytest.raises(Busy):
            async with two.busy(s, "A"):
                pass
        assert await rd.get(key) == one.instance, "a refused holder touched the key"
        async with two.busy(s, "B"):  # another bid of the same session is other work
            assert await rd.get(f"{PREFIX}:busy:{s}:B") == two.instance
    assert not await rd.exists(key), "released work left its key"
    assert not one.any_held_here() and not await two.held(s)
    async with two.busy(s, "A"):
        assert await rd.get(key) == two.instance


async def test_busy_key_is_renewed_while_the_work_runs(
    process: Callable[[], Awaitable[Coordination]], rd: Any
) -> None:
    one = await process()
    s = unique("session")
    key = f"{PREFIX}:busy:{s}:A"
    async with one.busy(s, "A"):
        await asyncio.sleep(3 * RENEW_SECONDS)
        # Without renewal about BUSY_MS - 3000 ms would be left; renewed, at least BUSY_MS - 2000.
        assert await rd.pttl(key) > BUSY_MS - 2500 * RENEW_SECONDS
        await asyncio.sleep(BUSY_MS / 1000 - 2 * RENEW_SECONDS)  # past the key's first lifetime
        assert await rd.get(key) == one.instance


async def test_an_expired_holder_does_not_release_the_next_holders_key(
    process: Callable[[], Awaitable[Coordination]], rd: Any
) -> None:
    """The release deletes the key only if it is still ours (compare-and-delete)."""
    one, two = await process(), await process()
    s = unique("session")
    key = f"{PREFIX}:busy:{s}:A"
    async with one.busy(s, "A"):
        await rd.delete(key)  # as if it had expired while the first process stalled
        async with two.busy(s, "A"):
            pass
        await rd.set(key, two.instance, px=BUSY_MS)  # the second holder, again
    assert await rd.get(key) == two.instance


async def test_a_killed_holder_holds_the_work_for_at_most_busy_ms(
    process: Callable[[], Awaitable[Coordination]],
    rd: Any,
    holder: StartHolder,
) -> None:
    s = unique("session")
    key = f"{PREFIX}:busy:{s}:A"
    dead = await holder([{"name": unique("dead"), "busy": [[s, "A"]]}])
    await asyncio.sleep(1.5 * RENEW_SECONDS)  # it renews while alive
    await dead.kill()
    left = await rd.pttl(key)
    assert 0 < left <= BUSY_MS
    two = await process()
    assert await two.held(s)
    with pytest.raises(Busy):
        async with two.busy(s, "A"):
            pass

    async def free() -> bool:
        return not await two.held(s)

    took = await poll(free, "the dead holder's key to expire", BUSY_MS / 1000 + 2)
    assert took <= left / 1000 + 0.5, (took, left)
    assert took >= left / 1000 - 0.5, "the key went away before its expiry"
    async with two.busy(s, "A"):
        assert await rd.get(key) == two.instance


# --- a dead process's presence -------------------------------------------------------------------


async def test_the_survivors_reap_a_killed_process_once(
    process: Callable[[], Awaitable[Coordination]],
    rd: Any,
    holder: StartHolder,
) -> None:
    """Two instances die with one SIGKILL. Until their heartbeat expires they still count; then
    they no longer count, and the two survivors' concurrent reaps report each party that is now
    absent everywhere exactly once, between them; a party still connected to a survivor is not
    reported; the dead instances' keys are gone."""
    s = unique("session")
    dead1, dead2 = unique("dead"), unique("dead")
    one, two = await process(), await process()
    await one.joined(s, "supervisor", "S1")
    await two.joined(s, "supervisor", "S2")
    killed = await holder(
        [
            {
                "name": dead1,
                "joined": [
                    [s, "host", "H1"],
                    [s, "supervisor", "S1"],
                    [s, "supervisor", "S2"],
                    [s, "room", "R1"],
                ],
            },
            {"name": dead2, "joined": [[s, "host", "H1"], [s, "host", "H1"]]},
        ],
    )
    assert await one.total(s, "host", "H1") == 3
    assert await two.total(s, "supervisor", "S1") == 2
    await killed.kill()

    # Right after the crash the heartbeat has not expired yet: nothing to reap.
    assert await two.total(s, "host", "H1") == 3
    assert await one.reap() == [] and await two.reap() == []
    assert await rd.exists(f"{PREFIX}:presence:{dead1}", f"{PREFIX}:presence:{dead2}") == 2

    async def expired() -> bool:
        return not await rd.exists(f"{PREFIX}:alive:{dead1}", f"{PREFIX}:alive:{dead2}")

    took = await poll(expired, "the dead heartbeats to expire", ALIVE_MS / 1000 + 1)
    assert took <= ALIVE_MS / 1000 + 0.5
    # A dead process counts until a reap takes its counts over: a survivor's last connection
    # going now is not the last one, the reap decides (else both would report the departure).
    assert await two.total(s, "host", "H1") == 3
    assert await two.left(s, "supervisor", "S2") == 1

    first, second = await asyncio.gather(one.reap(), two.reap())
    reported = first + second
    want = [(s, "host", "H1"), (s, "room", "R1"), (s, "supervisor", "S2")]
    assert sorted(reported) == want, (first, second)
    assert await one.reap() == [] and await two.reap() == [], "a departure was reported twice"
    assert await two.total(s, "host", "H1") == 0
    assert await one.total(s, "supervisor", "S1") == 1  # the survivor's own connection remains
    leftovers = [k async for k in rd.scan_iter(match=f"{PREFIX}:*dead-*")]
    assert leftovers == [], leftovers
    assert not {dead1, dead2} & set(await rd.smembers(f"{PREFIX}:instances"))
    # The survivors lived longer than one alive period: their heartbeats kept them counted.
    for coord in (one, two):
        assert (
            await rd.pttl(f"{PREFIX}:alive:{coord.instance}") > ALIVE_MS - 2000 * HEARTBEAT_SECONDS
        )


async def test_a_cleanly_closed_process_leaves_nothing_to_reap(
    process: Callable[[], Awaitable[Coordination]], rd: Any
) -> None:
    one, two = await process(), await process()
    s = unique("session")
    await one.joined(s, "host", "H1")
    await one.left(s, "host", "H1")
    await one.joined(s, "room", "R1")
    await one.left(s, "room", "R1")
    await one.close()
    assert not [k async for k in rd.scan_iter(match=f"{PREFIX}:*{one.instance}*")]
    assert one.instance not in await rd.smembers(f"{PREFIX}:instances")
    assert await two.reap() == []


async def test_a_process_closed_with_connections_counted_is_reaped_at_once(
    process: Callable[[], Awaitable[Coordination]], rd: Any
) -> None:
    """A stop that did not see its connections go (no disconnect handler ran) must not leave
    them present for ever: the others take its counts over without waiting for an expiry."""
    one, two = await process(), await process()
    s = unique("session")
    await one.joined(s, "host", "H1")
    await one.joined(s, "supervisor", "S1")
    await two.joined(s, "supervisor", "S1")
    await one.close()
    assert await two.total(s, "host", "H1") == 1  # counted until reaped
    assert await two.reap() == [(s, "host", "H1")]
    assert await two.reap() == []
    assert await two.total(s, "supervisor", "S1") == 1
    assert not [k async for k in rd.scan_iter(match=f"{PREFIX}:*{one.instance}*")]


# --- end to end: two bidbridge serve processes, one SIGKILLed ---------------------------------


@pytest_asyncio.fixture
async def pg_url() -> AsyncIterator[str]:
    async for url in _pg_database():  # skipped visibly when absent, a failure under CI
        yield url


class Watcher:
    """A hall connection that keeps every event it is sent (duplicates included)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.sio = socketio.AsyncClient(reconnection=False)

    async def connect(self, client: Client, sid: str, who: str) -> None:
        p = client.parties[who]
        if p.token is None:
            await client.login(p)
        replayed = asyncio.Event()

        async def on_event(data: dict[str, Any]) -> None:
            self.events.append(data)

        async def on_replayed(data: Any) -> None:
            replayed.set()

        self.sio.on("event", on_event, namespace="/hall")
        self.sio.on("replayed", on_replayed, namespace="/hall")
        await self.sio.connect(
            client.url,
            namespaces=["/hall"],
            transports=["websocket"],
            auth={"token": p.token, "session_id": sid},  # no cursor: everything it may see
            wait_timeout=5,
        )
        await asyncio.wait_for(replayed.wait(), 5)
        client.sockets.append(self.sio)

    def of(self, kind: str, role: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind and e["payload"]["role"] == role]


async def test_sigkilled_process_presence_is_reaped_by_the_survivor_once(
    pki: Pki, tmp_path: Path, pg_url: str
) -> None:
    """The host is connected to process two only; the supervisor to both. Process two is
    SIGKILLed: within the heartbeat timeout plus one reaper period process one records the host's
    departure, once (in the record and to a live hall connection); the supervisor, still connected
    to process one, stays present; when they leave process one too, that departure is recorded."""
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    rd = aioredis.Redis.from_url(redis.url, decode_responses=True)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    site = prepare_site(pki, tmp_path, pg_url)
    servers: list[ServerProcess] = []
    clients: list[Client] = []
    try:
        for i in range(2):
            port = free_port()
            argv = site.serve_argv(port, "--redis-url", redis.url)
            servers.append(
                ServerProcess(
                    argv, site.env, tmp_path / f"server{i}.log", f"http://127.0.0.1:{port}"
                )
            )
        await asyncio.gather(*(s.start(http) for s in servers))
        clients.extend(Client(http, s.url, site.parties) for s in servers)
        one, two = clients
        await register(one)
        sid = await published_session(one, timedelta(hours=2))

        watcher = Watcher()  # the supervisor on process one sees staff events as they happen
        await watcher.connect(one, sid, "supervisor")
        await Watcher().connect(two, sid, "supervisor")
        await Watcher().connect(two, sid, "host")

        async def present() -> dict[str, str]:
            return dict((await one.view(sid, "host"))["view"]["present"])

        async def both_present() -> bool:
            return sorted((await present()).values()) == ["host", "supervisor"]

        await poll(both_present, "host and supervisor to be present", 10)
        assert len([k async for k in rd.scan_iter(match=f"{PREFIX}:presence:*")]) == 2

        servers[1].kill()
        assert servers[1].proc is not None and servers[1].proc.returncode == -signal.SIGKILL
        two.sockets.clear()

        async def host_gone() -> bool:
            return "host" not in (await present()).values()

        limit = ALIVE_MS / 1000 + REAP_SECONDS
        took = await poll(host_gone, "the survivor to record the host's departure", limit + 3)
        print(f"host's departure recorded {took:.1f} s after the SIGKILL (limit {limit:.0f} s)")
        assert took <= limit + 1.5, took
        # One more reaper period: a second departure would show up now.
        await asyncio.sleep(REAP_SECONDS + 0.5)
        assert sorted((await present()).values()) == ["supervisor"]
        record = await one.events(sid, "host")
        assert len([e for e in record if e["type"] == "party_left"]) == 1, record
        assert len(watcher.of("party_left", "host")) == 1, watcher.events
        assert watcher.of("party_left", "supervisor") == []
        assert len([k async for k in rd.scan_iter(match=f"{PREFIX}:presence:*")]) == 1

        # The dead process's supervisor count is gone with it: leaving process one is the last.
        await watcher.sio.disconnect()

        async def supervisor_gone() -> bool:
            return await present() == {}

        await poll(supervisor_gone, "the supervisor's departure", 5)
        record = await one.events(sid, "host")
        left = [e["payload"]["role"] for e in record if e["type"] == "party_left"]
        assert sorted(left) == ["host", "supervisor"], record
    finally:
        for c in clients:
            await c.close_sockets()
        for s in servers:
            s.kill()
        await http.close()
        await rd.aclose()
        redis.stop()
