"""What the per-event checks of every session kind share: signatures, their signers, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from crypto.attest import SignedDocument, b64decode, read_document
from crypto.ca import role_of
from crypto.errors import BidBridgeError
from crypto.trust import Purpose
from schemas.canonical import canonical_json
from schemas.events import EventRecord
from server.audit.archive.format import cert_der
from server.audit.archive.problems import Problem, hex64_field, typed_field
from server.audit.archive.reader import ArchiveReader

_SERVER_ROLE = "centre"
_HOST_OR_SUPERVISOR = ("host", "supervisor")


def require_host_or_supervisor(role: str) -> None:
    """The roles that add the draw's entropy and sign the opening record."""
    if role not in _HOST_OR_SUPERVISOR:
        raise Problem("role 须为 host 或 supervisor", "role must be host or supervisor")


def none_before(event_type: str) -> Problem:
    """The problem of a check that needs an earlier ``event_type`` event."""
    return Problem(f"此前没有 {event_type} 事件", f"no {event_type} event before")


@dataclass
class _Use:
    """A signer certificate used at an instant, to validate against the trust store."""

    where: str
    cert: x509.Certificate
    extra: list[x509.Certificate]
    at: datetime
    purpose: Purpose = "bid_signature"
    """``login`` for an expert's sign-in; every other signature is a ``bid_signature``."""


class EventChecks(ArchiveReader):
    """The checks of one event are its ``_check_<type>`` method, defined here for the events of
    every session kind and in :mod:`.opening_checks` and :mod:`.evaluation_checks` for the rest.
    A check raises :class:`.problems.Problem`; the caller names the event."""

    def __init__(self, path: Path, tmp: Path, deep: bool) -> None:
        super().__init__(path, tmp)
        self.deep = deep
        self.uses: list[_Use] = []
        self.kind = "opening"

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
        text = typed_field(payload, key, str)
        try:
            doc = read_document(b64decode(text, key))
        except BidBridgeError as exc:
            raise Problem(
                f"签名 {key} 无效", f"the signature {key!r} does not verify", exc
            ) from None
        if expected is not None and doc.content != expected:
            raise Problem(
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
        if cert_der(cert) not in self.party_certs:
            raise Problem(
                f"签名证书（{cert.subject.rfc4514_string()}）未收录于 certificates/",
                f"the signer's certificate ({cert.subject.rfc4514_string()}) is not in "
                "certificates/",
            )
        self.uses.append(_Use(where, cert, extra, at, purpose))

    def _earlier(self, seq: int, event: EventRecord) -> EventRecord | None:
        """Event ``seq`` of this log, if it comes before ``event``."""
        return self.events[seq - 1] if 1 <= seq < event.seq else None

    @staticmethod
    def _server_signer(doc: SignedDocument) -> None:
        if role_of(doc.signer) != _SERVER_ROLE:
            raise Problem(
                "签名人不是平台（交易中心）证书",
                "the signer is not the platform's (centre) certificate",
            )

    def _check_checkpoint(self, event: EventRecord, where: str, at: datetime) -> None:
        p = event.payload
        seq = typed_field(p, "seq", int)
        digest = hex64_field(p, "hash")
        status = typed_field(p, "status", str)
        earlier = self._earlier(seq, event)
        if earlier is None:
            raise Problem(
                f"检查点指向的序号 {seq} 不在此前", f"the checkpoint's seq {seq} is not earlier"
            )
        if earlier.hash != digest:
            raise Problem(
                f"检查点的哈希与 seq {seq} 的哈希不符",
                f"the checkpoint's hash is not the hash of seq {seq}",
            )
        signed = canonical_json(
            {"session_id": self.session_id, "seq": seq, "hash": digest, "status": status}
        )
        self._server_signer(self._signed(where, p, "signature", signed, at))

    def _check_session_created(self, event: EventRecord, where: str, at: datetime) -> None:
        kind = event.payload.get("kind", "opening")
        if event.seq == 1 and isinstance(kind, str):
            self.kind = kind
