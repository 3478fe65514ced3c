"""Private keys on a PKCS#11 token (a bidder's CA USB key, an HSM, SoftHSM in tests).

``TokenKey`` implements ``crypto.keys.PrivateKeyHandle``: it asks the token to sign, to decrypt a
key-transport blob or to agree an ECDH secret, and the private key never leaves the token.

Keys are named by PKCS#11 URIs (RFC 7512)::

    pkcs11:token=bidder;object=sign-key;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234

The module comes from ``module-path`` or else from the ``BIDBRIDGE_PKCS11_MODULE`` environment
variable; the PIN from the ``pin`` argument, ``pin-value`` or ``pin-source`` (a file).

Every failure is a typed ``crypto.errors`` exception; raw ``pkcs11`` exceptions never escape.

Session and login handling (PKCS#11 logins are per token, not per session, and python-pkcs11
logs the whole token out when a logged-in session closes): this module keeps one shared,
logged-in session per token, reference-counted by the ``TokenKey`` objects using it and
serialised by a lock. It is logged out and closed when the last of them closes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast
from urllib.parse import quote, unquote, unquote_to_bytes, urlparse

import pkcs11
from asn1crypto.core import ObjectIdentifier, OctetString
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import KDF, MGF, Attribute, KeyType, Mechanism, ObjectClass, TokenFlag
from pkcs11 import exceptions as p11e

from crypto.errors import (
    AlgorithmUnsupported,
    KeyCertificateMismatch,
    KeyUnwrapFailed,
    TokenError,
    TokenNotFound,
    TokenPinIncorrect,
)
from crypto.keys import HashName, KeyTransportPadding, PublicKey, hash_algorithm

MODULE_ENV = "BIDBRIDGE_PKCS11_MODULE"
"""Environment variable naming the default PKCS#11 module (shared library)."""

TokenKeyType = Literal["rsa2048", "ec-p256"]
ObjectType = Literal["public", "private", "cert", "secret-key", "data"]

_OBJECT_TYPES: tuple[ObjectType, ...] = ("public", "private", "cert", "secret-key", "data")
_PATH_ATTRS = ("token", "manufacturer", "serial", "model", "object", "id", "type", "slot-id")
_QUERY_ATTRS = ("module-path", "pin-value", "pin-source")
# Path attributes RFC 7512 defines that we accept but do not use to select anything.
_IGNORED_PATH_ATTRS = (
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-manufacturer",
    "slot-description",
)

# --- PKCS#11 URIs (RFC 7512) ------------------------------------------------------------------


def _invalid_uri(uri: str, why: str) -> TokenError:
    return TokenError(f"PKCS#11 URI 无效 / invalid PKCS#11 URI {_redact(uri)!r}: {why}")


def _redact(uri: str) -> str:
    """``uri`` with any ``pin-value`` hidden, for messages and logs."""
    head, sep, query = uri.partition("?")
    if not sep:
        return uri
    parts = ["pin-value=***" if p.lower().startswith("pin-value=") else p for p in query.split("&")]
    return head + "?" + "&".join(parts)


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed ``pkcs11:`` URI. Unset attributes are ``None`` (match anything)."""

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    slot_id: int | None = None
    object: str | None = None
    id: bytes | None = None
    type: ObjectType | None = None
    module_path: str | None = None
    pin_value: str | None = field(default=None, repr=False)
    pin_source: str | None = None

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        """Parse an RFC 7512 URI; raise ``TokenError`` if it is malformed."""
        scheme, colon, rest = uri.strip().partition(":")
        if not colon or scheme.lower() != "pkcs11":
            raise _invalid_uri(uri, "it must start with 'pkcs11:'")
        path, _, query = rest.partition("?")
        if "#" in query:
            raise _invalid_uri(uri, "a fragment ('#') is not allowed")
        values: dict[str, Any] = {}
        for part in path.split(";") if path else []:
            name, value = _split_attr(uri, part)
            if name in _IGNORED_PATH_ATTRS:
                continue
            if name not in _PATH_ATTRS:
                raise _invalid_uri(uri, f"unknown path attribute {name!r}")
            key = name.replace("-", "_")
            if key in values:
                raise _invalid_uri(uri, f"attribute {name!r} given twice")
            values[key] = _path_value(uri, name, value)
        for part in query.split("&") if query else []:
            name, value = _split_attr(uri, part)
            if name not in _QUERY_ATTRS:
                continue  # RFC 7512: unknown query attributes may be ignored
            key = name.replace("-", "_")
            if key in values:
                raise _invalid_uri(uri, f"attribute {name!r} given twice")
            values[key] = _decode_text(uri, value)
        return cls(**values)

    def __str__(self) -> str:
        """The URI text (percent-encoded as RFC 7512 asks); includes ``pin-value`` if set."""
        path: list[str] = []
        for name, value in (
            ("model", self.model),
            ("manufacturer", self.manufacturer),
            ("serial", self.serial),
            ("token", self.token),
            ("object", self.object),
            ("type", self.type),
        ):
            if value is not None:
                path.append(f"{name}={_encode(value.encode())}")
        if self.id is not None:
            path.append("id=" + "".join(f"%{b:02X}" for b in self.id))
        if self.slot_id is not None:
            path.append(f"slot-id={self.slot_id}")
        query = [
            f"{name}={_encode(value.encode(), query=True)}"
            for name, value in (
                ("module-path", self.module_path),
                ("pin-source", self.pin_source),
                ("pin-value", self.pin_value),
            )
            if value is not None
        ]
        text = "pkcs11:" + ";".join(path)
        return text + ("?" + "&".join(query) if query else "")

    def redacted(self) -> str:
        """The URI text without the PIN, safe for logs and messages."""
        return str(replace(self, pin_value=None))

    def resolve_module(self) -> str:
        """The module path from the URI, else from ``BIDBRIDGE_PKCS11_MODULE``."""
        module = self.module_path or os.environ.get(MODULE_ENV)
        if not module:
            raise TokenNotFound(
                "未指定 PKCS#11 模块 / no PKCS#11 module: give module-path in the URI "
                f"or set {MODULE_ENV}"
            )
        return module

    def resolve_pin(self, pin: str | None = None) -> str | None:
        """``pin`` if given, else ``pin-value``, else the contents of ``pin-source``."""
        if pin is not None:
            return pin
        if self.pin_value is not None:
            return self.pin_value
        if self.pin_source is None:
            return None
        source = self.pin_source
        if source.lower().startswith("file:"):
            source = unquote(urlparse(source).path)
        elif ":" in source.split("/", 1)[0]:
            raise TokenError(f"不支持的 pin-source / unsupported pin-source {source!r}")
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(
                f"无法读取 PIN 文件 / cannot read the PIN file {source}: {exc}"
            ) from None
        return text.rstrip("\r\n")


def parse_uri(uri: str) -> Pkcs11Uri:
    """Parse an RFC 7512 ``pkcs11:`` URI (see ``Pkcs11Uri``)."""
    return Pkcs11Uri.parse(uri)


def _split_attr(uri: str, part: str) -> tuple[str, str]:
    name, eq, value = part.partition("=")
    if not eq or not name:
        raise _invalid_uri(uri, f"{part!r} is not name=value")
    return name.lower(), value


def _decode_text(uri: str, value: str) -> str:
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid_uri(uri, f"{value!r} is not UTF-8 after percent-decoding") from None


def _path_value(uri: str, name: str, value: str) -> Any:
    if name == "id":
        return unquote_to_bytes(value)
    if name == "slot-id":
        if not value.isdigit():
            raise _invalid_uri(uri, f"slot-id {value!r} is not a number")
        return int(value)
    text = _decode_text(uri, value)
    if name == "type" and text not in _OBJECT_TYPES:
        raise _invalid_uri(uri, f"type {text!r} is not one of {', '.join(_OBJECT_TYPES)}")
    return text


def _encode(value: bytes, *, query: bool = False) -> str:
    # RFC 7512 pchar / qchar: unreserved plus a few sub-delims stay literal.
    return quote(value, safe="-._~:[]@!$'()*+,=&" if not query else "-._~:[]@!$'()*+,=/?|")


# --- loaded modules, shared sessions ----------------------------------------------------------

_P11_ERROR_NAMES = {
    p11e.PinIncorrect: "CKR_PIN_INCORRECT",
    p11e.PinLocked: "CKR_PIN_LOCKED",
    p11e.PinExpired: "CKR_PIN_EXPIRED",
    p11e.PinInvalid: "CKR_PIN_INVALID",
    p11e.PinLenRange: "CKR_PIN_LEN_RANGE",
    p11e.TokenNotPresent: "CKR_TOKEN_NOT_PRESENT",
    p11e.DeviceRemoved: "CKR_DEVICE_REMOVED",
    p11e.SessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID",
    p11e.SessionClosed: "CKR_SESSION_CLOSED",
    p11e.UserNotLoggedIn: "CKR_USER_NOT_LOGGED_IN",
    p11e.UserAlreadyLoggedIn: "CKR_USER_ALREADY_LOGGED_IN",
    p11e.MechanismInvalid: "CKR_MECHANISM_INVALID",
    p11e.MechanismParamInvalid: "CKR_MECHANISM_PARAM_INVALID",
    p11e.ArgumentsBad: "CKR_ARGUMENTS_BAD",
    p11e.GeneralError: "CKR_GENERAL_ERROR",
    p11e.FunctionFailed: "CKR_FUNCTION_FAILED",
}


def _p11_name(exc: BaseException) -> str:
    name = _P11_ERROR_NAMES.get(type(exc)) if isinstance(exc, p11e.PKCS11Error) else None
    detail = str(exc).strip()
    label = name or type(exc).__name__
    return f"{label}: {detail}" if detail and detail != label else label


def _token_error(what: str, exc: BaseException) -> TokenError:
    """Map a raw ``pkcs11`` exception to a typed error."""
    if isinstance(exc, p11e.PinIncorrect | p11e.PinInvalid | p11e.PinLenRange):
        return TokenPinIncorrect(f"{what}: {_p11_name(exc)}")
    if isinstance(exc, p11e.PinLocked):
        return TokenPinIncorrect(f"CA 锁已锁定 / the token PIN is locked ({_p11_name(exc)})")
    if isinstance(exc, p11e.TokenNotPresent | p11e.DeviceRemoved | p11e.NoSuchToken):
        return TokenNotFound(f"{what}: {_p11_name(exc)}")
    return TokenError(f"{what}: {_p11_name(exc)}")


class _Module:
    """A loaded PKCS#11 module and the sessions this process holds on it."""

    def __init__(self, path: str, lib: Any) -> None:
        self.path = path
        self.lib = lib
        self.lock = threading.RLock()
        self.open_sessions = 0
        self.shared: dict[int, _SharedSession] = {}


_MODULES: dict[str, _Module] = {}
_MODULES_LOCK = threading.Lock()


def _load_module(path: str) -> _Module:
    """The module at ``path``, loaded once per process (python-pkcs11 caches it too)."""
    key = os.path.realpath(path)
    with _MODULES_LOCK:
        module = _MODULES.get(key)
        if module is not None:
            return module
        if not os.path.isfile(key):
            raise TokenNotFound(f"PKCS#11 模块不存在 / PKCS#11 module not found: {path}")
        try:
            # python-pkcs11 caches modules by the exact path string and fails (CKR_CRYPTOKI_
            # ALREADY_INITIALIZED) if the same module is loaded again under another name: we key
            # on the real path and load under the first name we were given.
            lib = pkcs11.lib(path)
        except p11e.PKCS11Error as exc:
            if "already initialized" in str(exc).lower():
                raise TokenError(
                    f"PKCS#11 模块已以其他路径加载 / the PKCS#11 module {path} was already loaded "
                    "in this process under another path"
                ) from None
            raise TokenNotFound(
                f"无法加载 PKCS#11 模块 / cannot load the PKCS#11 module {path}: {exc}"
            ) from None
        module = _MODULES[key] = _Module(key, lib)
        return module


def rescan_tokens(module_path: str, *, force: bool = False) -> bool:
    """Re-initialise a loaded module so it sees tokens that appeared since it was loaded.

    Some modules (SoftHSM 2.6 among them) fix their slot list at ``C_Initialize``. Re-initialising
    invalidates every session open on the module, so without ``force`` nothing happens while any
    is open. Returns whether the module was re-initialised.
    """
    key = os.path.realpath(module_path)
    with _MODULES_LOCK:
        module = _MODULES.get(key)
    if module is None:
        return False  # not loaded yet: the first load will see every token
    with module.lock:
        if module.open_sessions and not force:
            return False
        for shared in list(module.shared.values()):
            shared.invalidate()
        module.shared.clear()
        module.open_sessions = 0
        try:
            module.lib.reinitialize()
        except p11e.PKCS11Error as exc:
            raise _token_error(
                "重新初始化模块失败 / re-initialising the module failed", exc
            ) from None
        return True


def _token_matches(token: Any, uri: Pkcs11Uri) -> bool:
    if not token.flags & TokenFlag.TOKEN_INITIALIZED:
        return False
    checks: tuple[tuple[str | int | None, Any], ...] = (
        (uri.token, token.label),
        (uri.manufacturer, token.manufacturer_id),
        (uri.model, token.model),
        (uri.slot_id, token.slot.slot_id),
    )
    for wanted, actual in checks:
        if wanted is not None and wanted != (actual.strip() if isinstance(actual, str) else actual):
            return False
    if uri.serial is not None:
        serial = token.serial
        text = serial.decode("ascii", "replace") if isinstance(serial, bytes) else str(serial)
        if text.strip() != uri.serial.strip():
            return False
    return True


def _find_token(module: _Module, uri: Pkcs11Uri, *, rescan: bool = True) -> Any:
    try:
        tokens = [t for t in module.lib.get_tokens() if _token_matches(t, uri)]
    except p11e.PKCS11Error as exc:
        raise _token_error("列出 CA 锁失败 / listing tokens failed", exc) from None
    if not tokens and rescan and rescan_tokens(module.path):
        return _find_token(module, uri, rescan=False)
    if not tokens:
        raise TokenNotFound(f"未找到 CA 锁 / no token matches {uri.redacted()}")
    if len(tokens) > 1:
        labels = ", ".join(sorted(repr(t.label) for t in tokens))
        raise TokenError(
            f"有多个 CA 锁匹配 / several tokens match {uri.redacted()} ({labels}): "
            "add token= or serial= to the URI"
        )
    return tokens[0]


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(b"bidbridge-pin\0" + pin.encode("utf-8")).digest()


class _SharedSession:
    """The one logged-in read/write session this process keeps on a token."""

    def __init__(self, module: _Module, slot_id: int, session: Any, pin: str) -> None:
        self.module = module
        self.slot_id = slot_id
        self.session: Any = session
        self.pin_digest = _pin_digest(pin)
        self.users = 0
        self.lock = threading.RLock()
        self.valid = True

    def invalidate(self) -> None:
        self.valid = False
        self.session = None

    def release(self) -> None:
        with self.module.lock:
            self.users -= 1
            if self.users > 0 or not self.valid:
                return
            self.module.shared.pop(self.slot_id, None)
            self.module.open_sessions -= 1
            session, self.session, self.valid = self.session, None, False
        with suppress(p11e.PKCS11Error):
            session.close()  # C_Logout then C_CloseSession


def _acquire_shared(module: _Module, token: Any, pin: str) -> _SharedSession:
    slot_id = int(token.slot.slot_id)
    with module.lock:
        shared = module.shared.get(slot_id)
        if shared is not None:
            # The token is already logged in for this process; C_Login would not check the PIN,
            # so check it against the one that logged in.
            if not hmac.compare_digest(shared.pin_digest, _pin_digest(pin)):
                raise TokenPinIncorrect(
                    f"CA 锁 {token.label!r} 已用另一个 PIN 登录 / token {token.label!r} is "
                    "logged in with a different PIN"
                )
            shared.users += 1
            return shared
        rw = not token.flags & TokenFlag.WRITE_PROTECTED
        try:
            session = token.open(rw=rw, user_pin=pin)
        except p11e.UserAlreadyLoggedIn:
            raise TokenError(
                f"CA 锁 {token.label!r} 已被本进程中的其他程序登录 / token {token.label!r} is "
                "logged in by other code in this process"
            ) from None
        except p11e.PKCS11Error as exc:
            raise _token_error(f"登录 CA 锁 {token.label!r} 失败 / login failed", exc) from None
        shared = _SharedSession(module, slot_id, session, pin)
        shared.users = 1
        module.shared[slot_id] = shared
        module.open_sessions += 1
        return shared


@contextmanager
def _public_session(module: _Module, token: Any, *, rw: bool = False) -> Iterator[Any]:
    """A short-lived session that is not logged in (enough for public objects)."""
    with module.lock:
        try:
            session = token.open(rw=rw)
        except p11e.PKCS11Error as exc:
            raise _token_error("打开会话失败 / opening a session failed", exc) from None
        module.open_sessions += 1
    try:
        yield session
    finally:
        with module.lock:
            module.open_sessions -= 1
            with suppress(p11e.PKCS11Error):
                session.close()


@contextmanager
def _session_for(uri: Pkcs11Uri, pin: str | None, *, rw: bool = False) -> Iterator[Any]:
    """A logged-in session if a PIN is known, else a public one; with its lock held."""
    module = _load_module(uri.resolve_module())
    token = _find_token(module, uri)
    resolved = uri.resolve_pin(pin)
    if resolved is None:
        with _public_session(module, token, rw=rw) as session:
            yield session
        return
    shared = _acquire_shared(module, token, resolved)
    try:
        with shared.lock:
            yield shared.session
    finally:
        shared.release()


# --- reading keys and certificates ------------------------------------------------------------

_CURVES: dict[str, type[ec.EllipticCurve]] = {
    "1.2.840.10045.3.1.7": ec.SECP256R1,
    "1.3.132.0.34": ec.SECP384R1,
    "1.3.132.0.35": ec.SECP521R1,
}


def _curve_of(ec_params: bytes) -> ec.EllipticCurve:
    try:
        oid = str(ObjectIdentifier.load(bytes(ec_params)).dotted)
    except ValueError:
        raise TokenError(
            "CA 锁上的 EC 参数不是命名曲线 / EC parameters are not a named curve"
        ) from None
    curve = _CURVES.get(oid)
    if curve is None:
        raise TokenError(f"不支持的曲线 / unsupported curve {oid}")
    return curve()


def _ec_public_key(ec_params: bytes, ec_point: bytes) -> ec.EllipticCurvePublicKey:
    curve = _curve_of(ec_params)
    point = bytes(ec_point)
    try:  # CKA_EC_POINT should be a DER OCTET STRING, but some tokens store the raw point
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    except ValueError:
        pass
    try:
        inner = bytes(OctetString.load(point).native)
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, inner)
    except ValueError:
        raise TokenError(
            "CA 锁上的 EC 公钥无效 / the EC public key on the token is invalid"
        ) from None


def _public_from_object(obj: Any) -> PublicKey | None:
    """The public key that a token key object carries, if its attributes say it."""
    try:
        key_type = obj[Attribute.KEY_TYPE]
        if key_type == KeyType.RSA:
            n = int.from_bytes(bytes(obj[Attribute.MODULUS]), "big")
            e = int.from_bytes(bytes(obj[Attribute.PUBLIC_EXPONENT]), "big")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if key_type == KeyType.EC:
            return _ec_public_key(obj[Attribute.EC_PARAMS], obj[Attribute.EC_POINT])
    except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive, p11e.FunctionFailed):
        return None
    except p11e.PKCS11Error as exc:
        raise _token_error("读取公钥失败 / reading the public key failed", exc) from None
    return None


def _template(object_class: ObjectClass, label: str | None, id_: bytes | None) -> dict[Any, Any]:
    attrs: dict[Any, Any] = {Attribute.CLASS: object_class}
    if label is not None:
        attrs[Attribute.LABEL] = label
    if id_ is not None:
        attrs[Attribute.ID] = id_
    return attrs


def _objects(session: Any, attrs: dict[Any, Any]) -> list[Any]:
    try:
        return list(session.get_objects(attrs))
    except p11e.PKCS11Error as exc:
        raise _token_error("查找对象失败 / searching objects failed", exc) from None


def _certificates(session: Any, label: str | None, id_: bytes | None) -> list[x509.Certificate]:
    found = []
    for obj in _objects(session, _template(ObjectClass.CERTIFICATE, label, id_)):
        try:
            found.append(x509.load_der_x509_certificate(bytes(obj[Attribute.VALUE])))
        except (ValueError, p11e.PKCS11Error):
            continue  # not an X.509 certificate we can read
    return found


def _public_key_for(session: Any, private: Any, label: str | None, id_: bytes | None) -> PublicKey:
    """The public half of ``private``: from its attributes, a public key object or a cert."""
    key = _public_from_object(private)
    if key is not None:
        return key
    for attrs in (
        _template(ObjectClass.PUBLIC_KEY, None, id_),
        _template(ObjectClass.PUBLIC_KEY, label, None),
    ):
        if len(attrs) == 1:
            continue  # neither id nor label to match on
        for obj in _objects(session, attrs):
            key = _public_from_object(obj)
            if key is not None:
                return key
    for cert in _certificates(session, label, id_) if label is not None or id_ is not None else []:
        public = cert.public_key()
        if isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            return public
    raise TokenNotFound(
        "未在 CA 锁上找到私钥对应的公钥或证书 / "
        "no public key or certificate for the key on the token"
    )


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- TokenKey ---------------------------------------------------------------------------------

_HASH_MECHANISMS: dict[str, tuple[Mechanism, MGF]] = {
    "sha1": (Mechanism.SHA_1, MGF.SHA1),
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
_RSA_SIGN: dict[str, Mechanism] = {
    "sha1": Mechanism.SHA1_RSA_PKCS,
    "sha256": Mechanism.SHA256_RSA_PKCS,
    "sha384": Mechanism.SHA384_RSA_PKCS,
    "sha512": Mechanism.SHA512_RSA_PKCS,
}
_EC_SIGN: dict[str, Mechanism] = {
    "sha1": Mechanism.ECDSA_SHA1,
    "sha256": Mechanism.ECDSA_SHA256,
    "sha384": Mechanism.ECDSA_SHA384,
    "sha512": Mechanism.ECDSA_SHA512,
}
# DER DigestInfo prefixes (RFC 8017 section 9.2) for CKM_RSA_PKCS with a software digest.
_DIGEST_INFO: dict[str, bytes] = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
# What a token answers when the ciphertext (or its padding) is wrong. SoftHSM 2.6.1 says
# CKR_GENERAL_ERROR for bad PKCS#1 v1.5 / OAEP padding.
_UNWRAP_FAILURES = (
    p11e.EncryptedDataInvalid,
    p11e.EncryptedDataLenRange,
    p11e.DataInvalid,
    p11e.DataLenRange,
    p11e.GeneralError,
    p11e.FunctionFailed,
)
_UNSUPPORTED = (p11e.MechanismInvalid, p11e.MechanismParamInvalid, p11e.ArgumentsBad)


def _digest(data: bytes, hash_name: str) -> bytes:
    h = hashes.Hash(hash_algorithm(hash_name))
    h.update(data)
    return h.finalize()


class TokenKey:
    """A private key on a PKCS#11 token; implements ``crypto.keys.PrivateKeyHandle``.

    Open one with ``open_token_key``. The token session stays open (and logged in) until
    ``close()`` or the end of a ``with`` block.
    """

    def __init__(
        self,
        shared: _SharedSession,
        private: Any,
        public_key: PublicKey,
        label: str | None,
        id_: bytes | None,
        mechanisms: frozenset[Any],
        description: str,
    ) -> None:
        self._shared: _SharedSession | None = shared
        self._private = private
        self._public_key = public_key
        self.label = label
        self.id = id_
        self._mechanisms = mechanisms
        self._description = description

    def __repr__(self) -> str:
        state = "closed" if self._shared is None else "open"
        return f"<TokenKey {self._description} {state}>"

    @property
    def public_key(self) -> PublicKey:
        return self._public_key

    @property
    def closed(self) -> bool:
        return self._shared is None

    def close(self) -> None:
        """Release the token session (logged out once no other key on the token uses it)."""
        shared, self._shared = self._shared, None
        if shared is not None:
            shared.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _use(self) -> Iterator[Any]:
        shared = self._shared
        if shared is None:
            raise TokenError("CA 锁密钥已关闭 / the token key was closed")
        with shared.lock:
            if not shared.valid:
                raise TokenError(
                    "CA 锁会话已失效，请重新打开 / the token session is no longer valid: open "
                    "the key again"
                )
            yield self._private

    def _has(self, mechanism: Mechanism) -> bool:
        return mechanism in self._mechanisms

    def sign(self, data: bytes, hash_name: HashName = "sha256") -> bytes:
        """RSA PKCS#1 v1.5 or DER-encoded ECDSA signature over ``data``, made on the token."""
        if hash_name not in _HASH_MECHANISMS:
            raise TokenError(f"不支持的摘要算法 / unsupported hash {hash_name}")
        with self._use() as key:
            if not isinstance(key, pkcs11.SignMixin):
                raise TokenError("该密钥不允许签名 / the key on the token may not sign (CKA_SIGN)")
            try:
                if isinstance(self._public_key, rsa.RSAPublicKey):
                    if self._has(_RSA_SIGN[hash_name]):
                        return bytes(key.sign(data, mechanism=_RSA_SIGN[hash_name]))
                    info = _DIGEST_INFO[hash_name] + _digest(data, hash_name)
                    return bytes(key.sign(info, mechanism=Mechanism.RSA_PKCS))
                if self._has(_EC_SIGN[hash_name]):
                    raw = bytes(key.sign(data, mechanism=_EC_SIGN[hash_name]))
                else:  # SoftHSM 2.6.1 has plain CKM_ECDSA only: hash here, sign the digest there
                    raw = bytes(key.sign(_digest(data, hash_name), mechanism=Mechanism.ECDSA))
            except p11e.PKCS11Error as exc:
                raise _token_error("CA 锁签名失败 / signing on the token failed", exc) from None
        half = len(raw) // 2
        if len(raw) % 2 or not half:
            raise TokenError(
                f"CA 锁返回的 ECDSA 签名长度异常 / odd ECDSA signature length {len(raw)}"
            )
        r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        return encode_dss_signature(r, s)

    def decrypt_key_transport(self, encrypted_key: bytes, pad: KeyTransportPadding) -> bytes:
        """RSA-decrypt a key-transport blob on the token; ``KeyUnwrapFailed`` if it is wrong."""
        if not isinstance(self._public_key, rsa.RSAPublicKey):
            raise KeyUnwrapFailed("an EC key cannot decrypt an RSA key-transport recipient")
        if pad.scheme == "pkcs1v15":
            mechanism, param = Mechanism.RSA_PKCS, None
            what = "RSA PKCS#1 v1.5"
        else:
            if pad.hash not in _HASH_MECHANISMS or pad.mgf_hash not in _HASH_MECHANISMS:
                raise AlgorithmUnsupported(f"OAEP hash {pad.hash}/MGF1-{pad.mgf_hash}")
            mechanism = Mechanism.RSA_PKCS_OAEP
            param = (_HASH_MECHANISMS[pad.hash][0], _HASH_MECHANISMS[pad.mgf_hash][1], None)
            what = f"RSA-OAEP {pad.hash.upper()}/MGF1-{pad.mgf_hash.upper()}"
        if not self._has(mechanism):
            raise AlgorithmUnsupported(f"CA 锁不支持 / the token does not support {what}")
        with self._use() as key:
            if not isinstance(key, pkcs11.DecryptMixin):
                raise KeyUnwrapFailed("该密钥不允许解密 / the key on the token may not decrypt")
            try:
                if param is None:
                    return cast(bytes, key.decrypt(encrypted_key, mechanism=mechanism))
                return cast(
                    bytes,
                    key.decrypt(encrypted_key, mechanism=mechanism, mechanism_param=param),
                )
            except _UNSUPPORTED as exc:
                raise AlgorithmUnsupported(
                    f"CA 锁不支持 / the token does not support {what} ({_p11_name(exc)}); "
                    "SoftHSM 2.6 supports OAEP only with SHA-1"
                ) from None
            except _UNWRAP_FAILURES as exc:
                raise KeyUnwrapFailed(f"{what} on the token: {_p11_name(exc)}") from None
            except p11e.PKCS11Error as exc:
                raise _token_error("CA 锁解密失败 / decrypting on the token failed", exc) from None

    def ecdh(self, peer: ec.EllipticCurvePublicKey) -> bytes:
        """The raw ECDH shared secret (x-coordinate), computed on the token.

        Uses CKM_ECDH1_DERIVE with a null KDF into a session-only, extractable generic secret
        (read, then destroyed): CMS runs the X9.63 KDF in software.
        """
        own = self._public_key
        if not isinstance(own, ec.EllipticCurvePublicKey):
            raise KeyUnwrapFailed("an RSA key cannot agree an ECDH secret")
        if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != own.curve.name:
            raise KeyUnwrapFailed("the peer key is not on the curve of the token key")
        if not self._has(Mechanism.ECDH1_DERIVE):
            raise AlgorithmUnsupported("CA 锁不支持 / the token does not support ECDH1_DERIVE")
        point = peer.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        size = (own.curve.key_size + 7) // 8
        with self._use() as key:
            if not isinstance(key, pkcs11.DeriveMixin):
                raise KeyUnwrapFailed("该密钥不允许密钥协商 / the key on the token may not derive")
            try:
                secret = key.derive_key(
                    KeyType.GENERIC_SECRET,
                    size * 8,
                    mechanism=Mechanism.ECDH1_DERIVE,
                    mechanism_param=(KDF.NULL, None, point),
                    template={
                        Attribute.TOKEN: False,
                        Attribute.SENSITIVE: False,
                        Attribute.EXTRACTABLE: True,
                    },
                )
            except (*_UNSUPPORTED, p11e.TemplateInconsistent) as exc:
                raise AlgorithmUnsupported(
                    f"CA 锁不支持读出 ECDH 结果 / the token cannot give the raw ECDH secret "
                    f"({_p11_name(exc)})"
                ) from None
            except p11e.PKCS11Error as exc:
                raise _token_error("CA 锁密钥协商失败 / ECDH on the token failed", exc) from None
            try:
                value = bytes(secret[Attribute.VALUE])
            except p11e.PKCS11Error as exc:
                raise _token_error(
                    "读取 ECDH 结果失败 / reading the ECDH secret failed", exc
                ) from None
            finally:
                with suppress(p11e.PKCS11Error):
                    secret.destroy()
        return value.rjust(size, b"\0")


def open_token_key(uri: str | Pkcs11Uri, pin: str | None = None) -> TokenKey:
    """Open the private key a PKCS#11 URI names. ``pin`` overrides any PIN in the URI.

    Raises ``TokenNotFound`` (module, token or key missing), ``TokenPinIncorrect`` (wrong or
    missing PIN) or ``TokenError``.
    """
    parsed = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
    if parsed.type not in (None, "private"):
        raise TokenError(
            f"URI 须指向私钥 / the URI must name a private key, not type={parsed.type}"
        )
    module = _load_module(parsed.resolve_module())
    token = _find_token(module, parsed)
    resolved = parsed.resolve_pin(pin)
    if resolved is None:
        raise TokenPinIncorrect(f"未提供 CA 锁 PIN / no PIN given for token {token.label!r}")
    shared = _acquire_shared(module, token, resolved)
    try:
        with shared.lock:
            try:
                mechanisms = frozenset(token.slot.get_mechanisms())
            except p11e.PKCS11Error as exc:
                raise _token_error(
                    "读取 CA 锁算法列表失败 / listing mechanisms failed", exc
                ) from None
            attrs = _template(ObjectClass.PRIVATE_KEY, parsed.object, parsed.id)
            found = _objects(shared.session, attrs)
            if not found:
                raise TokenNotFound(
                    f"CA 锁上没有该私钥 / no private key matches {parsed.redacted()}"
                )
            if len(found) > 1:
                raise TokenError(
                    f"有多个私钥匹配 / {len(found)} private keys match {parsed.redacted()}: "
                    "add object= or id= to the URI"
                )
            private = found[0]
            try:
                label = private[Attribute.LABEL]
                id_ = bytes(private[Attribute.ID])
            except p11e.PKCS11Error as exc:
                raise _token_error(
                    "读取私钥属性失败 / reading key attributes failed", exc
                ) from None
            public = _public_key_for(shared.session, private, label, id_ or None)
    except BaseException:
        shared.release()
        raise
    return TokenKey(
        shared,
        private,
        public,
        label,
        id_,
        mechanisms,
        f"{token.label}/{label or id_.hex()}",
    )


# --- helpers: key generation, certificates, listing ------------------------------------------

_P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # DER OID secp256r1


def _key_names(uri: Pkcs11Uri, label: str | None, id_: bytes | None) -> tuple[str, bytes]:
    label = label if label is not None else uri.object
    id_ = id_ if id_ is not None else uri.id
    if not label or not id_:
        raise TokenError("需要密钥标签和 ID / a key label (object=) and id are both required")
    return label, id_


def _as_uri(uri_or_params: str | Pkcs11Uri) -> Pkcs11Uri:
    return uri_or_params if isinstance(uri_or_params, Pkcs11Uri) else Pkcs11Uri.parse(uri_or_params)


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


def find_certificate(uri: str | Pkcs11Uri, pin: str | None = None) -> x509.Certificate | None:
    """The certificate with the label/id the URI names (the one next to its key), or None.

    Matches on ``id`` if the URI has one, else on ``object``. Certificates are public objects,
    so no PIN is needed unless the token hides them.
    """
    parsed = _as_uri(uri)
    if parsed.id is None and parsed.object is None:
        raise TokenError("URI 须含 object= 或 id= / the URI needs object= or id=")
    with _session_for(parsed, pin) as session:
        certs = _certificates(session, None if parsed.id is not None else parsed.object, parsed.id)
    return certs[0] if certs else None


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
            serial = (
                t.serial.decode("ascii", "replace") if isinstance(t.serial, bytes) else t.serial
            )
            info = Pkcs11Uri(
                token=t.label,
                manufacturer=t.manufacturer_id,
                serial=serial.strip(),
                model=t.model,
                module_path=module_path,
            )
            result.append(
                TokenInfo(
                    int(t.slot.slot_id),
                    t.label,
                    t.manufacturer_id,
                    t.model,
                    serial.strip(),
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
