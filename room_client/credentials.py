"""The keys and certificates a party signs and decrypts with: key files or PKCS#11 tokens.

``Credentials`` holds the signing key (CA login, confirmations, record signatures) with its
certificate and chain, and optionally the decryption key of the company's encryption
certificate. Keys come from PEM, DER or PKCS#12 files or from tokens (CA 锁) named by RFC 7512
URIs; a token key never leaves the token.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from crypto.attest import b64encode, sign_document
from crypto.errors import BidBridgeError, KeyLoadFailed
from crypto.keys import (
    PrivateKeyHandle,
    check_key_matches,
    load_certificate,
    load_certificates,
    load_private_key,
)

PASSWORD_ENV = "BIDBRIDGE_KEY_PASSWORD"
"""Environment variable holding a key file's password (as ``crypto/cli.py``)."""
PIN_ENV = "BIDBRIDGE_PIN"
"""Environment variable holding the token (CA 锁) user PIN."""


def utc_now() -> datetime:
    """Now, in UTC, by this machine's clock (signing times; the server's clock rules deadlines)."""
    return datetime.now(UTC)


def _env_password() -> bytes | None:
    value = os.environ.get(PASSWORD_ENV)
    return value.encode() if value else None


def _env_pin() -> str | None:
    return os.environ.get(PIN_ENV) or None


def _load_handle(
    key_path: str | Path | None,
    cert_path: str | Path | None,
    token_uri: str | None,
    password: bytes | None,
    pin: str | None,
    what: str,
) -> tuple[PrivateKeyHandle, x509.Certificate, list[x509.Certificate]]:
    """A key (file or PKCS#11 token) and its certificate; the chain a PKCS#12 file carried."""
    chain: list[x509.Certificate] = []
    cert: x509.Certificate | None = None
    if token_uri:
        from crypto.token import find_certificate, open_token_key

        key: PrivateKeyHandle = open_token_key(token_uri, pin)
        cert = load_certificate(cert_path) if cert_path else find_certificate(token_uri, pin)
    elif key_path:
        loaded = load_private_key(key_path, password)
        key = loaded.key
        cert = load_certificate(cert_path) if cert_path else loaded.certificate
        chain = loaded.chain
    else:
        raise KeyLoadFailed(f"{what}: 需要私钥文件或 CA 锁 URI / give a key file or a token URI")
    if cert is None:
        _close(key)
        raise KeyLoadFailed(f"{what}: 找不到证书 / no certificate: give its certificate file")
    try:
        check_key_matches(key, cert)
    except BidBridgeError:
        _close(key)
        raise
    return key, cert, chain


def _close(key: object) -> None:
    closer = getattr(key, "close", None)
    if callable(closer):
        with contextlib.suppress(Exception):
            closer()


@dataclass
class Credentials:
    """The signing key (CA login, confirmations, record signatures) with its certificate and
    chain; optionally the decryption key of the company's encryption certificate (rehearsal and
    online decryption). Keys are files or PKCS#11 tokens; a token key never leaves the token."""

    signing_key: PrivateKeyHandle
    signing_cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)
    decrypt_key: PrivateKeyHandle | None = None
    decrypt_cert: x509.Certificate | None = None

    @classmethod
    def load(
        cls,
        *,
        key: str | Path | None = None,
        cert: str | Path | None = None,
        token_uri: str | None = None,
        chain: Sequence[str | Path] = (),
        decrypt_key: str | Path | None = None,
        decrypt_cert: str | Path | None = None,
        decrypt_token_uri: str | None = None,
        password: bytes | None = None,
        pin: str | None = None,
    ) -> Credentials:
        """Load from files (PEM, DER, PKCS#12) or token URIs (RFC 7512).

        The key file password defaults to ``$BIDBRIDGE_KEY_PASSWORD``, the token PIN to
        ``$BIDBRIDGE_PIN`` (else the URI's ``pin-value`` / ``pin-source``).
        """
        password = password if password is not None else _env_password()
        pin = pin if pin is not None else _env_pin()
        skey, scert, p12_chain = _load_handle(key, cert, token_uri, password, pin, "signing key")
        extra = [c for p in chain for c in load_certificates(p)]
        dkey: PrivateKeyHandle | None = None
        dcert: x509.Certificate | None = None
        if decrypt_key or decrypt_token_uri:
            try:
                dkey, dcert, _ = _load_handle(
                    decrypt_key, decrypt_cert, decrypt_token_uri, password, pin, "decryption key"
                )
            except BaseException:
                _close(skey)
                raise
        elif decrypt_cert:
            raise KeyLoadFailed(
                "decryption key: 只给了证书 / only a certificate: give --decrypt-key or a token URI"
            )
        return cls(skey, scert, p12_chain + extra, dkey, dcert)

    def sign(self, content: bytes, at: datetime | None = None) -> str:
        """base64 of a CMS SignedData over ``content`` (crypto.attest's one signature format)."""
        der = sign_document(
            content, self.signing_key, self.signing_cert, at=at or utc_now(), chain=self.chain
        )
        return b64encode(der)

    def require_decrypt(self) -> tuple[PrivateKeyHandle, x509.Certificate | None]:
        if self.decrypt_key is None:
            raise KeyLoadFailed(
                "需要加密证书对应的私钥（--decrypt-key 或 --decrypt-token-uri）/ the encryption "
                "certificate's private key is needed (--decrypt-key or --decrypt-token-uri)"
            )
        return self.decrypt_key, self.decrypt_cert

    def close(self) -> None:
        """Close token sessions (a no-op for keys from files)."""
        _close(self.signing_key)
        if self.decrypt_key is not None and self.decrypt_key is not self.signing_key:
            _close(self.decrypt_key)
