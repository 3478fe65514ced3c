#!/usr/bin/env python3
"""The client side of ``scripts/bench_hall.py`` and ``scripts/bench_cluster.py``, run by them in
a separate process.

Two modes, each driven over stdin/stdout by the parent (one line per message):

``hall``: connect N socket.io clients (websocket transport, all in one asyncio loop) to the
``/hall`` namespace: python-socketio's ``AsyncClient`` (``--client socketio``, the default) or
``LeanListener`` (``--client lean``, the same protocol at a quarter of the CPU); print ``ready``
once all are in; print ``all <key>`` when every client has received the event with that key
(``<stream>:<n>``: a public event's number, ``all:<n>``, or the reference broadcasts',
``plain:<n>``; see ``event_key``); on ``quit`` (stdin), write the arrival instants
(``time.time()``) per key to the results file and print ``done <out of order> <messages>
<events>``.

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
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts the repository on sys.path)
from bench_hall import raise_fd_limit

CLIENTS = ("socketio", "lean")


def add_client_options(
    p: argparse.ArgumentParser, default: str, client_help: str, batch_help: str
) -> None:
    """``--client`` (``default`` first among the choices) and ``--batch``, as this script and
    ``bench_cluster.py`` take them."""
    choices = (default, *(c for c in CLIENTS if c != default))
    p.add_argument("--client", choices=choices, default=default, help=client_help)
    p.add_argument("--batch", action=argparse.BooleanOptionalAction, default=True, help=batch_help)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- hall: many listeners -----------------------------------------------------------------------


def event_key(record: dict[str, Any]) -> str:
    """``<stream>:<n>``: an event's number in the first stream it is a member of (``all`` for a
    public one), the same for every listener; the parent names the events it waits for so."""
    pos = record["pos"]
    if "all" in record["audience"]:
        return f"all:{pos['all']}"
    stream = next(t for t in pos if t != "all")
    return f"{stream}:{pos[stream]}"


class Arrivals:
    """What the listeners of this process received: arrival instants per event, and checks.

    Each listener keeps a cursor (stream -> n, docs/positions.md) and must be sent, in each of
    its streams, the events numbered 1, 2, 3, ... after where it started, each once. An event
    that does not take exactly the next number of each stream it is a member of (or, not
    public, comes after more public ones than the listener has had) counts as out of order; one
    whose numbers the listener has all passed (repeated, or overtaken) is not taken either. The plain broadcasts of ``bench_hall.py`` have a stream of
    their own (``bench_hall.PLAIN``), interleaved with the log's. Completeness is checked by
    the parent from the arrivals (every listener, every measured event).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.by_key: dict[str, list[float]] = defaultdict(list)
        self.disorder = 0
        self.messages = 0  # socket.io messages that carried events (one event, or a list)
        self.cpu_mark = 0.0

    def take(self, cursor: dict[str, int], record: dict[str, Any], t: float) -> None:
        """``cursor``: one listener's, moved on by each event it takes."""
        try:
            pos: dict[str, int] = record["pos"]
            public = "all" in record["audience"]
            members = [s for s in pos if s != "all"]
            if public:
                members.append("all")
            key = event_key(record)
            behind = all(pos[s] <= cursor.get(s, 0) for s in members)
        except (KeyError, TypeError, AttributeError, StopIteration):
            self.disorder += 1  # not an event of the hall
            return
        if behind:  # repeated, or after a later one: not taken
            self.disorder += 1
            return
        if any(pos[s] != cursor.get(s, 0) + 1 for s in members) or (
            not public and pos.get("all", 0) > cursor.get("all", 0)
        ):
            self.disorder += 1  # something before it has not come (yet): taken all the same
        for s in members:
            cursor[s] = pos[s]
        got = self.by_key[key]
        got.append(t)
        if len(got) == self.n:
            cpu = time.process_time()
            say(f"all {key} {cpu - self.cpu_mark:.6f}")  # CPU since the previous "all"
            self.cpu_mark = cpu


def start_cursor(args: argparse.Namespace) -> dict[str, int]:
    cursor = json.loads(args.last)
    if not isinstance(cursor, dict):
        raise SystemExit("--last: a JSON object, stream -> n")
    return {str(s): int(n) for s, n in cursor.items()}


def auth_payload(args: argparse.Namespace, token: str) -> dict[str, Any]:
    auth: dict[str, Any] = {"token": token, "session_id": args.session, "last": start_cursor(args)}
    if args.batch:
        auth["batch"] = True  # as the browser page does (server/web/static/app.js)
    return auth


async def connect_socketio(args: argparse.Namespace, token: str, arrivals: Arrivals) -> Any:
    """A python-socketio ``AsyncClient`` (websocket transport): the stock Python client."""
    import socketio

    clock = time.time
    listener = start_cursor(args)

    def on_event(data: dict[str, Any]) -> None:
        arrivals.messages += 1
        arrivals.take(listener, data, clock())

    def on_events(data: list[dict[str, Any]]) -> None:
        t = clock()
        arrivals.messages += 1
        for record in data:
            arrivals.take(listener, record, t)

    c = socketio.AsyncClient(reconnection=False)
    c.on("event", on_event, namespace="/hall")
    c.on("events", on_events, namespace="/hall")
    await c.connect(
        args.url,
        namespaces=["/hall"],
        auth=auth_payload(args, token),
        transports=["websocket"],
        wait_timeout=60,
    )
    return c


class LeanListener:
    """A hall listener speaking the Engine.IO 4 / Socket.IO 5 protocol over one websocket.

    What a browser tab does with the socket.io JavaScript client, without python-socketio's
    per-message machinery (a ``wait_for`` and a task per message): one task per connection
    reads each frame, answers the server's pings, parses every event's JSON and checks its
    positions. One Python process simulating thousands of browsers can afford little per message.
    """

    def __init__(self, args: argparse.Namespace, token: str, arrivals: Arrivals) -> None:
        self.args = args
        self.token = token
        self.arrivals = arrivals
        self.listener = start_cursor(args)
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def connect(self, http: Any) -> None:
        url = self.args.url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.ws = ws = await http.ws_connect(url, autoping=True, max_msg_size=0)
        try:
            opened = await asyncio.wait_for(ws.receive_str(), 60)
            if not opened.startswith("0"):
                raise RuntimeError(f"no engine.io handshake: {opened[:80]}")
            await ws.send_str("40/hall," + json.dumps(auth_payload(self.args, self.token)))
            replayed = asyncio.get_running_loop().create_future()
            self.task = asyncio.create_task(self.read(replayed))
            await asyncio.wait_for(asyncio.shield(replayed), 60)
        except BaseException:
            await ws.close()
            raise

    async def read(self, replayed: asyncio.Future[None]) -> None:
        clock = time.time
        loads = json.loads
        arrivals = self.arrivals
        take = arrivals.take
        listener = self.listener
        ws = self.ws
        while True:
            msg = await ws.receive()
            t = clock()
            if msg.type != 1:  # aiohttp.WSMsgType.TEXT; anything else ends the connection
                break
            data: str = msg.data
            if data.startswith("42/hall,"):  # a socket.io EVENT in /hall: ["name", payload]
                name, payload = loads(data[8:])
                if name == "event":
                    arrivals.messages += 1
                    take(listener, payload, t)
                elif name == "events":  # a commit's events in one message (we asked: batch)
                    arrivals.messages += 1
                    for record in payload:
                        take(listener, record, t)
                elif name == "replayed" and not replayed.done():
                    replayed.set_result(None)
            elif data == "2":  # engine.io ping: answer or be dropped
                await ws.send_str("3")
            elif data.startswith("44/hall,"):  # connect_error: the hall refused us
                if not replayed.done():
                    replayed.set_exception(RuntimeError(data[8:200]))
            elif data.startswith("41"):  # the server disconnected this namespace
                break
        if not replayed.done():
            replayed.set_exception(RuntimeError("connection closed before the replay ended"))

    async def disconnect(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.send_str("41/hall,")
        await self.ws.close()
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await self.task


async def hall_mode(args: argparse.Namespace) -> None:
    tokens: list[str] = json.loads(Path(args.tokens).read_text())
    arrivals = Arrivals(len(tokens))
    clients: list[Any] = []
    gate = asyncio.Semaphore(args.connect_concurrency)
    failures: list[str] = []
    http: Any = None
    if args.client == "lean":
        import aiohttp

        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def connect(token: str) -> None:
        async with gate:
            for attempt in range(5):
                try:
                    if args.client == "lean":
                        c = LeanListener(args, token, arrivals)
                        await c.connect(http)
                    else:
                        c = await connect_socketio(args, token, arrivals)
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
    arrivals.cpu_mark = time.process_time()
    say(f"ready {len(clients)} {time.perf_counter() - t0:.2f}")

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if not line or line == "quit":
            break
    Path(args.results).write_text(json.dumps(arrivals.by_key))
    gate = asyncio.Semaphore(200)

    async def close(c: Any) -> None:
        async with gate:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.disconnect(), 5)

    await asyncio.gather(*(close(c) for c in clients))
    if http is not None:
        await http.close()
    events = sum(len(v) for v in arrivals.by_key.values())
    say(f"done {arrivals.disorder} {arrivals.messages} {events}")


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
    h.add_argument(
        "--last",
        default="{}",
        help="the cursor to replay the log after, JSON stream -> n (e.g. '{\"all\": 12}')",
    )
    h.add_argument("--tokens", required=True, help="JSON file: a list of bearer tokens")
    h.add_argument("--results", required=True, help="where to write the arrivals (JSON)")
    h.add_argument("--connect-concurrency", type=int, default=50)
    add_client_options(
        h,
        "socketio",
        "python-socketio AsyncClient, or the lean protocol client (LeanListener)",
        "ask the hall for a commit's events in one message, as the browser page does",
    )
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
