"""Crash recovery (DESIGN.md sections 4 and 5).

Kill the server process (SIGKILL) while decrypting, restart it: every event, receipt and
decrypted bid is still there, no gap in the log (nor in any party's numbering of what it may
see, docs/positions.md), and the window closes at its instant extended by
the outage, which is recorded as the platform's (rule 8, downtime fairness): a bid not decrypted
is withdrawn (撤回), never revoked.

The server runs as a separate ``bidbridge serve`` process with an accelerated clock (10x)
anchored at one instant, so the restarted process continues the same time line. Everything
goes through real HTTP and socket.io; the store is read directly only at the very end.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization

from crypto.attest import b64decode, b64encode, verify_document
from crypto.bid import unwrap
from schemas.canonical import canonical_json
from schemas.time import iso, parse_iso
from server.store import open_store
from server.work.outage import BEAT_SECONDS
from tests.support.hall import ApiError
from tests.support.pki import CODE_A, CODE_B, Pki
from tests.support.servers import (
    Client,
    Seen,
    ServerProcess,
    as_stored,
    check_log,
    check_shown,
    free_port,
    prepare_site,
    register,
    seal,
    union,
    until,
)

FACTOR = 10.0
"""The server's clock runs this many times faster than real time."""
LATE = timedelta(seconds=10)
"""How late (clock time, i.e. 1 s real) the window may close after its instant."""
CLOCK_SLACK = timedelta(seconds=2)
"""How far (clock time) the restarted server's clock may be off the time line (0.2 s real)."""
DEADLINE_AHEAD = timedelta(seconds=100)
"""Clock time (10 s real) for three uploads, one of 12 MB, on a loaded machine."""
DECRYPT_MINUTES = 3


# --- fixture: data, identity, trust, the first centre account, the server ------------------


@dataclass
class Site:
    server: ServerProcess
    client: Client
    data: Path
    database_url: str | None
    tmp: Path
    server_cert_pem: bytes


@pytest_asyncio.fixture
async def site(pki: Pki, tmp_path: Path, store_url: str) -> AsyncIterator[Site]:
    database_url = None if store_url.startswith("sqlite") else store_url
    prepared = prepare_site(pki, tmp_path, database_url)
    port = free_port()
    anchor = iso(datetime.now(UTC))  # computed once: the restarted server keeps this time line
    argv = prepared.serve_argv(port, "--accelerate", str(FACTOR), "--accelerate-from", anchor)
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess(argv, prepared.env, tmp_path / "server.log", url)
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    client = Client(http, url, prepared.parties)
    try:
        await server.start(http)
        yield Site(server, client, prepared.data, database_url, tmp_path, prepared.server_cert_pem)
    finally:
        await client.close_sockets()
        server.kill()
        await http.close()


# --- the test ----------------------------------------------------------------------------------


async def test_sigkill_while_decrypting_loses_nothing(site: Site) -> None:
    client, server, tmp = site.client, site.server, site.tmp
    p = client.parties
    host = p["host"]

    # Sealed before the session exists: the deadline is only 10 real seconds away.
    envelopes = {
        "a": seal(tmp, p["a"], "a", 4_000, 12_800_000_000),
        # b's bid is larger so that its decryption takes a while and the kill lands in it.
        "b": seal(tmp, p["b"], "b", 12_000_000, 12_650_000_000),
        "c": seal(tmp, p["c"], "c", 4_000, 12_900_000_000),
    }
    await register(client)

    now = await client.now()
    created = await client.request(
        "POST",
        "/api/sessions",
        host,
        {
            "lot_id": "JS-2026-0101/01",
            "title": "市政道路改造工程 01 标段",
            "sign_in_opens": iso(now),
            "deadline": iso(now + DEADLINE_AHEAD),
            "decrypt_minutes": DECRYPT_MINUTES,
            "confirm_minutes": 10,
            "min_bids": 3,
        },
    )
    sid = created["session_id"]
    await client.request("POST", f"/api/sessions/{sid}/publish", host)

    receipts: dict[str, dict[str, Any]] = {}
    for k, path in envelopes.items():
        receipts[k] = await client.upload(sid, p[k], path)

    async def status_is(status: str) -> bool:
        return (await client.view(sid, "host"))["view"]["status"] == status

    await until(lambda: status_is("sealed"), "the deadline to seal the lot", seconds=30)

    supervisor_got = Seen()
    await client.hall_socket(sid, "supervisor", None, supervisor_got)

    async def supervisor_present() -> bool:
        return bool((await client.view(sid, "host"))["view"]["supervisors_present"])

    await until(supervisor_present, "the supervisor's presence")
    await client.request("POST", f"/api/sessions/{sid}/start", host)
    await client.request("POST", f"/api/sessions/{sid}/decryption", host)
    view = (await client.view(sid, "host"))["view"]
    assert view["status"] == "decrypting"
    closes_at = parse_iso(view["decrypt_closes_at"])

    out = await client.submit_key(sid, "a", envelopes["a"])
    assert out["ok"] is True, out

    before = await client.views(sid)  # each party's list checked: numbered without a hole

    clock_before, real_before = await client.now(), time.monotonic()

    # --- b sends its key; the server dies (SIGKILL) while the request is in flight ---------
    await client.login(p["b"])
    cek_b = unwrap(envelopes["b"], p["b"].enc_key, p["b"].enc_cert)  # type: ignore[arg-type]
    in_flight = asyncio.ensure_future(
        client.request("POST", f"/api/sessions/{sid}/key", p["b"], {"cek": b64encode(cek_b)})
    )
    await asyncio.sleep(0.02)
    server.kill()
    killed_at = time.monotonic()
    answer: Any
    try:
        answer = await asyncio.wait_for(in_flight, 10)
    except (aiohttp.ClientError, OSError) as exc:  # the connection died with the server
        answer = exc
    assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
    await client.close_sockets()

    await server.start(client.http)
    restart_seconds = time.monotonic() - killed_at

    # The restarted process continues the same accelerated time line (same anchor and factor).
    clock_after, real_after = await client.now(), time.monotonic()
    drift = clock_after - (clock_before + timedelta(seconds=(real_after - real_before) * FACTOR))
    assert abs(drift) < CLOCK_SLACK, f"the server clock jumped by {drift} across the restart"

    # --- after the restart: nothing lost, nothing changed, no gap -------------------------
    views_after_restart = await client.views(sid)
    for who, seen in before.items():
        assert views_after_restart[who][: len(seen)] == seen, f"{who}: an event changed or vanished"
    after_restart = union(views_after_restart)

    for k, r in receipts.items():
        signed = verify_document(b64decode(r["signature"]), canonical_json(r["receipt"]))
        assert signed.signer.public_bytes(serialization.Encoding.PEM) == site.server_cert_pem
        assert (
            r["receipt"]["envelope_sha256"] == hashlib.sha256(envelopes[k].read_bytes()).hexdigest()
        )
        assert r["receipt"]["bidder"] == p[k].code
        stored = await client.request("GET", f"/api/sessions/{sid}/receipt", p[k])
        assert (stored["receipt"], stored["signature"], stored["pos"]) == (
            r["receipt"],
            r["signature"],
            r["pos"],
        )

    statuses = {b["bidder"]: b["status"] for b in (await client.view(sid, "host"))["view"]["bids"]}
    assert statuses[p["a"].code] == "decrypted"
    assert statuses[p["c"].code] != "decrypted"
    committed = statuses[p["b"].code] == "decrypted"
    if committed:  # the kill came after the commit: the decryption is kept, once
        assert not isinstance(answer, dict) or answer["ok"] is True
        try:
            await client.submit_key(sid, "b", envelopes["b"])
            pytest.fail("a second decryption of b's bid was accepted")
        except ApiError as exc:
            assert exc.code == "ALREADY_DONE", exc.body
    else:  # killed before the commit: nothing half-done is left behind, b simply sends again
        assert not isinstance(answer, dict), f"answered {answer} but not recorded"
        assert not [
            e
            for e in after_restart
            if e["type"] == "bid_decrypted" and e["payload"]["bidder"] == p["b"].code
        ]
        out = await client.submit_key(sid, "b", envelopes["b"])
        assert out["ok"] is True, out
    print(
        f"kill landed {'after' if committed else 'before'} the commit; "
        f"client saw {type(answer).__name__}; restart took {restart_seconds:.2f} s"
    )

    await client.hall_socket(sid, "supervisor", dict(supervisor_got.cursor), supervisor_got)

    # --- rule 8, downtime fairness: the outage is the platform's and extends the window ------
    killed_clock = clock_before + timedelta(seconds=(killed_at - real_before) * FACTOR)
    outages = [e for e in after_restart if e["type"] == "platform_outage"]
    assert len(outages) == 1, "the outage was not recorded once"
    outage = outages[0]["payload"]
    down_from, down_until = parse_iso(outage["down_from"]), parse_iso(outage["down_until"])
    # From the last heartbeat before the kill (at most BEAT_SECONDS real earlier) to the restart.
    beat = timedelta(seconds=BEAT_SECONDS * FACTOR)
    assert killed_clock - beat - CLOCK_SLACK <= down_from <= killed_clock + CLOCK_SLACK, outage
    assert down_until >= killed_clock + timedelta(seconds=restart_seconds * FACTOR) - CLOCK_SLACK
    assert outage["window"] == "decryption"
    assert outage["extended_seconds"] == (down_until - down_from).total_seconds()
    extended = closes_at + (down_until - down_from)
    view = (await client.view(sid, "host"))["view"]
    assert parse_iso(view["decrypt_closes_at"]) == extended
    incidents = [e for e in after_restart if e["type"] == "incident_recorded"]
    named = {b for e in incidents for b in e["payload"]["bidders"]}
    assert p["c"].code in named and p["a"].code not in named, incidents
    assert (p["b"].code in named) == (not committed), "b's incident must follow its state"
    closes_at = extended

    # --- the window closes at its extended instant -------------------------------------------
    remaining = (closes_at - await client.now()).total_seconds() / FACTOR
    assert remaining > 0.5, "the test ran too slowly to check the window before it closed"
    await asyncio.sleep(remaining - 0.3)

    async def window_passed() -> bool:
        return await client.now() >= closes_at

    await until(window_passed, "the server clock to reach closes_at", every=0.01)
    try:
        await client.submit_key(sid, "c", envelopes["c"])
        pytest.fail("a key sent after the window closed was accepted")
    except ApiError as exc:
        assert exc.code == "WINDOW_CLOSED", exc.body

    await until(lambda: status_is("announcing"), "the scheduler to close the window", seconds=3)

    views = await client.views(sid)
    for who, seen in views_after_restart.items():
        assert views[who][: len(seen)] == seen, f"{who}: an event changed or vanished"
    log = union(views)
    closed = [e for e in log if e["type"] == "decryption_closed"]
    tables = [e for e in log if e["type"] == "table_published"]
    assert len(closed) == 1 and len(tables) == 1, "the window closed or the table published twice"
    closed_at = parse_iso(closed[0]["at"])
    assert closes_at <= closed_at <= closes_at + LATE, (closes_at, closed_at)
    # c sent no key, but the platform was down inside its window: withdrawn, not revoked.
    withdrawn = [e for e in log if e["type"] == "bid_withdrawn"]
    assert [e["payload"]["bidder"] for e in withdrawn] == [p["c"].code]
    assert withdrawn[0]["payload"]["evidence"]["finding"] == "platform_fault"
    assert not [e for e in log if e["type"] == "bid_revoked"]

    view_out = await client.view(sid, "host")
    host_heads = {t: n for t, n in view_out["pos"].items() if n}
    assert host_heads == Seen.of(views["host"]).cursor, "the view is not at the log's head"
    statuses = {b["bidder"]: b["status"] for b in view_out["view"]["bids"]}
    assert statuses == {
        p["a"].code: "decrypted",
        p["b"].code: "decrypted",
        p["c"].code: "withdrawn",
    }
    rows = {r["bidder"]: r for r in tables[0]["payload"]["table"]["rows"]}
    assert rows[p["a"].code]["price_fen"] == 12_800_000_000
    assert rows[p["b"].code]["price_fen"] == 12_650_000_000
    assert rows[p["c"].code]["status"] == "withdrawn"
    decrypted = [e["payload"]["bidder"] for e in log if e["type"] == "bid_decrypted"]
    assert sorted(decrypted) == sorted([CODE_A, CODE_B]), "a bid decrypted twice"

    # The supervisor's live socket got (by replay or live) exactly what it may see.
    supervisor_log = await client.events(sid, "supervisor")

    async def socket_caught_up() -> bool:
        return supervisor_log[-1]["id"] in supervisor_got.by_id

    await until(socket_caught_up, "the supervisor's socket to catch up", seconds=3)
    supervisor_got.check("the supervisor's socket")
    # Each connection sends its events once, and the second resumed after the first's cursor.
    assert supervisor_got.duplicates == 0, "the supervisor's socket got an event twice"
    got = supervisor_got.events
    assert got[: len(supervisor_log)] == supervisor_log
    assert all(e["type"] == "signal" for e in got[len(supervisor_log) :])  # the server's own, later

    # --- and the store itself agrees with what the API served ------------------------------
    await client.close_sockets()
    server.kill()
    store = await open_store(site.database_url, site.data)
    try:
        stored = [as_stored(e) for e in await store.events_after(sid, 0)]
        row = await store.load_session(sid)
    finally:
        await store.close()
    check_log(stored)  # no seq gap, every link hashes, every stream numbered without a hole
    # The server's own work after the table (supervisor-only warnings, RaiseSignals) may commit
    # after the test read the lists; nothing else may follow them.
    check_shown(
        stored,
        client.parties,
        views,
        later=lambda e: e["type"] == "signal" and e["actor"].startswith("server:"),
    )
    assert row is not None and row.version == len(stored) and row.status == "announcing"
