"""``bidbridge token ...``: generate keys on a CA token, store certificates, list tokens.

Tokens and keys are named by PKCS#11 URIs (RFC 7512), e.g.
``pkcs11:token=bidder;object=enc-key?module-path=/usr/lib/softhsm/libsofthsm2.so``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from crypto import token as tk
from crypto.cli_support import Subcommands, add_command, add_group
from crypto.errors import KeyLoadFailed, TokenError
from crypto.keys import load_certificate

_URI_HELP = (
    "PKCS#11 URI (RFC 7512), 例如 / e.g. "
    "'pkcs11:token=bidder;object=sign-key?module-path=/usr/lib/softhsm/libsofthsm2.so'. "
    f"未给 module-path 时使用环境变量 / without module-path, ${tk.MODULE_ENV} is used"
)
_EPILOG = (
    "PIN 的来源（按优先级）/ PIN sources, first wins: --pin-file, --pin, "
    "URI pin-value / pin-source, 交互输入 / an interactive prompt."
)


def _hex_id(text: str) -> bytes:
    try:
        value = bytes.fromhex(text.replace(":", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"ID 须为十六进制 / the id must be hex, e.g. 01 or 0a1b: {text!r}"
        ) from None
    if not value:
        raise argparse.ArgumentTypeError("ID 不能为空 / the id must not be empty")
    return value


def _add_pin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pin",
        help="用户 PIN（会出现在进程列表中，建议用 --pin-file）/ user PIN "
        "(visible in the process list: prefer --pin-file)",
    )
    parser.add_argument(
        "--pin-file", type=Path, help="含用户 PIN 的文件 / a file holding the user PIN"
    )


def _pin(args: argparse.Namespace, uri: tk.Pkcs11Uri, *, required: bool) -> str | None:
    if args.pin_file is not None:
        try:
            return str(args.pin_file.read_text(encoding="utf-8").rstrip("\r\n"))
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"无法读取 PIN 文件 / cannot read {args.pin_file}: {exc}") from None
    if args.pin is not None:
        return str(args.pin)
    pin = uri.resolve_pin()
    if pin is None and required and sys.stdin.isatty():
        pin = getpass.getpass("CA 锁 PIN / token PIN: ")
    return pin


def register(sub: Subcommands) -> None:
    """Add the ``token`` command and its subcommands to a ``bidbridge`` subparser set."""
    commands = add_group(
        sub,
        "token",
        "CA 锁（PKCS#11）：生成密钥、导入证书、列出 / PKCS#11 tokens: keygen, certs, list",
        "管理 CA 锁（PKCS#11 设备）上的密钥和证书。私钥在 CA 锁内生成，永不导出。"
        " / Manage keys and certificates on a PKCS#11 token. Private keys are generated on the"
        " token and never leave it.",
        epilog=_EPILOG,
    )

    keygen = add_command(
        commands,
        "keygen",
        _keygen,
        "在 CA 锁上生成密钥对 / generate a key pair on a token",
        "在 CA 锁上生成密钥对（私钥不可导出），输出公钥 PEM。RSA 密钥可签名和解密，"
        "EC 密钥可签名和密钥协商。 / Generate a key pair on the token (the private key is "
        "sensitive and not extractable) and print its public key as PEM. RSA keys sign and "
        "decrypt; EC keys sign and derive (ECDH).",
        epilog=_EPILOG,
    )
    keygen.add_argument("--uri", required=True, help=_URI_HELP)
    keygen.add_argument(
        "--type",
        dest="key_type",
        choices=("rsa2048", "ec-p256"),
        required=True,
        help="密钥类型 / key type",
    )
    keygen.add_argument("--label", help="密钥标签（默认取 URI 的 object）/ key label (CKA_LABEL)")
    keygen.add_argument(
        "--id", dest="key_id", type=_hex_id, help="密钥 ID，十六进制 / key id (CKA_ID), hex"
    )
    keygen.add_argument(
        "--out", type=Path, help="公钥 PEM 写入此文件（默认标准输出）/ write the PEM here"
    )
    _add_pin_options(keygen)

    imp = add_command(
        commands,
        "import-cert",
        _import_cert,
        "把证书存到 CA 锁上密钥旁 / store a certificate next to its key",
        "把证书（PEM 或 DER）以与密钥相同的标签和 ID 存到 CA 锁上；证书须与该密钥匹配。"
        " / Store a certificate (PEM or DER) on the token with the label and id of its key; it"
        " must match the key.",
        epilog=_EPILOG,
    )
    imp.add_argument("--uri", required=True, help=_URI_HELP)
    imp.add_argument("--cert", type=Path, required=True, help="证书文件 / certificate file")
    imp.add_argument("--label", help="证书标签（默认取 URI 的 object）/ label (CKA_LABEL)")
    imp.add_argument(
        "--id",
        dest="key_id",
        type=_hex_id,
        help="ID，十六进制，须与密钥相同 / id (hex), as the key",
    )
    _add_pin_options(imp)

    lst = add_command(
        commands,
        "list",
        _list,
        "列出 CA 锁或其中的对象 / list tokens, or the objects on one",
        "不带 --uri：列出模块中的 CA 锁；"
        "带 --uri：列出该 CA 锁上的密钥和证书（私钥需 PIN）。"
        " / Without --uri: list the module's tokens. With --uri: list the keys and certificates"
        " on that token (private keys only with a PIN).",
        epilog=_EPILOG,
    )
    lst.add_argument(
        "--module",
        help=f"PKCS#11 模块路径（默认 ${tk.MODULE_ENV}）/ module path (default ${tk.MODULE_ENV})",
    )
    lst.add_argument("--uri", help=_URI_HELP)
    _add_pin_options(lst)


def _keygen(args: argparse.Namespace) -> int:
    uri = tk.Pkcs11Uri.parse(args.uri)
    pin = _pin(args, uri, required=True)
    public = tk.generate_key_on_token(uri, args.key_type, args.label, args.key_id, pin=pin)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")
    if args.out is None:
        sys.stdout.write(pem)
    else:
        try:
            args.out.write_text(pem, encoding="ascii")
        except OSError as exc:
            raise KeyLoadFailed(f"{args.out}: {exc.strerror}") from None
        print(f"公钥已写入 / public key written to {args.out}")
    return 0


def _import_cert(args: argparse.Namespace) -> int:
    uri = tk.Pkcs11Uri.parse(args.uri)
    cert = load_certificate(args.cert)
    pin = _pin(args, uri, required=False)
    tk.store_certificate_on_token(uri, cert, args.label, args.key_id, pin=pin)
    print(f"证书已存入 CA 锁 / certificate stored: {cert.subject.rfc4514_string()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.uri is None:
        tokens = tk.list_tokens(args.module)
        if not tokens:
            print("未找到已初始化的 CA 锁 / no initialised token found")
        for t in tokens:
            print(f"{t.label}\t{t.manufacturer}\t{t.model}\tserial={t.serial}\t{t.uri}")
        return 0
    uri = tk.Pkcs11Uri.parse(args.uri)
    if args.module is not None and uri.module_path is None:
        uri = replace(uri, module_path=args.module)
    objects = tk.list_objects(uri, _pin(args, uri, required=False))
    if not objects:
        print("CA 锁上没有对象 / no objects on the token")
    for o in objects:
        print(f"{o.type}\t{o.key_type or '-'}\tlabel={o.label!r}\tid={o.id.hex()}\t{o.uri}")
    return 0
