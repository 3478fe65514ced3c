"""Interop with OpenSSL both ways, through the ``openssl cms`` command and ``bidbridge``.

What ``openssl cms -sign`` then ``openssl cms -encrypt`` produces (RSA-OAEP, RSA PKCS#1 v1.5 and
ECDH recipients; AES-GCM and AES-CBC; definite and streamed indefinite lengths) opens with
``bidbridge open``; what ``bidbridge seal`` produces decrypts and verifies with OpenSSL.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from crypto.package import build_package
from server.cli import main
from tests.support.pki import (
    CODE_A,
    CODE_B,
    PemFiles,
    Pki,
    make_package,
    openssl,
    openssl_seal,
    write_pair,
)


@pytest.fixture
def ec_files(pki: Pki, tmp_path: Path) -> PemFiles:
    return write_pair(tmp_path / "ec", pki, pki.bidder_ec, chain=pki.sub_b)


def _openssl_sealed(
    tmp_path: Path, files: PemFiles, code: str, encrypt_opts: list[str], stream: bool = False
) -> Path:
    pkg_zip = tmp_path / "pkg.zip"
    with pkg_zip.open("wb") as f:
        build_package(make_package(tmp_path / "pkg", code), f)
    return openssl_seal(pkg_zip, files, tmp_path / "openssl-bid.p7m", encrypt_opts, stream)


def _bidbridge_open(
    bid: Path, files: PemFiles, out: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    rc = main(files.open_argv(bid, out, "--trust", str(files.trust_dir)))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


RSA_CASES = {
    "gcm-oaep-sha256": [
        "-aes-256-gcm",
        "-keyopt",
        "rsa_padding_mode:oaep",
        "-keyopt",
        "rsa_oaep_md:sha256",
    ],
    "gcm-oaep-sha1": ["-aes-256-gcm", "-keyopt", "rsa_padding_mode:oaep"],
    "gcm-pkcs1v15": ["-aes-256-gcm"],
    "cbc256-pkcs1v15": ["-aes-256-cbc"],
    "cbc128-pkcs1v15": ["-aes-128-cbc"],
    "cbc256-oaep-sha256": [
        "-aes-256-cbc",
        "-keyopt",
        "rsa_padding_mode:oaep",
        "-keyopt",
        "rsa_oaep_md:sha256",
    ],
}


@pytest.mark.parametrize("case", sorted(RSA_CASES))
def test_openssl_sealed_rsa_bid_opens_with_bidbridge_open(
    case: str, rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bid = _openssl_sealed(tmp_path, rsa_files, CODE_A, RSA_CASES[case])
    out = _bidbridge_open(bid, rsa_files, tmp_path / "opened", capsys)
    assert CODE_A in out
    assert (tmp_path / "opened" / "summary.json").exists()


@pytest.mark.parametrize("cipher", ["-aes-256-gcm", "-aes-128-gcm", "-aes-256-cbc"])
def test_openssl_sealed_ecdh_bid_opens_with_bidbridge_open(
    cipher: str, ec_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bid = _openssl_sealed(tmp_path, ec_files, CODE_B, [cipher])
    out = _bidbridge_open(bid, ec_files, tmp_path / "opened", capsys)
    assert CODE_B in out


def test_openssl_streamed_indefinite_length_bid_opens(
    rsa_files: PemFiles, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bid = _openssl_sealed(tmp_path, rsa_files, CODE_A, ["-aes-256-gcm"], stream=True)
    assert bid.read_bytes()[1] == 0x80  # BER indefinite length, as OpenSSL streams it
    out = _bidbridge_open(bid, rsa_files, tmp_path / "opened.zip", capsys)
    assert CODE_A in out


@pytest.mark.parametrize("which", ["rsa", "ec"])
def test_bidbridge_sealed_bid_decrypts_and_verifies_with_openssl(
    which: str, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = write_pair(
        tmp_path / which,
        pki,
        pki.bidder_rsa if which == "rsa" else pki.bidder_ec,
        chain=pki.sub_b if which == "ec" else None,
    )
    code = CODE_A if which == "rsa" else CODE_B
    pkg = make_package(tmp_path / "pkg", code)
    bid = tmp_path / "bid.p7m"
    chain = ["--chain", str(files.chain)] if files.chain else []
    rc = main(files.seal_argv(pkg, bid, *chain))
    assert rc == 0, capsys.readouterr().err
    signed = tmp_path / "signed.der"
    openssl(
        "cms",
        "-decrypt",
        "-inform",
        "DER",
        "-in",
        bid,
        "-recip",
        files.enc_cert,
        "-inkey",
        files.enc_key,
        "-out",
        signed,
    )
    pkg_zip = tmp_path / "pkg.zip"
    openssl(
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-in",
        signed,
        "-binary",
        "-CAfile",
        files.ca_file,
        "-out",
        pkg_zip,
    )
    assert sorted(zipfile.ZipFile(pkg_zip).namelist()) == [
        "manifest.json",
        "summary.json",
        "商务标.pdf",
    ]
