"""CMS envelopes: AuthEnvelopedData (RFC 5083) with AES-GCM (RFC 5084) out, and in also
EnvelopedData (RFC 5652 section 6) with AES-CBC, as many CA client tools produce.

Recipients: RSA key transport (RSAES-OAEP, RFC 3560; PKCS#1 v1.5 accepted on input) and ECDH
key agreement (RFC 5753: dhSinglePass-stdDH-sha*kdf-scheme with AES key wrap). The small parts
are parsed and built with asn1crypto; the encrypted content, which can be gigabytes, streams
through ``crypto.der`` so an envelope is read and written in constant memory.

The split the online opening needs is explicit: ``unwrap_content_key`` runs where the private
key is (the bidder's machine or token) and yields the content-encryption key; ``decrypt_stream``
runs where the envelope is (the server) and needs only that key.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from asn1crypto import algos, cms, core, keys
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import keywrap, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF
from cryptography.hazmat.primitives.padding import PKCS7

from crypto import der
from crypto.errors import (
    AlgorithmUnsupported,
    EnvelopeMalformed,
    EnvelopeNotEncrypted,
    EnvelopeTampered,
    KeyUnwrapFailed,
    NotARecipient,
    WrongKeyUsage,
)
from crypto.keys import (
    HashName,
    KeyTransportPadding,
    PrivateKeyHandle,
    hash_algorithm,
    public_key_of,
)
from crypto.signed_data import der_set_of, issuer_and_serial

# --- asn1crypto registrations for what it does not know yet -----------------------------------


class GCMParameters(core.Sequence):
    """RFC 5084 GCMParameters."""

    _fields = [  # noqa: RUF012 (asn1crypto's declaration style)
        ("aes_nonce", core.OctetString),
        ("aes_icvlen", core.Integer, {"default": 12}),
    ]


class EccCmsSharedInfo(core.Sequence):
    """RFC 5753 ECC-CMS-SharedInfo, the X9.63 KDF's shared info."""

    _fields = [  # noqa: RUF012
        ("key_info", cms.KeyEncryptionAlgorithm),
        ("entity_u_info", core.OctetString, {"explicit": 0, "optional": True}),
        ("supp_pub_info", core.OctetString, {"explicit": 2}),
    ]


_ECDH_KDF: dict[str, HashName] = {
    "dh_single_pass_std_dh_sha1kdf": "sha1",
    "dh_single_pass_std_dh_sha256kdf": "sha256",
    "dh_single_pass_std_dh_sha384kdf": "sha384",
    "dh_single_pass_std_dh_sha512kdf": "sha512",
}
for _oid, _name in {
    "1.3.133.16.840.63.0.2": "dh_single_pass_std_dh_sha1kdf",
    "1.3.132.1.11.1": "dh_single_pass_std_dh_sha256kdf",
    "1.3.132.1.11.2": "dh_single_pass_std_dh_sha384kdf",
    "1.3.132.1.11.3": "dh_single_pass_std_dh_sha512kdf",
}.items():
    cms.KeyEncryptionAlgorithmId._map[_oid] = _name
    cms.KeyEncryptionAlgorithm._oid_specs[_name] = cms.KeyEncryptionAlgorithm
cms.KeyEncryptionAlgorithmId._reverse_map = None
for _gcm in ("aes128_gcm", "aes192_gcm", "aes256_gcm"):
    algos.EncryptionAlgorithm._oid_specs[_gcm] = GCMParameters

_WRAP_KEY_BYTES = {"aes128_wrap": 16, "aes192_wrap": 24, "aes256_wrap": 32}
_CBC_KEY_BYTES = {"aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}
_GCM_KEY_BYTES = {"aes128_gcm": 16, "aes192_gcm": 24, "aes256_gcm": 32}
_MAX_RECIPIENTS = 64

ID_AUTH_ENVELOPED = "1.2.840.113549.1.9.16.1.23"
ID_ENVELOPED = "1.2.840.113549.1.7.3"
ID_SIGNED = "1.2.840.113549.1.7.2"


OAEP_SHA256 = KeyTransportPadding("oaep", "sha256", "sha256")

# --- recipients --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """Someone a bid is sealed for: an encryption certificate and, for RSA, the padding."""

    certificate: x509.Certificate
    rsa_padding: KeyTransportPadding = OAEP_SHA256
    check_key_usage: bool = True


def _require_encryption_usage(cert: x509.Certificate) -> None:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    key = public_key_of(cert)
    if isinstance(key, rsa.RSAPublicKey) and not ku.key_encipherment:
        raise WrongKeyUsage(f"{cert.subject.rfc4514_string()}: no keyEncipherment")
    if isinstance(key, ec.EllipticCurvePublicKey) and not ku.key_agreement:
        raise WrongKeyUsage(f"{cert.subject.rfc4514_string()}: no keyAgreement")


def _oaep_params(pad: KeyTransportPadding) -> algos.RSAESOAEPParams:
    return algos.RSAESOAEPParams(
        {
            "hash_algorithm": {"algorithm": pad.hash},
            "mask_gen_algorithm": {
                "algorithm": "mgf1",
                "parameters": {"algorithm": pad.mgf_hash},
            },
        }
    )


def _shared_info(wrap_algo: cms.KeyEncryptionAlgorithm, ukm: bytes | None, kek_len: int) -> bytes:
    info: dict[str, object] = {
        "key_info": wrap_algo,
        "supp_pub_info": (kek_len * 8).to_bytes(4, "big"),
    }
    if ukm is not None:
        info["entity_u_info"] = ukm
    return EccCmsSharedInfo(info).dump()


def _kek(
    shared_secret: bytes,
    kdf_hash: HashName,
    wrap_algo: cms.KeyEncryptionAlgorithm,
    ukm: bytes | None,
) -> bytes:
    kek_len = _WRAP_KEY_BYTES[wrap_algo["algorithm"].native]
    return X963KDF(
        algorithm=hash_algorithm(kdf_hash),
        length=kek_len,
        sharedinfo=_shared_info(wrap_algo, ukm, kek_len),
    ).derive(shared_secret)


def _recipient_info(r: Recipient, cek: bytes) -> cms.RecipientInfo:
    if r.check_key_usage:
        _require_encryption_usage(r.certificate)
    key = public_key_of(r.certificate)
    rid = issuer_and_serial(r.certificate)
    if isinstance(key, rsa.RSAPublicKey):
        pad = r.rsa_padding
        kea: dict[str, object] = (
            {"algorithm": "rsaes_pkcs1v15"}
            if pad.scheme == "pkcs1v15"
            else {"algorithm": "rsaes_oaep", "parameters": _oaep_params(pad)}
        )
        return cms.RecipientInfo(
            {
                "ktri": {
                    "version": "v0",
                    "rid": {"issuer_and_serial_number": rid},
                    "key_encryption_algorithm": kea,
                    "encrypted_key": key.encrypt(cek, pad.to_cryptography()),
                }
            }
        )
    if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
        raise AlgorithmUnsupported(f"EC curve {key.curve.name}")
    ephemeral = ec.generate_private_key(key.curve)
    wrap_algo = cms.KeyEncryptionAlgorithm({"algorithm": "aes256_wrap"})
    kek = _kek(ephemeral.exchange(ec.ECDH(), key), "sha256", wrap_algo, None)
    eph_spki = keys.PublicKeyInfo.load(
        ephemeral.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return cms.RecipientInfo(
        {
            "kari": {
                "version": "v3",
                "originator": {
                    "originator_key": {
                        "algorithm": eph_spki["algorithm"],
                        "public_key": eph_spki["public_key"],
                    }
                },
                "key_encryption_algorithm": {
                    "algorithm": "dh_single_pass_std_dh_sha256kdf",
                    "parameters": wrap_algo,
                },
                "recipient_encrypted_keys": [
                    {
                        "rid": {"issuer_and_serial_number": rid},
                        "encrypted_key": keywrap.aes_key_wrap(kek, cek),
                    }
                ],
            }
        }
    )


# --- sealing -----------------------------------------------------------------------------------


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def seal_stream(
    out: Writable,
    chunks: Iterable[bytes],
    length: int,
    recipients: Sequence[Recipient],
) -> None:
    """Write a DER ContentInfo(AuthEnvelopedData, AES-256-GCM) around ``length`` bytes.

    ``chunks`` must yield exactly ``length`` bytes (the inner DER, typically SignedData).
    The content-encryption key lives only inside this call.
    """
    if not recipients:
        raise NotARecipient("at least one recipient is needed")
    cek = os.urandom(32)
    nonce = os.urandom(12)
    infos = cms.RecipientInfos(der_set_of([_recipient_info(r, cek) for r in recipients]))
    alg = algos.EncryptionAlgorithm(
        {
            "algorithm": "aes256_gcm",
            "parameters": GCMParameters({"aes_nonce": nonce, "aes_icvlen": 16}),
        }
    )
    eci_head = cms.ContentType("data").dump() + alg.dump()
    content_header = der.encode_header(0x80, length)
    eci_len = len(eci_head) + len(content_header) + length
    eci_header = der.encode_header(0x30, eci_len)
    aed_head = core.Integer(0).dump() + infos.dump() + eci_header + eci_head + content_header
    mac_header = der.encode_header(0x04, 16)
    aed_len = len(aed_head) + length + len(mac_header) + 16
    aed_header = der.encode_header(0x30, aed_len)
    ci_type = cms.ContentType("authenticated_enveloped_data").dump()
    explicit = der.encode_header(0xA0, len(aed_header) + aed_len)
    ci_len = len(ci_type) + len(explicit) + len(aed_header) + aed_len
    out.write(der.encode_header(0x30, ci_len) + ci_type + explicit + aed_header + aed_head)

    enc = Cipher(algorithms.AES(cek), modes.GCM(nonce)).encryptor()
    written = 0
    for chunk in chunks:
        written += len(chunk)
        out.write(enc.update(chunk))
    if written != length:
        raise ValueError(f"content length changed while sealing ({written} != {length})")
    out.write(enc.finalize())
    out.write(mac_header + enc.tag)


def seal_bytes(data: bytes, recipients: Sequence[Recipient]) -> bytes:
    """Seal a small byte string (key shares, test fixtures) into DER AuthEnvelopedData."""
    import io

    buf = io.BytesIO()
    seal_stream(buf, [data], len(data), recipients)
    return buf.getvalue()


# --- reading -----------------------------------------------------------------------------------


@dataclass
class EnvelopeInfo:
    """The parts of an envelope that are not its (possibly huge) encrypted content."""

    kind: Literal["auth_enveloped", "enveloped"]
    recipient_infos: list[cms.RecipientInfo]
    content_type: str
    algorithm: algos.EncryptionAlgorithm
    content_offset: int
    mac: bytes | None
    aad: bytes
    size: int

    @property
    def cipher_name(self) -> str:
        return str(self.algorithm["algorithm"].native)

    @property
    def key_length(self) -> int:
        name = self.cipher_name
        return (_GCM_KEY_BYTES | _CBC_KEY_BYTES)[name]


class _SeekableSource:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def read(self, n: int, /) -> bytes:
        return self.f.read(n)


def inspect_envelope(path: str | Path) -> EnvelopeInfo:
    """Parse an envelope's structure without decrypting, skipping over the content by seeking."""
    with open(path, "rb") as f:
        return inspect_stream(f)


def inspect_stream(f: BinaryIO) -> EnvelopeInfo:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    r = der.Reader(_SeekableSource(f))
    head = f.read(4)
    f.seek(0)
    if head[:2] == b"PK":
        raise EnvelopeNotEncrypted("this is a plain ZIP file")
    if head[:1] == b"-":
        raise EnvelopeMalformed("PEM text given; the envelope must be DER (binary)")
    ci = r.read_header()
    if not ci.is_universal(der.TAG_SEQUENCE) or not ci.constructed:
        raise EnvelopeMalformed("not a DER ContentInfo")
    oid_h = r.read_header()
    if not oid_h.is_universal(der.TAG_OID):
        raise EnvelopeMalformed("not a DER ContentInfo")
    ctype = der.load_asn1(cms.ContentType, r.read_element(oid_h, 64), "content type").dotted
    if ctype == ID_SIGNED:
        raise EnvelopeNotEncrypted("the file is signed but not encrypted")
    if ctype not in (ID_AUTH_ENVELOPED, ID_ENVELOPED):
        raise EnvelopeNotEncrypted(f"content type {ctype} is not an envelope")
    kind: Literal["auth_enveloped", "enveloped"] = (
        "auth_enveloped" if ctype == ID_AUTH_ENVELOPED else "enveloped"
    )
    explicit = r.expect(der.CLASS_CONTEXT, 0, True, "the ContentInfo content")
    body = r.expect(der.CLASS_UNIVERSAL, der.TAG_SEQUENCE, True, "the envelope")
    body_end = None if body.length is None else r.consumed + body.length
    der.load_asn1(core.Integer, r.read_element(), "version")
    h = r.read_header()
    if h.is_context(0):  # originatorInfo: certificates and CRLs we do not need
        r.read_element(h)
        h = r.read_header()
    if not h.is_universal(der.TAG_SET):
        raise EnvelopeMalformed("recipient infos missing")
    infos_value = der.load_asn1(cms.RecipientInfos, r.read_element(h), "recipient infos")
    infos = list(infos_value)
    if not infos or len(infos) > _MAX_RECIPIENTS:
        raise EnvelopeMalformed(f"{len(infos)} recipients")
    eci = r.expect(der.CLASS_UNIVERSAL, der.TAG_SEQUENCE, True, "encrypted content info")
    content_type = der.load_asn1(cms.ContentType, r.read_element(), "content type").dotted
    alg = der.load_asn1(algos.EncryptionAlgorithm, r.read_element(), "content encryption algorithm")
    assert isinstance(alg, algos.EncryptionAlgorithm)
    name = alg["algorithm"].native
    if kind == "auth_enveloped" and name not in _GCM_KEY_BYTES:
        raise AlgorithmUnsupported(f"authenticated content encryption {name}")
    if kind == "enveloped" and name not in _CBC_KEY_BYTES:
        raise AlgorithmUnsupported(f"content encryption {name}")
    params = alg["parameters"]
    if kind == "auth_enveloped" and not (
        isinstance(params, GCMParameters) and 8 <= len(params["aes_nonce"].native) <= 128
    ):
        raise EnvelopeMalformed("AES-GCM parameters missing or with a bad nonce")
    if kind == "enveloped" and not (isinstance(params.native, bytes) and len(params.native) == 16):
        raise EnvelopeMalformed("AES-CBC needs a 16-byte IV")
    content_offset = r.consumed
    ch = r.read_header()
    if not ch.is_context(0):
        raise EnvelopeMalformed("the encrypted content is missing (detached content is refused)")
    _skip(f, r, ch, size)
    r.end_of(eci)
    aad = b""
    mac: bytes | None = None
    while body_end is None or r.consumed < body_end:
        h = r.read_header()
        if h.is_end_of_contents and body_end is None:
            break
        raw = r.read_element(h)
        if kind == "auth_enveloped" and h.is_context(1) and mac is None and not aad:
            aad = b"\x31" + raw[1:]
        elif kind == "auth_enveloped" and h.is_universal(der.TAG_OCTET_STRING) and mac is None:
            mac = der.load_asn1(core.OctetString, raw, "mac").native
        elif h.is_context(2) or (kind == "enveloped" and h.is_context(1)):
            pass  # unprotected / unauthenticated attributes carry nothing we rely on
        else:
            raise EnvelopeMalformed("unexpected element after the encrypted content")
    if body_end is not None and r.consumed != body_end:
        raise EnvelopeMalformed("envelope length mismatch")
    r.end_of(explicit)
    r.end_of(ci)
    if r.consumed != size:
        raise EnvelopeMalformed("unexpected data after the envelope")
    if kind == "auth_enveloped":
        if mac is None:
            raise EnvelopeMalformed("the integrity tag (mac) is missing")
        params = alg["parameters"]
        if len(mac) != params["aes_icvlen"].native or not 12 <= len(mac) <= 16:
            raise EnvelopeMalformed("integrity tag length does not match its parameters")
    return EnvelopeInfo(kind, infos, content_type, alg, content_offset, mac, aad, size)


def _skip(f: BinaryIO, r: der.Reader, h: der.Header, size: int, depth: int = 0) -> None:
    """Skip an element's contents, seeking over primitive runs."""
    if h.length is not None and not h.constructed:
        if f.tell() + h.length > size:
            raise EnvelopeMalformed("truncated: the encrypted content is cut short")
        f.seek(h.length, os.SEEK_CUR)
        r.consumed += h.length
        return
    der.check_depth(depth)
    if h.length is None:
        while True:
            inner = r.read_header()
            if inner.is_end_of_contents:
                return
            _skip(f, r, inner, size, depth + 1)
    end = r.consumed + h.length
    while r.consumed < end:
        _skip(f, r, r.read_header(), size, depth + 1)
    if r.consumed != end:
        raise EnvelopeMalformed("constructed element length mismatch")


# --- unwrapping the content-encryption key (where the private key is) -------------------------


@dataclass(frozen=True)
class RecipientSummary:
    """One recipient of an envelope, for display and matching."""

    kind: Literal["ktri", "kari", "other"]
    issuer: str | None
    serial_number: int | None
    subject_key_identifier: bytes | None
    algorithm: str


def _rids(ri: cms.RecipientInfo) -> list[tuple[core.Choice, bytes | None]]:
    """A recipient info's identifiers, each with its own wrapped key where ECDH has one."""
    if ri.name == "ktri":
        return [(ri.chosen["rid"], None)]
    if ri.name == "kari":
        return [
            (k["rid"], k["encrypted_key"].native) for k in ri.chosen["recipient_encrypted_keys"]
        ]
    return []


def _rid_ski(rid: core.Choice) -> bytes | None:
    if rid.name == "subject_key_identifier":
        return bytes(rid.chosen.native)
    if rid.name == "r_key_id":
        return bytes(rid.chosen["subject_key_identifier"].native)
    return None


def _rid_matches(rid: core.Choice, cert: x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        mine = issuer_and_serial(cert)
        return bool(
            rid.chosen["serial_number"].native == mine["serial_number"].native
            and rid.chosen["issuer"] == mine["issuer"]
        )
    ski = _rid_ski(rid)
    if ski is None:
        return False
    try:
        mine_ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return False
    return ski == mine_ski.digest


def recipients_of(info: EnvelopeInfo) -> list[RecipientSummary]:
    """Who an envelope is addressed to."""
    out = []
    for ri in info.recipient_infos:
        if ri.name not in ("ktri", "kari"):
            out.append(RecipientSummary("other", None, None, None, ri.name))
            continue
        alg = str(ri.chosen["key_encryption_algorithm"]["algorithm"].native)
        for rid, _ in _rids(ri):
            if rid.name == "issuer_and_serial_number":
                issuer = rid.chosen["issuer"].human_friendly
                serial = rid.chosen["serial_number"].native
                out.append(RecipientSummary(ri.name, issuer, serial, None, alg))
            else:
                out.append(RecipientSummary(ri.name, None, None, _rid_ski(rid), alg))
    return out


def is_addressed_to(info: EnvelopeInfo, cert: x509.Certificate) -> bool:
    """True when one of the envelope's recipients is ``cert`` (规则: 加密须用登记的加密证书)."""
    return any(_rid_matches(rid, cert) for ri in info.recipient_infos for rid, _ in _rids(ri))


def _ktri_padding(kea: cms.KeyEncryptionAlgorithm) -> KeyTransportPadding:
    name = kea["algorithm"].native
    if name == "rsaes_pkcs1v15":
        return KeyTransportPadding("pkcs1v15")
    if name == "rsaes_oaep":
        params = kea["parameters"]
        h = params["hash_algorithm"]["algorithm"].native
        mgf = params["mask_gen_algorithm"]
        if mgf["algorithm"].native != "mgf1":
            raise AlgorithmUnsupported(f"OAEP mask generation {mgf['algorithm'].native}")
        mh = mgf["parameters"]["algorithm"].native
        if params["p_source_algorithm"]["parameters"].native not in (b"", None):
            raise AlgorithmUnsupported("OAEP with a label")
        if h not in ("sha1", "sha256", "sha384", "sha512") or mh not in (
            "sha1",
            "sha256",
            "sha384",
            "sha512",
        ):
            raise AlgorithmUnsupported(f"OAEP with {h}/{mh}")
        return KeyTransportPadding("oaep", h, mh)
    raise AlgorithmUnsupported(f"key transport {name}")


def _kari_unwrap(
    kari: cms.KeyAgreeRecipientInfo, encrypted_key: bytes, key: PrivateKeyHandle
) -> bytes:
    kea = kari["key_encryption_algorithm"]
    kdf = _ECDH_KDF.get(kea["algorithm"].native)
    if kdf is None:
        raise AlgorithmUnsupported(f"key agreement {kea['algorithm'].native}")
    wrap_algo = kea["parameters"]
    if (
        not isinstance(wrap_algo, cms.KeyEncryptionAlgorithm)
        or wrap_algo["algorithm"].native not in _WRAP_KEY_BYTES
    ):
        raise AlgorithmUnsupported("key agreement without an AES key wrap")
    originator = kari["originator"]
    if originator.name != "originator_key":
        raise AlgorithmUnsupported("key agreement with a static originator certificate")
    my_key = key.public_key
    if not isinstance(my_key, ec.EllipticCurvePublicKey):
        raise KeyUnwrapFailed("an RSA key cannot open an ECDH recipient")
    point = originator.chosen["public_key"].native
    try:
        peer = ec.EllipticCurvePublicKey.from_encoded_point(my_key.curve, point)
    except ValueError as exc:
        raise EnvelopeMalformed(f"originator public key: {exc}") from None
    ukm = kari["ukm"].native if kari["ukm"].native is not None else None
    kek = _kek(key.ecdh(peer), kdf, wrap_algo, ukm)
    try:
        return keywrap.aes_key_unwrap(kek, encrypted_key)
    except keywrap.InvalidUnwrap:
        raise KeyUnwrapFailed("AES key unwrap failed: wrong key or damaged envelope") from None


def unwrap_content_key(
    info: EnvelopeInfo, key: PrivateKeyHandle, cert: x509.Certificate | None = None
) -> bytes:
    """解开内容加密密钥: the content-encryption key, unwrapped with ``key`` (file or token).

    With ``cert`` the recipient is found by its identifier; without it every recipient of a
    type the key can open is tried (OAEP and key wrap fail loudly on a wrong key).
    """
    candidates = [
        (ri, ek)
        for ri in info.recipient_infos
        for rid, ek in _rids(ri)
        if cert is None or _rid_matches(rid, cert)
    ]
    is_rsa = isinstance(key.public_key, rsa.RSAPublicKey)
    candidates = [(ri, ek) for ri, ek in candidates if (ri.name == "ktri") == is_rsa]
    if not candidates:
        who = cert.subject.rfc4514_string() if cert is not None else "this key"
        raise NotARecipient(f"{who} is not among the envelope's recipients")
    last: Exception | None = None
    for ri, ek in candidates:
        try:
            if ri.name == "ktri":
                pad = _ktri_padding(ri.chosen["key_encryption_algorithm"])
                cek = key.decrypt_key_transport(ri.chosen["encrypted_key"].native, pad)
            else:
                assert ek is not None
                cek = _kari_unwrap(ri.chosen, ek, key)
        except KeyUnwrapFailed as exc:
            last = exc
            continue
        if len(cek) != info.key_length:
            last = KeyUnwrapFailed("the unwrapped key has the wrong length")
            continue
        return cek
    assert last is not None
    raise last


# --- decrypting with the content-encryption key (where the envelope is) -----------------------


def decrypt_stream(f: BinaryIO, info: EnvelopeInfo, cek: bytes) -> Iterator[bytes]:
    """Yield the plaintext in chunks; the last step checks integrity (GCM tag / CBC padding).

    The caller must not treat anything it received as accepted until the iterator has been
    exhausted without an exception: ``EnvelopeTampered`` arrives only at the end.
    """
    if len(cek) != info.key_length:
        raise KeyUnwrapFailed("the content-encryption key has the wrong length")
    params = info.algorithm["parameters"]
    f.seek(info.content_offset)
    r = der.Reader(_SeekableSource(f))
    h = r.read_header()
    if info.kind == "auth_enveloped":
        assert info.mac is not None
        nonce = params["aes_nonce"].native
        if not nonce:
            raise EnvelopeMalformed("empty GCM nonce")
        dec = Cipher(
            algorithms.AES(cek), modes.GCM(nonce, info.mac, min_tag_length=len(info.mac))
        ).decryptor()
        if info.aad:
            dec.authenticate_additional_data(info.aad)
        for chunk in r.iter_octets(h):
            yield dec.update(chunk)
        try:
            yield dec.finalize()
        except InvalidTag:
            raise EnvelopeTampered("AES-GCM tag mismatch") from None
        return
    iv = params.native
    if not isinstance(iv, bytes) or len(iv) != 16:
        raise EnvelopeMalformed("AES-CBC needs a 16-byte IV")
    cbc = Cipher(algorithms.AES(cek), modes.CBC(iv)).decryptor()
    unpad = PKCS7(128).unpadder()
    total = 0
    for chunk in r.iter_octets(h):
        total += len(chunk)
        yield unpad.update(cbc.update(chunk))
    if total % 16:
        raise EnvelopeTampered("AES-CBC ciphertext is not a whole number of blocks")
    try:
        yield unpad.update(cbc.finalize()) + unpad.finalize()
    except ValueError:
        raise EnvelopeTampered("AES-CBC padding is wrong: damaged file or wrong key") from None


def open_bytes(
    envelope: bytes, key: PrivateKeyHandle, cert: x509.Certificate | None = None
) -> bytes:
    """Open a small envelope held in memory (key shares, fixtures)."""
    import io

    f = io.BytesIO(envelope)
    info = inspect_stream(f)
    cek = unwrap_content_key(info, key, cert)
    return b"".join(decrypt_stream(f, info, cek))
