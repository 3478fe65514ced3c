#!/usr/bin/env python3
"""Benchmark hall fan-out over two server processes (PostgreSQL + Redis), as deployed.

Two ``bidbridge serve`` processes share a fresh PostgreSQL database (on the machine's server at
127.0.0.1:5432, dropped afterwards) and a Redis of our own (``redis-server`` on a free port). N
simulated bidders connect to the hall, half to each process, from two client processes
(``scripts/bench_hall_clients.py``, one per server, websocket transport). The host suspends and
resumes the session (open for sign-in) in turn through process one's REST API; each command
commits one event audienced ``all`` (the change) and the server's signed checkpoint, which is
for the record only (no viewer is sent it). Process one emits the change to its own clients
directly; process two hears the Redis doorbell and reads it from the database.

The simulated bidders are, by default, ``LeanListener``s: each speaks Engine.IO 4 / Socket.IO 5
over its own websocket, answers pings, parses every message's JSON and checks that its events
come in order by their positions (each stream it follows numbered 1, 2, 3, ... after where it
started, docs/positions.md), each once; like the browser page they ask for a commit's events as one
``events`` message (``--no-batch``: one message per event). ``--client socketio`` uses
python-socketio's ``AsyncClient`` instead, which costs its process about four times as much CPU
per message; thousands of them in one process share the two cores with the servers.

Latency: client arrival instant minus the instant just before the REST request was sent (one
machine, one ``time.time()``), for the first event of each command, over all clients and
commands. The reference, in the same run: the clients of process one (local delivery) against
those of process two (delivery through the doorbell and the database); the ratio is two / one.
CPU per delivered message: the CPU time (user + system, from /proc) of both server processes
over the measured commands, divided by events x clients; "client µs", the same for both client
processes. "msg/ev": socket.io messages per delivered event. "lost": events a client never got;
"order": events a client got out of order or twice. The goal needs both at 0.

    .venv/bin/python scripts/bench_cluster.py                  # 2,000 and 5,000 bidders
    .venv/bin/python scripts/bench_cluster.py --sizes 200 --events 6   # a smoke run
    .venv/bin/python scripts/bench_cluster.py --client socketio --no-batch   # stock clients
    .venv/bin/python scripts/bench_cluster.py --detail      # each command's deliveries
    .venv/bin/python scripts/bench_cluster.py --py-spy /path/to/py-spy   # profile all four
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hall import Child, pct, raise_fd_limit, verdict  # noqa: E402
from bench_hall_clients import add_client_options  # noqa: E402

GOAL_P99_MS = 500.0
FACTOR = 10.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(args: argparse.Namespace) -> bool:
    import aiohttp

    from server.auth import Tokens
    from tests.support.dbs import _pg_database
    from tests.support.pki import make_pki
    from tests.support.servers import (
        Client,
        RedisServer,
        ServerProcess,
        free_port,
        prepare_site,
        published_session,
        register,
    )

    pki = make_pki()
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as d:
        tmp = Path(d)
        redis = RedisServer(tmp / "redis")
        redis.start()
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        servers: list[ServerProcess] = []
        try:
            async for database_url in _pg_database():
                site = prepare_site(pki, tmp, database_url)
                anchor = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                for i in range(2):
                    port = free_port()
                    argv = site.serve_argv(
                        port,
                        "--redis-url", redis.url,
                        "--accelerate", str(FACTOR), "--accelerate-from", anchor,
                    )  # fmt: skip
                    s = ServerProcess(argv, site.env, tmp / f"s{i}.log", f"http://127.0.0.1:{port}")
                    await s.start(http)
                    servers.append(s)
                one = Client(http, servers[0].url, site.parties)
                await register(one)
                # Open for sign-in, the deadline far off: until it, the hall admits any company
                # (after it, only a bidder with a bid or signed in, which the simulated ones
                # are not). Suspending and resuming cost the same in any status.
                sid = await published_session(one, timedelta(days=7))
                tokens = Tokens((site.data / "token.secret").read_bytes())
                print(f"session {sid} is open for sign-in; 2 server processes, Redis {redis.url}")
                print(
                    f"clients: {args.client}, {'batched' if args.batch else 'one message per event'}"
                )
                print(
                    f"{'bidders':>7} {'p50 ms':>7} {'p99 ms':>7} {'local p99':>9}"
                    f" {'remote p99':>10} {'ratio':>6} {'µs CPU/msg':>10} {'client µs':>9}"
                    f" {'msg/ev':>6} {'lost':>5} {'order':>5}"
                )
                for n in args.sizes:
                    r = await fan_out(
                        one,
                        sid,
                        n,
                        args.events,
                        tokens,
                        servers,
                        tmp,
                        args.client,
                        args.batch,
                        args.settle,
                        args.detail,
                        args.py_spy,
                    )
                    print(
                        f"{n:>7} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['local_p99']:>9.1f}"
                        f" {r['remote_p99']:>10.1f} {r['ratio']:>6.2f} {r['us']:>10.1f}"
                        f" {r['client_us']:>9.1f} {r['per_event']:>6.2f}"
                        f" {r['lost']:>5} {r['disorder']:>5}",
                        flush=True,
                    )
                    if n == max(args.sizes):
                        ok = r["p99"] < GOAL_P99_MS and r["lost"] == 0 and r["disorder"] == 0
                        print(
                            f"goal: p99 < {GOAL_P99_MS:.0f} ms at {n} bidders over two processes:"
                            f" {r['p99']:.1f} ms, {verdict(ok)}"
                        )
        finally:
            for s in servers:
                s.kill()
            await http.close()
            redis.stop()
    return ok


async def fan_out(
    one: Any,
    sid: str,
    n: int,
    events: int,
    tokens: Any,
    servers: list[Any],
    tmp: Path,
    client: str = "lean",
    batch: bool = True,
    settle: float = 0.0,
    detail: bool = False,
    profile: str | None = None,
) -> dict[str, Any]:
    from server.auth import Principal

    now = await one.now()
    host = one.parties["host"]
    halves = [list(range(0, n, 2)), list(range(1, n, 2))]
    children: list[Child] = []
    results: list[Path] = []
    # The simulated bidders follow the public stream only: they start at its head (no replay).
    start = json.dumps({"all": (await one.view(sid, "host"))["pos"]["all"]})
    for k, idx in enumerate(halves):
        toks = [
            tokens.issue(Principal("bidder", f"B{n:05d}{i:06d}", f"投标人{i}", "0" * 64), now)[0]
            for i in idx
        ]
        tok_file = tmp / f"tokens-{n}-{k}.json"
        tok_file.write_text(json.dumps(toks))
        results.append(tmp / f"arrivals-{n}-{k}.json")
        child = await Child.start(
            "hall", "--url", servers[k].url, "--session", sid, "--last", start,
            "--tokens", str(tok_file), "--results", str(results[-1]), "--client", client,
            "--batch" if batch else "--no-batch",
        )  # fmt: skip
        children.append(child)
    for child in children:
        await child.expect("ready")
    if settle:
        await asyncio.sleep(settle)

    sent: dict[str, float] = {}
    cpu0 = sum(cpu_seconds(s.proc.pid) for s in servers)
    ccpu0 = sum(cpu_seconds(c.proc.pid) for c in children)
    spies = []
    delivered_events = 0
    warmup = 2
    suspended = False
    for k in range(warmup + events):
        suspended = not suspended
        path = "suspend" if suspended else "resume"
        t = time.time()
        if k == warmup:
            cpu0 = sum(cpu_seconds(s.proc.pid) for s in servers)
            ccpu0 = sum(cpu_seconds(c.proc.pid) for c in children)
            if profile:
                spies = [
                    await asyncio.create_subprocess_exec(
                        profile, "record", "--nonblocking", "--format", "raw", "--rate", "200",
                        "-p", str(pid), "-o", f"/tmp/bench-cluster-spy-{n}-{name}.txt",
                        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                    )
                    for name, pid in [
                        *((f"server{i}", s.proc.pid) for i, s in enumerate(servers)),
                        *((f"clients{i}", c.proc.pid) for i, c in enumerate(children)),
                    ]
                ]  # fmt: skip
        out = await one.request(
            "POST", f"/api/sessions/{sid}/{path}", host, {"reason": f"bench {k}: 压测 / load"}
        )
        # What the command appended that the host is shown: the change, the public event
        # numbered ``pos.all`` (the checkpoint after it is shown to no one).
        change = f"all:{out['pos']['all']}"
        await asyncio.gather(*(c.wait_all([change]) for c in children))
        if k >= warmup:
            sent[change] = t
            delivered_events += 1
        await asyncio.sleep(0.05)
    cpu = sum(cpu_seconds(s.proc.pid) for s in servers) - cpu0
    ccpu = sum(cpu_seconds(c.proc.pid) for c in children) - ccpu0
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        await spy.wait()
    for c in children:
        c.send("quit")
    disorder = messages = received = 0
    for c in children:
        done = await c.expect("done", timeout=120)
        disorder += int(done.split()[1])
        messages += int(done.split()[2])
        received += int(done.split()[3])
        await c.proc.wait()
    lat: list[list[float]] = []
    lost = 0
    per_command: dict[str, list[str]] = {key: [] for key in sent}
    for path in results:
        arrivals: dict[str, list[float]] = json.loads(path.read_text())
        side = []
        for key, t0 in sent.items():
            got = [(t - t0) * 1000 for t in arrivals.get(key, [])]
            side.extend(got)
            if got:
                per_command[key].append(
                    f"{min(got):6.0f} {statistics.median(got):6.0f} {max(got):6.0f}"
                )
        lat.append(side)
    if detail:
        print("  event    sent (s)  process one: min p50 max ms | process two: min p50 max ms")
        t_first = min(sent.values())
        for key, t0 in sent.items():
            print(f"  {key:>8} {t0 - t_first:>8.2f}  " + " | ".join(per_command[key]))
    for k, idx in enumerate(halves):
        lost += len(sent) * len(idx) - len(lat[k])
    every = lat[0] + lat[1]
    return {
        "p50": statistics.median(every),
        "p99": pct(every, 0.99),
        "local_p99": pct(lat[0], 0.99),
        "remote_p99": pct(lat[1], 0.99),
        "ratio": pct(lat[1], 0.99) / max(pct(lat[0], 0.99), 1e-9),
        "us": cpu / (delivered_events * n) * 1e6,
        "client_us": ccpu / (delivered_events * n) * 1e6,
        "lost": lost,
        "disorder": disorder,
        "per_event": messages / max(received, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="2000,5000", help="bidders per run (default 2000,5000)")
    ap.add_argument("--events", type=int, default=20, help="host commands per run (default 20)")
    add_client_options(
        ap,
        "lean",
        "simulated bidders: the lean protocol client (default) or python-socketio's",
        "clients ask for a commit's events in one message, as the browser page does",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long after the clients connected before the first command (default 0)",
    )
    ap.add_argument(
        "--detail",
        action="store_true",
        help="print each measured command's fastest, median and slowest delivery per process",
    )
    ap.add_argument(
        "--py-spy",
        metavar="PATH",
        help="profile the servers and the client processes over the measured commands with this"
        " py-spy binary (raw stacks to /tmp/bench-cluster-spy-<bidders>-<process>.txt)",
    )
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    fds = raise_fd_limit()
    print(
        f"bench_cluster: {os.cpu_count()} CPUs · Python {platform.python_version()} ·"
        f" {platform.platform()} · open files {fds}"
    )
    ok = asyncio.run(run(args))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
