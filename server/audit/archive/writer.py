"""Writing a session's archive: check its content, then write and sign the ZIP atomically."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from cryptography import x509

from crypto.attest import sign_document
from crypto.errors import OutputExists
from crypto.keys import PrivateKeyHandle
from schemas.canonical import canonical_json
from schemas.time import iso
from server.audit.archive.format import (
    ARCHIVE_JSON,
    CERTIFICATES,
    CHUNK,
    EVENTS,
    FORMAT,
    HEX64,
    KEYS,
    MANIFEST,
    MANIFEST_SIG,
    RECORD_JSON,
    RECORD_TEXT,
    REPORT_TEXT,
    TRUST_CRLS,
    TRUST_INTERMEDIATES,
    TRUST_ROOTS,
    VERSION,
    ArchiveContent,
    ArchiveExportFailed,
    blob_member,
    blob_references,
    cert_pem,
    cert_sha256,
    crl_der,
    envelope_member,
    sha256_hex,
)
from server.audit.chain import GENESIS


def _zip_time(at: datetime) -> tuple[int, int, int, int, int, int]:
    t = at.astimezone(UTC)
    if t.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (t.year, t.month, t.day, t.hour, t.minute, t.second)


def _fail(detail: str) -> NoReturn:
    raise ArchiveExportFailed(detail)


def _check_content(content: ArchiveContent) -> None:
    for i, event in enumerate(content.events, start=1):
        if event.session_id != content.session_id:
            _fail(f"event seq {event.seq}: session {event.session_id} != {content.session_id}")
        if event.seq != i:
            _fail(f"event seq {event.seq}: expected seq {i} (the whole log, from 1)")
    referenced: set[str] = set()
    for event in content.events:
        if event.type == "bid_uploaded":
            receipt = event.payload.get("receipt") or {}
            sha = receipt.get("envelope_sha256")
            if sha not in content.envelopes:
                _fail(f"event seq {event.seq}: 缺少信封文件 / envelope {sha} not supplied")
            referenced.add(sha)
    _check_named(content.envelopes, referenced, "envelope", "bid_uploaded event")
    for sha, cek in content.keys.items():
        if sha not in content.envelopes:
            _fail(f"key for envelope {sha}: the envelope is not in the archive")
        try:
            bytes.fromhex(cek)
        except ValueError:
            _fail(f"key for envelope {sha} is not hex")
    named: set[str] = set()
    for ref in blob_references(content.events):
        named.add(ref.sha256)
        if ref.required and ref.sha256 not in content.files:
            _fail(f"event seq {ref.seq}: 缺少文件 / {ref.label} {ref.sha256} not supplied")
    _check_named(content.files, named, "file", "event")


def _check_named(supplied: Iterable[str], named: set[str], what: str, by: str) -> None:
    """Every supplied file (an envelope, a blob) is keyed by a SHA-256 that an event names."""
    for sha in supplied:
        if not HEX64.match(sha):
            _fail(f"{what} key {sha!r} is not a SHA-256 hex")
        if sha not in named:
            _fail(f"{what} {sha} is not named by any {by}")


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
            self.files[name] = {"sha256": sha256_hex(data), "size": len(data)}

    def add_file(self, name: str, path: Path, expected_sha: str) -> None:
        h = hashlib.sha256()
        size = 0
        info = self._info(name, zipfile.ZIP_STORED)
        with path.open("rb") as src, self.zf.open(info, "w", force_zip64=True) as dst:
            while chunk := src.read(CHUNK):
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
                    w.add_file(envelope_member(sha), Path(path), sha)
                for sha, path in sorted(content.files.items()):
                    w.add_file(blob_member(sha), Path(path), sha)
                for folder, certs in (
                    (TRUST_ROOTS, content.trust_roots),
                    (TRUST_INTERMEDIATES, content.trust_intermediates),
                    (CERTIFICATES, content.certificates),
                ):
                    by_sha = {cert_sha256(c): c for c in certs}
                    for sha, cert in sorted(by_sha.items()):
                        w.add(f"{folder}{sha}.pem", cert_pem(cert))
                crls = {sha256_hex(crl_der(c)): crl_der(c) for c in content.crls}
                for sha, der_bytes in sorted(crls.items()):
                    w.add(f"{TRUST_CRLS}{sha}.crl", der_bytes)
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
