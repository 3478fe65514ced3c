"""The bid-rigging signals wired into the opening, through the real API: the server notes where
each request came from, raises supervisor-only warning events once the table is out, changes no
outcome, and ``bidbridge signals --archive`` recomputes the same warnings from the archive."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from crypto.fingerprint import HEADER, machine_fingerprint
from schemas.events import NewEvent
from schemas.signals import Signal
from schemas.time import parse_iso
from server.audit.export import export_session
from server.domain import opening as op
from tests.support.evaluation import drawn, past_review
from tests.support.hall import Hall, P, seal_party
from tests.support.opening import HOUR, SIGN_IN, cek
from tests.support.pki import CODE_A, CODE_B, CODE_C

LOT = "JS-2026-0101/01"
ROOT = Path(__file__).resolve().parents[1]
SHARED = machine_fingerprint(LOT, b"4c4c4544-0030-1010-8052-b4c04f4d4e32", "00:1a:2b:3c:4d:5e")
OWN_C = machine_fingerprint(LOT, b"another-installation", "00:1a:2b:3c:4d:5f")
ADDR_AB = "203.0.113.7"
ADDR_C = "198.51.100.9"
PRICES = {"a": 12_800_000_000, "b": 11_950_000_000, "c": 13_370_000_000}


@pytest.fixture
def store_url() -> None:
    """The ``hall`` fixture on the server's default store: these tests run once, not once per
    database."""
    return None


@pytest.fixture(autouse=True)
def behind_proxies(hall: Hall) -> None:
    """Every test here runs on a hall whose test client stands behind trusted proxies."""
    # The test client stands behind "nginx" (loopback) and an inner proxy tier (10.0.0.0/8).
    hall.hub.settings.trusted_proxies = ("127.0.0.1", "10.0.0.0/8")


def seal(hall: Hall, tmp: Path, key: str, machine: str | None) -> Path:
    return seal_party(
        tmp,
        P(hall, key),
        name=key,
        documents={f"{key}-技术标.pdf": f"%PDF-1.7 {key} own text\n".encode() * 40},
        sealing_machine=machine,
        price_fen=PRICES[key],
    )


def headers(addr: str, machine: str | None) -> dict[str, str]:
    h = {"X-Forwarded-For": f"{addr}, 10.0.0.5"}  # client, then an inner hop of the proxy
    if machine is not None:
        h[HEADER] = machine
    return h


async def opening_with_signals(hall: Hall, tmp: Path) -> tuple[str, dict[str, Path]]:
    """a and b upload from one address and seal on one machine; c from elsewhere; the table."""
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    envs: dict[str, Path] = {}
    where = {"a": (ADDR_AB, SHARED), "b": (ADDR_AB, SHARED), "c": (ADDR_C, "not-a-fingerprint")}
    for k in "abc":
        addr, machine = where[k]
        envs[k] = seal(hall, tmp, k, SHARED if k in "ab" else OWN_C)
        await hall.request(
            "PUT",
            f"/api/sessions/{sid}/bid",
            P(hall, k),
            data=envs[k].read_bytes(),
            headers={"Content-Type": "application/octet-stream", **headers(addr, machine)},
        )
    await hall.at(hall.t0 + HOUR)
    await hall.listen(sid, P(hall, "supervisor"))
    await hall.request("POST", f"/api/sessions/{sid}/start", P(hall, "host"))
    await hall.request("POST", f"/api/sessions/{sid}/decryption", P(hall, "host"))
    for k, addr in (("a", "192.0.2.1"), ("b", "192.0.2.2"), ("c", "192.0.2.3")):
        out = await hall.request(
            "POST",
            f"/api/sessions/{sid}/key",
            P(hall, k),
            {"cek": cek(hall, k, envs[k])},
            headers=headers(addr, None),
        )
        assert out["ok"], out
    closes = parse_iso((await hall.view(sid, P(hall, "host")))["decrypt_closes_at"])
    await hall.at(closes)  # the table is published; the scheduler's after-tick raises signals
    return sid, envs


async def test_same_address_and_machine_warn_the_supervisor_alone(
    hall: Hall, tmp_path: Path
) -> None:
    sid, _ = await opening_with_signals(hall, tmp_path)
    codes = {k: P(hall, k).code for k in "abc"}
    everything = await hall.hub.store.events_after(sid, 0)
    uploads = {e.payload["bidder"]: e for e in everything if e.type == "bid_uploaded"}
    # The origin noted: the client behind the trusted proxy, the validated machine header.
    assert uploads[codes["a"]].payload["origin"]["addr"] == ADDR_AB
    assert uploads[codes["a"]].payload["origin"]["machine"] == SHARED
    assert uploads[codes["c"]].payload["origin"] == {
        "addr": ADDR_C,
        "machine": None,  # "not-a-fingerprint" was dropped
        "cert_serial": format(P(hall, "c").cert.serial_number, "x"),
    }
    assert uploads[codes["a"]].audience == [f"bidder:{codes['a']}"]  # nobody else, ever

    signals = [e for e in await hall.events(sid, P(hall, "supervisor")) if e["type"] == "signal"]
    assert signals and all(e["audience"] == ["supervisor"] for e in signals)
    by_kind = {e["payload"]["kind"]: Signal.model_validate(e["payload"]) for e in signals}
    ab = sorted([codes["a"], codes["b"]])
    upload_seqs = sorted([uploads[codes["a"]].seq, uploads[codes["b"]].seq])

    address = by_kind["same_origin_address"]
    assert address.subjects == ab
    assert sorted(e.seq for e in address.evidence if e.seq is not None) == upload_seqs
    assert ADDR_AB in address.explanation_zh and ADDR_AB in address.explanation_en
    machine = by_kind["same_origin_machine"]
    assert machine.subjects == ab and machine.score >= 0.9
    assert sorted(e.seq for e in machine.evidence if e.seq is not None) == upload_seqs
    trail = by_kind["certificate_trail"]  # two companies' CA keys used on one machine
    assert trail.subjects == ab
    assert not any(codes["c"] in s.subjects for s in by_kind.values() if s.family == "same_origin")

    # Nobody else sees them: a bidder and the host, over REST and the hall socket.
    for viewer in ("a", "c", "host"):
        rest = await hall.events(sid, P(hall, viewer))
        assert not [e for e in rest if e["type"] == "signal"], viewer
        sock = await hall.listen(sid, P(hall, viewer))
        assert not [e for e in sock.events if e["type"] == "signal"], viewer
        await hall.hang_up(sock)
    sup = await hall.listen(sid, P(hall, "supervisor"))
    assert {e["id"] for e in sup.events if e["type"] == "signal"} == {e["id"] for e in signals}

    # No warning changes the state or the outcome: the log folded without them is the state.
    loaded = await hall.hub.service.load(sid)
    assert loaded is not None and loaded.state.status == "announcing"
    first = everything[0].payload
    state = op.new_session(
        sid, first["lot_id"], op.Timetable.model_validate(first["timetable"]), first["title"]
    )
    for e in await hall.hub.store.events_after(sid, 0):
        if e.seq == 1 or e.type == "signal":
            continue
        new = NewEvent(type=e.type, actor=e.actor, audience=e.audience, payload=e.payload)
        state = op.evolve(state, new, parse_iso(e.at))
    assert state.model_dump(exclude={"signals_raised"}) == loaded.state.model_dump(
        exclude={"signals_raised"}
    )
    assert sorted(loaded.state.signals_raised) == sorted(s.id for s in by_kind.values())

    # A second pass (the record, a restart) raises nothing twice.
    from server.signals.facts import raise_signals

    assert await raise_signals(hall.hub, sid) == 0


async def test_untrusted_peer_forwarded_for_is_ignored(hall: Hall, tmp_path: Path) -> None:
    sid = await hall.create_session()
    await hall.at(hall.t0 + SIGN_IN)
    hall.hub.settings.trusted_proxies = ("10.9.9.9",)  # the test client is no longer trusted
    await hall.request(
        "POST", f"/api/sessions/{sid}/sign-in", P(hall, "a"), headers=headers(ADDR_AB, SHARED)
    )
    signed = [e for e in await hall.hub.store.events_after(sid, 0) if e.type == "bidder_signed_in"]
    assert signed[0].payload["origin"]["addr"] == "127.0.0.1"
    assert signed[0].payload["origin"]["machine"] == SHARED


def run_signals(archive: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server.cli", "signals", "--archive", str(archive), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_archive_recomputes_the_recorded_signals_and_finds_a_changed_address(
    hall: Hall, tmp_path: Path
) -> None:
    sid, _ = await opening_with_signals(hall, tmp_path)
    recorded = sorted(
        e.payload["id"] for e in await hall.hub.store.events_after(sid, 0) if e.type == "signal"
    )
    assert recorded
    archive = await export_session(
        hall.hub.store,
        hall.hub.blobs,
        hall.hub.trust,
        hall.hub.identity,
        sid,
        tmp_path / "archive.zip",
        hall.clock.now(),
    )
    verified = subprocess.run(
        [sys.executable, "-m", "server.cli", "verify-archive", str(archive)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    done = run_signals(archive)
    assert done.returncode == 0, done.stdout + done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    assert out["match"] is True
    assert sorted(s["id"] for s in out["signals"]) == recorded == sorted(out["recorded_ids"])
    assert {s["kind"] for s in out["signals"]} >= {
        "same_origin_address",
        "same_origin_machine",
        "certificate_trail",
    }

    # b's upload address changed in the archive: the warning no longer matches its evidence.
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "events.jsonl":
                lines = data.decode().splitlines()
                for i, line in enumerate(lines):
                    e = json.loads(line)
                    if e["type"] == "bid_uploaded" and e["payload"]["bidder"] == P(hall, "b").code:
                        lines[i] = line.replace(ADDR_AB, "203.0.113.8")
                data = ("\n".join(lines) + "\n").encode()
            dst.writestr(info, data)
    bad = run_signals(tampered)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    report = json.loads(bad.stdout)
    assert report["match"] is False
    assert report["not_recomputed"]  # the recorded address warning is not what the facts give
    text = subprocess.run(
        [sys.executable, "-m", "server.cli", "signals", "--archive", str(tampered)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert text.returncode == 1 and "MISMATCH" in text.stdout


# --- an evaluation -------------------------------------------------------------------------------


def detailed(expert: str, a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> Any:
    marks = {CODE_A: a, CODE_B: b, CODE_C: c}
    return {
        "expert": expert,
        "stage": "detailed",
        "scores": [
            {"bidder": bidder, "criterion": crit, "points_x100": value}
            for bidder, (t1, c1) in marks.items()
            for crit, value in (("T1", t1), ("C1", c1))
        ],
    }


async def test_identical_score_sheets_warn_the_supervisor_after_the_ranking(
    hall: Hall, tmp_path: Path
) -> None:
    e, _sup = await drawn(hall, tmp_path)
    host, supervisor = P(hall, "host"), P(hall, "supervisor")
    committee = await e.committee()
    ids = sorted(committee)
    for mid in ids:
        await e.sign_in(mid, committee[mid]["room_id"])
    chair = await past_review(e, ids)
    # ids[0] and ids[1] hand in the same sheet to the point; the others judge for themselves.
    same = ((3500, 2600), (3000, 2400), (2800, 2200))
    for i, mid in enumerate(ids):
        marks = same if i < 2 else ((3400 - 50 * i, 2500), (3050, 2450 - 20 * i), (2900, 2150))
        await e.sheet(mid, "detailed", detailed(mid, *marks))
    await e.post(chair, "close-stage")
    await e.post(chair, "summarize")  # the ranking: the warnings are computed in the background

    async with asyncio.timeout(20):
        while not (found := [x for x in await e.events(supervisor) if x["type"] == "signal"]):
            await asyncio.sleep(0.05)
    by_kind = {x["payload"]["kind"]: Signal.model_validate(x["payload"]) for x in found}
    twins = by_kind["expert_identical"]
    assert twins.subjects == sorted(ids[:2])
    contents = {
        x.payload["expert_id"]: x.seq
        for x in await hall.hub.store.events_after(e.sid, 0)
        if x.type == "sheet_content" and x.payload["stage"] == "detailed"
    }
    assert sorted(ev.seq for ev in twins.evidence) == sorted(contents[m] for m in ids[:2])
    assert all(x["audience"] == ["supervisor"] for x in found)
    for who in (host, e.as_expert(ids[0]), e.as_expert(ids[2])):
        assert not [x for x in await e.events(who) if x["type"] == "signal"]
    view = await e.view(host)
    assert view["status"] == "signing"  # the warning changed nothing

    archive = await export_session(
        hall.hub.store,
        hall.hub.blobs,
        hall.hub.trust,
        hall.hub.identity,
        e.sid,
        tmp_path / "evaluation.zip",
        hall.clock.now(),
    )
    done = run_signals(archive)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert sorted(s["id"] for s in out["signals"]) == sorted(x["payload"]["id"] for x in found)
