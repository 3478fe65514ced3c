"""备用解密: the backup key split k-of-n among custodians, with real keys; nothing is mocked."""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crypto import ca
from crypto.bid import open_bid
from crypto.errors import (
    KeyCertificateMismatch,
    NotARecipient,
    QuorumError,
    QuorumInsufficientShares,
    QuorumRebuildFailed,
    WrongKeyUsage,
)
from crypto.keys import SoftwareKey
from crypto.quorum import (
    DecryptedShare,
    QuorumBundle,
    open_share,
    rebuild_backup_key,
    split_backup_key,
)
from tests.support.pki import CODE_A, Pki, make_package, seal_as


@dataclass
class Holder:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ca.PrivateKey

    @property
    def handle(self) -> SoftwareKey:
        return SoftwareKey(self.key)


def _encryption_cert(issuer: ca.Issued, common_name: str, role: str, key: ca.PrivateKey) -> Holder:
    """A person's encryption certificate (the second of a Chinese CA's pair, 双证书).

    ``crypto.ca.issue_person`` only issues signing certificates, so the test builds the
    encryption one here with the same CA.
    """
    assert issuer.key is not None
    public = key.public_key()
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=isinstance(public, rsa.RSAPublicKey),
        data_encipherment=isinstance(public, rsa.RSAPublicKey),
        key_agreement=isinstance(public, ec.EllipticCurvePublicKey),
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    now = datetime.now(UTC) - timedelta(minutes=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(issuer.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .sign(issuer.key, hashes.SHA256())
    )
    return Holder(cert, key)


CUSTODIANS: list[tuple[str, str, ca.KeyType]] = [
    ("王主持", "host", "rsa2048"),
    ("李监督", "supervisor", "ec-p256"),
    ("交易中心", "centre", "rsa2048"),
    ("赵监督", "supervisor", "rsa2048"),
    ("钱主持", "host", "ec-p256"),
]


@pytest.fixture(scope="module")
def custodians(pki: Pki) -> list[Holder]:
    return [
        _encryption_cert(pki.root_a, name, role, ca.generate_key(key_type))
        for name, role, key_type in CUSTODIANS
    ]


@pytest.fixture(scope="module")
def backup(pki: Pki) -> Holder:
    return _encryption_cert(pki.root_a, "备用解密 JS-2026-0101", "centre", ca.generate_key())


@pytest.fixture(scope="module")
def bundle_2_of_3(backup: Holder, custodians: list[Holder]) -> QuorumBundle:
    return split_backup_key(
        backup.key,
        backup.certificate,
        [c.certificate for c in custodians[:3]],
        2,
        label="JS-2026-0101",
    )


@pytest.fixture(scope="module")
def opened_2_of_3(bundle_2_of_3: QuorumBundle, custodians: list[Holder]) -> list[DecryptedShare]:
    return [open_share(bundle_2_of_3, c.handle, c.certificate) for c in custodians[:3]]


def _same_key(rebuilt: SoftwareKey, holder: Holder) -> bool:
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return rebuilt.public_key.public_bytes(der, spki) == holder.key.public_key().public_bytes(
        der, spki
    )


# --- rebuilding with a quorum ----------------------------------------------------------------


def test_every_two_of_three_custodians_rebuild_the_backup_key(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare], backup: Holder
) -> None:
    for subset in itertools.combinations(opened_2_of_3, 2):
        assert _same_key(rebuild_backup_key(bundle_2_of_3, subset), backup)


def test_all_three_shares_also_rebuild_the_key(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare], backup: Holder
) -> None:
    assert _same_key(rebuild_backup_key(bundle_2_of_3, opened_2_of_3), backup)


def test_every_three_of_five_custodians_rebuild_an_ec_backup_key(
    pki: Pki, custodians: list[Holder]
) -> None:
    ec_backup = _encryption_cert(pki.root_a, "备用解密 EC", "centre", ca.generate_key("ec-p256"))
    bundle = split_backup_key(
        ec_backup.key,
        ec_backup.certificate,
        [c.certificate for c in custodians],
        3,
    )
    opened = [open_share(bundle, c.handle, c.certificate) for c in custodians]
    for subset in itertools.combinations(opened, 3):
        assert _same_key(rebuild_backup_key(bundle, subset), ec_backup)
    for too_few in itertools.combinations(opened, 2):
        with pytest.raises(QuorumInsufficientShares):
            rebuild_backup_key(bundle, too_few)


def test_the_rebuilt_key_opens_a_bid_sealed_to_the_backup_certificate(
    tmp_path: Path,
    pki: Pki,
    bundle_2_of_3: QuorumBundle,
    opened_2_of_3: list[DecryptedShare],
    backup: Holder,
) -> None:
    envelope = tmp_path / "bid.p7m"
    seal_as(
        pki.bidder_rsa,
        make_package(tmp_path / "bid", CODE_A),
        envelope,
        also_to=[bundle_2_of_3.certificate],
    )
    rebuilt = rebuild_backup_key(bundle_2_of_3, [opened_2_of_3[2], opened_2_of_3[0]])
    opened = open_bid(envelope, tmp_path / "out", key=rebuilt, cert=backup.certificate)
    assert opened.summary.bidder_credit_code == CODE_A


# --- refusals --------------------------------------------------------------------------------


def test_one_share_of_a_two_of_three_split_is_insufficient(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare]
) -> None:
    with pytest.raises(QuorumInsufficientShares, match="1 distinct share"):
        rebuild_backup_key(bundle_2_of_3, opened_2_of_3[:1])
    with pytest.raises(QuorumInsufficientShares):
        rebuild_backup_key(bundle_2_of_3, [])


def test_the_same_share_given_twice_counts_once(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare]
) -> None:
    with pytest.raises(QuorumInsufficientShares):
        rebuild_backup_key(bundle_2_of_3, [opened_2_of_3[1], opened_2_of_3[1]])


@pytest.mark.parametrize("byte", [0, 15, 16, 31])
def test_a_share_with_one_byte_changed_fails_the_authenticated_check(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare], byte: int
) -> None:
    good, bad = opened_2_of_3[0], opened_2_of_3[1]
    value = bytearray(bad.value)
    value[byte] ^= 0x01
    with pytest.raises(QuorumRebuildFailed, match="integrity check"):
        rebuild_backup_key(bundle_2_of_3, [good, replace(bad, value=bytes(value))])


def test_a_wrong_share_cannot_hide_behind_a_quorum_of_good_ones(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare]
) -> None:
    bad = replace(opened_2_of_3[2], value=bytes(32))
    with pytest.raises(QuorumRebuildFailed):
        rebuild_backup_key(bundle_2_of_3, [*opened_2_of_3[:2], bad])


def test_two_different_values_for_one_index_are_refused(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare]
) -> None:
    forged = replace(opened_2_of_3[0], value=bytes(32))
    with pytest.raises(QuorumRebuildFailed, match="two different values"):
        rebuild_backup_key(bundle_2_of_3, [opened_2_of_3[0], forged, opened_2_of_3[1]])


@pytest.fixture
def foreign_share(backup: Holder, custodians: list[Holder]) -> DecryptedShare:
    """Custodian 1's opened share of a second 2-of-3 split of the same backup key."""
    other = split_backup_key(
        backup.key,
        backup.certificate,
        [c.certificate for c in custodians[:3]],
        2,
    )
    return open_share(other, custodians[1].handle, custodians[1].certificate)


def test_a_share_of_another_bundle_is_refused_by_key_id(
    bundle_2_of_3: QuorumBundle,
    opened_2_of_3: list[DecryptedShare],
    foreign_share: DecryptedShare,
) -> None:
    with pytest.raises(QuorumRebuildFailed, match="belongs to backup key"):
        rebuild_backup_key(bundle_2_of_3, [opened_2_of_3[0], foreign_share])


def test_a_foreign_share_relabelled_with_this_key_id_fails_the_authenticated_check(
    bundle_2_of_3: QuorumBundle,
    opened_2_of_3: list[DecryptedShare],
    foreign_share: DecryptedShare,
) -> None:
    relabelled = replace(foreign_share, key_id=bundle_2_of_3.key_id)
    with pytest.raises(QuorumRebuildFailed, match="integrity check"):
        rebuild_backup_key(bundle_2_of_3, [opened_2_of_3[0], relabelled])


def test_a_share_with_another_threshold_is_refused(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare]
) -> None:
    with pytest.raises(QuorumRebuildFailed, match="does not fit"):
        rebuild_backup_key(bundle_2_of_3, [opened_2_of_3[0], replace(opened_2_of_3[1], k=3)])


def test_a_custodian_cannot_open_another_custodians_share(
    bundle_2_of_3: QuorumBundle, custodians: list[Holder]
) -> None:
    host, supervisor = custodians[0], custodians[1]
    with pytest.raises(NotARecipient):
        open_share(bundle_2_of_3.shares[1], host.handle, host.certificate)
    with pytest.raises(NotARecipient):
        open_share(bundle_2_of_3.shares[0], supervisor.handle, supervisor.certificate)


def test_a_stranger_holds_no_share_of_the_bundle(
    bundle_2_of_3: QuorumBundle, custodians: list[Holder]
) -> None:
    stranger = custodians[4]
    with pytest.raises(NotARecipient, match="holds no share"):
        open_share(bundle_2_of_3, stranger.handle, stranger.certificate)


def test_the_rebuilt_key_does_not_open_the_bidders_own_recipient(
    tmp_path: Path, pki: Pki, bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare]
) -> None:
    envelope = tmp_path / "bid.p7m"
    seal_as(pki.bidder_rsa, make_package(tmp_path / "bid", CODE_A), envelope)
    rebuilt = rebuild_backup_key(bundle_2_of_3, opened_2_of_3[:2])
    with pytest.raises(NotARecipient):
        open_bid(envelope, tmp_path / "out", key=rebuilt, cert=bundle_2_of_3.certificate)


# --- splitting -------------------------------------------------------------------------------


def test_shares_cannot_be_sealed_to_a_signing_only_certificate(
    pki: Pki, backup: Holder, custodians: list[Holder]
) -> None:
    signing = ca.issue_person(pki.root_a, name="王主持", role="host", person_id="H001")
    with pytest.raises(WrongKeyUsage):
        split_backup_key(
            backup.key,
            backup.certificate,
            [signing.certificate, custodians[1].certificate],
            2,
        )


@pytest.mark.parametrize(("k", "n"), [(1, 3), (0, 3), (4, 3), (2, 1)])
def test_threshold_must_be_at_least_two_and_at_most_the_custodian_count(
    backup: Holder, custodians: list[Holder], k: int, n: int
) -> None:
    with pytest.raises(QuorumError, match="k <= n"):
        split_backup_key(
            backup.key,
            backup.certificate,
            [c.certificate for c in custodians[:n]],
            k,
        )


def test_the_same_custodian_twice_is_refused(backup: Holder, custodians: list[Holder]) -> None:
    certs = [custodians[0].certificate, custodians[1].certificate, custodians[0].certificate]
    with pytest.raises(QuorumError, match="different"):
        split_backup_key(backup.key, backup.certificate, certs, 2)


def test_a_backup_key_that_does_not_match_its_certificate_is_refused(
    backup: Holder, custodians: list[Holder]
) -> None:
    with pytest.raises(KeyCertificateMismatch):
        split_backup_key(
            ca.generate_key(),
            backup.certificate,
            [c.certificate for c in custodians[:3]],
            2,
        )


def test_each_share_names_its_custodian_and_the_bundle_holds_no_plain_key(
    bundle_2_of_3: QuorumBundle, custodians: list[Holder], backup: Holder
) -> None:
    assert [s.index for s in bundle_2_of_3.shares] == [1, 2, 3]
    for share, holder in zip(bundle_2_of_3.shares, custodians, strict=False):
        assert share.custodian_subject == holder.certificate.subject.rfc4514_string()
        assert bundle_2_of_3.share_for(holder.certificate) == share
    pkcs8 = backup.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    stored = json.loads(bundle_2_of_3.to_json())
    assert base64.b64decode(stored["encrypted_private_key"])[: len(pkcs8)] != pkcs8
    assert pkcs8[:64].hex() not in bundle_2_of_3.to_json()


# --- the stored form -------------------------------------------------------------------------


def test_bundle_json_round_trip_still_rebuilds(
    bundle_2_of_3: QuorumBundle, custodians: list[Holder], backup: Holder
) -> None:
    again = QuorumBundle.from_json(bundle_2_of_3.to_json())
    assert again == bundle_2_of_3
    shares = [open_share(again, c.handle, c.certificate) for c in custodians[1:3]]
    assert _same_key(rebuild_backup_key(again, shares), backup)


def test_decrypted_share_json_round_trip(opened_2_of_3: list[DecryptedShare]) -> None:
    share = opened_2_of_3[0]
    assert DecryptedShare.from_json(share.to_json()) == share
    assert share.value.hex() not in repr(share)


def _mutated(bundle: QuorumBundle, change: str) -> str:
    obj = json.loads(bundle.to_json())
    if change == "version":
        obj["version"] = 2
    elif change == "bool version":
        obj["version"] = True
    elif change == "unknown field":
        obj["extra"] = 1
    elif change == "missing field":
        del obj["nonce"]
    elif change == "bad base64":
        obj["encrypted_private_key"] = "@@@"
    elif change == "short nonce":
        obj["nonce"] = "AAAA"
    elif change == "missing share":
        obj["shares"] = obj["shares"][:2]
    elif change == "repeated index":
        obj["shares"][1]["index"] = 1
    elif change == "string k":
        obj["k"] = "2"
    elif change == "certificate":
        obj["certificate"] = "AAAA"
    return json.dumps(obj)


@pytest.mark.parametrize(
    "change",
    [
        "version",
        "bool version",
        "unknown field",
        "missing field",
        "bad base64",
        "short nonce",
        "missing share",
        "repeated index",
        "string k",
        "certificate",
    ],
)
def test_a_malformed_bundle_is_refused_with_a_quorum_error(
    bundle_2_of_3: QuorumBundle, change: str
) -> None:
    with pytest.raises(QuorumError):
        QuorumBundle.from_json(_mutated(bundle_2_of_3, change))


def test_text_that_is_not_json_is_refused_with_a_quorum_error() -> None:
    with pytest.raises(QuorumError, match="not JSON"):
        QuorumBundle.from_json("not json")
    with pytest.raises(QuorumError):
        QuorumBundle.from_json("[]")


def test_a_bundle_moved_to_another_certificate_fails_the_authenticated_check(
    pki: Pki, bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare]
) -> None:
    moved = replace(bundle_2_of_3, certificate=pki.bidder_rsa.encryption.certificate)
    with pytest.raises(QuorumRebuildFailed, match="integrity check"):
        rebuild_backup_key(moved, opened_2_of_3[:2])


def test_a_bundle_relabelled_fails_the_authenticated_check(
    bundle_2_of_3: QuorumBundle, opened_2_of_3: list[DecryptedShare]
) -> None:
    with pytest.raises(QuorumRebuildFailed, match="integrity check"):
        rebuild_backup_key(replace(bundle_2_of_3, label="JS-2026-9999"), opened_2_of_3[:2])
