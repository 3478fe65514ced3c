"""The no-show opening (不见面开标): its state and its commands (the rules are in ``opening``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from server.domain.remit import REMIT_FACT

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
OBJECTIONS_OPEN: tuple[Status, ...] = ("opening", "decrypting", "announcing", "confirming")
ACTIVE: tuple[Status, ...] = (*BEFORE_DEADLINE, "sealed", *OBJECTIONS_OPEN)

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
    evidence: dict[str, str] | None = None
    """What the refusal rests on (e.g. the inner signer's certificate and the sealing instant);
    left out of the record when there is none, so older attempts read as they always did."""

    @model_serializer(mode="wrap")
    def _without_empty_evidence(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if out.get("evidence") is None:
            out.pop("evidence", None)
        return out


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
    uploads: int = Field(default=1, description="versions this bidder has uploaded (rule 1)")


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
    outages: list[str] = Field(
        default_factory=list, description="start instants of the platform outages recorded"
    )
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

    supervisors_in_remit: list[str] | None = Field(default=None, description=REMIT_FACT)


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
    evidence: dict[str, str] | None = None


class RecordIncident(Command):
    """A platform fault (平台故障) affecting named bids: their failures are not the bidders'."""

    reason: str
    bidders: list[str]


class PlatformOutage(Command):
    """The server was down from ``down_from`` until ``down_until`` (found at its restart)."""

    down_from: datetime
    down_until: datetime


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
    also: list[int] = Field(default_factory=list, max_length=100)
    """Other objections answered with the same text (duplicates answered together)."""


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
