"""国密 (Chinese commercial cryptography) behind one module: SM2 keys, signatures and public-key
encryption (GB/T 32918), SM3 (GB/T 32905) and SM4-CBC (GB/T 32907).

SM3 and SM4 come from ``cryptography`` (OpenSSL). SM2 comes from ``gmssl-pyx`` (GmSSL 3.2 in a C
extension), which ``cryptography`` cannot do: keys, signatures with the signer id (Z value,
GB/T 35276, default ``1234567812345678``) and GM/T 0009 DER ciphertexts (C1 C3 C2). Nothing else
in the project imports ``gmssl_pyx``: replace the backend here and nothing else changes. Keys are
read and written as the same PKCS#8 / SubjectPublicKeyInfo structures OpenSSL 3 uses
(id-ecPublicKey with the named curve 1.2.156.10197.1.301), through asn1crypto.

Every failure is a typed :class:`crypto.errors.BidBridgeError` (stable code, zh and en); a bad
signature is ``SignatureInvalid``, never ``False``. GmSSL writes error traces to the process's
standard error on bad input; the backend calls run with that stream silenced, so hostile input
does not fill the server's log.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import gmssl_pyx as _gm
from asn1crypto import keys, pem
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from crypto.errors import BidBridgeError, KeyCertificateMismatch, KeyLoadFailed, SignatureInvalid

SM2_CURVE = "1.2.156.10197.1.301"
"""The SM2 curve (sm2p256v1), the parameters of an SM2 key."""
SM2_ENCRYPTION = "1.2.156.10197.1.301.3"
"""SM2 public-key encryption (GM/T 0006), as written in a key-transport AlgorithmIdentifier."""
SM2_SIGN_WITH_SM3 = "1.2.156.10197.1.501"
SM3 = "1.2.156.10197.1.401"
SM4_CBC = "1.2.156.10197.1.104.2"
DEFAULT_SIGNER_ID = b"1234567812345678"
"""The signer id of GM/T 0009 when none was agreed (what CA tools and OpenSSL's distid use)."""

_ORDER = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)
_CURVE_NAME = "sm2p256v1"
with contextlib.suppress(ValueError):  # registered already (another import of this module)
    keys.NamedCurve.register(_CURVE_NAME, SM2_CURVE, 32)


class Sm2DecryptFailed(BidBridgeError):
    code = "SM2_DECRYPT_FAILED"
    zh = "SM2 解密失败：密文已损坏或不是用此密钥加密的"
    en = "SM2 decryption failed: the ciphertext is damaged or not for this key"


class Sm2SignatureInvalid(SignatureInvalid):
    zh = "SM2 签名无效"
    en = "the SM2 signature is not valid"


class Sm4Failed(BidBridgeError):
    code = "SM4_DECRYPT_FAILED"
    zh = "SM4 解密失败：密钥不对或数据已损坏"
    en = "SM4 decryption failed: wrong key or damaged data"


# --- GmSSL's noise ------------------------------------------------------------------------------

_QUIET = threading.Lock()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Run a backend call with file descriptor 2 pointed at /dev/null (GmSSL prints its error
    trace there on bad input). One call at a time: the redirection is process-wide."""
    with _QUIET:
        saved = os.dup(2)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


# --- keys ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sm2PublicKey:
    """An SM2 public key: the point (x, y) as 64 bytes."""

    point: bytes

    def __post_init__(self) -> None:
        if len(self.point) != 64:
            raise KeyLoadFailed("SM2 public key: 64 bytes expected")
        try:
            _gm.normalize_sm2_public_key(self.point)
        except _gm.InvalidValueError as exc:
            raise KeyLoadFailed("SM2 public key: not a point of the curve") from exc

    @classmethod
    def from_der(cls, der: bytes) -> Sm2PublicKey:
        """From a DER SubjectPublicKeyInfo (as in an SM2 certificate or OpenSSL's ``-pubout``)."""
        with _parsing("public key"):
            info = keys.PublicKeyInfo.load(der)
            _check_algorithm(info["algorithm"], "public key")
            return cls(_point(info["public_key"].native))

    @classmethod
    def from_pem(cls, data: bytes) -> Sm2PublicKey:
        return cls.from_der(_unarmor(data, "PUBLIC KEY"))

    def to_der(self) -> bytes:
        info = keys.PublicKeyInfo(
            {
                "algorithm": keys.PublicKeyAlgorithm(
                    {"algorithm": "ec", "parameters": keys.ECDomainParameters("named", _CURVE_NAME)}
                ),
                "public_key": b"\x04" + self.point,
            }
        )
        return bytes(info.dump())

    def to_pem(self) -> bytes:
        return bytes(pem.armor("PUBLIC KEY", self.to_der()))

    def verify(self, signature: bytes, data: bytes, signer_id: bytes = DEFAULT_SIGNER_ID) -> None:
        """Check an SM2 signature (DER r, s) over ``data`` with the Z value of ``signer_id``."""
        with _quiet():
            try:
                ok = _gm.sm2_verify(self.point, data, signature, signer_id)
            except (_gm.InvalidValueError, _gm.GmsslInnerError, ValueError, TypeError):
                ok = False
        if not ok:
            raise Sm2SignatureInvalid()

    def encrypt(self, plaintext: bytes) -> bytes:
        """SM2 public-key encryption: a GM/T 0009 DER ciphertext (C1, C3 = SM3, C2)."""
        if not plaintext:
            raise BidBridgeError("SM2 cannot encrypt nothing")
        with _quiet():
            return bytes(_gm.sm2_encrypt(self.point, plaintext))


@dataclass(frozen=True)
class Sm2PrivateKey:
    """An SM2 private key (the 32-byte scalar) with its public key."""

    scalar: bytes
    public: Sm2PublicKey

    @classmethod
    def generate(cls) -> Sm2PrivateKey:
        point, scalar = _gm.sm2_key_generate()
        return cls(bytes(scalar), Sm2PublicKey(bytes(point)))

    @classmethod
    def from_der(cls, der: bytes) -> Sm2PrivateKey:
        """From a DER PKCS#8 PrivateKeyInfo (OpenSSL's ``genpkey -algorithm SM2``)."""
        with _parsing("private key"):
            info = keys.PrivateKeyInfo.load(der)
            _check_algorithm(info["private_key_algorithm"], "private key")
            inner = info["private_key"].parsed
            d = int(inner["private_key"].native)
            public = Sm2PublicKey(_point(inner["public_key"].native))
        if not 0 < d < _ORDER - 1:
            raise KeyLoadFailed("SM2 private key out of range")
        key = cls(d.to_bytes(32, "big"), public)
        key._check_pair()
        return key

    @classmethod
    def from_pem(cls, data: bytes) -> Sm2PrivateKey:
        return cls.from_der(_unarmor(data, "PRIVATE KEY"))

    def _check_pair(self) -> None:
        """The public key belongs to the scalar: a signature made with one verifies with the
        other (a file whose halves disagree is refused at load, not at first use)."""
        probe = b"bidbridge/sm2-key-check"
        try:
            self.public.verify(self.sign(probe), probe)
        except Sm2SignatureInvalid as exc:
            raise KeyCertificateMismatch("SM2 private and public key do not match") from exc

    def to_der(self) -> bytes:
        inner = keys.ECPrivateKey(
            {
                "version": "ecPrivkeyVer1",
                "private_key": int.from_bytes(self.scalar, "big"),
                "public_key": b"\x04" + self.public.point,
            }
        )
        info = keys.PrivateKeyInfo(
            {
                "version": 0,
                "private_key_algorithm": keys.PrivateKeyAlgorithm(
                    {"algorithm": "ec", "parameters": keys.ECDomainParameters("named", _CURVE_NAME)}
                ),
                "private_key": inner,
            }
        )
        return bytes(info.dump())

    def to_pem(self) -> bytes:
        return bytes(pem.armor("PRIVATE KEY", self.to_der()))

    def sign(self, data: bytes, signer_id: bytes = DEFAULT_SIGNER_ID) -> bytes:
        """An SM2 signature (DER r, s) over SM3(Z || data), Z from ``signer_id``."""
        with _quiet():
            return bytes(_gm.sm2_sign(self.scalar, self.public.point, data, signer_id))

    def decrypt(self, ciphertext: bytes) -> bytes:
        """Open a GM/T 0009 DER ciphertext; a damaged one or one for another key is refused
        (C3, the SM3 check value, is verified)."""
        with _quiet():
            try:
                return bytes(_gm.sm2_decrypt(self.scalar, ciphertext))
            except (_gm.InvalidValueError, _gm.GmsslInnerError, ValueError, TypeError) as exc:
                raise Sm2DecryptFailed() from exc


_EC_PUBLIC_KEY = "1.2.840.10045.2.1"


@contextlib.contextmanager
def _parsing(what: str) -> Iterator[None]:
    """asn1crypto's failures on a malformed structure, as KEY_LOAD_FAILED."""
    try:
        yield
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise KeyLoadFailed(f"not an SM2 {what}: {exc}") from exc


def _check_algorithm(algorithm: keys.PublicKeyAlgorithm, what: str) -> None:
    curve = algorithm["parameters"].chosen.dotted
    if algorithm["algorithm"].dotted != _EC_PUBLIC_KEY or curve != SM2_CURVE:
        raise KeyLoadFailed(f"not an SM2 {what} (curve {curve})")


def _point(encoded: bytes | None) -> bytes:
    """The 64 bytes (x, y) of an uncompressed point (04 || x || y)."""
    if encoded is None or len(encoded) != 65 or encoded[0] != 4:
        raise KeyLoadFailed("SM2 public key: an uncompressed point expected")
    return bytes(encoded[1:])


def _unarmor(data: bytes, label: str) -> bytes:
    if not pem.detect(data):
        return data
    try:
        found, _, der = pem.unarmor(data)
    except ValueError as exc:
        raise KeyLoadFailed(f"PEM: {exc}") from exc
    if found != label:
        raise KeyLoadFailed(f"PEM: {label} expected, found {found}")
    return bytes(der)


# --- SM3 and SM4 ----------------------------------------------------------------------------------


def sm3(data: bytes) -> bytes:
    """The SM3 digest (32 bytes)."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def sm4_cbc_encrypt(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """SM4-CBC with PKCS#7 padding (the content encryption of GM/T 0010 envelopes)."""
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.SM4(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


def sm4_cbc_decrypt(key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    if len(key) != 16 or len(iv) != 16 or not ciphertext or len(ciphertext) % 16:
        raise Sm4Failed("key and IV of 16 bytes, data a whole number of blocks")
    decryptor = Cipher(algorithms.SM4(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as exc:
        raise Sm4Failed("bad padding") from exc
