"""备用解密: a project's backup private key split k-of-n among custodians (DESIGN 5, rule 9).

Theory of operation. A fresh 32-byte key-encryption key ``K`` encrypts the backup private key
(PKCS#8 DER) with AES-256-GCM; the additional authenticated data binds the bundle's ``key_id``,
``k``, ``n``, label and the backup certificate's SHA-256, so the ciphertext cannot be moved to
another bundle or certificate. ``K`` is what is Shamir-shared: pycryptodome's ``Shamir`` works
on 16-byte secrets over GF(2^128), so each half of ``K`` is split separately with the same share
indices 1..n, and custodian ``i`` holds both half-shares for index ``i``. Each share (with the
key_id, k, n and index it belongs to) is sealed in a CMS AuthEnvelopedData to exactly one
custodian's encryption certificate.

Rebuilding interpolates ``K`` from every distinct share given (any k of them determine the
polynomial; more than k consistent shares give the same ``K``) and decrypts the private key.
A wrong share yields a wrong ``K`` and the GCM tag fails: a bad rebuild is detected by an
authenticated check, never by luck. Nothing here decides *when* a rebuild is allowed (after the
deadline, named bids, k signed approvals): that is the opening's state machine's job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from Crypto.Protocol.SecretSharing import Shamir
from cryptography import x509
from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.envelope import Recipient, open_bytes, seal_bytes
from crypto.errors import (
    KeyCertificateMismatch,
    NotARecipient,
    QuorumError,
    QuorumInsufficientShares,
    QuorumRebuildFailed,
)
from crypto.keys import PrivateKeyHandle, SoftwareKey

BackupPrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

MIN_K = 2
"""At least two custodians: a 1-of-n split would let any single custodian open every bid."""
MAX_N = 255

BUNDLE_FORMAT = "bidbridge-quorum-bundle"
SHARE_FORMAT = "bidbridge-quorum-share"
VERSION = 1

_KEK_BYTES = 32
_HALF = 16
_NONCE_BYTES = 12


# --- small helpers ---------------------------------------------------------------------------


def certificate_sha256(cert: x509.Certificate) -> str:
    """The certificate's SHA-256 fingerprint (lower-case hex), as shown to custodians."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise QuorumError(f"{what}: expected a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise QuorumError(f"{what}: not valid base64") from None


def _int(obj: Mapping[str, object], name: str, where: str) -> int:
    value = obj[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise QuorumError(f"{where}.{name}: expected an integer")
    return value


def _str(obj: Mapping[str, object], name: str, where: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise QuorumError(f"{where}.{name}: expected a string")
    return value


def _object(value: object, keys: set[str], where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise QuorumError(f"{where}: expected a JSON object")
    if set(value) != keys:
        missing = sorted(keys - set(value))
        extra = sorted(set(value) - keys)
        raise QuorumError(f"{where}: missing fields {missing}, unknown fields {extra}")
    return value


def _load_json(text: str | bytes, where: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise QuorumError(f"{where}: not JSON ({exc})") from None


def _head(format: str, key_id: str, k: int, n: int) -> dict[str, object]:
    """The fields a share and a bundle begin with: what it is, and which k-of-n split."""
    return {"format": format, "version": VERSION, "key_id": key_id, "k": k, "n": n}


def _check_format(obj: Mapping[str, object], expected: str, where: str) -> None:
    if obj["format"] != expected:
        raise QuorumError(f"{where}: format {obj['format']!r}, expected {expected!r}")
    if obj["version"] != VERSION or isinstance(obj["version"], bool):
        raise QuorumError(f"{where}: unsupported version {obj['version']!r}")


def _check_k_n(k: int, n: int) -> None:
    if not MIN_K <= k <= n <= MAX_N:
        raise QuorumError(f"need {MIN_K} <= k <= n <= {MAX_N}, got k={k}, n={n}")


def _aad(key_id: str, k: int, n: int, label: str, cert: x509.Certificate) -> bytes:
    return json.dumps(
        [BUNDLE_FORMAT, VERSION, key_id, k, n, label, certificate_sha256(cert)],
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecryptedShare:
    """One custodian's share in the clear: what ``open_share`` yields and ``rebuild`` takes.

    ``value`` is the two 16-byte Shamir half-shares for ``index``, concatenated. It is secret:
    hand it to the rebuild over a confidential channel and drop it afterwards.
    """

    key_id: str
    k: int
    n: int
    index: int
    value: bytes = field(repr=False)
    custodian_sha256: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                **_head(SHARE_FORMAT, self.key_id, self.k, self.n),
                "index": self.index,
                "value": _b64(self.value),
                "custodian_sha256": self.custodian_sha256,
            },
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> DecryptedShare:
        where = "share"
        obj = _object(
            _load_json(text, where),
            {"format", "version", "key_id", "k", "n", "index", "value", "custodian_sha256"},
            where,
        )
        _check_format(obj, SHARE_FORMAT, where)
        share = cls(
            key_id=_str(obj, "key_id", where),
            k=_int(obj, "k", where),
            n=_int(obj, "n", where),
            index=_int(obj, "index", where),
            value=_unb64(obj["value"], f"{where}.value"),
            custodian_sha256=_str(obj, "custodian_sha256", where),
        )
        _check_k_n(share.k, share.n)
        if not 1 <= share.index <= share.n or len(share.value) != 2 * _HALF:
            raise QuorumError(f"share #{share.index} of {share.n} is malformed")
        return share


@dataclass(frozen=True)
class QuorumShare:
    """One share as stored in the bundle: sealed (CMS) to one custodian's certificate."""

    index: int
    envelope: bytes = field(repr=False)
    custodian_subject: str
    custodian_sha256: str


@dataclass(frozen=True)
class QuorumBundle:
    """The backup key split k-of-n: safe to store and publish; useless without k custodians."""

    key_id: str
    k: int
    n: int
    label: str
    certificate: x509.Certificate
    encrypted_private_key: bytes = field(repr=False)
    nonce: bytes
    shares: tuple[QuorumShare, ...]

    @property
    def certificate_sha256(self) -> str:
        return certificate_sha256(self.certificate)

    def share_for(self, custodian_cert: x509.Certificate) -> QuorumShare:
        """The share sealed to ``custodian_cert``; ``NotARecipient`` if it holds none."""
        fingerprint = certificate_sha256(custodian_cert)
        for share in self.shares:
            if share.custodian_sha256 == fingerprint:
                return share
        raise NotARecipient(
            f"{custodian_cert.subject.rfc4514_string()} holds no share of backup key {self.key_id}"
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                **_head(BUNDLE_FORMAT, self.key_id, self.k, self.n),
                "label": self.label,
                "certificate": _b64(self.certificate.public_bytes(serialization.Encoding.DER)),
                "encrypted_private_key": _b64(self.encrypted_private_key),
                "nonce": _b64(self.nonce),
                "shares": [
                    {
                        "index": s.index,
                        "envelope": _b64(s.envelope),
                        "custodian_subject": s.custodian_subject,
                        "custodian_sha256": s.custodian_sha256,
                    }
                    for s in self.shares
                ],
            },
            ensure_ascii=False,
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> QuorumBundle:
        """Parse strictly: unknown or missing fields, bad base64 or counts raise ``QuorumError``."""
        where = "bundle"
        obj = _object(
            _load_json(text, where),
            {
                "format",
                "version",
                "key_id",
                "k",
                "n",
                "label",
                "certificate",
                "encrypted_private_key",
                "nonce",
                "shares",
            },
            where,
        )
        _check_format(obj, BUNDLE_FORMAT, where)
        k, n = _int(obj, "k", where), _int(obj, "n", where)
        _check_k_n(k, n)
        try:
            cert = x509.load_der_x509_certificate(_unb64(obj["certificate"], "certificate"))
        except ValueError as exc:
            raise QuorumError(f"bundle.certificate: not a certificate ({exc})") from None
        nonce = _unb64(obj["nonce"], "bundle.nonce")
        if len(nonce) != _NONCE_BYTES:
            raise QuorumError(f"bundle.nonce: {len(nonce)} bytes, expected {_NONCE_BYTES}")
        raw_shares = obj["shares"]
        if not isinstance(raw_shares, list) or len(raw_shares) != n:
            raise QuorumError(f"bundle.shares: expected a list of {n} shares")
        shares: list[QuorumShare] = []
        for i, raw in enumerate(raw_shares):
            w = f"bundle.shares[{i}]"
            s = _object(raw, {"index", "envelope", "custodian_subject", "custodian_sha256"}, w)
            shares.append(
                QuorumShare(
                    index=_int(s, "index", w),
                    envelope=_unb64(s["envelope"], f"{w}.envelope"),
                    custodian_subject=_str(s, "custodian_subject", w),
                    custodian_sha256=_str(s, "custodian_sha256", w),
                )
            )
        if sorted(s.index for s in shares) != list(range(1, n + 1)):
            raise QuorumError(f"bundle.shares: indices must be 1..{n}, each once")
        return cls(
            key_id=_str(obj, "key_id", where),
            k=k,
            n=n,
            label=_str(obj, "label", where),
            certificate=cert,
            encrypted_private_key=_unb64(
                obj["encrypted_private_key"], f"{where}.encrypted_private_key"
            ),
            nonce=nonce,
            shares=tuple(shares),
        )


# --- splitting -------------------------------------------------------------------------------


def split_backup_key(
    private_key: BackupPrivateKey,
    certificate: x509.Certificate,
    custodians: Sequence[x509.Certificate],
    k: int,
    *,
    label: str = "",
) -> QuorumBundle:
    """Split the backup private key k-of-n, one share sealed to each custodian's certificate.

    Custodian certificates must be encryption certificates (RSA keyEncipherment or EC
    keyAgreement); a signing certificate is refused with ``WrongKeyUsage`` by the envelope.
    ``label`` (e.g. the project code) is for people and is bound into the authenticated data.
    """
    n = len(custodians)
    _check_k_n(k, n)
    if _spki(certificate) != private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise KeyCertificateMismatch("the backup private key does not match its certificate")
    if (
        len({certificate_sha256(c) for c in custodians}) != n
        or len({_spki(c) for c in custodians}) != n
    ):
        raise QuorumError("each custodian must be a different certificate and key")

    key_id = secrets.token_hex(16)
    kek = os.urandom(_KEK_BYTES)
    nonce = os.urandom(_NONCE_BYTES)
    pkcs8 = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    ciphertext = AESGCM(kek).encrypt(nonce, pkcs8, _aad(key_id, k, n, label, certificate))
    low = Shamir.split(k, n, kek[:_HALF])
    high = Shamir.split(k, n, kek[_HALF:])

    shares: list[QuorumShare] = []
    for custodian, (index, low_share), (high_index, high_share) in zip(
        custodians, low, high, strict=True
    ):
        assert index == high_index
        fingerprint = certificate_sha256(custodian)
        clear = DecryptedShare(key_id, k, n, index, low_share + high_share, fingerprint)
        shares.append(
            QuorumShare(
                index=index,
                envelope=seal_bytes(clear.to_json().encode("utf-8"), [Recipient(custodian)]),
                custodian_subject=custodian.subject.rfc4514_string(),
                custodian_sha256=fingerprint,
            )
        )
    return QuorumBundle(key_id, k, n, label, certificate, ciphertext, nonce, tuple(shares))


# --- the custodian's side --------------------------------------------------------------------


def open_share(
    source: QuorumBundle | QuorumShare,
    custodian_key: PrivateKeyHandle,
    custodian_cert: x509.Certificate,
) -> DecryptedShare:
    """Decrypt one custodian's share with their key (file or token).

    Given the bundle, the custodian's own share is found by certificate; given a single share
    sealed to someone else, the envelope raises ``NotARecipient``.
    """
    share = source.share_for(custodian_cert) if isinstance(source, QuorumBundle) else source
    clear = DecryptedShare.from_json(open_bytes(share.envelope, custodian_key, custodian_cert))
    if clear.index != share.index:
        raise QuorumError(f"share #{share.index} decrypts to index {clear.index}")
    if isinstance(source, QuorumBundle) and (clear.key_id, clear.k, clear.n) != (
        source.key_id,
        source.k,
        source.n,
    ):
        raise QuorumRebuildFailed(f"share #{share.index} belongs to backup key {clear.key_id}")
    return clear


# --- rebuilding ------------------------------------------------------------------------------


def rebuild_backup_key(bundle: QuorumBundle, shares: Sequence[DecryptedShare]) -> SoftwareKey:
    """Rebuild the backup private key from at least k custodians' decrypted shares.

    A share of another bundle, or two different values for one index, raise
    ``QuorumRebuildFailed``; identical duplicates count once; fewer than k distinct shares
    raise ``QuorumInsufficientShares``; a wrong share value fails the AES-GCM tag.
    """
    distinct: dict[int, bytes] = {}
    for share in shares:
        if share.key_id != bundle.key_id:
            raise QuorumRebuildFailed(
                f"share #{share.index} belongs to backup key {share.key_id}, not {bundle.key_id}"
            )
        if (share.k, share.n) != (bundle.k, bundle.n) or not 1 <= share.index <= bundle.n:
            raise QuorumRebuildFailed(
                f"share #{share.index} ({share.k} of {share.n}) does not fit this "
                f"{bundle.k}-of-{bundle.n} bundle"
            )
        if len(share.value) != 2 * _HALF:
            raise QuorumRebuildFailed(f"share #{share.index} has {len(share.value)} bytes")
        seen = distinct.setdefault(share.index, share.value)
        if seen != share.value:
            raise QuorumRebuildFailed(f"two different values were given for share #{share.index}")
    if len(distinct) < bundle.k:
        raise QuorumInsufficientShares(
            f"{len(distinct)} distinct share(s) given, {bundle.k} of {bundle.n} needed"
        )

    # Every distinct share takes part, so a wrong one cannot hide behind k good ones.
    points = sorted(distinct.items())
    kek = Shamir.combine([(i, v[:_HALF]) for i, v in points]) + Shamir.combine(
        [(i, v[_HALF:]) for i, v in points]
    )
    aad = _aad(bundle.key_id, bundle.k, bundle.n, bundle.label, bundle.certificate)
    try:
        pkcs8 = AESGCM(kek).decrypt(bundle.nonce, bundle.encrypted_private_key, aad)
    except InvalidTag:
        raise QuorumRebuildFailed(
            f"the rebuilt key-encryption key fails the integrity check "
            f"(shares {[i for i, _ in points]})"
        ) from None
    try:
        key = serialization.load_der_private_key(pkcs8, password=None)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise QuorumRebuildFailed(f"the decrypted private key cannot be read ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise QuorumRebuildFailed(f"unexpected key type {type(key).__name__}")
    if _spki(bundle.certificate) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise QuorumRebuildFailed("the rebuilt key does not match the backup certificate")
    return SoftwareKey(key)
