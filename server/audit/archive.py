"""A session's archive (DESIGN.md section 8): export as a signed ZIP, verify offline.

Layout (every member but the manifest and its signature is listed in ``manifest.json`` with its
SHA-256 and size; ``manifest.p7s`` is the platform's signature over the manifest)::

    archive.json                  format, version, session, export instant, head of the log,
                                  the server's id (``server_id``: what sign-in documents name)
    events.jsonl                  the whole event log, one canonical JSON event per line
    keys.json                     content-encryption keys of the decrypted bids (openings)
    envelopes/<sha256>.p7m        sealed bids named by ``bid_uploaded`` receipts (openings)
    blobs/<sha256>                files the log names by hash (evaluations): the draw input
                                  (``draw_completed.pool_blob``, canonical JSON
                                  ``{"format": "bidbridge-draw-input", "pool": [...],
                                  "sites": [...]}``), the report (``report_generated.sha256``,
                                  canonical JSON) and every recording segment
                                  (``media_segment.sha256``, WebM); the event says which is which
    certificates/<sha256>.pem     the parties' certificates (named by the DER's SHA-256)
    trust/roots|intermediates/<sha256>.pem, trust/crls/<sha256>.crl
    record/record.json|txt        the opening record and its readable text (openings)
    report/report.txt             the evaluation report's readable text (evaluations)
    manifest.json, manifest.p7s
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, NoReturn

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from crypto.attest import SignedDocument, b64decode, read_document, sign_document
from crypto.bid import decrypt_with_key, verify_envelope
from crypto.ca import credit_code_of, role_of
from crypto.errors import BidBridgeError, FileUnreadable, OutputExists
from crypto.keys import PrivateKeyHandle
from crypto.trust import Purpose, TrustStore
from schemas.canonical import canonical_json
from schemas.evaluation import report_document, sheet_document, sign_in_document
from schemas.events import EventRecord
from schemas.experts import DrawRequest, DrawResult, Site
from schemas.time import iso, parse_iso
from server.audit.chain import GENESIS, event_hash
from server.domain import draw as D
from server.domain.errors import Refusal

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
DRAW_INPUT_FORMAT = "bidbridge-draw-input"

_FIXED = frozenset(
    {ARCHIVE_JSON, EVENTS, KEYS, MANIFEST, MANIFEST_SIG, RECORD_JSON, RECORD_TEXT, REPORT_TEXT}
)
_REQUIRED = (ARCHIVE_JSON, EVENTS, KEYS)
_HASHED = re.compile(
    r"^(envelopes/[0-9a-f]{64}\.p7m|trust/roots/[0-9a-f]{64}\.pem|"
    r"trust/intermediates/[0-9a-f]{64}\.pem|trust/crls/[0-9a-f]{64}\.crl|"
    r"certificates/[0-9a-f]{64}\.pem|blobs/[0-9a-f]{64})$"
)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")

MAX_IN_MEMORY = 256 * 1024 * 1024
"""Members other than envelopes are read into memory; larger ones are refused."""
MAX_MANIFEST = 16 * 1024 * 1024
_CHUNK = 1024 * 1024
_SERVER_ROLE = "centre"
_RECORD_ROLES = ("host", "supervisor")


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
            if isinstance(sha, str) and _HEX64.match(sha):
                refs.append(BlobRef(sha, e.seq, "draw_input", "抽取输入 / draw input", True))
        elif e.type == "report_generated":
            sha = p.get("sha256")
            if isinstance(sha, str) and _HEX64.match(sha):
                refs.append(BlobRef(sha, e.seq, "report", "评标报告 / evaluation report", True))
        elif e.type == "media_segment":
            sha = p.get("sha256")
            if isinstance(sha, str) and _HEX64.match(sha) and sha != "0" * 64:
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


# --- the expert draw ---------------------------------------------------------------------------


def read_draw_input(raw: bytes) -> tuple[list[dict[str, Any]], list[Site]]:
    """The archived draw input: the pool snapshot rows and the sites (``ValueError`` if it is
    not a ``bidbridge-draw-input`` document)."""
    value = json.loads(raw.decode("utf-8"))
    if not isinstance(value, dict) or value.get("format") != DRAW_INPUT_FORMAT:
        raise ValueError(f"不是 {DRAW_INPUT_FORMAT} 文档 / not a {DRAW_INPUT_FORMAT} document")
    pool, sites = value.get("pool"), value.get("sites")
    if not isinstance(pool, list) or not all(isinstance(r, dict) for r in pool):
        raise ValueError("pool 须为对象列表 / pool must be a list of objects")
    if not isinstance(sites, list):
        raise ValueError("sites 须为列表 / sites must be a list")
    return pool, [Site.model_validate(x) for x in sites]


def _validation(what: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(x) for x in first.get("loc", ()))
    return f"{what}: 格式错误 / malformed ({loc}: {first.get('msg', '')})"


def draw_differences(
    pool: Sequence[Mapping[str, Any]],
    sites: Sequence[Site],
    *,
    session_id: str,
    commitment: str | None,
    entropy: Mapping[str, str],
    server_random: Any,
    request: Any,
    claimed: Any,
) -> list[str]:
    """Every way a recorded draw differs from its recomputation from the archive; ``[]``: equal.

    ``commitment`` is the one published before the draw (``draw_committed``), ``entropy`` the
    supervisor's and the host's values (``draw_entropy``, hex), ``server_random``, ``request``
    and ``claimed`` what ``draw_completed`` (or, with its replacements, ``member_replaced``)
    recorded. The recomputation is :func:`server.domain.draw.verify`.
    """
    diffs: list[str] = []
    try:
        revealed = bytes.fromhex(server_random) if isinstance(server_random, str) else None
    except ValueError:
        revealed = None
    if revealed is None:
        return ["server_random: 不是十六进制 / not hex"]
    if commitment is None:
        diffs.append(
            "draw_committed: 抽取前没有公布承诺 / no commitment was published before the draw"
        )
    else:
        try:
            opened = D.commitment(revealed)
        except Refusal as refusal:
            return [*diffs, f"server_random: {refusal.line()}"]
        if opened != commitment:
            diffs.append(
                "commitment: 揭示的服务器随机数与抽取前公布的承诺不符 / the revealed server "
                f"random does not open the commitment published before the draw ({commitment})"
            )
    values: dict[str, bytes] = {}
    for role in ("supervisor", "host"):
        value = entropy.get(role)
        try:
            values[role] = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            values[role] = b""
        if not values[role]:
            diffs.append(f"draw_entropy: 缺少 {role} 的随机数 / no valid {role} entropy")
    try:
        req = DrawRequest.model_validate(request)
    except ValidationError as exc:
        diffs.append(_validation("request", exc))
        req = None
    try:
        result = DrawResult.model_validate(claimed)
    except ValidationError as exc:
        diffs.append(_validation("result", exc))
        result = None
    if req is None or result is None or len(values) != 2 or not all(values.values()):
        return diffs
    for what, sid in (("request", req.session_id), ("result", result.session_id)):
        if sid != session_id:
            diffs.append(
                f"{what}.session_id: {sid!r} 不是本会话 / is not this session ({session_id!r})"
            )
    found = D.verify(pool, sites, req, revealed, values["supervisor"], values["host"], result)
    diffs.extend(f"复算不符 / recomputed differently: {d}" for d in found)
    return diffs


# --- writing ---------------------------------------------------------------------------------


def _cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _crl_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zip_time(at: datetime) -> tuple[int, int, int, int, int, int]:
    t = at.astimezone(UTC)
    if t.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (t.year, t.month, t.day, t.hour, t.minute, t.second)


def _check_content(content: ArchiveContent) -> None:
    def fail(detail: str) -> NoReturn:
        raise ArchiveExportFailed(detail)

    for i, event in enumerate(content.events, start=1):
        if event.session_id != content.session_id:
            fail(f"event seq {event.seq}: session {event.session_id} != {content.session_id}")
        if event.seq != i:
            fail(f"event seq {event.seq}: expected seq {i} (the whole log, from 1)")
    referenced: set[str] = set()
    for event in content.events:
        if event.type == "bid_uploaded":
            receipt = event.payload.get("receipt") or {}
            sha = receipt.get("envelope_sha256")
            if sha not in content.envelopes:
                fail(f"event seq {event.seq}: 缺少信封文件 / envelope {sha} not supplied")
            referenced.add(sha)
    for sha in content.envelopes:
        if not _HEX64.match(sha):
            fail(f"envelope key {sha!r} is not a SHA-256 hex")
        if sha not in referenced:
            fail(f"envelope {sha} is not named by any bid_uploaded event")
    for sha, cek in content.keys.items():
        if sha not in content.envelopes:
            fail(f"key for envelope {sha}: the envelope is not in the archive")
        try:
            bytes.fromhex(cek)
        except ValueError:
            fail(f"key for envelope {sha} is not hex")
    named: set[str] = set()
    for ref in blob_references(content.events):
        named.add(ref.sha256)
        if ref.required and ref.sha256 not in content.files:
            fail(f"event seq {ref.seq}: 缺少文件 / {ref.label} {ref.sha256} not supplied")
    for sha in content.files:
        if not _HEX64.match(sha):
            fail(f"file key {sha!r} is not a SHA-256 hex")
        if sha not in named:
            fail(f"file {sha} is not named by any event")


class _ZipWriter:
    def __init__(self, zf: zipfile.ZipFile, date_time: tuple[int, int, int, int, int, int]):
        self.zf = zf
        self.date_time = date_time
        self.files: dict[str, dict[str, Any]] = {}

    def _info(self, name: str, compress: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, self.date_time)
        info.compress_type = compress
        info.external_attr = 0o644 << 16
        return info

    def add(self, name: str, data: bytes, *, listed: bool = True) -> None:
        self.zf.writestr(self._info(name, zipfile.ZIP_DEFLATED), data)
        if listed:
            self.files[name] = {"sha256": _sha(data), "size": len(data)}

    def add_file(self, name: str, path: Path, expected_sha: str) -> None:
        h = hashlib.sha256()
        size = 0
        info = self._info(name, zipfile.ZIP_STORED)
        with path.open("rb") as src, self.zf.open(info, "w", force_zip64=True) as dst:
            while chunk := src.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        if h.hexdigest() != expected_sha:
            raise ArchiveExportFailed(
                f"{path}: SHA-256 {h.hexdigest()} != {expected_sha} (文件已变 / the file changed)"
            )
        self.files[name] = {"sha256": expected_sha, "size": size}


def _place(tmp: str, out: Path) -> None:
    """Move the finished file into place without ever replacing an existing ``out``."""
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise OutputExists(str(out)) from None
    except OSError:  # no hard links here: check, then rename
        if out.exists():
            raise OutputExists(str(out)) from None
        os.replace(tmp, out)
    else:
        os.unlink(tmp)


def write_archive(
    content: ArchiveContent,
    out: Path,
    *,
    signer_key: PrivateKeyHandle,
    signer_cert: x509.Certificate,
    at: datetime,
    chain: Sequence[x509.Certificate] = (),
) -> Path:
    """Write the archive ZIP to ``out`` (atomically; an existing ``out`` is never replaced).

    ``manifest.json`` lists every other member with its SHA-256 and size; ``manifest.p7s`` is
    the server's signature over it (``signer_key`` / ``signer_cert``, the platform certificate).
    """
    out = Path(out)
    if out.exists():
        raise OutputExists(str(out))
    _check_content(content)
    if content.server_id is not None and not content.server_id:
        raise ArchiveExportFailed("server_id: 不能为空 / must not be empty")
    # Whole seconds: the signature's signing time (UTCTime) must equal ``exported_at``.
    at = at.astimezone(UTC).replace(microsecond=0)
    events = content.events
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "w+b") as f:
            with zipfile.ZipFile(f, "w", allowZip64=True) as zf:
                w = _ZipWriter(zf, _zip_time(at))
                head = events[-1] if events else None
                description: dict[str, Any] = {
                    "format": FORMAT,
                    "version": VERSION,
                    "session_id": content.session_id,
                    "exported_at": iso(at),
                    "head_seq": head.seq if head else 0,
                    "head_hash": head.hash if head else GENESIS,
                }
                if content.server_id is not None:
                    description["server_id"] = content.server_id
                w.add(ARCHIVE_JSON, canonical_json(description))
                w.add(EVENTS, b"".join(canonical_json(e.model_dump()) + b"\n" for e in events))
                w.add(KEYS, canonical_json(dict(sorted(content.keys.items()))))
                for sha, path in sorted(content.envelopes.items()):
                    w.add_file(f"{ENVELOPES}{sha}.p7m", Path(path), sha)
                for sha, path in sorted(content.files.items()):
                    w.add_file(f"{BLOBS}{sha}", Path(path), sha)
                for folder, certs in (
                    ("trust/roots", content.trust_roots),
                    ("trust/intermediates", content.trust_intermediates),
                    ("certificates", content.certificates),
                ):
                    by_sha = {_sha(_cert_der(c)): c for c in certs}
                    for sha, cert in sorted(by_sha.items()):
                        w.add(f"{folder}/{sha}.pem", _cert_pem(cert))
                crls = {_sha(_crl_der(c)): _crl_der(c) for c in content.crls}
                for sha, der_bytes in sorted(crls.items()):
                    w.add(f"trust/crls/{sha}.crl", der_bytes)
                if content.record_json is not None:
                    w.add(RECORD_JSON, content.record_json)
                if content.record_text is not None:
                    w.add(RECORD_TEXT, content.record_text)
                if content.report_text is not None:
                    w.add(REPORT_TEXT, content.report_text)
                manifest = canonical_json({"files": w.files})
                w.add(MANIFEST, manifest, listed=False)
                signature = sign_document(manifest, signer_key, signer_cert, at=at, chain=chain)
                w.add(MANIFEST_SIG, signature, listed=False)
            f.flush()
            os.fsync(f.fileno())
        _place(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return out


# --- verifying -------------------------------------------------------------------------------


class _Problem(Exception):
    """A check failed: why, in Chinese and English (the caller adds where)."""

    def __init__(self, zh: str, en: str, cause: BaseException | None = None) -> None:
        super().__init__(en)
        self.zh = zh
        self.en = en
        self.cause = cause


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BidBridgeError):
        return exc.line()
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _invalid(where: str, zh: str, en: str, cause: BaseException | None = None) -> ArchiveInvalid:
    detail = f"{where}: {zh} / {en}"
    if cause is not None:
        detail += f" [{_describe(cause)}]"
    return ArchiveInvalid(detail)


@contextlib.contextmanager
def _at(
    where: str, zh: str = "内容无法解析", en: str = "the content cannot be parsed"
) -> Iterator[None]:
    """Turn any failure inside into an ``ArchiveInvalid`` that names ``where``."""
    try:
        yield
    except ArchiveInvalid:
        raise
    except _Problem as p:
        raise _invalid(where, p.zh, p.en, p.cause) from None
    except Exception as exc:
        raise _invalid(where, zh, en, exc) from None


def _field(mapping: Any, key: str, kind: type | tuple[type, ...], what: str = "payload") -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise _Problem(f"{what} 缺少字段 {key}", f"{what} lacks the field {key!r}")
    value = mapping[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Problem(f"{what} 字段 {key} 类型错误", f"{what} field {key!r} has the wrong type")
    return value


def _hex64(mapping: Any, key: str, what: str = "payload") -> str:
    value = _field(mapping, key, str, what)
    if not _HEX64.match(value):
        raise _Problem(
            f"{what} 字段 {key} 不是 SHA-256", f"{what} field {key!r} is not a SHA-256 hex"
        )
    return str(value)


def _der_end(data: bytes, pos: int, depth: int) -> int:
    """Walk one DER element at ``pos``: definite, minimal lengths; constructed contents exactly
    filled by their children. Returns the offset after the element."""
    if depth > 64 or pos + 2 > len(data):
        raise _Problem("DER 结构不完整", "truncated DER structure")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise _Problem("DER 标签不符预期", "unexpected multi-byte DER tag")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise _Problem("DER 长度编码无效", "invalid DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if data[pos] == 0 or length < 0x80:
            raise _Problem("DER 长度不是最短编码", "non-minimal DER length")
        pos += count
    end = pos + length
    if end > len(data):
        raise _Problem("DER 结构不完整", "truncated DER structure")
    if tag & 0x20:  # constructed: the children must fill it exactly
        while pos < end:
            pos = _der_end(data[:end], pos, depth + 1)
    return end


def _strict_der(signature: bytes) -> None:
    """The archive's own signature must be exactly what ``sign_document`` writes.

    ``read_document`` checks what the signature covers; this covers the rest (lengths,
    versions, algorithm parameters), so no byte of ``manifest.p7s`` can change unnoticed.
    """
    if _der_end(signature, 0, 0) != len(signature):
        raise _Problem("签名后有多余数据", "trailing data after the signature")
    info = cms.ContentInfo.load(signature, strict=True)
    sd = info["content"]
    infos = list(sd["signer_infos"])
    if info["content_type"].native != "signed_data" or sd["version"].native != "v1":
        raise _Problem("签名结构不是预期的 SignedData v1", "the signature is not SignedData v1")
    if len(infos) != 1 or infos[0]["version"].native != "v1" or sd["crls"].native is not None:
        raise _Problem("签名结构不符预期", "unexpected SignedData structure")
    digest = infos[0]["digest_algorithm"]
    if [a.dump() for a in sd["digest_algorithms"]] != [digest.dump()]:
        raise _Problem("摘要算法列表不符", "the digest algorithm list differs from the signer's")
    algorithms = [digest, infos[0]["signature_algorithm"]]
    if any(a["parameters"].native is not None for a in algorithms):
        raise _Problem("算法参数不符预期", "unexpected algorithm parameters")
    if infos[0]["unsigned_attrs"].native is not None:
        raise _Problem("签名含有未签名属性", "the signature carries unsigned attributes")


def _json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8"))


@dataclass
class _Use:
    """A signer certificate used at an instant, to validate against the trust store."""

    where: str
    cert: x509.Certificate
    extra: list[x509.Certificate]
    at: datetime
    purpose: Purpose = "bid_signature"
    """``login`` for an expert's sign-in; every other signature is a ``bid_signature``."""


class _Verifier:
    def __init__(
        self,
        path: Path,
        tmp: Path,
        trust_roots: list[x509.Certificate] | None,
        deep: bool,
        extra_intermediates: Sequence[x509.Certificate],
        extra_crls: Sequence[x509.CertificateRevocationList],
    ) -> None:
        self.path = path
        self.tmp = tmp
        self.given_roots = trust_roots
        self.deep = deep
        self.extra_intermediates = list(extra_intermediates)
        self.extra_crls = list(extra_crls)
        self.data: dict[str, bytes] = {}
        self.files: dict[str, Path] = {}
        self.sizes: dict[str, int] = {}
        self.actual_sha: dict[str, str] = {}
        self.uses: list[_Use] = []
        self.signatures = 0
        self.bids_decrypted = 0
        self.roots: list[x509.Certificate] = []
        self.intermediates: list[x509.Certificate] = []
        self.crls: list[x509.CertificateRevocationList] = []
        self.party_certs: dict[bytes, x509.Certificate] = {}
        self.keys: dict[str, bytes] = {}
        self.events: list[EventRecord] = []
        self.kind = "opening"
        self.draws_recomputed = 0
        self.segments_checked = 0

    # --- the steps, in order ------------------------------------------------------------------

    def run(self) -> ArchiveReport:
        with _at(self.path.name, "不是可读的 ZIP 文件", "not a readable ZIP file"):
            zf = zipfile.ZipFile(self.path)
        with zf:
            infos = self._names(zf)
            manifest = self._manifest(zf, infos)
            self._members(zf, infos, manifest)
        head = self._archive_json()
        self._trust_members()
        self._events()
        self._head(head)
        self._per_event()
        self._certificates()
        return ArchiveReport(
            session_id=self.session_id,
            exported_at=iso(self.exported_at),
            events=len(self.events),
            head_hash=self.events[-1].hash if self.events else GENESIS,
            bids_decrypted=self.bids_decrypted,
            signatures_checked=self.signatures,
            certificates_validated=len(self.uses),
            anchors="given" if self.given_roots is not None else "archive",
            deep=self.deep,
            kind=self.kind,
            draws_recomputed=self.draws_recomputed,
            segments_checked=self.segments_checked,
            files_checked=len(self.blobs_used),
        )

    def _names(self, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
        infos: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = info.filename
            if name in infos:
                raise _invalid(name, "存档中成员重复", "the member occurs twice in the ZIP")
            if name.startswith(("/", "\\")) or ".." in name.split("/") or "\\" in name:
                raise _invalid(name, "成员路径越界", "path traversal in a member name")
            if name not in _FIXED and not _HASHED.match(name):
                raise _invalid(name, "存档中有不应有的成员", "unexpected member in the archive")
            if info.flag_bits & 0x1:
                raise _invalid(name, "成员被加密", "the member is encrypted")
            infos[name] = info
        for name in (MANIFEST, MANIFEST_SIG):
            if name not in infos:
                raise _invalid(name, "存档缺少此成员", "the archive lacks this member")
        return infos

    def _read_small(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
        if info.file_size > limit:
            raise _invalid(info.filename, "成员过大", f"the member is larger than {limit} bytes")
        with _at(info.filename, "ZIP 成员无法读取", "the ZIP member cannot be read"):
            with zf.open(info) as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise _Problem("成员过大", f"the member is larger than {limit} bytes")
        return data

    def _manifest(
        self, zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo]
    ) -> dict[str, dict[str, Any]]:
        manifest = self._read_small(zf, infos[MANIFEST], MAX_MANIFEST)
        signature = self._read_small(zf, infos[MANIFEST_SIG], MAX_MANIFEST)
        with _at(
            MANIFEST_SIG,
            "签名无法验证或不覆盖 manifest.json",
            "the signature does not verify or does not cover manifest.json",
        ):
            doc = read_document(signature)
            _strict_der(signature)
        if doc.content != manifest:
            raise _invalid(
                f"{MANIFEST} / {MANIFEST_SIG}",
                "manifest.json 与其签名 manifest.p7s 不符",
                "manifest.json differs from what manifest.p7s signs",
            )
        self.signatures += 1
        self.manifest_doc = doc
        with _at(MANIFEST, "清单格式错误", "malformed manifest"):
            value = _json(manifest)
            if canonical_json(value) != manifest:
                raise _Problem("清单不是规范 JSON", "the manifest is not canonical JSON")
            files = _field(value, "files", dict, "manifest")
            if set(value) != {"files"}:
                raise _Problem("清单有多余字段", "the manifest has unexpected fields")
            for name, entry in files.items():
                if name in (MANIFEST, MANIFEST_SIG) or (
                    name not in _FIXED and not _HASHED.match(name)
                ):
                    raise _Problem(f"清单列出了非法成员名 {name}", f"bad member name {name!r}")
                _hex64(entry, "sha256", name)
                size = _field(entry, "size", int, name)
                if size < 0 or set(entry) != {"sha256", "size"}:
                    raise _Problem(f"{name} 条目格式错误", f"malformed entry for {name}")
        return dict(files)

    def _members(
        self,
        zf: zipfile.ZipFile,
        infos: dict[str, zipfile.ZipInfo],
        manifest: dict[str, dict[str, Any]],
    ) -> None:
        for name, info in infos.items():
            if name in (MANIFEST, MANIFEST_SIG):
                continue
            entry = manifest.get(name)
            if entry is None:
                raise _invalid(
                    name, "成员未列入 manifest.json", "the member is not in manifest.json"
                )
            if info.file_size != entry["size"]:
                raise _invalid(
                    self._named(name, zf, infos),
                    f"大小 {info.file_size} 与清单 {entry['size']} 不符",
                    f"size {info.file_size} differs from the manifest's {entry['size']}",
                )
            sha = self._read_member(zf, info, entry["size"])
            if sha != entry["sha256"]:
                raise _invalid(
                    self._named(name, zf, infos),
                    "SHA-256 与清单不符",
                    "SHA-256 differs from the manifest (changed?)",
                )
            self.actual_sha[name] = sha
            self.sizes[name] = entry["size"]
        for name in manifest:
            if name not in infos:
                raise _invalid(
                    name, "清单列出的成员不在存档中", "listed in the manifest but missing"
                )
        for name in _REQUIRED:
            if name not in infos:
                raise _invalid(name, "存档缺少此成员", "the archive lacks this member")

    def _named(
        self,
        name: str,
        zf: zipfile.ZipFile | None = None,
        infos: dict[str, zipfile.ZipInfo] | None = None,
    ) -> str:
        """``name``, and for a ``blobs/`` member what the log says it is (a segment: its room
        and index), read from the raw log: this only names, it proves nothing."""
        if not name.startswith(BLOBS):
            return name
        raw = self.data.get(EVENTS)
        if raw is None and zf is not None and infos is not None and EVENTS in infos:
            try:
                raw = self._read_small(zf, infos[EVENTS], MAX_IN_MEMORY)
            except ArchiveInvalid:
                raw = None
        events: list[EventRecord] = []
        for line in (raw or b"").split(b"\n"):
            with contextlib.suppress(Exception):
                events.append(EventRecord.model_validate(_json(line)))
        sha = name[len(BLOBS) :]
        labels = [
            f"{r.label}, {EVENTS} seq {r.seq}" for r in blob_references(events) if r.sha256 == sha
        ]
        return f"{name} ({'; '.join(labels)})" if labels else name

    def _read_member(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int) -> str:
        """Read (envelopes and blobs: copy to the work folder) while hashing; return the SHA-256."""
        name = info.filename
        h = hashlib.sha256()
        total = 0
        to_disk = name.startswith((ENVELOPES, BLOBS))
        if not to_disk and size > MAX_IN_MEMORY:
            raise _invalid(name, "成员过大", f"the member is larger than {MAX_IN_MEMORY} bytes")
        parts: list[bytes] = []
        with _at(name, "ZIP 成员无法读取（已损坏？）", "the ZIP member cannot be read (damaged?)"):
            target = self.tmp / f"{len(self.files)}.bin"
            sink: BinaryIO | None = target.open("wb") if to_disk else None
            try:
                with zf.open(info) as f:
                    while chunk := f.read(_CHUNK):
                        total += len(chunk)
                        if total > size:
                            raise _Problem("成员比清单所记更大", "the member is larger than listed")
                        h.update(chunk)
                        if sink is not None:
                            sink.write(chunk)
                        else:
                            parts.append(chunk)
            except zlib.error as exc:
                raise _Problem("压缩数据损坏", "the compressed data is damaged", exc) from None
            finally:
                if sink is not None:
                    sink.close()
            if to_disk:
                self.files[name] = target
            else:
                self.data[name] = b"".join(parts)
        return h.hexdigest()

    def _archive_json(self) -> tuple[int, str]:
        with _at(ARCHIVE_JSON, "存档说明格式错误", "malformed archive description"):
            value = _json(self.data[ARCHIVE_JSON])
            expected = {"format", "version", "session_id", "exported_at", "head_seq", "head_hash"}
            # ``server_id`` is optional: archives exported before it was written lack it.
            if not isinstance(value, dict) or set(value) - {"server_id"} != expected:
                raise _Problem(
                    "字段不符",
                    f"the fields must be exactly {sorted(expected)} (and optionally server_id)",
                )
            self.server_id: str | None = None
            if "server_id" in value:
                self.server_id = str(_field(value, "server_id", str, ARCHIVE_JSON))
                if not self.server_id:
                    raise _Problem("server_id 为空", "server_id is empty")
            if value["format"] != FORMAT or value["version"] != VERSION:
                raise _Problem(
                    "不是本版本的 BidBridge 存档", f"not a {FORMAT} version {VERSION} archive"
                )
            self.session_id = str(_field(value, "session_id", str, ARCHIVE_JSON))
            exported_at = _field(value, "exported_at", str, ARCHIVE_JSON)
            self.exported_at = parse_iso(exported_at)
            if iso(self.exported_at) != exported_at:
                raise _Problem("exported_at 格式不规范", "exported_at is not in the canonical form")
            head_seq = int(_field(value, "head_seq", int, ARCHIVE_JSON))
            head_hash = _hex64(value, "head_hash", ARCHIVE_JSON)
            if self.manifest_doc.signing_time != self.exported_at:
                raise _Problem(
                    "exported_at 与清单签名的签名时间不符",
                    "exported_at differs from the signing time of manifest.p7s",
                )
        return head_seq, head_hash

    def _trust_members(self) -> None:
        for name in sorted(self.data):
            data = self.data[name]
            if name.startswith(("trust/roots/", "trust/intermediates/", "certificates/")):
                with _at(name, "证书无法读取", "the certificate cannot be read"):
                    cert = x509.load_pem_x509_certificate(data)
                    der_bytes = _cert_der(cert)
                    if _cert_pem(cert) != data:
                        raise _Problem("不是单个规范 PEM 证书", "not exactly one canonical PEM")
                    if name.rsplit("/", 1)[1] != f"{_sha(der_bytes)}.pem":
                        raise _Problem(
                            "文件名与证书 SHA-256 不符", "the name is not the certificate's SHA-256"
                        )
                if name.startswith("trust/roots/"):
                    self.roots.append(cert)
                elif name.startswith("trust/intermediates/"):
                    self.intermediates.append(cert)
                else:
                    self.party_certs[der_bytes] = cert
            elif name.startswith("trust/crls/"):
                with _at(name, "CRL 无法读取", "the CRL cannot be read"):
                    crl = x509.load_der_x509_crl(data)
                    if _crl_der(crl) != data or name != f"trust/crls/{_sha(data)}.crl":
                        raise _Problem(
                            "文件名与 CRL 的 SHA-256 不符", "the name is not the CRL's SHA-256"
                        )
                self.crls.append(crl)
        with _at(KEYS, "密钥清单格式错误", "malformed key list"):
            raw = self.data[KEYS]
            value = _json(raw)
            if not isinstance(value, dict) or canonical_json(value) != raw:
                raise _Problem("不是规范 JSON 对象", "not a canonical JSON object")
            for sha, cek in value.items():
                if not _HEX64.match(sha) or not isinstance(cek, str):
                    raise _Problem(f"条目 {sha} 格式错误", f"malformed entry {sha!r}")
                self.keys[sha] = bytes.fromhex(cek)
        for name in self.files:
            if name.startswith(ENVELOPES):
                sha = name[len(ENVELOPES) : -len(".p7m")]
                if self.actual_sha[name] != sha:
                    raise _invalid(
                        name, "文件名与信封 SHA-256 不符", "the name is not the envelope's SHA-256"
                    )
            elif self.actual_sha[name] != name[len(BLOBS) :]:
                raise _invalid(
                    self._named(name),
                    "文件名与文件内容的 SHA-256 不符（内容已被改动）",
                    "the name is not the file's SHA-256 (the content changed)",
                )

    def _events(self) -> None:
        raw = self.data[EVENTS]
        if raw and not raw.endswith(b"\n"):
            raise _invalid(EVENTS, "最后一行不完整", "the last line is incomplete")
        lines = raw.split(b"\n")[:-1] if raw else []
        prev = GENESIS
        for number, line in enumerate(lines, start=1):
            where = f"{EVENTS} line {number} (seq {number})"
            with _at(where, "事件无法解析", "the event cannot be parsed"):
                event = EventRecord.model_validate(_json(line))
            where = f"{EVENTS} seq {event.seq} ({event.type}), line {number}"
            if event.seq != number:
                raise _invalid(
                    where,
                    f"序号不连续：应为 {number}",
                    f"seq is not contiguous: expected {number}",
                )
            if event.session_id != self.session_id:
                raise _invalid(
                    where,
                    f"会话 {event.session_id} 与存档会话 {self.session_id} 不符",
                    f"session {event.session_id} is not the archive's {self.session_id}",
                )
            if event.prev_hash != prev:
                raise _invalid(
                    where,
                    "prev_hash 与上一事件的哈希不符（哈希链断裂）",
                    "prev_hash is not the previous event's hash (the chain is broken)",
                )
            if event_hash(prev, event.model_dump()) != event.hash:
                raise _invalid(
                    where,
                    "事件哈希与内容不符（内容已被改动）",
                    "the event's hash does not match its content (changed)",
                )
            if canonical_json(event.model_dump()) != line:
                raise _invalid(where, "该行不是规范 JSON", "the line is not canonical JSON")
            with _at(where, "时间格式错误", "malformed instant"):
                parse_iso(event.at)
            self.events.append(event)
            prev = event.hash

    def _head(self, head: tuple[int, str]) -> None:
        seq = self.events[-1].seq if self.events else 0
        last = self.events[-1].hash if self.events else GENESIS
        if head != (seq, last):
            raise _invalid(
                ARCHIVE_JSON,
                f"head_seq/head_hash 与事件日志末尾（seq {seq}）不符",
                f"head_seq/head_hash differ from the end of the event log (seq {seq})",
            )

    # --- per-event checks ---------------------------------------------------------------------

    def _per_event(self) -> None:
        self.uploaded: dict[str, tuple[str, int]] = {}
        self.decrypted_keys: set[str] = set()
        self.table: Any = None
        self.table_sha: str | None = None
        self.record_sha: str | None = None
        # evaluations
        self.commitment: str | None = None
        self.entropy: dict[str, str] = {}
        self.draw_input: tuple[list[dict[str, Any]], list[Site], Any, Any] | None = None
        self.draw_result: DrawResult | None = None
        self.signin_certs: dict[str, str] = {}
        self.report_sha: str | None = None
        self.blobs_used: set[str] = set()
        for event in self.events:
            where = f"{EVENTS} seq {event.seq} ({event.type})"
            check = getattr(self, f"_check_{event.type}", None)
            if check is None:
                continue
            with _at(where, "事件载荷格式错误", "malformed event payload"):
                check(event, where, parse_iso(event.at))
        for name in self.files:
            if name.startswith(BLOBS):
                if name[len(BLOBS) :] not in self.blobs_used:
                    raise _invalid(name, "文件未被任何事件引用", "no event names this file")
                continue
            sha = name[len(ENVELOPES) : -len(".p7m")]
            if sha not in self.uploaded:
                raise _invalid(
                    name,
                    "信封未被任何 bid_uploaded 事件引用",
                    "no bid_uploaded event names this envelope",
                )
        for sha in self.keys:
            if sha not in self.decrypted_keys:
                raise _invalid(
                    KEYS,
                    f"密钥 {sha} 未被任何 bid_decrypted 事件使用",
                    f"the key for {sha} is used by no bid_decrypted event",
                )
        if self.record_sha is not None:
            record = self.data.get(RECORD_JSON)
            if record is None:
                raise _invalid(RECORD_JSON, "存档缺少开标记录", "the record is missing")
            if _sha(record) != self.record_sha:
                raise _invalid(
                    RECORD_JSON,
                    "开标记录与最后一个 record_generated 事件的哈希不符",
                    "the record differs from the hash in the last record_generated event",
                )

    def _signed(
        self,
        where: str,
        payload: Any,
        key: str,
        expected: bytes | None,
        at: datetime,
        purpose: Purpose = "bid_signature",
    ) -> SignedDocument:
        """Read and verify one b64 signed document; queue its signer for validation for
        ``purpose`` at ``at``."""
        text = _field(payload, key, str)
        try:
            doc = read_document(b64decode(text, key))
        except BidBridgeError as exc:
            raise _Problem(
                f"签名 {key} 无效", f"the signature {key!r} does not verify", exc
            ) from None
        if expected is not None and doc.content != expected:
            raise _Problem(
                f"签名 {key} 所签内容与文档不符",
                f"the signature {key!r} covers a different document",
            )
        self.signatures += 1
        self._use(where, doc.signer, doc.certificates, at, purpose)
        return doc

    def _use(
        self,
        where: str,
        cert: x509.Certificate,
        extra: list[x509.Certificate],
        at: datetime,
        purpose: Purpose = "bid_signature",
    ) -> None:
        if _cert_der(cert) not in self.party_certs:
            raise _Problem(
                f"签名证书（{cert.subject.rfc4514_string()}）未收录于 certificates/",
                f"the signer's certificate ({cert.subject.rfc4514_string()}) is not in "
                "certificates/",
            )
        self.uses.append(_Use(where, cert, extra, at, purpose))

    @staticmethod
    def _server_signer(doc: SignedDocument) -> None:
        if role_of(doc.signer) != _SERVER_ROLE:
            raise _Problem(
                "签名人不是平台（交易中心）证书",
                "the signer is not the platform's (centre) certificate",
            )

    def _check_checkpoint(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        seq = _field(p, "seq", int)
        digest = _hex64(p, "hash")
        status = _field(p, "status", str)
        if not 1 <= seq < event.seq:
            raise _Problem(
                f"检查点指向的序号 {seq} 不在此前", f"the checkpoint's seq {seq} is not earlier"
            )
        if self.events[seq - 1].hash != digest:
            raise _Problem(
                f"检查点的哈希与 seq {seq} 的哈希不符",
                f"the checkpoint's hash is not the hash of seq {seq}",
            )
        signed = canonical_json(
            {"session_id": self.session_id, "seq": seq, "hash": digest, "status": status}
        )
        self._server_signer(self._signed(where, p, "signature", signed, at))

    def _check_bid_uploaded(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        bidder = _field(p, "bidder", str)
        receipt = _field(p, "receipt", dict)
        for key in ("receipt_id", "lot_id", "bidder", "session_id", "received_at"):
            _field(receipt, key, str, "receipt")
        sha = _hex64(receipt, "envelope_sha256", "receipt")
        size = _field(receipt, "size", int, "receipt")
        if receipt["session_id"] != self.session_id or receipt["bidder"] != bidder:
            raise _Problem(
                "回执的会话或投标人与事件不符",
                "the receipt's session or bidder differs from the event",
            )
        parse_iso(receipt["received_at"])
        name = f"envelopes/{sha}.p7m"
        if name not in self.files:
            raise _Problem(f"存档缺少信封文件 {name}", f"the archive lacks the envelope {name}")
        if self.actual_sha[name] != sha or self.sizes[name] != size:
            raise _Problem(
                f"信封 {name} 的哈希或大小与回执不符",
                f"the envelope {name} differs from the receipt's hash or size",
            )
        doc = self._signed(where, p, "receipt_signature", canonical_json(receipt), at)
        self._server_signer(doc)
        replaces = p.get("replaces")
        if replaces is not None and (
            not isinstance(replaces, str) or self.uploaded.get(replaces, ("", 0))[0] != bidder
        ):
            raise _Problem(
                "replaces 未指向该投标人此前上传的文件",
                "replaces does not name an earlier upload of this bidder",
            )
        self.uploaded[sha] = (bidder, event.seq)

    def _check_bid_decrypted(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        bidder = _field(p, "bidder", str)
        sha = _hex64(p, "envelope_sha256")
        cek_sha = _hex64(p, "cek_sha256")
        summary = _field(p, "summary", dict)
        if p.get("via") not in ("bidder", "backup"):
            raise _Problem("via 须为 bidder 或 backup", "via must be 'bidder' or 'backup'")
        if self.uploaded.get(sha, ("", 0))[0] != bidder:
            raise _Problem(
                "解密的信封不是该投标人此前上传的",
                "the decrypted envelope is not an earlier upload of this bidder",
            )
        cek = self.keys.get(sha)
        if cek is None:
            raise _Problem(
                f"keys.json 中没有信封 {sha} 的密钥", f"keys.json holds no key for envelope {sha}"
            )
        if _sha(cek) != cek_sha:
            raise _Problem(
                "keys.json 中的密钥与事件的 cek_sha256 不符",
                "the key in keys.json does not match the event's cek_sha256",
            )
        path = self.files[f"envelopes/{sha}.p7m"]
        try:
            report = verify_envelope(path, cek)
        except BidBridgeError as exc:
            raise _Problem(
                "信封无法用此密钥验证（完整性或签名）",
                "the envelope does not verify with this key (integrity or signature)",
                exc,
            ) from None
        self.signatures += 1
        if credit_code_of(report.certificate) != bidder:
            raise _Problem("投标文件签名人不是该投标人", "the bid's signer is not this bidder")
        self._use(where, report.certificate, report.certificates, at)
        if self.deep:
            out = self.tmp / f"deep-{event.seq}.zip"
            try:
                opened = decrypt_with_key(path, cek, out, expected_credit_code=bidder)
            except BidBridgeError as exc:
                raise _Problem(
                    "投标文件包无法打开", "the bid package cannot be opened", exc
                ) from None
            finally:
                out.unlink(missing_ok=True)
            if opened.summary.model_dump(mode="json") != summary:
                raise _Problem(
                    "投标摘要与解密出的 summary.json 不符",
                    "the summary differs from the decrypted summary.json",
                )
        self.decrypted_keys.add(sha)
        self.bids_decrypted += 1

    def _check_table_published(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        table = _field(p, "table", dict)
        digest = _hex64(p, "table_sha256")
        if _sha(canonical_json(table)) != digest:
            raise _Problem(
                "开标一览表与 table_sha256 不符", "the table does not match table_sha256"
            )
        self.table, self.table_sha = table, digest

    def _check_table_confirmed(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        bidder = _field(p, "bidder", str)
        digest = _hex64(p, "table_sha256")
        if self.table is None or digest != self.table_sha:
            raise _Problem(
                "确认的不是最近发布的开标一览表",
                "the confirmation is not for the last published table",
            )
        doc = self._signed(where, p, "signature", canonical_json(self.table), at)
        if credit_code_of(doc.signer) != bidder:
            raise _Problem("确认签名人不是该投标人", "the confirmation's signer is not this bidder")

    def _check_record_generated(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        digest = _hex64(p, "record_sha256")
        doc = self._signed(where, p, "signature", None, at)
        if _sha(doc.content) != digest:
            raise _Problem(
                "签名的记录与 record_sha256 不符", "the signed record is not record_sha256"
            )
        self._server_signer(doc)
        self.record_sha = digest

    def _check_record_signed(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        role = _field(p, "role", str)
        _field(p, "account", str)
        if role not in _RECORD_ROLES:
            raise _Problem("role 须为 host 或 supervisor", "role must be host or supervisor")
        if self.record_sha is None:
            raise _Problem("此前没有 record_generated 事件", "no record_generated event before")
        doc = self._signed(where, p, "signature", None, at)
        if _sha(doc.content) != self.record_sha:
            raise _Problem(
                "所签的不是最近生成的开标记录",
                "the signature is not over the last generated record",
            )
        if role_of(doc.signer) != role:
            raise _Problem(
                f"签名证书的角色不是 {role}",
                f"the signer's certificate is not a {role} certificate",
            )

    # --- evaluation events ----------------------------------------------------------------------

    def _check_session_created(self, event: EventRecord, where: str, at: datetime) -> None:
        kind = event.payload.get("kind", "opening")
        if event.seq == 1 and isinstance(kind, str):
            self.kind = kind

    def _blob(self, sha: str, zh: str, en: str) -> Path:
        """The archived file ``blobs/<sha>`` (its name is its content's hash: checked earlier)."""
        name = f"{BLOBS}{sha}"
        path = self.files.get(name)
        if path is None:
            raise _Problem(f"存档缺少{zh} {name}", f"the archive lacks the {en} {name}")
        self.blobs_used.add(sha)
        return path

    def _check_draw_committed(self, event: EventRecord, where: str, at: datetime) -> None:
        if self.commitment is not None:
            raise _Problem("抽取承诺公布了两次", "the draw's commitment was published twice")
        self.commitment = _hex64(event.payload, "commitment")

    def _check_draw_entropy(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        role = _field(p, "role", str)
        value = _field(p, "value", str)
        if role not in ("host", "supervisor"):
            raise _Problem("role 须为 host 或 supervisor", "role must be host or supervisor")
        if not event.actor.startswith(f"{role}:"):
            raise _Problem("随机数的提交者不是该角色", f"the entropy was not added by a {role}")
        if self.commitment is None:
            raise _Problem(
                "服务器承诺公布之前就提交了随机数", "entropy added before the server's commitment"
            )
        if role in self.entropy:
            raise _Problem(f"{role} 提交了两次随机数", f"the {role} added entropy twice")
        self.entropy[role] = value

    def _draw_problem(self, diffs: list[str]) -> _Problem:
        more = f"（共 {len(diffs)} 处）" if len(diffs) > 1 else ""
        more_en = f" ({len(diffs)} differences)" if len(diffs) > 1 else ""
        return _Problem(
            f"抽取结果不能由存档中的输入复算{more}：{diffs[0]}",
            f"the draw does not recompute from the archived input{more_en}: {diffs[0]}",
        )

    def _check_draw_completed(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        server_random = _field(p, "server_random", str)
        request = _field(p, "request", dict)
        claimed = _field(p, "result", dict)
        sha = _hex64(p, "pool_blob")
        if self.draw_input is not None:
            raise _Problem("第二次抽取", "a second draw in one session")
        path = self._blob(sha, "抽取输入文件", "draw input")
        try:
            pool, sites = read_draw_input(path.read_bytes())
        except (ValueError, ValidationError) as exc:
            raise _Problem(
                f"抽取输入文件 {BLOBS}{sha} 格式错误",
                f"the draw input {BLOBS}{sha} is malformed",
                exc,
            ) from None
        diffs = draw_differences(
            pool,
            sites,
            session_id=self.session_id,
            commitment=self.commitment,
            entropy=self.entropy,
            server_random=server_random,
            request=request,
            claimed=claimed,
        )
        if not diffs and claimed.get("replacements"):
            diffs.append("result.replacements: 抽取时不应有替换 / a fresh draw has no replacements")
        if diffs:
            raise self._draw_problem(diffs)
        self.draw_input = (pool, sites, server_random, request)
        self.draw_result = DrawResult.model_validate(claimed)
        self.draws_recomputed += 1

    def _result(self) -> DrawResult:
        if self.draw_result is None:
            raise _Problem("此前没有 draw_completed 事件", "no draw_completed event before")
        return self.draw_result

    def _check_committee_drawn(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        result = self._result()
        assert self.draw_input is not None
        if (
            p.get("seed") != result.seed
            or p.get("pool_sha256") != result.pool_sha256
            or p.get("server_random") != self.draw_input[2]
        ):
            raise _Problem(
                "公布的种子、专家库哈希或服务器随机数与抽取结果不符",
                "the published seed, pool hash or server random differs from the draw",
            )

    def _check_room_assigned(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        drawn = {
            (d.room_id, d.site_id, d.role)
            for d in (self._result().lead, *self._result().secondary_sites)
        }
        if (p.get("room_id"), p.get("site_id"), p.get("role")) not in drawn:
            raise _Problem("分配的评标室不是抽取结果中的", "the room assigned is not a drawn room")

    def _check_member_drawn(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = _field(p, "expert_id", str)
        result = self._result()
        if p.get("kind", "expert") == "owner_rep":
            ok = p.get("room_id") == result.lead.room_id and p.get("site_id") == result.lead.site_id
        else:
            ok = any(
                (m.expert_id, m.category, m.site_id, m.room_id)
                == (expert, p.get("category"), p.get("site_id"), p.get("room_id"))
                for m in result.committee
            )
        if not ok:
            raise _Problem(
                f"成员 {expert} 不是抽取结果中的成员（或评标室不符）",
                f"member {expert} is not in the drawn committee (or sits in another room)",
            )

    def _check_member_replaced(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = _field(p, "expert_id", str)
        by = _field(p, "by", str)
        claimed = _field(p, "result", dict)
        before = self._result()
        assert self.draw_input is not None
        pool, sites, server_random, request = self.draw_input
        diffs = draw_differences(
            pool,
            sites,
            session_id=self.session_id,
            commitment=self.commitment,
            entropy=self.entropy,
            server_random=server_random,
            request=request,
            claimed=claimed,
        )
        if diffs:
            raise self._draw_problem(diffs)
        after = DrawResult.model_validate(claimed)
        last = after.replacements[-1] if after.replacements else None
        new = next((m for m in after.committee if m.expert_id == by), None)
        if (
            len(after.replacements) != len(before.replacements) + 1
            or last is None
            or (last.declined_expert_id, last.replacement_expert_id) != (expert, by)
            or new is None
            or (new.category, new.site_id, new.room_id)
            != (p.get("category"), p.get("site_id"), p.get("room_id"))
        ):
            raise _Problem(
                "替换记录与抽取结果中的替换不符",
                "the replacement differs from the one the draw result records",
            )
        self.draw_result = after
        self.draws_recomputed += 1

    def _check_member_signed_in(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = _field(p, "expert_id", str)
        room = _field(p, "room_id", str)
        cert = _hex64(p, "cert_sha256")
        nonce = _field(p, "nonce", str)
        if event.actor != f"room:{room}":
            raise _Problem(
                "签到不是在该成员的评标室进行的", "the sign-in is not from the member's room"
            )
        if not _field(p, "signature", str):
            raise _Problem("签到没有专家的签名", "the sign-in carries no signature of the expert")
        if self.server_id is None:
            raise _Problem(
                f"{ARCHIVE_JSON} 未载明服务器标识（server_id），无法核对签到签名",
                f"{ARCHIVE_JSON} does not name the server (server_id): the sign-in's "
                "signature cannot be checked",
            )
        expected = sign_in_document(self.server_id, self.session_id, room, expert, nonce)
        doc = self._signed(where, p, "signature", expected, at, "login")
        if _sha(_cert_der(doc.signer)) != cert:
            raise _Problem(
                f"签到签名的证书不是事件所记的证书（cert_sha256 {cert}）",
                f"the sign-in's signer is not the certificate the event records (cert_sha256 "
                f"{cert})",
            )
        serial = doc.signer.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
        if not serial or serial[0].value != expert:
            raise _Problem(
                f"签到签名的证书不属于成员 {expert}（subject serialNumber）",
                f"the sign-in's certificate is not member {expert}'s (subject serialNumber)",
            )
        self.signin_certs[expert] = cert

    def _member_signer(self, expert: str, doc: SignedDocument) -> None:
        expected = self.signin_certs.get(expert)
        if expected is None:
            raise _Problem(f"成员 {expert} 此前没有签到", f"member {expert} had not signed in")
        if _sha(_cert_der(doc.signer)) != expected:
            raise _Problem(
                f"签名证书不是成员 {expert} 签到时使用的证书（cert_sha256 {expected}）",
                f"the signer's certificate is not the one member {expert} signed in with "
                f"(cert_sha256 {expected})",
            )

    def _check_sheet_content(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = _field(p, "expert_id", str)
        stage = _field(p, "stage", str)
        content = _field(p, "content", dict)
        digest = _hex64(p, "sha256")
        if event.actor != f"expert:{expert}":
            raise _Problem("评审表的提交者不是该专家", f"the sheet was not submitted by {expert}")
        if _sha(canonical_json(content)) != digest:
            raise _Problem("评审表内容与 sha256 不符", "the sheet's content does not match sha256")
        expected = sheet_document(self.session_id, expert, stage, content)
        self._member_signer(expert, self._signed(where, p, "signature", expected, at))

    def _check_report_generated(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        digest = _hex64(p, "sha256")
        path = self._blob(digest, "评标报告", "evaluation report")
        if path.stat().st_size > MAX_IN_MEMORY:
            raise _Problem("评标报告过大", "the report is too large")
        raw = path.read_bytes()
        report = _json(raw)
        if not isinstance(report, dict) or canonical_json(report) != raw:
            raise _Problem(
                "评标报告不是规范 JSON 对象", "the report is not a canonical JSON object"
            )
        if report.get("session_id") != self.session_id:
            raise _Problem("评标报告不属于本会话", "the report is not this session's")
        head = report.get("log_head")
        head = head if isinstance(head, dict) else {}
        seq = head.get("seq")
        if (
            not isinstance(seq, int)
            or not 1 <= seq < event.seq
            or self.events[seq - 1].hash != head.get("hash")
        ):
            raise _Problem(
                "评标报告所载的事件日志链头不是此前的事件",
                "the report's log head is not an earlier event of this log",
            )
        drawn = report.get("draw")
        if self.draw_result is not None and (
            not isinstance(drawn, dict)
            or drawn.get("seed") != self.draw_result.seed
            or drawn.get("pool_sha256") != self.draw_result.pool_sha256
        ):
            raise _Problem(
                "评标报告所载的抽取种子或专家库哈希与抽取记录不符",
                "the report's draw seed or pool hash differs from the draw",
            )
        self._server_signer(self._signed(where, p, "signature", raw, at))
        self.report_sha = digest

    def _check_report_signed(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        expert = _field(p, "expert_id", str)
        agree = _field(p, "agree", bool)
        reason = _field(p, "reason", str)
        if event.actor != f"expert:{expert}":
            raise _Problem("签字人不是该成员", f"the response is not by {expert}")
        if self.report_sha is None:
            raise _Problem("此前没有 report_generated 事件", "no report_generated event before")
        if p.get("signature") is None:
            # 实施条例 art. 53: a refusal without a reason counts as agreement.
            deemed = _field(p, "deemed", bool)
            if p.get("refused") is not True or agree != (not reason) or deemed != (not reason):
                raise _Problem(
                    "拒签记录不一致：无理由拒签应视为同意",
                    "inconsistent refusal: a refusal without a reason counts as agreement",
                )
            return
        if not agree and not reason.strip():
            raise _Problem("不同意须书面说明理由", "a disagreement needs a written reason")
        doc = self._signed(where, p, "signature", None, at)
        expected = report_document(self.session_id, expert, self.report_sha, agree, reason)
        if doc.content != expected and not self._same_but_reason_spacing(doc.content, expert, p):
            raise _Problem(
                "签名所签内容不是本评标报告的签字文档",
                "the signature does not cover this member's response to the last report",
            )
        self._member_signer(expert, doc)

    def _same_but_reason_spacing(self, content: bytes, expert: str, p: Any) -> bool:
        """The log keeps a reason with its surrounding spaces trimmed; the member signed it as
        typed. The signed document is then the same but for that whitespace."""
        try:
            signed = _json(content)
        except ValueError:
            return False
        typed = signed.get("reason") if isinstance(signed, dict) else None
        return (
            isinstance(typed, str)
            and typed.strip() == p["reason"]
            and content
            == report_document(self.session_id, expert, str(self.report_sha), p["agree"], typed)
        )

    def _check_media_segment(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        room = _field(p, "room_id", str)
        index = _field(p, "index", int)
        digest = _hex64(p, "sha256")
        size = _field(p, "size", int)
        for key in ("started_at", "ended_at"):
            parse_iso(_field(p, key, str))
        error = p.get("error")
        if error is not None and not isinstance(error, str):
            raise _Problem("error 须为文本或 null", "error must be a string or null")
        if p.get("backend", "builtin") not in ("builtin", "janus"):
            raise _Problem("backend 须为 builtin 或 janus", "backend must be builtin or janus")
        if event.actor != "server:server":
            raise _Problem(
                "录像片段不是由服务器记录的", "the segment was not recorded by the server"
            )
        zh, en = f"录像片段 {room} #{index}", f"recording segment {room} #{index}"
        name = f"{BLOBS}{digest}"
        if name not in self.files:
            if error is None:
                raise _Problem(f"存档缺少{zh}（{name}）", f"the archive lacks the {en} ({name})")
            return  # a segment that could not be recorded has no file
        if self.actual_sha[name] != digest or self.sizes[name] != size:
            raise _Problem(
                f"{zh}（{name}）的哈希或大小与事件不符",
                f"the {en} ({name}) differs from the event's hash or size",
            )
        self.blobs_used.add(digest)
        self.segments_checked += 1
        if self.deep:
            try:
                _demux(self.files[name])
            except Exception as exc:
                raise _Problem(
                    f"{zh}（{name}）不是可读的 WebM/Matroska 录像",
                    f"the {en} ({name}) is not a readable WebM/Matroska recording",
                    exc,
                ) from None

    # --- certificates -------------------------------------------------------------------------

    def _certificates(self) -> None:
        # The manifest's signer: the platform, at the export instant. Its certificates are the
        # one part of the archive no hash covers, so each must be one the archive lists.
        known = {
            *self.party_certs,
            *(_cert_der(c) for c in self.roots),
            *(_cert_der(c) for c in self.intermediates),
        }
        doc = self.manifest_doc
        with _at(MANIFEST_SIG):
            for cert in doc.certificates:
                if _cert_der(cert) not in known:
                    raise _Problem(
                        "签名中含有存档未收录的证书",
                        "the signature carries a certificate not in the archive",
                    )
            self._server_signer(doc)
            self._use(MANIFEST_SIG, doc.signer, doc.certificates, self.exported_at)
        # The manifest's use goes first: it is the archive's outermost signature.
        self.uses.insert(0, self.uses.pop())
        roots = self.given_roots if self.given_roots is not None else self.roots
        crls = [*self.crls, *self.extra_crls]
        with _at("trust/", "信任材料无效", "invalid trust material"):
            store = TrustStore(
                roots,
                [*self.intermediates, *self.extra_intermediates],
                crls,
                require_revocation=bool(crls),
            )
        for use in self.uses:
            try:
                store.validate(use.cert, use.purpose, use.at, extra_intermediates=use.extra)
            except Exception as exc:
                raise _invalid(
                    f"{use.where}, {use.cert.subject.rfc4514_string()}",
                    f"签名证书在使用时刻（{iso(use.at)}）无效",
                    f"the signer's certificate was not valid when used ({iso(use.at)})",
                    exc,
                ) from None


def _demux(path: Path) -> None:
    """Read every packet of a recording (``--deep``): a WebM/Matroska file with media in it."""
    import av  # PyAV (aiortc's dependency): imported only for deep checks

    with av.open(str(path), mode="r") as container:
        if not {"matroska", "webm"} & set(container.format.name.split(",")):
            raise ValueError(f"container {container.format.name}, not WebM/Matroska")
        if not container.streams:
            raise ValueError("no streams")
        packets = sum(1 for packet in container.demux() if packet.size)
    if packets == 0:
        raise ValueError("no media packets")


def verify_archive(
    path: Path | str,
    *,
    trust_roots: list[x509.Certificate] | None = None,
    deep: bool = False,
    extra_intermediates: Sequence[x509.Certificate] = (),
    extra_crls: Sequence[x509.CertificateRevocationList] = (),
) -> ArchiveReport:
    """Verify an archive offline; raise :class:`ArchiveInvalid` naming the first failure.

    ``trust_roots``: the verifier's own anchors (``anchors="given"``); without them the archive's
    own roots are used (``anchors="archive"``), which proves integrity but not authenticity.
    ``deep`` also decrypts every decrypted bid's package and compares its summary.

    Signers: the platform's documents (manifest, receipts, checkpoints, record) need a
    ``centre`` certificate (``crypto.ca.role_of``); every signer's certificate must be one of
    ``certificates/`` and is validated for ``bid_signature`` (an expert's sign-in: ``login``)
    at the instant it was used: the event's ``at`` (for a bid's inner signature, its
    ``bid_decrypted`` event, when the server checked it) and ``exported_at`` for the manifest.

    Evaluations: the draw is recomputed from ``blobs/<pool_blob>``, the revealed server random
    (which must open the published commitment), both entropies and the request, and must equal
    the recorded result (each replacement too); every recording segment must be present with
    its event's hash and size (``deep``: and read as WebM/Matroska); every ``member_signed_in``
    must carry the member's signature over its sign-in document (the server named by
    ``archive.json``'s ``server_id``, the session, the event's room, the member, the nonce) made
    with the certificate the event records (``cert_sha256``) whose subject ``serialNumber`` is
    the member's id; every score sheet and report response must be signed over its document
    with the certificate the member signed in with;
    the report must be the file its event names, signed by the platform.
    """
    path = Path(path)
    if not path.is_file():
        raise FileUnreadable(f"{path}: 文件不存在 / no such file")
    with tempfile.TemporaryDirectory(prefix="bidbridge-verify-") as tmp:
        verifier = _Verifier(path, Path(tmp), trust_roots, deep, extra_intermediates, extra_crls)
        return verifier.run()
