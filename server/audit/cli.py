"""``bidbridge verify-archive``: check a session's exported archive offline."""

from __future__ import annotations

import argparse

from crypto.errors import KeyLoadFailed
from crypto.trust import TrustStore
from server.audit.archive import ArchiveReport, verify_archive
from server.subcommand import Subparsers, add_command

HELP = "离线校验开标或评标存档 / verify an exported session archive offline"


def register(sub: Subparsers) -> None:
    """Add ``verify-archive`` to the ``bidbridge`` command's subcommands."""
    p = add_command(sub, "verify-archive", cmd_verify_archive, HELP)
    p.add_argument("archive", metavar="ARCHIVE", help="存档 ZIP 文件 / the archive ZIP file")
    p.add_argument(
        "--trust",
        metavar="DIR",
        help=(
            "用此目录中的根证书（及中间证书、CRL）作为信任锚，而不是存档自带的根证书；"
            "不指定时只能证明完整性，不能证明真实性 / use the root certificates (and any "
            "intermediates and CRLs) in DIR as trust anchors instead of the archive's own; "
            "without it the check proves integrity, not authenticity"
        ),
    )
    p.add_argument(
        "--deep",
        action="store_true",
        help=(
            "同时解密每份已解密的投标文件包并核对投标摘要，并逐包读取每个录像片段（较慢） / also "
            "decrypt each opened bid's package and compare its summary, and read every packet of "
            "each recording segment (slower)"
        ),
    )


def cmd_verify_archive(args: argparse.Namespace) -> int:
    """离线校验开标或评标存档：清单签名、每个文件的哈希、事件哈希链、回执/检查点/确认/记录签名、投标信封及各签名证书在使用时刻的有效性；评标存档还复算专家抽取，核对每个录像片段的哈希和大小、评审表和评标报告的签名（须为成员签到时使用的证书）以及平台对评标报告的签名。任何一个字节被改动都会被发现并指明。 /
    Verify an exported session archive offline: the manifest signature, every member's
    hash, the event hash chain, the receipt, checkpoint, confirmation and record
    signatures, the sealed bids and every signer's certificate at the time it was used;
    for an evaluation also the expert draw (recomputed), every recording segment's hash
    and size, the members' signatures on score sheets and the report (with the
    certificate each signed in with) and the platform's signature on the report.
    Any changed byte is found and named."""
    roots = None
    intermediates = []
    crls = []
    if args.trust:
        store = TrustStore.from_directory(args.trust, require_revocation=False)
        if not store.roots:
            raise KeyLoadFailed(
                f"{args.trust}: 目录中没有根证书 / the folder holds no root certificate"
            )
        roots, intermediates, crls = store.roots, store.intermediates, store.crls
    report = verify_archive(
        args.archive,
        trust_roots=roots,
        deep=args.deep,
        extra_intermediates=intermediates,
        extra_crls=crls,
    )
    print_report(args.archive, report)
    return 0


def print_report(archive: str, report: ArchiveReport) -> None:
    print(f"存档校验通过 / archive verified: {archive}")
    print(f"  会话 session: {report.session_id}; 导出 exported at {report.exported_at}")
    print(f"  事件 events: {report.events}; 链头 head hash: {report.head_hash}")
    print(KIND_LINES[report.kind](report))
    print(
        f"  已验证签名 signatures checked: {report.signatures_checked}; "
        f"已验证证书使用 certificate uses validated: {report.certificates_validated}"
    )
    if report.anchors == "given":
        print("  信任锚 anchors: 指定的根证书 / the given roots (--trust)")
    else:
        print(
            "  信任锚 anchors: 存档自带的根证书——只证明完整性，不证明真实性；"
            "请用 --trust 指定本方信任的根证书 / the archive's own roots: this proves integrity, "
            "not authenticity; give your own roots with --trust"
        )


def _evaluation_line(report: ArchiveReport) -> str:
    depth = "含逐包读取 / every packet read" if report.deep else "哈希与大小 / hash and size"
    return (
        f"  评标 evaluation: 复算抽取 draws recomputed: {report.draws_recomputed}; "
        f"录像片段 recording segments: {report.segments_checked} ({depth}); "
        f"文件 files: {report.files_checked}"
    )


def _opening_line(report: ArchiveReport) -> str:
    depth = (
        "含解密核对摘要 / with summaries"
        if report.deep
        else "完整性与签名 / integrity and signature"
    )
    return f"  已验证的解密投标 bids decrypted: {report.bids_decrypted} ({depth})"


KIND_LINES = {"opening": _opening_line, "evaluation": _evaluation_line}
"""What a verified archive of each kind of session says about its own checks."""
