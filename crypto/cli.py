"""``bidbridge seal / open / unwrap / decrypt-with-key / inspect``: sealed bid files from a shell."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from crypto.bid import decrypt_with_key, open_bid, seal_bid, unwrap
from crypto.ca import credit_code_of
from crypto.cli_support import Handler, Subcommands, add_command
from crypto.envelope import Recipient, inspect_envelope, recipients_of
from crypto.errors import KeyLoadFailed
from crypto.fingerprint import lot_key, this_machine
from crypto.keys import (
    KeyTransportPadding,
    PrivateKeyHandle,
    load_certificate,
    load_certificates,
    load_private_key,
)
from crypto.package import SealingMachine

PASSWORD_ENV = "BIDBRIDGE_KEY_PASSWORD"
RSA_PADDINGS = {
    "oaep-sha256": KeyTransportPadding("oaep", "sha256", "sha256"),
    "oaep-sha1": KeyTransportPadding("oaep", "sha1", "sha1"),
    "pkcs1v15": KeyTransportPadding("pkcs1v15"),
}


def _password() -> bytes | None:
    value = os.environ.get(PASSWORD_ENV)
    return value.encode() if value else None


def _key(
    key_path: str | None, token_uri: str | None
) -> tuple[PrivateKeyHandle, x509.Certificate | None]:
    """A key from a file (PEM/DER/PKCS#12) or a PKCS#11 token, with its certificate if known."""
    if token_uri:
        from crypto.token import find_certificate, open_token_key

        return open_token_key(token_uri), find_certificate(token_uri)
    if not key_path:
        raise KeyLoadFailed("give --key FILE or --token URI")
    loaded = load_private_key(key_path, _password())
    return loaded.key, loaded.certificate


def _instant(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise KeyLoadFailed(f"--at {text!r} is not an ISO 8601 instant") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _trust(path: str | None):  # type: ignore[no-untyped-def]
    if not path:
        return None
    from crypto.trust import TrustStore

    return TrustStore.from_directory(path)


def cmd_seal(args: argparse.Namespace) -> int:
    sign_cert = load_certificate(args.sign_cert)
    if args.sign_token:
        from crypto.token import open_token_key

        signer: PrivateKeyHandle = open_token_key(args.sign_token)
    elif args.sign_key:
        signer = load_private_key(args.sign_key, _password()).key
    else:
        raise KeyLoadFailed("give --sign-key FILE or --sign-token URI")
    pad = RSA_PADDINGS[args.rsa_padding]
    recipients = [Recipient(load_certificate(p), pad) for p in args.recipient]
    chain = [c for p in args.chain for c in load_certificates(p)]
    trust = _trust(args.trust)
    now = datetime.now(UTC)
    if trust is not None:
        trust.validate(sign_cert, "bid_signature", now, extra_intermediates=chain)
        for r in recipients:
            trust.validate(r.certificate, "encryption", now, extra_intermediates=chain)
    machine: SealingMachine = None
    if not args.no_machine_fingerprint:
        # The lot given, or the one summary.json names: per-lot, so it links bids in one lot only.
        machine = (
            this_machine(args.lot)
            if args.lot
            else (lambda s: this_machine(lot_key(s.project_code, s.lot_code)))
        )
    result = seal_bid(
        Path(args.package),
        Path(args.out),
        signer=signer,
        signer_cert=sign_cert,
        recipients=recipients,
        chain=chain,
        envelope_kind=args.envelope,
        sealing_machine=machine,
    )
    s = result.summary
    print(f"已封装 sealed: {result.path}")
    print(f"  SHA-256: {result.sha256}")
    print(f"  size: {result.size} bytes; package {result.package_size} bytes")
    print(
        f"  bidder: {s.bidder_name} ({s.bidder_credit_code}), lot {s.lot_code}, envelope {s.envelope}"
    )
    print(f"  recipients: {len(recipients)}")
    if result.sealing_machine:
        print(f"  机器指纹 sealing machine fingerprint: {result.sealing_machine[:12]}...")
    return 0


def _report_opened(opened) -> None:  # type: ignore[no-untyped-def]
    s = opened.summary
    print(f"签名人 signer: {opened.signer_subject}")
    print(f"统一社会信用代码 credit code: {opened.credit_code}")
    price = f"{s.price_fen / 100:.2f} 元 ({s.price_fen} fen)" if s.price_fen is not None else "-"
    print(f"投标人 bidder: {s.bidder_name}; lot {s.lot_code}; envelope {s.envelope}; price {price}")
    print(f"已写出 written: {opened.output}")


def cmd_open(args: argparse.Namespace) -> int:
    key, cert = _key(args.key, args.token)
    if args.cert:
        cert = load_certificate(args.cert)
    opened = open_bid(
        Path(args.in_),
        Path(args.out),
        key=key,
        cert=cert,
        trust=_trust(args.trust),
        at=_instant(args.at),
        expected_credit_code=args.expect_credit_code,
    )
    _report_opened(opened)
    return 0


def cmd_unwrap(args: argparse.Namespace) -> int:
    key, cert = _key(args.key, args.token)
    if args.cert:
        cert = load_certificate(args.cert)
    cek = unwrap(Path(args.in_), key, cert)
    out = Path(args.out)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(cek.hex() + "\n")
    print(f"内容加密密钥已写出 content-encryption key written: {out}")
    return 0


def cmd_decrypt_with_key(args: argparse.Namespace) -> int:
    try:
        cek = bytes.fromhex(Path(args.cek_file).read_text().strip())
    except (OSError, ValueError) as exc:
        raise KeyLoadFailed(f"{args.cek_file}: {exc}") from None
    opened = decrypt_with_key(
        Path(args.in_),
        cek,
        Path(args.out),
        expected_credit_code=args.expect_credit_code,
        trust=_trust(args.trust),
        at=_instant(args.at),
    )
    _report_opened(opened)
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_envelope(Path(args.in_))
    print(f"type: {info.kind}; cipher: {info.cipher_name}; size: {info.size} bytes")
    for r in recipients_of(info):
        who = (
            f"issuer={r.issuer} serial={r.serial_number:x}"
            if r.issuer
            else f"ski={r.subject_key_identifier!r}"
        )
        print(f"  recipient ({r.kind}, {r.algorithm}): {who}")
    if args.cert:
        from crypto.envelope import is_addressed_to

        cert = load_certificate(args.cert)
        ok = is_addressed_to(info, cert)
        print(f"addressed to {cert.subject.rfc4514_string()}: {'yes' if ok else 'no'}")
        print(f"credit code of that certificate: {credit_code_of(cert)}")
        return 0 if ok else 1
    return 0


def _key_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--key", metavar="PEM_OR_P12", help="private key file (PEM, DER or PKCS#12)")
    g.add_argument("--token", metavar="URI", help="PKCS#11 URI of the key on a token (RFC 7512)")
    p.add_argument(
        "--cert", metavar="PEM", help="the encryption certificate (to find the recipient)"
    )


def _reading(
    sub: Subcommands, name: str, handler: Handler, help: str, description: str
) -> argparse.ArgumentParser:
    """Subcommand ``name``, which reads the sealed bid given with ``--in``."""
    p = add_command(sub, name, handler, help, description)
    p.add_argument("--in", dest="in_", required=True, metavar="BID.p7m")
    return p


_CHECKS = (
    ("--trust", "DIR", "validate the signer against this trust folder"),
    ("--at", "ISO8601", "validation instant (default now)"),
    ("--expect-credit-code", "CODE", "refuse unless signed by this bidder"),
)


def _checks_and_out(p: argparse.ArgumentParser, *, explained: bool) -> None:
    """The options of ``open`` and ``decrypt-with-key`` after the key: what to check, where to
    write the package; with their help only when ``explained``."""
    for flag, metavar, text in _CHECKS:
        p.add_argument(flag, metavar=metavar, help=text if explained else None)
    out_help = "PATH.zip receives the package ZIP; any other PATH a new folder"
    p.add_argument("--out", required=True, metavar="PATH", help=out_help if explained else None)


def register(sub: Subcommands) -> None:
    note = f"Key file passwords are read from the environment variable {PASSWORD_ENV}."
    p = add_command(
        sub,
        "seal",
        cmd_seal,
        "封装投标文件 seal a bid package (sign, then encrypt)",
        "Package, sign (CMS SignedData) and encrypt (CMS AuthEnvelopedData, "
        "AES-256-GCM) a bid folder or ZIP holding summary.json. " + note,
    )
    p.add_argument("--package", required=True, help="folder or ZIP with summary.json and documents")
    p.add_argument("--sign-cert", required=True, metavar="PEM", help="bidder's signing certificate")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--sign-key", metavar="PEM_OR_P12", help="signing private key file")
    g.add_argument("--sign-token", metavar="URI", help="PKCS#11 URI of the signing key")
    p.add_argument(
        "--recipient",
        action="append",
        required=True,
        metavar="PEM",
        help="encryption certificate to seal for (repeat for a backup recipient)",
    )
    p.add_argument(
        "--chain",
        action="append",
        default=[],
        metavar="PEM",
        help="intermediate CA certificates to include",
    )
    p.add_argument(
        "--rsa-padding",
        default="oaep-sha256",
        choices=sorted(RSA_PADDINGS),
        help="RSA key transport (default oaep-sha256)",
    )
    p.add_argument(
        "--envelope",
        choices=["single", "technical", "commercial"],
        help="refuse unless summary.json declares this envelope (two-envelope bids)",
    )
    p.add_argument("--trust", metavar="DIR", help="check certificates against this trust folder")
    p.add_argument(
        "--lot",
        metavar="LOT_ID",
        help="the lot the machine fingerprint is keyed to (default: PROJECT/LOT of summary.json)",
    )
    p.add_argument(
        "--no-machine-fingerprint",
        action="store_true",
        help="do not record the sealing machine's fingerprint (a salted per-lot HMAC of the "
        "machine id and MAC address, no personal data) in the signed manifest",
    )
    p.add_argument("--out", required=True, metavar="BID.p7m", help="output file (DER)")

    p = _reading(
        sub,
        "open",
        cmd_open,
        "解密投标文件 open a sealed bid and verify its signature",
        "Decrypt with a key file or token, verify the GCM tag and the inner "
        "signature, check manifest and summary, and write the package. " + note,
    )
    _key_args(p)
    _checks_and_out(p, explained=True)

    p = _reading(
        sub,
        "unwrap",
        cmd_unwrap,
        "解开内容加密密钥 unwrap the content-encryption key (bidder side of online opening)",
        "Unwrap the envelope's content-encryption key with one's own key; the "
        "hex key is written to a 0600 file for the opening server. " + note,
    )
    _key_args(p)
    p.add_argument("--out", required=True, metavar="CEK_FILE")

    p = _reading(
        sub,
        "decrypt-with-key",
        cmd_decrypt_with_key,
        "用内容加密密钥解密 decrypt with a content-encryption key (server side)",
        "Decrypt with a hex content-encryption key, verify tag, signature, "
        "manifest and summary, and write the package.",
    )
    p.add_argument("--cek-file", required=True)
    _checks_and_out(p, explained=False)

    p = _reading(
        sub,
        "inspect",
        cmd_inspect,
        "查看信封 show an envelope's recipients without decrypting",
        "Print an envelope's type, cipher and recipients; with --cert, exit 0 "
        "only if the envelope is addressed to that certificate.",
    )
    p.add_argument("--cert", metavar="PEM")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: bidbridge seal|open|unwrap|decrypt-with-key|inspect")
