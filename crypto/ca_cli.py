"""``bidbridge ca ...``: a file-based CA for tests, the demo and pilots.

A CA lives in a directory::

    ca.crt.pem   the CA certificate
    ca.key.pem   its private key (0600)
    chain.pem    the CA certificate followed by its parents up to the root
    ca.json      state: serial numbers issued, revocations, the last CRL number

Every file is written atomically (temporary file + rename); private keys with mode 0600.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from crypto import ca
from crypto.cli_support import Handler, Subcommands, add_command, add_group
from crypto.errors import BidBridgeError, KeyLoadFailed
from crypto.keys import load_certificate, load_certificates, load_private_key

STATE_FILE = "ca.json"
CERT_FILE = "ca.crt.pem"
KEY_FILE = "ca.key.pem"
CHAIN_FILE = "chain.pem"
STATE_FORMAT = "bidbridge-ca/1"

REASONS = tuple(r.value for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl)
KINDS = ("company-sign", "company-enc", "person", "device", "server")


class CAError(BidBridgeError):
    code = "CA_ERROR"
    zh = "CA 操作失败"
    en = "CA operation failed"


class CADirectoryInvalid(CAError):
    code = "CA_DIRECTORY_INVALID"
    zh = "CA 目录无效（不存在、不完整或已有 CA）"
    en = "the CA directory is not usable (missing, incomplete, or already holds a CA)"


class CAInputInvalid(CAError):
    code = "CA_INPUT_INVALID"
    zh = "CA 命令参数无效"
    en = "invalid CA command input"


# --- files -----------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _key_pem(key: ca.PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _serial_hex(serial: int) -> str:
    return format(serial, "x")


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class CADirectory:
    """A CA kept in a directory (see the module docstring)."""

    path: Path
    issued: ca.Issued
    chain: list[x509.Certificate]  # this CA first, up to the root
    state: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path) -> CADirectory:
        directory = Path(path)
        missing = [n for n in (STATE_FILE, CERT_FILE, KEY_FILE) if not (directory / n).is_file()]
        if missing:
            raise CADirectoryInvalid(
                f"{directory}: 缺少 {', '.join(missing)}，请先运行 `bidbridge ca init` / "
                f"missing {', '.join(missing)}: run `bidbridge ca init` first"
            )
        try:
            state = json.loads((directory / STATE_FILE).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise CADirectoryInvalid(f"{directory / STATE_FILE}: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CADirectoryInvalid(f"{directory / STATE_FILE}: not a {STATE_FORMAT} state file")
        cert = load_certificate(directory / CERT_FILE)
        key = load_private_key(directory / KEY_FILE).key.private_key
        chain_file = directory / CHAIN_FILE
        chain = load_certificates(chain_file) if chain_file.is_file() else [cert]
        return cls(directory, ca.Issued(cert, key), chain, state)

    def save(self) -> None:
        text = json.dumps(self.state, ensure_ascii=False, indent=2) + "\n"
        write_atomic(self.path / STATE_FILE, text.encode("utf-8"))

    def record(self, cert: x509.Certificate, kind: str, files: Sequence[Path] = ()) -> None:
        self.state["issued"].append(
            {
                "serial": _serial_hex(cert.serial_number),
                "kind": kind,
                "subject": cert.subject.rfc4514_string(),
                "not_before": cert.not_valid_before_utc.isoformat(),
                "not_after": cert.not_valid_after_utc.isoformat(),
                "files": [str(f) for f in files],
            }
        )

    def issued_serials(self) -> set[int]:
        return {int(entry["serial"], 16) for entry in self.state["issued"]}

    def revoked_entries(self) -> list[ca.RevokedEntry]:
        return [
            ca.RevokedEntry(
                serial_number=int(entry["serial"], 16),
                revoked_at=datetime.fromisoformat(entry["revoked_at"]),
                reason=x509.ReasonFlags(entry["reason"]) if entry.get("reason") else None,
            )
            for entry in self.state["revoked"]
        ]


def _new_state(name: str, key_type: str, parent: Path | None) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "name": name,
        "key_type": key_type,
        "parent": str(parent) if parent else None,
        "crl_number": 0,
        "issued": [],
        "revoked": [],
    }


class _Output:
    """Writes the files of one command, refusing to overwrite unless --force."""

    def __init__(self, force: bool) -> None:
        self.force = force
        self.written: list[Path] = []

    def check_free(self, *paths: Path) -> None:
        taken = [str(p) for p in paths if p.exists()]
        if taken and not self.force:
            raise CAInputInvalid(
                f"文件已存在（用 --force 覆盖）/ file exists (use --force to overwrite): "
                f"{', '.join(taken)}"
            )

    def cert(self, path: Path, *certs: x509.Certificate) -> None:
        write_atomic(path, _cert_pem(*certs))
        self.written.append(path)

    def key(self, path: Path, key: ca.PrivateKey) -> None:
        write_atomic(path, _key_pem(key), mode=0o600)
        self.written.append(path)

    def report(self) -> None:
        for path in self.written:
            print(f"写入 / wrote: {path}")


def _input_error(exc: ValueError) -> CAInputInvalid:
    return CAInputInvalid(str(exc))


def _days(args: argparse.Namespace, default: int) -> int:
    days = args.days if args.days is not None else default
    if days <= 0:
        raise CAInputInvalid(f"--days 必须为正数 / --days must be positive, got {days}")
    return cast(int, days)


# --- commands --------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    if (directory / STATE_FILE).exists() or (directory / KEY_FILE).exists():
        raise CADirectoryInvalid(
            f"{directory}: 该目录已有 CA，不会覆盖 / the directory already holds a CA; "
            "it is never overwritten"
        )
    out = _Output(force=True)
    parent: CADirectory | None = None
    try:
        if args.parent:
            parent = CADirectory.load(args.parent)
            issued = ca.create_intermediate_ca(
                parent.issued,
                args.name,
                key_type=args.key_type,
                path_length=args.path_length,
                days=_days(args, 1825),
                organization=args.organization,
            )
            chain = [issued.certificate, *parent.chain]
        else:
            issued = ca.create_root_ca(
                args.name,
                organization=args.organization,
                key_type=args.key_type,
                days=_days(args, 3650),
                path_length=args.path_length,
            )
            chain = [issued.certificate]
    except ValueError as exc:
        raise _input_error(exc) from None
    assert issued.key is not None
    out.key(directory / KEY_FILE, issued.key)
    out.cert(directory / CERT_FILE, issued.certificate)
    out.cert(directory / CHAIN_FILE, *chain)
    parent_dir = Path(args.parent) if args.parent else None
    state = CADirectory(directory, issued, chain, _new_state(args.name, args.key_type, parent_dir))
    state.save()
    out.written.append(directory / STATE_FILE)
    if parent is not None:
        parent.record(issued.certificate, "intermediate-ca", [directory / CERT_FILE])
        parent.save()
    kind = "中间 CA / intermediate CA" if args.parent else "根 CA / root CA"
    print(f"{kind}: {issued.certificate.subject.rfc4514_string()}")
    out.report()
    return 0


def cmd_issue_company(args: argparse.Namespace) -> int:
    authority = CADirectory.load(args.dir)
    out_dir = Path(args.out)
    names = ["sign.crt.pem", "sign.key.pem", "enc.crt.pem", "enc.key.pem", "chain.pem"]
    out = _Output(args.force)
    out.check_free(*(out_dir / n for n in names))
    try:
        pair = ca.issue_company_pair(
            authority.issued,
            credit_code=args.credit_code,
            company_name=args.name,
            key_type=args.key_type,
            days=_days(args, 730),
        )
    except ValueError as exc:
        raise _input_error(exc) from None
    assert pair.signing.key is not None and pair.encryption.key is not None
    out.key(out_dir / "sign.key.pem", pair.signing.key)
    out.cert(out_dir / "sign.crt.pem", pair.signing.certificate)
    out.key(out_dir / "enc.key.pem", pair.encryption.key)
    out.cert(out_dir / "enc.crt.pem", pair.encryption.certificate)
    out.cert(out_dir / "chain.pem", *authority.chain)
    authority.record(pair.signing.certificate, "company-sign", [out_dir / "sign.crt.pem"])
    authority.record(pair.encryption.certificate, "company-enc", [out_dir / "enc.crt.pem"])
    authority.save()
    print(f"单位 / company: {args.name} ({args.credit_code})")
    out.report()
    return 0


def _default_days(kind: str) -> int:
    return 397 if kind == "server" else 730


def _issue(
    kind: str, args: argparse.Namespace, issuer: ca.Issued, days: int, **key: Any
) -> ca.Issued:
    """The certificate of ``kind`` for the subject options in ``args``.

    ``key``: ``key_type`` (a new key pair) or ``public_key`` (a certificate for an existing key).
    """
    if kind in ("company-sign", "company-enc"):
        make = ca.issue_company_signing if kind == "company-sign" else ca.issue_company_encryption
        return make(issuer, credit_code=args.credit_code, company_name=args.name, days=days, **key)
    if kind == "person":
        return ca.issue_person(
            issuer, name=args.name, role=args.role, person_id=args.id, days=days, **key
        )
    if kind == "device":
        return ca.issue_room_device(issuer, room_id=args.room, site=args.site, days=days, **key)
    return ca.issue_server(
        issuer, dns_names=args.dns or [], ip_addresses=args.ip or [], days=days, **key
    )


def _issue_single(args: argparse.Namespace, kind: str) -> int:
    authority = CADirectory.load(args.dir)
    out_dir = Path(args.out)
    cert_path, key_path = out_dir / f"{kind}.crt.pem", out_dir / f"{kind}.key.pem"
    out = _Output(args.force)
    out.check_free(cert_path, key_path, out_dir / CHAIN_FILE)
    try:
        days = _days(args, _default_days(kind))
        issued = _issue(kind, args, authority.issued, days, key_type=args.key_type)
    except ValueError as exc:
        raise _input_error(exc) from None
    assert issued.key is not None
    out.key(key_path, issued.key)
    out.cert(cert_path, issued.certificate)
    out.cert(out_dir / CHAIN_FILE, *authority.chain)
    authority.record(issued.certificate, kind, [cert_path])
    authority.save()
    print(f"证书 / certificate: {issued.certificate.subject.rfc4514_string()}")
    out.report()
    return 0


def cmd_issue_person(args: argparse.Namespace) -> int:
    return _issue_single(args, "person")


def cmd_issue_device(args: argparse.Namespace) -> int:
    return _issue_single(args, "device")


def cmd_issue_server(args: argparse.Namespace) -> int:
    return _issue_single(args, "server")


def _load_public_key(path: str) -> ca.PublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyLoadFailed(f"{path}: {exc.strerror}") from None
    try:
        if b"-----BEGIN CERTIFICATE" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        elif b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except ValueError as exc:
        raise KeyLoadFailed(f"{path}: 不是公钥 / not a public key ({exc})") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise KeyLoadFailed(f"{path}: 只支持 RSA 和 EC 公钥 / only RSA and EC keys are supported")
    return key


_NEEDS = {
    "company-sign": ("credit_code", "name"),
    "company-enc": ("credit_code", "name"),
    "person": ("name", "role", "id"),
    "device": ("room", "site"),
}


def _require(args: argparse.Namespace, kind: str, *fields: str) -> None:
    missing = [f"--{f.replace('_', '-')}" for f in fields if not getattr(args, f)]
    if missing:
        raise CAInputInvalid(
            f"--kind {kind} 需要 / needs {', '.join(missing)}",
        )


def cmd_issue_for_key(args: argparse.Namespace) -> int:
    authority = CADirectory.load(args.dir)
    public = _load_public_key(args.public_key)
    out_path = Path(args.out)
    out = _Output(args.force)
    out.check_free(out_path)
    kind: str = args.kind
    days = _days(args, _default_days(kind))
    try:
        if kind == "server" and not args.dns and not args.ip:
            raise CAInputInvalid(f"--kind {kind} 需要 / needs --dns or --ip")
        _require(args, kind, *_NEEDS.get(kind, ()))
        issued = _issue(kind, args, authority.issued, days, public_key=public)
    except ValueError as exc:
        raise _input_error(exc) from None
    out.cert(out_path, issued.certificate)
    authority.record(issued.certificate, kind, [out_path])
    authority.save()
    print(f"证书 / certificate: {issued.certificate.subject.rfc4514_string()}")
    out.report()
    return 0


def _parse_instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CAInputInvalid(f"时间格式无效 / invalid ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_revoke(args: argparse.Namespace) -> int:
    authority = CADirectory.load(args.dir)
    if args.cert:
        cert = load_certificate(args.cert)
        try:
            cert.verify_directly_issued_by(authority.issued.certificate)
        except (ValueError, TypeError, InvalidSignature):
            raise CAInputInvalid(
                f"{args.cert}: 该证书不是本 CA 签发的 / the certificate was not issued by this CA"
            ) from None
        serial = cert.serial_number
    else:
        try:
            serial = int(args.serial, 16)
        except ValueError:
            raise CAInputInvalid(f"序列号无效 / invalid hex serial: {args.serial!r}") from None
        if serial not in authority.issued_serials():
            raise CAInputInvalid(
                f"本 CA 未签发序列号 {args.serial} / this CA issued no serial {args.serial}"
            )
    hex_serial = _serial_hex(serial)
    if any(entry["serial"] == hex_serial for entry in authority.state["revoked"]):
        print(f"已吊销，未改动 / already revoked, nothing changed: {hex_serial}")
        return 0
    at = _parse_instant(args.at) if args.at else _now()
    authority.state["revoked"].append(
        {"serial": hex_serial, "revoked_at": at.isoformat(), "reason": args.reason}
    )
    authority.save()
    print(f"已吊销 / revoked: {hex_serial} at {at.isoformat()} ({args.reason or 'unspecified'})")
    print("请运行 `bidbridge ca crl` 发布新的 CRL / run `bidbridge ca crl` to publish a new CRL")
    return 0


def cmd_crl(args: argparse.Namespace) -> int:
    authority = CADirectory.load(args.dir)
    days = _days(args, 7)
    this_update = _now() - timedelta(minutes=1)
    number = int(authority.state.get("crl_number", 0)) + 1
    crl = ca.issue_crl(
        authority.issued,
        authority.revoked_entries(),
        this_update=this_update,
        next_update=this_update + timedelta(days=days),
        crl_number=number,
    )
    encoding = serialization.Encoding.DER if args.der else serialization.Encoding.PEM
    out_path = Path(args.out)
    write_atomic(out_path, crl.public_bytes(encoding))
    authority.state["crl_number"] = number
    authority.save()
    print(
        f"CRL #{number}: {len(authority.state['revoked'])} 个吊销 / revoked, "
        f"有效至 / next update {crl.next_update_utc.isoformat() if crl.next_update_utc else '-'}"
    )
    print(f"写入 / wrote: {out_path}")
    return 0


# --- argument parsing ------------------------------------------------------------------------

Option = tuple[str, dict[str, Any]]  # a flag and its add_argument settings


def _common(
    p: argparse.ArgumentParser, *, out_help: str, days_help: str = "有效期天数 / validity in days"
) -> None:
    p.add_argument("--dir", required=True, help="CA 目录 / the CA directory")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--days", type=int, help=days_help)


def _key_type(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key-type",
        choices=ca.KEY_TYPES,
        default="rsa2048",
        help="密钥类型 / key type (default: rsa2048)",
    )


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="覆盖已有文件 / overwrite existing files")


def _command(
    cmds: Subcommands, name: str, handler: Handler, help: str, description: str
) -> argparse.ArgumentParser:
    return add_command(
        cmds, name, handler, help, description, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def _issuing(
    cmds: Subcommands,
    name: str,
    handler: Handler,
    help: str,
    description: str,
    *subject: Option,
) -> None:
    """A command that issues with a new key into the --out directory: the CA options, the
    ``subject`` options (flag and ``add_argument`` settings), --key-type and --force."""
    p = _command(cmds, name, handler, help, description)
    _common(p, out_help="输出目录 / output directory")
    for flag, settings in subject:
        p.add_argument(flag, **settings)
    _key_type(p)
    _force(p)


def _issuing_one(
    cmds: Subcommands, kind: str, handler: Handler, help: str, *subject: Option
) -> None:
    """``issue-KIND``, which writes KIND.crt.pem, KIND.key.pem and chain.pem to --out."""
    description = (
        f"写出 {kind}.crt.pem, {kind}.key.pem, chain.pem。\n"
        f"Writes {kind}.crt.pem, {kind}.key.pem and chain.pem."
    )
    _issuing(cmds, f"issue-{kind}", handler, help, description, *subject)


_SINGLE_KINDS: tuple[tuple[str, Handler, str, tuple[Option, ...]], ...] = (
    (
        "person",
        cmd_issue_person,
        "签发人员证书 / issue a person's certificate (host, supervisor, expert, centre)",
        (
            ("--name", {"required": True, "help": "姓名 / name (CN)"}),
            ("--role", {"required": True, "choices": ca.ROLES, "help": "角色 / role (OU)"}),
            ("--id", {"required": True, "help": "证件号 / person id (serialNumber)"}),
        ),
    ),
    (
        "device",
        cmd_issue_device,
        "签发评标室终端证书 / issue an evaluation-room device certificate",
        (
            ("--room", {"required": True, "help": "评标室编号 / room id (CN)"}),
            ("--site", {"required": True, "help": "场地 / site (O)"}),
        ),
    ),
    (
        "server",
        cmd_issue_server,
        "签发服务器 TLS 证书 / issue a TLS server certificate",
        (
            ("--dns", {"action": "append", "help": "域名，可重复 / DNS name (repeatable)"}),
            ("--ip", {"action": "append", "help": "IP 地址，可重复 / IP address (repeatable)"}),
        ),
    ),
)
"""``issue-KIND`` for the kinds with one certificate: handler, help and subject options."""


def register(sub: Subcommands) -> None:
    """Add ``ca`` and its subcommands to the ``bidbridge`` parser."""
    cmds = add_group(
        sub,
        "ca",
        "测试/演示/试点用 CA / a file-based CA for tests, the demo and pilots",
        __doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    p = _command(
        cmds,
        "init",
        _init_handler,
        "创建根 CA 或中间 CA / create a root CA, or an intermediate with --parent",
        "在 --dir 中创建根 CA；给出 --parent 时创建由父 CA 签发的中间 CA。\n"
        "Create a root CA in --dir; with --parent, an intermediate CA signed by the parent.",
    )
    p.add_argument("--dir", required=True, help="新 CA 的目录 / directory of the new CA")
    p.add_argument("--name", required=True, help="CA 名称（CN）/ the CA's common name")
    p.add_argument("--organization", help="组织（O）/ organization (intermediate: parent's O)")
    p.add_argument("--parent", help="父 CA 目录 / parent CA directory (makes an intermediate)")
    p.add_argument(
        "--path-length",
        type=int,
        default=None,
        help="路径长度约束 / basicConstraints pathLen (root: none; intermediate: 0)",
    )
    p.add_argument("--days", type=int, help="有效期天数 / validity in days (root 3650, sub 1825)")
    _key_type(p)

    _issuing(
        cmds,
        "issue-company",
        cmd_issue_company,
        "签发单位双证书（签名+加密）/ issue a company's signing and encryption certificates",
        "写出 sign.crt.pem, sign.key.pem, enc.crt.pem, enc.key.pem 和 chain.pem。\n"
        "Writes sign.crt.pem, sign.key.pem, enc.crt.pem, enc.key.pem and chain.pem\n"
        "(chain.pem: the issuing CA up to the root). Keys are written with mode 0600.",
        ("--credit-code", {"required": True, "help": "统一社会信用代码 / credit code (18)"}),
        ("--name", {"required": True, "help": "单位名称 / company name"}),
    )
    for kind, handler, help, subject in _SINGLE_KINDS:
        _issuing_one(cmds, kind, handler, help, *subject)

    p = _command(
        cmds,
        "issue-for-key",
        cmd_issue_for_key,
        "为已有公钥（如 CA 锁中的密钥）签发证书 / issue a certificate for an existing key",
        "私钥留在 CA 锁（PKCS#11）中时使用：只写出证书。\n"
        "For keys that stay on a token (PKCS#11): only the certificate is written.\n"
        "--public-key: PEM/DER public key (or a PEM certificate whose key to reuse).",
    )
    _common(p, out_help="证书输出文件 / certificate output file")
    p.add_argument("--public-key", required=True, help="公钥文件 / public key file")
    p.add_argument("--kind", required=True, choices=KINDS, help="证书种类 / certificate kind")
    p.add_argument("--credit-code", help="统一社会信用代码 / credit code (company-*)")
    p.add_argument("--name", help="单位名称或姓名 / company or person name")
    p.add_argument("--role", choices=ca.ROLES, help="角色 / role (person)")
    p.add_argument("--id", help="证件号 / person id (person)")
    p.add_argument("--room", help="评标室编号 / room id (device)")
    p.add_argument("--site", help="场地 / site (device)")
    p.add_argument("--dns", action="append", help="域名 / DNS name (server, repeatable)")
    p.add_argument("--ip", action="append", help="IP 地址 / IP address (server, repeatable)")
    _force(p)

    p = _command(
        cmds,
        "revoke",
        cmd_revoke,
        "吊销证书 / revoke a certificate (then run `ca crl`)",
        "记录吊销；新的 CRL 由 `bidbridge ca crl` 发布。\n"
        "Records a revocation; `bidbridge ca crl` publishes it in a new CRL.",
    )
    p.add_argument("--dir", required=True, help="CA 目录 / the CA directory")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--cert", help="要吊销的证书 / certificate file to revoke")
    which.add_argument("--serial", help="要吊销的序列号（十六进制）/ serial number (hex)")
    p.add_argument("--reason", choices=REASONS, help="吊销原因 / reason, e.g. keyCompromise")
    p.add_argument("--at", help="吊销时间 ISO 8601 / revocation time (default: now)")

    p = _command(
        cmds,
        "crl",
        cmd_crl,
        "发布 CRL / issue a CRL with every revocation so far",
        "签发包含全部吊销记录的新 CRL（CRL 编号递增）。\n"
        "Issues a new full CRL (the CRL number increases by one).",
    )
    _common(
        p,
        out_help="CRL 输出文件 / CRL output file",
        days_help="距下次更新天数 / days until nextUpdate (default 7)",
    )
    p.add_argument("--der", action="store_true", help="DER 编码（默认 PEM）/ write DER, not PEM")


def _init_handler(args: argparse.Namespace) -> int:
    if args.path_length is None and args.parent:
        args.path_length = 0
    return cmd_init(args)
