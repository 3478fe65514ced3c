"""Token sessions: opening a PKCS#11 token and using a private key that never leaves it.

``TokenKey`` implements ``crypto.keys.PrivateKeyHandle``: it asks the token to sign, to decrypt a
key-transport blob or to agree an ECDH secret. ``open_token_key`` opens one by its URI;
``find_certificate`` reads the certificate stored next to it.

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
from types import TracebackType
from typing import Any, Self, cast

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
    KeyUnwrapFailed,
    TokenError,
    TokenNotFound,
    TokenPinIncorrect,
)
from crypto.keys import HashName, KeyTransportPadding, PublicKey, hash_algorithm
from crypto.token.uri import Pkcs11Uri, _as_uri

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
    return uri.serial is None or _token_serial(token) == uri.serial.strip()


def _token_serial(token: Any) -> str:
    """The token's serial number as text, without the padding PKCS#11 gives it."""
    serial = token.serial
    text = serial.decode("ascii", "replace") if isinstance(serial, bytes) else str(serial)
    return text.strip()


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
    parsed = _as_uri(uri)
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
