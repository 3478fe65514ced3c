"""PKCS#11 token keys against a real SoftHSM2 token: nothing is mocked."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path
from typing import TypeVar

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from crypto import token_cli
from crypto.errors import (
    AlgorithmUnsupported,
    KeyCertificateMismatch,
    KeyUnwrapFailed,
    TokenError,
    TokenNotFound,
    TokenPinIncorrect,
)
from crypto.keys import KeyTransportPadding, PrivateKeyHandle, SoftwareKey
from crypto.token import (
    MODULE_ENV,
    Pkcs11Uri,
    TokenKey,
    find_certificate,
    generate_key_on_token,
    list_objects,
    list_tokens,
    open_token_key,
    parse_uri,
    store_certificate_on_token,
)
from tests.support.softhsm import SoftHSMToken, softhsm_setup

HASHES = ("sha1", "sha256", "sha384", "sha512")
SHA = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
CEK = bytes(range(32))  # a content-encryption key to transport
PublicT = TypeVar("PublicT")


@pytest.fixture
def rsa_key(softhsm_token: SoftHSMToken) -> tuple[SoftHSMToken, rsa.RSAPublicKey]:
    public = generate_key_on_token(softhsm_token.uri(), "rsa2048", "enc-key", b"\x01")
    assert isinstance(public, rsa.RSAPublicKey)
    return softhsm_token, public


@pytest.fixture
def ec_key(softhsm_token: SoftHSMToken) -> tuple[SoftHSMToken, ec.EllipticCurvePublicKey]:
    public = generate_key_on_token(softhsm_token.uri(), "ec-p256", "ec-key", b"\x02")
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return softhsm_token, public


def _open(token: SoftHSMToken, label: str) -> TokenKey:
    return open_token_key(token.uri(label, type="private"))


def _signed_on(
    key: tuple[SoftHSMToken, PublicT], label: str, data: bytes, hash_name: str
) -> tuple[bytes, PublicT]:
    """``data`` signed on the token with its key ``label`` (opened and closed again), and the
    key's public half."""
    token, public = key
    with _open(token, label) as handle:
        return handle.sign(data, hash_name), public  # type: ignore[arg-type]


def _self_signed_for(public: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> x509.Certificate:
    """A certificate for ``public``, issued by a throw-away software CA."""
    ca = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "投标人 Bidder Ltd")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca, hashes.SHA256())
    )


# --- PKCS#11 URIs ------------------------------------------------------------------------------


def test_uri_parses_path_and_query_attributes() -> None:
    uri = parse_uri(
        "pkcs11:token=bidder;manufacturer=SoftHSM%20project;serial=0a1b;model=SoftHSM%20v2;"
        "object=sign-key;id=%01%02;type=private;slot-id=7"
        "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"
    )
    assert uri == Pkcs11Uri(
        token="bidder",
        manufacturer="SoftHSM project",
        serial="0a1b",
        model="SoftHSM v2",
        slot_id=7,
        object="sign-key",
        id=b"\x01\x02",
        type="private",
        module_path="/usr/lib/softhsm/libsofthsm2.so",
        pin_value="1234",
    )


def test_uri_percent_decodes_utf8_text_and_raw_id_bytes() -> None:
    uri = parse_uri("pkcs11:token=%E6%8A%95%E6%A0%87%E4%BA%BA;object=a%3Bb%25c+d;id=%FF%00A")
    assert uri.token == "投标人"
    assert uri.object == "a;b%c+d"  # '+' is literal in PKCS#11 URIs, not a space
    assert uri.id == b"\xff\x00A"


def test_uri_attribute_names_are_case_insensitive_and_scheme_too() -> None:
    assert parse_uri("PKCS11:Token=x;OBJECT=y") == Pkcs11Uri(token="x", object="y")


def test_uri_round_trips_through_its_text_form() -> None:
    original = Pkcs11Uri(
        token="投标 token;1",
        object="key/with?odd&chars",
        id=b"\x00\xff",
        type="cert",
        module_path="/opt/p11 mods/lib.so",
        pin_value="p&w=1",
    )
    assert parse_uri(str(original)) == original


def test_uri_redacted_form_hides_the_pin() -> None:
    uri = parse_uri("pkcs11:token=t?pin-value=secret")
    assert "secret" not in uri.redacted()
    assert "secret" not in repr(uri)


def test_uri_ignores_unknown_query_attributes_and_library_path_attributes() -> None:
    uri = parse_uri("pkcs11:token=t;library-manufacturer=x?x-vendor=1&module-name=softhsm2")
    assert uri == Pkcs11Uri(token="t")


@pytest.mark.parametrize(
    "text",
    [
        "file:/tmp/key.pem",
        "pkcs11:token",
        "pkcs11:token=a;token=b",
        "pkcs11:colour=blue",
        "pkcs11:type=secret",
        "pkcs11:slot-id=x",
        "pkcs11:token=%FF",
        "pkcs11:token=a?pin-value=1#frag",
    ],
)
def test_malformed_uri_raises_token_error(text: str) -> None:
    with pytest.raises(TokenError, match="invalid PKCS#11 URI"):
        parse_uri(text)


def test_pin_comes_from_argument_then_pin_value_then_pin_source(tmp_path: Path) -> None:
    pin_file = tmp_path / "pin.txt"
    pin_file.write_text("4321\n")
    from_file = parse_uri(f"pkcs11:token=t?pin-source=file:{pin_file}")
    assert from_file.resolve_pin() == "4321"
    assert parse_uri(f"pkcs11:token=t?pin-source=file://{pin_file}").resolve_pin() == "4321"
    assert parse_uri(f"pkcs11:token=t?pin-source={pin_file}").resolve_pin() == "4321"
    assert parse_uri("pkcs11:token=t?pin-value=1111").resolve_pin() == "1111"
    assert from_file.resolve_pin("9999") == "9999"
    assert parse_uri("pkcs11:token=t").resolve_pin() is None


def test_unreadable_pin_source_raises_token_error(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="PIN"):
        parse_uri(f"pkcs11:token=t?pin-source=file:{tmp_path / 'missing'}").resolve_pin()


def test_module_defaults_to_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MODULE_ENV, "/opt/vendor/p11.so")
    assert parse_uri("pkcs11:token=t").resolve_module() == "/opt/vendor/p11.so"
    assert parse_uri("pkcs11:token=t?module-path=/x.so").resolve_module() == "/x.so"
    monkeypatch.delenv(MODULE_ENV)
    with pytest.raises(TokenNotFound, match=MODULE_ENV):
        parse_uri("pkcs11:token=t").resolve_module()


# --- opening keys: errors ----------------------------------------------------------------------


def test_missing_module_raises_token_not_found(tmp_path: Path) -> None:
    with pytest.raises(TokenNotFound, match="module"):
        open_token_key(f"pkcs11:token=t;object=k?module-path={tmp_path}/nope.so&pin-value=1")


def test_unknown_token_raises_token_not_found(softhsm_token: SoftHSMToken) -> None:
    uri = Pkcs11Uri(
        token="no-such-token", object="k", module_path=softhsm_token.module, pin_value="1234"
    )
    with pytest.raises(TokenNotFound):
        open_token_key(uri)


def test_unknown_object_raises_token_not_found(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    with pytest.raises(TokenNotFound, match="no private key"):
        open_token_key(token.uri("no-such-key"))
    with pytest.raises(TokenNotFound):
        open_token_key(token.uri(id=b"\x7f"))


def test_wrong_pin_raises_token_pin_incorrect(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    with pytest.raises(TokenPinIncorrect):
        open_token_key(token.uri("enc-key"), pin="0000")
    with open_token_key(token.uri("enc-key")) as key:  # the right PIN still works afterwards
        assert key.public_key is not None


def test_missing_pin_raises_token_pin_incorrect(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    with pytest.raises(TokenPinIncorrect, match="no PIN"):
        open_token_key(token.uri("enc-key", with_pin=False))


def test_a_second_key_with_a_wrong_pin_is_refused_while_the_token_is_logged_in(
    rsa_key: tuple[SoftHSMToken, object],
) -> None:
    token, _ = rsa_key
    with _open(token, "enc-key"), pytest.raises(TokenPinIncorrect):
        open_token_key(token.uri("enc-key"), pin="0000")


def test_uri_naming_a_non_private_object_is_refused(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    with pytest.raises(TokenError, match="private key"):
        open_token_key(token.uri("enc-key", type="cert"))


def test_pkcs11_exceptions_never_escape(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    for bad in (token.uri("enc-key"), token.uri("missing")):
        try:
            open_token_key(bad, pin="0000" if "enc" in bad else None).close()
        except TokenError:
            pass
        except pkcs11.PKCS11Error as exc:  # pragma: no cover - the failure this test guards
            pytest.fail(f"raw pkcs11 exception leaked: {exc!r}")


# --- the key never leaves the token ------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["rsa2048", "ec-p256"])
def test_generated_private_key_is_sensitive_and_not_extractable(
    softhsm_token: SoftHSMToken, key_type: str
) -> None:
    generate_key_on_token(softhsm_token.uri(), key_type, "k", b"\x09")  # type: ignore[arg-type]
    lib = pkcs11.lib(softhsm_token.module)
    with lib.get_token(token_label=softhsm_token.label).open(user_pin=softhsm_token.pin) as s:
        private = s.get_key(pkcs11.ObjectClass.PRIVATE_KEY, label="k")
        assert private[pkcs11.Attribute.SENSITIVE] is True
        assert private[pkcs11.Attribute.EXTRACTABLE] is False
        assert private[pkcs11.Attribute.ALWAYS_SENSITIVE] is True
        assert private[pkcs11.Attribute.NEVER_EXTRACTABLE] is True
        secret = (
            pkcs11.Attribute.PRIVATE_EXPONENT if key_type == "rsa2048" else pkcs11.Attribute.VALUE
        )
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            private[secret]


def test_generating_a_second_key_with_the_same_label_is_refused(
    rsa_key: tuple[SoftHSMToken, object],
) -> None:
    token, _ = rsa_key
    with pytest.raises(TokenError, match="already exists"):
        generate_key_on_token(token.uri(), "ec-p256", "enc-key", b"\x55")


def test_token_key_is_a_private_key_handle_with_the_generated_public_key(
    rsa_key: tuple[SoftHSMToken, rsa.RSAPublicKey], ec_key: tuple[SoftHSMToken, object]
) -> None:
    token, public = rsa_key
    _, ec_public = ec_key
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    with _open(token, "enc-key") as key, _open(token, "ec-key") as ec_token_key:
        assert isinstance(key, PrivateKeyHandle)
        assert key.public_key.public_bytes(*spki) == public.public_bytes(*spki)
        assert ec_token_key.public_key.public_bytes(*spki) == ec_public.public_bytes(*spki)
        assert key.id == b"\x01" and key.label == "enc-key"


# --- signing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("hash_name", HASHES)
def test_rsa_signature_made_on_token_verifies_with_cryptography(
    rsa_key: tuple[SoftHSMToken, rsa.RSAPublicKey], hash_name: str
) -> None:
    signature, public = _signed_on(rsa_key, "enc-key", b"bid package", hash_name)
    public.verify(signature, b"bid package", padding.PKCS1v15(), SHA[hash_name]())


@pytest.mark.parametrize("hash_name", HASHES)
def test_ec_signature_made_on_token_is_der_and_verifies(
    ec_key: tuple[SoftHSMToken, ec.EllipticCurvePublicKey], hash_name: str
) -> None:
    signature, public = _signed_on(ec_key, "ec-key", b"bid package", hash_name)
    assert signature[0] == 0x30  # DER SEQUENCE, not raw r||s
    public.verify(signature, b"bid package", ec.ECDSA(SHA[hash_name]()))


def test_a_closed_key_refuses_to_sign(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    key = _open(token, "enc-key")
    key.close()
    key.close()  # closing twice is harmless
    assert key.closed
    with pytest.raises(TokenError, match="closed"):
        key.sign(b"x")


def test_two_keys_on_one_token_share_the_login_and_close_independently(
    rsa_key: tuple[SoftHSMToken, rsa.RSAPublicKey], ec_key: tuple[SoftHSMToken, object]
) -> None:
    token, public = rsa_key
    first = _open(token, "enc-key")
    second = _open(token, "ec-key")
    first.close()  # must not log the token out under `second`
    second.sign(b"still logged in")
    second.close()
    with _open(token, "enc-key") as again:  # and a later login works
        public.verify(again.sign(b"x"), b"x", padding.PKCS1v15(), hashes.SHA256())


# --- RSA key transport -------------------------------------------------------------------------

OAEP_SHA1 = KeyTransportPadding("oaep", "sha1", "sha1")
PKCS1 = KeyTransportPadding("pkcs1v15")


@pytest.mark.parametrize("pad", [OAEP_SHA1, PKCS1], ids=["oaep-sha1", "pkcs1v15"])
def test_key_encrypted_in_software_to_the_token_key_decrypts_on_the_token(
    rsa_key: tuple[SoftHSMToken, rsa.RSAPublicKey], pad: KeyTransportPadding
) -> None:
    token, public = rsa_key
    encrypted = public.encrypt(CEK, pad.to_cryptography())
    with _open(token, "enc-key") as key:
        assert key.decrypt_key_transport(encrypted, pad) == CEK


@pytest.mark.parametrize("pad", [OAEP_SHA1, PKCS1], ids=["oaep-sha1", "pkcs1v15"])
def test_key_encrypted_to_another_key_raises_key_unwrap_failed(
    rsa_key: tuple[SoftHSMToken, object], pad: KeyTransportPadding
) -> None:
    token, _ = rsa_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    encrypted = other.encrypt(CEK, pad.to_cryptography())
    with _open(token, "enc-key") as key:
        with pytest.raises(KeyUnwrapFailed):
            key.decrypt_key_transport(encrypted, pad)
        with pytest.raises(KeyUnwrapFailed):
            key.decrypt_key_transport(b"short", pad)
        # The session is still usable after a failed decryption.
        key.sign(b"ok")


def test_oaep_sha256_on_softhsm_raises_algorithm_unsupported_not_a_crash(
    rsa_key: tuple[SoftHSMToken, rsa.RSAPublicKey],
) -> None:
    # SoftHSM 2.6.1 only does OAEP with SHA-1 (CKR_ARGUMENTS_BAD otherwise).
    token, public = rsa_key
    pad = KeyTransportPadding("oaep", "sha256", "sha256")
    encrypted = public.encrypt(CEK, pad.to_cryptography())
    with _open(token, "enc-key") as key, pytest.raises(AlgorithmUnsupported, match="OAEP"):
        key.decrypt_key_transport(encrypted, pad)


def test_ec_key_cannot_decrypt_key_transport(ec_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = ec_key
    with _open(token, "ec-key") as key, pytest.raises(KeyUnwrapFailed):
        key.decrypt_key_transport(b"\x00" * 256, PKCS1)


# --- ECDH --------------------------------------------------------------------------------------


def test_ecdh_on_token_equals_ecdh_in_software_with_the_ephemeral_key(
    ec_key: tuple[SoftHSMToken, ec.EllipticCurvePublicKey],
) -> None:
    token, public = ec_key
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    with _open(token, "ec-key") as key:
        on_token = key.ecdh(ephemeral.public_key())
        assert key.ecdh(ephemeral.public_key()) == on_token  # repeatable, no leftovers
    assert on_token == ephemeral.exchange(ec.ECDH(), public)
    assert on_token == SoftwareKey(ephemeral).ecdh(public)
    assert len(on_token) == 32


def test_ecdh_leaves_no_secret_objects_on_the_token(ec_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = ec_key
    with _open(token, "ec-key") as key:
        key.ecdh(ec.generate_private_key(ec.SECP256R1()).public_key())
        assert [o for o in list_objects(token.uri()) if o.type == "secret-key"] == []


def test_ecdh_with_a_peer_on_another_curve_raises_key_unwrap_failed(
    ec_key: tuple[SoftHSMToken, object],
) -> None:
    token, _ = ec_key
    with _open(token, "ec-key") as key, pytest.raises(KeyUnwrapFailed, match="curve"):
        key.ecdh(ec.generate_private_key(ec.SECP384R1()).public_key())


def test_rsa_key_cannot_agree_ecdh(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    with _open(token, "enc-key") as key, pytest.raises(KeyUnwrapFailed):
        key.ecdh(ec.generate_private_key(ec.SECP256R1()).public_key())


# --- certificates ------------------------------------------------------------------------------


def test_certificate_stored_next_to_the_key_is_found_by_the_key_uri(
    rsa_key: tuple[SoftHSMToken, rsa.RSAPublicKey],
) -> None:
    token, public = rsa_key
    cert = _self_signed_for(public)
    store_certificate_on_token(token.uri("enc-key", b"\x01"), cert)
    assert find_certificate(token.uri("enc-key", type="private")) == cert
    assert find_certificate(token.uri(id=b"\x01", with_pin=False)) == cert
    assert find_certificate(token.uri("other-key")) is None


def test_certificate_for_another_key_is_refused(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(KeyCertificateMismatch):
        store_certificate_on_token(token.uri("enc-key", b"\x01"), _self_signed_for(other))


def test_ec_public_key_comes_from_the_certificate_when_the_public_object_is_gone(
    ec_key: tuple[SoftHSMToken, ec.EllipticCurvePublicKey],
) -> None:
    # EC private keys carry no CKA_EC_POINT; CA tools often leave only key + certificate.
    token, public = ec_key
    store_certificate_on_token(token.uri("ec-key", b"\x02"), _self_signed_for(public))
    lib = pkcs11.lib(token.module)
    with lib.get_token(token_label=token.label).open(rw=True, user_pin=token.pin) as s:
        s.get_key(pkcs11.ObjectClass.PUBLIC_KEY, label="ec-key").destroy()
    with _open(token, "ec-key") as key:
        assert key.public_key == public


# --- listing, CLI, several tokens in one process -----------------------------------------------


def test_list_tokens_and_objects(rsa_key: tuple[SoftHSMToken, object]) -> None:
    token, _ = rsa_key
    infos = [t for t in list_tokens(token.module) if t.label == token.label]
    assert len(infos) == 1 and infos[0].manufacturer == "SoftHSM project"
    assert parse_uri(infos[0].uri).token == token.label
    public_only = {(o.type, o.label) for o in list_objects(token.uri(with_pin=False))}
    assert public_only == {("public", "enc-key")}
    everything = {(o.type, o.label, o.key_type) for o in list_objects(token.uri())}
    assert everything == {("public", "enc-key", "rsa"), ("private", "enc-key", "rsa")}


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="bidbridge")
    token_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def test_cli_keygen_import_cert_and_list(
    softhsm_token: SoftHSMToken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm_token.pin + "\n")
    uri = softhsm_token.uri(with_pin=False)
    out = tmp_path / "pub.pem"
    code = _cli("token", "keygen", "--uri", uri, "--type", "ec-p256", "--label", "sig",
                "--id", "0a", "--out", str(out), "--pin-file", str(pin_file))  # fmt: skip
    assert code == 0
    public = serialization.load_pem_public_key(out.read_bytes())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    cert_file = tmp_path / "cert.pem"
    cert_file.write_bytes(_self_signed_for(public).public_bytes(serialization.Encoding.PEM))
    key_uri = softhsm_token.uri("sig", b"\x0a", with_pin=False)
    assert _cli("token", "import-cert", "--uri", key_uri, "--cert", str(cert_file),
                "--pin-file", str(pin_file)) == 0  # fmt: skip
    capsys.readouterr()
    assert _cli("token", "list", "--module", softhsm_token.module) == 0
    assert softhsm_token.label in capsys.readouterr().out
    assert _cli("token", "list", "--uri", uri, "--pin-file", str(pin_file)) == 0
    listing = capsys.readouterr().out
    assert "private\tec" in listing and "cert" in listing and "id=0a" in listing


def test_cli_help_is_bilingual(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli("token", "keygen", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "CA 锁" in text and "not extractable" in text and "--pin-file" in text


def test_tokens_created_after_the_module_was_loaded_are_found(
    rsa_key: tuple[SoftHSMToken, object],
) -> None:
    # SoftHSM fixes its slot list at C_Initialize; the helper re-initialises the module.
    token, _ = rsa_key
    with _open(token, "enc-key"):
        pass  # the module is loaded and was used
    with softhsm_setup(label=f"late-{os.getpid() % 10000}-{id(token) % 1000}", pin="2468") as late:
        generate_key_on_token(late.uri(), "ec-p256", "k", b"\x01")
        with open_token_key(late.uri("k")) as key:
            key.sign(b"x")
        with pytest.raises(TokenPinIncorrect):
            open_token_key(late.uri("k"), pin="1234")
