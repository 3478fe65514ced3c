"""The archive's layout: member names, limits, encodings, the content and report types."""

# A session's archive (DESIGN.md section 8) is a signed ZIP. Every member but the manifest and
# its signature is listed in ``manifest.json`` with its SHA-256 and size; ``manifest.p7s`` is
# the platform's signature over the manifest::
#
#     archive.json                  format, version, session, export instant, head of the log,
#                                   the server's id (``server_id``: what sign-in documents name)
#     events.jsonl                  the whole event log, one canonical JSON event per line
#     keys.json                     content-encryption keys of the decrypted bids (openings)
#     envelopes/<sha256>.p7m        sealed bids named by ``bid_uploaded`` receipts (openings)
#     blobs/<sha256>                files the log names by hash (evaluations): the draw input
#                                   (``draw_completed.pool_blob``, canonical JSON
#                                   ``{"format": "bidbridge-draw-input", "pool": [...],
#                                   "sites": [...]}``), the report (``report_generated.sha256``,
#                                   canonical JSON) and every recording segment
#                                   (``media_segment.sha256``, WebM); the event says which is which
#     certificates/<sha256>.pem     the parties' certificates (named by the DER's SHA-256)
#     trust/roots|intermediates/<sha256>.pem, trust/crls/<sha256>.crl
#     record/record.json|txt        the opening record and its readable text (openings)
#     report/report.txt             the evaluation report's readable text (evaluations)
#     manifest.json, manifest.p7s

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crypto.errors import BidBridgeError
from schemas.events import EventRecord

FORMAT = "bidbridge-archive"
VERSION = 1

ARCHIVE_JSON = "archive.json"
EVENTS = "events.jsonl"
KEYS = "keys.json"
MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.p7s"
RECORD_JSON = "record/record.json"
RECORD_TEXT = "record/record.txt"
REPORT_TEXT = "report/report.txt"
BLOBS = "blobs/"
ENVELOPES = "envelopes/"
CERTIFICATES = "certificates/"
TRUST_ROOTS = "trust/roots/"
TRUST_INTERMEDIATES = "trust/intermediates/"
TRUST_CRLS = "trust/crls/"
DRAW_INPUT_FORMAT = "bidbridge-draw-input"

FIXED_MEMBERS = frozenset(
    {ARCHIVE_JSON, EVENTS, KEYS, MANIFEST, MANIFEST_SIG, RECORD_JSON, RECORD_TEXT, REPORT_TEXT}
)
"""The members with a fixed name; every other member is named by its content's hash."""
REQUIRED_MEMBERS = (ARCHIVE_JSON, EVENTS, KEYS)
HASHED_MEMBER = re.compile(
    r"^(envelopes/[0-9a-f]{64}\.p7m|trust/roots/[0-9a-f]{64}\.pem|"
    r"trust/intermediates/[0-9a-f]{64}\.pem|trust/crls/[0-9a-f]{64}\.crl|"
    r"certificates/[0-9a-f]{64}\.pem|blobs/[0-9a-f]{64})$"
)
HEX64 = re.compile(r"^[0-9a-f]{64}$")

MAX_IN_MEMORY = 256 * 1024 * 1024
"""Members other than envelopes are read into memory; larger ones are refused."""
MAX_MANIFEST = 16 * 1024 * 1024
CHUNK = 1024 * 1024
"""Envelopes and blobs are copied in chunks of this size."""


def envelope_member(sha: str) -> str:
    """The member name of the sealed bid whose SHA-256 is ``sha``."""
    return f"{ENVELOPES}{sha}.p7m"


def envelope_sha(name: str) -> str:
    """The SHA-256 an ``envelopes/`` member is named by."""
    return name[len(ENVELOPES) : -len(".p7m")]


def blob_member(sha: str) -> str:
    """The member name of the file whose SHA-256 is ``sha``."""
    return f"{BLOBS}{sha}"


def blob_sha(name: str) -> str:
    """The SHA-256 a ``blobs/`` member is named by."""
    return name[len(BLOBS) :]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_sha256(cert: x509.Certificate) -> str:
    """What names a certificate in the archive (and in events): its DER's SHA-256."""
    return sha256_hex(cert_der(cert))


def crl_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


class ArchiveInvalid(BidBridgeError):
    """The archive does not verify; the detail names the first member or event that fails."""

    code = "ARCHIVE_INVALID"
    zh = "存档校验失败"
    en = "the archive does not verify"


class ArchiveExportFailed(BidBridgeError):
    code = "ARCHIVE_EXPORT_FAILED"
    zh = "存档导出失败：内容不完整或不一致"
    en = "the archive could not be exported: its content is incomplete or inconsistent"


@dataclass
class ArchiveContent:
    """Everything a session's archive holds (the input of :func:`write_archive`)."""

    session_id: str
    events: list[EventRecord]
    envelopes: dict[str, Path] = field(default_factory=dict)
    """Sealed bid files by SHA-256 hex: every envelope a ``bid_uploaded`` event names."""
    keys: dict[str, str] = field(default_factory=dict)
    """Content-encryption keys (hex) by envelope SHA-256, for the decrypted bids."""
    trust_roots: list[x509.Certificate] = field(default_factory=list)
    trust_intermediates: list[x509.Certificate] = field(default_factory=list)
    crls: list[x509.CertificateRevocationList] = field(default_factory=list)
    certificates: list[x509.Certificate] = field(default_factory=list)
    """The parties' certificates: bidders' signing/encryption, host, supervisor, server."""
    record_json: bytes | None = None
    record_text: bytes | None = None
    files: dict[str, Path] = field(default_factory=dict)
    """Content-addressed files by SHA-256 hex, written as ``blobs/<sha256>``: every file an
    event names by its hash (:func:`blob_references`: an evaluation's draw input, its report and
    its recording segments)."""
    report_text: bytes | None = None
    """An evaluation report's readable text (``report/report.txt``)."""
    server_id: str | None = None
    """The server's id (``Settings.server_id``), which the experts' sign-in documents name
    (:func:`schemas.evaluation.sign_in_document`); written to ``archive.json`` when given."""


@dataclass(frozen=True)
class BlobRef:
    """A file an event names by its SHA-256 (archived as ``blobs/<sha256>``)."""

    sha256: str
    seq: int
    kind: Literal["draw_input", "report", "segment"]
    label: str
    """What the file is, for messages (Chinese / English)."""
    required: bool
    """False for a segment whose recording failed (``error``): its file may not exist."""


def blob_references(events: Sequence[EventRecord]) -> list[BlobRef]:
    """The files the log names by hash, in log order (malformed payloads are skipped here; the
    verifier names them)."""
    refs: list[BlobRef] = []
    for e in events:
        p = e.payload
        if e.type == "draw_completed":
            sha = p.get("pool_blob")
            if isinstance(sha, str) and HEX64.match(sha):
                refs.append(BlobRef(sha, e.seq, "draw_input", "抽取输入 / draw input", True))
        elif e.type == "report_generated":
            sha = p.get("sha256")
            if isinstance(sha, str) and HEX64.match(sha):
                refs.append(BlobRef(sha, e.seq, "report", "评标报告 / evaluation report", True))
        elif e.type == "media_segment":
            sha = p.get("sha256")
            if isinstance(sha, str) and HEX64.match(sha) and sha != "0" * 64:
                refs.append(
                    BlobRef(
                        sha,
                        e.seq,
                        "segment",
                        _segment_label(p),
                        p.get("error") is None,
                    )
                )
    return refs


def _segment_label(payload: Any) -> str:
    room = payload.get("room_id") if isinstance(payload, dict) else None
    index = payload.get("index") if isinstance(payload, dict) else None
    return f"录像片段 / recording segment {room} #{index}"


@dataclass(frozen=True)
class ArchiveReport:
    """What :func:`verify_archive` checked."""

    session_id: str
    exported_at: str
    events: int
    head_hash: str
    bids_decrypted: int
    signatures_checked: int
    certificates_validated: int
    anchors: Literal["given", "archive"]
    """``archive``: the archive's own roots were the anchors, which proves integrity only."""
    deep: bool
    kind: str = "opening"
    """``opening`` or ``evaluation`` (the ``kind`` of the first event; openings have none)."""
    draws_recomputed: int = 0
    """Expert draws (and replacements) recomputed from the archived input and found equal."""
    segments_checked: int = 0
    """Recording segments present with the hash and size their ``media_segment`` event names."""
    files_checked: int = 0
    """``blobs/`` members checked against the events that name them."""
