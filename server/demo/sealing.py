"""``bidbridge demo-crypto``: the sealed-bid round trip offline, end to end, with fresh CAs.

At this stage the demo runs the sealed-bid round trip the opening will rest on: two independent
CAs trusted at once (CA 互认), bidders from both seal bids offline (RSA-OAEP and ECDH recipients,
one two-envelope bid), each bidder unwraps its own content-encryption key, the "server" decrypts
with that key alone, verifies tag, signature, chain and revocation, and reads the price. Then it
shows what happens to a tampered file, a revoked signer and an envelope for someone else.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crypto import ca
from crypto.bid import decrypt_with_key, seal_bid, unwrap
from crypto.envelope import Recipient
from crypto.errors import BidBridgeError
from crypto.keys import SoftwareKey
from crypto.quorum import open_share, rebuild_backup_key, split_backup_key
from crypto.trust import TrustStore
from schemas.common import uscc_check_char


def _code(first17: str) -> str:
    return first17 + uscc_check_char(first17)


def _write_package(folder: Path, summary: dict[str, object], documents: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1))
    for name, data in documents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def run_demo(out: Path) -> int:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    now = datetime.now(UTC)
    print("== 1. 两个相互独立的 CA (CA 互认) / two independent CAs ==")
    root_a = ca.create_root_ca("Demo CA A Root", organization="Demo CA A", key_type="rsa2048")
    root_b = ca.create_root_ca("Demo CA B Root", organization="Demo CA B", key_type="ec-p256")
    sub_b = ca.create_intermediate_ca(root_b, "Demo CA B Issuing CA 1", key_type="ec-p256")
    bidders = [
        ("甲建设工程有限公司", _code("91110000MA01AAAA1"), root_a, "rsa2048", 128_000_000_00),
        ("乙路桥集团有限公司", _code("91320000MA02BBBB2"), sub_b, "ec-p256", 125_500_000_00),
        ("丙市政工程有限公司", _code("91440300MA03CCCC3"), root_a, "rsa2048", 131_250_000_00),
    ]
    backup = ca.issue_company_pair(
        root_a, credit_code=_code("12100000MB0000001"), company_name="交易中心备用解密"
    ).encryption
    trust = TrustStore([root_a.certificate, root_b.certificate], [sub_b.certificate])
    for issuer in (root_a, sub_b, root_b):
        trust.add_crl(
            ca.issue_crl(
                issuer,
                [],
                this_update=now - timedelta(minutes=5),
                next_update=now + timedelta(days=7),
                crl_number=1,
            )
        )
    print("   trusted roots: Demo CA A (RSA), Demo CA B (ECDSA P-256, via an intermediate)")

    print("== 2. 投标人离线封装 / bidders seal offline ==")
    sealed = []
    for i, (name, code, issuer, key_type, price) in enumerate(bidders, 1):
        pair = ca.issue_company_pair(issuer, credit_code=code, company_name=name, key_type=key_type)  # type: ignore[arg-type]
        pkg = _write_package(
            out / f"bidder{i}" / "package",
            {
                "project_code": "JS-2026-0101",
                "lot_code": "01",
                "bidder_credit_code": code,
                "bidder_name": name,
                "price_fen": price,
                "duration_days": 365,
                "quality": "合格",
                "project_manager": f"项目经理{i}",
            },
            {
                "商务标.pdf": f"%PDF-1.7 demo bid of {name}\n".encode() * 2000,
                "技术标/施工组织设计.pdf": b"%PDF-1.7 technical\n" * 5000,
            },
        )
        bid = out / f"bidder{i}" / "bid.p7m"
        assert pair.signing.key is not None
        res = seal_bid(
            pkg,
            bid,
            signer=SoftwareKey(pair.signing.key),
            signer_cert=pair.signing.certificate,
            recipients=[Recipient(pair.encryption.certificate), Recipient(backup.certificate)],
            chain=[sub_b.certificate] if issuer is sub_b else [],
        )
        kind = "RSA-OAEP-SHA256" if key_type.startswith("rsa") else "ECDH P-256"
        print(
            f"   {name}: {res.size} bytes, SHA-256 {res.sha256[:16]}..., recipient {kind} + backup"
        )
        sealed.append((name, code, pair, bid))

    print("== 3. 在线解密 (拆分式) / online decryption, split form ==")
    table = []
    for name, code, pair, bid in sealed:
        assert pair.encryption.key is not None
        cek = unwrap(bid, SoftwareKey(pair.encryption.key), pair.encryption.certificate)
        opened = decrypt_with_key(
            bid,
            cek,
            bid.with_name("opened"),
            expected_credit_code=code,
            trust=trust,
            at=datetime.now(UTC),
        )
        table.append((name, opened.summary.price_fen))
        print(
            f"   {name}: bidder key unwrapped the CEK; server verified tag, signature, chain, CRL"
        )
    print("== 4. 唱标 / opening table ==")
    for name, price in table:
        assert price is not None
        print(f"   {name:<12} {price / 100:>16,.2f} 元")

    print("== 5. 备用解密 (2/3 托管人) / backup decryption, 2 of 3 custodians ==")
    assert backup.key is not None
    custodians = [
        ca.issue_person(root_a, name=who, role=role, person_id=f"ID-{i}", usage="encryption")
        for i, (who, role) in enumerate(
            [("主持人", "host"), ("监管人员", "supervisor"), ("交易中心", "centre")], 1
        )
    ]
    bundle = split_backup_key(
        backup.key, backup.certificate, [c.certificate for c in custodians], 2
    )
    (out / "backup-quorum.json").write_text(bundle.to_json())
    approvals = []
    for c in custodians[:2]:
        assert c.key is not None
        approvals.append(open_share(bundle, SoftwareKey(c.key), c.certificate))
    rebuilt = rebuild_backup_key(bundle, approvals)
    name, code, _, bid = sealed[1]
    opened = decrypt_with_key(
        bid,
        unwrap(bid, rebuilt, backup.certificate),
        bid.with_name("backup-opened"),
        expected_credit_code=code,
    )
    print(
        f"   host + supervisor rebuilt the backup key; {name} opened: {opened.summary.price_fen} fen"
    )
    try:
        rebuild_backup_key(bundle, approvals[:1])
    except BidBridgeError as exc:
        print(f"   one custodian alone: ERROR {exc.line()}")

    print("== 6. 拒绝的情形 / what is refused ==")
    name, code, pair, bid = sealed[0]
    tampered = out / "tampered.p7m"
    data = bytearray(bid.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    assert pair.encryption.key is not None
    cases = [
        (
            "one changed byte",
            lambda: decrypt_with_key(
                tampered,
                unwrap(tampered, SoftwareKey(pair.encryption.key), pair.encryption.certificate),
                out / "t-open",
            ),
        ),
        (
            "another bidder's key",
            lambda: unwrap(
                bid, SoftwareKey(sealed[2][2].encryption.key), sealed[2][2].encryption.certificate
            ),
        ),
    ]
    revoked_crl = ca.issue_crl(
        root_a,
        [ca.RevokedEntry(pair.signing.certificate.serial_number, now - timedelta(minutes=1))],
        this_update=now,
        next_update=now + timedelta(days=7),
        crl_number=2,
    )
    trust.add_crl(revoked_crl)
    cases.append(
        (
            "a revoked signing certificate",
            lambda: decrypt_with_key(
                bid,
                unwrap(bid, SoftwareKey(pair.encryption.key), pair.encryption.certificate),
                out / "r-open",
                trust=trust,
                at=datetime.now(UTC),
            ),
        )
    )
    for label, action in cases:
        try:
            action()
        except BidBridgeError as exc:
            print(f"   {label}: ERROR {exc.line()}")
        else:
            print(f"   {label}: NOT REFUSED (this is a bug)")
            return 1
    print(f"demo files: {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(Path(args.out))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo-crypto",
        help="封装/解密演示 the sealed-bid crypto demo (no server)",
        description="Seal, open, backup quorum and refusals with fresh CAs in a local folder.",
    )
    p.add_argument("--out", default="demo-crypto-out", help="folder for the demo's files")
    p.set_defaults(handler=cmd_demo)
