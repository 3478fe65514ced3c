"""Remote cross-region evaluation (远程异地评标): its state, commands and refusals (the rules are
in ``evaluation``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.experts import DrawRequest, Expert, Site
from schemas.scoring import MethodConfig, PriceAdjustment, ReviewItem
from server.domain.errors import Refusal
from server.domain.remit import REMIT_FACT

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
    supervisors_in_remit: list[str] | None = Field(default=None, description=REMIT_FACT)


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
    supervisors_in_remit: list[str] | None = Field(default=None, description=REMIT_FACT)


class ReportDecline(Command):
    """A planner (host, centre) reports that an expert declined or cannot be reached.

    两随机四不知: a planner does not know who was drawn, so the report is taken the same way
    whoever it names. A drawn member is recorded declined and replaced by the next spare;
    otherwise (not drawn, already out or signed in, no spare left) the report is recorded as not
    applied. Either way two events, both for the supervisor only, and the same answer."""

    expert_id: str
    reason: str


class RequestReplacement(Command):
    """A planner asks that a member who cannot serve (no key, illness) be replaced by the next
    spare; taken like :class:`ReportDecline`: two events for the supervisor whatever it names."""

    expert_id: str
    reason: str


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


class RaiseSignals(Command):
    """评标不公预警: record the unfair-evaluation warnings computed from the record
    (``server.domain.signals``): supervisors alone see them, once each; no outcome changes."""

    signals: list[dict[str, Any]] = Field(max_length=1000)
