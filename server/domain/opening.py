"""The no-show opening (不见面开标) of one lot as a pure state machine.

Theory of operation (like h11's ``_state.py``): everything that decides what may happen in an
opening lives in this file, and nothing here does I/O or reads a clock. The outside world hands
in a state, a command and ``now``; :func:`decide` answers with the events that happen, or raises
a :class:`~server.domain.errors.Refusal`. :func:`evolve` folds an event into the state, so the
state is always the fold of the session's event log (DESIGN.md section 4), and :func:`next_due`
names the next instant at which time alone changes something (Prozorro's ``next_check``).

The rules of DESIGN.md section 5 are marked ``# Rule N`` where they are enforced.

States::

    draft -> published -> sign_in -> sealed -> opening -> decrypting -> announcing -> confirming
          -> closed;  sealed -> failed (流标);  any active state <-> suspended
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import NewEvent
from schemas.time import iso, parse_iso
from server.domain import errors as E
from server.domain.common import event as _ev
from server.domain.common import reason_text as _reason
from server.domain.common import require_role as _require_role
from server.domain.common import require_state as _require_state
from server.domain.common import sha256_json

Status = Literal[
    "draft",
    "published",
    "sign_in",
    "sealed",
    "opening",
    "decrypting",
    "announcing",
    "confirming",
    "closed",
    "failed",
    "suspended",
]
Role = Literal["bidder", "host", "supervisor", "centre", "server"]
STAFF_ROLES = ("host", "supervisor", "centre")
BEFORE_DEADLINE: tuple[Status, ...] = ("published", "sign_in")
ACTIVE: tuple[Status, ...] = (
    "published",
    "sign_in",
    "sealed",
    "opening",
    "decrypting",
    "announcing",
    "confirming",
)
OBJECTIONS_OPEN: tuple[Status, ...] = ("opening", "decrypting", "announcing", "confirming")

BidStatus = Literal["uploaded", "retracted", "decrypted", "failed", "revoked", "withdrawn"]
"""uploaded 已上传 · retracted 投标人截止前撤回 · decrypted 已解密 · failed 解密失败 (may retry in
the window) · revoked 撤销 (bidder's fault, rule 8) · withdrawn 撤回 (someone else's fault)."""

ALL: list[str] = ["all"]
STAFF: list[str] = ["staff"]
SUPERVISORS: list[str] = ["supervisor"]


def bidder_tag(code: str) -> str:
    return f"bidder:{code}"


def viewer_tags(role: str, party_id: str) -> frozenset[str]:
    """The audience tags a viewer holds (see ``schemas.events.Audience``)."""
    if role == "bidder":
        return frozenset({bidder_tag(party_id)})
    if role in STAFF_ROLES:
        return frozenset({"staff", role})
    return frozenset()


# --- state --------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BackupConfig(_Model):
    """备用解密: the backup recipient's key split k-of-n among custodians (rule 9)."""

    k: int = Field(ge=1)
    custodians: list[str] = Field(min_length=1, description="account ids of the custodians")
    bundle_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Timetable(_Model):
    sign_in_opens: datetime
    deadline: datetime
    decrypt_minutes: int = Field(default=30, ge=1, le=24 * 60)
    confirm_minutes: int = Field(default=30, ge=1, le=24 * 60)
    min_bids: int = Field(default=3, ge=1, le=1000)
    table_fields: list[str] = Field(default_factory=list, max_length=20)
    security_required_fen: int | None = Field(default=None, ge=0)
    backup: BackupConfig | None = None


class Attempt(_Model):
    at: str
    ok: bool
    code: str
    cause: Literal["bidder", "platform"]
    message: str = ""


class Security(_Model):
    """投标保证金 / 电子保函 status as the opening table shows it."""

    kind: Literal["deposit", "guarantee"]
    status: Literal["valid", "invalid"]
    amount_fen: int
    detail: str = ""


class Bid(_Model):
    bidder: str
    bidder_name: str = ""
    status: BidStatus = "uploaded"
    envelope_sha256: str
    size: int
    received_at: str
    receipt_id: str
    rehearsal: Literal["passed", "failed"] | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    summary: dict[str, Any] | None = None
    via: Literal["bidder", "backup"] | None = None
    security: Security | None = None
    confirmation: Literal["signed", "deemed"] | None = None


class Objection(_Model):
    id: int
    bidder: str
    text: str
    at: str
    reply: str | None = None
    replied_at: str | None = None
    public: bool = False


class Incident(_Model):
    at: str
    by: str
    reason: str
    bidders: list[str]


class BackupRequest(_Model):
    id: str
    bidders: list[str]
    reason: str
    approvals: list[str] = Field(default_factory=list)
    done: bool = False


class OpeningState(_Model):
    session_id: str
    lot_id: str
    title: str = ""
    status: Status = "draft"
    timetable: Timetable
    decrypt_closes_at: datetime | None = None
    confirm_closes_at: datetime | None = None
    suspended_from: Status | None = None
    suspended_at: datetime | None = None
    bids: dict[str, Bid] = Field(default_factory=dict)
    present: dict[str, str] = Field(default_factory=dict, description="account id -> role")
    signed_in: list[str] = Field(default_factory=list, description="bidders who signed in")
    objections: list[Objection] = Field(default_factory=list)
    incidents: list[Incident] = Field(default_factory=list)
    table: dict[str, Any] | None = None
    table_sha256: str | None = None
    backup_requests: dict[str, BackupRequest] = Field(default_factory=dict)
    record_pending: bool = False
    record_sha256: str | None = None
    record_signatures: dict[str, str] = Field(default_factory=dict, description="role -> account")
    signals_raised: list[str] = Field(
        default_factory=list, description="ids of the warnings (signal events) already recorded"
    )

    def live_bids(self) -> list[Bid]:
        """Bids that count: uploaded and not retracted before the deadline."""
        return [b for b in self.bids.values() if b.status != "retracted"]

    @property
    def supervisors_present(self) -> int:
        return sum(1 for role in self.present.values() if role == "supervisor")


# --- commands -------------------------------------------------------------------------------------


class Actor(_Model):
    role: Role
    id: str


SERVER = Actor(role="server", id="server")


class Command(_Model):
    actor: Actor


class Origin(_Model):
    """Where a bidder's request came from, as the server saw it: the client's network address,
    the agent's machine fingerprint (``crypto.fingerprint``) and the serial of the CA certificate
    used. Recorded in the bidder's own event for the bid-rigging signals (围标串标预警): the
    events that carry it are never shown to another bidder, and before the deadline to nobody
    but the bidder itself (rule 4)."""

    addr: str | None = Field(default=None, max_length=100)
    machine: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    cert_serial: str | None = Field(default=None, max_length=100)


def _origin(origin: Origin | None) -> dict[str, Any]:
    """The ``origin`` payload entry, only when there is one (older events stay as they were)."""
    return {} if origin is None else {"origin": origin.model_dump(mode="json")}


class Publish(Command):
    pass


class Tick(Command):
    """Let time act: fire every transition that is due at ``now``."""


class Join(Command):
    """A staff member's hall presence (supervisor presence gates rule 6)."""


class Leave(Command):
    pass


class SignIn(Command):
    """签到: a bidder signs in to the hall."""

    origin: Origin | None = None


class Upload(Command):
    envelope_sha256: str
    size: int
    receipt: dict[str, Any]
    receipt_signature: str
    origin: Origin | None = None


class Retract(Command):
    """A bidder withdraws its bid before the deadline (撤回投标文件)."""


class Rehearse(Command):
    passed: bool
    code: str = ""
    message: str = ""
    origin: Origin | None = None


class Start(Command):
    """The host starts the opening (rule 6)."""


class OpenDecryption(Command):
    pass


class SubmitKey(Command):
    """Asked before the server spends time decrypting: may this bidder decrypt now?"""


class DecryptionResult(Command):
    """The outcome of decrypting one bid with the key its bidder sent (or the backup key)."""

    bidder: str
    submitted_at: datetime
    ok: bool
    code: str = "OK"
    cause: Literal["bidder", "platform"] = "bidder"
    message: str = ""
    summary: dict[str, Any] | None = None
    cek_sha256: str | None = None
    via: Literal["bidder", "backup"] = "bidder"
    origin: Origin | None = None


class RecordIncident(Command):
    """A platform fault (平台故障) affecting named bids: their failures are not the bidders'."""

    reason: str
    bidders: list[str]


class SetSecurity(Command):
    bidder: str
    security: Security


class RequestBackup(Command):
    request_id: str
    bidders: list[str]
    reason: str


class ApproveBackup(Command):
    request_id: str


class Object(Command):
    text: str = Field(min_length=1, max_length=2000)


class Reply(Command):
    objection_id: int
    text: str = Field(min_length=1, max_length=2000)


class OpenConfirmation(Command):
    pass


class Confirm(Command):
    table_sha256: str
    signature: str


class GenerateRecord(Command):
    record_sha256: str
    signature: str


class SignRecord(Command):
    record_sha256: str
    signature: str


class Suspend(Command):
    reason: str


class Resume(Command):
    reason: str


class RaiseSignals(Command):
    """围标串标预警: record the bid-rigging warnings computed from this session's record
    (``server.domain.signals``). Only the server raises them; each becomes one ``signal`` event
    seen by supervisors alone, once (by id), and none changes the state or the outcome."""

    signals: list[dict[str, Any]] = Field(max_length=1000)


class Extend(Command):
    """Extend the current window (deadline, decryption or confirmation) by some minutes."""

    minutes: int = Field(ge=1, le=7 * 24 * 60)
    reason: str


# --- helpers ------------------------------------------------------------------------------------


def _bid_audience(code: str) -> list[str]:
    return [bidder_tag(code), "staff"]


def _own_bid(state: OpeningState, code: str) -> Bid:
    bid = state.bids.get(code)
    if bid is None or bid.status == "retracted":
        raise E.NoBid()
    return bid


# --- deciding -----------------------------------------------------------------------------------


def decide(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    """The events ``cmd`` causes at ``now``, or a :class:`Refusal`."""
    if state.status == "suspended" and not isinstance(
        cmd, Resume | Join | Leave | Tick | Object | RaiseSignals
    ):
        raise E.NotAllowedInState("the session is suspended / 会话已暂停")
    handler = _HANDLERS.get(type(cmd))
    if handler is None:
        raise E.NotPermitted(f"unknown command {type(cmd).__name__}")
    return handler(state, cmd, now)


def _publish(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host", "centre")
    _require_state(state, "draft")
    t = state.timetable
    if not now < t.deadline or not t.sign_in_opens <= t.deadline:
        raise E.TimetableInvalid("sign_in_opens <= deadline and now < deadline")
    return [_ev("session_published", cmd.actor, ALL, timetable=t.model_dump(mode="json"))]


def _tick(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    events: list[NewEvent] = []
    current = state
    for _ in range(10):  # each pass fires one transition; a handful is the most that can be due
        step = _due_transition(current, now)
        if not step:
            break
        events += step
        for e in step:
            current = evolve(current, e, now)
    return events


def _due_transition(state: OpeningState, now: datetime) -> list[NewEvent]:
    t = state.timetable
    if state.status == "published" and now >= t.sign_in_opens and now < t.deadline:
        return [_ev("sign_in_opened", SERVER, ALL)]
    if state.status in BEFORE_DEADLINE and now >= t.deadline:
        return _seal(state)
    if state.status == "decrypting" and state.decrypt_closes_at and now >= state.decrypt_closes_at:
        return _close_decryption(state)
    if state.status == "confirming" and (due := next_due(state)) is not None and now >= due:
        return _close_confirmation(state)
    return []


def _seal(state: OpeningState) -> list[NewEvent]:
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


def _close_decryption(state: OpeningState) -> list[NewEvent]:
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


def build_table(state: OpeningState) -> dict[str, Any]:
    """唱标: the opening table (rule 10): one row per bid, in order of receipt."""
    rows = []
    fields = state.timetable.table_fields
    for bid in sorted(state.live_bids(), key=lambda b: (b.received_at, b.bidder)):
        s = bid.summary or {}
        extra = s.get("extra_fields") or {}
        rows.append(
            {
                "bidder": bid.bidder,
                "bidder_name": s.get("bidder_name") or bid.bidder_name,
                "status": bid.status,
                "price_fen": s.get("price_fen"),
                "duration_days": s.get("duration_days"),
                "quality": s.get("quality"),
                "project_manager": s.get("project_manager"),
                "fields": {f: extra.get(f) for f in fields},
                "security": bid.security.model_dump() if bid.security else None,
                "envelope_sha256": bid.envelope_sha256,
            }
        )
    return {"session_id": state.session_id, "lot_id": state.lot_id, "rows": rows}


def _close_confirmation(state: OpeningState) -> list[NewEvent]:
    """Rule 11: silence counts as confirmation when the confirmation window ends."""
    silent = sorted(
        b.bidder for b in state.live_bids() if b.status == "decrypted" and b.confirmation is None
    )
    return [_ev("confirmation_closed", SERVER, ALL, deemed=silent)]


def _join(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_role(cmd, *STAFF_ROLES)
    if state.present.get(cmd.actor.id) == cmd.actor.role:
        return []
    return [_ev("party_joined", cmd.actor, STAFF, role=cmd.actor.role, account=cmd.actor.id)]


def _leave(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_role(cmd, *STAFF_ROLES)
    if cmd.actor.id not in state.present:
        return []
    return [_ev("party_left", cmd.actor, STAFF, role=cmd.actor.role, account=cmd.actor.id)]


def _sign_in(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "bidder")
    _require_state(state, "sign_in", "sealed", "opening", "decrypting")
    if cmd.actor.id in state.signed_in:
        return []
    # Rule 4: before the deadline a sign-in is seen by the bidder alone.
    audience = (
        [bidder_tag(cmd.actor.id)] if state.status == "sign_in" else _bid_audience(cmd.actor.id)
    )
    origin = cmd.origin if isinstance(cmd, SignIn) else None
    return [_ev("bidder_signed_in", cmd.actor, audience, bidder=cmd.actor.id, **_origin(origin))]


def _before_deadline(state: OpeningState, now: datetime) -> None:
    """Rule 1: server time decides; an upload that finishes at or after the deadline is late."""
    if state.status == "draft":
        raise E.NotAllowedInState("the session is not published yet / 项目尚未发布")
    if state.status not in BEFORE_DEADLINE or now >= state.timetable.deadline:
        raise E.DeadlinePassed(f"deadline {iso(state.timetable.deadline)}")


def _upload(state: OpeningState, cmd: Upload, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "bidder")
    _before_deadline(state, now)
    old = state.bids.get(cmd.actor.id)
    replaces = old.envelope_sha256 if old is not None and old.status != "retracted" else None
    # Rules 2 and 4: the receipt goes to the bidder alone; nobody else learns a bid exists.
    return [
        _ev(
            "bid_uploaded",
            cmd.actor,
            [bidder_tag(cmd.actor.id)],
            bidder=cmd.actor.id,
            receipt=cmd.receipt,
            receipt_signature=cmd.receipt_signature,
            replaces=replaces,
            **_origin(cmd.origin),
        )
    ]


def _retract(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "bidder")
    _before_deadline(state, now)
    bid = _own_bid(state, cmd.actor.id)
    return [
        _ev(
            "bid_retracted",
            cmd.actor,
            [bidder_tag(cmd.actor.id)],
            bidder=cmd.actor.id,
            envelope_sha256=bid.envelope_sha256,
        )
    ]


def _rehearse(state: OpeningState, cmd: Rehearse, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "bidder")
    _require_state(state, *BEFORE_DEADLINE)
    bid = _own_bid(state, cmd.actor.id)
    return [
        _ev(
            "rehearsal_reported",
            cmd.actor,
            [bidder_tag(cmd.actor.id)],
            bidder=cmd.actor.id,
            envelope_sha256=bid.envelope_sha256,
            passed=cmd.passed,
            code=cmd.code,
            message=cmd.message,
            **_origin(cmd.origin),
        )
    ]


def _start(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    """Rule 6: only after the deadline and only while a supervisor is signed in."""
    _require_role(cmd, "host")
    if state.status in BEFORE_DEADLINE:
        raise E.BeforeDeadline(f"deadline {iso(state.timetable.deadline)}")
    _require_state(state, "sealed")
    if state.supervisors_present < 1:
        raise E.SupervisorAbsent()
    return [_ev("opening_started", cmd.actor, ALL, bids=len(state.live_bids()))]


def _open_decryption(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    """Rule 7: the decryption window (decrypt_minutes) opens."""
    _require_role(cmd, "host")
    _require_state(state, "opening")
    closes = now + timedelta(minutes=state.timetable.decrypt_minutes)
    return [_ev("decryption_opened", cmd.actor, ALL, closes_at=iso(closes))]


def _check_submit(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    """Rule 4 and 7: a content key is only taken in the window, for the sender's own bid."""
    _require_role(cmd, "bidder")
    if state.status in BEFORE_DEADLINE:
        raise E.BeforeDeadline()
    if state.status != "decrypting":
        raise E.WindowClosed("decryption is not open / 解密未开始或已结束")
    if state.decrypt_closes_at is not None and now >= state.decrypt_closes_at:
        raise E.WindowClosed()
    bid = _own_bid(state, cmd.actor.id)
    if bid.status == "decrypted":
        raise E.AlreadyDone("already decrypted / 已解密")
    return []


def _decryption_result(state: OpeningState, cmd: DecryptionResult, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "server")
    if cmd.via == "backup":
        # Rule 9: only named bids of a completed quorum request, after the deadline.
        if state.status in BEFORE_DEADLINE:
            raise E.BeforeDeadline()
        _require_state(state, "opening", "decrypting")
        named = {b for r in state.backup_requests.values() if r.done for b in r.bidders}
        if cmd.bidder not in named:
            raise E.BackupUnavailable(f"{cmd.bidder} is not named in an approved request")
    else:
        _check_submit(state, SubmitKey(actor=Actor(role="bidder", id=cmd.bidder)), cmd.submitted_at)
        if state.status != "decrypting":
            raise E.WindowClosed()
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
        at=iso(cmd.submitted_at), ok=False, code=cmd.code, cause=cmd.cause, message=cmd.message
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
    _require_role(cmd, "host", "centre")
    _require_state(state, "opening", "decrypting")
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
    if cmd.security.kind == "deposit":
        _require_role(cmd, "centre")
    else:
        _require_role(cmd, "server")
    if state.status not in (*BEFORE_DEADLINE, "sealed", "opening", "decrypting"):
        raise E.NotAllowedInState(f"status is {state.status}")
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
    """Rule 9: after the deadline, for named bids, with a reason."""
    _require_role(cmd, "host")
    if state.status in BEFORE_DEADLINE:
        raise E.BeforeDeadline()
    _require_state(state, "opening", "decrypting")
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
    _require_role(cmd, *STAFF_ROLES)
    _require_state(state, "opening", "decrypting")
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


def _object(state: OpeningState, cmd: Object, now: datetime) -> list[NewEvent]:
    """Rule 11: objections are raised in the hall and recorded."""
    _require_role(cmd, "bidder")
    if state.status == "suspended":
        if state.suspended_from not in OBJECTIONS_OPEN:
            raise E.NotAllowedInState()
    else:
        _require_state(state, *OBJECTIONS_OPEN)
    if state.record_pending or state.record_sha256 is not None:
        # Rules 11-12: the record is being made; an objection now would be left out of it.
        raise E.WindowClosed("the opening record is being made / 开标记录已在生成")
    if cmd.actor.id not in state.bids:
        raise E.NoBid()
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
    _require_role(cmd, "host")
    if not 1 <= cmd.objection_id <= len(state.objections):
        raise E.UnknownObjection()
    objection = state.objections[cmd.objection_id - 1]
    if objection.reply is not None:
        raise E.AlreadyDone("already answered / 已答复")
    if state.record_sha256 is not None:
        raise E.NotAllowedInState("the record has been generated / 开标记录已生成")
    audience = (
        ALL if objection.public or state.table is not None else _bid_audience(objection.bidder)
    )
    return [
        _ev(
            "objection_answered",
            cmd.actor,
            audience,
            id=objection.id,
            bidder=objection.bidder,
            text=cmd.text.strip(),
        )
    ]


def _open_confirmation(state: OpeningState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host")
    _require_state(state, "announcing")
    if any(o.reply is None for o in state.objections):
        raise E.ObjectionsPending()
    closes = now + timedelta(minutes=state.timetable.confirm_minutes)
    return [_ev("confirmation_opened", cmd.actor, ALL, closes_at=iso(closes))]


def _confirm(state: OpeningState, cmd: Confirm, now: datetime) -> list[NewEvent]:
    """Rule 11: a bidder confirms the table with its CA signature (checked by the caller)."""
    _require_role(cmd, "bidder")
    _require_state(state, "confirming")
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
    _require_role(cmd, "server")
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
    _require_role(cmd, "host", "supervisor")
    _require_state(state, "confirming")
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
    _require_role(cmd, "host", "supervisor")
    _require_state(state, *ACTIVE)
    return [
        _ev("session_suspended", cmd.actor, ALL, reason=_reason(cmd.reason), previous=state.status)
    ]


def _resume(state: OpeningState, cmd: Resume, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host", "supervisor")
    _require_state(state, "suspended")
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


def raise_signals(raised: list[str], cmd: Any, signals: list[dict[str, Any]]) -> list[NewEvent]:
    """The ``signal`` events of warnings not raised yet (shared with the evaluation).

    Supervisors alone see them (the issue: "nobody else sees them"), and nothing folds them into
    the state but their ids, so no warning changes an outcome by itself."""
    _require_role(cmd, "server")
    seen = set(raised)
    events = []
    for signal in signals:
        ident = signal.get("id")
        if not isinstance(ident, str) or ident in seen:
            continue
        seen.add(ident)
        events.append(_ev("signal", cmd.actor, SUPERVISORS, **signal))
    return events


def _raise_signals(state: OpeningState, cmd: RaiseSignals, now: datetime) -> list[NewEvent]:
    return raise_signals(state.signals_raised, cmd, cmd.signals)


def _extend(state: OpeningState, cmd: Extend, now: datetime) -> list[NewEvent]:
    """Rule 13: extending a window needs a reason and is an event every party sees."""
    _require_role(cmd, "host")
    window = {
        "published": "deadline",
        "sign_in": "deadline",
        "decrypting": "decryption",
        "confirming": "confirmation",
    }.get(state.status)
    if window is None:
        raise E.NotAllowedInState(f"no window to extend in status {state.status}")
    if window == "confirmation" and (state.record_pending or state.record_sha256):
        raise E.WindowClosed()
    closes = {
        "deadline": state.timetable.deadline,
        "decryption": state.decrypt_closes_at,
        "confirmation": state.confirm_closes_at,
    }[window]
    if closes is not None and now >= closes:
        # The scheduler may not have fired yet; server time has already closed the window.
        if window == "deadline":
            raise E.DeadlinePassed(f"deadline {iso(closes)}")
        raise E.WindowClosed(f"{window} closed at {iso(closes)}")
    return [
        _ev(
            "window_extended",
            cmd.actor,
            ALL,
            window=window,
            minutes=cmd.minutes,
            reason=_reason(cmd.reason),
        )
    ]


_HANDLERS: dict[type[Command], Any] = {
    Publish: _publish,
    Tick: _tick,
    Join: _join,
    Leave: _leave,
    SignIn: _sign_in,
    Upload: _upload,
    Retract: _retract,
    Rehearse: _rehearse,
    Start: _start,
    OpenDecryption: _open_decryption,
    SubmitKey: _check_submit,
    DecryptionResult: _decryption_result,
    RecordIncident: _record_incident,
    SetSecurity: _set_security,
    RequestBackup: _request_backup,
    ApproveBackup: _approve_backup,
    Object: _object,
    Reply: _reply,
    OpenConfirmation: _open_confirmation,
    Confirm: _confirm,
    GenerateRecord: _generate_record,
    SignRecord: _sign_record,
    Suspend: _suspend,
    Resume: _resume,
    Extend: _extend,
    RaiseSignals: _raise_signals,
}


# --- evolving -----------------------------------------------------------------------------------


def new_session(
    session_id: str, lot_id: str, timetable: Timetable, title: str = ""
) -> OpeningState:
    return OpeningState(session_id=session_id, lot_id=lot_id, timetable=timetable, title=title)


def evolve(state: OpeningState, event: NewEvent, at: datetime | None) -> OpeningState:
    """Fold one event into the state (a copy; the input is not changed).

    ``at`` is the event's instant; it is needed only by events that open a window or pause.
    """
    s = state.model_copy(deep=True)
    p = event.payload
    t = event.type
    if t == "session_published":
        s.status = "sign_in" if at is not None and at >= s.timetable.sign_in_opens else "published"
    elif t == "sign_in_opened":
        s.status = "sign_in"
    elif t == "session_sealed":
        s.status = "sealed"
    elif t == "session_failed":
        s.status = "failed"
    elif t == "party_joined":
        s.present[p["account"]] = p["role"]
    elif t == "party_left":
        s.present.pop(p["account"], None)
    elif t == "bidder_signed_in":
        s.signed_in.append(p["bidder"])
    elif t == "bid_uploaded":
        r = p["receipt"]
        s.bids[p["bidder"]] = Bid(
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
    elif t == "opening_started":
        s.status = "opening"
    elif t == "decryption_opened":
        s.status = "decrypting"
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
    elif t == "decryption_closed":
        s.status = "announcing"
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
        s.status = "confirming"
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
    elif t == "record_published":
        s.status = "closed"
    elif t == "session_suspended":
        s.suspended_from = s.status
        s.suspended_at = at
        s.status = "suspended"
    elif t == "session_resumed":
        shift = timedelta(microseconds=p["paused_microseconds"])
        paused_at = s.suspended_at
        s.status = p["status"]
        s.suspended_from = None
        s.suspended_at = None
        _shift_future(s, shift, paused_at)
    elif t == "signal":
        s.signals_raised.append(p["id"])
    elif t == "window_extended":
        extra = timedelta(minutes=p["minutes"])
        if p["window"] == "deadline":
            s.timetable.deadline += extra
        elif p["window"] == "decryption" and s.decrypt_closes_at is not None:
            s.decrypt_closes_at += extra
        elif p["window"] == "confirmation" and s.confirm_closes_at is not None:
            s.confirm_closes_at += extra
    # bids_counted, checkpoint, session_created and others change nothing here.
    return s


def _shift_future(s: OpeningState, shift: timedelta, paused_at: datetime | None) -> None:
    """Rule 13 / DESIGN section 5: deadlines that had not passed when paused move by the pause.

    A deadline that had already passed (the scheduler had not fired yet) stays passed: moving it
    would reopen uploads or a window after server time had closed it.
    """

    def pending(at: datetime) -> bool:
        return paused_at is None or at > paused_at

    status = s.status
    if status in BEFORE_DEADLINE and pending(s.timetable.deadline):
        s.timetable.deadline += shift
        if status == "published" and pending(s.timetable.sign_in_opens):
            s.timetable.sign_in_opens += shift
    if status == "decrypting" and s.decrypt_closes_at and pending(s.decrypt_closes_at):
        s.decrypt_closes_at += shift
    if status == "confirming" and s.confirm_closes_at and pending(s.confirm_closes_at):
        s.confirm_closes_at += shift


def next_due(state: OpeningState) -> datetime | None:
    """The next instant at which time alone changes this session (None: nothing pending)."""
    s = state.status
    if s == "published":
        return min(state.timetable.sign_in_opens, state.timetable.deadline)
    if s == "sign_in":
        return state.timetable.deadline
    if s == "decrypting":
        return state.decrypt_closes_at
    if s == "confirming" and not state.record_pending and state.record_sha256 is None:
        return state.confirm_closes_at
    return None


# --- the record ---------------------------------------------------------------------------------


def build_record(state: OpeningState, head_seq: int, head_hash: str) -> dict[str, Any]:
    """开标记录 (rule 12): what happened at the opening, as a document the parties sign."""
    return {
        "format": "bidbridge-opening-record",
        "version": 1,
        "session_id": state.session_id,
        "lot_id": state.lot_id,
        "title": state.title,
        "timetable": state.timetable.model_dump(mode="json"),
        "table": state.table,
        "table_sha256": state.table_sha256,
        "bids": [
            {
                "bidder": b.bidder,
                "status": b.status,
                "envelope_sha256": b.envelope_sha256,
                "received_at": b.received_at,
                "via": b.via,
                "confirmation": b.confirmation,
                "attempts": [a.model_dump() for a in b.attempts],
            }
            for b in sorted(state.live_bids(), key=lambda b: b.bidder)
        ],
        "objections": [o.model_dump() for o in state.objections],
        "incidents": [i.model_dump() for i in state.incidents],
        "log_head": {"seq": head_seq, "hash": head_hash},
    }


def record_text(record: dict[str, Any]) -> str:
    """The opening record as a readable document (Chinese first, English after)."""
    lines = [
        "开标记录 / Opening record",
        f"项目标段 / Lot: {record['lot_id']}  {record.get('title', '')}",
        f"会话 / Session: {record['session_id']}",
        f"投标截止 / Deadline: {record['timetable']['deadline']}",
        "",
        "开标一览表 / Opening table:",
    ]
    table = record.get("table") or {"rows": []}
    for i, row in enumerate(table["rows"], 1):
        price = row.get("price_fen")
        price_text = f"{price // 100}.{price % 100:02d} 元" if isinstance(price, int) else "-"
        lines.append(
            f"  {i}. {row.get('bidder_name') or row['bidder']} ({row['bidder']})  "
            f"状态/status: {row['status']}  报价/price: {price_text}  "
            f"工期/duration: {row.get('duration_days') or '-'}  质量/quality: {row.get('quality') or '-'}  "
            f"项目经理/PM: {row.get('project_manager') or '-'}"
        )
    lines.append("")
    lines.append("异议及答复 / Objections and replies:")
    if not record["objections"]:
        lines.append("  无 / none")
    for o in record["objections"]:
        lines.append(f"  #{o['id']} {o['bidder']}: {o['text']}")
        lines.append(f"     答复 / reply: {o.get('reply') or '-'}")
    lines.append("")
    lines.append("确认 / Confirmations:")
    for b in record["bids"]:
        lines.append(f"  {b['bidder']}: {b['status']}, {b.get('confirmation') or '-'}")
    if record["incidents"]:
        lines.append("")
        lines.append("平台故障记录 / Platform incidents:")
        for inc in record["incidents"]:
            lines.append(f"  {inc['at']} {inc['reason']} ({', '.join(inc['bidders'])})")
    lines.append("")
    head = record["log_head"]
    lines.append(f"事件日志 / Event log head: seq {head['seq']} hash {head['hash']}")
    return "\n".join(lines) + "\n"
