"""Token provisioning: generating keys, storing certificates and listing what tokens hold.

Used by SoftHSM2 set-ups (tests, the demo) and by ``bidbridge token`` (``crypto/token_cli.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11e

from crypto.errors import KeyCertificateMismatch, TokenError, TokenPinIncorrect
from crypto.keys import PublicKey
from crypto.token.session import (
    _load_module,
    _objects,
    _public_from_object,
    _session_for,
    _template,
    _token_error,
    _token_serial,
    rescan_tokens,
)
from crypto.token.uri import ObjectType, Pkcs11Uri, _as_uri

TokenKeyType = Literal["rsa2048", "ec-p256"]

# --- generating keys, storing certificates ----------------------------------------------------

_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # DER OID secp256r1


def _key_names(uri: Pkcs11Uri, label: str | None, id_: bytes | None) -> tuple[str, bytes]:
    label = label if label is not None else uri.object
    id_ = id_ if id_ is not None else uri.id
    if not label or not id_:
        raise TokenError("需要密钥标签和 ID / a key label (object=) and id are both required")
    return label, id_


def generate_key_on_token(
    uri_or_params: str | Pkcs11Uri,
    key_type: TokenKeyType,
    label: str | None = None,
    id: bytes | None = None,
    *,
    pin: str | None = None,
) -> PublicKey:
    """Generate a key pair on the token; return its public key.

    The private key is CKA_SENSITIVE and not extractable: it never leaves the token. RSA keys
    may sign and decrypt, EC keys sign and derive (ECDH). ``label``/``id`` default to the URI's
    ``object``/``id``; refuses to create a second key with the same label or id.
    """
    uri = _as_uri(uri_or_params)
    label, id_ = _key_names(uri, label, id)
    if key_type not in ("rsa2048", "ec-p256"):
        raise TokenError(f"不支持的密钥类型 / unsupported key type {key_type}")
    if uri.resolve_pin(pin) is None:
        raise TokenPinIncorrect("生成密钥需要 PIN / generating a key needs the user PIN")
    common = {Attribute.TOKEN: True, Attribute.LABEL: label, Attribute.ID: id_}
    private_template: dict[Any, Any] = {
        **common,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: key_type == "rsa2048",
        Attribute.UNWRAP: False,
        Attribute.DERIVE: key_type == "ec-p256",
    }
    public_template: dict[Any, Any] = {
        **common,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: key_type == "rsa2048",
        Attribute.WRAP: False,
    }
    with _session_for(uri, pin, rw=True) as session:
        for attrs in (
            _template(ObjectClass.PRIVATE_KEY, label, None),
            _template(ObjectClass.PRIVATE_KEY, None, id_),
        ):
            if _objects(session, attrs):
                raise TokenError(
                    f"CA 锁上已有同名或同 ID 的私钥 / a private key labelled {label!r} or with "
                    f"id {id_.hex()} already exists"
                )
        try:
            if key_type == "rsa2048":
                public, _ = session.generate_keypair(
                    KeyType.RSA,
                    2048,
                    store=True,
                    public_template=public_template,
                    private_template=private_template,
                )
            else:
                public_template[Attribute.EC_PARAMS] = _P256_PARAMS
                public, _ = session.generate_keypair(
                    KeyType.EC,
                    store=True,
                    mechanism=Mechanism.EC_KEY_PAIR_GEN,
                    public_template=public_template,
                    private_template=private_template,
                )
        except p11e.PKCS11Error as exc:
            raise _token_error(
                "在 CA 锁上生成密钥失败 / key generation on the token failed", exc
            ) from None
        key = _public_from_object(public)
    if key is None:
        raise TokenError("无法读取新密钥的公钥 / cannot read the new key's public key")
    return key


def store_certificate_on_token(
    uri_or_params: str | Pkcs11Uri,
    cert: x509.Certificate,
    label: str | None = None,
    id: bytes | None = None,
    *,
    pin: str | None = None,
) -> None:
    """Store ``cert`` as a CKO_CERTIFICATE with the label and id of its key.

    ``label``/``id`` default to the URI's ``object``/``id``. If a key with that id (or label)
    is on the token, the certificate must match it (``KeyCertificateMismatch``).
    """
    uri = _as_uri(uri_or_params)
    label, id_ = _key_names(uri, label, id)
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise KeyCertificateMismatch("only RSA and EC certificates are supported")
    with _session_for(uri, pin, rw=True) as session:
        for object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
            for obj in _objects(session, _template(object_class, None, id_)):
                key = _public_from_object(obj)
                if key is not None and _spki(key) != _spki(public):
                    raise KeyCertificateMismatch(
                        f"证书与 CA 锁上 id {id_.hex()} 的密钥不匹配 / "
                        f"{cert.subject.rfc4514_string()}"
                    )
        if _objects(session, _template(ObjectClass.CERTIFICATE, None, id_)):
            raise TokenError(
                f"CA 锁上已有该 ID 的证书 / a certificate with id {id_.hex()} is already stored"
            )
        serial = cert.serial_number
        length = (serial.bit_length() + 8) // 8
        der_serial = bytes([0x02, length]) + serial.to_bytes(length, "big", signed=True)
        try:
            session.create_object(
                {
                    Attribute.CLASS: ObjectClass.CERTIFICATE,
                    Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: False,
                    Attribute.LABEL: label,
                    Attribute.ID: id_,
                    Attribute.SUBJECT: cert.subject.public_bytes(),
                    Attribute.ISSUER: cert.issuer.public_bytes(),
                    Attribute.SERIAL_NUMBER: der_serial,
                    Attribute.VALUE: cert.public_bytes(serialization.Encoding.DER),
                }
            )
        except p11e.PKCS11Error as exc:
            raise _token_error(
                "向 CA 锁写入证书失败 / storing the certificate failed", exc
            ) from None


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- listing tokens and objects ---------------------------------------------------------------


@dataclass(frozen=True)
class TokenInfo:
    """An initialised token a module offers."""

    slot_id: int
    label: str
    manufacturer: str
    model: str
    serial: str
    uri: str


@dataclass(frozen=True)
class ObjectInfo:
    """An object on a token (keys and certificates), described by public attributes."""

    type: ObjectType
    label: str
    id: bytes
    key_type: str | None
    uri: str


def list_tokens(module_path: str | None = None) -> list[TokenInfo]:
    """The initialised tokens of a module (default: ``BIDBRIDGE_PKCS11_MODULE``)."""
    module_path = Pkcs11Uri(module_path=module_path).resolve_module()
    module = _load_module(module_path)
    try:
        tokens = list(module.lib.get_tokens())
        if not [t for t in tokens if t.flags & TokenFlag.TOKEN_INITIALIZED] and rescan_tokens(
            module.path
        ):
            tokens = list(module.lib.get_tokens())
        result = []
        for t in tokens:
            if not t.flags & TokenFlag.TOKEN_INITIALIZED:
                continue
            serial = _token_serial(t)
            info = Pkcs11Uri(
                token=t.label,
                manufacturer=t.manufacturer_id,
                serial=serial,
                model=t.model,
                module_path=module_path,
            )
            result.append(
                TokenInfo(
                    int(t.slot.slot_id),
                    t.label,
                    t.manufacturer_id,
                    t.model,
                    serial,
                    str(info),
                )
            )
        return result
    except p11e.PKCS11Error as exc:
        raise _token_error("列出 CA 锁失败 / listing tokens failed", exc) from None


_CLASS_TYPES: dict[Any, ObjectType] = {
    ObjectClass.PUBLIC_KEY: "public",
    ObjectClass.PRIVATE_KEY: "private",
    ObjectClass.CERTIFICATE: "cert",
    ObjectClass.SECRET_KEY: "secret-key",
    ObjectClass.DATA: "data",
}


def list_objects(uri: str | Pkcs11Uri, pin: str | None = None) -> list[ObjectInfo]:
    """Keys and certificates on the token the URI names (private keys only with a PIN)."""
    parsed = _as_uri(uri)
    base = Pkcs11Uri(
        token=parsed.token,
        manufacturer=parsed.manufacturer,
        serial=parsed.serial,
        model=parsed.model,
        module_path=parsed.module_path,
    )
    result = []
    with _session_for(parsed, pin) as session:
        for obj in _objects(session, {}):
            try:
                object_type = _CLASS_TYPES.get(obj[Attribute.CLASS])
                if object_type is None:
                    continue
                label = str(obj[Attribute.LABEL])
                id_ = bytes(obj[Attribute.ID]) if object_type != "data" else b""
                key_type = None
                if object_type in ("public", "private", "secret-key"):
                    kt = obj[Attribute.KEY_TYPE]
                    key_type = kt.name.lower() if isinstance(kt, KeyType) else str(kt)
            except p11e.PKCS11Error:
                continue
            where = replace(base, object=label or None, id=id_ or None, type=object_type)
            result.append(ObjectInfo(object_type, label, id_, key_type, str(where)))
    return result
