"""crypto.bid: seal a package, open it whole or split (unwrap + decrypt with key)."""

from __future__ import annotations

import zipfile
from datetime import timedelta
from pathlib import Path

import pytest

from crypto import ca
from crypto.bid import decrypt_with_key, open_bid, unwrap, verify_envelope
from crypto.errors import (
    CertificateExpired,
    CertificateRevoked,
    EnvelopeTampered,
    SignerNotBidder,
    SummaryInvalid,
    UnknownIssuer,
)
from crypto.fingerprint import lot_key, machine_fingerprint, primary_mac, read_machine_id
from crypto.keys import SoftwareKey
from crypto.package import verify_package
from tests.support.pki import CODE_A, CODE_B, CODE_C, Pki, make_package, seal_as, summary_for


def _seal(tmp_path: Path, pair: ca.CompanyPair, code: str = CODE_A, **kw: object) -> Path:
    pkg = make_package(tmp_path / "pkg", code, **kw)  # type: ignore[arg-type]
    out = tmp_path / "bid.p7m"
    seal_as(pair, pkg, out)
    return out


def _key(issued: ca.Issued) -> SoftwareKey:
    assert issued.key is not None
    return SoftwareKey(issued.key)


def test_sealed_bid_opens_to_the_same_files_with_a_manifest(pki: Pki, tmp_path: Path) -> None:
    docs = {"商务标.pdf": b"a" * 5000, "技术标/方案.docx": b"b" * 7000}
    bid = _seal(tmp_path, pki.bidder_rsa, documents=docs)
    opened = open_bid(bid, tmp_path / "out", key=_key(pki.bidder_rsa.encryption))
    assert opened.credit_code == CODE_A
    assert opened.summary.price_fen == 12_800_000_000
    for name, data in docs.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert {e.path for e in opened.package.manifest.files} == {"summary.json", *docs}


def test_split_form_unwrap_then_decrypt_with_key_gives_the_package_zip(
    pki: Pki, tmp_path: Path
) -> None:
    bid = _seal(tmp_path, pki.bidder_ec, CODE_B)
    cek = unwrap(bid, _key(pki.bidder_ec.encryption), pki.bidder_ec.encryption.certificate)
    assert len(cek) == 32
    opened = decrypt_with_key(bid, cek, tmp_path / "pkg.zip", expected_credit_code=CODE_B)
    assert zipfile.is_zipfile(tmp_path / "pkg.zip")
    assert verify_package(tmp_path / "pkg.zip").summary == opened.summary


def test_two_envelope_bid_seals_technical_and_commercial_separately(
    pki: Pki, tmp_path: Path
) -> None:
    pair = pki.bidder_rsa
    opened = {}
    for kind in ("technical", "commercial"):
        summary = summary_for(CODE_A, envelope=kind)
        if kind == "technical":
            del summary["price_fen"]
        pkg = make_package(tmp_path / kind, CODE_A, summary=summary)
        out = tmp_path / f"{kind}.p7m"
        seal_as(pair, pkg, out, envelope_kind=kind)
        opened[kind] = open_bid(out, tmp_path / f"{kind}-out", key=_key(pair.encryption))
    assert opened["technical"].summary.price_fen is None
    assert opened["commercial"].summary.price_fen == 12_800_000_000


def test_sealing_a_package_whose_summary_names_another_bidder_is_refused(
    pki: Pki, tmp_path: Path
) -> None:
    with pytest.raises(SignerNotBidder):
        _seal(tmp_path, pki.bidder_rsa, CODE_C)


@pytest.mark.parametrize(
    "field", ["bidder_name", "quality", "project_manager", "extra_field_name", "extra_field"]
)
def test_a_summary_with_hidden_characters_is_refused_at_sealing(
    pki: Pki, tmp_path: Path, field: str
) -> None:
    """The opening table shows these to everyone: no bidi override may reorder what they read."""
    summary: dict[str, object] = summary_for(CODE_A)
    if field == "extra_field_name":
        summary["extra_fields"] = {"工期\u202e": "90"}
    elif field == "extra_field":
        summary["extra_fields"] = {"工期": "9\u200b0 天"}
    else:
        summary[field] = "某某\u202e公司"
    with pytest.raises(SummaryInvalid):
        _seal(tmp_path, pki.bidder_rsa, summary=summary)
    assert not (tmp_path / "bid.p7m").exists()


def test_sealing_without_summary_is_refused_and_writes_nothing(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SummaryInvalid):
        _seal(tmp_path, pki.bidder_rsa, summary="absent")
    assert not (tmp_path / "bid.p7m").exists()
    assert not list(tmp_path.glob(".bid.p7m*"))


def test_a_bid_signed_by_someone_else_than_the_expected_bidder_is_refused(
    pki: Pki, tmp_path: Path
) -> None:
    bid = _seal(tmp_path, pki.bidder_rsa)
    cek = unwrap(bid, _key(pki.bidder_rsa.encryption))
    with pytest.raises(SignerNotBidder):
        decrypt_with_key(bid, cek, tmp_path / "out", expected_credit_code=CODE_C)
    assert not (tmp_path / "out").exists()


def test_tampered_ciphertext_writes_no_plaintext_anywhere(pki: Pki, tmp_path: Path) -> None:
    bid = _seal(tmp_path, pki.bidder_rsa, documents={"big.bin": bytes(3_000_000)})
    data = bytearray(bid.read_bytes())
    data[len(data) - 1000] ^= 0x01
    bid.write_bytes(bytes(data))
    cek = unwrap(bid, _key(pki.bidder_rsa.encryption))
    before = set(tmp_path.rglob("*"))
    with pytest.raises(EnvelopeTampered):
        decrypt_with_key(bid, cek, tmp_path / "out.zip")
    assert set(tmp_path.rglob("*")) == before


def test_signer_validated_against_two_independent_roots(pki: Pki, tmp_path: Path) -> None:
    trust = pki.trust()
    for pair, code, sub in ((pki.bidder_rsa, CODE_A, "a"), (pki.bidder_ec, CODE_B, "b")):
        bid = _seal(tmp_path / sub, pair, code)
        opened = open_bid(
            bid, tmp_path / sub / "out", key=_key(pair.encryption), trust=trust, at=pki.now
        )
        assert opened.credit_code == code


def test_revoked_signer_is_refused_at_an_instant_after_revocation(pki: Pki, tmp_path: Path) -> None:
    bid = _seal(tmp_path, pki.bidder_rsa)
    trust = pki.trust(crls=False)
    revoked = ca.RevokedEntry(
        pki.bidder_rsa.signing.certificate.serial_number, pki.now - timedelta(minutes=30)
    )
    trust.add_crl(pki.crl(pki.root_a, [revoked], number=2))
    with pytest.raises(CertificateRevoked):
        open_bid(
            bid, tmp_path / "out", key=_key(pki.bidder_rsa.encryption), trust=trust, at=pki.now
        )


def test_expired_signer_is_refused(pki: Pki, tmp_path: Path) -> None:
    bid = _seal(tmp_path, pki.bidder_rsa)
    with pytest.raises(CertificateExpired):
        open_bid(
            bid,
            tmp_path / "out",
            key=_key(pki.bidder_rsa.encryption),
            trust=pki.trust(),
            at=pki.now + timedelta(days=800),
        )


def test_untrusted_signer_is_refused(pki: Pki, tmp_path: Path) -> None:
    rogue_root = ca.create_root_ca("Rogue CA", key_type="ec-p256")
    rogue = ca.issue_company_pair(
        rogue_root, credit_code=CODE_A, company_name="甲建设工程有限公司", key_type="ec-p256"
    )
    bid = _seal(tmp_path, rogue)
    with pytest.raises(UnknownIssuer):
        open_bid(bid, tmp_path / "out", key=_key(rogue.encryption), trust=pki.trust(), at=pki.now)


def test_verify_envelope_checks_without_writing(pki: Pki, tmp_path: Path) -> None:
    bid = _seal(tmp_path, pki.bidder_rsa)
    report = verify_envelope(bid, unwrap(bid, _key(pki.bidder_rsa.encryption)))
    assert report.certificate == pki.bidder_rsa.signing.certificate
    assert report.signing_time is not None


def test_sealing_with_the_wrong_envelope_kind_is_refused(pki: Pki, tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "pkg", CODE_A)  # a single-envelope summary
    with pytest.raises(SummaryInvalid):
        seal_as(pki.bidder_rsa, pkg, tmp_path / "tech.p7m", envelope_kind="technical")
    assert not (tmp_path / "tech.p7m").exists()


def test_refused_package_leaves_no_folder_and_no_temporary_files(pki: Pki, tmp_path: Path) -> None:
    bid = _seal(tmp_path / "a", pki.bidder_rsa)
    cek = unwrap(bid, _key(pki.bidder_rsa.encryption))
    out_dir = tmp_path / "opened"
    out_dir.parent.mkdir(exist_ok=True)
    before = set(tmp_path.rglob("*"))
    with pytest.raises(SignerNotBidder):
        decrypt_with_key(bid, cek, out_dir, expected_credit_code=CODE_B)
    assert set(tmp_path.rglob("*")) == before


# --- the sealing machine's fingerprint (issue 6) -------------------------------------------------


def test_the_sealing_machine_is_recorded_in_the_signed_manifest_keyed_by_the_summarys_lot(
    pki: Pki, tmp_path: Path
) -> None:
    pair = pki.bidder_rsa
    assert pair.signing.key is not None
    pkg = make_package(tmp_path / "pkg", CODE_A)
    seen: list[str] = []

    def machine(summary: object) -> str:
        lot = lot_key(summary.project_code, summary.lot_code)  # type: ignore[attr-defined]
        seen.append(lot)
        return machine_fingerprint(lot, b"machine-id", "00:1a:2b:3c:4d:5e")

    out = tmp_path / "bid.p7m"
    result = seal_as(pair, pkg, out, sealing_machine=machine)
    assert seen == ["JS-2026-0101/01"]
    expected = machine_fingerprint("JS-2026-0101/01", b"machine-id", "00:1a:2b:3c:4d:5e")
    assert result.sealing_machine == expected
    opened = open_bid(
        out,
        tmp_path / "opened.zip",
        key=_key(pair.encryption),
        cert=pair.encryption.certificate,
    )
    assert opened.package.manifest.sealing_machine == expected
    # A package sealed without one has no such field at all (older packages stay valid).
    plain = _seal(tmp_path / "plain", pair)
    opened = open_bid(plain, tmp_path / "plain.zip", key=_key(pair.encryption))
    assert opened.package.manifest.sealing_machine is None
    with zipfile.ZipFile(tmp_path / "plain.zip") as zf:
        assert b"sealing_machine" not in zf.read("manifest.json")


def test_machine_inputs_are_read_from_the_machine_id_and_a_device_backed_interface(
    tmp_path: Path,
) -> None:
    ids = tmp_path / "machine-id"
    ids.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    assert read_machine_id((tmp_path / "missing", ids)) == b"0123456789abcdef0123456789abcdef"
    assert read_machine_id((tmp_path / "missing",)) is None  # (no registry off Windows)
    net = tmp_path / "net"
    for name, mac, device in (
        ("br0", "02:42:ac:11:00:01", False),  # virtual: no device behind it
        ("enp3s0", "00:1A:2B:3C:4D:5E", True),
        ("lo", "00:00:00:00:00:00", False),
        ("wlp2s0", "00:1a:2b:3c:4d:5f", True),
    ):
        (net / name).mkdir(parents=True)
        (net / name / "address").write_text(mac + "\n")
        if device:
            (net / name / "device").mkdir()
    assert primary_mac(net) == "00:1a:2b:3c:4d:5e"
    assert primary_mac(tmp_path / "no-such-folder") is None
