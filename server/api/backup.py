"""Backup decryption (rule 9): custodians' signed approvals and the quorum."""

from __future__ import annotations

import secrets

from crypto import errors as CE
from crypto.attest import b64decode, read_document
from crypto.quorum import DecryptedShare, QuorumBundle
from schemas import api as S
from schemas.canonical import canonical_json
from server.api.routing import Ctx, Route, load_session, pos_of, post
from server.api.shared import STAFF, check_own_signature, in_remit, load_opening
from server.domain import errors as E
from server.domain import opening as op
from server.work.decryption import backup_decrypt

BACKUP_PURPOSE = "bidbridge-backup-approval"


def backup_approval_document(session_id: str, request_id: str, bidders: list[str]) -> bytes:
    return canonical_json(
        {
            "purpose": BACKUP_PURPOSE,
            "session_id": session_id,
            "request_id": request_id,
            "bidders": sorted(bidders),
        }
    )


async def request_backup(ctx: Ctx, body: S.BackupRequestIn) -> S.BackupRequestOut:
    """Request backup decryption of named bids (rule 9)"""
    rid = secrets.token_hex(8)
    records = await ctx.hub.service.execute(
        ctx.session_id,
        op.RequestBackup(actor=ctx.actor, request_id=rid, bidders=body.bidders, reason=body.reason),
    )
    return S.BackupRequestOut(request_id=rid, pos=pos_of(ctx, records))


async def approve_backup(ctx: Ctx, body: S.BackupApproveIn) -> S.OkOut:
    """A custodian approves with a signature and its share (rule 9)"""
    hub = ctx.hub
    rid = ctx.request.match_info["request_id"]
    loaded = await load_session(ctx)
    state = loaded.state
    request = state.backup_requests.get(rid)
    if request is None or state.timetable.backup is None:
        raise E.BackupUnavailable("no such request / 无此申请")
    doc = read_document(b64decode(body.signature))
    if doc.content != backup_approval_document(ctx.session_id, rid, request.bidders):
        raise CE.SignatureInvalid("the approval does not name this request / 审批内容与申请不符")
    await check_own_signature(ctx, doc, "login")
    share = DecryptedShare.from_json(body.share)
    bundle = QuorumBundle.from_json(
        hub.blobs.path(state.timetable.backup.bundle_sha256).read_text("utf-8")
    )
    if share.key_id != bundle.key_id:
        raise CE.QuorumRebuildFailed(
            "the share belongs to another backup key / 分片不属于本项目备用密钥"
        )
    op.decide(state, op.ApproveBackup(actor=ctx.actor, request_id=rid), hub.clock.now())
    await hub.store.put_share(rid, ctx.who.party_id, body.share)
    records = await hub.service.execute(
        ctx.session_id, op.ApproveBackup(actor=ctx.actor, request_id=rid)
    )
    if any(r.type == "backup_quorum_reached" for r in records):
        await backup_decrypt(hub, ctx.session_id, rid, bundle)
    return S.OkOut(pos=pos_of(ctx, records))


# fmt: off
ROUTES: list[Route] = [
    post("/api/sessions/{session_id}/backup-requests", request_backup, ("host",), body=S.BackupRequestIn, response=S.BackupRequestOut, tag="host"),
    in_remit(post("/api/sessions/{session_id}/backup-requests/{request_id}/approve", approve_backup, STAFF, body=S.BackupApproveIn, response=S.OkOut, tag="host"), load_opening),
]
# fmt: on
