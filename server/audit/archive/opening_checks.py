"""The checks specific to an opening: sealed bids, their keys, the table and the opening record."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from crypto.bid import decrypt_with_key, verify_envelope
from crypto.ca import credit_code_of, role_of
from crypto.errors import BidBridgeError
from schemas.canonical import canonical_json
from schemas.events import EventRecord
from schemas.time import parse_iso
from server.audit.archive.checks import EventChecks, none_before, require_host_or_supervisor
from server.audit.archive.format import KEYS, RECORD_JSON, envelope_member, sha256_hex
from server.audit.archive.problems import Problem, hex64_field, invalid, typed_field


class OpeningChecks(EventChecks):
    """An opening's events: ``bid_uploaded`` (the receipt and the envelope it names),
    ``bid_decrypted`` (the key in ``keys.json`` opens the envelope; ``deep``: its summary),
    ``table_published``/``table_confirmed`` and ``record_generated``/``record_signed``."""

    def __init__(self, path: Path, tmp: Path, deep: bool) -> None:
        super().__init__(path, tmp, deep)
        self.uploaded: dict[str, tuple[str, int]] = {}
        self.decrypted_keys: set[str] = set()
        self.table: Any = None
        self.table_sha: str | None = None
        self.record_sha: str | None = None
        self.bids_decrypted = 0

    def _uploader(self, sha: str) -> str:
        """The bidder who uploaded the envelope ``sha`` earlier (``""``: none did)."""
        return self.uploaded.get(sha, ("", 0))[0]

    def _check_bid_uploaded(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        bidder = typed_field(p, "bidder", str)
        receipt = typed_field(p, "receipt", dict)
        for key in ("receipt_id", "lot_id", "bidder", "session_id", "received_at"):
            typed_field(receipt, key, str, "receipt")
        sha = hex64_field(receipt, "envelope_sha256", "receipt")
        size = typed_field(receipt, "size", int, "receipt")
        if receipt["session_id"] != self.session_id or receipt["bidder"] != bidder:
            raise Problem(
                "回执的会话或投标人与事件不符",
                "the receipt's session or bidder differs from the event",
            )
        parse_iso(receipt["received_at"])
        name = envelope_member(sha)
        if name not in self.files:
            raise Problem(f"存档缺少信封文件 {name}", f"the archive lacks the envelope {name}")
        if self.actual_sha[name] != sha or self.sizes[name] != size:
            raise Problem(
                f"信封 {name} 的哈希或大小与回执不符",
                f"the envelope {name} differs from the receipt's hash or size",
            )
        doc = self._signed(where, p, "receipt_signature", canonical_json(receipt), at)
        self._server_signer(doc)
        replaces = p.get("replaces")
        if replaces is not None and (
            not isinstance(replaces, str) or self._uploader(replaces) != bidder
        ):
            raise Problem(
                "replaces 未指向该投标人此前上传的文件",
                "replaces does not name an earlier upload of this bidder",
            )
        self.uploaded[sha] = (bidder, event.seq)

    def _check_bid_decrypted(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        bidder = typed_field(p, "bidder", str)
        sha = hex64_field(p, "envelope_sha256")
        cek_sha = hex64_field(p, "cek_sha256")
        summary = typed_field(p, "summary", dict)
        if p.get("via") not in ("bidder", "backup"):
            raise Problem("via 须为 bidder 或 backup", "via must be 'bidder' or 'backup'")
        if self._uploader(sha) != bidder:
            raise Problem(
                "解密的信封不是该投标人此前上传的",
                "the decrypted envelope is not an earlier upload of this bidder",
            )
        cek = self.keys.get(sha)
        if cek is None:
            raise Problem(
                f"keys.json 中没有信封 {sha} 的密钥", f"keys.json holds no key for envelope {sha}"
            )
        if sha256_hex(cek) != cek_sha:
            raise Problem(
                "keys.json 中的密钥与事件的 cek_sha256 不符",
                "the key in keys.json does not match the event's cek_sha256",
            )
        path = self.files[envelope_member(sha)]
        try:
            report = verify_envelope(path, cek)
        except BidBridgeError as exc:
            raise Problem(
                "信封无法用此密钥验证（完整性或签名）",
                "the envelope does not verify with this key (integrity or signature)",
                exc,
            ) from None
        self.signatures += 1
        if credit_code_of(report.certificate) != bidder:
            raise Problem("投标文件签名人不是该投标人", "the bid's signer is not this bidder")
        self._use(where, report.certificate, report.certificates, at)
        if self.deep:
            out = self.tmp / f"deep-{event.seq}.zip"
            try:
                opened = decrypt_with_key(path, cek, out, expected_credit_code=bidder)
            except BidBridgeError as exc:
                raise Problem(
                    "投标文件包无法打开", "the bid package cannot be opened", exc
                ) from None
            finally:
                out.unlink(missing_ok=True)
            if opened.summary.model_dump(mode="json") != summary:
                raise Problem(
                    "投标摘要与解密出的 summary.json 不符",
                    "the summary differs from the decrypted summary.json",
                )
        self.decrypted_keys.add(sha)
        self.bids_decrypted += 1

    def _check_table_published(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        table = typed_field(p, "table", dict)
        digest = hex64_field(p, "table_sha256")
        if sha256_hex(canonical_json(table)) != digest:
            raise Problem("开标一览表与 table_sha256 不符", "the table does not match table_sha256")
        self.table, self.table_sha = table, digest

    def _check_table_confirmed(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        bidder = typed_field(p, "bidder", str)
        digest = hex64_field(p, "table_sha256")
        if self.table is None or digest != self.table_sha:
            raise Problem(
                "确认的不是最近发布的开标一览表",
                "the confirmation is not for the last published table",
            )
        doc = self._signed(where, p, "signature", canonical_json(self.table), at)
        if credit_code_of(doc.signer) != bidder:
            raise Problem("确认签名人不是该投标人", "the confirmation's signer is not this bidder")

    def _check_record_generated(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        digest = hex64_field(p, "record_sha256")
        doc = self._signed(where, p, "signature", None, at)
        if sha256_hex(doc.content) != digest:
            raise Problem(
                "签名的记录与 record_sha256 不符", "the signed record is not record_sha256"
            )
        self._server_signer(doc)
        self.record_sha = digest

    def _check_record_signed(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        role = typed_field(p, "role", str)
        typed_field(p, "account", str)
        require_host_or_supervisor(role)
        if self.record_sha is None:
            raise none_before("record_generated")
        doc = self._signed(where, p, "signature", None, at)
        if sha256_hex(doc.content) != self.record_sha:
            raise Problem(
                "所签的不是最近生成的开标记录",
                "the signature is not over the last generated record",
            )
        if role_of(doc.signer) != role:
            raise Problem(
                f"签名证书的角色不是 {role}",
                f"the signer's certificate is not a {role} certificate",
            )

    def _after_opening_events(self) -> None:
        """Every key was used; the record is the one the last ``record_generated`` names."""
        for sha in self.keys:
            if sha not in self.decrypted_keys:
                raise invalid(
                    KEYS,
                    f"密钥 {sha} 未被任何 bid_decrypted 事件使用",
                    f"the key for {sha} is used by no bid_decrypted event",
                )
        if self.record_sha is not None:
            record = self.data.get(RECORD_JSON)
            if record is None:
                raise invalid(RECORD_JSON, "存档缺少开标记录", "the record is missing")
            if sha256_hex(record) != self.record_sha:
                raise invalid(
                    RECORD_JSON,
                    "开标记录与最后一个 record_generated 事件的哈希不符",
                    "the record differs from the hash in the last record_generated event",
                )
