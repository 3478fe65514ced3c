"""The CA toolkit (crypto.ca) and the ``bidbridge ca`` command, with real keys and certificates."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crypto import ca, ca_cli
from crypto.errors import BidBridgeError, CertificateRevoked
from crypto.keys import load_certificate, load_certificates, load_private_key
from crypto.trust import TrustStore
from schemas.common import uscc_check_char


def code(first17: str) -> str:
    return first17 + uscc_check_char(first17)


CODE = code("91330106MA2B3C4D5")
OTHER_CODE = code("91110108MA01ABCD2")
BAD_CODE = CODE[:17] + ("0" if CODE[17] != "0" else "1")
RESIDENT_ID = "11010519491231002X"  # the GB 11643 example number


@dataclass
class Cas:
    root: ca.Issued
    sub: ca.Issued


@pytest.fixture(scope="module")
def cas() -> Cas:
    root = ca.create_root_ca("Unit Root", organization="Unit CA", key_type="ec-p256")
    return Cas(root, ca.create_intermediate_ca(root, "Unit Sub", key_type="ec-p256"))


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType:
    return cert.extensions.get_extension_for_class(kind).value


def key_usage(cert: x509.Certificate) -> x509.KeyUsage:
    value = ext(cert, x509.KeyUsage)
    assert isinstance(value, x509.KeyUsage)
    return value


def eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    value = ext(cert, x509.ExtendedKeyUsage)
    assert isinstance(value, x509.ExtendedKeyUsage)
    return set(value)


def subject_cert(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Certificate:
    """A throw-away self-signed certificate with the given subject (for subject parsing)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


# --- keys and CAs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_type", "kind", "size"),
    [("rsa2048", rsa.RSAPrivateKey, 2048), ("ec-p256", ec.EllipticCurvePrivateKey, 256)],
)
def test_generate_key_makes_the_requested_key_type(
    key_type: ca.KeyType, kind: type, size: int
) -> None:
    key = ca.generate_key(key_type)
    assert isinstance(key, kind)
    assert key.key_size == size


def test_unknown_key_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported key type"):
        ca.generate_key("dsa1024")  # type: ignore[arg-type]


def test_root_and_intermediate_are_cas_with_key_cert_sign_and_crl_sign(cas: Cas) -> None:
    root_bc = ext(cas.root.certificate, x509.BasicConstraints)
    sub_bc = ext(cas.sub.certificate, x509.BasicConstraints)
    assert isinstance(root_bc, x509.BasicConstraints) and isinstance(sub_bc, x509.BasicConstraints)
    assert root_bc.ca and root_bc.path_length is None
    assert sub_bc.ca and sub_bc.path_length == 0
    for cert in (cas.root.certificate, cas.sub.certificate):
        usage = key_usage(cert)
        assert usage.key_cert_sign and usage.crl_sign
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).critical
    assert cas.sub.certificate.issuer == cas.root.certificate.subject
    cas.sub.certificate.verify_directly_issued_by(cas.root.certificate)


def test_intermediate_inherits_the_organization_of_its_issuer(cas: Cas) -> None:
    orgs = cas.sub.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in orgs] == ["Unit CA"]


def test_every_certificate_links_authority_key_id_to_its_issuers_subject_key_id(
    cas: Cas,
) -> None:
    leaf = ca.issue_person(
        cas.sub, name="张三", role="host", person_id="H-1", key_type="ec-p256"
    ).certificate
    for child, parent in ((leaf, cas.sub.certificate), (cas.sub.certificate, cas.root.certificate)):
        aki = ext(child, x509.AuthorityKeyIdentifier)
        ski = ext(parent, x509.SubjectKeyIdentifier)
        assert isinstance(aki, x509.AuthorityKeyIdentifier)
        assert isinstance(ski, x509.SubjectKeyIdentifier)
        assert aki.key_identifier == ski.digest
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)


def test_not_before_defaults_to_a_minute_ago(cas: Cas) -> None:
    cert = ca.issue_room_device(cas.sub, room_id="R1", site="杭州", key_type="ec-p256").certificate
    age = datetime.now(UTC) - cert.not_valid_before_utc
    assert timedelta(seconds=30) < age < timedelta(minutes=5)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=730)


# --- company certificates --------------------------------------------------------------------


def test_company_certificates_carry_the_credit_code_in_organization_identifier(cas: Cas) -> None:
    pair = ca.issue_company_pair(
        cas.sub, credit_code=CODE, company_name="甲建设有限公司", key_type="ec-p256"
    )
    for issued in (pair.signing, pair.encryption):
        subject = issued.certificate.subject
        (org_id,) = subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER)
        assert org_id.value == CODE
        assert [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [
            "甲建设有限公司"
        ]
        assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
            "甲建设有限公司"
        ]
        assert ca.credit_code_of(issued.certificate) == CODE
        assert issued.key is not None
    assert pair.signing.key is not pair.encryption.key


def test_invalid_credit_code_is_refused_with_a_clear_error(cas: Cas) -> None:
    with pytest.raises(ValueError, match=r"统一社会信用代码无效.*unified social credit code"):
        ca.issue_company_pair(cas.sub, credit_code=BAD_CODE, company_name="甲", key_type="ec-p256")
    with pytest.raises(ValueError, match="统一社会信用代码无效"):
        ca.issue_company_signing(cas.sub, credit_code="12345", company_name="甲")


def company_certificate(
    issue: Callable[..., ca.Issued], cas: Cas, key_type: ca.KeyType
) -> x509.Certificate:
    """A certificate of company 甲 (``CODE``) from the intermediate CA, made by ``issue``."""
    return issue(cas.sub, credit_code=CODE, company_name="甲", key_type=key_type).certificate


def test_company_signing_certificate_is_for_signatures_and_non_repudiation(cas: Cas) -> None:
    cert = company_certificate(ca.issue_company_signing, cas, "ec-p256")
    usage = key_usage(cert)
    assert usage.digital_signature and usage.content_commitment
    assert not (usage.key_encipherment or usage.key_agreement or usage.key_cert_sign)
    assert eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION}
    bc = ext(cert, x509.BasicConstraints)
    assert isinstance(bc, x509.BasicConstraints) and not bc.ca


def test_rsa_encryption_certificate_allows_key_and_data_encipherment(cas: Cas) -> None:
    cert = company_certificate(ca.issue_company_encryption, cas, "rsa2048")
    usage = key_usage(cert)
    assert usage.key_encipherment and usage.data_encipherment
    assert not (usage.digital_signature or usage.content_commitment or usage.key_agreement)
    assert eku(cert) == {ExtendedKeyUsageOID.EMAIL_PROTECTION}


def test_ec_encryption_certificate_allows_key_agreement(cas: Cas) -> None:
    cert = company_certificate(ca.issue_company_encryption, cas, "ec-p256")
    usage = key_usage(cert)
    assert usage.key_agreement
    assert not (usage.digital_signature or usage.key_encipherment)


def test_certificate_for_a_token_key_is_issued_without_a_private_key(cas: Cas) -> None:
    token_sign = ec.generate_private_key(ec.SECP256R1()).public_key()
    token_enc = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pair = ca.issue_company_pair(
        cas.sub,
        credit_code=CODE,
        company_name="甲",
        signing_public_key=token_sign,
        encryption_public_key=token_enc,
    )
    assert pair.signing.key is None and pair.encryption.key is None
    assert pair.signing.certificate.public_key() == token_sign
    assert pair.encryption.certificate.public_key() == token_enc
    assert key_usage(pair.encryption.certificate).key_encipherment  # follows the given RSA key


# --- people, rooms, servers ------------------------------------------------------------------


def test_person_certificate_has_name_id_and_role(cas: Cas) -> None:
    cert = ca.issue_person(
        cas.sub, name="李四", role="supervisor", person_id=RESIDENT_ID, key_type="ec-p256"
    ).certificate
    subject = cert.subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "李四"
    assert subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == RESIDENT_ID
    assert ca.role_of(cert) == "supervisor"
    usage = key_usage(cert)
    assert usage.digital_signature and usage.content_commitment
    assert eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    # a person's id number is not a company's credit code
    assert ca.credit_code_of(cert) is None


@pytest.mark.parametrize("role", ["host", "supervisor", "expert", "centre"])
def test_role_of_reads_each_role(cas: Cas, role: ca.Role) -> None:
    cert = ca.issue_person(cas.sub, name="某", role=role, person_id="X1", key_type="ec-p256")
    assert ca.role_of(cert.certificate) == role


def test_unknown_role_is_refused(cas: Cas) -> None:
    with pytest.raises(ValueError, match="unknown role"):
        ca.issue_person(cas.sub, name="某", role="admin", person_id="1")  # type: ignore[arg-type]


def test_company_certificate_has_no_role(cas: Cas) -> None:
    cert = ca.issue_company_signing(
        cas.sub, credit_code=CODE, company_name="甲", key_type="ec-p256"
    )
    assert ca.role_of(cert.certificate) is None


def test_room_device_certificate_names_room_and_site(cas: Cas) -> None:
    cert = ca.issue_room_device(
        cas.sub, room_id="PB-03", site="宁波", key_type="ec-p256"
    ).certificate
    assert ca.room_of(cert) == ("宁波", "PB-03")
    assert ca.role_of(cert) is None
    usage = key_usage(cert)
    assert usage.digital_signature and not usage.content_commitment
    assert eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_server_certificate_names_hosts_in_subject_alt_name(cas: Cas) -> None:
    issued = ca.issue_server(
        cas.sub, dns_names=["bid.example.cn", "www.bid.example.cn"], ip_addresses=["10.0.0.5"]
    )
    cert = issued.certificate
    san = ext(cert, x509.SubjectAlternativeName)
    assert isinstance(san, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["bid.example.cn", "www.bid.example.cn"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    usage = key_usage(cert)
    assert usage.digital_signature and usage.key_encipherment  # RSA key
    assert eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=397)


def test_ec_server_certificate_does_not_claim_key_encipherment(cas: Cas) -> None:
    cert = ca.issue_server(cas.sub, dns_names=["a.example.cn"], key_type="ec-p256").certificate
    assert not key_usage(cert).key_encipherment


# --- reading credit codes from other CAs' layouts --------------------------------------------


def test_credit_code_is_read_from_an_ntrcn_organization_identifier() -> None:
    cert = subject_cert(
        (NameOID.ORGANIZATION_IDENTIFIER, f"NTRCN-{CODE}"), (NameOID.COMMON_NAME, "甲")
    )
    assert ca.credit_code_of(cert) == CODE


def test_credit_code_is_read_from_the_subject_serial_number() -> None:
    cert = subject_cert((NameOID.SERIAL_NUMBER, CODE), (NameOID.COMMON_NAME, "甲"))
    assert ca.credit_code_of(cert) == CODE


def test_credit_code_is_found_as_a_token_in_the_common_name_or_unit() -> None:
    in_cn = subject_cert((NameOID.COMMON_NAME, f"甲建设有限公司@{CODE}"))
    in_ou = subject_cert((NameOID.ORGANIZATIONAL_UNIT_NAME, f"USCC:{OTHER_CODE}"))
    assert ca.credit_code_of(in_cn) == CODE
    assert ca.credit_code_of(in_ou) == OTHER_CODE


def test_credit_code_with_a_wrong_check_character_is_not_returned() -> None:
    assert ca.credit_code_of(subject_cert((NameOID.ORGANIZATION_IDENTIFIER, BAD_CODE))) is None
    assert ca.credit_code_of(subject_cert((NameOID.COMMON_NAME, f"甲 {BAD_CODE}"))) is None


def test_organization_identifier_wins_over_other_places() -> None:
    cert = subject_cert(
        (NameOID.ORGANIZATION_IDENTIFIER, CODE),
        (NameOID.SERIAL_NUMBER, OTHER_CODE),
        (NameOID.COMMON_NAME, OTHER_CODE),
    )
    assert ca.credit_code_of(cert) == CODE


# --- CRLs ------------------------------------------------------------------------------------


def test_crl_lists_revocations_with_reason_number_and_a_valid_signature(cas: Cas) -> None:
    now = datetime(2025, 3, 1, tzinfo=UTC)
    entries = [
        ca.RevokedEntry(1234, now - timedelta(days=2), x509.ReasonFlags.key_compromise),
        ca.RevokedEntry(5678, now - timedelta(days=1)),
    ]
    crl = ca.issue_crl(
        cas.sub, entries, this_update=now, next_update=now + timedelta(days=7), crl_number=42
    )
    public = cas.sub.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public)
    assert crl.issuer == cas.sub.certificate.subject
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value
    assert number.crl_number == 42
    first = crl.get_revoked_certificate_by_serial_number(1234)
    assert first is not None
    assert first.revocation_date_utc == now - timedelta(days=2)
    reason = first.extensions.get_extension_for_class(x509.CRLReason).value
    assert reason.reason is x509.ReasonFlags.key_compromise
    second = crl.get_revoked_certificate_by_serial_number(5678)
    assert second is not None and len(second.extensions) == 0
    assert crl.next_update_utc == now + timedelta(days=7)


# --- the command line ------------------------------------------------------------------------


def _local_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bidbridge")
    ca_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    try:
        return int(args.handler(args))
    except BidBridgeError as exc:
        print(f"ERROR {exc.line()}", file=sys.stderr)
        return 2


def _entry_point() -> Callable[[Sequence[str]], int]:
    """``server.cli.main`` when the whole CLI can be imported, else ``ca`` alone."""
    try:
        from server.cli import main
    except ImportError:
        return _local_main
    return main


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    main = _entry_point()

    def invoke(*argv: str | Path) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cli_runs_a_two_level_ca_end_to_end(
    tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    root, sub, out, trust = (tmp_path / n for n in ("root", "sub", "out", "trust"))
    ec_key = ("--key-type", "ec-p256")

    code, stdout, _ = run(
        "ca", "init", "--dir", root, "--name", "Pilot Root", "--organization", "Pilot CA", *ec_key
    )
    assert code == 0 and "ca.key.pem" in stdout
    assert _mode(root / "ca.key.pem") == 0o600
    code, _, _ = run("ca", "init", "--dir", sub, "--name", "Pilot Sub", "--parent", root, *ec_key)
    assert code == 0
    sub_chain = load_certificates(sub / "chain.pem")
    assert [c.subject.rfc4514_string() for c in sub_chain] == [
        "CN=Pilot Sub,O=Pilot CA,C=CN",
        "CN=Pilot Root,O=Pilot CA,C=CN",
    ]
    root_state = json.loads((root / "ca.json").read_text("utf-8"))
    assert [e["kind"] for e in root_state["issued"]] == ["intermediate-ca"]

    code, stdout, _ = run(
        "ca", "issue-company", "--dir", sub, "--credit-code", CODE, "--name", "甲建设有限公司",
        "--out", out / "a", *ec_key,
    )  # fmt: skip
    assert code == 0
    for name in ("sign.crt.pem", "sign.key.pem", "enc.crt.pem", "enc.key.pem", "chain.pem"):
        assert (out / "a" / name).is_file() and name in stdout
    assert _mode(out / "a" / "sign.key.pem") == _mode(out / "a" / "enc.key.pem") == 0o600
    signing = load_certificate(out / "a" / "sign.crt.pem")
    assert ca.credit_code_of(signing) == CODE
    assert load_private_key(out / "a" / "sign.key.pem").key.public_key == signing.public_key()
    assert load_certificates(out / "a" / "chain.pem") == sub_chain

    code, _, _ = run(
        "ca", "issue-company", "--dir", sub, "--credit-code", OTHER_CODE, "--name", "乙",
        "--out", out / "b", *ec_key,
    )  # fmt: skip
    assert code == 0
    code, _, _ = run(
        "ca", "issue-person", "--dir", sub, "--name", "张三", "--role", "host", "--id", "H-7",
        "--out", out / "host", *ec_key,
    )  # fmt: skip
    assert code == 0
    assert ca.role_of(load_certificate(out / "host" / "person.crt.pem")) == "host"
    code, _, _ = run(
        "ca", "issue-device", "--dir", sub, "--room", "PB-1", "--site", "宁波", "--out",
        out / "room", *ec_key,
    )  # fmt: skip
    assert code == 0
    assert ca.room_of(load_certificate(out / "room" / "device.crt.pem")) == ("宁波", "PB-1")
    code, _, _ = run(
        "ca", "issue-server", "--dir", root, "--dns", "bid.example.cn", "--ip", "127.0.0.1",
        "--out", out / "srv", *ec_key,
    )  # fmt: skip
    assert code == 0

    token_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "token.pub.pem").write_bytes(
        token_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    code, _, _ = run(
        "ca", "issue-for-key", "--dir", sub, "--public-key", tmp_path / "token.pub.pem",
        "--kind", "company-enc", "--credit-code", CODE, "--name", "甲建设有限公司",
        "--out", out / "token-enc.crt.pem",
    )  # fmt: skip
    assert code == 0
    token_cert = load_certificate(out / "token-enc.crt.pem")
    assert token_cert.public_key() == token_key.public_key()
    assert key_usage(token_cert).key_agreement

    code, stdout, _ = run(
        "ca", "revoke", "--dir", sub, "--cert", out / "b" / "sign.crt.pem",
        "--reason", "keyCompromise",
    )  # fmt: skip
    assert code == 0 and "keyCompromise" in stdout
    trust.mkdir()
    assert run("ca", "crl", "--dir", root, "--out", trust / "root.crl")[0] == 0
    assert run("ca", "crl", "--dir", sub, "--out", trust / "sub.crl", "--der")[0] == 0
    sub_state = json.loads((sub / "ca.json").read_text("utf-8"))
    assert sub_state["crl_number"] == 1 and len(sub_state["revoked"]) == 1
    assert len(sub_state["issued"]) == 7  # 2 pairs, person, device, token cert

    (trust / "root.pem").write_bytes((root / "ca.crt.pem").read_bytes())
    (trust / "sub.pem").write_bytes((sub / "ca.crt.pem").read_bytes())
    store = TrustStore.from_directory(trust)
    now = datetime.now(UTC)
    assert len(store.validate(signing, "bid_signature", now)) == 3
    store.validate(token_cert, "encryption", now)
    store.validate(load_certificate(out / "host" / "person.crt.pem"), "login", now)
    with pytest.raises(CertificateRevoked):
        store.validate(load_certificate(out / "b" / "sign.crt.pem"), "bid_signature", now)


def test_cli_never_overwrites_an_existing_ca(
    tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    args = ("ca", "init", "--dir", tmp_path / "root", "--name", "R", "--key-type", "ec-p256")
    assert run(*args)[0] == 0
    before = (tmp_path / "root" / "ca.key.pem").read_bytes()
    code, _, err = run(*args)
    assert code == 2 and "ERROR CA_DIRECTORY_INVALID" in err
    assert (tmp_path / "root" / "ca.key.pem").read_bytes() == before


def test_cli_refuses_an_invalid_credit_code_and_writes_nothing(
    tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    assert (
        run("ca", "init", "--dir", tmp_path / "ca", "--name", "R", "--key-type", "ec-p256")[0] == 0
    )
    code, _, err = run(
        "ca", "issue-company", "--dir", tmp_path / "ca", "--credit-code", BAD_CODE,
        "--name", "甲", "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 2 and "CA_INPUT_INVALID" in err and "统一社会信用代码" in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_revoke_a_certificate_of_another_ca(
    tmp_path: Path, run: Callable[..., tuple[int, str, str]], cas: Cas
) -> None:
    assert (
        run("ca", "init", "--dir", tmp_path / "ca", "--name", "R", "--key-type", "ec-p256")[0] == 0
    )
    foreign = tmp_path / "foreign.pem"
    foreign.write_bytes(cas.sub.certificate.public_bytes(serialization.Encoding.PEM))
    code, _, err = run("ca", "revoke", "--dir", tmp_path / "ca", "--cert", foreign)
    assert code == 2 and "not issued by this CA" in err


def test_cli_commands_without_a_ca_directory_say_how_to_make_one(
    tmp_path: Path, run: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = run("ca", "crl", "--dir", tmp_path / "nothing", "--out", tmp_path / "x.crl")
    assert code == 2 and "bidbridge ca init" in err


@pytest.mark.parametrize(
    "command",
    ["init", "issue-company", "issue-person", "issue-device", "issue-server", "issue-for-key",
     "revoke", "crl"],
)  # fmt: skip
def test_every_ca_command_has_help(
    command: str, run: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught, contextlib.redirect_stderr(sys.stdout):
        run("ca", command, "--help")
    assert caught.value.code == 0
    assert "--dir" in capsys.readouterr().out
