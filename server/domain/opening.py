"""The no-show opening (不见面开标) of one lot as a pure state machine.

Theory of operation (like h11's ``_state.py``): everything that decides what may happen in an
opening lives in this file, and nothing here does I/O or reads a clock. The outside world hands
in a state, a command and ``now``; :func:`decide` answers with the events that happen, or raises
a :class:`~server.domain.errors.Refusal`. :func:`evolve` folds an event into the state, so the
state is always the fold of the session's event log (DESIGN.md section 4), and :func:`next_due`
names the next instant at which time alone changes something (Prozorro's ``next_check``).

The machine is three tables read by the kernel (:mod:`server.domain.machine`): ``COMMANDS`` (who
may send what, in which statuses), ``STATUSES`` (which event leads to which status) and ``DUE``
(what time alone fires, and when). The state and commands are in
:mod:`server.domain.opening_model`, the table and record documents in
:mod:`server.domain.opening_record`; every name stays importable from here.

The rules of DESIGN.md section 5 are marked ``# Rule N`` where they are enforced.

States::

    draft -> published -> sign_in -> sealed -> opening -> decrypting -> announcing -> confirming
          -> closed;  sealed -> failed (流标);  any active state <-> suspended
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, get_args

from schemas.events import NewEvent
from schemas.time import iso, parse_iso
from server.domain import errors as E
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
from server.domain.opening_model import (
    ACTIVE,
    ALL,
    BEFORE_DEADLINE,
    OBJECTIONS_OPEN,
    SERVER,
    STAFF,
    STAFF_ROLES,
    SUPERVISORS,
    Actor,
    ApproveBackup,
    Attempt,
    BackupConfig,
    BackupRequest,
    Bid,
    BidStatus,
    Command,
    Confirm,
    DecryptionResult,
    Extend,
    GenerateRecord,
    Incident,
    Join,
    Leave,
    Object,
    Objection,
    OpenConfirmation,
    OpenDecryption,
    OpeningState,
    Origin,
    PlatformOutage,
    Publish,
    RaiseSignals,
    RecordIncident,
    Rehearse,
    Reply,
    RequestBackup,
    Resume,
    Retract,
    Role,
    Security,
    SetSecurity,
    SignIn,
    SignRecord,
    Start,
    Status,
    SubmitKey,
    Suspend,
    Tick,
    Timetable,
    Upload,
    _origin,
    bidder_tag,
    viewer_tags,
)
from server.domain.opening_record import build_record, build_table, record_text
from server.domain.opening_windows import (
    WINDOWS,
    extend,
    fold_window,
    no_window,
    platform_outage,
    shift_future,
)
from server.domain.remit import remit_present

# fmt: off
__all__ = [
    "ACTIVE", "ALL", "BEFORE_DEADLINE", "COMMANDS", "DUE", "FAILURE_CAUSE", "MACHINE",
    "MAX_VERSIONS", "OBJECTIONS_OPEN", "SERVER", "STAFF", "STAFF_ROLES", "STATUSES", "SUPERVISORS", "Actor",
    "ApproveBackup", "Attempt", "BackupConfig", "BackupRequest", "Bid", "BidStatus", "Command",
    "Confirm", "DecryptionResult", "Extend", "GenerateRecord", "Incident", "Join", "Leave",
    "NotARecipient", "Object", "Objection", "OpenConfirmation", "OpenDecryption",
    "OpeningState", "Origin", "PlatformOutage", "Publish", "RaiseSignals", "RecordIncident", "Rehearse", "Reply",
    "RequestBackup", "Resume", "Retract", "Role", "Security", "SetSecurity", "SignIn",
    "SignRecord", "Start", "Status", "SubmitKey", "Suspend", "Tick", "Timetable", "Upload",
    "bidder_tag", "build_record", "build_table", "check_recipient", "decide",
    "deposit_security", "evolve", "failure_cause", "may_upload", "new_session", "next_due",
    "raise_signals", "record_due", "record_text", "sha256_json", "viewer_tags",
]
# fmt: on

EVERY: tuple[Status, ...] = get_args(Status)
UNPAUSED: tuple[Status, ...] = tuple(s for s in EVERY if s != "suspended")
"""Every status but the pause: the handler checks anything finer."""
ANYONE = None


# --- helpers ------------------------------------------------------------------------------------


def _bid_audience(code: str) -> list[str]:
    return [bidder_tag(code), "staff"]


def _own_bid(state: OpeningState, code: str) -> Bid:
    bid = state.bids.get(code)
    if bid is None or bid.status == "retracted":
        raise E.NoBid()
    return bid


def _after_deadline(state: OpeningState, cmd: Any = None) -> E.Refusal:
    """Rule 4: before the deadline the answer is "not yet", whatever else is wrong."""
    if state.status in BEFORE_DEADLINE:
        return E.BeforeDeadline()
    return E.NotAllowedInState(f"status is {state.status}")


def _not_uploading(state: OpeningState, cmd: Any = None) -> E.Refusal:
    """Rule 1: outside the upload window the deadline has passed (or the lot is not out yet)."""
    if state.status == "draft":
        return E.NotAllowedInState("the session is not published yet / 项目尚未发布")
    return E.DeadlinePassed(f"deadline {iso(state.timetable.deadline)}")


def _not_starting(state: OpeningState, cmd: Any = None) -> E.Refusal:
    if state.status in BEFORE_DEADLINE:
        return E.BeforeDeadline(f"deadline {iso(state.timetable.deadline)}")
    return E.NotAllowedInState(f"status is {state.status}")


def _not_decrypting(state: OpeningState, cmd: Any = None) -> E.Refusal:
    if state.status in BEFORE_DEADLINE:
        return E.BeforeDeadline()
    return E.WindowClosed("decryption is not open / 解密未开始或已结束")


def _not_taking_results(state: OpeningState, cmd: DecryptionResult) -> E.Refusal:
    return _after_deadline(state) if cmd.via == "backup" else _not_decrypting(state)


def _security_roles(cmd: SetSecurity) -> tuple[str, ...]:
    """A deposit is confirmed by the centre; a guarantee (电子保函) is checked by the server."""
    return ("centre",) if cmd.security.kind == "deposit" else ("server",)


# --- time: the due list's actions -----------------------------------------------------------------


def _open_sign_in(state: OpeningState, now: datetime) -> list[NewEvent]:
    return [_ev("sign_in_opened", SERVER, ALL)]


def _seal(state: OpeningState, now: datetime) -> list[NewEvent]:
    """Rule 5: at the deadline the lot is sealed; with fewer than min_bids bids it fails (流标)."""
    count = len(state.live_bids())
    if count < state.timetable.min_bids:
        return [
            _ev(
                "session_failed",
                SERVER,
                ALL,
                reason="too_few_bids",
                min_bids=state.timetable.min_bids,
            ),
            _ev("bids_counted", SERVER, STAFF, bids=count, signed_in=len(state.signed_in)),
        ]
    return [
        _ev("session_sealed", SERVER, ALL),
        _ev("bids_counted", SERVER, STAFF, bids=count, signed_in=len(state.signed_in)),
    ]


def _close_decryption(state: OpeningState, now: datetime) -> list[NewEvent]:
    """Rule 8: attribute every bid not decrypted, then (rule 10) publish the opening table."""
    events = [_ev("decryption_closed", SERVER, ALL)]
    affected = {b for i in state.incidents for b in i.bidders}
    for bid in state.live_bids():
        if bid.status == "decrypted":
            continue
        platform = [a for a in bid.attempts if a.cause == "platform"]
        incidents = [i.model_dump() for i in state.incidents if bid.bidder in i.bidders]
        if platform or bid.bidder in affected:
            evidence = {
                "incidents": incidents,
                "attempts": [a.model_dump() for a in bid.attempts],
                "finding": "platform_fault",
            }
            events.append(
                _ev(
                    "bid_withdrawn",
                    SERVER,
                    _bid_audience(bid.bidder),
                    bidder=bid.bidder,
                    evidence=evidence,
                )
            )
        else:
            finding = "no_key_sent" if not bid.attempts else "bidder_key_failed"
            evidence = {"attempts": [a.model_dump() for a in bid.attempts], "finding": finding}
            events.append(
                _ev(
                    "bid_revoked",
                    SERVER,
                    _bid_audience(bid.bidder),
                    bidder=bid.bidder,
                    evidence=evidence,
                )
            )
    after = state
    for e in events:
        after = evolve(after, e, None)
    table = build_table(after)
    events.append(_ev("table_published", SERVER, ALL, table=table, table_sha256=sha256_json(table)))
    return events


def _close_confirmation(state: OpeningState, now: datetime) -> list[NewEvent]:
    """Rule 11: silence counts as confirmation when the confirmation window ends."""
    silent = sorted(
        b.bidder for b in state.live_bids() if b.status == "decrypted" and b.confirmation is None
    )
    return [_ev("confirmation_closed", SERVER, ALL, deemed=silent)]


def _confirmation_closes(state: OpeningState) -> datetime | None:
    """Once the record is under way the confirmation window has nothing left to close."""
    if state.status != "confirming" or state.record_pending or state.record_sha256 is not None:
        return None
    return state.confirm_closes_at


# --- deciding -----------------------------------------------------------------------------------


def _publish(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    t = state.timetable
    if not now < t.deadline or not t.sign_in_opens <= t.deadline:
        raise E.TimetableInvalid("sign_in_opens <= deadline and now < deadline")
    return [_ev("session_published", cmd.actor, ALL, timetable=t.model_dump(mode="json"))]


def _sign_in(state: OpeningState, cmd: SignIn, now: datetime) -> list[NewEvent]:
    if cmd.actor.id in state.signed_in:
        return []
    # Rule 4: before the deadline a sign-in is seen by the bidder alone.
    audience = (
        [bidder_tag(cmd.actor.id)] if state.status == "sign_in" else _bid_audience(cmd.actor.id)
    )
    return [
        _ev("bidder_signed_in", cmd.actor, audience, bidder=cmd.actor.id, **_origin(cmd.origin))
    ]


def _in_time(state: OpeningState, now: datetime) -> None:
    """Rule 1: server time decides; an upload that finishes at or after the deadline is late."""
    if now >= state.timetable.deadline:
        raise E.DeadlinePassed(f"deadline {iso(state.timetable.deadline)}")


MAX_VERSIONS = 20
"""How many versions of its bid one bidder may upload to a lot (rule 1): every version is kept
for the archive, so replacements without end would fill the disk."""


def _versions_left(state: OpeningState, bidder: str) -> None:
    old = state.bids.get(bidder)
    if old is not None and old.uploads >= MAX_VERSIONS:
        raise E.TooManyVersions(f"{old.uploads} / {MAX_VERSIONS}")


def _to_bidder(type_: str, cmd: Command, **payload: Any) -> list[NewEvent]:
    """Rule 4: the event of a bidder's own act, naming it, that it alone sees."""
    return [_ev(type_, cmd.actor, [bidder_tag(cmd.actor.id)], bidder=cmd.actor.id, **payload)]


def _upload(state: OpeningState, cmd: Upload, now: datetime) -> list[NewEvent]:
    _in_time(state, now)
    _versions_left(state, cmd.actor.id)
    old = state.bids.get(cmd.actor.id)
    replaces = old.envelope_sha256 if old is not None and old.status != "retracted" else None
    # Rules 2 and 4: the receipt goes to the bidder alone; nobody else learns a bid exists.
    return _to_bidder(
        "bid_uploaded",
        cmd,
        receipt=cmd.receipt,
        receipt_signature=cmd.receipt_signature,
        replaces=replaces,
        **_origin(cmd.origin),
    )


def _retract(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    _in_time(state, now)
    bid = _own_bid(state, cmd.actor.id)
    return _to_bidder("bid_retracted", cmd, envelope_sha256=bid.envelope_sha256)


def _rehearse(state: OpeningState, cmd: Rehearse, now: datetime) -> list[NewEvent]:
    bid = _own_bid(state, cmd.actor.id)
    return _to_bidder(
        "rehearsal_reported",
        cmd,
        envelope_sha256=bid.envelope_sha256,
        passed=cmd.passed,
        code=cmd.code,
        message=cmd.message,
        **_origin(cmd.origin),
    )


def _start(state: OpeningState, cmd: Start, now: datetime) -> list[NewEvent]:
    """Rule 6: only after the deadline (the table) and only while a supervisor of the project's
    remit (监管主体, seed 002 二(一)四) is in the hall."""
    if not remit_present(state.present, cmd.supervisors_in_remit):
        raise E.SupervisorAbsent(
            "none of the project's remit / 无本项目监管主体的监管人员在场"
            if cmd.supervisors_in_remit is not None
            else ""
        )
    return [_ev("opening_started", cmd.actor, ALL, bids=len(state.live_bids()))]


def _open_decryption(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    """Rule 7: the decryption window (decrypt_minutes) opens."""
    closes = now + timedelta(minutes=state.timetable.decrypt_minutes)
    return [_ev("decryption_opened", cmd.actor, ALL, closes_at=iso(closes))]


def _key_taken(state: OpeningState, bidder: str, at: datetime) -> None:
    """Rules 4 and 7: a content key is only taken in the window, for the sender's own bid."""
    if state.decrypt_closes_at is not None and at >= state.decrypt_closes_at:
        raise E.WindowClosed()
    if _own_bid(state, bidder).status == "decrypted":
        raise E.AlreadyDone("already decrypted / 已解密")


def _check_submit(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    """Asked before the server spends time decrypting: may this bidder decrypt now?"""
    _key_taken(state, cmd.actor.id, now)
    return []


def _decryption_result(state: OpeningState, cmd: DecryptionResult, now: datetime) -> list[NewEvent]:
    if cmd.via == "backup":
        # Rule 9: only named bids of a completed quorum request, after the deadline.
        named = {b for r in state.backup_requests.values() if r.done for b in r.bidders}
        if cmd.bidder not in named:
            raise E.BackupUnavailable(f"{cmd.bidder} is not named in an approved request")
    else:
        if state.status != "decrypting":
            raise _not_decrypting(state)
        _key_taken(state, cmd.bidder, cmd.submitted_at)
    bid = _own_bid(state, cmd.bidder)
    if bid.status == "decrypted":
        raise E.AlreadyDone("already decrypted / 已解密")
    if cmd.ok:
        return [
            _ev(
                "bid_decrypted",
                cmd.actor,
                _bid_audience(cmd.bidder),
                bidder=cmd.bidder,
                envelope_sha256=bid.envelope_sha256,
                cek_sha256=cmd.cek_sha256,
                summary=cmd.summary,
                via=cmd.via,
                **_origin(cmd.origin),
            )
        ]
    attempt = Attempt(
        at=iso(cmd.submitted_at),
        ok=False,
        code=cmd.code,
        cause=cmd.cause,
        message=cmd.message,
        evidence=cmd.evidence,
    )
    return [
        _ev(
            "decryption_failed",
            cmd.actor,
            _bid_audience(cmd.bidder),
            bidder=cmd.bidder,
            attempt=attempt.model_dump(),
            **_origin(cmd.origin),
        )
    ]


def _record_incident(state: OpeningState, cmd: RecordIncident, now: datetime) -> list[NewEvent]:
    reason = _reason(cmd.reason)
    for code in cmd.bidders:
        _own_bid(state, code)
    if not cmd.bidders:
        return [_ev("incident_recorded", cmd.actor, STAFF, reason=reason, bidders=[])]
    # One event per bid: each bidder sees its own incident, never who else bid (rule 4).
    return [
        _ev("incident_recorded", cmd.actor, _bid_audience(code), reason=reason, bidders=[code])
        for code in sorted(set(cmd.bidders))
    ]


def _set_security(state: OpeningState, cmd: SetSecurity, now: datetime) -> list[NewEvent]:
    if cmd.actor.role != "server" and state.status in BEFORE_DEADLINE:
        # Rule 4: a NoBid answer here would tell staff who has bid before the deadline.
        raise E.BeforeDeadline("deposits are recorded after the deadline / 截止后登记保证金")
    _own_bid(state, cmd.bidder)
    return [
        _ev(
            "security_recorded",
            cmd.actor,
            [bidder_tag(cmd.bidder)],
            bidder=cmd.bidder,
            security=cmd.security.model_dump(),
        )
    ]


def _request_backup(state: OpeningState, cmd: RequestBackup, now: datetime) -> list[NewEvent]:
    """Rule 9: after the deadline (the table), for named bids, with a reason."""
    if state.timetable.backup is None:
        raise E.BackupUnavailable("this project has no backup recipient / 本项目未设置备用解密")
    if not cmd.bidders:
        raise E.BackupUnavailable("name the bids / 请指定需备用解密的投标")
    for code in cmd.bidders:
        if _own_bid(state, code).status == "decrypted":
            raise E.AlreadyDone(f"{code} is already decrypted")
    if cmd.request_id in state.backup_requests:
        raise E.AlreadyDone("request id in use")
    return [
        _ev(
            "backup_requested",
            cmd.actor,
            STAFF,
            request_id=cmd.request_id,
            bidders=sorted(set(cmd.bidders)),
            reason=_reason(cmd.reason),
            k=state.timetable.backup.k,
        )
    ]


def _approve_backup(state: OpeningState, cmd: ApproveBackup, now: datetime) -> list[NewEvent]:
    backup = state.timetable.backup
    if backup is None:
        raise E.BackupUnavailable()
    if cmd.actor.id not in backup.custodians:
        raise E.NotACustodian()
    request = state.backup_requests.get(cmd.request_id)
    if request is None:
        raise E.BackupUnavailable("no such request / 无此备用解密申请")
    if cmd.actor.id in request.approvals or request.done:
        raise E.AlreadyDone()
    events = [
        _ev("backup_approved", cmd.actor, STAFF, request_id=request.id, custodian=cmd.actor.id)
    ]
    if len(request.approvals) + 1 >= backup.k:
        events.append(_ev("backup_quorum_reached", SERVER, STAFF, request_id=request.id))
    return events


MAX_OPEN_OBJECTIONS = 3
"""How many of one bidder's objections may await the host's answer at once (rule 11)."""
OBJECTION_RATE = (5, timedelta(minutes=10))
"""At most this many objections of one bidder within this time, answered or not (rule 11)."""


def _object(state: OpeningState, cmd: Object, now: datetime) -> list[NewEvent]:
    """Rule 11: objections are raised in the hall and recorded (during a pause too)."""
    if state.status == "suspended" and state.suspended_from not in OBJECTIONS_OPEN:
        raise E.NotAllowedInState()
    if state.record_pending or state.record_sha256 is not None:
        # Rules 11-12: the record is being made; an objection now would be left out of it.
        raise E.WindowClosed("the opening record is being made / 开标记录已在生成")
    if cmd.actor.id not in state.bids:
        raise E.NoBid()
    waiting = [o for o in state.objections if o.bidder == cmd.actor.id and o.reply is None]
    if len(waiting) >= MAX_OPEN_OBJECTIONS:
        # Rule 11: every objection is answered before confirmation opens; one bidder raising
        # objections without end would block the opening for everyone.
        raise E.TooManyObjections(f"{len(waiting)} awaiting an answer / 条待答复")
    most, within = OBJECTION_RATE
    recent = sorted(
        at
        for o in state.objections
        if o.bidder == cmd.actor.id and o.at and (at := parse_iso(o.at)) > now - within
    )
    if len(recent) >= most:
        raise E.ObjectionsTooFrequent(
            f"next after {iso(recent[-most] + within)} / 可再次提出的时间"
        )
    public = state.table is not None
    audience = ALL if public else _bid_audience(cmd.actor.id)
    return [
        _ev(
            "objection_raised",
            cmd.actor,
            audience,
            id=len(state.objections) + 1,
            bidder=cmd.actor.id,
            text=cmd.text.strip(),
            public=public,
        )
    ]


def _reply(state: OpeningState, cmd: Reply, now: datetime) -> list[NewEvent]:
    """Rule 11: the host answers an objection, or several alike with one text (duplicates)."""
    objections = []
    for oid in dict.fromkeys([cmd.objection_id, *cmd.also]):
        if not 1 <= oid <= len(state.objections):
            raise E.UnknownObjection(f"#{oid}")
        objection = state.objections[oid - 1]
        if objection.reply is not None:
            raise E.AlreadyDone(f"#{oid} already answered / 已答复")
        objections.append(objection)
    if state.record_sha256 is not None:
        raise E.NotAllowedInState("the record has been generated / 开标记录已生成")
    public = state.table is not None
    return [
        _ev(
            "objection_answered",
            cmd.actor,
            ALL if o.public or public else _bid_audience(o.bidder),
            id=o.id,
            bidder=o.bidder,
            text=cmd.text.strip(),
        )
        for o in objections
    ]


def _open_confirmation(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    if any(o.reply is None for o in state.objections):
        raise E.ObjectionsPending()
    closes = now + timedelta(minutes=state.timetable.confirm_minutes)
    return [_ev("confirmation_opened", cmd.actor, ALL, closes_at=iso(closes))]


def _confirm(state: OpeningState, cmd: Confirm, now: datetime) -> list[NewEvent]:
    """Rule 11: a bidder confirms the table with its CA signature (checked by the caller)."""
    if state.confirm_closes_at is not None and now >= state.confirm_closes_at:
        raise E.WindowClosed()
    bid = _own_bid(state, cmd.actor.id)
    if bid.confirmation is not None:
        raise E.AlreadyDone()
    if cmd.table_sha256 != state.table_sha256:
        raise E.TableMismatch()
    return [
        _ev(
            "table_confirmed",
            cmd.actor,
            ALL,
            bidder=cmd.actor.id,
            table_sha256=cmd.table_sha256,
            signature=cmd.signature,
        )
    ]


def _generate_record(state: OpeningState, cmd: GenerateRecord, now: datetime) -> list[NewEvent]:
    """Rule 12: the server signs the opening record once confirmations have closed."""
    if not state.record_pending:
        raise E.NotAllowedInState("no record is due")
    if any(o.reply is None for o in state.objections):
        # Rule 11: every objection and its answer are in the record the parties sign.
        raise E.ObjectionsPending()
    return [
        _ev(
            "record_generated",
            cmd.actor,
            ALL,
            record_sha256=cmd.record_sha256,
            signature=cmd.signature,
        )
    ]


def _sign_record(state: OpeningState, cmd: SignRecord, now: datetime) -> list[NewEvent]:
    """Rule 12: host and supervisor sign; with both signatures the record is published."""
    if state.record_sha256 is None:
        raise E.NotAllowedInState("the record has not been generated yet / 开标记录尚未生成")
    if cmd.record_sha256 != state.record_sha256:
        raise E.TableMismatch("the record you signed is not the current one")
    if cmd.actor.role in state.record_signatures:
        raise E.AlreadyDone()
    events = [
        _ev(
            "record_signed",
            cmd.actor,
            ALL,
            role=cmd.actor.role,
            account=cmd.actor.id,
            signature=cmd.signature,
        )
    ]
    if {"host", "supervisor"} <= {*state.record_signatures, cmd.actor.role}:
        events.append(_ev("record_published", SERVER, ALL, record_sha256=state.record_sha256))
    return events


def _suspend(state: OpeningState, cmd: Suspend, now: datetime) -> list[NewEvent]:
    """Rule 13: an emergency pause needs a reason; supervisors see it as an event."""
    return [
        _ev("session_suspended", cmd.actor, ALL, reason=_reason(cmd.reason), previous=state.status)
    ]


def _resume(state: OpeningState, cmd: Resume, now: datetime) -> list[NewEvent]:
    assert state.suspended_at is not None
    paused = max(0, int((now - state.suspended_at).total_seconds() * 1_000_000))
    return [
        _ev(
            "session_resumed",
            cmd.actor,
            ALL,
            reason=_reason(cmd.reason),
            paused_microseconds=paused,
            status=state.suspended_from,
        )
    ]


def _raise_signals(state: OpeningState, cmd: RaiseSignals, now: datetime) -> list[NewEvent]:
    return raise_signals(state.signals_raised, cmd, cmd.signals)


# --- the tables -----------------------------------------------------------------------------------

_AFTER_DEADLINE = ("opening", "decrypting")

COMMANDS: dict[type[Command], CommandRule] = {
    # command           roles                       statuses                      handler
    Publish: CommandRule(("host", "centre"), ("draft",), _publish),
    Tick: CommandRule(ANYONE, EVERY, None),
    Join: CommandRule(STAFF_ROLES, EVERY, join),
    Leave: CommandRule(STAFF_ROLES, EVERY, leave),
    SignIn: CommandRule(("bidder",), ("sign_in", "sealed", *_AFTER_DEADLINE), _sign_in),
    Upload: CommandRule(("bidder",), BEFORE_DEADLINE, _upload, refuse=_not_uploading),  # Rule 1
    Retract: CommandRule(("bidder",), BEFORE_DEADLINE, _retract, refuse=_not_uploading),
    Rehearse: CommandRule(("bidder",), BEFORE_DEADLINE, _rehearse),
    Start: CommandRule(("host",), ("sealed",), _start, refuse=_not_starting),  # Rule 6
    OpenDecryption: CommandRule(("host",), ("opening",), _open_decryption),
    SubmitKey: CommandRule(("bidder",), ("decrypting",), _check_submit, refuse=_not_decrypting),
    DecryptionResult: CommandRule(
        ("server",), _AFTER_DEADLINE, _decryption_result, refuse=_not_taking_results
    ),
    RecordIncident: CommandRule(("host", "centre"), _AFTER_DEADLINE, _record_incident),
    SetSecurity: CommandRule(
        _security_roles, (*BEFORE_DEADLINE, "sealed", *_AFTER_DEADLINE), _set_security
    ),
    RequestBackup: CommandRule(  # Rule 9
        ("host",), _AFTER_DEADLINE, _request_backup, refuse=_after_deadline
    ),
    ApproveBackup: CommandRule(STAFF_ROLES, _AFTER_DEADLINE, _approve_backup),
    Object: CommandRule(("bidder",), (*OBJECTIONS_OPEN, "suspended"), _object),  # Rule 11
    Reply: CommandRule(("host",), UNPAUSED, _reply),
    OpenConfirmation: CommandRule(("host",), ("announcing",), _open_confirmation),
    Confirm: CommandRule(("bidder",), ("confirming",), _confirm),
    GenerateRecord: CommandRule(("server",), UNPAUSED, _generate_record),  # Rule 12
    SignRecord: CommandRule(("host", "supervisor"), ("confirming",), _sign_record),
    Suspend: CommandRule(("host", "supervisor"), ACTIVE, _suspend),  # Rule 13
    Resume: CommandRule(("host", "supervisor"), ("suspended",), _resume),
    Extend: CommandRule(("host",), tuple(WINDOWS), extend, refuse=no_window),  # Rule 13
    RaiseSignals: CommandRule(("server",), EVERY, _raise_signals),
    PlatformOutage: CommandRule(
        ("server",), ("decrypting", "confirming"), platform_outage
    ),  # Rule 8
}
"""Who may send each command, in which statuses; the handler checks what is finer."""


def _published(state: OpeningState, event: NewEvent, at: datetime | None) -> str:
    return "sign_in" if at is not None and at >= state.timetable.sign_in_opens else "published"


def _resumed(state: OpeningState, event: NewEvent, at: datetime | None) -> str:
    return str(event.payload["status"])


STATUSES: dict[str, str | Any] = {
    "session_published": _published,  # straight to sign_in when sign-in has already opened
    "sign_in_opened": "sign_in",
    "session_sealed": "sealed",
    "session_failed": "failed",
    "opening_started": "opening",
    "decryption_opened": "decrypting",
    "decryption_closed": "announcing",
    "confirmation_opened": "confirming",
    "record_published": "closed",
    "session_suspended": "suspended",
    "session_resumed": _resumed,  # back to the status it was suspended from
}
"""Which events change the status, and to what; every other event leaves it as it is."""


DUE: list[Due] = [
    # The deadline comes first: once it has passed, sign-in never opens on its own (rule 5).
    Due("deadline", lambda s: s.timetable.deadline if s.status in BEFORE_DEADLINE else None, _seal),
    Due(
        "sign_in_opens",
        lambda s: s.timetable.sign_in_opens if s.status == "published" else None,
        _open_sign_in,
    ),
    Due(  # Rule 8
        "decryption_closes",
        lambda s: s.decrypt_closes_at if s.status == "decrypting" else None,
        _close_decryption,
    ),
    Due("confirmation_closes", _confirmation_closes, _close_confirmation),  # Rule 11
]
"""What time alone does, and when (Prozorro's chronograph): both next_due and the tick."""


# --- evolving -----------------------------------------------------------------------------------


def new_session(
    session_id: str, lot_id: str, timetable: Timetable, title: str = ""
) -> OpeningState:
    return OpeningState(session_id=session_id, lot_id=lot_id, timetable=timetable, title=title)


def _fold(s: OpeningState, event: NewEvent, at: datetime | None, before: OpeningState) -> None:
    """The payload's bookkeeping (the status is already the table's). ``at`` is the event's
    instant, needed only by events that open a window or pause."""
    p = event.payload
    t = event.type
    if t == "bidder_signed_in":
        s.signed_in.append(p["bidder"])
    elif t == "bid_uploaded":
        r = p["receipt"]
        earlier = s.bids.get(p["bidder"])
        s.bids[p["bidder"]] = Bid(
            uploads=earlier.uploads + 1 if earlier is not None else 1,
            bidder=p["bidder"],
            bidder_name=r.get("bidder_name", ""),
            envelope_sha256=r["envelope_sha256"],
            size=r["size"],
            received_at=r["received_at"],
            receipt_id=r["receipt_id"],
        )
    elif t == "bid_retracted":
        s.bids[p["bidder"]].status = "retracted"
    elif t == "rehearsal_reported":
        s.bids[p["bidder"]].rehearsal = "passed" if p["passed"] else "failed"
    elif t == "decryption_opened":
        s.decrypt_closes_at = parse_iso(p["closes_at"])
    elif t == "bid_decrypted":
        bid = s.bids[p["bidder"]]
        bid.status = "decrypted"
        bid.summary = p["summary"]
        bid.via = p["via"]
        bid.attempts.append(Attempt(at=iso(at) if at else "", ok=True, code="OK", cause="bidder"))
    elif t == "decryption_failed":
        bid = s.bids[p["bidder"]]
        bid.status = "failed"
        bid.attempts.append(Attempt(**p["attempt"]))
    elif t == "incident_recorded":
        s.incidents.append(
            Incident(
                at=iso(at) if at else "", by=event.actor, reason=p["reason"], bidders=p["bidders"]
            )
        )
    elif t == "security_recorded":
        s.bids[p["bidder"]].security = Security(**p["security"])
    elif t == "backup_requested":
        s.backup_requests[p["request_id"]] = BackupRequest(
            id=p["request_id"], bidders=p["bidders"], reason=p["reason"]
        )
    elif t == "backup_approved":
        s.backup_requests[p["request_id"]].approvals.append(p["custodian"])
    elif t == "backup_quorum_reached":
        s.backup_requests[p["request_id"]].done = True
    elif t == "bid_revoked":
        s.bids[p["bidder"]].status = "revoked"
    elif t == "bid_withdrawn":
        s.bids[p["bidder"]].status = "withdrawn"
    elif t == "table_published":
        s.table = p["table"]
        s.table_sha256 = p["table_sha256"]
    elif t == "objection_raised":
        s.objections.append(
            Objection(
                id=p["id"],
                bidder=p["bidder"],
                text=p["text"],
                at=iso(at) if at else "",
                public=p["public"],
            )
        )
    elif t == "objection_answered":
        o = s.objections[p["id"] - 1]
        o.reply = p["text"]
        o.replied_at = iso(at) if at else ""
    elif t == "confirmation_opened":
        s.confirm_closes_at = parse_iso(p["closes_at"])
    elif t == "table_confirmed":
        s.bids[p["bidder"]].confirmation = "signed"
    elif t == "confirmation_closed":
        for code in p["deemed"]:
            s.bids[code].confirmation = "deemed"
        s.record_pending = True
    elif t == "record_generated":
        s.record_pending = False
        s.record_sha256 = p["record_sha256"]
    elif t == "record_signed":
        s.record_signatures[p["role"]] = p["account"]
    elif t == "session_suspended":
        s.suspended_from = before.status
        s.suspended_at = at
    elif t == "session_resumed":
        s.suspended_from = None
        s.suspended_at = None
        shift_future(s, timedelta(microseconds=p["paused_microseconds"]), before.suspended_at)
    elif t == "signal":
        s.signals_raised.append(p["id"])
    elif t in ("platform_outage", "window_extended"):
        fold_window(s, t, p)
    # bids_counted, checkpoint, session_created and others change nothing here.


# --- decisions the API asks for without a command ---------------------------------------------------


def may_upload(state: OpeningState, actor: Actor, now: datetime) -> None:
    """Rule 1: raise exactly what an ``Upload`` by ``actor`` would raise at ``now`` (asked before
    the first byte is read, and again when the last one has arrived)."""
    MACHINE.admit(state, Upload, actor)
    _in_time(state, now)
    _versions_left(state, actor.id)


class NotARecipient(E.Refusal):
    """Rule 3: the envelope is not addressed to the bidder's registered encryption certificate
    (the code and messages are ``crypto.errors.NotARecipient``'s, as the API has always sent)."""

    code = "ENVELOPE_NOT_FOR_RECIPIENT"
    status = 422
    zh = "该投标文件不是用此证书加密的：请用本单位已登记的加密证书重新加密"
    en = (
        "the bid was not sealed for this certificate: seal it again with your registered "
        "encryption certificate"
    )


def check_recipient(addressed_to_registered_certificate: bool) -> None:
    """Rule 3 (art. 26): a bid must be sealed to one of the bidder's own registered (bound,
    ``server.domain.binding``) encryption certificates."""
    if not addressed_to_registered_certificate:
        raise NotARecipient(
            "投标文件未使用您登记的加密证书加密 / "
            "the bid is not sealed to your registered encryption certificate"
        )


FAILURE_CAUSE: dict[str, str] = {
    "ENVELOPE_MISSING": "platform",  # the stored envelope is gone: the platform lost it
    "PLATFORM_IO": "platform",  # the server could not read or write while decrypting
    "SUMMARY_LOT_MISMATCH": "bidder",  # the bid's summary names another lot
}
"""Rule 8: who caused a failed decryption, by failure code; a code not listed (every crypto
failure: a wrong key, a tampered envelope, a bad signature) is the bidder's."""


def failure_cause(code: str) -> str:
    """Rule 8: ``"platform"`` or ``"bidder"`` for a decryption that failed with ``code``."""
    return FAILURE_CAUSE.get(code, "bidder")


def deposit_security(state: OpeningState, amount_fen: int, reference: str) -> Security:
    """投标保证金: a deposit is valid when it reaches the amount the lot requires."""
    required = state.timetable.security_required_fen or 0
    ok = amount_fen >= required
    detail = reference or ("" if ok else f"below the required {required} fen / 低于要求金额")
    return Security(
        kind="deposit", status="valid" if ok else "invalid", amount_fen=amount_fen, detail=detail
    )


def record_due(state: OpeningState) -> bool:
    """Rules 11-12: the record may be generated now (confirmations closed, every objection
    answered: each is in the record the parties sign)."""
    return state.record_pending and all(o.reply is not None for o in state.objections)


# --- the machine ----------------------------------------------------------------------------------


def _supervision(state: OpeningState) -> dict[str, Any]:
    return {"deadline": state.timetable.model_dump(mode="json")["deadline"]}


def before_deadline(state: OpeningState) -> bool:
    """Rule 4: still before the deadline (a suspended opening counts by where it was)."""
    status = state.suspended_from if state.status == "suspended" else state.status
    return (status or state.status) in ("draft", *BEFORE_DEADLINE)


def _viewer_tags(state: OpeningState, role: str, party_id: str) -> frozenset[str] | None:
    """The opening hall admits this session's parties: its staff, and bidders -- any company
    before the deadline (it may still bid or sign in), after it only one with a bid it did not
    withdraw, or that signed in. A room device or an expert has no business in it (their tokens
    are for evaluations)."""
    if role in STAFF_ROLES:
        return viewer_tags(role, party_id)
    if role != "bidder":
        return None
    if not before_deadline(state):
        bid = state.bids.get(party_id)
        if (bid is None or bid.status == "retracted") and party_id not in state.signed_in:
            return None
    return viewer_tags(role, party_id)


MACHINE = Machine(
    kind="opening",
    state=OpeningState,
    commands=COMMANDS,
    statuses=STATUSES,
    fold=_fold,
    due=DUE,
    paused_detail="the session is suspended / 会话已暂停",
    made=ServerMade(Actor, Tick, Join, Leave, RaiseSignals, outage=PlatformOutage),
    viewer_tags_of=_viewer_tags,
    supervision_of=_supervision,
    before_deadline_of=before_deadline,
    record_pending_of=lambda s: s.record_pending,
    kind_in_first_event=False,
)

decide = MACHINE.decide
evolve = MACHINE.evolve
next_due = MACHINE.next_due
