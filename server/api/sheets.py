"""Review and scoring sheets, rescoring, stage closing, and the evaluation report with its signatures."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from crypto.attest import b64decode, read_document
from schemas import api as S
from schemas import evaluation as EV
from schemas.canonical import canonical_json
from server.api.routing import Ctx, Route, command, execute, get, pos_of, post
from server.api.shared import MEMBER_ROLES, STAFF, SignatureInvalid, eval_actor, load_evaluation
from server.core import Hub
from server.domain import errors as E
from server.domain import evaluation as ev
from server.domain import scoring as SC
from server.identity import cert_sha256


async def _member_cert(ctx: Ctx, signature: str, expected: bytes) -> None:
    """The signature is the member's own, over exactly ``expected``, with the signed-in cert."""
    loaded = await load_evaluation(ctx)
    member = loaded.state.members.get(ctx.who.party_id)
    doc = read_document(b64decode(signature))
    if doc.content != expected:
        raise SignatureInvalid("the signed content differs / 签名内容不符")
    if member is None or member.cert_sha256 != cert_sha256(doc.signer):
        raise SignatureInvalid("not the certificate used at sign-in / 非签到时使用的证书")
    await ctx.hub.trust.avalidate(
        doc.signer, "login", ctx.hub.clock.now(), extra_intermediates=doc.certificates
    )


async def _execute_signed(ctx: Ctx, expected: bytes, cmd: Any) -> S.OkOut:
    """A member's signed command: its signature checked over ``expected``, then executed."""
    await _member_cert(ctx, cmd.signature, expected)
    return await execute(ctx, cmd)


async def generate_report(hub: Hub, session_id: str) -> list[Any]:
    loaded = await hub.service.load(session_id, kind="evaluation")
    if loaded is None or loaded.state.status != "signing" or loaded.state.report_sha256:
        return []
    report = ev.build_report(loaded.state, loaded.version, loaded.head_hash)
    raw = canonical_json(report)
    blob = await hub.blobs.put_bytes(raw)
    signature = hub.identity.sign_json(report, hub.clock.now())
    cmd = ev.GenerateReport(actor=ev.SERVER, report_sha256=blob.sha256, signature=signature)
    return await hub.service.execute(session_id, cmd)


async def report_of(hub: Hub, state: ev.EvaluationState) -> tuple[dict[str, Any], str]:
    if state.report_sha256 is None:
        raise E.NotAllowedInState("the report is not ready / 评标报告尚未生成")
    blob = hub.blobs.path(state.report_sha256)
    report: dict[str, Any] = json.loads(blob.read_bytes())
    if hashlib.sha256(canonical_json(report)).hexdigest() != state.report_sha256:
        raise E.NotAllowedInState("stored report damaged / 存储的报告已损坏")
    events = await hub.store.events_after(state.session_id, 0)
    sig = next(e.payload["signature"] for e in events if e.type == "report_generated")
    return report, sig


async def submit_sheet(ctx: Ctx, body: EV.SheetIn) -> S.OkOut:
    """Submit one's review or score sheet for the current stage, signed with one's CA key"""
    expected = EV.sheet_document(ctx.session_id, ctx.who.party_id, body.stage, body.content)
    cmd = ev.SubmitSheet(
        actor=eval_actor(ctx), stage=body.stage, content=body.content, signature=body.signature
    )
    return await _execute_signed(ctx, expected, cmd)


async def get_sheets(ctx: Ctx) -> EV.SheetsOut:
    """One's own sheet, and the others' once one's own is in"""
    loaded = await load_evaluation(ctx)
    stage = ctx.request.match_info["stage"]
    sheets = loaded.state.sheets.get(stage, {})
    me = ctx.who.party_id
    own = sheets.get(me)
    # Eval rule 8: the others' sheets only after one's own is in (the supervisor sees all).
    show = ctx.who.role == "supervisor" or (
        own is not None and me not in loaded.state.reopened.get(stage, [])
    )
    others = [s.model_dump(mode="json") for k, s in sorted(sheets.items()) if k != me and show]
    return EV.SheetsOut(
        stage=stage, own=own.model_dump(mode="json") if own else None, others=others
    )


async def rescore(ctx: Ctx, body: EV.RescoreIn) -> S.OkOut:
    """The chair calls a re-score where an expert deviates beyond the threshold"""
    cmd = ev.CallRescore(actor=eval_actor(ctx), expert_id=body.expert_id, reason=body.reason)
    return await execute(ctx, cmd)


async def summarize(ctx: Ctx) -> S.OkOut:
    """The chair computes the ranking; the server issues the report for signing"""
    records = await ctx.hub.service.execute(ctx.session_id, ev.Summarize(actor=eval_actor(ctx)))
    more = await generate_report(ctx.hub, ctx.session_id)
    return S.OkOut(pos=pos_of(ctx, [*records, *more]))


async def get_report(ctx: Ctx) -> EV.ReportOut:
    """The evaluation report (JSON and text) with the members' signatures"""
    loaded = await load_evaluation(ctx)
    state: ev.EvaluationState = loaded.state
    report, sig = await report_of(ctx.hub, state)
    signatures = {k: v.model_dump(mode="json") for k, v in state.report_signatures.items()}
    return EV.ReportOut(
        report=report,
        text=ev.report_text(report, signatures),
        sha256=state.report_sha256 or "",
        server_signature=sig,
        signatures=signatures,
    )


async def sign_report(ctx: Ctx, body: EV.ReportSignIn) -> S.OkOut:
    """Sign the report: agree, or disagree with a written reason"""
    loaded = await load_evaluation(ctx)
    sha = loaded.state.report_sha256 or ""
    expected = EV.report_document(ctx.session_id, ctx.who.party_id, sha, body.agree, body.reason)
    cmd = ev.SignReport(
        actor=eval_actor(ctx), agree=body.agree, reason=body.reason, signature=body.signature
    )
    return await _execute_signed(ctx, expected, cmd)


async def forms(ctx: Ctx) -> EV.FormsOut:
    """The review forms' definition: criteria with their maxima, pass/fail items per stage"""
    loaded = await load_evaluation(ctx)
    state: ev.EvaluationState = loaded.state
    method = state.config.method
    shape = SC.method_stages(method)
    stages = state.stages()
    return EV.FormsOut(
        method=method.model_dump(mode="json"),
        review_items=[i.model_dump(mode="json") for i in state.config.review_items],
        stages=stages,
        scored_stages=[s for s in stages if s in shape.scored],
        criteria=[c.model_dump(mode="json") for c in shape.criteria(method)],
        items={
            s: [
                i.model_dump(mode="json") for i in shape.items(method, state.config.review_items, s)
            ]
            for s in stages
            if s not in shape.scored
        },
    )


async def request_signature(ctx: Ctx, body: EV.SignRequestIn) -> S.OkOut:
    """Hand a draft (a sheet, or one's answer to the report) to one's room device for signing"""
    await load_evaluation(ctx)
    cmd = ev.RequestSignature(
        actor=eval_actor(ctx),
        kind=body.kind,  # type: ignore[arg-type]
        stage=body.stage,
        content=body.content,
        agree=body.agree,
        reason=body.reason,
    )
    return await execute(ctx, cmd)


# fmt: off
ROUTES: list[Route] = [
    post("/api/evaluations/{session_id}/sheets", submit_sheet, MEMBER_ROLES, body=EV.SheetIn, response=S.OkOut, tag="committee"),
    get("/api/evaluations/{session_id}/sheets/{stage}", get_sheets, (*MEMBER_ROLES, "supervisor"), response=EV.SheetsOut, tag="committee"),
    post("/api/evaluations/{session_id}/rescore", rescore, MEMBER_ROLES, body=EV.RescoreIn, response=S.OkOut, tag="committee"),
    command("/api/evaluations/{session_id}/close-stage", ev.CloseStage, MEMBER_ROLES, "The chair concludes the current stage (every member's sheet in)", tag="committee"),
    post("/api/evaluations/{session_id}/summarize", summarize, MEMBER_ROLES, response=S.OkOut, tag="committee"),
    get("/api/evaluations/{session_id}/report", get_report, (*STAFF, "expert", "room"), response=EV.ReportOut, tag="committee"),
    post("/api/evaluations/{session_id}/report/sign", sign_report, MEMBER_ROLES, body=EV.ReportSignIn, response=S.OkOut, tag="committee"),
    command("/api/evaluations/{session_id}/report/refuse", ev.RefuseToSign, MEMBER_ROLES, "Refuse to sign; without a reason this counts as agreement (实施条例 art. 53)", body=EV.RefuseIn, tag="committee"),
    get("/api/evaluations/{session_id}/forms", forms, (*STAFF, "expert"), response=EV.FormsOut, tag="committee"),
    post("/api/evaluations/{session_id}/to-sign", request_signature, MEMBER_ROLES, body=EV.SignRequestIn, response=S.OkOut, tag="committee"),
]
# fmt: on
