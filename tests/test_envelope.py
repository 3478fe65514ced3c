"""crypto.envelope: AuthEnvelopedData with RSA-OAEP, RSA PKCS#1 v1.5 and ECDH recipients."""

from __future__ import annotations

import io

import pytest
from asn1crypto import cms

from crypto.envelope import (
    Recipient,
    decrypt_stream,
    inspect_stream,
    is_addressed_to,
    open_bytes,
    recipients_of,
    seal_bytes,
    unwrap_content_key,
)
from crypto.errors import EnvelopeTampered, KeyUnwrapFailed, NotARecipient, WrongKeyUsage
from crypto.keys import KeyTransportPadding, SoftwareKey
from tests.support.pki import Pki

SECRET = b"bid content " * 1000


def _key(issued):  # type: ignore[no-untyped-def]
    return SoftwareKey(issued.key)


@pytest.mark.parametrize(
    "pad",
    [
        KeyTransportPadding("oaep", "sha256", "sha256"),
        KeyTransportPadding("oaep", "sha1", "sha1"),
        KeyTransportPadding("pkcs1v15"),
    ],
    ids=["oaep-sha256", "oaep-sha1", "pkcs1v15"],
)
def test_rsa_recipient_round_trip(pki: Pki, pad: KeyTransportPadding) -> None:
    enc = pki.bidder_rsa.encryption
    env = seal_bytes(SECRET, [Recipient(enc.certificate, pad)])
    assert open_bytes(env, _key(enc), enc.certificate) == SECRET


def test_ecdh_p256_recipient_round_trip(pki: Pki) -> None:
    enc = pki.bidder_ec.encryption
    env = seal_bytes(SECRET, [Recipient(enc.certificate)])
    info = inspect_stream(io.BytesIO(env))
    (kari,) = info.recipient_infos
    assert kari.name == "kari"
    kea = kari.chosen["key_encryption_algorithm"]
    assert kea["algorithm"].dotted == "1.3.132.1.11.1"  # dhSinglePass-stdDH-sha256kdf-scheme
    assert kea["parameters"]["algorithm"].native == "aes256_wrap"
    assert open_bytes(env, _key(enc), enc.certificate) == SECRET


def test_envelope_is_der_auth_enveloped_data_with_aes_256_gcm(pki: Pki) -> None:
    env = seal_bytes(SECRET, [Recipient(pki.bidder_rsa.encryption.certificate)])
    ci = cms.ContentInfo.load(env)
    assert ci["content_type"].native == "authenticated_enveloped_data"
    assert ci.dump(force=True) == env  # re-encoding gives the same bytes: DER
    info = inspect_stream(io.BytesIO(env))
    assert info.cipher_name == "aes256_gcm"
    assert len(info.mac or b"") == 16


def test_any_number_of_recipients_can_each_open(pki: Pki) -> None:
    holders = [pki.bidder_rsa.encryption, pki.bidder_ec.encryption, pki.other_rsa.encryption]
    env = seal_bytes(SECRET, [Recipient(h.certificate) for h in holders])
    info = inspect_stream(io.BytesIO(env))
    assert len(recipients_of(info)) == 3
    for h in holders:
        assert is_addressed_to(info, h.certificate)
        assert open_bytes(env, _key(h), h.certificate) == SECRET


def test_key_only_without_certificate_finds_its_recipient(pki: Pki) -> None:
    holders = [pki.other_rsa.encryption, pki.bidder_rsa.encryption]
    env = seal_bytes(SECRET, [Recipient(h.certificate) for h in holders])
    assert open_bytes(env, _key(pki.bidder_rsa.encryption)) == SECRET


def test_envelope_for_another_recipient_is_refused(pki: Pki) -> None:
    env = seal_bytes(SECRET, [Recipient(pki.bidder_rsa.encryption.certificate)])
    info = inspect_stream(io.BytesIO(env))
    assert not is_addressed_to(info, pki.other_rsa.encryption.certificate)
    with pytest.raises(NotARecipient):
        unwrap_content_key(
            info, _key(pki.other_rsa.encryption), pki.other_rsa.encryption.certificate
        )


def test_wrong_key_for_the_named_certificate_fails_to_unwrap(pki: Pki) -> None:
    env = seal_bytes(SECRET, [Recipient(pki.bidder_rsa.encryption.certificate)])
    info = inspect_stream(io.BytesIO(env))
    with pytest.raises(KeyUnwrapFailed):
        unwrap_content_key(
            info, _key(pki.other_rsa.encryption), pki.bidder_rsa.encryption.certificate
        )


def test_sealing_to_a_signing_certificate_is_refused(pki: Pki) -> None:
    with pytest.raises(WrongKeyUsage):
        seal_bytes(SECRET, [Recipient(pki.bidder_rsa.signing.certificate)])


def test_changed_tag_is_detected_only_after_all_plaintext_is_read(pki: Pki) -> None:
    enc = pki.bidder_rsa.encryption
    env = bytearray(seal_bytes(SECRET, [Recipient(enc.certificate)]))
    env[-1] ^= 0x80
    f = io.BytesIO(bytes(env))
    info = inspect_stream(f)
    cek = unwrap_content_key(info, _key(enc), enc.certificate)
    with pytest.raises(EnvelopeTampered):
        for _ in decrypt_stream(f, info, cek):
            pass


def test_wrong_length_content_key_is_refused(pki: Pki) -> None:
    env = seal_bytes(SECRET, [Recipient(pki.bidder_rsa.encryption.certificate)])
    f = io.BytesIO(env)
    info = inspect_stream(f)
    with pytest.raises(KeyUnwrapFailed):
        next(decrypt_stream(f, info, b"\x00" * 16))
