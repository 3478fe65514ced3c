"""An evaluation's archive (DESIGN.md section 8): exported from a real evaluation (draw with a
replacement, sheets, signed report, recorded segments), verified offline, any change found and
named; ``bidbridge verify-draw`` recomputes the committee from the archive alone."""

from __future__ import annotations

import asyncio
import fractions
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest

from crypto import ca
from crypto.attest import b64encode, sign_document
from crypto.keys import SoftwareKey
from schemas import evaluation as EV
from schemas.canonical import canonical_json
from schemas.events import EventRecord
from schemas.time import iso, parse_iso
from server.audit.archive import (
    ArchiveContent,
    ArchiveInvalid,
    verify_archive,
    write_archive,
)
from server.audit.chain import GENESIS, event_hash
from server.audit.export import collect_session, export_session
from server.audit.verify_draw import check_draw
from server.cli import main
from server.domain import evaluation as ev
from server.identity import ServerIdentity, cert_sha256
from tests.support.archive import rechain, resign, write_zip, zip_members
from tests.support.evaluation import Eval, drawn, past_review, scores
from tests.support.hall import Hall, P, start_hall, stop_hall
from tests.support.pki import Pki


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _webm(path: Path, shade: int, frames: int = 10) -> Path:
    """A real WebM file: ``frames`` frames of VP8 video at 64x48."""
    with av.open(str(path), mode="w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 10)
        for i in range(frames):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for n, plane in enumerate(frame.planes):
                value = (shade * 40 + i * 7) % 256 if n == 0 else 128
                plane.update(bytes([value]) * plane.buffer_size)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


async def _record(hall: Hall, sid: str, room: str, index: int, path: Path) -> dict[str, Any]:
    """What the media link does for a finished segment: blob, then ``media_segment`` event."""
    blob = await hall.hub.blobs.put_file(path)
    start = hall.clock.now()
    cmd = ev.RecordSegment(
        actor=ev.SERVER,
        room_id=room,
        index=index,
        sha256=blob.sha256,
        size=blob.size,
        started_at=iso(start),
        ended_at=iso(start + timedelta(seconds=1)),
    )
    records = await hall.hub.service.execute(sid, cmd)
    return {"sha256": blob.sha256, "size": blob.size, "seq": records[0].seq, "room": room}


async def _evaluate(e: Eval, ids: list[str]) -> str:
    """Chair, three stages of sheets, the report signed (one dissent, one refusal)."""
    hall = e.hall
    chair = await past_review(e, ids)
    for i, mid in enumerate(ids):
        await e.sheet(mid, "detailed", scores(mid, 3000 + 100 * i))
    await e.post(chair, "close-stage")
    await e.post(chair, "summarize")
    sha = str((await hall.request("GET", e.path("report"), chair))["sha256"])
    for mid in ids:
        who = e.as_expert(mid)
        if mid == ids[2]:
            await e.post(who, "report", "refuse", body={"reason": ""})
            continue
        # the dissent's reason as typed (the log keeps it trimmed)
        agree, reason = (False, " 价格分计算有误 ") if mid == ids[1] else (True, "")
        doc = EV.report_document(e.sid, mid, sha, agree, reason)
        body = {"agree": agree, "reason": reason, "signature": hall.sign(who, doc)}
        await e.post(who, "report", "sign", body=body)
    assert (await e.view(P(hall, "host")))["status"] == "closed"
    return sha


@dataclass
class World:
    pki: Pki
    folder: Path
    archive: Path
    content: ArchiveContent
    identity: ServerIdentity
    exported_at: datetime
    sid: str
    committee: dict[str, dict[str, Any]]
    experts: dict[str, Any]
    segments: list[dict[str, Any]]
    report_sha: str
    declined: str

    def write(self, content: ArchiveContent, name: str) -> Path:
        return write_archive(
            content,
            self.folder / name,
            signer_key=self.identity.key,
            signer_cert=self.identity.certificate,
            at=self.exported_at,
        )

    def event(self, type_: str) -> EventRecord:
        return next(e for e in self.content.events if e.type == type_)


async def _build(pki: Pki, folder: Path) -> World:
    hall = await start_hall(pki, folder)
    try:
        e, _sup = await drawn(hall, folder)
        host = P(hall, "host")
        declined = sorted(await e.committee())[0]
        await e.post(host, "members", declined, "decline", body={"reason": "出差在外"})
        committee = await e.committee()
        ids = sorted(committee)
        for mid in ids:
            await e.sign_in(mid, committee[mid]["room_id"])
        rooms = sorted({m["room_id"] for m in committee.values()})
        segments = [
            await _record(hall, e.sid, room, i, _webm(folder / f"{room}-{i}.webm", shade=n))
            for n, (room, i) in enumerate([(rooms[0], 0), (rooms[-1], 0), (rooms[0], 1)])
        ]
        report_sha = await _evaluate(e, ids)
        hub = hall.hub
        at = hall.clock.now()
        server_id = hub.settings.server_id
        archive = await export_session(
            hub.store,
            hub.blobs,
            hub.trust,
            hub.identity,
            e.sid,
            folder / "evaluation.zip",
            at,
            server_id=server_id,
        )
        content = await collect_session(
            hub.store, hub.blobs, hub.trust, hub.identity, e.sid, server_id=server_id
        )
        return World(
            pki,
            folder,
            archive,
            content,
            hub.identity,
            at.replace(microsecond=0),
            e.sid,
            committee,
            dict(e.experts),
            segments,
            report_sha,
            declined,
        )
    finally:
        await stop_hall(hall)


@pytest.fixture(scope="module")
def world(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> World:
    return asyncio.run(_build(pki, tmp_path_factory.mktemp("evaluation-archive")))


# --- helpers --------------------------------------------------------------------------------


def _resign(world: World, members: dict[str, bytes]) -> dict[str, bytes]:
    """What someone holding the platform's key could do: a fresh, validly signed manifest."""
    return resign(
        members,
        lambda manifest: world.identity.sign(manifest, world.exported_at),
    )


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


def _refused(path: Path, deep: bool = False) -> str:
    with pytest.raises(ArchiveInvalid) as info:
        verify_archive(path, deep=deep)
    assert info.value.code == "ARCHIVE_INVALID"
    return str(info.value)


def _edited(world: World, edit: Any, **changes: Any) -> ArchiveContent:
    """The archive's content with an edited, re-chained log (what a forger would write)."""
    events = [e.model_dump() for e in world.content.events]
    edit(events)
    return replace(world.content, events=rechain(events), **changes)


def _with_payload(seq: int, **changes: Any) -> Callable[[list[dict[str, Any]]], None]:
    """An edit of the log for ``_edited``: the event ``seq``'s payload with ``changes``."""

    def edit(events: list[dict[str, Any]]) -> None:
        p = events[seq - 1]["payload"]
        events[seq - 1]["payload"] = {**p, **changes}

    return edit


def _names(text: str, seq: int, event_type: str, *words: str) -> None:
    """``text`` points at the log's event ``seq`` (of ``event_type``) and says each of ``words``."""
    assert f"seq {seq} ({event_type})" in text and all(w in text for w in words), text


def _rechain_resigned(world: World, events: list[dict[str, Any]]) -> list[EventRecord]:
    """Re-chained, with every checkpoint re-signed over the new hashes: a forger holding the
    platform's key, editing an event before a checkpoint."""
    prev = GENESIS
    out: list[EventRecord] = []
    for event in events:
        body = {k: v for k, v in event.items() if k not in ("prev_hash", "hash")}
        if body["type"] == "checkpoint":
            p = body["payload"]
            digest = out[p["seq"] - 1].hash
            signed = {"session_id": world.sid, "seq": p["seq"], "hash": digest}
            signed["status"] = p["status"]
            body["payload"] = {
                **p,
                "hash": digest,
                "signature": world.identity.sign_json(signed, parse_iso(body["at"])),
            }
        prev_hash, prev = prev, event_hash(prev, body)
        out.append(EventRecord(**body, prev_hash=prev_hash, hash=prev))
    return out


def _seq(world: World, type_: str, **match: Any) -> int:
    return next(
        e.seq
        for e in world.content.events
        if e.type == type_ and all(e.payload.get(k) == v for k, v in match.items())
    )


def _verify_draw(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str]:
    code = main(["verify-draw", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --- the archive as exported ----------------------------------------------------------------


def test_evaluation_archive_holds_draw_input_report_and_segments(world: World) -> None:
    names = set(zip_members(world.archive))
    pool_blob = world.event("draw_completed").payload["pool_blob"]
    expected = {f"blobs/{pool_blob}", f"blobs/{world.report_sha}"}
    expected |= {f"blobs/{s['sha256']}" for s in world.segments}
    assert {n for n in names if n.startswith("blobs/")} == expected
    assert {"archive.json", "events.jsonl", "keys.json", "report/report.txt"} <= names
    assert not any(n.startswith(("envelopes/", "record/")) for n in names)
    members = zip_members(world.archive)
    draw_input = json.loads(members[f"blobs/{pool_blob}"])
    assert draw_input["format"] == "bidbridge-draw-input" and len(draw_input["pool"]) == 36
    report = json.loads(members[f"blobs/{world.report_sha}"])
    assert report["session_id"] == world.sid
    text = members["report/report.txt"].decode("utf-8")
    assert "评标报告" in text and "价格分计算有误" in text and "视为同意" in text
    # the server's id, which the experts' sign-in documents name
    assert json.loads(members["archive.json"])["server_id"] == "bidbridge"
    # every member's signing certificate is archived, by its DER hash
    for mid in world.committee:
        sha = cert_sha256(world.experts[mid].cert)
        assert f"certificates/{sha}.pem" in names


def test_evaluation_archive_verifies(world: World) -> None:
    report = verify_archive(world.archive)
    assert report.kind == "evaluation" and report.session_id == world.sid
    assert report.events == len(world.content.events)
    assert report.draws_recomputed == 2  # the draw and the replacement of the decliner
    assert report.segments_checked == 3 and report.files_checked == 5
    # manifest + checkpoints + 5 sign-ins + 5 x 3 sheets + report + 4 signed responses
    checkpoints = sum(1 for e in world.content.events if e.type == "checkpoint")
    assert sum(1 for e in world.content.events if e.type == "member_signed_in") == 5
    assert report.signatures_checked == 1 + checkpoints + 5 + 15 + 1 + 4
    assert report.certificates_validated == report.signatures_checked
    deep = verify_archive(world.archive, deep=True)
    assert deep.deep and deep.segments_checked == 3


def test_verify_archive_cli_on_an_evaluation(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify-archive", str(world.archive), "--deep"]) == 0
    out = capsys.readouterr().out
    assert "archive verified" in out and "draws recomputed: 2" in out
    assert "recording segments: 3" in out


def test_verify_draw_says_the_committee_matches(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _verify_draw(world.archive, capsys)
    assert code == 0, out
    assert "the draw recomputes exactly" in out
    result = world.event("draw_completed").payload["result"]
    assert result["seed"] in out
    for mid, m in world.committee.items():
        assert f"{mid}  " in out and m["room_id"] in out
    assert f"{world.declined} -> " in out  # the replacement is recomputed and shown
    assert "fallbacks" in out

    code, out = _verify_draw(world.archive, capsys, "--json")
    assert code == 0
    found = json.loads(out)
    assert found["matches"] is True and found["differences"] == []
    assert found["replacements_checked"] == 1 and found["experts_in_pool"] == 36
    assert {m["expert_id"] for m in found["result"]["committee"]} == set(world.committee)
    summary = check_draw(world.archive).summary()
    assert "5 位专家 experts" in summary and "替换 replacements 1" in summary
    assert found["result"]["seed"] == result["seed"]


def test_verify_draw_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["verify-draw", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "复算专家抽取" in out and "--json" in out and "ARCHIVE" in out


def test_verify_draw_on_an_archive_without_a_draw(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    draft = replace(world.content, events=world.content.events[:1], files={}, report_text=None)
    code, out = _verify_draw(world.write(draft, "draft.zip"), capsys)
    assert code == 2 and "NO_DRAW" in out
    verify_archive(world.folder / "draft.zip")  # a draft evaluation's archive is fine
    code, out = _verify_draw(tmp_path / "absent.zip", capsys)
    assert code == 2 and "absent.zip" in out


# --- tampering ------------------------------------------------------------------------------


def test_a_changed_segment_byte_is_found_and_names_the_segment(
    world: World, tmp_path: Path
) -> None:
    original = zip_members(world.archive)
    seg = world.segments[1]
    name = f"blobs/{seg['sha256']}"
    label = f"recording segment {seg['room']} #0"
    target = tmp_path / "t.zip"
    changed = {**original, name: _flip(original[name], len(original[name]) // 2)}
    message = _refused(write_zip(target, changed))
    assert name in message and label in message, message
    # with a re-signed manifest: the name is no longer the content's hash
    message = _refused(write_zip(target, _resign(world, changed)))
    assert name in message and label in message, message
    # and renamed to its new hash as well: the event names the missing segment
    forged = {k: v for k, v in changed.items() if k != name}
    forged[f"blobs/{_sha(changed[name])}"] = changed[name]
    message = _refused(write_zip(target, _resign(world, forged)))
    assert f"events.jsonl seq {seg['seq']} (media_segment)" in message, message
    assert label in message
    # a segment removed
    removed = {k: v for k, v in original.items() if k != name}
    message = _refused(write_zip(target, _resign(world, removed)))
    _names(message, seg["seq"], "media_segment", label)


def test_a_changed_segment_size_in_the_log_is_named(world: World) -> None:
    seg = world.segments[0]

    def bigger(events: list[dict[str, Any]]) -> None:
        p = events[seg["seq"] - 1]["payload"]
        events[seg["seq"] - 1]["payload"] = {**p, "size": p["size"] + 1}

    message = _refused(world.write(_edited(world, bigger), "size.zip"))
    _names(message, seg["seq"], "media_segment", "size")


def test_a_tampered_pool_input_fails_verify_draw_and_verify_archive(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    completed = world.event("draw_completed")
    pool_blob = completed.payload["pool_blob"]
    name = f"blobs/{pool_blob}"
    original = zip_members(world.archive)
    draw_input = json.loads(original[name])
    # one drawn expert made inactive in the archived pool: the committee cannot be the same
    member = completed.payload["result"]["committee"][0]["expert_id"]
    for row in draw_input["pool"]:
        if row["id"] == member:
            row["status"] = "suspended"
    forged_raw = canonical_json(draw_input)

    in_place = write_zip(tmp_path / "in-place.zip", {**original, name: forged_raw})
    code, out = _verify_draw(in_place, capsys)
    assert code == 1, out
    assert "does NOT recompute" in out and name in out and "pool_blob" in out
    assert "pool_sha256" in out
    message = _refused(in_place)
    assert name in message and "draw input" in message

    # A forger with the platform's key: new input file, log re-chained, manifest re-signed.
    forged_path = tmp_path / "pool.json"
    forged_path.write_bytes(forged_raw)
    new_sha = _sha(forged_raw)
    files = {k: v for k, v in world.content.files.items() if k != pool_blob}
    forgery = _with_payload(completed.seq, pool_blob=new_sha)
    content = _edited(world, forgery, files={**files, new_sha: forged_path})
    forged = world.write(content, "forged-pool.zip")
    message = _refused(forged)
    assert f"events.jsonl seq {completed.seq} (draw_completed)" in message, message
    assert "does not recompute" in message
    code, out = _verify_draw(forged, capsys)
    assert code == 1 and "hash chain" not in out
    _names(out, completed.seq, "draw_completed", "pool_sha256")


def test_a_tampered_server_random_fails_verify_draw_and_verify_archive(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    completed = world.event("draw_completed")
    revealed = completed.payload["server_random"]
    other = ("0" if revealed[0] != "0" else "1") + revealed[1:]
    original = zip_members(world.archive)
    lines = original["events.jsonl"].split(b"\n")
    line = lines[completed.seq - 1]
    assert line.count(revealed.encode()) == 1
    lines[completed.seq - 1] = line.replace(revealed.encode(), other.encode())
    edited = write_zip(tmp_path / "random.zip", {**original, "events.jsonl": b"\n".join(lines)})
    code, out = _verify_draw(edited, capsys)
    assert code == 1, out
    assert "commitment" in out and "hash chain is broken" in out
    assert "events.jsonl" in _refused(edited)
    reveal_other = _with_payload(completed.seq, server_random=other)
    forged = world.write(_edited(world, reveal_other), "forged-random.zip")
    message = _refused(forged)
    assert f"events.jsonl seq {completed.seq} (draw_completed)" in message
    assert "commitment" in message
    code, out = _verify_draw(forged, capsys, "--json")
    found = json.loads(out)
    assert code == 1 and found["matches"] is False
    assert any("commitment" in d for d in found["differences"])


def test_a_changed_sheet_is_named(world: World) -> None:
    seq = _seq(world, "sheet_content", stage="detailed")

    def higher(events: list[dict[str, Any]]) -> None:
        p = events[seq - 1]["payload"]
        content = json.loads(json.dumps(p["content"]))
        content["scores"][0]["points_x100"] += 500
        events[seq - 1]["payload"] = {
            **p,
            "content": content,
            "sha256": _sha(canonical_json(content)),
        }

    message = _refused(world.write(_edited(world, higher), "sheet.zip"))
    assert f"events.jsonl seq {seq} (sheet_content)" in message
    assert "different document" in message


def test_a_response_signed_with_another_certificate_is_named(world: World) -> None:
    mid = sorted(world.committee)[0]
    seq = _seq(world, "report_signed", expert_id=mid)
    event = world.content.events[seq - 1]
    # the same person id, another key: not the certificate the member signed in with
    issued = ca.issue_person(
        world.pki.root_b, name=f"专家{mid}", role="expert", person_id=mid, key_type="ec-p256"
    )
    assert issued.key is not None
    doc = EV.report_document(world.sid, mid, world.report_sha, True, "")
    signature = b64encode(
        sign_document(doc, SoftwareKey(issued.key), issued.certificate, at=parse_iso(event.at))
    )

    def other_key(events: list[dict[str, Any]]) -> None:
        events[seq - 1]["payload"] = {**events[seq - 1]["payload"], "signature": signature}

    content = _edited(
        world,
        other_key,
        certificates=[*world.content.certificates, issued.certificate],
    )
    message = _refused(world.write(content, "response.zip"))
    assert f"events.jsonl seq {seq} (report_signed)" in message
    assert f"signed in with (cert_sha256 {cert_sha256(world.experts[mid].cert)})" in message


def _other_key(world: World, mid: str) -> ca.Issued:
    """A certificate of the same person id with another key (not the member's)."""
    issued = ca.issue_person(
        world.pki.root_b, name=f"专家{mid}", role="expert", person_id=mid, key_type="ec-p256"
    )
    assert issued.key is not None
    return issued


def test_a_sign_in_signed_with_another_key_is_named(world: World) -> None:
    mid = sorted(world.committee)[1]
    seq = _seq(world, "member_signed_in", expert_id=mid)
    event = world.content.events[seq - 1]
    p = event.payload
    assert p["signature"] and p["nonce"]
    issued = _other_key(world, mid)
    doc = EV.sign_in_document("bidbridge", world.sid, p["room_id"], mid, p["nonce"])
    signature = b64encode(
        sign_document(doc, SoftwareKey(issued.key), issued.certificate, at=parse_iso(event.at))
    )
    certificates = [*world.content.certificates, issued.certificate]
    original = cert_sha256(world.experts[mid].cert)
    assert p["cert_sha256"] == original

    def other_key(events: list[dict[str, Any]]) -> None:
        events[seq - 1]["payload"] = {**events[seq - 1]["payload"], "signature": signature}

    content = _edited(world, other_key, certificates=certificates)
    message = _refused(world.write(content, "sign-in.zip"))
    assert f"events.jsonl seq {seq} (member_signed_in)" in message, message
    assert f"the certificate the event records (cert_sha256 {original})" in message

    # cert_sha256 changed to match as well: the member's own signatures no longer fit it
    def other_key_and_hash(events: list[dict[str, Any]]) -> None:
        other_key(events)
        events[seq - 1]["payload"]["cert_sha256"] = cert_sha256(issued.certificate)

    events = [e.model_dump() for e in world.content.events]
    other_key_and_hash(events)
    content = replace(
        world.content, events=_rechain_resigned(world, events), certificates=certificates
    )
    message = _refused(world.write(content, "sign-in-hash.zip"))
    first = _seq(world, "sheet_content", expert_id=mid)
    assert f"events.jsonl seq {first} (sheet_content)" in message, message
    assert "signed in with" in message


def test_a_sign_in_without_its_signature_or_for_another_server_is_named(world: World) -> None:
    mid = sorted(world.committee)[0]
    seq = _seq(world, "member_signed_in", expert_id=mid)
    where = f"events.jsonl seq {seq} (member_signed_in)"

    def unsigned(events: list[dict[str, Any]]) -> None:
        events[seq - 1]["payload"] = {**events[seq - 1]["payload"], "signature": ""}

    message = _refused(world.write(_edited(world, unsigned), "unsigned.zip"))
    assert where in message and "carries no signature" in message, message

    def dropped(events: list[dict[str, Any]]) -> None:
        payload = dict(events[seq - 1]["payload"])
        del payload["signature"]
        events[seq - 1]["payload"] = payload

    message = _refused(world.write(_edited(world, dropped), "dropped.zip"))
    assert where in message and "'signature'" in message, message

    # the signature names the server "bidbridge": an archive saying another server refuses it
    message = _refused(world.write(replace(world.content, server_id="elsewhere"), "other.zip"))
    first = next(e.seq for e in world.content.events if e.type == "member_signed_in")
    assert f"events.jsonl seq {first} (member_signed_in)" in message
    assert "covers a different document" in message
    # and one that does not name its server cannot have its sign-ins checked
    message = _refused(world.write(replace(world.content, server_id=None), "unnamed.zip"))
    _names(message, first, "member_signed_in", "server_id")


def test_a_changed_report_is_named(world: World, tmp_path: Path) -> None:
    original = zip_members(world.archive)
    name = f"blobs/{world.report_sha}"
    changed = {**original, name: original[name].replace(b'"lot_id":"', b'"lot_id":"X', 1)}
    message = _refused(write_zip(tmp_path / "r.zip", _resign(world, changed)))
    assert name in message and "evaluation report" in message


# --- every store ----------------------------------------------------------------------------


async def test_evaluation_archive_on_each_store(
    pki: Pki, tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hall = await start_hall(pki, tmp_path, store_url)
    try:
        e, _sup = await drawn(hall, tmp_path)
        committee = await e.committee()
        room = sorted({m["room_id"] for m in committee.values()})[0]
        # a member who signs in and signs nothing else: the sign-in alone carries the cert
        mid = sorted(committee)[0]
        await e.sign_in(mid, committee[mid]["room_id"])
        await _record(hall, e.sid, room, 0, _webm(tmp_path / "seg.webm", shade=3))
        hub = hall.hub
        out = await export_session(
            hub.store,
            hub.blobs,
            hub.trust,
            hub.identity,
            e.sid,
            tmp_path / "e.zip",
            hall.clock.now(),
        )
    finally:
        await stop_hall(hall)
    report = await asyncio.to_thread(verify_archive, out)
    assert report.kind == "evaluation" and report.draws_recomputed == 1
    assert report.segments_checked == 1
    assert f"certificates/{cert_sha256(e.experts[mid].cert)}.pem" in zip_members(out)
    check = check_draw(out)
    assert check.matches and check.differences == [] and check.session_id == e.sid
