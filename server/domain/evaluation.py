"""Remote cross-region evaluation (远程异地评标) of one lot as a pure state machine.

Like :mod:`server.domain.opening`: the kernel (:mod:`server.domain.machine`) reads this module's
three tables: ``COMMANDS`` (who may send what, in which statuses), ``STATUSES`` (which event
leads to which status) and ``DUE`` (what time alone fires, and when). :func:`decide` takes a
state, a command and ``now`` and answers with events or a
:class:`~server.domain.errors.Refusal`; :func:`evolve` folds an event into the state;
:func:`next_due` names the next instant at which time alone changes something. The state,
commands and refusals are :mod:`server.domain.evaluation_model`, the report
:mod:`server.domain.evaluation_report`, the draw :mod:`server.domain.draw`, review and scoring
:mod:`server.domain.scoring` (the method says which stages it scores); this file decides who may
do what, when, and what the record says about it. Every name stays importable from here.

States (DESIGN.md section 6)::

    draft -> drawing -> convening -> evaluating -> summarizing -> signing -> closed
    any active state <-> suspended; suspended for more than four hours -> void (re-form)

Audiences: ``all`` (everyone admitted to the session: staff, rooms, committee), ``staff``
(host, supervisor, centre), ``supervisor``, ``committee`` (signed-in members), ``expert:<id>``,
``room:<id>``. Bidders are never admitted to an evaluation. Rules are marked ``# Eval rule N``
and listed in DESIGN.md section 6; their tests are in tests/test_evaluation_rules.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, get_args

from schemas.events import NewEvent
from schemas.experts import DrawRequest, DrawResult
from schemas.time import iso, parse_iso
from server.domain import draw as D
from server.domain import errors as E
from server.domain import evaluation_review as R
from server.domain.evaluation_committee import decline as _decline
from server.domain.evaluation_committee import member as _member
from server.domain.evaluation_committee import no_key as _no_key
from server.domain.evaluation_committee import replace as _replace
from server.domain.evaluation_committee import replace_member as _replace_cmd
from server.domain.evaluation_committee import report_decline as _report_decline
from server.domain.evaluation_committee import request_replacement as _request_replacement
from server.domain.evaluation_model import (
    ACTIVE,
    ALL,
    EVALUATION_ROLES,
    SERVER,
    STAFF,
    STAGES,
    SUPERVISOR,
    SUSPEND_LIMIT,
    Actor,
    AddEntropy,
    BeginDraw,
    BidEntry,
    CallRescore,
    CloseStage,
    Command,
    CommitmentMismatch,
    Decline,
    DocumentsClosed,
    Draw,
    DrawState,
    EntropyGiven,
    EntropyMissing,
    EvalConfig,
    EvaluationState,
    ExpertSignIn,
    GenerateReport,
    Join,
    Leave,
    Member,
    NoDeviation,
    NoKey,
    NotAMember,
    NotChair,
    NotSignedIn,
    NotYourDraft,
    RaiseSignals,
    RecordSegment,
    RefuseToSign,
    Replace,
    ReportDecline,
    ReportSignature,
    RequestReplacement,
    RequestSignature,
    Resume,
    Role,
    RoomLink,
    Sheet,
    SheetInvalid,
    SheetsMissing,
    SignReport,
    StartEvaluation,
    Status,
    SubmitSheet,
    Summarize,
    Suspend,
    SuspendedTooLong,
    Tick,
    Timetable,
    Vote,
    Warn,
    WrongRoom,
    WrongStage,
    admitted,
    expert_tag,
    room_tag,
    viewer_tags,
)
from server.domain.evaluation_report import build_report, report_text
from server.domain.machine import (
    CommandRule,
    Due,
    Machine,
    ServerMade,
    join,
    leave,
    raise_signals,
    sha256_json,
)
from server.domain.machine import event as _ev
from server.domain.machine import reason_text as _reason
from server.domain.machine import require_state as _require_state
from server.domain.remit import remit_present

# fmt: off
__all__ = [
    "ACTIVE", "ALL", "COMMANDS", "DUE", "EVALUATION_ROLES", "MACHINE", "SERVER", "STAFF",
    "STAGES", "STATUSES", "SUPERVISOR", "SUSPEND_LIMIT", "Actor", "AddEntropy", "BeginDraw",
    "BidEntry", "CallRescore", "CloseStage", "Command", "CommitmentMismatch", "Decline",
    "DocumentsClosed", "Draw", "DrawState", "EntropyGiven", "EntropyMissing", "EvalConfig",
    "EvaluationState", "ExpertSignIn", "GenerateReport", "Join", "Leave", "Member",
    "NoDeviation", "NoKey", "NotAMember", "NotChair", "NotSignedIn", "NotYourDraft",
    "RaiseSignals", "RecordSegment", "RefuseToSign", "Replace", "ReportDecline",
    "ReportSignature", "RequestReplacement", "RequestSignature", "Resume", "Role", "RoomLink", "Sheet", "SheetInvalid", "SheetsMissing",
    "SignReport", "StartEvaluation", "Status", "SubmitSheet", "Summarize", "Suspend",
    "SuspendedTooLong", "Tick", "Timetable", "Vote", "Warn", "WrongRoom", "WrongStage",
    "admitted", "build_report", "decide", "documents_open", "draft_for", "evolve", "expert_tag",
    "next_due", "raise_signals", "report_text", "room_tag", "sha256_json", "viewer_tags",
]
# fmt: on

EVERY: tuple[Status, ...] = get_args(Status)
ANYONE = None
MEMBER = ("expert",)
"""The committee's own commands: the status is checked first, then the role, then (in the
handler) that the sender is a signed-in member of this committee."""


# --- helpers --------------------------------------------------------------------------------------


def _signed_in_member(state: EvaluationState, cmd: Command) -> Member:
    m = _member(state, cmd.actor.id)
    if m.status != "signed_in":
        raise NotSignedIn(cmd.actor.id)
    return m


def _require_chair(state: EvaluationState, cmd: Command) -> None:
    _signed_in_member(state, cmd)
    if state.chair != cmd.actor.id:
        raise NotChair()


def _member_view(m: Member) -> dict[str, Any]:
    return m.model_dump(mode="json")


# --- deciding -------------------------------------------------------------------------------------


def _void(state: EvaluationState, now: datetime) -> list[NewEvent]:
    """Eval rule 9: suspended for more than four hours -> void, re-form the committee."""
    assert state.suspended_at is not None
    return [
        _ev(
            "evaluation_void",
            SERVER,
            ALL,
            reason="suspended_over_4h",
            suspended_at=iso(state.suspended_at),
        )
    ]


def _void_at(state: EvaluationState) -> datetime | None:
    if state.status == "suspended" and state.suspended_at is not None:
        return state.suspended_at + SUSPEND_LIMIT
    return None


def _absences(state: EvaluationState, now: datetime) -> list[NewEvent]:
    """Eval rule 5: a member not signed in by the deadline is recorded absent and replaced."""
    events: list[NewEvent] = []
    current = state
    for m in list(state.members.values()):
        if m.status == "drawn" and m.due_by and now >= parse_iso(m.due_by):
            absent = _ev("member_absent", SERVER, SUPERVISOR, expert_id=m.id)
            events.append(absent)
            current = evolve(current, absent, now)
            if m.kind != "expert":  # an owner representative is appointed, not drawn
                continue
            try:
                step = _replace(current, m.id, "absent / 缺席", now)
            except E.Refusal as exc:  # no spare left: the absence stands, the start waits
                step = [
                    _ev(
                        "replacement_failed",
                        SERVER,
                        SUPERVISOR,
                        expert_id=m.id,
                        code=exc.code,
                        detail=exc.detail,
                    )
                ]
            events += step
            for e in step:
                current = evolve(current, e, now)
    return events


def _sign_in_due(state: EvaluationState) -> datetime | None:
    """The first sign-in deadline of a member still expected (while convening)."""
    if state.status != "convening":
        return None
    dues = [parse_iso(m.due_by) for m in state.members.values() if m.status == "drawn" and m.due_by]
    return min(dues) if dues else None


def _room_link(state: EvaluationState, cmd: RoomLink, now: datetime) -> list[NewEvent]:
    room = state.rooms.get(cmd.actor.id)
    if room is None:
        raise E.NotPermitted("this room is not drawn for this evaluation / 本评标室未被抽中")
    if bool(room.get("up")) == cmd.up:
        return []
    audience = ["supervisor", room_tag(cmd.actor.id)]
    return [_ev("room_link", cmd.actor, audience, room_id=cmd.actor.id, up=cmd.up)]


def _begin_draw(state: EvaluationState, cmd: BeginDraw, now: datetime) -> list[NewEvent]:
    # Eval rule 1: the server commits to its random value before anyone adds entropy.
    return [_ev("draw_committed", cmd.actor, ALL, commitment=cmd.commitment)]


def _add_entropy(state: EvaluationState, cmd: AddEntropy, now: datetime) -> list[NewEvent]:
    assert state.draw is not None
    if cmd.actor.role in state.draw.entropy:
        raise EntropyGiven()
    if cmd.actor.role == "supervisor" and state.present.get(cmd.actor.id) != "supervisor":
        raise E.SupervisorAbsent("join the session first / 请先进入会话")
    return [_ev("draw_entropy", cmd.actor, ALL, role=cmd.actor.role, value=cmd.value)]


def _draw(state: EvaluationState, cmd: Draw, now: datetime) -> list[NewEvent]:
    assert state.draw is not None
    if set(state.draw.entropy) != {"host", "supervisor"}:
        raise EntropyMissing()
    server_random = bytes.fromhex(cmd.server_random)
    # Eval rule 1: the revealed value must be the one committed to.
    if D.commitment(server_random) != state.draw.commitment:
        raise CommitmentMismatch()
    if not remit_present(state.present, cmd.supervisors_in_remit):  # seed 002 二(一)四
        raise E.SupervisorAbsent()
    request = _request_with_avoidance(state)
    result = D.run_draw(
        cmd.pool,
        cmd.sites,
        request,
        server_random,
        bytes.fromhex(state.draw.entropy["supervisor"]),
        bytes.fromhex(state.draw.entropy["host"]),
    )
    full = result.model_dump(mode="json")
    events = [
        # Eval rule 2 (两随机四不知): identities and rooms go to the supervisor only.
        _ev(
            "draw_completed",
            SERVER,
            SUPERVISOR,
            server_random=cmd.server_random,
            request=request.model_dump(mode="json"),
            pool_blob=cmd.pool_blob,
            result=full,
        ),
        _ev(
            "committee_drawn",
            SERVER,
            ALL,
            server_random=cmd.server_random,
            seed=result.seed,
            pool_sha256=result.pool_sha256,
            members=len(result.committee) + request.owner_reps,
            rooms=len({m.room_id for m in result.committee}),
        ),
    ]
    due_by = iso(state.timetable.convene_at + timedelta(minutes=state.timetable.grace_minutes))
    for room in _rooms_of(result):
        events.append(
            _ev("room_assigned", SERVER, ["supervisor", room_tag(room["room_id"])], **room)
        )
    for m in result.committee:
        events.append(
            _ev(
                "member_drawn",
                SERVER,
                ["supervisor"],
                expert_id=m.expert_id,
                kind="expert",
                category=m.category,
                site_id=m.site_id,
                room_id=m.room_id,
                due_by=due_by,
            )
        )
    for rep in state.config.owner_reps:  # appointed, not drawn; they sit at the lead site
        events.append(
            _ev(
                "member_drawn",
                SERVER,
                ["supervisor"],
                expert_id=rep,
                kind="owner_rep",
                category="",
                site_id=result.lead.site_id,
                room_id=result.lead.room_id,
                due_by=due_by,
            )
        )
    return events


def _request_with_avoidance(state: EvaluationState) -> DrawRequest:
    """Eval rule 3 (回避): bidders and the tenderer are always avoided, whatever the request says."""
    req = state.config.draw
    avoid = set(req.avoid_credit_codes) | set(state.bids)
    if state.tenderer_credit_code:
        avoid.add(state.tenderer_credit_code)
    names = set(req.avoid_names) | {b.name for b in state.bids.values() if b.name}
    if state.tenderer_name:
        names.add(state.tenderer_name)
    update = {
        "avoid_credit_codes": sorted(avoid),
        "avoid_names": sorted(names),
        "session_id": state.session_id,
    }
    return DrawRequest.model_validate({**req.model_dump(mode="json"), **update})


def _rooms_of(result: DrawResult) -> list[dict[str, Any]]:
    """The lead room and the drawn secondary rooms (两随机: rooms are drawn too)."""
    return [
        {"room_id": s.room_id, "site_id": s.site_id, "city": s.city, "role": s.role}
        for s in [result.lead, *result.secondary_sites]
    ]


def _expert_sign_in(state: EvaluationState, cmd: ExpertSignIn, now: datetime) -> list[NewEvent]:
    m = _member(state, cmd.expert_id)
    if m.room_id != cmd.actor.id:
        raise WrongRoom()
    if m.status == "signed_in":
        raise E.AlreadyDone("signed in / 已签到")
    # Eval rule 5: late is recorded against the expert.
    late = now > state.timetable.convene_at
    return [
        # Eval rule 2: an identity is revealed when its owner signs in.
        _ev(
            "member_signed_in",
            cmd.actor,
            ALL,
            expert_id=m.id,
            name=cmd.name,
            kind=m.kind,
            room_id=m.room_id,
            site_id=m.site_id,
            cert_sha256=cmd.cert_sha256,
            late=late,
            nonce=cmd.nonce,
            signature=cmd.signature,
        )
    ]


def _start(state: EvaluationState, cmd: StartEvaluation, now: datetime) -> list[NewEvent]:
    # Eval rule 4: a supervisor of the project's remit present, every member signed in.
    if not remit_present(state.present, cmd.supervisors_in_remit):
        raise E.SupervisorAbsent()
    missing = [m.id for m in state.committee() if m.status != "signed_in"]
    if missing:
        raise NotSignedIn(f"{len(missing)} not signed in / 未签到")
    members = state.committee()  # absences without a spare leave the committee short
    D.check_committee(
        sum(1 for m in members if m.kind == "expert"),
        sum(1 for m in members if m.kind == "owner_rep"),
    )
    return [_ev("evaluation_started", cmd.actor, ALL, members=len(state.committee()))]


def _vote(state: EvaluationState, cmd: Vote, now: datetime) -> list[NewEvent]:
    _signed_in_member(state, cmd)
    if state.stage != "chair":
        raise WrongStage("the chair has been elected / 主任已推选")
    candidate = _member(state, cmd.candidate)
    if candidate.status != "signed_in":
        raise NotSignedIn(cmd.candidate)
    events = [_ev("chair_vote", cmd.actor, ["committee", "staff"], candidate=candidate.id)]
    votes = {**state.votes, cmd.actor.id: candidate.id}
    size = len(state.committee())
    tally: dict[str, int] = {}
    for c in votes.values():
        tally[c] = tally.get(c, 0) + 1
    # Eval rule 6: the chair is whoever more than half the committee votes for.
    winner = [c for c, n in tally.items() if 2 * n > size]
    if winner:
        events.append(
            _ev("chair_elected", SERVER, ALL, chair=winner[0], votes=tally[winner[0]], of=size)
        )
        events.append(_ev("stage_opened", SERVER, ALL, stage=state.stages()[0]))
    return events


def _submit_sheet(state: EvaluationState, cmd: SubmitSheet, now: datetime) -> list[NewEvent]:
    m = _signed_in_member(state, cmd)
    round_ = _sheet_checks(state, m, cmd.stage, cmd.content)
    digest = sha256_json(cmd.content)
    return [
        _ev(
            "sheet_submitted",
            cmd.actor,
            ["committee", "staff"],
            expert_id=m.id,
            stage=cmd.stage,
            sha256=digest,
            round=round_,
        ),
        # Eval rule 8: the content goes to its author and the supervisor only; other members see
        # it (through the views) once their own sheet for the stage is in.
        _ev(
            "sheet_content",
            cmd.actor,
            ["supervisor", expert_tag(m.id)],
            expert_id=m.id,
            stage=cmd.stage,
            content=cmd.content,
            sha256=digest,
            signature=cmd.signature,
            round=round_,
        ),
    ]


def _sheet_checks(state: EvaluationState, m: Member, stage: str, content: dict[str, Any]) -> int:
    """What a sheet must satisfy before it is accepted (or handed to the room for signing);
    returns the round it would be."""
    if stage != state.stage or state.stage == "chair":
        raise WrongStage(f"current stage is {state.stage}")
    previous = state.sheets.get(stage, {}).get(m.id)
    if previous is not None and m.id not in state.reopened.get(stage, []):
        raise E.AlreadyDone("sheet submitted / 评审表已提交")
    # Eval rule 7: every sheet is complete and within the maxima before it is accepted.
    R.check_sheet(
        state, stage, R.bids_in_stage(state, stage), R.parse_sheet(state, stage, m.id, content)
    )
    return previous.round + 1 if previous else 1


def _request_signature(
    state: EvaluationState, cmd: RequestSignature, now: datetime
) -> list[NewEvent]:
    m = _signed_in_member(state, cmd)
    payload: dict[str, Any] = {"request": state.sign_requests + 1, "expert_id": m.id}
    if cmd.kind == "sheet":
        _require_state(state, "evaluating")
        round_ = _sheet_checks(state, m, cmd.stage, cmd.content)
        payload |= {"stage": cmd.stage, "content": cmd.content, "round": round_}
        payload["sha256"] = sha256_json(cmd.content)
    else:
        _require_state(state, "signing")
        if state.report_sha256 is None:
            raise E.NotAllowedInState("the report is not ready / 评标报告尚未生成")
        if m.id in state.report_signatures:
            raise E.AlreadyDone()
        if not cmd.agree and not cmd.reason.strip():  # Eval rule 11, checked before the room
            raise E.ReasonRequired("disagreement needs a written reason / 不同意须书面说明理由")
        payload |= {"report_sha256": state.report_sha256, "agree": cmd.agree, "reason": cmd.reason}
    # The draft is not the record: only its author and the room device that signs it see it.
    audience = [expert_tag(m.id), room_tag(m.room_id)]
    return [_ev(f"{cmd.kind}_to_sign", cmd.actor, audience, **payload)]


def draft_for(state: EvaluationState, role: str, party_id: str, expert_id: str) -> dict[str, Any]:
    """The draft waiting for ``expert_id``'s signature, as ``role``/``party_id`` may ask for it:
    the expert, or the room device the expert sits at ({} when nothing waits)."""
    m = state.members.get(expert_id)
    mine = role == "expert" and party_id == expert_id
    at_room = role == "room" and m is not None and m.room_id == party_id
    if not (mine or at_room):
        raise NotYourDraft()
    return dict(state.to_sign.get(expert_id, {}))


def documents_open(state: EvaluationState, role: str, party_id: str) -> None:
    """The bids' documents are for the committee's signed-in members once the evaluation has
    started (招标投标法 art. 44: the committee reviews; nobody else before the result)."""
    if role != "expert":
        raise NotAMember()
    m = state.members.get(party_id)
    if m is None or m.status != "signed_in":
        raise NotAMember(party_id)
    started = state.status in ("evaluating", "summarizing", "signing", "closed") or (
        state.status == "suspended" and state.suspended_from in ACTIVE[2:]
    )
    if not started:
        raise DocumentsClosed(f"status is {state.status}")


def _call_rescore(state: EvaluationState, cmd: CallRescore, now: datetime) -> list[NewEvent]:
    _require_chair(state, cmd)
    stage = state.stage or ""
    sheets = state.sheets.get(stage, {})
    if cmd.expert_id not in sheets:
        raise SheetsMissing(cmd.expert_id)
    # Eval rule 10: a re-score only where the expert deviates beyond the set threshold.
    members = [m.id for m in state.committee()]
    if any(mid not in sheets for mid in members):  # deviations would show scores too early
        raise SheetsMissing("every member's sheet first / 须全部提交后")
    if cmd.expert_id in state.reopened.get(stage, []):
        raise E.AlreadyDone("a re-score is already pending / 已要求复核")
    mine = [d for d in R.deviations(state, stage) if d["expert"] == cmd.expert_id]
    if not mine:
        raise NoDeviation(cmd.expert_id)
    return [
        _ev(
            "rescore_called",
            cmd.actor,
            ["committee", "staff"],
            expert_id=cmd.expert_id,
            stage=stage,
            reason=_reason(cmd.reason),
            deviations=mine,
        )
    ]


def _close_stage(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_chair(state, cmd)
    stage = state.stage or ""
    if stage == "chair":
        raise WrongStage()
    members = [m.id for m in state.committee()]
    sheets = state.sheets.get(stage, {})
    reopened = state.reopened.get(stage, [])
    if any(mid not in sheets for mid in members) or reopened:
        raise SheetsMissing(f"{len([x for x in members if x not in sheets]) + len(reopened)}")
    outcome = R.stage_outcome(state, stage, R.bids_in_stage(state, stage))
    events = [_ev("stage_concluded", cmd.actor, ["committee", "staff"], stage=stage, **outcome)]
    stages = state.stages()
    nxt = stages[stages.index(stage) + 1] if stages.index(stage) + 1 < len(stages) else None
    if nxt is not None:
        events.append(_ev("stage_opened", SERVER, ALL, stage=nxt))
    else:
        events.append(_ev("evaluation_summarizing", SERVER, ALL))
    return events


def _summarize(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_chair(state, cmd)
    assert isinstance(cmd, Summarize)
    ranking = R.ranking(state, cmd.adjustments)
    return [
        _ev(
            "ranking_computed",
            cmd.actor,
            ["committee", "staff"],
            ranking=ranking,
            sha256=sha256_json(ranking),
        )
    ]


def _generate_report(state: EvaluationState, cmd: GenerateReport, now: datetime) -> list[NewEvent]:
    if state.report_sha256 is not None:
        raise E.AlreadyDone()
    return [
        _ev(
            "report_generated",
            SERVER,
            ALL,
            sha256=cmd.report_sha256,
            signature=cmd.signature,
        )
    ]


def _report_response(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    m = _signed_in_member(state, cmd)
    if state.report_sha256 is None:
        raise E.NotAllowedInState("the report is not ready / 评标报告尚未生成")
    if m.id in state.report_signatures:
        raise E.AlreadyDone()
    if isinstance(cmd, SignReport):
        # Eval rule 11: a member who disagrees signs with a written reason.
        reason = cmd.reason  # kept exactly as signed
        if not cmd.agree and not reason.strip():
            raise E.ReasonRequired("disagreement needs a written reason / 不同意须书面说明理由")
        payload: dict[str, Any] = {
            "expert_id": m.id,
            "agree": cmd.agree,
            "reason": reason,
            "signature": cmd.signature,
            "deemed": False,
        }
    else:
        assert isinstance(cmd, RefuseToSign)
        reason = cmd.reason.strip()  # a refusal is not signed: blank means no reason
        # Eval rule 11: refusing to sign without a reason counts as agreement (实施条例 art. 53).
        payload = {
            "expert_id": m.id,
            "agree": not reason,
            "reason": reason,
            "signature": None,
            "deemed": not reason,
            "refused": True,
        }
    events = [_ev("report_signed", cmd.actor, ALL, **payload)]
    done = len(state.report_signatures) + 1 == len(state.committee())
    if done:
        events.append(_ev("evaluation_closed", SERVER, ALL, report_sha256=state.report_sha256))
    return events


def _warn(state: EvaluationState, cmd: Warn, now: datetime) -> list[NewEvent]:
    if not cmd.text.strip():
        raise E.ReasonRequired("the warning is empty / 预警内容为空")
    # Eval rule 12: a supervisor's warning reaches every participant; it changes nothing else.
    return [
        _ev("supervisor_warning", cmd.actor, ALL, text=cmd.text.strip(), id=len(state.warnings) + 1)
    ]


def _suspend(state: EvaluationState, cmd: Suspend, now: datetime) -> list[NewEvent]:
    return [
        _ev("evaluation_suspended", cmd.actor, ALL, reason=_reason(cmd.reason), status=state.status)
    ]


def _resume(state: EvaluationState, cmd: Resume, now: datetime) -> list[NewEvent]:
    assert state.suspended_at is not None
    # Eval rule 9: continue only if the fault is fixed within four hours.
    if now >= state.suspended_at + SUSPEND_LIMIT:
        raise SuspendedTooLong()
    return [
        _ev(
            "evaluation_resumed",
            cmd.actor,
            ALL,
            reason=_reason(cmd.reason),
            status=state.suspended_from,
        )
    ]


def _raise_signals(state: EvaluationState, cmd: RaiseSignals, now: datetime) -> list[NewEvent]:
    return raise_signals(state.signals_raised, cmd, cmd.signals)


def _segment(state: EvaluationState, cmd: RecordSegment, now: datetime) -> list[NewEvent]:
    if cmd.room_id not in state.rooms and cmd.room_id not in state.present:
        raise E.NotPermitted("unknown room / 未知评标室")
    # Eval rule 13: every recorded segment's hash enters the log as the segment is written.
    return [
        _ev(
            "media_segment",
            SERVER,
            ["supervisor"],
            **cmd.model_dump(exclude={"actor"} | ({"backend"} if cmd.backend is None else set())),
        )
    ]


# --- the tables -----------------------------------------------------------------------------------

UNPAUSED: tuple[Status, ...] = tuple(s for s in EVERY if s != "suspended")
_STAFF = ("host", "supervisor", "centre")
_PLANNERS = ("centre", "host")

COMMANDS: dict[type[Command], CommandRule] = {
    # command             roles                     statuses                         handler
    Tick: CommandRule(ANYONE, EVERY, None),
    Join: CommandRule(_STAFF, EVERY, join),
    Leave: CommandRule(ANYONE, EVERY, leave),
    RoomLink: CommandRule(("room",), EVERY, _room_link),
    BeginDraw: CommandRule(("host", "centre"), ("draft",), _begin_draw),  # Eval rule 1
    AddEntropy: CommandRule(("host", "supervisor"), ("drawing",), _add_entropy),
    Draw: CommandRule(("server",), ("drawing",), _draw),
    Decline: CommandRule(_PLANNERS, ("convening",), _decline),
    ExpertSignIn: CommandRule(("room",), ("convening", "evaluating"), _expert_sign_in),
    NoKey: CommandRule(("room",), ("convening",), _no_key),
    Replace: CommandRule(_PLANNERS, ("convening",), _replace_cmd),
    ReportDecline: CommandRule(_PLANNERS, ("convening",), _report_decline),  # Eval rule 2
    RequestReplacement: CommandRule(_PLANNERS, ("convening",), _request_replacement),
    StartEvaluation: CommandRule(("host",), ("convening",), _start),  # Eval rule 4
    Vote: CommandRule(MEMBER, ("evaluating",), _vote, state_first=True),  # Eval rule 6
    SubmitSheet: CommandRule(MEMBER, ("evaluating",), _submit_sheet, state_first=True),
    RequestSignature: CommandRule(MEMBER, UNPAUSED, _request_signature),  # the kind decides
    CallRescore: CommandRule(MEMBER, ("evaluating",), _call_rescore, state_first=True),
    CloseStage: CommandRule(MEMBER, ("evaluating",), _close_stage, state_first=True),
    Summarize: CommandRule(MEMBER, ("summarizing",), _summarize, state_first=True),
    GenerateReport: CommandRule(("server",), ("signing",), _generate_report),
    SignReport: CommandRule(MEMBER, ("signing",), _report_response, state_first=True),
    RefuseToSign: CommandRule(MEMBER, ("signing",), _report_response, state_first=True),
    Warn: CommandRule(("supervisor",), EVERY, _warn),  # Eval rule 12
    Suspend: CommandRule(("host",), ACTIVE, _suspend),  # Eval rule 9
    Resume: CommandRule(("host",), ("suspended",), _resume),
    RecordSegment: CommandRule(("server",), EVERY, _segment),  # Eval rule 13
    RaiseSignals: CommandRule(("server",), EVERY, _raise_signals),
}
"""Who may send each command, in which statuses; the handler checks what is finer."""


def _resumed(state: EvaluationState, event: NewEvent, at: datetime | None) -> str:
    return state.suspended_from or "convening"


STATUSES: dict[str, str | Any] = {
    "draw_committed": "drawing",
    "committee_drawn": "convening",
    "evaluation_started": "evaluating",
    "evaluation_summarizing": "summarizing",
    "ranking_computed": "signing",
    "evaluation_closed": "closed",
    "evaluation_suspended": "suspended",
    "evaluation_resumed": _resumed,  # back to the status it was suspended from
    "evaluation_void": "void",
}
"""Which events change the status, and to what; every other event leaves it as it is."""

DUE: list[Due] = [
    Due("suspended_too_long", _void_at, _void),  # Eval rule 9
    Due("sign_in_deadline", _sign_in_due, _absences),  # Eval rule 5
]
"""What time alone does, and when (Prozorro's chronograph): both next_due and the tick."""


# --- evolving -------------------------------------------------------------------------------------


def _fold(
    s: EvaluationState, event: NewEvent, at: datetime | None, before: EvaluationState
) -> None:
    """The payload's bookkeeping (the status is already the table's)."""
    p = event.payload
    t = event.type
    if t == "room_link":
        s.rooms.setdefault(p["room_id"], {})["up"] = p["up"]
    elif t == "draw_committed":
        s.draw = DrawState(commitment=p["commitment"])
    elif t == "draw_entropy":
        assert s.draw is not None
        s.draw.entropy[p["role"]] = p["value"]
    elif t == "draw_completed":
        assert s.draw is not None
        s.draw.server_random = p["server_random"]
        s.draw.result = p["result"]
        s.draw.seed = p["result"]["seed"]
        s.draw.pool_sha256 = p["result"]["pool_sha256"]
        s.draw.pool_blob = p["pool_blob"]
    elif t == "room_assigned":
        s.rooms[p["room_id"]] = {"site_id": p["site_id"], "role": p["role"], "up": False}
    elif t == "member_drawn":
        s.members[p["expert_id"]] = Member(
            id=p["expert_id"],
            kind=p.get("kind", "expert"),
            category=p["category"],
            site_id=p["site_id"],
            room_id=p["room_id"],
            due_by=p["due_by"],
        )
    elif t == "member_declined":
        s.members[p["expert_id"]].status = "declined"
    elif t == "member_absent":
        s.members[p["expert_id"]].status = "absent"
    elif t == "member_no_key":
        s.members[p["expert_id"]].status = "no_key"
    elif t == "member_replaced":
        old = s.members[p["expert_id"]]
        if old.status in ("drawn", "no_key"):
            old.status = "replaced"
        old.replaced_by = p["by"]
        assert s.draw is not None
        s.draw.result = p["result"]
        s.members[p["by"]] = Member(
            id=p["by"],
            category=p["category"],
            site_id=p["site_id"],
            room_id=p["room_id"],
            due_by=p["due_by"],
            replaces=old.id,
        )
        s.rooms.setdefault(p["room_id"], {"site_id": p["site_id"], "up": False})
    elif t == "member_signed_in":
        m = s.members[p["expert_id"]]
        m.status = "signed_in"
        m.name = p["name"]
        m.cert_sha256 = p["cert_sha256"]
        m.late = p["late"]
        m.signed_in_at = iso(at) if at else None
    elif t == "evaluation_started":
        s.stage = "chair"
    elif t == "chair_vote":
        s.votes[event.actor.split(":", 1)[1]] = p["candidate"]
    elif t == "chair_elected":
        s.chair = p["chair"]
    elif t == "stage_opened":
        s.stage = p["stage"]
    elif t in ("sheet_to_sign", "report_to_sign"):
        s.sign_requests = p["request"]
        s.to_sign[p["expert_id"]] = {"kind": t.removesuffix("_to_sign"), **p}
    elif t == "sheet_content":
        if s.to_sign.get(p["expert_id"], {}).get("stage") == p["stage"]:
            del s.to_sign[p["expert_id"]]
        s.sheets.setdefault(p["stage"], {})[p["expert_id"]] = Sheet(
            expert=p["expert_id"],
            stage=p["stage"],
            sha256=p["sha256"],
            signature=p["signature"],
            content=p["content"],
            at=iso(at) if at else "",
            round=p["round"],
        )
        reopened = s.reopened.get(p["stage"], [])
        if p["expert_id"] in reopened:
            reopened.remove(p["expert_id"])
    elif t == "rescore_called":
        s.reopened.setdefault(p["stage"], []).append(p["expert_id"])
        s.rescores.append(dict(p))
    elif t == "stage_concluded":
        s.outcomes[p["stage"]] = {k: v for k, v in p.items() if k != "stage"}
    elif t == "evaluation_summarizing":
        s.stage = None
    elif t == "ranking_computed":
        s.ranking = p["ranking"]
        s.ranking_sha256 = p["sha256"]
    elif t == "report_generated":
        s.report_sha256 = p["sha256"]
    elif t == "report_signed":
        if s.to_sign.get(p["expert_id"], {}).get("kind") == "report":
            del s.to_sign[p["expert_id"]]
        s.report_signatures[p["expert_id"]] = ReportSignature(
            agree=p["agree"],
            reason=p["reason"],
            signature=p["signature"],
            deemed=p["deemed"],
            at=iso(at) if at else "",
        )
    elif t == "supervisor_warning":
        s.warnings.append({"id": p["id"], "text": p["text"], "by": event.actor})
    elif t == "evaluation_suspended":
        s.suspended_from = before.status
        s.suspended_at = at
    elif t == "evaluation_resumed":
        if s.status == "convening" and before.suspended_at and at:
            _shift_due(s, at - before.suspended_at)
        s.suspended_from = None
        s.suspended_at = None
    elif t == "evaluation_void":
        s.void_reason = p["reason"]
    elif t == "signal":
        s.signals_raised.append(p["id"])
    elif t == "media_segment":
        s.segments += 1
        room = s.rooms.setdefault(p["room_id"], {})
        room["segments"] = max(int(room.get("segments", 0)), p["index"] + 1)


def _shift_due(s: EvaluationState, shift: timedelta) -> None:
    """Sign-in deadlines move by the time the evaluation was suspended."""
    for m in s.members.values():
        if m.status == "drawn" and m.due_by:
            m.due_by = iso(parse_iso(m.due_by) + shift)


# --- the machine ----------------------------------------------------------------------------------


def _rooms_linked(state: EvaluationState) -> list[tuple[str, str]]:
    return [("room", room) for room, r in state.rooms.items() if r.get("up")]


def _viewer_tags(state: EvaluationState, role: str, party_id: str) -> frozenset[str] | None:
    if role not in EVALUATION_ROLES or not admitted(state, role, party_id):
        return None
    return viewer_tags(role, party_id)


MACHINE = Machine(
    kind="evaluation",
    state=EvaluationState,
    commands=COMMANDS,
    statuses=STATUSES,
    fold=_fold,
    due=DUE,
    paused_detail="the evaluation is suspended / 评标已暂停",
    made=ServerMade(Actor, Tick, Join, Leave, RaiseSignals, link=RoomLink),
    viewer_tags_of=_viewer_tags,
    supervision_of=lambda s: {"opening_session_id": s.opening_session_id, "rooms": sorted(s.rooms)},
    before_deadline_of=lambda s: False,
    record_pending_of=lambda s: False,
    present_parties=_rooms_linked,
)

decide = MACHINE.decide
evolve = MACHINE.evolve
next_due = MACHINE.next_due
