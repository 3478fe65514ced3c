"""The committee's members after the draw (eval rules 2 and 5): declines, replacements by the
next spare, a missing key, and planners' reports about members that never reveal who was drawn.

两随机四不知: who was drawn stays with the supervisor until each member signs in. The host and
the centre may still pass on what they hear ("expert E017 called to decline"), but whatever id
they name, a report is answered the same and leaves the same trace where they can see it: two
events for the supervisor only (so the sequence moves by the same amount), no change in any
count they are shown. What the report did is for the supervisor to read.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from schemas.events import NewEvent
from schemas.experts import DrawResult
from schemas.time import iso
from server.domain import draw as D
from server.domain import errors as E
from server.domain.evaluation_model import (
    SERVER,
    SUPERVISOR,
    Decline,
    EvaluationState,
    Member,
    NoKey,
    NotAMember,
    Replace,
    ReportDecline,
    RequestReplacement,
    expert_tag,
    room_tag,
)
from server.domain.machine import event as _ev
from server.domain.machine import reason_text as _reason


def member(state: EvaluationState, member_id: str) -> Member:
    """A member who still counts (drawn, signed in, no key), or NOT_A_MEMBER."""
    m = state.members.get(member_id)
    if m is None or m.status in ("declined", "absent", "replaced"):
        raise NotAMember(member_id)
    return m


def member_audience(m: Member) -> list[str]:
    return ["supervisor", expert_tag(m.id), room_tag(m.room_id)] if m.room_id else SUPERVISOR


def replace(state: EvaluationState, expert_id: str, reason: str, now: datetime) -> list[NewEvent]:
    """Draw the next spare for ``expert_id`` (Eval rule 5), recorded with the reason."""
    assert state.draw is not None and state.draw.result is not None
    result = DrawResult.model_validate(state.draw.result)
    new, updated = D.replace(result, None, expert_id, reason)
    start = max(now, state.timetable.convene_at)  # a spare called early is due with everyone
    due_by = iso(start + timedelta(minutes=state.timetable.grace_minutes))
    return [
        _ev(
            "member_replaced",
            SERVER,
            SUPERVISOR,
            expert_id=expert_id,
            reason=reason,
            by=new.expert_id,
            category=new.category,
            site_id=new.site_id,
            room_id=new.room_id,
            due_by=due_by,
            result=updated.model_dump(mode="json"),
        )
    ]


def decline(state: EvaluationState, cmd: Decline, now: datetime) -> list[NewEvent]:
    """A drawn member declines: recorded, and the next spare drawn (strict: refusals name why)."""
    reason = _reason(cmd.reason)  # before the lookup: a refusal must not tell who was drawn
    m = member(state, cmd.expert_id)
    if m.status != "drawn":
        raise E.AlreadyDone("the expert has signed in / 专家已签到")
    return [
        _ev("member_declined", cmd.actor, SUPERVISOR, expert_id=m.id, reason=reason),
        *replace(state, m.id, f"declined / 拒绝参加: {reason}", now),
    ]


def no_key(state: EvaluationState, cmd: NoKey, now: datetime) -> list[NewEvent]:
    m = state.members.get(cmd.expert_id)
    if m is None or m.room_id != cmd.actor.id:
        raise NotAMember(cmd.expert_id)  # the same answer for another room's member
    if m.status != "drawn":
        raise E.AlreadyDone(f"the member is {m.status} / 该成员状态为 {m.status}")
    # Eval rule 2: the record names the expert to the supervisor, the expert and the room only.
    return [_ev("member_no_key", cmd.actor, member_audience(m), expert_id=m.id)]


def replace_member(state: EvaluationState, cmd: Replace, now: datetime) -> list[NewEvent]:
    """Replace a member who has not signed in by the next spare (strict: refusals name why)."""
    reason = _reason(cmd.reason)  # before the lookup: a refusal must not tell who was drawn
    m = member(state, cmd.expert_id)
    if m.status == "signed_in":
        raise E.AlreadyDone("the expert has signed in / 专家已签到")
    return replace(state, m.id, reason, now)


# --- planners' reports: the same answer whoever they name ------------------------------------------


def report_decline(state: EvaluationState, cmd: ReportDecline, now: datetime) -> list[NewEvent]:
    """Eval rule 2 with rule 5: a planner's decline report, applied to a drawn member (declined,
    next spare drawn), recorded as not applied otherwise; two supervisor-only events each way."""
    reason = _reason(cmd.reason)
    strict = Decline(actor=cmd.actor, expert_id=cmd.expert_id, reason=reason)
    try:
        return decline(state, strict, now)
    except E.Refusal as exc:  # not a member, signed in, an owner representative, no spare left
        reported = _ev(
            "decline_reported", cmd.actor, SUPERVISOR, expert_id=cmd.expert_id, reason=reason
        )
        return [reported, _not_applied(cmd.expert_id, exc)]


def request_replacement(
    state: EvaluationState, cmd: RequestReplacement, now: datetime
) -> list[NewEvent]:
    """Eval rule 2 with rule 5: a planner's request to replace a member who has not signed in;
    the request and its outcome (the replacement, or not applied): two supervisor-only events."""
    reason = _reason(cmd.reason)
    requested = _ev(
        "replacement_requested", cmd.actor, SUPERVISOR, expert_id=cmd.expert_id, reason=reason
    )
    strict = Replace(actor=cmd.actor, expert_id=cmd.expert_id, reason=reason)
    try:
        return [requested, *replace_member(state, strict, now)]
    except E.Refusal as exc:  # whatever it was (not a member, signed in, no spare): recorded
        return [requested, _not_applied(cmd.expert_id, exc)]


def _not_applied(expert_id: str, why: E.Refusal) -> NewEvent:
    """For the supervisor: the report changed nothing, and why (a planner naming experts who
    are not on the committee is worth the supervisor's attention)."""
    return _ev(
        "report_not_applied", SERVER, SUPERVISOR, expert_id=expert_id, code=why.code, detail=why.en
    )
