"""A small X.509 CA toolkit: roots, intermediates, company/person/device/server certificates, CRLs.

It exists for tests, the demo and pilots: a trading centre trusts real Chinese CAs in production
(CA 互认), but everything around them must be exercised with certificates shaped like theirs.

Shapes follow common Chinese CA practice:

- A company (投标单位) holds **two** certificates, one for signing and one for encryption. Both
  carry ``CN`` and ``O`` = the company name and the 18-character 统一社会信用代码 in
  ``organizationIdentifier`` (OID 2.5.4.97). :func:`credit_code_of` also reads the code from
  the places other CAs put it (an ``NTRCN-`` prefix as in ETSI EN 319 412-1, the subject's
  ``serialNumber``, or a token in ``CN``/``OU``).
- A person (主持人, 监管人员, 评标专家, 交易中心人员) has ``CN`` = name, ``serialNumber`` = the
  person's id and the role in ``OU``.
- An evaluation-room device has ``CN`` = room id, ``OU`` = ``room`` and ``O`` = the site.

Every certificate carries SubjectKeyIdentifier and AuthorityKeyIdentifier and is signed with
SHA-256. When a public key is given (the private key lives on a PKCS#11 token) the certificate
is issued for it and :attr:`Issued.key` is ``None``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypedDict, Unpack, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from schemas.common import USCC_ALPHABET, is_valid_uscc

KeyType = Literal["rsa2048", "rsa3072", "ec-p256"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
Role = Literal["host", "supervisor", "expert", "centre"]

KEY_TYPES: tuple[str, ...] = get_args(KeyType)
ROLES: tuple[str, ...] = get_args(Role)
ROOM_DEVICE_OU = "room"
"""The ``OU`` that marks an evaluation-room device certificate."""

ORGANIZATION_IDENTIFIER = NameOID.ORGANIZATION_IDENTIFIER  # 2.5.4.97
_NTR_PREFIX = "NTRCN-"


class Validity(TypedDict, total=False):
    """A new certificate's key type and validity, as every ``issue_*`` function takes them."""

    key_type: KeyType  # the type of the new key pair (default rsa2048)
    not_before: datetime | None  # default: a minute ago
    days: int  # how long it is valid (default: 730, a server's 397)


class KeyOptions(Validity, total=False):
    """:class:`Validity`, and the public key to certify instead of generating a key pair."""

    public_key: PublicKey | None


@dataclass
class Issued:
    """A certificate and, when it was generated here, its private key."""

    certificate: x509.Certificate
    key: PrivateKey | None  # None when the key lives elsewhere (e.g. on a PKCS#11 token)


@dataclass
class CompanyPair:
    """A company's two certificates (双证书): one for signing, one for encryption."""

    signing: Issued
    encryption: Issued


@dataclass
class RevokedEntry:
    """One line of a CRL."""

    serial_number: int
    revoked_at: datetime
    reason: x509.ReasonFlags | None = None


# --- keys ------------------------------------------------------------------------------------


def generate_key(key_type: KeyType = "rsa2048") -> PrivateKey:
    """A fresh private key of the given type."""
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(
        f"不支持的密钥类型 / unsupported key type: {key_type!r} (use one of {', '.join(KEY_TYPES)})"
    )


def _now_minus_a_minute() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=1)


def _key_and_public(
    key_type: KeyType, public_key: PublicKey | None
) -> tuple[PrivateKey | None, PublicKey]:
    if public_key is not None:
        if not isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("只支持 RSA 和 EC 公钥 / only RSA and EC public keys are supported")
        return None, public_key
    key = generate_key(key_type)
    return key, key.public_key()


# --- building blocks -------------------------------------------------------------------------


def _name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes if value])


def _subject(
    common_name: str,
    *,
    organization: str = "",
    organization_id: str = "",
    unit: str = "",
    serial_number: str = "",
) -> x509.Name:
    """``C`` = CN, then those of ``O``, organizationIdentifier, ``OU``, serialNumber that are
    given, then ``CN``: the order of every subject issued here but a server's."""
    return _name(
        (NameOID.COUNTRY_NAME, "CN"),
        (NameOID.ORGANIZATION_NAME, organization),
        (ORGANIZATION_IDENTIFIER, organization_id),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        (NameOID.SERIAL_NUMBER, serial_number),
        (NameOID.COMMON_NAME, common_name),
    )


def _key_usage(
    *,
    digital_signature: bool = False,
    content_commitment: bool = False,
    key_encipherment: bool = False,
    data_encipherment: bool = False,
    key_agreement: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=content_commitment,
        key_encipherment=key_encipherment,
        data_encipherment=data_encipherment,
        key_agreement=key_agreement,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _issuer_key(issuer: Issued) -> PrivateKey:
    if issuer.key is None:
        raise ValueError(
            "签发 CA 的私钥不可用 / the issuing CA's private key is not available "
            "(Issued.key is None)"
        )
    return issuer.key


def _build(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    issuer: Issued | None,
    signing_key: PrivateKey,
    not_before: datetime | None,
    days: int,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    if days <= 0:
        raise ValueError(f"有效期天数必须为正 / days must be positive, got {days}")
    start = not_before if not_before is not None else _now_minus_a_minute()
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        aki = _authority_key_identifier(issuer.certificate)
    else:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    builder = builder.add_extension(aki, critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        public = issuer_cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise ValueError("只支持 RSA 和 EC CA / only RSA and EC CAs are supported") from None
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _organization_of(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(values[0].value) if values else None


# --- CAs -------------------------------------------------------------------------------------


def _new_ca(
    issuer: Issued | None,
    common_name: str,
    organization: str | None,
    key_type: KeyType,
    not_before: datetime | None,
    days: int,
    path_length: int | None,
) -> Issued:
    """A CA with a new key: self-signed when ``issuer`` is None, else signed by ``issuer``."""
    key = generate_key(key_type)
    if issuer is not None:
        organization = organization or _organization_of(issuer.certificate)
    subject = _subject(common_name, organization=organization or "")
    cert = _build(
        subject=subject,
        public_key=key.public_key(),
        issuer=issuer,
        signing_key=key if issuer is None else _issuer_key(issuer),
        not_before=not_before,
        days=days,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=path_length), True),
            (_key_usage(key_cert_sign=True, crl_sign=True), True),
        ],
    )
    return Issued(cert, key)


def create_root_ca(
    common_name: str,
    *,
    organization: str | None = None,
    key_type: KeyType = "rsa2048",
    not_before: datetime | None = None,
    days: int = 3650,
    path_length: int | None = None,
) -> Issued:
    """A self-signed root CA (no path-length limit unless ``path_length`` is given)."""
    return _new_ca(None, common_name, organization, key_type, not_before, days, path_length)


def create_intermediate_ca(
    issuer: Issued,
    common_name: str,
    *,
    key_type: KeyType = "rsa2048",
    path_length: int | None = 0,
    not_before: datetime | None = None,
    days: int = 1825,
    organization: str | None = None,
) -> Issued:
    """A subordinate CA signed by ``issuer``; ``O`` defaults to the issuer's organization."""
    return _new_ca(issuer, common_name, organization, key_type, not_before, days, path_length)


# --- end entities ----------------------------------------------------------------------------


def _check_credit_code(credit_code: str) -> None:
    if not is_valid_uscc(credit_code):
        raise ValueError(
            f"统一社会信用代码无效（应为 18 位且校验位正确）: {credit_code!r} / "
            "not a valid unified social credit code (18 characters with a correct check character)"
        )


def _company_subject(credit_code: str, company_name: str) -> x509.Name:
    _check_credit_code(credit_code)
    if not company_name:
        raise ValueError("单位名称不能为空 / the company name must not be empty")
    return _subject(company_name, organization=company_name, organization_id=credit_code)


def _end_entity(
    issuer: Issued,
    subject: x509.Name,
    key_usage: x509.KeyUsage | Callable[[PublicKey], x509.KeyUsage],
    eku: Sequence[x509.ObjectIdentifier],
    more: Sequence[tuple[x509.ExtensionType, bool]] = (),
    *,
    key_type: KeyType = "rsa2048",
    public_key: PublicKey | None = None,
    not_before: datetime | None = None,
    days: int = 730,
) -> Issued:
    key, public = _key_and_public(key_type, public_key)
    usage = key_usage if isinstance(key_usage, x509.KeyUsage) else key_usage(public)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (usage, True),
        (x509.ExtendedKeyUsage(list(eku)), False),
        *more,
    ]
    cert = _build(
        subject=subject,
        public_key=public,
        issuer=issuer,
        signing_key=_issuer_key(issuer),
        not_before=not_before,
        days=days,
        extensions=extensions,
    )
    return Issued(cert, key)


_SIGNING_USAGE = _key_usage(digital_signature=True, content_commitment=True)


def _encryption_usage(public: PublicKey) -> x509.KeyUsage:
    if isinstance(public, rsa.RSAPublicKey):
        return _key_usage(key_encipherment=True, data_encipherment=True)
    return _key_usage(key_agreement=True)


def _server_usage(public: PublicKey) -> x509.KeyUsage:
    return _key_usage(digital_signature=True, key_encipherment=isinstance(public, rsa.RSAPublicKey))


def issue_company_signing(
    issuer: Issued, *, credit_code: str, company_name: str, **options: Unpack[KeyOptions]
) -> Issued:
    """A company's signing certificate: digitalSignature + nonRepudiation, clientAuth + email."""
    subject = _company_subject(credit_code, company_name)
    eku = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION]
    return _end_entity(issuer, subject, _SIGNING_USAGE, eku, **options)


def issue_company_encryption(
    issuer: Issued, *, credit_code: str, company_name: str, **options: Unpack[KeyOptions]
) -> Issued:
    """A company's encryption certificate.

    RSA: keyEncipherment + dataEncipherment; EC: keyAgreement. EKU emailProtection.
    """
    subject = _company_subject(credit_code, company_name)
    eku = [ExtendedKeyUsageOID.EMAIL_PROTECTION]
    return _end_entity(issuer, subject, _encryption_usage, eku, **options)


def issue_company_pair(
    issuer: Issued,
    *,
    signing_public_key: PublicKey | None = None,
    encryption_public_key: PublicKey | None = None,
    credit_code: str,
    company_name: str,
    **validity: Unpack[Validity],
) -> CompanyPair:
    """A company's two certificates (signing and encryption), each with its own key.

    With ``signing_public_key`` / ``encryption_public_key`` that certificate is issued for the
    given key (one on a token) instead of a new key pair.
    """
    _check_credit_code(credit_code)
    signing = issue_company_signing(
        issuer,
        credit_code=credit_code,
        company_name=company_name,
        public_key=signing_public_key,
        **validity,
    )
    encryption = issue_company_encryption(
        issuer,
        credit_code=credit_code,
        company_name=company_name,
        public_key=encryption_public_key,
        **validity,
    )
    return CompanyPair(signing=signing, encryption=encryption)


def issue_person(
    issuer: Issued,
    *,
    name: str,
    role: Role,
    person_id: str,
    usage: Literal["signing", "encryption"] = "signing",
    **options: Unpack[KeyOptions],
) -> Issued:
    """A person's certificate: CN = name, serialNumber = id, OU = role.

    ``usage="signing"`` (the default) gives the login/signing certificate; ``"encryption"`` the
    second certificate of the pair, for example a custodian's for a backup-key share.
    """
    if role not in ROLES:
        raise ValueError(f"未知角色 / unknown role {role!r} (use one of {', '.join(ROLES)})")
    if not name or not person_id:
        raise ValueError("姓名和证件号不能为空 / name and person id must not be empty")
    subject = _subject(name, unit=role, serial_number=person_id)
    signing = usage == "signing"
    key_usage = _SIGNING_USAGE if signing else _encryption_usage
    eku = ExtendedKeyUsageOID.CLIENT_AUTH if signing else ExtendedKeyUsageOID.EMAIL_PROTECTION
    return _end_entity(issuer, subject, key_usage, [eku], **options)


def issue_room_device(
    issuer: Issued, *, room_id: str, site: str, **options: Unpack[KeyOptions]
) -> Issued:
    """An evaluation-room device certificate: CN = room id, OU = room, O = site."""
    if not room_id or not site:
        raise ValueError("评标室编号和场地不能为空 / room id and site must not be empty")
    subject = _subject(room_id, organization=site, unit=ROOM_DEVICE_OU)
    usage = _key_usage(digital_signature=True)
    return _end_entity(issuer, subject, usage, [ExtendedKeyUsageOID.CLIENT_AUTH], **options)


def issue_server(
    issuer: Issued,
    *,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    **options: Unpack[KeyOptions],
) -> Issued:
    """A TLS server certificate with the names in subjectAltName (CN = the first name).

    Valid for 397 days unless ``days`` is given.
    """
    if isinstance(dns_names, str):
        dns_names = [dns_names]
    if not dns_names and not ip_addresses:
        raise ValueError("至少需要一个域名或 IP / at least one DNS name or IP address is needed")
    try:
        ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    except ValueError as exc:
        raise ValueError(f"IP 地址无效 / invalid IP address: {exc}") from None
    san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    san += [x509.IPAddress(ip) for ip in ips]
    subject = _name((NameOID.COMMON_NAME, dns_names[0] if dns_names else str(ips[0])))
    options.setdefault("days", 397)
    more = [(x509.SubjectAlternativeName(san), False)]
    eku = [ExtendedKeyUsageOID.SERVER_AUTH]
    return _end_entity(issuer, subject, _server_usage, eku, more, **options)


# --- CRLs ------------------------------------------------------------------------------------


def issue_crl(
    issuer: Issued,
    revoked: Iterable[RevokedEntry],
    *,
    this_update: datetime,
    next_update: datetime,
    crl_number: int,
) -> x509.CertificateRevocationList:
    """A full CRL signed by ``issuer`` (SHA-256, with CRL number and AKI)."""
    if next_update <= this_update:
        raise ValueError("nextUpdate 必须晚于 thisUpdate / next_update must be after this_update")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.certificate.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(_authority_key_identifier(issuer.certificate), critical=False)
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial_number)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason is not None:
            item = item.add_extension(x509.CRLReason(entry.reason), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    return builder.sign(_issuer_key(issuer), hashes.SHA256())


# --- reading subjects ------------------------------------------------------------------------

_USCC_TOKEN = re.compile(rf"(?<![0-9A-Za-z])[{USCC_ALPHABET}]{{18}}(?![0-9A-Za-z])")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _looks_like_resident_id(value: str) -> bool:
    """True for a plausible 18-digit resident id number (GB 11643), which is never a company code.

    Person certificates often carry the id number in ``serialNumber``; it uses digits and ``X``,
    which are also in the credit-code alphabet, so it must not be mistaken for one.
    """
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        datetime.strptime(value[6:14], "%Y%m%d")
    except ValueError:
        return False
    if not 1900 <= int(value[6:10]) <= 2099:
        return False
    check = "10X98765432"[
        sum(int(c) * w for c, w in zip(value[:17], _ID_WEIGHTS, strict=True)) % 11
    ]
    return value[17] == check


def _attribute_values(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value).strip() for a in cert.subject.get_attributes_for_oid(oid)]


def credit_code_of(cert: x509.Certificate) -> str | None:
    """The 18-character 统一社会信用代码 in the certificate's subject, or ``None``.

    Looked for, in this order: ``organizationIdentifier`` (bare, or ``NTRCN-`` + code as in
    ETSI EN 319 412-1), the subject ``serialNumber`` (unless it is a person's id number), and
    last a check-valid 18-character token in ``CN`` or ``OU``. Only codes whose check
    character is right are returned.
    """
    for value in _attribute_values(cert, ORGANIZATION_IDENTIFIER):
        code = value[len(_NTR_PREFIX) :] if value.upper().startswith(_NTR_PREFIX) else value
        if is_valid_uscc(code):
            return code
    for value in _attribute_values(cert, NameOID.SERIAL_NUMBER):
        code = value[len(_NTR_PREFIX) :] if value.upper().startswith(_NTR_PREFIX) else value
        if is_valid_uscc(code) and not _looks_like_resident_id(code):
            return code
    for oid in (NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME):
        for value in _attribute_values(cert, oid):
            for token in _USCC_TOKEN.findall(value):
                if is_valid_uscc(token) and not _looks_like_resident_id(token):
                    return str(token)
    return None


def role_of(cert: x509.Certificate) -> str | None:
    """The person's role (``host``, ``supervisor``, ``expert``, ``centre``) from ``OU``, or None."""
    for value in _attribute_values(cert, NameOID.ORGANIZATIONAL_UNIT_NAME):
        if value in ROLES:
            return value
    return None


def room_of(cert: x509.Certificate) -> tuple[str, str] | None:
    """``(site, room_id)`` of an evaluation-room device certificate, or None for any other."""
    if ROOM_DEVICE_OU not in _attribute_values(cert, NameOID.ORGANIZATIONAL_UNIT_NAME):
        return None
    sites = _attribute_values(cert, NameOID.ORGANIZATION_NAME)
    rooms = _attribute_values(cert, NameOID.COMMON_NAME)
    if not sites or not rooms:
        return None
    return sites[0], rooms[0]


def common_name_of(cert: x509.Certificate) -> str | None:
    """The subject's first ``CN``, or None."""
    values = _attribute_values(cert, NameOID.COMMON_NAME)
    return values[0] if values else None
