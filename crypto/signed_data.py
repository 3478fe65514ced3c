"""CMS SignedData (RFC 5652 section 5): sign a large content in one pass, verify it streaming.

The bid package is the encapsulated content. Writing produces the DER bytes that come before and
after the content, so the content itself can be streamed straight into the envelope's cipher.
Reading hashes the content as it streams past and checks the signer's signature at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from crypto import der
from crypto.errors import (
    AlgorithmUnsupported,
    ContentNotSigned,
    EnvelopeMalformed,
    KeyLoadFailed,
    SignatureInvalid,
)
from crypto.keys import HashName, PrivateKeyHandle, check_key_matches, hash_algorithm

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"

SUPPORTED_DIGESTS: dict[str, HashName] = {
    "sha256": "sha256",
    "sha384": "sha384",
    "sha512": "sha512",
}


def to_asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))


def issuer_and_serial(cert: x509.Certificate) -> cms.IssuerAndSerialNumber:
    a = to_asn1_cert(cert)
    return cms.IssuerAndSerialNumber({"issuer": a.issuer, "serial_number": a.serial_number})


def der_set_of(items: Sequence[core.Asn1Value]) -> list[core.Asn1Value]:
    """Items of a SET OF in DER order (sorted by their encodings, X.690 11.6)."""
    return sorted(items, key=lambda item: item.dump())


def signed_attrs_bytes(attrs: cms.CMSAttributes) -> bytes:
    """The bytes a signature over signed attributes covers: the SET OF, tagged as SET (0x31)."""
    encoded = attrs.dump()
    return b"\x31" + encoded[1:]


@dataclass(frozen=True)
class SignedDataFrame:
    """The DER bytes around a SignedData's encapsulated content, as a ContentInfo.

    ``prefix + content + suffix`` is a complete DER ``ContentInfo`` holding the SignedData.
    """

    prefix: bytes
    suffix: bytes
    content_length: int

    @property
    def total_length(self) -> int:
        return len(self.prefix) + self.content_length + len(self.suffix)


def build_signed_data_frame(
    *,
    content_digest: bytes,
    content_length: int,
    signer: PrivateKeyHandle,
    signer_cert: x509.Certificate,
    chain: Sequence[x509.Certificate] = (),
    signing_time: datetime,
    digest: HashName = "sha256",
) -> SignedDataFrame:
    """Sign a content already hashed with ``digest`` and frame it as DER SignedData."""
    check_key_matches(signer, signer_cert)
    cert_der = signer_cert.public_bytes(serialization.Encoding.DER)
    ess_cert = tsp.SigningCertificateV2(
        {
            "certs": [
                {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "cert_hash": hashlib.sha256(cert_der).digest(),
                    "issuer_serial": {
                        "issuer": [
                            asn1_x509.GeneralName(
                                {"directory_name": to_asn1_cert(signer_cert).issuer}
                            )
                        ],
                        "serial_number": signer_cert.serial_number,
                    },
                }
            ]
        }
    )
    attrs = cms.CMSAttributes(
        der_set_of(
            [
                cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
                cms.CMSAttribute({"type": "message_digest", "values": [content_digest]}),
                cms.CMSAttribute(
                    {"type": "signing_time", "values": [cms.Time({"utc_time": signing_time})]}
                ),
                cms.CMSAttribute({"type": "signing_certificate_v2", "values": [ess_cert]}),
            ]
        )
    )
    signature = signer.sign(signed_attrs_bytes(attrs), digest)
    key = signer.public_key
    sig_algo = f"{digest}_rsa" if isinstance(key, rsa.RSAPublicKey) else f"{digest}_ecdsa"
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {"issuer_and_serial_number": issuer_and_serial(signer_cert)}
            ),
            "digest_algorithm": {"algorithm": digest},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": sig_algo},
            "signature": signature,
        }
    )
    certs = [
        cms.CertificateChoices({"certificate": to_asn1_cert(c)}) for c in [signer_cert, *chain]
    ]
    sd = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": digest}],
            "encap_content_info": {"content_type": "data"},
            "certificates": der_set_of(certs),
            "signer_infos": [signer_info],
        }
    )
    head = sd["version"].dump() + sd["digest_algorithms"].dump()
    tail = sd["certificates"].dump() + sd["signer_infos"].dump()
    e_content_type = cms.ContentType("data").dump()
    octet_header = der.encode_header(0x04, content_length)
    explicit_len = len(octet_header) + content_length
    explicit_header = der.encode_header(0xA0, explicit_len)
    encap_len = len(e_content_type) + len(explicit_header) + explicit_len
    encap_header = der.encode_header(0x30, encap_len)
    sd_len = len(head) + len(encap_header) + encap_len + len(tail)
    sd_header = der.encode_header(0x30, sd_len)
    ci_type = cms.ContentType("signed_data").dump()
    ci_explicit = der.encode_header(0xA0, len(sd_header) + sd_len)
    ci_len = len(ci_type) + len(ci_explicit) + len(sd_header) + sd_len
    prefix = (
        der.encode_header(0x30, ci_len)
        + ci_type
        + ci_explicit
        + sd_header
        + head
        + encap_header
        + e_content_type
        + explicit_header
        + octet_header
    )
    return SignedDataFrame(prefix=prefix, suffix=tail, content_length=content_length)


@dataclass
class SignerReport:
    """Who signed, and what the signature covers, after verification succeeded."""

    certificate: x509.Certificate
    certificates: list[x509.Certificate]
    digest_algorithm: str
    content_digest: bytes
    content_length: int
    signing_time: datetime | None


ContentSink = Callable[[bytes], object]


def read_signed_data(reader: der.Reader, sink: ContentSink | None = None) -> SignerReport:
    """Stream one SignedData (bare or in a ContentInfo), verify it, and report its signer.

    Each chunk of the encapsulated content goes to ``sink`` as it passes. The caller decides
    what the sink may do before the outer envelope's integrity tag has been checked.
    """
    top = reader.read_header()
    if not top.is_universal(der.TAG_SEQUENCE) or not top.constructed:
        raise ContentNotSigned("the decrypted content is not CMS SignedData")
    first = reader.read_header()
    if first.is_universal(der.TAG_OID):
        oid = der.load_asn1(
            cms.ContentType, first.raw + reader.read_body(first, 64), "content type"
        ).dotted
        if oid != ID_SIGNED_DATA:
            raise ContentNotSigned(f"the decrypted content is {oid}, not SignedData")
        explicit = reader.expect(der.CLASS_CONTEXT, 0, True, "the ContentInfo content")
        sd_header = reader.expect(der.CLASS_UNIVERSAL, der.TAG_SEQUENCE, True, "SignedData")
        version_raw = reader.read_element()
        wrappers = [top, explicit, sd_header]
    elif first.is_universal(der.TAG_INTEGER):
        version_raw = reader.read_element(first)
        wrappers = [top]
    else:
        raise ContentNotSigned("the decrypted content is not CMS SignedData")
    der.load_asn1(core.Integer, version_raw, "SignedData version")

    digest_algos = der.load_asn1(cms.DigestAlgorithms, reader.read_element(), "digest algorithms")
    hashers: dict[str, hashlib._Hash] = {}
    for a in digest_algos:
        name = a["algorithm"].native
        if name in SUPPORTED_DIGESTS:
            hashers[name] = hashlib.new(name)
    if not hashers:
        raise AlgorithmUnsupported("no supported digest algorithm (SHA-256/384/512) in SignedData")

    encap = reader.expect(der.CLASS_UNIVERSAL, der.TAG_SEQUENCE, True, "EncapsulatedContentInfo")
    encap_end = None if encap.length is None else reader.consumed + encap.length
    e_type = der.load_asn1(cms.ContentType, reader.read_element(), "content type").dotted
    content_length = 0
    explicit_header: der.Header | None = None
    if encap_end is None:
        h = reader.read_header()
        if not h.is_end_of_contents:
            explicit_header = h
    elif reader.consumed < encap_end:
        explicit_header = reader.read_header()
    if explicit_header is None:
        raise ContentNotSigned("detached signatures are not accepted: the bid must be inside")
    if not explicit_header.is_context(0):
        raise EnvelopeMalformed("unexpected element in EncapsulatedContentInfo")
    octets = reader.read_header()
    if not octets.is_universal(der.TAG_OCTET_STRING):
        raise EnvelopeMalformed("eContent is not an OCTET STRING")
    for chunk in reader.iter_octets(octets):
        for hasher in hashers.values():
            hasher.update(chunk)
        content_length += len(chunk)
        if sink is not None:
            sink(chunk)
    reader.end_of(explicit_header)
    reader.end_of(encap)
    if encap_end is not None and reader.consumed != encap_end:
        raise EnvelopeMalformed("EncapsulatedContentInfo length mismatch")

    certificates: list[x509.Certificate] = []
    signer_infos: cms.SignerInfos | None = None
    while signer_infos is None:
        h = reader.read_header()
        raw = reader.read_element(h)
        if h.is_context(0):
            certificates = _certificates(raw)
        elif h.is_context(1):
            continue  # CRLs inside the bid are not used; revocation comes from the trust store
        elif h.is_universal(der.TAG_SET):
            signer_infos = der.load_asn1(cms.SignerInfos, raw, "signer infos")
        else:
            raise EnvelopeMalformed("unexpected element in SignedData")
    for w in reversed(wrappers):
        reader.end_of(w)

    try:
        infos = list(signer_infos)
    except ValueError as exc:
        raise EnvelopeMalformed(f"SignerInfos: {exc}") from None
    if len(infos) != 1:
        raise ContentNotSigned(f"expected exactly one signer, found {len(infos)}")
    return _verify_signer(infos[0], e_type, hashers, content_length, certificates)


def _certificates(raw: bytes) -> list[x509.Certificate]:
    """The X.509 certificates of a ``[0] IMPLICIT CertificateSet``; other choices are ignored."""
    body = der.load_asn1(cms.CertificateSet, b"\x31" + raw[1:], "certificates")
    try:
        return [
            x509.load_der_x509_certificate(choice.chosen.dump())
            for choice in body
            if choice.name == "certificate"
        ]
    except ValueError as exc:
        raise EnvelopeMalformed(f"certificates: {exc}") from None


def _find_signer_cert(sid: cms.SignerIdentifier, certs: list[x509.Certificate]) -> x509.Certificate:
    for c in certs:
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            a = to_asn1_cert(c)
            if a.serial_number == ias["serial_number"].native and a.issuer == ias["issuer"]:
                return c
        elif sid.name == "subject_key_identifier":
            try:
                ski = c.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if ski == sid.chosen.native:
                return c
    raise ContentNotSigned("the signer's certificate is not included in the signature")


def _verify_signer(
    si: cms.SignerInfo,
    e_type: str,
    hashers: dict[str, hashlib._Hash],
    content_length: int,
    certs: list[x509.Certificate],
) -> SignerReport:
    try:
        digest_name = si["digest_algorithm"]["algorithm"].native
        cert = _find_signer_cert(si["sid"], certs)
        signature = si["signature"].native
        sig_algo: algos.SignedDigestAlgorithm = si["signature_algorithm"]
        attrs = si["signed_attrs"]
    except ValueError as exc:
        raise EnvelopeMalformed(f"SignerInfo: {exc}") from None
    if digest_name not in hashers:
        raise AlgorithmUnsupported(f"signer digest {digest_name}")
    content_digest = hashers[digest_name].digest()
    signing_time: datetime | None = None

    if attrs.native is not None and len(attrs):
        values: dict[str, list[object]] = {}
        for attr in attrs:
            values.setdefault(attr["type"].native, []).extend(attr["values"].native)
        if values.get("content_type") != [_content_type_name(e_type)]:
            raise SignatureInvalid("the signed content-type attribute does not match")
        if values.get("message_digest") != [content_digest]:
            raise SignatureInvalid("the signed content does not match its message digest")
        _check_ess_certificate(values.get("signing_certificate_v2"), cert)
        st = values.get("signing_time")
        if st and isinstance(st[0], datetime):
            signing_time = st[0].astimezone(UTC)
        data = signed_attrs_bytes(attrs)
        prehashed = False
    else:
        data = content_digest
        prehashed = True

    _check_signature(cert, sig_algo, signature, data, digest_name, prehashed)
    return SignerReport(
        certificate=cert,
        certificates=certs,
        digest_algorithm=digest_name,
        content_digest=content_digest,
        content_length=content_length,
        signing_time=signing_time,
    )


def _check_ess_certificate(values: list[object] | None, cert: x509.Certificate) -> None:
    """RFC 5035: when the signer names its certificate by hash, it must be the one used."""
    if not values:
        return
    first = values[0]
    try:
        ess = first["certs"][0]  # type: ignore[index]
        algo = (ess.get("hash_algorithm") or {}).get("algorithm") or "sha256"
        expected = ess["cert_hash"]
    except (KeyError, IndexError, TypeError):
        raise SignatureInvalid("malformed ESS signing-certificate-v2 attribute") from None
    if algo not in SUPPORTED_DIGESTS:
        raise AlgorithmUnsupported(f"ESS certificate hash {algo}")
    der_cert = cert.public_bytes(serialization.Encoding.DER)
    if hashlib.new(algo, der_cert).digest() != expected:
        raise SignatureInvalid("the signed certificate hash (ESS) names another certificate")


def _content_type_name(dotted: str) -> str:
    return cms.ContentType(dotted).native


def _check_signature(
    cert: x509.Certificate,
    sig_algo: algos.SignedDigestAlgorithm,
    signature: bytes,
    data: bytes,
    digest_name: str,
    prehashed: bool,
) -> None:
    key = cert.public_key()
    try:
        algo_name = sig_algo.signature_algo
        hash_name = digest_name
        # Plain rsaEncryption names no hash: the SignerInfo's digest algorithm is used.
        with contextlib.suppress(ValueError):
            hash_name = sig_algo.hash_algo
    except ValueError as exc:
        raise AlgorithmUnsupported(f"signature algorithm: {exc}") from None
    if hash_name not in SUPPORTED_DIGESTS:
        raise AlgorithmUnsupported(f"signature hash {hash_name}")
    if prehashed and hash_name != digest_name:
        raise SignatureInvalid("the signature's hash differs from the content digest's")
    h: hashes.HashAlgorithm | Prehashed = hash_algorithm(hash_name)
    if prehashed:
        h = Prehashed(hash_algorithm(hash_name))
    try:
        if algo_name == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), h)
        elif algo_name == "rsassa_pss" and isinstance(key, rsa.RSAPublicKey):
            params = sig_algo["parameters"]
            key.verify(
                signature,
                data,
                padding.PSS(
                    mgf=padding.MGF1(
                        hash_algorithm(
                            params["mask_gen_algorithm"]["parameters"]["algorithm"].native
                        )
                    ),
                    salt_length=params["salt_length"].native,
                ),
                h,
            )
        elif algo_name == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(h))
        else:
            raise AlgorithmUnsupported(f"signature algorithm {algo_name} with this key")
    except InvalidSignature:
        raise SignatureInvalid(
            "the signature does not verify with the signer's certificate"
        ) from None
    except (ValueError, TypeError, KeyLoadFailed) as exc:
        raise AlgorithmUnsupported(f"signature parameters: {exc}") from None
