#!/usr/bin/env python3
"""The client side of ``scripts/bench_hall.py``, run by it in a separate process.

Two modes, each driven over stdin/stdout by the parent (one line per message):

``hall``: connect N socket.io clients (python-socketio ``AsyncClient``, websocket transport,
all in one asyncio loop) to the ``/hall`` namespace; print ``ready`` once all are in; print
``all <seq>`` when every client has received the event with that ``seq``; on ``quit`` (stdin),
write the arrival instants (``time.time()``) per ``seq`` to the results file and exit.

``login``: run CA logins (challenge -> sign -> login) against the server with some concurrency;
print one JSON line with the timings.

Not meant to be run by hand; see ``bench_hall.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- hall: many listeners -----------------------------------------------------------------------


async def hall_mode(args: argparse.Namespace) -> None:
    import socketio

    tokens: list[str] = json.loads(Path(args.tokens).read_text())
    n = len(tokens)
    arrivals: dict[int, list[float]] = defaultdict(list)
    clock = time.time
    cpu_mark = [0.0]

    def on_event(data: dict[str, Any]) -> None:
        t = clock()
        seq = data["seq"]
        got = arrivals[seq]
        got.append(t)
        if len(got) == n:
            cpu = time.process_time()
            say(f"all {seq} {cpu - cpu_mark[0]:.6f}")  # CPU since the previous "all"
            cpu_mark[0] = cpu

    clients: list[socketio.AsyncClient] = []
    gate = asyncio.Semaphore(args.connect_concurrency)
    failures: list[str] = []

    async def connect(token: str) -> None:
        c = socketio.AsyncClient(reconnection=False)
        c.on("event", on_event, namespace="/hall")
        async with gate:
            for attempt in range(5):
                try:
                    await c.connect(
                        args.url,
                        namespaces=["/hall"],
                        auth={
                            "token": token,
                            "session_id": args.session,
                            "last_seq": args.last_seq,
                        },
                        transports=["websocket"],
                        wait_timeout=60,
                    )
                    clients.append(c)
                    return
                except Exception as exc:  # retry a refused or timed-out connect
                    if attempt == 4:
                        failures.append(repr(exc))
                    await asyncio.sleep(0.2 * (attempt + 1))

    t0 = time.perf_counter()
    await asyncio.gather(*(connect(t) for t in tokens))
    if failures:
        say(f"error {len(failures)} clients failed to connect: {failures[0]}")
        return
    # The clients stand for browsers on many machines: this process's full garbage collections
    # over 2,000 clients' objects would be an artefact of packing them into one process.
    gc.collect()
    gc.freeze()
    cpu_mark[0] = time.process_time()
    say(f"ready {len(clients)} {time.perf_counter() - t0:.2f}")

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
    Path(args.results).write_text(json.dumps({str(k): v for k, v in arrivals.items()}))
    gate = asyncio.Semaphore(200)

    async def close(c: socketio.AsyncClient) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.disconnect(), 5)

    await asyncio.gather(*(close(c) for c in clients))
    say("done")


# --- login: a burst of CA logins ----------------------------------------------------------------


async def login_mode(args: argparse.Namespace) -> None:
    import aiohttp
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from crypto.attest import b64encode, sign_document
    from crypto.keys import SoftwareKey
    from schemas.time import parse_iso

    creds = []
    for c in json.loads(Path(args.creds).read_text()):
        key = load_pem_private_key(c["key_pem"].encode(), None)
        creds.append(
            (
                SoftwareKey(key),  # type: ignore[arg-type]
                x509.load_pem_x509_certificate(c["cert_pem"].encode()),
                [x509.load_pem_x509_certificate(p.encode()) for p in c["chain_pem"]],
            )
        )
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(args.url + "/api/time") as r:
            at = parse_iso((await r.json())["now"])
        gate = asyncio.Semaphore(args.concurrency)
        sign_cpu = 0.0
        latencies: list[float] = []
        errors: list[str] = []

        async def one(i: int) -> None:
            nonlocal sign_cpu
            key, cert, chain = creds[i % len(creds)]
            async with gate:
                t = time.perf_counter()
                async with http.post(args.url + "/api/auth/challenge") as r:
                    ch = await r.json()
                c0 = time.process_time()
                sig = sign_document(ch["document"].encode(), key, cert, at=at, chain=chain)
                sign_cpu += time.process_time() - c0
                async with http.post(
                    args.url + "/api/auth/login", json={"signature": b64encode(sig)}
                ) as r:
                    out = await r.json()
                    if r.status != 200 or "token" not in out:
                        errors.append(f"{r.status} {out}")
                latencies.append(time.perf_counter() - t)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.logins)))
        total = time.perf_counter() - start
    latencies.sort()
    say(
        json.dumps(
            {
                "total_s": total,
                "ok": args.logins - len(errors),
                "errors": errors[:3],
                "client_sign_cpu_s": sign_cpu,
                "p50_s": latencies[len(latencies) // 2],
                "p99_s": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("hall")
    h.add_argument("--url", required=True)
    h.add_argument("--session", required=True)
    h.add_argument("--last-seq", type=int, default=0, help="replay the log after this seq")
    h.add_argument("--tokens", required=True, help="JSON file: a list of bearer tokens")
    h.add_argument("--results", required=True, help="where to write the arrivals (JSON)")
    h.add_argument("--connect-concurrency", type=int, default=50)
    lg = sub.add_parser("login")
    lg.add_argument("--url", required=True)
    lg.add_argument("--creds", required=True, help="JSON file: [{cert_pem, key_pem, chain_pem}]")
    lg.add_argument("--logins", type=int, default=1000)
    lg.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    raise_fd_limit()
    asyncio.run(hall_mode(args) if args.mode == "hall" else login_mode(args))


if __name__ == "__main__":
    main()
