"""The trust store (CA 互认): which CAs the platform trusts, and certificate path validation.

A trading centre trusts several independent CAs at once. :class:`TrustStore` holds their root
certificates (explicit roots only; the operating system's trust list is never consulted),
known intermediate CAs and their CRLs, and validates a certificate for one purpose at one
instant:

- ``login``         -- keyUsage digitalSignature (CA sign-in to the hall or a room),
- ``bid_signature`` -- keyUsage digitalSignature or contentCommitment (nonRepudiation),
- ``encryption``    -- keyUsage keyEncipherment (RSA) or keyAgreement (EC).

A CA certificate is never accepted as an end entity; a certificate without a keyUsage extension
is unrestricted (RFC 5280). Extended key usage is not required (Chinese CAs fill it in very
differently), but a certificate whose EKU names only infrastructure purposes (serverAuth,
codeSigning, timeStamping, OCSPSigning) is refused for all three purposes. Revocation is checked from the CRLs in the store,
never fetched. With ``require_revocation`` every certificate below a root needs a CRL from its
issuer that is current at the instant (thisUpdate <= at <= nextUpdate).

Why pyhanko-certvalidator: it implements RFC 5280 path validation (section 6.1) with CRL
processing (section 6.3), takes explicit trust roots, validates at a given instant (needed to
judge a signature at the moment it was made, and to re-check an archive years later) and
checks basic constraints, path length and key usage of CA certificates. pyca/cryptography's
own verifier is profiled for the Web PKI (CA/B Forum rules, TLS server and client only) and has
no CRL support, so it cannot judge Chinese CA certificates or revocation.

Every failure is one of the typed errors of :mod:`crypto.errors`; pyhanko's exceptions never
escape this module. The mapping is in :func:`_map_validation_error`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, ParamSpec, TypeVar, get_args

from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.authority import CertTrustAnchor, TrustedServiceType, TrustQualifiers
from pyhanko_certvalidator.errors import (
    DisallowedAlgorithmError,
    ExpiredError,
    InsufficientRevinfoError,
    InvalidCertificateError,
    NotYetValidError,
    PathBuildingError,
    PathValidationError,
    RevokedError,
    ValidationError,
)
from pyhanko_certvalidator.ltv.poe import POEManager
from pyhanko_certvalidator.policy_decl import (
    CertRevTrustPolicy,
    NonRevokedStatusAssertion,
    RevocationCheckingPolicy,
    RevocationCheckingRule,
)
from pyhanko_certvalidator.registry import CertificateRegistry, SimpleTrustManager
from pyhanko_certvalidator.revinfo.archival import CRLContainer
from pyhanko_certvalidator.revinfo.manager import RevinfoManager

from crypto.errors import (
    BadCertificateSignature,
    BidBridgeError,
    BrokenChain,
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRevoked,
    KeyLoadFailed,
    RevocationUnknown,
    UnknownIssuer,
    WrongKeyUsage,
)
from crypto.keys import load_certificates

Purpose = Literal["login", "bid_signature", "encryption"]
PURPOSES: tuple[str, ...] = get_args(Purpose)
_P = ParamSpec("_P")
_T = TypeVar("_T")

CERT_SUFFIXES = frozenset({".pem", ".crt", ".cer", ".der"})
CRL_SUFFIXES = frozenset({".crl"})

# EKU values that, alone, clearly say "this key is not for a person or company".
_INFRASTRUCTURE_EKUS = frozenset(
    {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CODE_SIGNING,
        ExtendedKeyUsageOID.TIME_STAMPING,
        ExtendedKeyUsageOID.OCSP_SIGNING,
    }
)
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}
_PURPOSE_ZH = {"login": "登录", "bid_signature": "投标签名", "encryption": "加密"}
_PEM_CRL = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _to_asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(_der(cert))


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _organizations(name: x509.Name) -> set[str]:
    return {str(a.value) for a in name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)}


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("验证时刻必须带时区 / 'at' must be a timezone-aware datetime")
    return at


def _blocking(method: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, _T]:
    """The coroutine ``method`` as a plain call: run here to its end, or in a worker thread when
    an event loop is already running in this one."""

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(method(*args, **kwargs))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(lambda: asyncio.run(method(*args, **kwargs))).result()

    return run


class TrustStore:
    """Trusted roots, known intermediates and CRLs; validates certificates against them."""

    def __init__(
        self,
        roots: Sequence[x509.Certificate],
        intermediates: Sequence[x509.Certificate] = (),
        crls: Sequence[x509.CertificateRevocationList] = (),
        *,
        require_revocation: bool = True,
    ) -> None:
        self.require_revocation = require_revocation
        self.on_validated: Callable[[x509.Certificate], None] | None = None
        """Told of every certificate that validates (the server indexes them to find their
        tokens when a later CRL names them, see ``server/work/trust_reload.py``)."""
        self._roots: dict[bytes, x509.Certificate] = {}
        self._intermediates: dict[bytes, x509.Certificate] = {}
        self._crls: dict[bytes, x509.CertificateRevocationList] = {}
        for root in roots:
            self.add_root(root)
        for cert in intermediates:
            self.add_intermediate(cert)
        for crl in crls:
            self.add_crl(crl)

    # --- contents -----------------------------------------------------------------------------

    @property
    def roots(self) -> list[x509.Certificate]:
        return list(self._roots.values())

    @property
    def intermediates(self) -> list[x509.Certificate]:
        return list(self._intermediates.values())

    @property
    def crls(self) -> list[x509.CertificateRevocationList]:
        return list(self._crls.values())

    def add_root(self, cert: x509.Certificate) -> None:
        """Trust ``cert`` as a root (trust anchor)."""
        self._roots.setdefault(_der(cert), cert)

    def add_intermediate(self, cert: x509.Certificate) -> None:
        """Make an intermediate CA certificate available for path building (it is not trusted)."""
        if not _is_ca(cert):
            raise BrokenChain(f"{_subject(cert)}: 不是 CA 证书 / not a CA certificate")
        self._intermediates.setdefault(_der(cert), cert)

    def add_crl(self, crl: x509.CertificateRevocationList) -> None:
        """Add a CRL (its signature and time window are checked when it is used)."""
        self._crls.setdefault(crl.public_bytes(serialization.Encoding.DER), crl)

    @classmethod
    def from_directory(cls, path: str | Path, *, require_revocation: bool = True) -> TrustStore:
        """A store from a directory of CA certificates and CRLs (not recursive).

        ``*.pem``, ``*.crt``, ``*.cer``, ``*.der``: certificates (PEM bundles allowed; PEM CRL
        blocks in them are read too). A self-signed one is a trusted root, any other must be a
        CA certificate and becomes an intermediate. ``*.crl``: CRLs, PEM or DER.
        """
        directory = Path(path)
        if not directory.is_dir():
            raise KeyLoadFailed(f"{directory}: 信任目录不存在 / trust directory does not exist")
        store = cls([], require_revocation=require_revocation)
        for file in sorted(directory.iterdir()):
            suffix = file.suffix.lower()
            if not file.is_file() or suffix not in CERT_SUFFIXES | CRL_SUFFIXES:
                continue
            data = file.read_bytes()
            if suffix in CRL_SUFFIXES or b"-----BEGIN X509 CRL-----" in data:
                for crl in _parse_crls(data, file):
                    store.add_crl(crl)
            if suffix in CRL_SUFFIXES or (
                b"-----BEGIN" in data and b"CERTIFICATE-----" not in data
            ):
                continue
            for cert in load_certificates(file):
                if _is_self_signed(cert):
                    store.add_root(cert)
                elif _is_ca(cert):
                    store.add_intermediate(cert)
                else:
                    raise KeyLoadFailed(
                        f"{file}: 信任目录中只能放 CA 证书 / only CA certificates belong in the "
                        f"trust directory ({_subject(cert)} is not a CA)"
                    )
        return store

    # --- validation ---------------------------------------------------------------------------

    async def avalidate(
        self,
        cert: x509.Certificate,
        purpose: Purpose,
        at: datetime,
        extra_intermediates: Sequence[x509.Certificate] = (),
    ) -> list[x509.Certificate]:
        """Validate ``cert`` for ``purpose`` at the instant ``at``; return the path leaf..root.

        Raises a :class:`crypto.errors.CertificateError` subclass naming the reason.
        """
        if purpose not in PURPOSES:
            raise ValueError(f"unknown purpose {purpose!r} (use one of {', '.join(PURPOSES)})")
        at = _aware(at)
        extras = [c for c in extra_intermediates if _der(c) != _der(cert)]
        known: dict[bytes, x509.Certificate] = {_der(cert): cert}
        for c in [*self._roots.values(), *self._intermediates.values(), *extras]:
            known.setdefault(_der(c), c)
        try:
            context = self._context(cert, extras, at)
            validator = CertificateValidator(_to_asn1(cert), validation_context=context)
            path = await validator.async_validate_path()
        except BidBridgeError:
            raise
        except Exception as exc:  # pyhanko's errors never leave this module
            _map_validation_error(exc, cert, [*self._roots.values()], self._others(extras))
        try:
            _check_usage(cert, purpose)
        except ValueError as exc:  # a malformed extension that cryptography parses lazily
            raise CertificateError(f"{_subject(cert)}: {exc}") from None
        result: list[x509.Certificate] = []
        for asn1_cert in path.iter_certs(include_root=True):
            der = asn1_cert.dump()
            result.append(known.get(der) or x509.load_der_x509_certificate(der))
        result.reverse()
        if self.on_validated is not None:
            self.on_validated(cert)
        return result

    validate = _blocking(avalidate)
    """Synchronous :meth:`avalidate` (runs in a worker thread if a loop is already running)."""

    def _others(self, extras: Sequence[x509.Certificate]) -> list[x509.Certificate]:
        return [*self._intermediates.values(), *extras]

    def _has_crl_from(self, name: x509.Name) -> bool:
        return any(crl.issuer == name for crl in self._crls.values())

    def _context(
        self, cert: x509.Certificate, extras: Sequence[x509.Certificate], at: datetime
    ) -> ValidationContext:
        registry = CertificateRegistry.build([_to_asn1(c) for c in self._others(extras)])
        anchors = [
            CertTrustAnchor(
                _to_asn1(root),
                quals=TrustQualifiers(
                    max_path_length=_path_length(root),
                    valid_from=root.not_valid_before_utc,
                    valid_until=root.not_valid_after_utc,
                    trusted_service_type=TrustedServiceType.CERTIFICATE_AUTHORITY,
                ),
            )
            for root in self._roots.values()
        ]
        # Always a list (possibly empty): ``None`` would mean "the operating system's roots".
        trust_manager = SimpleTrustManager.build(trust_roots=anchors)

        crl_rule = RevocationCheckingRule.CRL_REQUIRED
        ee_rule = crl_rule
        assertions: list[NonRevokedStatusAssertion] = []
        if not self.require_revocation:
            # Check the CRLs we have; a certificate whose issuer published none is accepted.
            # pyhanko checks revocation for the whole path or (via assertions) skips single
            # intermediates; the leaf is handled by the end-entity rule, since asserting the
            # leaf would skip the checks of the whole path.
            if not self._has_crl_from(cert.issuer):
                ee_rule = RevocationCheckingRule.NO_CHECK
            for other in self._others(extras):
                if not self._has_crl_from(other.issuer):
                    assertions.append(NonRevokedStatusAssertion(_to_asn1(other).sha256, at))
        policy = CertRevTrustPolicy(
            RevocationCheckingPolicy(
                ee_certificate_rule=ee_rule, intermediate_ca_cert_rule=crl_rule
            )
        )
        crls = [CRLContainer(asn1_crl.CertificateList.load(der)) for der in self._crls]
        revinfo = RevinfoManager(
            certificate_registry=registry,
            poe_manager=POEManager(),
            crls=crls,
            ocsps=[],
            assertions=assertions,
            fetchers=None,
        )
        return ValidationContext(
            trust_manager=trust_manager,
            certificate_registry=registry,
            revinfo_manager=revinfo,
            revinfo_policy=policy,
            moment=at,
            allow_fetching=False,
        )


def _path_length(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except x509.ExtensionNotFound:
        return None


def _parse_crls(data: bytes, where: Path) -> list[x509.CertificateRevocationList]:
    try:
        if b"-----BEGIN" in data:
            blocks = _PEM_CRL.findall(data)
            if not blocks or len(blocks) != data.count(b"-----BEGIN X509 CRL-----"):
                # a cut-off copy must not pass for a folder without that CA's CRL
                raise ValueError("incomplete PEM block / PEM 块不完整")
            return [x509.load_pem_x509_crl(block) for block in blocks]
        return [x509.load_der_x509_crl(data)]
    except ValueError as exc:
        raise KeyLoadFailed(f"{where}: 不是有效的 CRL / not a CRL ({exc})") from None


# --- key usage -------------------------------------------------------------------------------


def _key_usage_names(ku: x509.KeyUsage) -> list[str]:
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    ]
    found = [n for n in names if getattr(ku, n)]
    if ku.key_agreement:
        found += [n for n in ("encipher_only", "decipher_only") if getattr(ku, n)]
    return found


def _check_usage(cert: x509.Certificate, purpose: Purpose) -> None:
    """Refuse a certificate whose keyUsage (or clearly contradicting EKU) does not fit."""
    label = f"{_PURPOSE_ZH[purpose]} / {purpose}"
    if _is_ca(cert):
        raise WrongKeyUsage(
            f"{_subject(cert)}: CA 证书不能用于{_PURPOSE_ZH[purpose]} / "
            f"a CA certificate cannot be used for {purpose}"
        )
    try:
        ku: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        ku = None  # RFC 5280: no keyUsage extension means no restriction
    if ku is not None:
        public = cert.public_key()
        if purpose == "login":
            ok, needed = ku.digital_signature, "digitalSignature"
        elif purpose == "bid_signature":
            ok = ku.digital_signature or ku.content_commitment
            needed = "digitalSignature 或/or nonRepudiation"
        elif isinstance(public, rsa.RSAPublicKey):
            ok, needed = ku.key_encipherment, "keyEncipherment"
        elif isinstance(public, ec.EllipticCurvePublicKey):
            ok, needed = ku.key_agreement, "keyAgreement"
        else:
            ok, needed = False, "RSA/EC key"
        if not ok:
            allowed = ", ".join(_key_usage_names(ku)) or "-"
            raise WrongKeyUsage(
                f"{_subject(cert)}: 用途 {label} 需要 {needed}，证书只允许 {allowed} / "
                f"purpose {purpose} needs {needed}, the certificate allows {allowed}"
            )
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    oids = set(eku)
    if oids and oids <= _INFRASTRUCTURE_EKUS:  # (anyExtendedKeyUsage is not in that set)
        listed = ", ".join(sorted(_EKU_NAMES[o] for o in oids))
        raise WrongKeyUsage(
            f"{_subject(cert)}: 扩展密钥用途只有 {listed}，不能用于{_PURPOSE_ZH[purpose]} / "
            f"extended key usage is only {listed}, not valid for {purpose}"
        )


# --- mapping pyhanko's failures --------------------------------------------------------------


def _which(exc: PathValidationError) -> str:
    """The subject of the certificate a pyhanko path error is about (best effort)."""
    try:
        certs = list(exc.original_path.iter_certs(include_root=True))
        chosen = None
        match = re.search(r"intermediate certificate (\d+)", str(exc))
        if exc.is_ee_cert:
            chosen = certs[-1]
        elif match:
            chosen = certs[int(match.group(1))]
        elif "trust anchor" in str(exc):
            chosen = certs[0]
        if chosen is not None:
            return x509.load_der_x509_certificate(chosen.dump()).subject.rfc4514_string()
    except Exception:  # only used for the message
        pass
    return "证书链中的证书 / a certificate in the chain"


def _reason_name(reason: object) -> str:
    """RFC 5280 name of an asn1crypto CRLReason (``keyCompromise``), ``unspecified`` if none."""
    native = getattr(reason, "native", None)
    if not isinstance(native, str):
        return "unspecified"
    try:
        return str(x509.ReasonFlags[native].value)
    except KeyError:
        return native


def _map_validation_error(
    exc: Exception,
    cert: x509.Certificate,
    roots: Sequence[x509.Certificate],
    others: Sequence[x509.Certificate],
) -> NoReturn:
    """Raise the crypto.errors type for a pyhanko failure (always raises).

    - RevokedError -> CertificateRevoked (detail: who, revocation time and reason)
    - ExpiredError / NotYetValidError -> CertificateExpired / CertificateNotYetValid
    - InsufficientRevinfoError (incl. StaleRevinfoError) -> RevocationUnknown
    - DisallowedAlgorithmError, "signature ... could not be verified" -> BadCertificateSignature
    - other PathValidationError (not a CA, path length, keyCertSign missing, issuer name
      mismatch, name constraints, policies) -> BrokenChain; unsupported critical extension ->
      CertificateError
    - PathBuildingError and "self-signed" InvalidCertificateError -> diagnosed by
      :func:`_diagnose_unbuildable` (UnknownIssuer, BrokenChain or BadCertificateSignature)
    - anything else -> CertificateError
    """
    message = str(exc)
    if isinstance(exc, RevokedError):
        reason = _reason_name(exc.reason)
        when = exc.revocation_dt.isoformat()
        raise CertificateRevoked(
            f"{_which(exc)}: 吊销时间 {when}，原因 {reason} / revoked at {when}, reason {reason}"
        ) from None
    if isinstance(exc, ExpiredError):
        when = exc.expired_dt.isoformat()
        raise CertificateExpired(f"{_which(exc)}: 有效期至 {when} / valid until {when}") from None
    if isinstance(exc, NotYetValidError):
        when = exc.valid_from.isoformat()
        raise CertificateNotYetValid(
            f"{_which(exc)}: 生效时间 {when} / valid from {when}"
        ) from None
    if isinstance(exc, InsufficientRevinfoError):
        raise RevocationUnknown(f"{_which(exc)}: {message}") from None
    if isinstance(exc, DisallowedAlgorithmError):
        raise BadCertificateSignature(
            f"{_which(exc)}: 签名算法不被允许 / disallowed signature algorithm ({message})"
        ) from None
    if isinstance(exc, PathValidationError):
        if "signature" in message and (
            "could not be verified" in message or "parameters" in message
        ):
            raise BadCertificateSignature(f"{_which(exc)}: {message}") from None
        if "unsupported critical extension" in message:
            raise CertificateError(f"{_which(exc)}: {message}") from None
        raise BrokenChain(f"{_which(exc)}: {message}") from None
    if isinstance(exc, PathBuildingError) or (
        isinstance(exc, InvalidCertificateError) and "self-signed" in message
    ):
        _diagnose_unbuildable(cert, roots, others)
    if isinstance(exc, ValidationError):
        raise CertificateError(message) from None
    raise CertificateError(f"{type(exc).__name__}: {exc}") from None


def _verifies(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _diagnose_unbuildable(
    cert: x509.Certificate,
    roots: Sequence[x509.Certificate],
    others: Sequence[x509.Certificate],
) -> NoReturn:
    """Say why no path from ``cert`` to a trusted root could be built.

    Walk up by issuer name through the known certificates:
    - an issuer name that is known, but none of its keys verifies the signature: a forged or
      altered certificate -> BadCertificateSignature;
    - an issuer name nobody knows: UnknownIssuer, unless a trusted CA has the same
      organization (O) as the missing issuer -- then an intermediate of a trusted CA is missing
      -> BrokenChain;
    - otherwise (loops, key-identifier mismatches) -> BrokenChain.
    """
    candidates = [*roots, *others]
    known_orgs: set[str] = set()
    for ca in candidates:
        known_orgs |= _organizations(ca.subject)
    current = cert
    seen: set[bytes] = set()
    while _der(current) not in seen:
        seen.add(_der(current))
        by_name = [c for c in candidates if c.subject == current.issuer]
        issuer_dn = current.issuer.rfc4514_string()
        if not by_name:
            if _organizations(current.issuer) & known_orgs:
                raise BrokenChain(
                    f"{_subject(current)}: 缺少中间 CA 证书 {issuer_dn}，请提供完整证书链 / "
                    f"the intermediate CA certificate {issuer_dn} is missing: supply the full chain"
                )
            raise UnknownIssuer(f"{_subject(current)}: 签发者 / issuer {issuer_dn}")
        verified = [c for c in by_name if _verifies(current, c)]
        if not verified:
            raise BadCertificateSignature(
                f"{_subject(current)}: 签名无法用签发者 {issuer_dn} 的公钥验证 / "
                f"the signature does not verify with the key of {issuer_dn}"
            )
        issuer = verified[0]
        if any(_der(issuer) == _der(r) for r in roots):
            break
        current = issuer
    raise BrokenChain(
        f"{_subject(cert)}: 无法构建到受信任根证书的证书链 / "
        "no path to a trusted root could be built"
    )


def load_trust_store(
    roots: Iterable[str | Path],
    crls: Iterable[str | Path] = (),
    *,
    require_revocation: bool = True,
) -> TrustStore:
    """A store from root/intermediate certificate files and CRL files (convenience for CLIs)."""
    store = TrustStore([], require_revocation=require_revocation)
    for file in roots:
        for cert in load_certificates(file):
            if _is_self_signed(cert):
                store.add_root(cert)
            else:
                store.add_intermediate(cert)
    for file in crls:
        path = Path(file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyLoadFailed(f"{path}: {exc.strerror}") from None
        for crl in _parse_crls(data, path):
            store.add_crl(crl)
    return store
