"""Trust store and path validation: real certificates and CRLs, pyhanko underneath, no mocks.

Everything happens at fixed instants (BASE + n days), never at the wall clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crypto import ca
from crypto.errors import (
    BadCertificateSignature,
    BrokenChain,
    CertificateError,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRevoked,
    KeyLoadFailed,
    RevocationUnknown,
    UnknownIssuer,
    WrongKeyUsage,
)
from crypto.trust import TrustStore
from schemas.common import uscc_check_char

BASE = datetime(2025, 1, 1, tzinfo=UTC)
AT = BASE + timedelta(days=30)
REVOKED_AT = BASE + timedelta(days=20)


def day(n: float) -> datetime:
    return BASE + timedelta(days=n)


def code(first17: str) -> str:
    return first17 + uscc_check_char(first17)


CODE_A = code("91330106MA2B3C4D5")
CODE_B = code("91110108MA01ABCD2")
CODE_R = code("91440300MA5EQWER1")


@dataclass
class World:
    root_a: ca.Issued
    sub_a: ca.Issued
    root_b: ca.Issued
    bidder_a: ca.CompanyPair  # from CA A, under the intermediate
    bidder_b: ca.CompanyPair  # from CA B, directly under the root
    bidder_rsa: ca.CompanyPair  # RSA keys, from CA B
    revoked: ca.Issued  # from CA A's intermediate, revoked at REVOKED_AT
    host: ca.Issued
    server: ca.Issued
    crl_root_a: x509.CertificateRevocationList
    crl_sub_a: x509.CertificateRevocationList
    crl_root_b: x509.CertificateRevocationList

    def store(self, *, without: tuple[str, ...] = (), **kw: bool) -> TrustStore:
        crls = {"root_a": self.crl_root_a, "sub_a": self.crl_sub_a, "root_b": self.crl_root_b}
        return TrustStore(
            [self.root_a.certificate, self.root_b.certificate],
            [self.sub_a.certificate],
            [c for name, c in crls.items() if name not in without],
            **kw,
        )


def crl_for(
    issuer: ca.Issued, revoked: list[ca.RevokedEntry] | None = None, *, start: float = 1
) -> x509.CertificateRevocationList:
    return ca.issue_crl(
        issuer, revoked or [], this_update=day(start), next_update=day(start + 60), crl_number=1
    )


@pytest.fixture(scope="module")
def world() -> World:
    ec: ca.KeyType = "ec-p256"
    root_a = ca.create_root_ca(
        "Test Root CA A", organization="Test CA A", key_type=ec, not_before=BASE
    )
    sub_a = ca.create_intermediate_ca(root_a, "Test Sub CA A1", key_type=ec, not_before=BASE)
    root_b = ca.create_root_ca(
        "Test Root CA B", organization="Test CA B", key_type=ec, not_before=BASE
    )
    bidder_a = ca.issue_company_pair(
        sub_a, credit_code=CODE_A, company_name="甲建设有限公司", key_type=ec, not_before=BASE
    )
    bidder_b = ca.issue_company_pair(
        root_b, credit_code=CODE_B, company_name="乙工程有限公司", key_type=ec, not_before=BASE
    )
    bidder_rsa = ca.issue_company_pair(
        root_b, credit_code=CODE_R, company_name="丙科技有限公司", not_before=BASE
    )
    revoked = ca.issue_company_signing(
        sub_a, credit_code=CODE_A, company_name="甲建设有限公司", key_type=ec, not_before=BASE
    )
    host = ca.issue_person(
        root_b, name="张三", role="host", person_id="H-001", key_type=ec, not_before=BASE
    )
    server = ca.issue_server(root_b, dns_names=["bid.example.cn"], key_type=ec, not_before=BASE)
    entry = ca.RevokedEntry(
        revoked.certificate.serial_number, REVOKED_AT, x509.ReasonFlags.key_compromise
    )
    return World(
        root_a=root_a,
        sub_a=sub_a,
        root_b=root_b,
        bidder_a=bidder_a,
        bidder_b=bidder_b,
        bidder_rsa=bidder_rsa,
        revoked=revoked,
        host=host,
        server=server,
        crl_root_a=crl_for(root_a),
        crl_sub_a=crl_for(sub_a, [entry]),
        crl_root_b=crl_for(root_b),
    )


# --- several CAs at once ---------------------------------------------------------------------


def test_bidders_of_two_independent_cas_both_validate(world: World) -> None:
    store = world.store()
    path_a = store.validate(world.bidder_a.signing.certificate, "bid_signature", AT)
    path_b = store.validate(world.bidder_b.signing.certificate, "bid_signature", AT)
    assert path_a == [
        world.bidder_a.signing.certificate,
        world.sub_a.certificate,
        world.root_a.certificate,
    ]
    assert path_b == [world.bidder_b.signing.certificate, world.root_b.certificate]


def test_intermediate_supplied_with_the_certificate_completes_the_chain(world: World) -> None:
    store = TrustStore([world.root_a.certificate], crls=[world.crl_root_a, world.crl_sub_a])
    path = store.validate(
        world.bidder_a.signing.certificate, "login", AT, [world.sub_a.certificate]
    )
    assert path[1] == world.sub_a.certificate


def test_purposes_accept_the_matching_certificates(world: World) -> None:
    store = world.store()
    store.validate(world.bidder_a.signing.certificate, "login", AT)
    store.validate(world.bidder_a.encryption.certificate, "encryption", AT)  # EC: keyAgreement
    store.validate(world.bidder_rsa.encryption.certificate, "encryption", AT)  # keyEncipherment
    store.validate(world.bidder_rsa.signing.certificate, "bid_signature", AT)
    store.validate(world.host.certificate, "login", AT)


def test_avalidate_and_validate_agree_inside_a_running_event_loop(world: World) -> None:
    store = world.store()
    cert = world.bidder_b.signing.certificate

    async def inside() -> tuple[list[x509.Certificate], list[x509.Certificate]]:
        awaited = await store.avalidate(cert, "bid_signature", AT)
        # the synchronous wrapper must work while this thread's loop is running
        return awaited, store.validate(cert, "bid_signature", AT)

    awaited, synchronous = asyncio.run(inside())
    assert awaited == synchronous == [cert, world.root_b.certificate]


# --- unknown issuer and broken chains --------------------------------------------------------


def test_certificate_from_a_ca_nobody_trusts_is_an_unknown_issuer(world: World) -> None:
    rogue = ca.create_root_ca("Rogue Root", organization="Rogue CA", key_type="ec-p256")
    cert = ca.issue_company_signing(
        rogue, credit_code=CODE_A, company_name="甲建设有限公司", key_type="ec-p256"
    ).certificate
    with pytest.raises(UnknownIssuer, match="Rogue Root"):
        world.store().validate(cert, "bid_signature", AT)


def test_self_signed_certificate_is_an_unknown_issuer(world: World) -> None:
    rogue = ca.create_root_ca("Self Made", organization="Nobody", key_type="ec-p256")
    with pytest.raises(UnknownIssuer):
        world.store().validate(rogue.certificate, "login", AT)


def test_a_store_without_roots_trusts_nothing_not_even_the_system_roots(world: World) -> None:
    with pytest.raises(UnknownIssuer):
        TrustStore([]).validate(world.bidder_b.signing.certificate, "login", AT)


def test_missing_intermediate_of_a_trusted_ca_is_a_broken_chain(world: World) -> None:
    store = TrustStore([world.root_a.certificate], crls=[world.crl_root_a, world.crl_sub_a])
    with pytest.raises(BrokenChain, match="Test Sub CA A1"):
        store.validate(world.bidder_a.signing.certificate, "login", AT)


def test_certificate_issued_by_an_end_entity_is_a_broken_chain(world: World) -> None:
    not_a_ca = world.bidder_b.signing
    cert = ca.issue_person(
        not_a_ca, name="李四", role="expert", person_id="E-9", key_type="ec-p256", not_before=BASE
    ).certificate
    store = world.store()
    store.add_crl(crl_for(not_a_ca))
    with pytest.raises(BrokenChain, match="not a CA"):
        store.validate(cert, "login", AT, [not_a_ca.certificate])


def test_exceeding_the_path_length_is_a_broken_chain(world: World) -> None:
    # sub_a has pathLen 0, so it may not certify another CA
    deeper = ca.create_intermediate_ca(world.sub_a, "Too Deep", key_type="ec-p256", not_before=BASE)
    cert = ca.issue_person(
        deeper, name="王五", role="expert", person_id="E-1", key_type="ec-p256", not_before=BASE
    ).certificate
    store = world.store()
    store.add_crl(crl_for(deeper))
    with pytest.raises(BrokenChain, match="path length"):
        store.validate(cert, "login", AT, [deeper.certificate])


# --- signatures ------------------------------------------------------------------------------


def test_tampered_certificate_has_a_bad_signature(world: World) -> None:
    der = bytearray(world.bidder_b.signing.certificate.public_bytes(serialization.Encoding.DER))
    name = "乙工程有限公司".encode()
    at = der.index(name)
    der[at : at + len(name)] = "丁工程有限公司".encode()  # same length, another company
    tampered = x509.load_der_x509_certificate(bytes(der))
    with pytest.raises(BadCertificateSignature):
        world.store().validate(tampered, "bid_signature", AT)


def test_forged_certificate_with_the_issuer_name_but_another_key_has_a_bad_signature(
    world: World,
) -> None:
    # a self-made CA with exactly the subject of CA A's intermediate
    forger = ca.create_root_ca(
        "Test Sub CA A1", organization="Test CA A", key_type="ec-p256", not_before=BASE
    )
    assert forger.certificate.subject == world.sub_a.certificate.subject
    forged = ca.issue_company_signing(
        forger,
        credit_code=CODE_A,
        company_name="甲建设有限公司",
        key_type="ec-p256",
        not_before=BASE,
    ).certificate
    with pytest.raises(BadCertificateSignature):
        world.store().validate(forged, "bid_signature", AT)


# --- time ------------------------------------------------------------------------------------


def test_expired_certificate_is_refused(world: World) -> None:
    old = ca.issue_company_signing(
        world.root_b,
        credit_code=CODE_B,
        company_name="乙",
        key_type="ec-p256",
        not_before=day(-400),
        days=365,
    ).certificate
    with pytest.raises(CertificateExpired):
        world.store().validate(old, "bid_signature", AT)


def test_certificate_valid_at_the_instant_it_was_used_passes_even_if_expired_now(
    world: World,
) -> None:
    short = ca.issue_company_signing(
        world.root_b,
        credit_code=CODE_B,
        company_name="乙",
        key_type="ec-p256",
        not_before=BASE,
        days=40,
    ).certificate
    assert world.store().validate(short, "bid_signature", AT)
    with pytest.raises(CertificateExpired):
        world.store().validate(short, "bid_signature", day(45))


def test_certificate_not_yet_valid_is_refused(world: World) -> None:
    future = ca.issue_company_signing(
        world.root_b, credit_code=CODE_B, company_name="乙", key_type="ec-p256", not_before=day(40)
    ).certificate
    with pytest.raises(CertificateNotYetValid):
        world.store().validate(future, "bid_signature", AT)


def test_expired_intermediate_makes_its_certificates_expired(world: World) -> None:
    short_sub = ca.create_intermediate_ca(
        world.root_a, "Short Sub", key_type="ec-p256", not_before=BASE, days=10
    )
    cert = ca.issue_person(
        short_sub,
        name="赵六",
        role="supervisor",
        person_id="S-1",
        key_type="ec-p256",
        not_before=BASE,
    ).certificate
    store = world.store()
    store.add_crl(crl_for(short_sub))
    with pytest.raises(CertificateExpired, match="Short Sub"):
        store.validate(cert, "login", AT, [short_sub.certificate])


def test_expired_root_is_refused(world: World) -> None:
    old_root = ca.create_root_ca(
        "Old Root", organization="Old CA", key_type="ec-p256", not_before=BASE, days=10
    )
    cert = ca.issue_person(
        old_root, name="钱七", role="centre", person_id="C-1", key_type="ec-p256", not_before=BASE
    ).certificate
    store = TrustStore([old_root.certificate], crls=[crl_for(old_root)])
    store.validate(cert, "login", day(5))
    with pytest.raises(CertificateExpired, match="Old Root"):
        store.validate(cert, "login", AT)


def test_naive_instant_is_refused(world: World) -> None:
    with pytest.raises(ValueError, match="timezone"):
        world.store().validate(world.bidder_b.signing.certificate, "login", datetime(2025, 2, 1))


# --- revocation ------------------------------------------------------------------------------


def test_certificate_revoked_before_the_instant_is_refused(world: World) -> None:
    with pytest.raises(CertificateRevoked) as caught:
        world.store().validate(world.revoked.certificate, "bid_signature", AT)
    assert caught.value.code == "CERT_REVOKED"
    assert "2025-01-21" in str(caught.value)
    assert "keyCompromise" in str(caught.value)


def test_certificate_revoked_after_the_instant_is_valid_at_that_instant(world: World) -> None:
    path = world.store().validate(world.revoked.certificate, "bid_signature", day(10))
    assert path[0] == world.revoked.certificate


def test_revoked_intermediate_revokes_its_certificates(world: World) -> None:
    entry = ca.RevokedEntry(
        world.sub_a.certificate.serial_number, day(5), x509.ReasonFlags.ca_compromise
    )
    store = world.store(without=("root_a",))
    store.add_crl(crl_for(world.root_a, [entry]))
    with pytest.raises(CertificateRevoked, match="Test Sub CA A1"):
        store.validate(world.bidder_a.signing.certificate, "bid_signature", AT)


def test_missing_crl_is_revocation_unknown_when_revocation_is_required(world: World) -> None:
    store = world.store(without=("root_b",))
    with pytest.raises(RevocationUnknown):
        store.validate(world.bidder_b.signing.certificate, "bid_signature", AT)


def test_missing_crl_of_an_intermediates_issuer_is_revocation_unknown(world: World) -> None:
    store = world.store(without=("root_a",))
    with pytest.raises(RevocationUnknown):
        store.validate(world.bidder_a.signing.certificate, "bid_signature", AT)


def test_crl_outside_its_validity_window_is_revocation_unknown(world: World) -> None:
    # the CRLs run from day 1 to day 61
    with pytest.raises(RevocationUnknown):
        world.store().validate(world.bidder_b.signing.certificate, "login", day(70))
    with pytest.raises(RevocationUnknown):
        world.store().validate(world.bidder_b.signing.certificate, "login", day(0.5))


def test_crl_signed_by_another_key_under_the_same_name_does_not_count(world: World) -> None:
    impostor = ca.create_root_ca(
        "Test Root CA B", organization="Test CA B", key_type="ec-p256", not_before=BASE
    )
    store = world.store(without=("root_b",))
    store.add_crl(crl_for(impostor))
    with pytest.raises(RevocationUnknown):
        store.validate(world.bidder_b.signing.certificate, "login", AT)


def test_without_required_revocation_missing_crls_are_tolerated(world: World) -> None:
    store = world.store(without=("root_a", "root_b"), require_revocation=False)
    store.validate(world.bidder_b.signing.certificate, "login", AT)
    store.validate(world.bidder_a.signing.certificate, "login", AT)


def test_without_required_revocation_crls_present_are_still_checked(world: World) -> None:
    store = world.store(without=("root_a",), require_revocation=False)
    with pytest.raises(CertificateRevoked):
        store.validate(world.revoked.certificate, "bid_signature", AT)


# --- key usage -------------------------------------------------------------------------------


def test_encryption_certificate_used_for_a_bid_signature_is_wrong_usage(world: World) -> None:
    with pytest.raises(WrongKeyUsage, match="bid_signature"):
        world.store().validate(world.bidder_a.encryption.certificate, "bid_signature", AT)
    with pytest.raises(WrongKeyUsage):
        world.store().validate(world.bidder_rsa.encryption.certificate, "login", AT)


def test_signing_certificate_used_for_encryption_is_wrong_usage(world: World) -> None:
    with pytest.raises(WrongKeyUsage, match="keyAgreement"):
        world.store().validate(world.bidder_a.signing.certificate, "encryption", AT)
    with pytest.raises(WrongKeyUsage, match="keyEncipherment"):
        world.store().validate(world.bidder_rsa.signing.certificate, "encryption", AT)


def test_server_only_extended_key_usage_is_refused_for_a_bid_signature(world: World) -> None:
    with pytest.raises(WrongKeyUsage, match="serverAuth"):
        world.store().validate(world.server.certificate, "bid_signature", AT)


def test_ca_certificate_is_not_a_bidder_certificate(world: World) -> None:
    with pytest.raises(WrongKeyUsage):
        world.store().validate(world.sub_a.certificate, "encryption", AT)
    with pytest.raises(WrongKeyUsage, match="CA"):
        world.store().validate(world.sub_a.certificate, "login", AT)


def test_every_failure_is_a_typed_certificate_error(world: World) -> None:
    with pytest.raises(CertificateError) as caught:
        world.store().validate(world.revoked.certificate, "bid_signature", AT)
    assert type(caught.value).__module__ == "crypto.errors"


# --- loading ---------------------------------------------------------------------------------


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def test_store_from_a_directory_of_roots_intermediates_and_crls(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "root-a.pem").write_bytes(_pem(world.root_a.certificate))
    (tmp_path / "sub-a.cer").write_bytes(
        world.sub_a.certificate.public_bytes(serialization.Encoding.DER)
    )
    (tmp_path / "root-b.crt").write_bytes(_pem(world.root_b.certificate))
    (tmp_path / "root-a.crl").write_bytes(world.crl_root_a.public_bytes(serialization.Encoding.DER))
    (tmp_path / "sub-a.crl").write_bytes(world.crl_sub_a.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "crls.pem").write_bytes(world.crl_root_b.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "README.txt").write_text("ignored")
    store = TrustStore.from_directory(tmp_path)
    assert len(store.roots) == 2 and len(store.intermediates) == 1 and len(store.crls) == 3
    store.validate(world.bidder_a.signing.certificate, "bid_signature", AT)
    store.validate(world.bidder_b.signing.certificate, "bid_signature", AT)
    with pytest.raises(CertificateRevoked):
        store.validate(world.revoked.certificate, "bid_signature", AT)


def test_end_entity_certificate_in_the_trust_directory_is_refused(
    world: World, tmp_path: Path
) -> None:
    (tmp_path / "bidder.pem").write_bytes(_pem(world.bidder_b.signing.certificate))
    with pytest.raises(KeyLoadFailed, match="not a CA"):
        TrustStore.from_directory(tmp_path)
