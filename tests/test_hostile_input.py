"""Hostile inputs found in review: each ends in a typed error, bounded in depth and memory."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from asn1crypto import cms

from crypto.envelope import GCMParameters, Recipient, inspect_stream, seal_bytes
from crypto.errors import EnvelopeMalformed, ManifestMismatch, PackageError, SignatureInvalid
from crypto.package import check_member_name, verify_package
from crypto.signed_data import _check_ess_certificate
from tests.support.pki import Pki

AUTH_ENVELOPED_OID = bytes.fromhex("060b2a864886f70d0109100117")


def test_deeply_nested_indefinite_lengths_are_refused_without_recursion_error() -> None:
    data = b"\x30\x80" + AUTH_ENVELOPED_OID + b"\xa0\x80\x30\x80" + b"\x30\x80" * 5000
    with pytest.raises(EnvelopeMalformed):
        inspect_stream(io.BytesIO(data))


def test_gcm_nonce_of_seven_bytes_is_refused_as_malformed(pki: Pki) -> None:
    env = cms.ContentInfo.load(seal_bytes(b"x", [Recipient(pki.bidder_rsa.encryption.certificate)]))
    alg = env["content"]["auth_encrypted_content_info"]["content_encryption_algorithm"]
    alg["parameters"] = GCMParameters({"aes_nonce": b"1234567", "aes_icvlen": 16})
    with pytest.raises(EnvelopeMalformed):
        inspect_stream(io.BytesIO(env.dump(force=True)))


@pytest.mark.parametrize("name", ["d//a.pdf", "./manifest.json", "a/./b", "a/"])
def test_package_names_that_are_not_in_normal_form_are_refused(name: str) -> None:
    with pytest.raises(PackageError):
        check_member_name(name)


def _zip(tmp_path: Path, entries: dict[str, bytes], deflate: bool = False) -> Path:
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_a_name_that_is_both_file_and_folder_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path, {"summary.json": b"{}", "manifest.json": b"{}", "a": b"1", "a/b": b"2"})
    with pytest.raises(PackageError, match="both a file and a folder"):
        verify_package(path)


def test_a_huge_compressed_manifest_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = _zip(tmp_path, {"summary.json": b"{}", "manifest.json": b" " * (17 * 1024 * 1024)}, True)
    assert path.stat().st_size < 1024 * 1024
    with pytest.raises(ManifestMismatch, match="larger than"):
        verify_package(path)


def test_signed_certificate_hash_naming_another_certificate_is_refused(pki: Pki) -> None:
    ess = [{"certs": [{"hash_algorithm": {"algorithm": "sha256"}, "cert_hash": b"\x00" * 32}]}]
    with pytest.raises(SignatureInvalid):
        _check_ess_certificate(ess, pki.bidder_rsa.signing.certificate)  # type: ignore[arg-type]
