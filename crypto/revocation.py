"""Revocation as a set: which (issuer, serial) pairs the trusted CRLs name, checked in O(1).

Path validation (:mod:`crypto.trust`) judges a certificate once, at login. A token issued then
must end when a CRL later names the certificate, and every request checks that; validating the
chain per request would be far too slow. :class:`RevocationSet` is what each request consults:
the entries of every CRL whose signature verifies with the key of a CA the store knows (a root
or an intermediate with the CRL's issuer name), keyed by the issuer's name and the serial.

Revocation is permanent (RFC 5280 5.3.1), so an entry counts even after its CRL's nextUpdate:
an expired CRL can no longer prove a certificate good, but it still proves it revoked. The one
exception is ``certificateHold``, which a later CRL may lift: a hold counts only while it is in
the newest CRL of its issuer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from crypto.trust import CERT_SUFFIXES, CRL_SUFFIXES

CertKey = tuple[bytes, int]
"""(issuer name DER, serial number): what a CRL entry names."""


def cert_key(cert: x509.Certificate) -> CertKey:
    return cert.issuer.public_bytes(), cert.serial_number


@dataclass(frozen=True)
class RevokedEntry:
    """One certificate a trusted CRL names."""

    issuer: str
    serial: int
    revoked_at: datetime
    reason: str
    crl_this_update: datetime


def crl_signer(
    crl: x509.CertificateRevocationList, cas: Iterable[x509.Certificate]
) -> x509.Certificate | None:
    """The CA among ``cas`` (same subject as the CRL's issuer) whose key verifies ``crl``."""
    for ca in cas:
        if ca.subject != crl.issuer:
            continue
        try:
            if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return ca
        except (TypeError, ValueError):  # a key type that cannot sign CRLs
            continue
    return None


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        ext = entry.extensions.get_extension_for_class(x509.CRLReason)
    except (x509.ExtensionNotFound, ValueError):
        return "unspecified"
    return str(ext.value.reason.value)


class RevocationSet:
    """The certificates the verified CRLs name; :meth:`get` is one dictionary lookup."""

    def __init__(self, entries: dict[CertKey, RevokedEntry] | None = None) -> None:
        self._entries = entries or {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> frozenset[CertKey]:
        return frozenset(self._entries)

    def get(self, key: CertKey) -> RevokedEntry | None:
        return self._entries.get(key)

    @classmethod
    def from_crls(
        cls,
        crls: Sequence[x509.CertificateRevocationList],
        cas: Sequence[x509.Certificate],
    ) -> tuple[RevocationSet, list[x509.CertificateRevocationList]]:
        """The set from the CRLs whose signature verifies with one of ``cas``, and the CRLs
        that were left out (no CA of that name, or a signature that does not verify)."""
        verified: list[x509.CertificateRevocationList] = []
        refused: list[x509.CertificateRevocationList] = []
        for crl in crls:
            (verified if crl_signer(crl, cas) is not None else refused).append(crl)
        newest: dict[bytes, datetime] = {}
        for crl in verified:
            issuer = crl.issuer.public_bytes()
            at = crl.last_update_utc
            if issuer not in newest or at > newest[issuer]:
                newest[issuer] = at
        entries: dict[CertKey, RevokedEntry] = {}
        for crl in verified:
            issuer_der = crl.issuer.public_bytes()
            is_newest = crl.last_update_utc == newest[issuer_der]
            for item in crl:
                reason = _reason(item)
                if reason in ("certificateHold", "removeFromCRL") and not is_newest:
                    continue
                if reason == "removeFromCRL":
                    continue
                key = (issuer_der, item.serial_number)
                old = entries.get(key)
                if old is not None and old.crl_this_update >= crl.last_update_utc:
                    continue
                entries[key] = RevokedEntry(
                    issuer=crl.issuer.rfc4514_string(),
                    serial=item.serial_number,
                    revoked_at=item.revocation_date_utc,
                    reason=reason,
                    crl_this_update=crl.last_update_utc,
                )
        return cls(entries), refused


def distribution_points(cert: x509.Certificate) -> list[str]:
    """The HTTP(S) URLs of ``cert``'s CRL distribution points (LDAP and others are skipped)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
    except (x509.ExtensionNotFound, ValueError):
        return []
    urls: list[str] = []
    for point in ext.value:
        for name in point.full_name or ():
            if isinstance(name, x509.UniformResourceIdentifier):
                url = name.value
                if url.lower().startswith(("http://", "https://")) and url not in urls:
                    urls.append(url)
    return urls


def folder_stamp(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and modification times of the trust files in ``folder``: a cheap way to
    notice a change (the content digest catches a rewrite within one mtime tick)."""
    out: list[tuple[str, int, int]] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return ()
    for file in entries:
        if file.suffix.lower() not in CERT_SUFFIXES | CRL_SUFFIXES:
            continue
        try:
            st = file.stat()
        except OSError:
            continue
        out.append((file.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def folder_digest(folder: Path) -> str:
    """SHA-256 over the names and contents of the trust files in ``folder``."""
    digest = hashlib.sha256()
    for name, _size, _mtime in folder_stamp(folder):
        try:
            data = (folder / name).read_bytes()
        except OSError:
            continue
        digest.update(name.encode("utf-8") + b"\x00" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()
