"""Private keys wherever they live (PEM, PKCS#12, PKCS#11 token) behind one small interface.

A token key never leaves its token: the interface only asks a key to sign, to decrypt a
key-transport blob, or to agree an ECDH secret. ``crypto.token`` implements it for PKCS#11;
``SoftwareKey`` implements it for keys held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidKey, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from crypto.errors import KeyCertificateMismatch, KeyLoadFailed, KeyUnwrapFailed

HashName = Literal["sha1", "sha256", "sha384", "sha512"]
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    """The cryptography hash object for a lower-case name such as ``sha256``."""
    try:
        return _HASHES[name]()
    except KeyError:
        raise KeyLoadFailed(f"unsupported hash {name}") from None


@dataclass(frozen=True)
class KeyTransportPadding:
    """How a content-encryption key was encrypted to an RSA recipient."""

    scheme: Literal["oaep", "pkcs1v15"]
    hash: HashName = "sha256"
    mgf_hash: HashName = "sha256"

    def to_cryptography(self) -> padding.AsymmetricPadding:
        if self.scheme == "pkcs1v15":
            return padding.PKCS1v15()
        return padding.OAEP(
            mgf=padding.MGF1(hash_algorithm(self.mgf_hash)),
            algorithm=hash_algorithm(self.hash),
            label=None,
        )


@runtime_checkable
class PrivateKeyHandle(Protocol):
    """A private key that can sign, decrypt a wrapped key, or agree an ECDH secret."""

    @property
    def public_key(self) -> PublicKey: ...

    def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
        """RSA PKCS#1 v1.5 or ECDSA (DER-encoded) signature over ``data``."""
        ...

    def decrypt_key_transport(self, encrypted_key: bytes, pad: KeyTransportPadding) -> bytes:
        """RSA-decrypt a key-transport blob; raise ``KeyUnwrapFailed`` on failure."""
        ...

    def ecdh(self, peer: ec.EllipticCurvePublicKey) -> bytes:
        """The raw ECDH shared secret (the x-coordinate) with ``peer``."""
        ...


class SoftwareKey:
    """A private key held in memory (loaded from a PEM, DER or PKCS#12 file)."""

    def __init__(self, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key()

    @property
    def private_key(self) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
        return self._key

    def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
        algo = hash_algorithm(hash_name)
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.sign(data, padding.PKCS1v15(), algo)
        return self._key.sign(data, ec.ECDSA(algo))

    def decrypt_key_transport(self, encrypted_key: bytes, pad: KeyTransportPadding) -> bytes:
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise KeyUnwrapFailed("an EC key cannot decrypt an RSA key-transport recipient")
        try:
            return self._key.decrypt(encrypted_key, pad.to_cryptography())
        except ValueError as exc:
            raise KeyUnwrapFailed(str(exc) or "RSA decryption failed") from None

    def ecdh(self, peer: ec.EllipticCurvePublicKey) -> bytes:
        if not isinstance(self._key, ec.EllipticCurvePrivateKey):
            raise KeyUnwrapFailed("an RSA key cannot agree an ECDH secret")
        try:
            return self._key.exchange(ec.ECDH(), peer)
        except (ValueError, InvalidKey) as exc:
            raise KeyUnwrapFailed(str(exc) or "ECDH failed") from None


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyLoadFailed(f"{path}: {exc.strerror}") from None


def load_certificate(path: str | Path) -> x509.Certificate:
    """A certificate from a PEM or DER file."""
    return parse_certificate(_read(path), str(path))


def parse_certificate(data: bytes, where: str = "certificate") -> x509.Certificate:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise KeyLoadFailed(f"{where}: not a certificate ({exc})") from None


def load_certificates(path: str | Path) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (or the one in a DER file)."""
    data = _read(path)
    if b"-----BEGIN" in data:
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError as exc:
            raise KeyLoadFailed(f"{path}: {exc}") from None
    return [parse_certificate(data, str(path))]


@dataclass
class LoadedKey:
    """A software key, with the certificate and chain a PKCS#12 file carried (if any)."""

    key: SoftwareKey
    certificate: x509.Certificate | None
    chain: list[x509.Certificate]


def load_private_key(path: str | Path, password: bytes | None = None) -> LoadedKey:
    """A private key from a PEM, DER (PKCS#8) or PKCS#12 file."""
    data = _read(path)
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password)
            return LoadedKey(_software(key, path), None, [])
        try:
            key = serialization.load_der_private_key(data, password)
            return LoadedKey(_software(key, path), None, [])
        except ValueError:
            pass
        p12 = pkcs12.load_pkcs12(data, password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyLoadFailed(f"{path}: {exc}") from None
    if p12.key is None:
        raise KeyLoadFailed(f"{path}: the PKCS#12 file holds no private key")
    cert = p12.cert.certificate if p12.cert else None
    chain = [c.certificate for c in p12.additional_certs]
    return LoadedKey(_software(p12.key, path), cert, chain)


def _software(key: object, path: str | Path) -> SoftwareKey:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyLoadFailed(f"{path}: only RSA and EC keys are supported")
    return SoftwareKey(key)


def public_key_of(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise KeyLoadFailed("only RSA and EC certificates are supported")
    return key


def check_key_matches(key: PrivateKeyHandle, cert: x509.Certificate) -> None:
    """Raise ``KeyCertificateMismatch`` unless ``key`` is the private half of ``cert``."""
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key.public_bytes(*spki) != public_key_of(cert).public_bytes(*spki):
        raise KeyCertificateMismatch(cert.subject.rfc4514_string())
