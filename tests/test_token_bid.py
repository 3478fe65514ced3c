"""Sealed bids with keys on a PKCS#11 token (SoftHSM2): sign and unwrap on the token.

SoftHSM 2.6.1 cannot do OAEP with SHA-256, so token recipients here use OAEP-SHA1 or
PKCS#1 v1.5 (software keys elsewhere use SHA-256). The private keys never leave the token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from crypto import ca
from crypto.bid import decrypt_with_key, unwrap
from crypto.token import generate_key_on_token, open_token_key, store_certificate_on_token
from server.cli import main
from tests.support.pki import CODE_A, Pki, make_package, write_cert
from tests.support.softhsm import SoftHSMToken


def _company_on_token(pki: Pki, token: SoftHSMToken, key_type: str) -> ca.CompanyPair:
    sign_pub = generate_key_on_token(token.uri(), key_type, "sign", b"\x01")  # type: ignore[arg-type]
    enc_pub = generate_key_on_token(token.uri(), key_type, "enc", b"\x02")  # type: ignore[arg-type]
    issuer = pki.root_a if key_type == "rsa2048" else pki.sub_b
    pair = ca.issue_company_pair(
        issuer,
        credit_code=CODE_A,
        company_name="甲建设工程有限公司",
        signing_public_key=sign_pub,
        encryption_public_key=enc_pub,
    )
    assert pair.signing.key is None and pair.encryption.key is None
    store_certificate_on_token(token.uri(), pair.signing.certificate, "sign", b"\x01")
    store_certificate_on_token(token.uri(), pair.encryption.certificate, "enc", b"\x02")
    return pair


@pytest.mark.parametrize(
    ("key_type", "padding"),
    [("rsa2048", "oaep-sha1"), ("rsa2048", "pkcs1v15"), ("ec-p256", "oaep-sha256")],
)
def test_bid_signed_and_opened_with_token_keys_through_the_cli(
    key_type: str,
    padding: str,
    pki: Pki,
    softhsm_token: SoftHSMToken,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pair = _company_on_token(pki, softhsm_token, key_type)
    sign_cert = write_cert(tmp_path / "sign.crt", pair.signing.certificate)
    enc_cert = write_cert(tmp_path / "enc.crt", pair.encryption.certificate)
    pkg = make_package(tmp_path / "pkg", CODE_A)
    bid = tmp_path / "bid.p7m"
    rc = main(
        [
            "seal",
            "--package",
            str(pkg),
            "--sign-cert",
            str(sign_cert),
            "--sign-token",
            softhsm_token.uri("sign", b"\x01", "private"),
            "--recipient",
            str(enc_cert),
            "--rsa-padding",
            padding,
            "--out",
            str(bid),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    rc = main(
        [
            "open",
            "--in",
            str(bid),
            "--token",
            softhsm_token.uri("enc", b"\x02", "private"),
            "--out",
            str(tmp_path / "opened"),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert CODE_A in captured.out
    assert (tmp_path / "opened" / "summary.json").exists()


def test_split_opening_unwraps_on_the_token_and_decrypts_with_the_key_elsewhere(
    pki: Pki, softhsm_token: SoftHSMToken, tmp_path: Path
) -> None:
    pair = _company_on_token(pki, softhsm_token, "rsa2048")
    from crypto.bid import seal_bid
    from crypto.envelope import Recipient
    from crypto.keys import KeyTransportPadding

    with open_token_key(softhsm_token.uri("sign", b"\x01", "private")) as signer:
        seal_bid(
            make_package(tmp_path / "pkg", CODE_A),
            tmp_path / "bid.p7m",
            signer=signer,
            signer_cert=pair.signing.certificate,
            recipients=[
                Recipient(pair.encryption.certificate, KeyTransportPadding("oaep", "sha1", "sha1"))
            ],
        )
    with open_token_key(softhsm_token.uri("enc", b"\x02", "private")) as key:
        cek = unwrap(tmp_path / "bid.p7m", key, pair.encryption.certificate)
    opened = decrypt_with_key(
        tmp_path / "bid.p7m",
        cek,
        tmp_path / "pkg.zip",
        expected_credit_code=CODE_A,
        trust=pki.trust(),
        # the certificates were issued during this test (valid from a minute ago), not at pki.now
        at=datetime.now(UTC),
    )
    assert opened.summary.bidder_credit_code == CODE_A
