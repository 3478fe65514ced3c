"""Signed documents: a CMS SignedData that carries a small document (JSON bytes) inside.

One format for every signature the platform keeps: the server's bid receipts and checkpoints,
login challenges, bidders' confirmations of the opening table, the signatures on the opening
record. ``openssl cms -verify -inform DER`` reads them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from crypto import der
from crypto.errors import EnvelopeMalformed, SignatureInvalid
from crypto.keys import PrivateKeyHandle
from crypto.signed_data import build_signed_data_frame, read_signed_data

MAX_DOCUMENT = 4 * 1024 * 1024
"""Signed documents are small; anything larger is refused before it is parsed."""


@dataclass(frozen=True)
class SignedDocument:
    """A verified signed document: the signed bytes and who signed them."""

    content: bytes
    signer: x509.Certificate
    certificates: list[x509.Certificate]
    signing_time: datetime | None


def sign_document(
    content: bytes,
    key: PrivateKeyHandle,
    cert: x509.Certificate,
    *,
    at: datetime,
    chain: Sequence[x509.Certificate] = (),
) -> bytes:
    """DER ContentInfo(SignedData) with ``content`` inside, signed by ``key``."""
    frame = build_signed_data_frame(
        content_digest=hashlib.sha256(content).digest(),
        content_length=len(content),
        signer=key,
        signer_cert=cert,
        chain=chain,
        signing_time=at,
    )
    return frame.prefix + content + frame.suffix


def read_document(signature: bytes) -> SignedDocument:
    """Verify the signature of a signed document and return its content and signer.

    This checks the signature itself; whether the signer's certificate is trusted, for which
    purpose and at which instant is the caller's question (``crypto.trust.TrustStore``).
    """
    if len(signature) > MAX_DOCUMENT:
        raise EnvelopeMalformed(f"signed document larger than {MAX_DOCUMENT} bytes")
    parts: list[bytes] = []
    reader = der.Reader(der.ChunkStream(iter([signature])))
    report = read_signed_data(reader, parts.append)
    reader.at_eof()
    return SignedDocument(
        b"".join(parts), report.certificate, report.certificates, report.signing_time
    )


def verify_document(signature: bytes, expected: bytes) -> SignedDocument:
    """Like :func:`read_document`, and the signed content must be exactly ``expected``."""
    doc = read_document(signature)
    if doc.content != expected:
        raise SignatureInvalid("签名内容与文档不一致 / the signature covers a different document")
    return doc


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str = "signature") -> bytes:
    """Strict base64; a malformed value raises ``EnvelopeMalformed`` naming ``what``."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise EnvelopeMalformed(f"{what}: 不是有效的 base64 / not valid base64") from None
