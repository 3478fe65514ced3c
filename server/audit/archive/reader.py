"""Reading an archive to verify it: members against the signed manifest, trust material, the log."""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from asn1crypto import cms
from cryptography import x509

from crypto.attest import read_document
from schemas.canonical import canonical_json
from schemas.events import EventRecord
from schemas.time import iso, parse_iso
from server.audit.archive.format import (
    ARCHIVE_JSON,
    BLOBS,
    CERTIFICATES,
    CHUNK,
    ENVELOPES,
    EVENTS,
    FIXED_MEMBERS,
    FORMAT,
    HASHED_MEMBER,
    HEX64,
    KEYS,
    MANIFEST,
    MANIFEST_SIG,
    MAX_IN_MEMORY,
    MAX_MANIFEST,
    REQUIRED_MEMBERS,
    TRUST_CRLS,
    TRUST_INTERMEDIATES,
    TRUST_ROOTS,
    VERSION,
    ArchiveInvalid,
    blob_references,
    blob_sha,
    cert_der,
    cert_pem,
    crl_der,
    envelope_sha,
    sha256_hex,
)
from server.audit.archive.problems import (
    Problem,
    hex64_field,
    invalid,
    parse_json,
    problems_at,
    typed_field,
)
from server.audit.chain import GENESIS, event_hash


def _der_end(data: bytes, pos: int, depth: int) -> int:
    """Walk one DER element at ``pos``: definite, minimal lengths; constructed contents exactly
    filled by their children. Returns the offset after the element."""
    if depth > 64 or pos + 2 > len(data):
        raise Problem("DER 结构不完整", "truncated DER structure")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise Problem("DER 标签不符预期", "unexpected multi-byte DER tag")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise Problem("DER 长度编码无效", "invalid DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if data[pos] == 0 or length < 0x80:
            raise Problem("DER 长度不是最短编码", "non-minimal DER length")
        pos += count
    end = pos + length
    if end > len(data):
        raise Problem("DER 结构不完整", "truncated DER structure")
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
        raise Problem("签名后有多余数据", "trailing data after the signature")
    info = cms.ContentInfo.load(signature, strict=True)
    sd = info["content"]
    infos = list(sd["signer_infos"])
    if info["content_type"].native != "signed_data" or sd["version"].native != "v1":
        raise Problem("签名结构不是预期的 SignedData v1", "the signature is not SignedData v1")
    if len(infos) != 1 or infos[0]["version"].native != "v1" or sd["crls"].native is not None:
        raise Problem("签名结构不符预期", "unexpected SignedData structure")
    digest = infos[0]["digest_algorithm"]
    if [a.dump() for a in sd["digest_algorithms"]] != [digest.dump()]:
        raise Problem("摘要算法列表不符", "the digest algorithm list differs from the signer's")
    algorithms = [digest, infos[0]["signature_algorithm"]]
    if any(a["parameters"].native is not None for a in algorithms):
        raise Problem("算法参数不符预期", "unexpected algorithm parameters")
    if infos[0]["unsigned_attrs"].native is not None:
        raise Problem("签名含有未签名属性", "the signature carries unsigned attributes")


class ArchiveReader:
    """The archive's members, each checked against the signed manifest, then what they hold:
    ``archive.json``, the certificates, CRLs and keys, and the event log's hash chain."""

    def __init__(self, path: Path, tmp: Path) -> None:
        self.path = path
        self.tmp = tmp
        self.data: dict[str, bytes] = {}
        """Members read into memory, by name: all but envelopes and blobs."""
        self.files: dict[str, Path] = {}
        """Envelopes and blobs, by member name: copied into ``tmp``."""
        self.sizes: dict[str, int] = {}
        self.actual_sha: dict[str, str] = {}
        self.signatures = 0
        self.roots: list[x509.Certificate] = []
        self.intermediates: list[x509.Certificate] = []
        self.crls: list[x509.CertificateRevocationList] = []
        self.party_certs: dict[bytes, x509.Certificate] = {}
        self.keys: dict[str, bytes] = {}
        self.events: list[EventRecord] = []

    def read(self) -> None:
        """Every step up to the per-event checks, in order."""
        with problems_at(self.path.name, "不是可读的 ZIP 文件", "not a readable ZIP file"):
            zf = zipfile.ZipFile(self.path)
        with zf:
            infos = self._names(zf)
            manifest = self._manifest(zf, infos)
            self._members(zf, infos, manifest)
        head = self._archive_json()
        self._trust_members()
        self._events()
        self._head(head)

    def _names(self, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
        infos: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            name = info.filename
            if name in infos:
                raise invalid(name, "存档中成员重复", "the member occurs twice in the ZIP")
            if name.startswith(("/", "\\")) or ".." in name.split("/") or "\\" in name:
                raise invalid(name, "成员路径越界", "path traversal in a member name")
            if name not in FIXED_MEMBERS and not HASHED_MEMBER.match(name):
                raise invalid(name, "存档中有不应有的成员", "unexpected member in the archive")
            if info.flag_bits & 0x1:
                raise invalid(name, "成员被加密", "the member is encrypted")
            infos[name] = info
        for name in (MANIFEST, MANIFEST_SIG):
            if name not in infos:
                raise invalid(name, "存档缺少此成员", "the archive lacks this member")
        return infos

    def _read_small(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
        if info.file_size > limit:
            raise invalid(info.filename, "成员过大", f"the member is larger than {limit} bytes")
        with problems_at(info.filename, "ZIP 成员无法读取", "the ZIP member cannot be read"):
            with zf.open(info) as f:
                data = f.read(limit + 1)
            if len(data) > limit:
                raise Problem("成员过大", f"the member is larger than {limit} bytes")
        return data

    def _manifest(
        self, zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo]
    ) -> dict[str, dict[str, Any]]:
        manifest = self._read_small(zf, infos[MANIFEST], MAX_MANIFEST)
        signature = self._read_small(zf, infos[MANIFEST_SIG], MAX_MANIFEST)
        with problems_at(
            MANIFEST_SIG,
            "签名无法验证或不覆盖 manifest.json",
            "the signature does not verify or does not cover manifest.json",
        ):
            doc = read_document(signature)
            _strict_der(signature)
        if doc.content != manifest:
            raise invalid(
                f"{MANIFEST} / {MANIFEST_SIG}",
                "manifest.json 与其签名 manifest.p7s 不符",
                "manifest.json differs from what manifest.p7s signs",
            )
        self.signatures += 1
        self.manifest_doc = doc
        with problems_at(MANIFEST, "清单格式错误", "malformed manifest"):
            value = parse_json(manifest)
            if canonical_json(value) != manifest:
                raise Problem("清单不是规范 JSON", "the manifest is not canonical JSON")
            files = typed_field(value, "files", dict, "manifest")
            if set(value) != {"files"}:
                raise Problem("清单有多余字段", "the manifest has unexpected fields")
            for name, entry in files.items():
                if name in (MANIFEST, MANIFEST_SIG) or (
                    name not in FIXED_MEMBERS and not HASHED_MEMBER.match(name)
                ):
                    raise Problem(f"清单列出了非法成员名 {name}", f"bad member name {name!r}")
                hex64_field(entry, "sha256", name)
                size = typed_field(entry, "size", int, name)
                if size < 0 or set(entry) != {"sha256", "size"}:
                    raise Problem(f"{name} 条目格式错误", f"malformed entry for {name}")
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
                raise invalid(
                    name, "成员未列入 manifest.json", "the member is not in manifest.json"
                )
            if info.file_size != entry["size"]:
                raise invalid(
                    self._named(name, zf, infos),
                    f"大小 {info.file_size} 与清单 {entry['size']} 不符",
                    f"size {info.file_size} differs from the manifest's {entry['size']}",
                )
            sha = self._read_member(zf, info, entry["size"])
            if sha != entry["sha256"]:
                raise invalid(
                    self._named(name, zf, infos),
                    "SHA-256 与清单不符",
                    "SHA-256 differs from the manifest (changed?)",
                )
            self.actual_sha[name] = sha
            self.sizes[name] = entry["size"]
        for name in manifest:
            if name not in infos:
                raise invalid(
                    name, "清单列出的成员不在存档中", "listed in the manifest but missing"
                )
        for name in REQUIRED_MEMBERS:
            if name not in infos:
                raise invalid(name, "存档缺少此成员", "the archive lacks this member")

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
                events.append(EventRecord.model_validate(parse_json(line)))
        sha = blob_sha(name)
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
            raise invalid(name, "成员过大", f"the member is larger than {MAX_IN_MEMORY} bytes")
        parts: list[bytes] = []
        with problems_at(
            name, "ZIP 成员无法读取（已损坏？）", "the ZIP member cannot be read (damaged?)"
        ):
            target = self.tmp / f"{len(self.files)}.bin"
            sink: BinaryIO | None = target.open("wb") if to_disk else None
            try:
                with zf.open(info) as f:
                    while chunk := f.read(CHUNK):
                        total += len(chunk)
                        if total > size:
                            raise Problem("成员比清单所记更大", "the member is larger than listed")
                        h.update(chunk)
                        if sink is not None:
                            sink.write(chunk)
                        else:
                            parts.append(chunk)
            except zlib.error as exc:
                raise Problem("压缩数据损坏", "the compressed data is damaged", exc) from None
            finally:
                if sink is not None:
                    sink.close()
            if to_disk:
                self.files[name] = target
            else:
                self.data[name] = b"".join(parts)
        return h.hexdigest()

    def _archive_json(self) -> tuple[int, str]:
        with problems_at(ARCHIVE_JSON, "存档说明格式错误", "malformed archive description"):
            value = parse_json(self.data[ARCHIVE_JSON])
            expected = {"format", "version", "session_id", "exported_at", "head_seq", "head_hash"}
            # ``server_id`` is optional: archives exported before it was written lack it.
            if not isinstance(value, dict) or set(value) - {"server_id"} != expected:
                raise Problem(
                    "字段不符",
                    f"the fields must be exactly {sorted(expected)} (and optionally server_id)",
                )
            self.server_id: str | None = None
            if "server_id" in value:
                self.server_id = str(typed_field(value, "server_id", str, ARCHIVE_JSON))
                if not self.server_id:
                    raise Problem("server_id 为空", "server_id is empty")
            if value["format"] != FORMAT or value["version"] != VERSION:
                raise Problem(
                    "不是本版本的 BidBridge 存档", f"not a {FORMAT} version {VERSION} archive"
                )
            self.session_id = str(typed_field(value, "session_id", str, ARCHIVE_JSON))
            exported_at = typed_field(value, "exported_at", str, ARCHIVE_JSON)
            self.exported_at = parse_iso(exported_at)
            if iso(self.exported_at) != exported_at:
                raise Problem("exported_at 格式不规范", "exported_at is not in the canonical form")
            head_seq = int(typed_field(value, "head_seq", int, ARCHIVE_JSON))
            head_hash = hex64_field(value, "head_hash", ARCHIVE_JSON)
            if self.manifest_doc.signing_time != self.exported_at:
                raise Problem(
                    "exported_at 与清单签名的签名时间不符",
                    "exported_at differs from the signing time of manifest.p7s",
                )
        return head_seq, head_hash

    def _trust_members(self) -> None:
        for name in sorted(self.data):
            data = self.data[name]
            if name.startswith((TRUST_ROOTS, TRUST_INTERMEDIATES, CERTIFICATES)):
                with problems_at(name, "证书无法读取", "the certificate cannot be read"):
                    cert = x509.load_pem_x509_certificate(data)
                    der_bytes = cert_der(cert)
                    if cert_pem(cert) != data:
                        raise Problem("不是单个规范 PEM 证书", "not exactly one canonical PEM")
                    if name.rsplit("/", 1)[1] != f"{sha256_hex(der_bytes)}.pem":
                        raise Problem(
                            "文件名与证书 SHA-256 不符", "the name is not the certificate's SHA-256"
                        )
                if name.startswith(TRUST_ROOTS):
                    self.roots.append(cert)
                elif name.startswith(TRUST_INTERMEDIATES):
                    self.intermediates.append(cert)
                else:
                    self.party_certs[der_bytes] = cert
            elif name.startswith(TRUST_CRLS):
                with problems_at(name, "CRL 无法读取", "the CRL cannot be read"):
                    crl = x509.load_der_x509_crl(data)
                    if crl_der(crl) != data or name != f"{TRUST_CRLS}{sha256_hex(data)}.crl":
                        raise Problem(
                            "文件名与 CRL 的 SHA-256 不符", "the name is not the CRL's SHA-256"
                        )
                self.crls.append(crl)
        with problems_at(KEYS, "密钥清单格式错误", "malformed key list"):
            raw = self.data[KEYS]
            value = parse_json(raw)
            if not isinstance(value, dict) or canonical_json(value) != raw:
                raise Problem("不是规范 JSON 对象", "not a canonical JSON object")
            for sha, cek in value.items():
                if not HEX64.match(sha) or not isinstance(cek, str):
                    raise Problem(f"条目 {sha} 格式错误", f"malformed entry {sha!r}")
                self.keys[sha] = bytes.fromhex(cek)
        for name in self.files:
            if name.startswith(ENVELOPES):
                if self.actual_sha[name] != envelope_sha(name):
                    raise invalid(
                        name, "文件名与信封 SHA-256 不符", "the name is not the envelope's SHA-256"
                    )
            elif self.actual_sha[name] != blob_sha(name):
                raise invalid(
                    self._named(name),
                    "文件名与文件内容的 SHA-256 不符（内容已被改动）",
                    "the name is not the file's SHA-256 (the content changed)",
                )

    def _events(self) -> None:
        raw = self.data[EVENTS]
        if raw and not raw.endswith(b"\n"):
            raise invalid(EVENTS, "最后一行不完整", "the last line is incomplete")
        lines = raw.split(b"\n")[:-1] if raw else []
        prev = GENESIS
        for number, line in enumerate(lines, start=1):
            where = f"{EVENTS} line {number} (seq {number})"
            with problems_at(where, "事件无法解析", "the event cannot be parsed"):
                event = EventRecord.model_validate(parse_json(line))
            where = f"{EVENTS} seq {event.seq} ({event.type}), line {number}"
            if event.seq != number:
                raise invalid(
                    where,
                    f"序号不连续：应为 {number}",
                    f"seq is not contiguous: expected {number}",
                )
            if event.session_id != self.session_id:
                raise invalid(
                    where,
                    f"会话 {event.session_id} 与存档会话 {self.session_id} 不符",
                    f"session {event.session_id} is not the archive's {self.session_id}",
                )
            if event.prev_hash != prev:
                raise invalid(
                    where,
                    "prev_hash 与上一事件的哈希不符（哈希链断裂）",
                    "prev_hash is not the previous event's hash (the chain is broken)",
                )
            if event_hash(prev, event.model_dump()) != event.hash:
                raise invalid(
                    where,
                    "事件哈希与内容不符（内容已被改动）",
                    "the event's hash does not match its content (changed)",
                )
            if canonical_json(event.model_dump()) != line:
                raise invalid(where, "该行不是规范 JSON", "the line is not canonical JSON")
            with problems_at(where, "时间格式错误", "malformed instant"):
                parse_iso(event.at)
            self.events.append(event)
            prev = event.hash

    def _head(self, head: tuple[int, str]) -> None:
        seq = self.events[-1].seq if self.events else 0
        last = self.events[-1].hash if self.events else GENESIS
        if head != (seq, last):
            raise invalid(
                ARCHIVE_JSON,
                f"head_seq/head_hash 与事件日志末尾（seq {seq}）不符",
                f"head_seq/head_hash differ from the end of the event log (seq {seq})",
            )
