"""Seal and open bid files: sign-then-encrypt a package, and open it back with full checks.

``seal_bid`` runs on the bidder's machine, offline. Opening has two forms: all in one place
(``open_bid`` with a private key, the ``bidbridge open`` command), and split for the online
opening: ``unwrap`` on the bidder's machine (envelope + key -> content-encryption key) and
``decrypt_with_key`` on the server (envelope + content-encryption key -> verified package).

No plaintext is written anywhere before the envelope's integrity tag and the bidder's signature
have both been checked: opening reads the ciphertext twice, first to verify, then to extract.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cryptography import x509

from crypto import der
from crypto.ca import credit_code_of
from crypto.envelope import (
    EnvelopeInfo,
    Recipient,
    decrypt_stream,
    inspect_envelope,
    seal_stream,
    unwrap_content_key,
)
from crypto.errors import (
    BidBridgeError,
    EnvelopeTampered,
    OutputExists,
    SignerNotBidder,
    SummaryInvalid,
)
from crypto.keys import PrivateKeyHandle
from crypto.package import (
    PackageInfo,
    SealingMachine,
    build_package,
    extract_package,
    verify_package,
)
from crypto.signed_data import SignerReport, build_signed_data_frame, read_signed_data
from schemas.bid import BidSummary, EnvelopeKind

if TYPE_CHECKING:
    from crypto.trust import TrustStore

_CHUNK = der.CHUNK


@dataclass(frozen=True)
class SealResult:
    path: Path
    sha256: str
    size: int
    summary: BidSummary
    package_sha256: str
    package_size: int
    sealing_machine: str | None = None


@contextlib.contextmanager
def _atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Write to a temporary file beside ``path``; rename into place only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _hidden_sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name beside ``path`` for work that is renamed into place when done."""
    return path.with_name(f".{path.name}.{os.urandom(6).hex()}{suffix}.part")


def _file_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_CHUNK):
        yield chunk


class _HashingWriter:
    """Writes through to a file while hashing, so the receipt hash needs no second read."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)


def _sha256_file(f: BinaryIO) -> tuple[str, int]:
    f.seek(0)
    h = hashlib.sha256()
    size = 0
    for chunk in _file_chunks(f):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def seal_bid(
    package: Path,
    out: Path,
    *,
    signer: PrivateKeyHandle,
    signer_cert: x509.Certificate,
    recipients: Sequence[Recipient],
    chain: Sequence[x509.Certificate] = (),
    now: datetime | None = None,
    envelope_kind: EnvelopeKind | None = None,
    sealing_machine: SealingMachine = None,
) -> SealResult:
    """封装投标文件: package, sign (CMS SignedData), encrypt (AuthEnvelopedData, AES-256-GCM).

    ``sealing_machine`` is this machine's fingerprint for the bid's lot (or a function of the
    summary giving it: ``crypto.fingerprint``), recorded in the signed manifest."""
    signing_time = now or datetime.now(UTC)
    with tempfile.TemporaryFile(dir=out.parent if out.parent.exists() else None) as zf:
        info = build_package(package, zf, sealing_machine=sealing_machine)
        summary = info.summary
        if envelope_kind is not None and summary.envelope != envelope_kind:
            raise SummaryInvalid(
                f"summary.json says envelope={summary.envelope}, expected {envelope_kind}"
            )
        signer_code = credit_code_of(signer_cert)
        if signer_code != summary.bidder_credit_code:
            raise SignerNotBidder(
                f"signing certificate credit code {signer_code} != summary.json "
                f"{summary.bidder_credit_code}"
            )
        pkg_hex, pkg_size = _sha256_file(zf)
        frame = build_signed_data_frame(
            content_digest=bytes.fromhex(pkg_hex),
            content_length=pkg_size,
            signer=signer,
            signer_cert=signer_cert,
            chain=chain,
            signing_time=signing_time,
        )

        def plaintext() -> Iterator[bytes]:
            yield frame.prefix
            zf.seek(0)
            yield from _file_chunks(zf)
            yield frame.suffix

        with _atomic_output(out) as f:
            counted = _HashingWriter(f)
            seal_stream(counted, plaintext(), frame.total_length, recipients)
    return SealResult(
        out,
        counted.sha256.hexdigest(),
        counted.size,
        summary,
        pkg_hex,
        pkg_size,
        info.manifest.sealing_machine,
    )


# --- opening -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenedBid:
    """A bid whose envelope, signature, package and summary were all verified."""

    signer: SignerReport
    credit_code: str | None
    summary: BidSummary
    package: PackageInfo
    output: Path | None

    @property
    def signer_subject(self) -> str:
        return self.signer.certificate.subject.rfc4514_string()


def unwrap(envelope: Path, key: PrivateKeyHandle, cert: x509.Certificate | None = None) -> bytes:
    """Bidder side of the online opening: the content-encryption key, from one's own key."""
    return unwrap_content_key(inspect_envelope(envelope), key, cert)


def _verified_pass(
    f: BinaryIO, info: EnvelopeInfo, cek: bytes, sink: BinaryIO | None
) -> SignerReport:
    """Decrypt once, streaming the inner SignedData; integrity failures win over parse errors."""
    plain = decrypt_stream(f, info, cek)
    reader = der.Reader(der.ChunkStream(plain))
    try:
        report = read_signed_data(reader, sink.write if sink is not None else None)
        reader.at_eof()
    except EnvelopeTampered:
        raise
    except BidBridgeError as exc:
        # A changed ciphertext byte shows up first as garbage; name the real cause.
        try:
            for _ in plain:
                pass
        except EnvelopeTampered as tampered:
            raise tampered from exc
        raise
    return report


def verify_envelope(envelope: Path, cek: bytes) -> SignerReport:
    """Check tag and signature without writing anything (the first pass of opening)."""
    info = inspect_envelope(envelope)
    with envelope.open("rb") as f:
        return _verified_pass(f, info, cek, None)


def decrypt_with_key(
    envelope: Path,
    cek: bytes,
    out: Path,
    *,
    expected_credit_code: str | None = None,
    trust: TrustStore | None = None,
    at: datetime | None = None,
) -> OpenedBid:
    """Server side of the online opening: verify, then write the package ZIP (or folder).

    ``out`` ending in ``.zip`` receives the package ZIP; otherwise the package is extracted
    into the new folder ``out``. With ``trust`` the signer's certificate must be valid for a bid
    signature at the instant ``at`` (default: now), revocation included.
    """
    if out.exists():
        raise OutputExists(str(out))
    info = inspect_envelope(envelope)
    with envelope.open("rb") as f:
        first = _verified_pass(f, info, cek, None)
        if trust is not None:
            trust.validate(
                first.certificate,
                "bid_signature",
                at or datetime.now(UTC),
                extra_intermediates=first.certificates,
            )
        code = credit_code_of(first.certificate)
        if expected_credit_code is not None and code != expected_credit_code:
            raise SignerNotBidder(f"signed by {code}, expected the bidder {expected_credit_code}")
        as_zip = out.suffix.lower() == ".zip"
        zip_path = out if as_zip else _hidden_sibling(out, ".zip")
        with _atomic_output(zip_path) as sink:
            second = _verified_pass(f, info, cek, sink)
    try:
        if second.content_digest != first.content_digest or second.certificate != first.certificate:
            raise EnvelopeTampered("the file changed while it was being opened")
        pkg = verify_package(zip_path)
        if pkg.summary.bidder_credit_code != code:
            raise SignerNotBidder(
                f"summary.json names {pkg.summary.bidder_credit_code}, the signer is {code}"
            )
        if not as_zip:
            folder = _hidden_sibling(out, ".dir")
            try:
                extract_package(zip_path, folder)
                os.replace(folder, out)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
    except BaseException:
        zip_path.unlink(missing_ok=True)
        raise
    if not as_zip:
        zip_path.unlink(missing_ok=True)
    return OpenedBid(second, code, pkg.summary, pkg, out)


def open_bid(
    envelope: Path,
    out: Path,
    *,
    key: PrivateKeyHandle,
    cert: x509.Certificate | None = None,
    expected_credit_code: str | None = None,
    trust: TrustStore | None = None,
    at: datetime | None = None,
) -> OpenedBid:
    """Open a sealed bid in one place: unwrap with ``key``, then ``decrypt_with_key``."""
    cek = unwrap(envelope, key, cert)
    return decrypt_with_key(
        envelope, cek, out, expected_credit_code=expected_credit_code, trust=trust, at=at
    )
