"""The platform's own signing identity and the trust store it validates parties against."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crypto.attest import b64encode, sign_document
from crypto.keys import PrivateKeyHandle, load_certificates, load_private_key
from crypto.trust import TrustStore
from schemas.canonical import canonical_json


def cert_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass
class ServerIdentity:
    """The key the server signs receipts, checkpoints and records with (平台签章)."""

    key: PrivateKeyHandle
    certificate: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)

    @classmethod
    def from_directory(cls, path: Path) -> ServerIdentity:
        """``server.key`` and ``server.pem`` (certificate first, then its chain) in ``path``."""
        certs = load_certificates(path / "server.pem")
        loaded = load_private_key(path / "server.key")
        return cls(loaded.key, certs[0], certs[1:])

    def sign(self, content: bytes, at: datetime) -> bytes:
        return sign_document(content, self.key, self.certificate, at=at, chain=self.chain)

    def sign_json(self, value: object, at: datetime) -> str:
        """Base64 of the signed document over ``canonical_json(value)``."""
        return b64encode(self.sign(canonical_json(value), at))


def load_trust(path: Path) -> TrustStore:
    """The trust store of the centre: roots, intermediates and CRLs in one folder (CA 互认)."""
    return TrustStore.from_directory(path)
