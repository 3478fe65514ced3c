"""Bad input gets one clear line, never a traceback: ``ERROR <code>: <zh> / <en>`` and exit 2.

Each case goes through ``bidbridge open`` exactly as a user would run it, and the library
call underneath raises the typed exception named by the code.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from crypto import ca
from crypto.package import build_package
from server.cli import main
from tests.support.pki import (
    CODE_A,
    CODE_C,
    PemFiles,
    Pki,
    make_package,
    openssl_encrypt,
    openssl_seal,
    openssl_sign,
    summary_for,
    write_pair,
)


@pytest.fixture
def good_bid(rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    bid = tmp_path / "good.p7m"
    pkg = make_package(tmp_path / "pkg", CODE_A, documents={"商务标.pdf": b"%PDF-1.7 bid\n" * 3000})
    rc = main(rsa_files.seal_argv(pkg, bid))
    assert rc == 0
    capsys.readouterr()
    return bid


def expect_error(
    code: str, argv: list[str], capsys: pytest.CaptureFixture[str], out: Path | None = None
) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == 2
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"ERROR {code}: "), lines[0]
    assert " / " in lines[0]  # Chinese, then English
    if out is not None:
        assert not out.exists()
        assert not list(out.parent.glob(f".{out.name}*"))
    return lines[0]


def _package_zip(tmp_path: Path, entries: dict[str, bytes]) -> Path:
    path = tmp_path / "hand-made.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_random_bytes_are_refused_as_malformed(
    rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bid = tmp_path / "random.p7m"
    bid.write_bytes(os.urandom(4096))
    expect_error(
        "ENVELOPE_MALFORMED", rsa_files.open_argv(bid, tmp_path / "out"), capsys, tmp_path / "out"
    )


def test_empty_file_is_refused_as_malformed(
    rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bid = tmp_path / "empty.p7m"
    bid.write_bytes(b"")
    expect_error("ENVELOPE_MALFORMED", rsa_files.open_argv(bid, tmp_path / "out"), capsys)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.999])
def test_truncated_der_is_refused_as_malformed(
    keep: float,
    good_bid: Path,
    rsa_files: PemFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = good_bid.read_bytes()
    bid = tmp_path / "cut.p7m"
    bid.write_bytes(data[: int(len(data) * keep)])
    expect_error(
        "ENVELOPE_MALFORMED", rsa_files.open_argv(bid, tmp_path / "out"), capsys, tmp_path / "out"
    )


def test_plain_zip_is_refused_as_not_encrypted(
    rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bid = tmp_path / "plain.zip"
    with bid.open("wb") as f:
        build_package(make_package(tmp_path / "pkg", CODE_A), f)
    expect_error("ENVELOPE_NOT_ENCRYPTED", rsa_files.open_argv(bid, tmp_path / "out"), capsys)


def test_signed_but_unencrypted_file_is_refused_as_not_encrypted(
    rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openssl_seal(_package_zip(tmp_path, {"summary.json": b"{}"}), rsa_files, tmp_path / "x.p7m")
    expect_error(
        "ENVELOPE_NOT_ENCRYPTED",
        rsa_files.open_argv(tmp_path / "x.signed.der", tmp_path / "out"),
        capsys,
    )


def test_envelope_for_another_recipient_is_refused(
    pki: Pki, good_bid: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = write_pair(tmp_path / "other", pki, pki.other_rsa)
    expect_error("ENVELOPE_NOT_FOR_RECIPIENT", other.open_argv(good_bid, tmp_path / "out"), capsys)


def test_changed_ciphertext_byte_is_refused_as_tampered(
    good_bid: Path, rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(good_bid.read_bytes())
    data[len(data) // 2] ^= 0x04
    bid = tmp_path / "changed.p7m"
    bid.write_bytes(bytes(data))
    expect_error(
        "ENVELOPE_TAMPERED", rsa_files.open_argv(bid, tmp_path / "out"), capsys, tmp_path / "out"
    )


def test_changed_tag_is_refused_as_tampered(
    good_bid: Path, rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(good_bid.read_bytes())
    data[-3] ^= 0x10
    bid = tmp_path / "tag.p7m"
    bid.write_bytes(bytes(data))
    expect_error(
        "ENVELOPE_TAMPERED",
        rsa_files.open_argv(bid, tmp_path / "out.zip"),
        capsys,
        tmp_path / "out.zip",
    )


def test_changed_signed_content_is_refused_as_signature_invalid(
    rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = tmp_path / "pkg.zip"
    with pkg.open("wb") as f:
        build_package(
            make_package(tmp_path / "pkg", CODE_A, documents={"a.pdf": b"PRICE 100\n" * 50}), f
        )
    signed = openssl_sign(pkg, rsa_files, tmp_path / "signed.der")
    data = bytearray(signed.read_bytes())
    at = data.index(b"PRICE 100")
    data[at + 6] = ord("9")  # the bidder's signed content changed after signing
    signed.write_bytes(bytes(data))
    bid = tmp_path / "resigned.p7m"
    openssl_encrypt(signed, rsa_files, bid)
    expect_error(
        "SIGNATURE_INVALID", rsa_files.open_argv(bid, tmp_path / "out"), capsys, tmp_path / "out"
    )


def test_signer_that_is_not_the_named_bidder_is_refused(
    good_bid: Path, rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expect_error(
        "SIGNER_NOT_BIDDER",
        rsa_files.open_argv(good_bid, tmp_path / "out", "--expect-credit-code", CODE_C),
        capsys,
        tmp_path / "out",
    )


def test_summary_naming_another_company_than_the_signer_is_refused(
    rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = tmp_path / "pkg.zip"
    with pkg.open("wb") as f:
        build_package(make_package(tmp_path / "pkg", CODE_C), f)
    bid = openssl_seal(pkg, rsa_files, tmp_path / "bid.p7m")
    expect_error(
        "SIGNER_NOT_BIDDER", rsa_files.open_argv(bid, tmp_path / "out"), capsys, tmp_path / "out"
    )


def test_expired_signer_is_refused(
    good_bid: Path,
    rsa_files: PemFiles,
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    at = (pki.now + timedelta(days=900)).isoformat()
    expect_error(
        "CERT_EXPIRED",
        rsa_files.open_argv(
            good_bid, tmp_path / "out", "--trust", str(rsa_files.trust_dir), "--at", at
        ),
        capsys,
        tmp_path / "out",
    )


def test_revoked_signer_is_refused(
    good_bid: Path,
    rsa_files: PemFiles,
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    crl = pki.crl(
        pki.root_a,
        [
            ca.RevokedEntry(
                pki.bidder_rsa.signing.certificate.serial_number, pki.now - timedelta(hours=2)
            )
        ],
        number=5,
    )
    (rsa_files.trust_dir / "a.crl").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    expect_error(
        "CERT_REVOKED",
        rsa_files.open_argv(good_bid, tmp_path / "out", "--trust", str(rsa_files.trust_dir)),
        capsys,
        tmp_path / "out",
    )


def test_untrusted_signer_is_refused(
    good_bid: Path, rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (rsa_files.trust_dir / "a.crt").unlink()
    (rsa_files.trust_dir / "a.crl").unlink()
    expect_error(
        "CERT_UNKNOWN_ISSUER",
        rsa_files.open_argv(good_bid, tmp_path / "out", "--trust", str(rsa_files.trust_dir)),
        capsys,
        tmp_path / "out",
    )


def _manifested(entries: dict[str, bytes]) -> dict[str, bytes]:
    import hashlib

    listed = [
        {"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
        for n, d in entries.items()
    ]
    return {**entries, "manifest.json": json.dumps({"files": listed}).encode()}


@pytest.mark.parametrize(
    ("code", "entries"),
    [
        ("SUMMARY_INVALID", _manifested({"a.pdf": b"x"})),
        ("SUMMARY_INVALID", _manifested({"summary.json": b"{not json", "a.pdf": b"x"})),
        (
            "SUMMARY_INVALID",
            _manifested({"summary.json": json.dumps(summary_for(CODE_A, price_fen=1.5)).encode()}),
        ),
        (
            "SUMMARY_INVALID",
            _manifested({"summary.json": json.dumps(summary_for("91350100M000100Y40")).encode()}),
        ),
        ("MANIFEST_MISMATCH", {"summary.json": json.dumps(summary_for(CODE_A)).encode()}),
        (
            "MANIFEST_MISMATCH",
            {
                **_manifested(
                    {"summary.json": json.dumps(summary_for(CODE_A)).encode(), "a.pdf": b"original"}
                ),
                "a.pdf": b"replaced",
            },
        ),
        (
            "PACKAGE_INVALID",
            _manifested(
                {"summary.json": json.dumps(summary_for(CODE_A)).encode(), "../escape.txt": b"x"}
            ),
        ),
    ],
    ids=[
        "summary-missing",
        "summary-not-json",
        "price-not-integer-fen",
        "credit-code-check-char",
        "manifest-missing",
        "manifest-hash-differs",
        "path-escapes-package",
    ],
)
def test_signed_package_with_bad_contents_is_refused(
    code: str,
    entries: dict[str, bytes],
    rsa_files: PemFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "hand-made.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    bid = openssl_seal(path, rsa_files, tmp_path / "bid.p7m")
    expect_error(code, rsa_files.open_argv(bid, tmp_path / "out"), capsys, tmp_path / "out")


def test_console_script_prints_one_line_and_no_traceback(
    rsa_files: PemFiles, tmp_path: Path
) -> None:
    bid = tmp_path / "random.p7m"
    bid.write_bytes(os.urandom(100))
    exe = Path(sys.executable).with_name("bidbridge")
    proc = subprocess.run(
        [str(exe), *rsa_files.open_argv(bid, tmp_path / "out")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("ERROR ENVELOPE_MALFORMED: ")
    assert "Traceback" not in proc.stderr


def test_existing_output_is_not_overwritten(
    good_bid: Path, rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "already-there"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    expect_error("OUTPUT_EXISTS", rsa_files.open_argv(good_bid, out), capsys)
    assert (out / "keep.txt").read_text() == "mine"


def test_missing_input_file_is_one_line_not_a_traceback(
    rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = expect_error(
        "FILE_IO_ERROR", rsa_files.open_argv(tmp_path / "nowhere.p7m", tmp_path / "out"), capsys
    )
    assert "nowhere.p7m" in line
