"""The test PKI: two CAs, bidders' certificate pairs, credit codes, bid packages, PEM files."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from crypto import ca
from crypto.bid import SealResult, seal_bid
from crypto.envelope import Recipient
from crypto.keys import SoftwareKey
from crypto.trust import TrustStore
from schemas.common import uscc_check_char


def credit_code(first17: str) -> str:
    return first17 + uscc_check_char(first17)


CODE_A = credit_code("91350100M000100Y4")
CODE_B = credit_code("91320000MA02BBBB2")
CODE_C = credit_code("91440300MA03CCCC3")


@dataclass
class Pki:
    root_a: ca.Issued
    root_b: ca.Issued
    sub_b: ca.Issued
    bidder_rsa: ca.CompanyPair
    bidder_ec: ca.CompanyPair
    other_rsa: ca.CompanyPair
    now: datetime

    def trust(self, crls: bool = True) -> TrustStore:
        trusted = TrustStore(
            [self.root_a.certificate, self.root_b.certificate], [self.sub_b.certificate]
        )
        if crls:
            for issuer in (self.root_a, self.root_b, self.sub_b):
                trusted.add_crl(self.crl(issuer))
        return trusted

    def crl(
        self, issuer: ca.Issued, revoked: list[ca.RevokedEntry] | None = None, number: int = 1
    ) -> x509.CertificateRevocationList:
        return ca.issue_crl(
            issuer,
            revoked or [],
            this_update=self.now - timedelta(hours=1),
            next_update=self.now + timedelta(days=30),
            crl_number=number,
        )


def make_pki() -> Pki:
    """Two CAs (A: an RSA root; B: an EC root with an issuing CA) and three bidders' pairs."""
    now = datetime.now(UTC)
    root_a = ca.create_root_ca("Test CA A Root", organization="Test CA A", key_type="rsa2048")
    root_b = ca.create_root_ca("Test CA B Root", organization="Test CA B", key_type="ec-p256")
    sub_b = ca.create_intermediate_ca(root_b, "Test CA B Issuing", key_type="ec-p256")
    return Pki(
        root_a=root_a,
        root_b=root_b,
        sub_b=sub_b,
        bidder_rsa=ca.issue_company_pair(
            root_a, credit_code=CODE_A, company_name="甲建设工程有限公司"
        ),
        bidder_ec=ca.issue_company_pair(
            sub_b, credit_code=CODE_B, company_name="乙路桥集团有限公司", key_type="ec-p256"
        ),
        other_rsa=ca.issue_company_pair(
            root_a, credit_code=CODE_C, company_name="丙市政工程有限公司"
        ),
        now=now,
    )


def summary_for(code: str, **overrides: object) -> dict[str, object]:
    summary: dict[str, object] = {
        "project_code": "JS-2026-0101",
        "lot_code": "01",
        "bidder_credit_code": code,
        "bidder_name": "甲建设工程有限公司",
        "price_fen": 12_800_000_000,
        "duration_days": 365,
        "quality": "合格",
        "project_manager": "张工",
    }
    summary.update(overrides)
    return summary


def pdf_document(text: str = "bid") -> bytes:
    """A small but well-formed one-page PDF (what a bidder's document looks like to a viewer).

    Chromium's viewer takes the keyboard focus when it shows a file it cannot read, so page
    tests that type into a form after opening a document need a readable one.
    """
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def make_package(
    folder: Path,
    code: str = CODE_A,
    documents: dict[str, bytes] | None = None,
    summary: dict[str, object] | str | None = None,
) -> Path:
    """A bid folder: summary.json (unless ``summary`` is the string "absent") and documents."""
    folder.mkdir(parents=True, exist_ok=True)
    if summary != "absent":
        data = summary if isinstance(summary, dict) else summary_for(code)
        (folder / "summary.json").write_text(json.dumps(data, ensure_ascii=False))
    for name, content in (documents or {"商务标.pdf": pdf_document()}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def seal_as(
    pair: ca.CompanyPair,
    package: Path,
    out: Path,
    *,
    also_to: Sequence[x509.Certificate] = (),
    **options: Any,
) -> SealResult:
    """Seal ``package`` into ``out`` with the company's own signing key, to its own encryption
    certificate (and to ``also_to``); ``options`` go to ``seal_bid`` (envelope_kind, now, ...)."""
    assert pair.signing.key is not None
    return seal_bid(
        package,
        out,
        signer=SoftwareKey(pair.signing.key),
        signer_cert=pair.signing.certificate,
        recipients=[Recipient(c) for c in (pair.encryption.certificate, *also_to)],
        **options,
    )


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def write_key(path: Path, issued: ca.Issued) -> Path:
    assert issued.key is not None
    path.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@dataclass
class PemFiles:
    """A company pair, the roots and a trust folder written out as files for CLI tests."""

    sign_cert: Path
    sign_key: Path
    enc_cert: Path
    enc_key: Path
    chain: Path | None
    trust_dir: Path
    ca_file: Path

    def seal_argv(self, package: Path, out: Path, *extra: str) -> list[str]:
        """``bidbridge seal`` arguments for this bidder's own certificates."""
        return [
            "seal", "--package", str(package), "--sign-cert", str(self.sign_cert),
            "--sign-key", str(self.sign_key), "--recipient", str(self.enc_cert),
            *extra, "--out", str(out),
        ]  # fmt: skip

    def open_argv(self, bid: Path, out: Path, *extra: str) -> list[str]:
        """``bidbridge open`` arguments with this bidder's encryption key and certificate."""
        return [
            "open", "--in", str(bid), "--key", str(self.enc_key), "--cert", str(self.enc_cert),
            "--out", str(out), *extra,
        ]  # fmt: skip


def write_pair(
    folder: Path, pki: Pki, pair: ca.CompanyPair, chain: ca.Issued | None = None
) -> PemFiles:
    folder.mkdir(parents=True, exist_ok=True)
    trust_dir = folder / "trust"
    trust_dir.mkdir(exist_ok=True)
    write_cert(trust_dir / "a.crt", pki.root_a.certificate)
    write_cert(trust_dir / "b.crt", pki.root_b.certificate)
    write_cert(trust_dir / "b-sub.crt", pki.sub_b.certificate)
    for name, issuer in (("a", pki.root_a), ("b", pki.root_b), ("b-sub", pki.sub_b)):
        (trust_dir / f"{name}.crl").write_bytes(
            pki.crl(issuer).public_bytes(serialization.Encoding.PEM)
        )
    ca_file = folder / "roots.pem"
    ca_file.write_bytes(
        b"".join(
            c.public_bytes(serialization.Encoding.PEM)
            for c in (pki.root_a.certificate, pki.root_b.certificate, pki.sub_b.certificate)
        )
    )
    return PemFiles(
        sign_cert=write_cert(folder / "sign.crt", pair.signing.certificate),
        sign_key=write_key(folder / "sign.key", pair.signing),
        enc_cert=write_cert(folder / "enc.crt", pair.encryption.certificate),
        enc_key=write_key(folder / "enc.key", pair.encryption),
        chain=write_cert(folder / "chain.crt", chain.certificate) if chain else None,
        trust_dir=trust_dir,
        ca_file=ca_file,
    )


def openssl(*args: str | Path) -> None:
    """Run the ``openssl`` command; fail the test with its stderr if it fails."""
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def openssl_sign(content: Path, files: PemFiles, out: Path, stream: bool = False) -> Path:
    """``openssl cms -sign`` with the bidder's signing key: DER SignedData with the content."""
    streaming = ["-stream"] if stream else []
    openssl("cms", "-sign", "-binary", "-nodetach", "-md", "sha256", "-in", content,
            "-signer", files.sign_cert, "-inkey", files.sign_key, "-outform", "DER",
            "-out", out, *streaming)  # fmt: skip
    return out


AES_GCM = ("-aes-256-gcm",)  # the cipher options ``openssl_encrypt`` uses unless told otherwise


def openssl_seal(
    content: Path, files: PemFiles, out: Path, opts: Sequence[str] = AES_GCM, stream: bool = False
) -> Path:
    """Sign ``content`` with ``openssl cms -sign``, then encrypt with ``openssl cms -encrypt``
    (cipher options ``opts``)."""
    signed = openssl_sign(content, files, out.with_suffix(".signed.der"), stream)
    return openssl_encrypt(signed, files, out, opts, stream)


def openssl_encrypt(
    signed: Path, files: PemFiles, out: Path, opts: Sequence[str] = AES_GCM, stream: bool = False
) -> Path:
    """``openssl cms -encrypt`` of ``signed`` to the bidder's encryption certificate, with the
    cipher options ``opts``."""
    streaming = ["-stream"] if stream else []
    openssl(
        "cms",
        "-encrypt",
        "-binary",
        "-in",
        signed,
        "-recip",
        files.enc_cert,
        *opts,
        "-outform",
        "DER",
        "-out",
        out,
        *streaming,
    )
    return out
