"""国密 SM2/SM3/SM4 through ``crypto.sm2``, checked against the system's OpenSSL 3 both ways:
keys, signatures with the signer id (distid), GM/T 0009 ciphertexts, SM3 digests and SM4-CBC."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from crypto.errors import KeyCertificateMismatch, KeyLoadFailed, SignatureInvalid
from crypto.sm2 import (
    DEFAULT_SIGNER_ID,
    Sm2DecryptFailed,
    Sm2PrivateKey,
    Sm2PublicKey,
    Sm4Failed,
    sm3,
    sm4_cbc_decrypt,
    sm4_cbc_encrypt,
)

DISTID = "distid:" + DEFAULT_SIGNER_ID.decode()
MESSAGE = "投标文件摘要 bid summary".encode() * 50


def openssl(*args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.fixture(scope="module")
def openssl_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sm2")
    key = folder / "key.pem"
    openssl("genpkey", "-algorithm", "SM2", "-out", str(key))
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(folder / "pub.pem"))
    return key


def test_openssl_sm2_keys_load_and_sign_what_openssl_verifies(
    openssl_key: Path, tmp_path: Path
) -> None:
    key = Sm2PrivateKey.from_pem(openssl_key.read_bytes())
    public = Sm2PublicKey.from_pem((openssl_key.parent / "pub.pem").read_bytes())
    assert key.public == public
    (tmp_path / "msg").write_bytes(MESSAGE)
    (tmp_path / "sig").write_bytes(key.sign(MESSAGE))
    out = openssl(
        "dgst", "-sm3", "-verify", str(openssl_key.parent / "pub.pem"), "-sigopt", DISTID,
        "-signature", str(tmp_path / "sig"), str(tmp_path / "msg"),
    )  # fmt: skip
    assert b"Verified OK" in out


def test_openssl_sm2_signatures_verify_here_and_only_with_their_signer_id(
    openssl_key: Path, tmp_path: Path
) -> None:
    (tmp_path / "msg").write_bytes(MESSAGE)
    signature = openssl(
        "dgst", "-sm3", "-sign", str(openssl_key), "-sigopt", DISTID, str(tmp_path / "msg")
    )
    public = Sm2PrivateKey.from_pem(openssl_key.read_bytes()).public
    public.verify(signature, MESSAGE)
    with pytest.raises(SignatureInvalid) as caught:
        public.verify(signature, MESSAGE, signer_id=b"another-signer")
    assert caught.value.code == "SIGNATURE_INVALID" and "SM2" in caught.value.zh
    with pytest.raises(SignatureInvalid):
        public.verify(signature, MESSAGE + b"!")
    with pytest.raises(SignatureInvalid):
        public.verify(b"\x30\x03garbage", MESSAGE)


def test_keys_written_here_are_read_by_openssl(tmp_path: Path) -> None:
    key = Sm2PrivateKey.generate()
    (tmp_path / "key.pem").write_bytes(key.to_pem())
    (tmp_path / "pub.pem").write_bytes(key.public.to_pem())
    text = openssl("pkey", "-in", str(tmp_path / "key.pem"), "-noout", "-text").decode()
    assert "SM2" in text or "sm2" in text
    assert key.public.point.hex() in text.replace(":", "").replace("\n", "").replace(" ", "")
    (tmp_path / "msg").write_bytes(MESSAGE)
    signature = openssl(
        "dgst", "-sm3", "-sign", str(tmp_path / "key.pem"), "-sigopt", DISTID,
        str(tmp_path / "msg"),
    )  # fmt: skip
    Sm2PublicKey.from_pem((tmp_path / "pub.pem").read_bytes()).verify(signature, MESSAGE)
    assert Sm2PrivateKey.from_der(key.to_der()) == key


def test_sm2_ciphertexts_interoperate_with_openssl_both_ways(
    openssl_key: Path, tmp_path: Path
) -> None:
    key = Sm2PrivateKey.from_pem(openssl_key.read_bytes())
    secret = os.urandom(16)  # an SM4 content key, as a GM/T 0010 envelope carries
    (tmp_path / "ct").write_bytes(key.public.encrypt(secret))
    assert (
        openssl("pkeyutl", "-decrypt", "-inkey", str(openssl_key), "-in", str(tmp_path / "ct"))
        == secret
    )
    theirs = openssl(
        "pkeyutl", "-encrypt", "-pubin", "-inkey", str(openssl_key.parent / "pub.pem"),
        data=secret,
    )  # fmt: skip
    assert key.decrypt(theirs) == secret


def test_a_damaged_ciphertext_or_another_key_is_refused_quietly(
    openssl_key: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    key = Sm2PrivateKey.from_pem(openssl_key.read_bytes())
    ciphertext = bytearray(key.public.encrypt(b"content key 0123"))
    ciphertext[-20] ^= 1  # inside C2 (or C3): the SM3 check value no longer matches
    capfd.readouterr()
    with pytest.raises(Sm2DecryptFailed) as caught:
        key.decrypt(bytes(ciphertext))
    assert caught.value.code == "SM2_DECRYPT_FAILED" and caught.value.zh and caught.value.en
    with pytest.raises(Sm2DecryptFailed):
        Sm2PrivateKey.generate().decrypt(key.public.encrypt(b"content key 0123"))
    with pytest.raises(Sm2DecryptFailed):
        key.decrypt(b"not a ciphertext")
    with pytest.raises(SignatureInvalid):
        key.public.verify(b"\x30\x06\x02\x01\x01\x02\x01\x01", MESSAGE)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # GmSSL's traces do not reach our output


def test_keys_that_are_not_sm2_or_do_not_match_are_refused(
    openssl_key: Path, tmp_path: Path
) -> None:
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
            "-out", str(tmp_path / "p256.pem"))  # fmt: skip
    with pytest.raises(KeyLoadFailed):
        Sm2PrivateKey.from_pem((tmp_path / "p256.pem").read_bytes())
    with pytest.raises(KeyLoadFailed):
        Sm2PublicKey.from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyLoadFailed):
        Sm2PublicKey(b"\x01" * 64)  # not a point of the curve
    key = Sm2PrivateKey.from_pem(openssl_key.read_bytes())
    other = Sm2PrivateKey.generate()
    mixed = Sm2PrivateKey(key.scalar, other.public)
    with pytest.raises(KeyCertificateMismatch):
        Sm2PrivateKey.from_der(mixed.to_der())


def test_sm3_matches_openssl_and_the_standards_example() -> None:
    # GB/T 32905-2016, example 1: SM3("abc")
    assert sm3(b"abc").hex() == ("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
    data = os.urandom(100_000)
    assert sm3(data).hex() in openssl("dgst", "-sm3", data=data).decode()
    assert sm3(data) != hashlib.sha256(data).digest()


def test_sm4_cbc_matches_openssl_and_refuses_a_wrong_key() -> None:
    # GB/T 32907-2016, example 1: one block, key = plaintext = 0123456789abcdeffedcba9876543210
    block = bytes.fromhex("0123456789abcdeffedcba9876543210")
    assert sm4_cbc_encrypt(block, bytes(16), block)[:16].hex() == (
        "681edf34d206965e86b3e94f536e4246"
    )
    key, iv, data = os.urandom(16), os.urandom(16), os.urandom(1000)
    ours = sm4_cbc_encrypt(key, iv, data)
    theirs = openssl("enc", "-sm4-cbc", "-K", key.hex(), "-iv", iv.hex(), data=data)
    assert ours == theirs
    assert sm4_cbc_decrypt(key, iv, theirs) == data
    wrong = bytes(b ^ 1 for b in key)
    with pytest.raises(Sm4Failed):
        # a wrong key gives random padding: refused, except by chance (1 in 256 per try)
        for _ in range(4):
            sm4_cbc_decrypt(wrong, iv, ours)
            wrong = os.urandom(16)
    with pytest.raises(Sm4Failed):
        sm4_cbc_decrypt(key, iv, ours[:-1])


def test_only_crypto_sm2_imports_the_sm2_backend() -> None:
    root = Path(__file__).resolve().parent.parent
    importers = sorted(
        str(path.relative_to(root))
        for folder in ("server", "room_client", "crypto", "schemas", "scripts")
        for path in (root / folder).rglob("*.py")
        if "gmssl_pyx" in path.read_text(encoding="utf-8")
    )
    assert importers == ["crypto/sm2.py"]
