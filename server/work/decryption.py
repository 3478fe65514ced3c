"""The server's decryption work: open a bid with its content key, check it, attribute a failure (rules 7-9)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509

from crypto.bid import decrypt_with_key
from crypto.envelope import inspect_envelope, unwrap_content_key
from crypto.errors import BidBridgeError
from crypto.quorum import DecryptedShare, QuorumBundle, rebuild_backup_key
from schemas.time import parse_iso
from server.core import Hub
from server.domain import binding
from server.domain import opening as op
from server.identity import cert_sha256
from server.service import cek_fingerprint
from server.store import NotFound


async def session_info(hub: Hub, session_id: str) -> dict[str, Any]:
    """The session's creation payload (lot, project, tenderer, backup bundle ...)."""
    first = await hub.store.events_after(session_id, 0, limit=1)
    if not first:
        raise NotFound(session_id)
    return first[0].payload


DECRYPT_HINTS = {
    "ENVELOPE_TAMPERED": (
        "发送的密钥无法解开投标文件：请确认使用投标时所用的加密证书（CA 锁）",
        "the key sent does not open the bid: use the encryption certificate (CA key) the bid was sealed with",
    ),
    "SIGNER_NOT_BIDDER": (
        "投标文件不是由本单位签名：请用本单位签名证书重新封装（截止后无法更换）",
        "the bid is not signed by your company: it must be sealed with your own signing certificate",
    ),
}


async def _signer_not_bound(
    hub: Hub, code: str, bid: op.Bid, signer: x509.Certificate
) -> dict[str, Any] | None:
    """Rule 3 at decryption: the inner signer must have been a bound signing certificate of the
    company when the bid was sealed (its trusted time of receipt); else the failure, with the
    evidence it rests on."""
    sealed_at = parse_iso(bid.received_at)
    fp = cert_sha256(signer)
    bound = binding.from_rows(await hub.store.bindings_of(code))
    failure = binding.signer_failure(bound, fp, sealed_at)
    if failure is None:
        return None
    zh, en = binding.SIGNER_NOT_BOUND_MESSAGE
    return {
        "ok": False,
        "code": failure,
        "cause": op.failure_cause(failure),
        "message": f"{zh} / {en} (signer sha256 {fp}, sealed {bid.received_at})",
        "evidence": {
            "signer_sha256": fp,
            "signer_subject": signer.subject.rfc4514_string(),
            "signer_issuer": signer.issuer.rfc4514_string(),
            "sealed_at": bid.received_at,
            "envelope_sha256": bid.envelope_sha256,
        },
    }


async def decrypt_bid(
    hub: Hub,
    session_id: str,
    state: op.OpeningState,
    code: str,
    cek: bytes,
    submitted: Any,
    *,
    via: str,
) -> op.DecryptionResult:
    """Decrypt, check the tag, verify the bidder's signature and summary; attribute a failure."""
    bid = state.bids[code]
    info = await session_info(hub, session_id)
    work = Path(tempfile.mkdtemp(prefix="open-", dir=hub.settings.data_dir))
    out = work / "package.zip"
    base = {"actor": op.SERVER, "bidder": code, "submitted_at": submitted, "via": via}
    try:
        try:
            envelope = hub.blobs.path(bid.envelope_sha256)
        except NotFound:
            return op.DecryptionResult(
                **base,
                ok=False,
                code="ENVELOPE_MISSING",
                cause=op.failure_cause("ENVELOPE_MISSING"),
                message="平台存储中找不到投标文件 / the platform cannot find the stored bid",
            )
        try:
            opened = await asyncio.to_thread(
                decrypt_with_key,
                envelope,
                cek,
                out,
                expected_credit_code=code,
                trust=hub.trust,
                at=submitted,
            )
        except BidBridgeError as exc:
            zh, en = DECRYPT_HINTS.get(exc.code, (exc.zh, exc.en))
            detail = f" ({exc.detail})" if exc.detail else ""
            return op.DecryptionResult(
                **base,
                ok=False,
                code=exc.code,
                cause=op.failure_cause(exc.code),
                message=f"{zh} / {en}{detail}",
            )
        except OSError as exc:
            return op.DecryptionResult(
                **base,
                ok=False,
                code="PLATFORM_IO",
                cause=op.failure_cause("PLATFORM_IO"),
                message=f"平台读写故障 / platform storage error: {exc.strerror}",
            )
        refused = await _signer_not_bound(hub, code, bid, opened.signer.certificate)
        if refused is not None:
            return op.DecryptionResult(**base, **refused)
        summary = opened.summary
        if (summary.project_code, summary.lot_code) != (info["project_code"], info["lot_code"]):
            return op.DecryptionResult(
                **base,
                ok=False,
                code="SUMMARY_LOT_MISMATCH",
                cause=op.failure_cause("SUMMARY_LOT_MISMATCH"),
                message=f"投标摘要中的项目/标段 {summary.project_code}/{summary.lot_code} 与本标段不符 / the summary names another lot",
            )
        await hub.blobs.put_file(out)
        await hub.store.put_bid_key(session_id, bid.envelope_sha256, cek.hex())
        return op.DecryptionResult(
            **base,
            ok=True,
            summary=summary.model_dump(mode="json"),
            cek_sha256=cek_fingerprint(cek),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def backup_decrypt(hub: Hub, session_id: str, rid: str, bundle: QuorumBundle) -> None:
    shares = [DecryptedShare.from_json(s) for s in (await hub.store.shares(rid)).values()]
    try:
        key = rebuild_backup_key(bundle, shares)
    finally:
        await hub.store.drop_shares(rid)
    loaded = await hub.service.load(session_id)
    assert loaded is not None
    for code in loaded.state.backup_requests[rid].bidders:
        bid = loaded.state.bids[code]
        now = hub.clock.now()
        try:
            cek = unwrap_content_key(
                inspect_envelope(hub.blobs.path(bid.envelope_sha256)), key, bundle.certificate
            )
        except BidBridgeError as exc:
            result = op.DecryptionResult(
                actor=op.SERVER,
                bidder=code,
                submitted_at=now,
                ok=False,
                code=exc.code,
                cause=op.failure_cause(exc.code),
                message=f"{exc.zh} / {exc.en}",
                via="backup",
            )
        else:
            result = await decrypt_bid(hub, session_id, loaded.state, code, cek, now, via="backup")
        await hub.service.execute(session_id, result)
