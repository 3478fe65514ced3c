"""Remote cross-region evaluation (远程异地评标) of one lot as a pure state machine.

Like :mod:`server.domain.opening`: :func:`decide` takes a state, a command and ``now`` and answers
with events or a :class:`~server.domain.errors.Refusal`; :func:`evolve` folds an event into the
state; :func:`next_due` names the next instant at which time alone changes something. The draw
itself is :mod:`server.domain.draw`, review and scoring are :mod:`server.domain.scoring`; this
file decides who may do what, when, and what the record says about it.

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
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.events import NewEvent
from schemas.experts import DrawRequest, DrawResult, Expert, Site
from schemas.scoring import (
    DeviationThreshold,
    LowestPriceConfig,
    MethodConfig,
    PriceAdjustment,
    ReviewItem,
    ReviewOutcome,
    ReviewSheet,
    ScoreSheet,
)
from schemas.time import iso, parse_iso
from server.domain import draw as D
from server.domain import errors as E
from server.domain import scoring as SC
from server.domain.common import event as _ev
from server.domain.common import reason_text as _reason
from server.domain.common import require_role as _require_role
from server.domain.common import require_state as _require_state
from server.domain.common import sha256_json
from server.domain.errors import Refusal
from server.domain.opening import raise_signals

Status = Literal[
    "draft",
    "drawing",
    "convening",
    "evaluating",
    "summarizing",
    "signing",
    "closed",
    "void",
    "suspended",
]
Role = Literal["host", "supervisor", "centre", "room", "expert", "server"]
EVALUATION_ROLES = ("host", "supervisor", "centre", "room", "expert")
ACTIVE: tuple[Status, ...] = ("drawing", "convening", "evaluating", "summarizing", "signing")
SUSPEND_LIMIT = timedelta(hours=4)
STAGES = ("qualification", "preliminary", "detailed")
"""资格审查 · 初步评审 · 详细评审 (for lowest evaluated price, the detailed stage holds the price
adjustments the experts find)."""

ALL: list[str] = ["all"]
STAFF: list[str] = ["staff"]
SUPERVISOR: list[str] = ["supervisor"]


def expert_tag(expert_id: str) -> str:
    return f"expert:{expert_id}"


def room_tag(room_id: str) -> str:
    return f"room:{room_id}"


def admitted(state: EvaluationState, role: str, party_id: str) -> bool:
    """Who may see this evaluation at all: staff, its drawn rooms, its own committee members."""
    if role in ("host", "supervisor", "centre"):
        return True
    if role == "room":
        return party_id in state.rooms
    if role == "expert":
        member = state.members.get(party_id)
        return member is not None and member.status in ("signed_in", "no_key", "drawn")
    return False


def viewer_tags(role: str, party_id: str) -> frozenset[str]:
    if role in ("host", "centre"):
        return frozenset({"staff", role})
    if role == "supervisor":
        return frozenset({"staff", "supervisor"})
    if role == "expert":
        return frozenset({"committee", expert_tag(party_id)})
    if role == "room":
        return frozenset({room_tag(party_id)})
    return frozenset()


# --- refusals -------------------------------------------------------------------------------------


class EntropyGiven(Refusal):
    code = "ENTROPY_GIVEN"
    status = 409
    zh = "您已提交过随机数"
    en = "you have already added your entropy"


class EntropyMissing(Refusal):
    code = "ENTROPY_MISSING"
    status = 409
    zh = "监督人员和主持人都提交随机数后才能抽取"
    en = "the draw needs the supervisor's and the host's entropy first"


class CommitmentMismatch(Refusal):
    code = "COMMITMENT_MISMATCH"
    status = 409
    zh = "服务器随机数与抽取前公布的承诺不符"
    en = "the server's random value does not match the commitment published before the draw"


class NotAMember(Refusal):
    code = "NOT_A_MEMBER"
    status = 403
    zh = "您不是本评标委员会成员"
    en = "you are not on this committee"


class WrongRoom(Refusal):
    code = "WRONG_ROOM"
    status = 403
    zh = "该专家不在本评标室签到"
    en = "this expert is not assigned to this evaluation room"


class NotSignedIn(Refusal):
    code = "MEMBERS_NOT_SIGNED_IN"
    status = 409
    zh = "仍有评标委员会成员未签到"
    en = "some committee members have not signed in"


class NotChair(Refusal):
    code = "NOT_CHAIR"
    status = 403
    zh = "只有评标委员会主任可以执行此操作"
    en = "only the chair may do this"


class WrongStage(Refusal):
    code = "WRONG_STAGE"
    status = 409
    zh = "当前评审阶段不是该阶段"
    en = "that is not the current stage"


class SheetsMissing(Refusal):
    code = "SHEETS_MISSING"
    status = 409
    zh = "仍有成员未提交本阶段评审表"
    en = "some members have not submitted this stage's sheet"


class NoDeviation(Refusal):
    code = "NO_DEVIATION"
    status = 409
    zh = "该专家的评分未超出偏差阈值，不能要求复核"
    en = "this expert's scores are within the threshold: no re-score can be called"


class SheetInvalid(Refusal):
    code = "SHEET_INVALID"
    status = 422
    zh = "评审表格式不正确"
    en = "the sheet is not in the expected form"


class NotYourDraft(Refusal):
    code = "NOT_YOUR_DRAFT"
    status = 403
    zh = "只能查看本人（或本评标室专家）的待签名文件"
    en = "only one's own draft (or, for a room device, its own experts' drafts) can be seen"


class DocumentsClosed(Refusal):
    code = "DOCUMENTS_CLOSED"
    status = 409
    zh = "评标开始后，评标委员会成员才能查阅投标文件"
    en = "the bid documents open to the committee's members once the evaluation has started"


class SuspendedTooLong(Refusal):
    code = "SUSPENDED_TOO_LONG"
    status = 409
    zh = "暂停超过4小时，评标作废，须重新组建评标委员会"
    en = "suspended for more than four hours: the evaluation is void and the committee must be re-formed"


# --- state ----------------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timetable(_Model):
    convene_at: AwareDatetime = Field(description="when members are expected signed in (集合时间)")
    grace_minutes: int = Field(default=30, ge=1, le=24 * 60, description="late -> absent after")


class EvalConfig(_Model):
    method: MethodConfig
    review_items: list[ReviewItem] = Field(default_factory=list)
    draw: DrawRequest
    owner_reps: list[str] = Field(
        default_factory=list, description="业主代表 person ids, appointed by the tenderer"
    )
    rescore_threshold_points: int = Field(
        default=2000,
        ge=0,
        description="hundredths of a point beyond which a re-score may be called",
    )


class BidEntry(_Model):
    """A bid that came out of the opening decrypted (the evaluation's input)."""

    bidder: str
    name: str = ""
    price_fen: int
    envelope_sha256: str
    summary: dict[str, Any] = Field(default_factory=dict)


class Member(_Model):
    id: str
    kind: Literal["expert", "owner_rep"] = "expert"
    name: str = ""
    category: str = ""
    site_id: str = ""
    room_id: str = ""
    status: Literal["drawn", "signed_in", "declined", "absent", "no_key", "replaced"] = "drawn"
    due_by: str | None = None
    signed_in_at: str | None = None
    late: bool = False
    cert_sha256: str | None = None
    replaces: str | None = None
    replaced_by: str | None = None


class Sheet(_Model):
    expert: str
    stage: str
    sha256: str
    signature: str
    content: dict[str, Any]
    at: str
    round: int = 1


class ReportSignature(_Model):
    agree: bool
    reason: str = ""
    signature: str | None = None
    deemed: bool = False
    at: str


class DrawState(_Model):
    commitment: str
    entropy: dict[str, str] = Field(default_factory=dict, description="role -> hex")
    server_random: str | None = None
    seed: str | None = None
    pool_sha256: str | None = None
    pool_blob: str | None = None
    result: dict[str, Any] | None = None


class EvaluationState(_Model):
    session_id: str
    lot_id: str
    opening_session_id: str
    title: str = ""
    status: Status = "draft"
    timetable: Timetable
    config: EvalConfig
    tenderer_credit_code: str = ""
    tenderer_name: str = ""
    bids: dict[str, BidEntry] = Field(default_factory=dict)
    draw: DrawState | None = None
    members: dict[str, Member] = Field(default_factory=dict)
    rooms: dict[str, dict[str, Any]] = Field(default_factory=dict, description="drawn rooms")
    present: dict[str, str] = Field(default_factory=dict, description="account id -> role")
    chair: str | None = None
    votes: dict[str, str] = Field(default_factory=dict)
    stage: str | None = None
    outcomes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    sheets: dict[str, dict[str, Sheet]] = Field(default_factory=dict)
    reopened: dict[str, list[str]] = Field(default_factory=dict, description="stage -> experts")
    rescores: list[dict[str, Any]] = Field(default_factory=list)
    ranking: dict[str, Any] | None = None
    ranking_sha256: str | None = None
    report_sha256: str | None = None
    report_signatures: dict[str, ReportSignature] = Field(default_factory=dict)
    warnings: list[dict[str, Any]] = Field(default_factory=list)
    to_sign: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="expert -> the draft waiting for the expert's signature at the room device",
    )
    sign_requests: int = 0
    segments: int = 0
    suspended_from: Status | None = None
    suspended_at: datetime | None = None
    void_reason: str | None = None
    signals_raised: list[str] = Field(
        default_factory=list, description="ids of the warnings (signal events) already recorded"
    )

    def committee(self) -> list[Member]:
        """Members who count: drawn or signed in (not declined, absent or replaced)."""
        return [m for m in self.members.values() if m.status in ("drawn", "signed_in", "no_key")]

    @property
    def supervisors_present(self) -> int:
        return sum(1 for role in self.present.values() if role == "supervisor")

    def stages(self) -> list[str]:
        items = {i.stage for i in self.config.review_items}
        return [s for s in STAGES if s in items or s == "detailed"]


# --- commands -------------------------------------------------------------------------------------


class Actor(_Model):
    role: Role
    id: str


SERVER = Actor(role="server", id="server")


class Command(_Model):
    actor: Actor


class Tick(Command):
    pass


class Join(Command):
    pass


class Leave(Command):
    pass


class RoomLink(Command):
    """A room device's live link to the lead site came up or went down."""

    up: bool


class BeginDraw(Command):
    """The host asks for the draw; the server has committed to its random value."""

    commitment: str = Field(pattern=r"^[0-9a-f]{64}$")


class AddEntropy(Command):
    value: str = Field(pattern=r"^[0-9a-f]{64}$")


class Draw(Command):
    """The server reveals its random value and draws (the API passes the pool and sites)."""

    server_random: str = Field(pattern=r"^[0-9a-f]{64}$")
    pool: list[Expert]
    sites: list[Site]
    pool_blob: str


class Decline(Command):
    """An expert drawn declines (or cannot be reached): the next spare is drawn (recorded)."""

    expert_id: str
    reason: str


class ExpertSignIn(Command):
    """签到: the room device signs an expert in with the expert's own CA key."""

    expert_id: str
    name: str = ""
    cert_sha256: str
    signature: str = Field(default="", description="the expert's signed sign-in document")
    nonce: str = ""


class NoKey(Command):
    """The expert came without a CA key: recorded against the expert (seed 002 第十六条)."""

    expert_id: str


class Replace(Command):
    """Replace a member who cannot serve (no key, illness) by the next spare."""

    expert_id: str
    reason: str


class StartEvaluation(Command):
    pass


class Vote(Command):
    """推选评标委员会主任: a member's vote for the chair."""

    candidate: str


class SubmitSheet(Command):
    stage: str
    content: dict[str, Any]
    signature: str


class RequestSignature(Command):
    """The expert desk (a browser, which holds no CA key) hands a draft to the expert's room
    device: a sheet for the current stage, or the expert's answer to the report. The room
    device's agent signs it with the expert's own key and submits it through the ordinary
    route; until then the draft is pending (待签名), seen by the expert and that room only."""

    kind: Literal["sheet", "report"]
    stage: str = ""
    content: dict[str, Any] = Field(default_factory=dict)
    agree: bool = True
    reason: str = ""


class CallRescore(Command):
    expert_id: str
    reason: str


class CloseStage(Command):
    pass


class Summarize(Command):
    """The chair closes the evaluation's scoring; for lowest evaluated price, with the price
    adjustments the committee agreed on (评审价格调整)."""

    adjustments: list[PriceAdjustment] = Field(default_factory=list)


class GenerateReport(Command):
    report_sha256: str
    signature: str


class SignReport(Command):
    agree: bool
    reason: str = ""
    signature: str


class RefuseToSign(Command):
    reason: str = ""


class Warn(Command):
    text: str = Field(min_length=1, max_length=2000)


class Suspend(Command):
    reason: str


class Resume(Command):
    reason: str


class RecordSegment(Command):
    room_id: str
    index: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)
    started_at: str
    ended_at: str
    error: str | None = None
    backend: str | None = Field(
        default=None, pattern=r"^(builtin|janus)$", description="the media backend that recorded it"
    )


# --- helpers --------------------------------------------------------------------------------------


def _member(state: EvaluationState, member_id: str) -> Member:
    m = state.members.get(member_id)
    if m is None or m.status in ("declined", "absent", "replaced"):
        raise NotAMember(member_id)
    return m


def _signed_in_member(state: EvaluationState, cmd: Command) -> Member:
    _require_role(cmd, "expert")
    m = _member(state, cmd.actor.id)
    if m.status != "signed_in":
        raise NotSignedIn(cmd.actor.id)
    return m


def _require_chair(state: EvaluationState, cmd: Command) -> None:
    _signed_in_member(state, cmd)
    if state.chair != cmd.actor.id:
        raise NotChair()


def _member_audience(m: Member) -> list[str]:
    return ["supervisor", expert_tag(m.id), room_tag(m.room_id)] if m.room_id else SUPERVISOR


def _member_view(m: Member) -> dict[str, Any]:
    return m.model_dump(mode="json")


# --- review and scoring (server.domain.scoring, on the sheets' JSON) -----------------------------


def _items(state: EvaluationState, stage: str) -> list[ReviewItem]:
    method = state.config.method
    if stage == "detailed" and isinstance(method, LowestPriceConfig):
        return list(method.items)
    return [i for i in state.config.review_items if i.stage == stage]


def _scored(state: EvaluationState, stage: str) -> bool:
    """The comprehensive method's detailed stage is scored; every other stage is pass/fail."""
    return stage == "detailed" and not isinstance(state.config.method, LowestPriceConfig)


def _parse_sheet(
    state: EvaluationState, stage: str, expert: str, content: dict[str, Any]
) -> ReviewSheet | ScoreSheet:
    try:
        sheet: ReviewSheet | ScoreSheet = (
            ScoreSheet.model_validate(content)
            if _scored(state, stage)
            else ReviewSheet.model_validate(content)
        )
    except ValueError as exc:
        raise SheetInvalid(str(exc)[:500]) from None
    if sheet.expert != expert or sheet.stage != stage:
        raise SheetInvalid("expert or stage differs from the submitter's / 专家或阶段与提交者不符")
    return sheet


def _check_sheet(state: EvaluationState, stage: str, bids: list[str], sheet: Any) -> None:
    method = state.config.method
    if isinstance(sheet, ScoreSheet):
        assert not isinstance(method, LowestPriceConfig)
        SC.check_score_sheet(sheet, bids, method.criteria)
    else:
        SC.check_review_sheet(sheet, bids, _items(state, stage))


def _score_sheets(state: EvaluationState, stage: str = "detailed") -> list[ScoreSheet]:
    return [
        ScoreSheet.model_validate(s.content) for _, s in sorted(state.sheets.get(stage, {}).items())
    ]


def _review_sheets(state: EvaluationState, stage: str) -> list[ReviewSheet]:
    return [
        ReviewSheet.model_validate(s.content)
        for _, s in sorted(state.sheets.get(stage, {}).items())
    ]


def _stage_outcome(state: EvaluationState, stage: str, bids: list[str]) -> dict[str, Any]:
    if _scored(state, stage):
        return {"kind": "scores", "passed": bids, "sheets": len(state.sheets.get(stage, {}))}
    outcome = SC.review_outcome(_review_sheets(state, stage), bids, _items(state, stage))
    passed = [b.bidder for b in outcome.bids if b.passed]
    return {"kind": "review", "passed": passed, "outcome": outcome.model_dump(mode="json")}


def _deviations(state: EvaluationState, stage: str) -> list[dict[str, Any]]:
    method = state.config.method
    if not _scored(state, stage) or isinstance(method, LowestPriceConfig):
        return []
    threshold = DeviationThreshold(points_x100=state.config.rescore_threshold_points)
    found = SC.deviations(_score_sheets(state, stage), method.criteria, threshold)
    return [d.model_dump(mode="json") for d in found]


def _ranking(state: EvaluationState, adjustments: list[PriceAdjustment]) -> dict[str, Any]:
    method = state.config.method
    reviews = [
        ReviewOutcome.model_validate(state.outcomes[stage]["outcome"])
        for stage in state.stages()
        if state.outcomes.get(stage, {}).get("kind") == "review"
    ]
    prices = {b: e.price_fen for b, e in state.bids.items()}
    ranking = SC.rank(
        method,
        prices,
        reviews,
        _score_sheets(state) if not isinstance(method, LowestPriceConfig) else (),
        adjustments,
    )
    return SC.ranking_document(method, ranking, reviews)


# --- deciding -------------------------------------------------------------------------------------


def decide(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    """The events ``cmd`` causes at ``now``, or a :class:`Refusal`."""
    if state.status == "suspended" and not isinstance(
        cmd, Resume | Join | Leave | Tick | Warn | RecordSegment | RoomLink | RaiseSignals
    ):
        raise E.NotAllowedInState("the evaluation is suspended / 评标已暂停")
    handler = _HANDLERS.get(type(cmd))
    if handler is None:
        raise E.NotPermitted(f"unknown command {type(cmd).__name__}")
    return handler(state, cmd, now)


def _tick(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    # Eval rule 9: suspended for more than four hours -> void, re-form the committee.
    if (
        state.status == "suspended"
        and state.suspended_at
        and now >= state.suspended_at + (SUSPEND_LIMIT)
    ):
        return [
            _ev(
                "evaluation_void",
                SERVER,
                ALL,
                reason="suspended_over_4h",
                suspended_at=iso(state.suspended_at),
            )
        ]
    if state.status != "convening":
        return []
    # Eval rule 5: a member not signed in by the deadline is recorded absent and replaced.
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


def _join(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host", "supervisor", "centre")
    if state.present.get(cmd.actor.id) == cmd.actor.role:
        return []
    return [_ev("party_joined", cmd.actor, STAFF, account=cmd.actor.id, role=cmd.actor.role)]


def _leave(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    if cmd.actor.id not in state.present:
        return []
    return [_ev("party_left", cmd.actor, STAFF, account=cmd.actor.id, role=cmd.actor.role)]


def _room_link(state: EvaluationState, cmd: RoomLink, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "room")
    room = state.rooms.get(cmd.actor.id)
    if room is None:
        raise E.NotPermitted("this room is not drawn for this evaluation / 本评标室未被抽中")
    if bool(room.get("up")) == cmd.up:
        return []
    audience = ["supervisor", room_tag(cmd.actor.id)]
    return [_ev("room_link", cmd.actor, audience, room_id=cmd.actor.id, up=cmd.up)]


def _begin_draw(state: EvaluationState, cmd: BeginDraw, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host", "centre")
    _require_state(state, "draft")
    # Eval rule 1: the server commits to its random value before anyone adds entropy.
    return [_ev("draw_committed", cmd.actor, ALL, commitment=cmd.commitment)]


def _add_entropy(state: EvaluationState, cmd: AddEntropy, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host", "supervisor")
    _require_state(state, "drawing")
    assert state.draw is not None
    if cmd.actor.role in state.draw.entropy:
        raise EntropyGiven()
    if cmd.actor.role == "supervisor" and state.present.get(cmd.actor.id) != "supervisor":
        raise E.SupervisorAbsent("join the session first / 请先进入会话")
    return [_ev("draw_entropy", cmd.actor, ALL, role=cmd.actor.role, value=cmd.value)]


def _draw(state: EvaluationState, cmd: Draw, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "server")
    _require_state(state, "drawing")
    assert state.draw is not None
    if set(state.draw.entropy) != {"host", "supervisor"}:
        raise EntropyMissing()
    server_random = bytes.fromhex(cmd.server_random)
    # Eval rule 1: the revealed value must be the one committed to.
    if D.commitment(server_random) != state.draw.commitment:
        raise CommitmentMismatch()
    if state.supervisors_present == 0:
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


def _replace(state: EvaluationState, expert_id: str, reason: str, now: datetime) -> list[NewEvent]:
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


def _decline(state: EvaluationState, cmd: Decline, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "centre", "host")
    _require_state(state, "convening")
    reason = _reason(cmd.reason)  # before the lookup: a refusal must not tell who was drawn
    m = _member(state, cmd.expert_id)
    if m.status != "drawn":
        raise E.AlreadyDone("the expert has signed in / 专家已签到")
    return [
        _ev("member_declined", cmd.actor, SUPERVISOR, expert_id=m.id, reason=reason),
        *_replace(state, m.id, f"declined / 拒绝参加: {reason}", now),
    ]


def _expert_sign_in(state: EvaluationState, cmd: ExpertSignIn, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "room")
    _require_state(state, "convening", "evaluating")
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


def _no_key(state: EvaluationState, cmd: NoKey, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "room")
    _require_state(state, "convening")
    m = state.members.get(cmd.expert_id)
    if m is None or m.room_id != cmd.actor.id:
        raise NotAMember(cmd.expert_id)  # the same answer for another room's member
    if m.status != "drawn":
        raise E.AlreadyDone(f"the member is {m.status} / 该成员状态为 {m.status}")
    # Eval rule 2: the record names the expert to the supervisor, the expert and the room only.
    return [_ev("member_no_key", cmd.actor, _member_audience(m), expert_id=m.id)]


def _replace_cmd(state: EvaluationState, cmd: Replace, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "centre", "host")
    _require_state(state, "convening")
    reason = _reason(cmd.reason)  # before the lookup: a refusal must not tell who was drawn
    m = _member(state, cmd.expert_id)
    if m.status == "signed_in":
        raise E.AlreadyDone("the expert has signed in / 专家已签到")
    return _replace(state, m.id, reason, now)


def _start(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host")
    _require_state(state, "convening")
    # Eval rule 4: a supervisor present and every member signed in before evaluating.
    if state.supervisors_present == 0:
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
    _require_state(state, "evaluating")
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


def _bids_in_stage(state: EvaluationState, stage: str) -> list[str]:
    """The bids still in the running at ``stage``: those that passed every earlier stage."""
    bids = sorted(state.bids)
    for earlier in state.stages():
        if earlier == stage:
            break
        passed = set(state.outcomes.get(earlier, {}).get("passed", []))
        bids = [b for b in bids if b in passed]
    return bids


def _submit_sheet(state: EvaluationState, cmd: SubmitSheet, now: datetime) -> list[NewEvent]:
    _require_state(state, "evaluating")
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
    _check_sheet(
        state, stage, _bids_in_stage(state, stage), _parse_sheet(state, stage, m.id, content)
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
    _require_state(state, "evaluating")
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
    mine = [d for d in _deviations(state, stage) if d["expert"] == cmd.expert_id]
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
    _require_state(state, "evaluating")
    _require_chair(state, cmd)
    stage = state.stage or ""
    if stage == "chair":
        raise WrongStage()
    members = [m.id for m in state.committee()]
    sheets = state.sheets.get(stage, {})
    reopened = state.reopened.get(stage, [])
    if any(mid not in sheets for mid in members) or reopened:
        raise SheetsMissing(f"{len([x for x in members if x not in sheets]) + len(reopened)}")
    outcome = _stage_outcome(state, stage, _bids_in_stage(state, stage))
    events = [_ev("stage_concluded", cmd.actor, ["committee", "staff"], stage=stage, **outcome)]
    stages = state.stages()
    nxt = stages[stages.index(stage) + 1] if stages.index(stage) + 1 < len(stages) else None
    if nxt is not None:
        events.append(_ev("stage_opened", SERVER, ALL, stage=nxt))
    else:
        events.append(_ev("evaluation_summarizing", SERVER, ALL))
    return events


def _summarize(state: EvaluationState, cmd: Command, now: datetime) -> list[NewEvent]:
    _require_state(state, "summarizing")
    _require_chair(state, cmd)
    assert isinstance(cmd, Summarize)
    ranking = _ranking(state, cmd.adjustments)
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
    _require_role(cmd, "server")
    _require_state(state, "signing")
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
    _require_state(state, "signing")
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
    _require_role(cmd, "supervisor")
    if not cmd.text.strip():
        raise E.ReasonRequired("the warning is empty / 预警内容为空")
    # Eval rule 12: a supervisor's warning reaches every participant; it changes nothing else.
    return [
        _ev("supervisor_warning", cmd.actor, ALL, text=cmd.text.strip(), id=len(state.warnings) + 1)
    ]


def _suspend(state: EvaluationState, cmd: Suspend, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host")
    _require_state(state, *ACTIVE)
    return [
        _ev("evaluation_suspended", cmd.actor, ALL, reason=_reason(cmd.reason), status=state.status)
    ]


def _resume(state: EvaluationState, cmd: Resume, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "host")
    _require_state(state, "suspended")
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


def _segment(state: EvaluationState, cmd: RecordSegment, now: datetime) -> list[NewEvent]:
    _require_role(cmd, "server")
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


class RaiseSignals(Command):
    """评标不公预警: record the unfair-evaluation warnings computed from the record
    (``server.domain.signals``): supervisors alone see them, once each; no outcome changes."""

    signals: list[dict[str, Any]] = Field(max_length=1000)


def _raise_signals(state: EvaluationState, cmd: RaiseSignals, now: datetime) -> list[NewEvent]:
    return raise_signals(state.signals_raised, cmd, cmd.signals)


_HANDLERS: dict[type[Command], Any] = {
    Tick: _tick,
    Join: _join,
    Leave: _leave,
    RoomLink: _room_link,
    BeginDraw: _begin_draw,
    AddEntropy: _add_entropy,
    Draw: _draw,
    Decline: _decline,
    ExpertSignIn: _expert_sign_in,
    NoKey: _no_key,
    Replace: _replace_cmd,
    StartEvaluation: _start,
    Vote: _vote,
    SubmitSheet: _submit_sheet,
    RequestSignature: _request_signature,
    CallRescore: _call_rescore,
    CloseStage: _close_stage,
    Summarize: _summarize,
    GenerateReport: _generate_report,
    SignReport: _report_response,
    RefuseToSign: _report_response,
    Warn: _warn,
    Suspend: _suspend,
    Resume: _resume,
    RecordSegment: _segment,
    RaiseSignals: _raise_signals,
}


# --- evolving -------------------------------------------------------------------------------------


def evolve(state: EvaluationState, event: NewEvent, at: datetime | None) -> EvaluationState:
    """Fold one event into the state (a copy)."""
    s = state.model_copy(deep=True)
    p = event.payload
    t = event.type
    if t == "party_joined":
        s.present[p["account"]] = p["role"]
    elif t == "party_left":
        s.present.pop(p["account"], None)
    elif t == "room_link":
        s.rooms.setdefault(p["room_id"], {})["up"] = p["up"]
    elif t == "draw_committed":
        s.status = "drawing"
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
    elif t == "committee_drawn":
        s.status = "convening"
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
        s.status = "evaluating"
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
        s.status = "summarizing"
        s.stage = None
    elif t == "ranking_computed":
        s.ranking = p["ranking"]
        s.ranking_sha256 = p["sha256"]
        s.status = "signing"
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
    elif t == "evaluation_closed":
        s.status = "closed"
    elif t == "supervisor_warning":
        s.warnings.append({"id": p["id"], "text": p["text"], "by": event.actor})
    elif t == "evaluation_suspended":
        s.suspended_from = s.status
        s.suspended_at = at
        s.status = "suspended"
    elif t == "evaluation_resumed":
        s.status = s.suspended_from or "convening"
        if s.status == "convening" and s.suspended_at and at:
            _shift_due(s, at - s.suspended_at)
        s.suspended_from = None
        s.suspended_at = None
    elif t == "evaluation_void":
        s.status = "void"
        s.void_reason = p["reason"]
    elif t == "signal":
        s.signals_raised.append(p["id"])
    elif t == "media_segment":
        s.segments += 1
        room = s.rooms.setdefault(p["room_id"], {})
        room["segments"] = max(int(room.get("segments", 0)), p["index"] + 1)
    return s


def _shift_due(s: EvaluationState, shift: timedelta) -> None:
    """Sign-in deadlines move by the time the evaluation was suspended."""
    for m in s.members.values():
        if m.status == "drawn" and m.due_by:
            m.due_by = iso(parse_iso(m.due_by) + shift)


def next_due(state: EvaluationState) -> datetime | None:
    if state.status == "suspended" and state.suspended_at is not None:
        return state.suspended_at + SUSPEND_LIMIT
    if state.status == "convening":
        dues = [
            parse_iso(m.due_by) for m in state.members.values() if m.status == "drawn" and m.due_by
        ]
        return min(dues) if dues else None
    return None


# --- the report -----------------------------------------------------------------------------------


def build_report(state: EvaluationState, head_seq: int, head_hash: str) -> dict[str, Any]:
    """评标报告: the ranking, the recommended candidates and the committee, as a document."""
    return {
        "format": "bidbridge-evaluation-report",
        "version": 1,
        "session_id": state.session_id,
        "lot_id": state.lot_id,
        "opening_session_id": state.opening_session_id,
        "title": state.title,
        "method": state.config.method.model_dump(mode="json"),
        "committee": [
            {
                "id": m.id,
                "name": m.name,
                "kind": m.kind,
                "room_id": m.room_id,
                "late": m.late,
                "chair": m.id == state.chair,
            }
            for m in sorted(state.committee(), key=lambda m: m.id)
        ],
        "draw": {
            "seed": state.draw.seed if state.draw else None,
            "pool_sha256": state.draw.pool_sha256 if state.draw else None,
        },
        "stages": state.outcomes,
        "rescores": state.rescores,
        "ranking": state.ranking,
        "ranking_sha256": state.ranking_sha256,
        "log_head": {"seq": head_seq, "hash": head_hash},
    }


def report_text(report: dict[str, Any], signatures: dict[str, Any] | None = None) -> str:
    """The report as a readable document (Chinese first, English after)."""
    lines = [
        "评标报告 / Evaluation report",
        f"项目标段 / Lot: {report['lot_id']}  {report.get('title', '')}",
        f"会话 / Session: {report['session_id']}  开标 / Opening: {report['opening_session_id']}",
        f"评标办法 / Method: {report['method'].get('method', '')}",
        "",
        "评标委员会 / Committee:",
    ]
    for m in report["committee"]:
        chair = " 主任/chair" if m["chair"] else ""
        late = " 迟到/late" if m["late"] else ""
        lines.append(
            f"  {m['name'] or m['id']} ({m['id']}) {m['kind']} @{m['room_id']}{chair}{late}"
        )
    lines += ["", "排名 / Ranking:"]
    ranking = (report.get("ranking") or {}).get("ranking") or {}
    for row in ranking.get("entries", []):
        lines.append("  " + _ranking_line(row))
    excluded = ranking.get("excluded", [])
    if excluded:
        lines += ["", "否决投标 / Rejected bids:"]
        for row in excluded:
            items = ", ".join(str(i.get("item", i)) for i in row.get("failed_items", []))
            lines.append(f"  {row.get('bidder')}: {row.get('stage', '')} {items}")
    lines += ["", "推荐中标候选人 / Recommended candidates:"]
    for i, b in enumerate(ranking.get("recommended", []), 1):
        lines.append(f"  {i}. {b}")
    if ranking.get("committee_must_decide"):
        lines.append("  并列未决，须由评标委员会决定 / unresolved tie: the committee must decide")
    if signatures:
        lines += ["", "签字 / Signatures:"]
        for mid, sig in sorted(signatures.items()):
            if sig.get("deemed"):
                what = "拒签未说明理由，视为同意 / refused without reason: deemed to agree"
            elif sig.get("agree"):
                what = "同意 / agrees"
            else:
                what = f"不同意 / disagrees: {sig.get('reason', '')}"
            lines.append(f"  {mid}: {what}")
    head = report["log_head"]
    lines += ["", f"事件日志 / Event log head: seq {head['seq']} hash {head['hash']}"]
    return "\n".join(lines) + "\n"


def _ranking_line(row: dict[str, Any]) -> str:
    parts = [f"{row.get('position', '?')}. {row.get('bidder', '')}"]
    for key, label in (("price_fen", "报价/price"), ("evaluated_price_fen", "评审价/evaluated")):
        v = row.get(key)
        if isinstance(v, int):
            parts.append(f"{label} {v // 100}.{v % 100:02d} 元")
    for key, label in (
        ("review_score_x100", "评审分/review"),
        ("price_score_x100", "价格分/price score"),
        ("total_x100", "总分/total"),
    ):
        v = row.get(key)
        if isinstance(v, int):
            parts.append(f"{label} {v // 100}.{abs(v) % 100:02d}")
    if row.get("tie_break"):
        parts.append(f"({row['tie_break']})")
    return "  ".join(parts)
