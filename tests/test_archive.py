"""server.audit.archive: export a session's archive and verify it offline; any change is named."""

from __future__ import annotations

import argparse
import hashlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crypto import ca
from crypto.attest import b64encode, sign_document
from crypto.bid import unwrap
from crypto.errors import FileUnreadable, OutputExists
from crypto.keys import SoftwareKey
from schemas.canonical import canonical_json
from schemas.time import iso
from server.audit import cli
from server.audit.archive import (
    ArchiveContent,
    ArchiveInvalid,
    verify_archive,
    write_archive,
)
from tests.support.archive import rechain, resign, write_zip, zip_members
from tests.support.pki import CODE_A, CODE_B, Pki, make_package, seal_as

SESSION = "S-2026-0101-01"


def _key(issued: ca.Issued) -> SoftwareKey:
    assert issued.key is not None
    return SoftwareKey(issued.key)


def _sign(content: bytes, issued: ca.Issued, at: datetime) -> str:
    return b64encode(sign_document(content, _key(issued), issued.certificate, at=at))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class World:
    pki: Pki
    server: ca.Issued
    content: ArchiveContent
    exported_at: datetime
    archive: Path
    folder: Path
    envelope_shas: list[str]

    def write(self, content: ArchiveContent, name: str) -> Path:
        return write_archive(
            content,
            self.folder / name,
            signer_key=_key(self.server),
            signer_cert=self.server.certificate,
            at=self.exported_at,
        )


@pytest.fixture(scope="module")
def world(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> World:
    folder = tmp_path_factory.mktemp("archive")
    server = ca.issue_person(
        pki.root_a, name="平台", role="centre", person_id="PLATFORM1", key_type="ec-p256"
    )
    host = ca.issue_person(
        pki.root_b, name="主持人", role="host", person_id="HOST1", key_type="ec-p256"
    )
    supervisor = ca.issue_person(
        pki.sub_b, name="监督人", role="supervisor", person_id="SUP1", key_type="ec-p256"
    )
    start = datetime.now(UTC)
    seq_at = [start + timedelta(seconds=i) for i in range(20)]

    events: list[dict[str, Any]] = []

    def add(type_: str, actor: str, payload: dict[str, Any]) -> None:
        seq = len(events) + 1
        events.append(
            {
                "session_id": SESSION,
                "seq": seq,
                "at": iso(seq_at[seq]),
                "type": type_,
                "actor": actor,
                "audience": ["all"],
                "payload": payload,
            }
        )

    add("session_created", "host:HOST1", {"lot_id": "LOT-01", "deadline": iso(seq_at[10])})
    bids = []
    for i, (pair, code) in enumerate(((pki.bidder_ec, CODE_B), (pki.bidder_rsa, CODE_A))):
        pkg = make_package(folder / f"pkg{i}", code)
        sealed = seal_as(pair, pkg, folder / f"bid{i}.p7m", now=start)
        cek = unwrap(sealed.path, _key(pair.encryption), pair.encryption.certificate)
        bids.append((sealed, cek, code))
        at = seq_at[len(events) + 1]
        receipt = {
            "receipt_id": f"R-{i + 1}",
            "session_id": SESSION,
            "lot_id": "LOT-01",
            "bidder": code,
            "envelope_sha256": sealed.sha256,
            "size": sealed.size,
            "received_at": iso(at),
        }
        add(
            "bid_uploaded",
            f"bidder:{code}",
            {
                "bidder": code,
                "receipt": receipt,
                "replaces": None,
                "receipt_signature": _sign(canonical_json(receipt), server, at),
            },
        )
    # A checkpoint over the last upload (seq 3), signed by the platform.
    head = rechain(events)[-1]
    at = seq_at[len(events) + 1]
    status = {"session_id": SESSION, "seq": head.seq, "hash": head.hash, "status": "opening"}
    add(
        "checkpoint",
        "server",
        {
            **{k: status[k] for k in ("seq", "hash", "status")},
            "signature": _sign(canonical_json(status), server, at),
        },
    )
    for sealed, cek, code in bids:
        add(
            "bid_decrypted",
            f"bidder:{code}",
            {
                "bidder": code,
                "envelope_sha256": sealed.sha256,
                "cek_sha256": _sha(cek),
                "summary": sealed.summary.model_dump(mode="json"),
                "via": "bidder",
            },
        )
    table = {
        "lot_id": "LOT-01",
        "rows": [{"bidder": code, "price_fen": s.summary.price_fen} for s, _, code in bids],
    }
    add("table_published", "server", {"table": table, "table_sha256": _sha(canonical_json(table))})
    add(
        "table_confirmed",
        f"bidder:{CODE_B}",
        {
            "bidder": CODE_B,
            "table_sha256": _sha(canonical_json(table)),
            "signature": _sign(
                canonical_json(table), pki.bidder_ec.signing, seq_at[len(events) + 1]
            ),
        },
    )
    record = canonical_json({"session_id": SESSION, "table": table, "bids": 2})
    add(
        "record_generated",
        "server",
        {
            "record_sha256": _sha(record),
            "signature": _sign(record, server, seq_at[len(events) + 1]),
        },
    )
    for role, person, account in ((("host", host, "HOST1")), ("supervisor", supervisor, "SUP1")):
        add(
            "record_signed",
            f"{role}:{account}",
            {
                "role": role,
                "account": account,
                "signature": _sign(record, person, seq_at[len(events) + 1]),
            },
        )
    add("session_closed", "host:HOST1", {})

    pairs = (pki.bidder_ec, pki.bidder_rsa)
    content = ArchiveContent(
        session_id=SESSION,
        events=rechain(events),
        envelopes={s.sha256: s.path for s, _, _ in bids},
        keys={s.sha256: cek.hex() for s, cek, _ in bids},
        trust_roots=[pki.root_a.certificate, pki.root_b.certificate],
        trust_intermediates=[pki.sub_b.certificate],
        crls=[pki.crl(pki.root_a), pki.crl(pki.root_b), pki.crl(pki.sub_b)],
        certificates=[
            server.certificate,
            host.certificate,
            supervisor.certificate,
            *(p.signing.certificate for p in pairs),
            *(p.encryption.certificate for p in pairs),
        ],
        record_json=record,
        record_text="开标记录\n标段 LOT-01：2 家投标人\n".encode(),
    )
    w = World(
        pki, server, content, seq_at[19], folder / "unused", folder, [s.sha256 for s, _, _ in bids]
    )
    w.archive = w.write(content, "session.zip")
    return w


# --- tampering helpers ----------------------------------------------------------------------


def _resign(world: World, members: dict[str, bytes]) -> dict[str, bytes]:
    """What someone holding the platform's key could do: a fresh, validly signed manifest."""
    return resign(
        members,
        lambda manifest: sign_document(
            manifest, _key(world.server), world.server.certificate, at=world.exported_at
        ),
    )


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0x01]) + data[pos + 1 :]


def _refused(path: Path) -> str:
    with pytest.raises(ArchiveInvalid) as info:
        verify_archive(path)
    assert info.value.code == "ARCHIVE_INVALID"
    return str(info.value)


def _lines(members: dict[str, bytes]) -> list[bytes]:
    return members["events.jsonl"].split(b"\n")[:-1]


def _events_member(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


# --- tests ----------------------------------------------------------------------------------


def test_archive_verifies(world: World) -> None:
    report = verify_archive(world.archive)
    assert report.session_id == SESSION
    assert report.events == len(world.content.events) == 12
    assert report.head_hash == world.content.events[-1].hash
    assert report.bids_decrypted == 2
    # manifest, 2 receipts, checkpoint, 2 bids, confirmation, record, host, supervisor
    assert report.signatures_checked == 10
    assert report.certificates_validated == 10
    assert report.anchors == "archive"
    assert not report.deep
    names = set(zip_members(world.archive))
    assert {
        "archive.json",
        "events.jsonl",
        "keys.json",
        "manifest.json",
        "manifest.p7s",
        "record/record.json",
        "record/record.txt",
    } <= names
    assert {f"envelopes/{sha}.p7m" for sha in world.envelope_shas} <= names


def test_archive_deep_verification_decrypts_and_compares_summaries(world: World) -> None:
    report = verify_archive(world.archive, deep=True)
    assert report.deep and report.bids_decrypted == 2


def test_archive_verifies_with_given_anchors(world: World) -> None:
    roots = [world.pki.root_a.certificate, world.pki.root_b.certificate]
    report = verify_archive(world.archive, trust_roots=roots)
    assert report.anchors == "given"
    # Anchors that did not issue the platform's certificate: the archive is not authentic.
    stranger = ca.create_root_ca("Stranger Root", organization="Stranger", key_type="ec-p256")
    with pytest.raises(ArchiveInvalid) as info:
        verify_archive(world.archive, trust_roots=[stranger.certificate])
    assert "manifest.p7s" in str(info.value)
    assert "CERT_UNKNOWN_ISSUER" in str(info.value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bidbridge")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_verify_archive_cli_prints_report(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _parser().parse_args(["verify-archive", str(world.archive)])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert "archive verified" in out and SESSION in out
    assert "events: 12" in out and "integrity, not authenticity" in out

    trust = tmp_path / "trust"
    trust.mkdir()
    for name, cert in (("a.pem", world.pki.root_a), ("b.pem", world.pki.root_b)):
        (trust / name).write_bytes(cert.certificate.public_bytes(serialization.Encoding.PEM))
    args = _parser().parse_args(["verify-archive", str(world.archive), "--trust", str(trust)])
    assert args.handler(args) == 0
    assert "the given roots" in capsys.readouterr().out

    bad = write_zip(tmp_path / "bad.zip", {**zip_members(world.archive), "extra.txt": b"x"})
    args = _parser().parse_args(["verify-archive", str(bad), "--deep"])
    with pytest.raises(ArchiveInvalid, match=r"extra\.txt"):
        args.handler(args)


def test_verify_archive_help_is_bilingual(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["verify-archive", "--help"])
    out = capsys.readouterr().out
    assert "离线校验" in out and "--trust" in out and "--deep" in out


def test_any_changed_byte_is_found_and_named(world: World, tmp_path: Path) -> None:
    original = zip_members(world.archive)
    target = tmp_path / "t.zip"
    for name, data in original.items():
        for pos in {0, len(data) // 2, len(data) - 2}:
            changed = {**original, name: _flip(data, pos)}
            message = _refused(write_zip(target, changed))
            assert name in message, (name, pos, message)
            if name in ("manifest.json", "manifest.p7s", "record/record.txt"):
                continue
            # With a re-signed manifest the change must still be found, by a deeper check.
            message = _refused(write_zip(target, _resign(world, changed)))
            assert name in message or "events.jsonl seq" in message, (name, pos, message)

    lines = _lines(original)
    # A payload byte of the first upload (seq 2), and a byte of the hash of seq 5.
    for seq, marker in ((2, b'"lot_id":"LOT-'), (5, b'"hash":"')):
        line = lines[seq - 1]
        pos = line.index(marker) + len(marker) + 1
        changed_lines = [*lines[: seq - 1], _flip(line, pos), *lines[seq:]]
        changed = {**original, "events.jsonl": _events_member(changed_lines)}
        assert "events.jsonl" in _refused(write_zip(target, changed))
        message = _refused(write_zip(target, _resign(world, changed)))
        assert f"events.jsonl seq {seq}" in message or f"line {seq} (seq {seq})" in message


def test_event_log_edits_are_named(world: World, tmp_path: Path) -> None:
    original = zip_members(world.archive)
    lines = _lines(original)
    target = tmp_path / "t.zip"

    def refused_resigned(new_lines: list[bytes]) -> str:
        changed = {**original, "events.jsonl": _events_member(new_lines)}
        assert "events.jsonl" in _refused(write_zip(target, changed))
        return _refused(write_zip(target, _resign(world, changed)))

    message = refused_resigned([*lines[:2], *lines[3:]])  # seq 3 dropped
    assert "events.jsonl seq 4" in message and "expected 3" in message
    message = refused_resigned([*lines[:5], lines[6], lines[5], *lines[7:]])  # 6 and 7 swapped
    assert "events.jsonl seq 7" in message and "expected 6" in message
    message = refused_resigned(lines[:-1])  # the last event dropped: head no longer matches
    assert "archive.json" in message and "head" in message


def _rebuilt(world: World, edit: Callable[[list[dict[str, Any]]], None], name: str) -> Path:
    """The archive re-exported (validly signed) from an edited, re-chained event log."""
    events = [e.model_dump() for e in world.content.events]
    edit(events)
    return world.write(replace(world.content, events=rechain(events)), name)


def test_receipt_signed_by_another_key_is_named(world: World) -> None:
    receipt = world.content.events[1].payload["receipt"]
    at = datetime.fromisoformat(world.content.events[1].at)

    def by_bidder(events: list[dict[str, Any]]) -> None:
        forged = _sign(canonical_json(receipt), world.pki.bidder_ec.signing, at)
        events[1]["payload"] = {**events[1]["payload"], "receipt_signature": forged}

    message = _refused(_rebuilt(world, by_bidder, "forged-receipt.zip"))
    assert "events.jsonl seq 2 (bid_uploaded)" in message and "centre" in message

    def by_stranger(events: list[dict[str, Any]]) -> None:
        other = ca.issue_person(
            world.pki.root_a, name="平台", role="centre", person_id="P2", key_type="ec-p256"
        )
        forged = _sign(canonical_json(receipt), other, at)
        events[1]["payload"] = {**events[1]["payload"], "receipt_signature": forged}

    message = _refused(_rebuilt(world, by_stranger, "stranger-receipt.zip"))
    assert "events.jsonl seq 2 (bid_uploaded)" in message and "certificates/" in message


def test_wrong_decryption_key_and_wrong_summary_are_named(world: World) -> None:
    sha = world.envelope_shas[0]

    content = replace(world.content, keys={**world.content.keys, sha: "00" * 32})
    message = _refused(world.write(content, "wrong-key.zip"))
    assert "events.jsonl seq 5 (bid_decrypted)" in message and "cek_sha256" in message

    def other_price(events: list[dict[str, Any]]) -> None:
        summary = {**events[4]["payload"]["summary"], "price_fen": 1}
        events[4]["payload"] = {**events[4]["payload"], "summary": summary}

    path = _rebuilt(world, other_price, "wrong-summary.zip")
    verify_archive(path)  # the summary is only compared when the packages are decrypted
    with pytest.raises(ArchiveInvalid, match=r"seq 5 \(bid_decrypted\).*summary"):
        verify_archive(path, deep=True)


def test_removed_envelope_and_added_member_are_named(world: World, tmp_path: Path) -> None:
    original = zip_members(world.archive)
    target = tmp_path / "t.zip"
    name = f"envelopes/{world.envelope_shas[1]}.p7m"
    removed = {k: v for k, v in original.items() if k != name}
    assert name in _refused(write_zip(target, removed))
    message = _refused(write_zip(target, _resign(world, removed)))
    assert "events.jsonl seq 3 (bid_uploaded)" in message and name in message

    for extra in ("notes.txt", "../evil.json", f"certificates/{'0' * 64}.pem"):
        message = _refused(write_zip(target, {**original, extra: b"x"}))
        assert extra in message
    duplicate = tmp_path / "dup.zip"
    write_zip(duplicate, original)
    with pytest.warns(UserWarning), zipfile.ZipFile(duplicate, "a") as zf:
        zf.writestr("keys.json", b"{}")
    assert "keys.json" in _refused(duplicate)
    # An envelope nobody uploaded, even with a valid manifest.
    stray = f"envelopes/{_sha(b'stray')}.p7m"
    message = _refused(write_zip(target, _resign(world, {**original, stray: b"stray"})))
    assert stray in message


def test_not_a_zip_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(b"PK\x03\x04 not really")
    assert "x.zip" in _refused(path)
    with pytest.raises(FileUnreadable):
        verify_archive(tmp_path / "absent.zip")


def test_revoked_signer_at_the_time_of_use_is_named(world: World, tmp_path: Path) -> None:
    # The host's certificate was revoked before the record was signed.
    host_cert = next(c for c in world.content.certificates if ca.role_of(c) == "host")
    revoked_at = datetime.fromisoformat(world.content.events[0].at)
    crl_b = world.pki.crl(
        world.pki.root_b, [ca.RevokedEntry(host_cert.serial_number, revoked_at)], number=2
    )
    crls = [c for c in world.content.crls if c.issuer != crl_b.issuer] + [crl_b]
    message = _refused(world.write(replace(world.content, crls=crls), "revoked.zip"))
    assert "events.jsonl seq 10 (record_signed)" in message and "CERT_REVOKED" in message


def test_archive_does_not_overwrite(world: World) -> None:
    before = world.archive.read_bytes()
    with pytest.raises(OutputExists) as info:
        world.write(world.content, world.archive.name)
    assert info.value.code == "OUTPUT_EXISTS"
    assert world.archive.read_bytes() == before
    assert not [p for p in world.folder.iterdir() if p.name.endswith(".part")]


def test_certificate_members_are_named_by_their_der_hash(world: World) -> None:
    # Every certificate member is one canonical PEM named by its DER's SHA-256.
    for name, data in zip_members(world.archive).items():
        if name.startswith(("certificates/", "trust/roots/", "trust/intermediates/")):
            cert = x509.load_pem_x509_certificate(data)
            assert name.endswith(_sha(cert.public_bytes(serialization.Encoding.DER)) + ".pem")
