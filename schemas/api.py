"""Bodies of the REST API (requests and responses); the OpenAPI document is built from these."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from schemas.common import CreditCode, Fen, Name, Text

Positions = dict[str, int]
"""A viewer's positions in its own event streams (stream -> n; docs/positions.md): never the
log's ``seq``, which counts events the viewer may not see (rule 4)."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


ExpiresIn = Annotated[
    float | None,
    Field(
        description="real seconds the token lasts from now (RFC 6749 5.1), whatever the clocks say"
    ),
]
"""A token's ``expires_in``: what the client can count on whatever its clock or the server's."""


class ErrorOut(_Out):
    """Every refusal: a stable code, a message in Chinese and in English, and a detail."""

    code: str
    zh: str
    en: str
    detail: str = ""


class OkOut(_Out):
    ok: bool = True
    pos: Positions | None = Field(
        default=None, description="the caller's positions of what this request appended"
    )


class TimeOut(_Out):
    now: datetime


class ChallengeOut(_Out):
    nonce: str
    server: str
    expires_at: datetime
    document: str = Field(description="the exact text to sign (canonical JSON) / 待签名原文")


class LoginIn(_In):
    signature: str = Field(
        description="base64 CMS SignedData (DER) over the challenge document, with the certificate"
    )


class LoginOut(_Out):
    token: str
    role: str
    party_id: str
    name: str
    expires_at: datetime
    expires_in: ExpiresIn = None


class RefreshOut(_Out):
    token: str
    issued_at: str = Field(description="the server's clock when the token was issued")
    expires_at: str
    expires_in: ExpiresIn = None


class CompanyIn(_In):
    credit_code: CreditCode
    name: Name = Field(min_length=1, max_length=200)
    signing_cert_pem: str
    encryption_cert_pem: str


class SupervisingBody(_In):
    """监管主体: the supervising body of a project, and a supervisor's remit: one region (行政区划
    代码, GB/T 2260, six digits) and one industry (行业, a code the centre chooses: 住建, 交通, ...).
    Seed 002, 二(一): each level's supervisors watch the trading of their own region and industry."""

    region: str = Field(pattern=r"^[0-9]{6}$", description="行政区划代码, e.g. 150700")
    industry: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[0-9A-Za-z._\-\u4e00-\u9fff]+$",
        description="行业 code, e.g. 住建 or housing",
    )


class AccountIn(_In):
    role: Literal["host", "supervisor", "centre"]
    name: Name = Field(min_length=1, max_length=100)
    cert_pem: str
    remit: SupervisingBody | None = Field(
        default=None,
        description="supervisors only: the region and industry they supervise (none: the "
        "centre-wide supervisor, who supervises the projects that name no supervising body)",
    )


class AccountOut(_Out):
    id: str
    role: str
    name: str
    remit: SupervisingBody | None = None


class ProjectIn(_In):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    name: Name = Field(min_length=1, max_length=200)
    tenderer_name: Name = Field(min_length=1, max_length=200)
    tenderer_credit_code: CreditCode
    supervising_body: SupervisingBody | None = Field(
        default=None,
        description="监管主体 (seed 002): only supervisors of this remit see and act on its "
        "sessions; none: the centre-wide supervisors",
    )


class LotIn(_In):
    project_code: str = Field(min_length=1, max_length=64)
    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    name: Name = Field(min_length=1, max_length=200)


class LotOut(_Out):
    id: str


class BackupIn(_In):
    k: int = Field(ge=1)
    custodians: list[str] = Field(min_length=1)
    bundle_json: str = Field(description="crypto.quorum QuorumBundle JSON")


class SessionIn(_In):
    lot_id: str
    title: Name = Field(default="", max_length=200)
    sign_in_opens: AwareDatetime = Field(description="with its time zone (UTC offset)")
    deadline: AwareDatetime = Field(description="with its time zone (UTC offset)")
    decrypt_minutes: int = Field(default=30, ge=1, le=1440)
    confirm_minutes: int = Field(default=30, ge=1, le=1440)
    min_bids: int = Field(default=3, ge=1, le=1000)
    table_fields: list[str] = Field(default_factory=list, max_length=20)
    security_required_fen: Fen | None = None
    backup: BackupIn | None = None


class SessionOut(_Out):
    """A session as the caller may see it (filtered by role, rule 4)."""

    session_id: str
    view: dict[str, Any]
    pos: Positions = Field(description="the caller's stream heads when the view was read")


class SessionList(_Out):
    sessions: list[dict[str, Any]]


class ReceiptOut(_Out):
    """回执 (rule 2): the receipt and the server's signature over its canonical JSON."""

    receipt: dict[str, Any]
    signature: str
    pos: Positions | None = None


class RehearsalIn(_In):
    passed: bool
    code: str = Field(default="", max_length=64)
    message: Text = Field(default="", max_length=2000)


class KeyIn(_In):
    cek: str = Field(description="base64 of the content-encryption key unwrapped by the bidder")


class DecryptOut(_Out):
    ok: bool
    code: str
    zh: str
    en: str
    summary: dict[str, Any] | None = None
    pos: Positions | None = None


class TextIn(_In):
    text: Text = Field(min_length=1, max_length=2000)


class ReplyIn(TextIn):
    also: list[Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]] = Field(
        default_factory=list, max_length=100
    )
    """Other objections that say the same, answered with this text together (rule 11)."""


class ReasonIn(_In):
    reason: Text = Field(min_length=1, max_length=2000)


class ExtendIn(_In):
    minutes: int = Field(ge=1, le=10080)
    reason: Text = Field(min_length=1, max_length=2000)


class IncidentIn(_In):
    reason: Text = Field(min_length=1, max_length=2000)
    bidders: list[CreditCode] = Field(min_length=1)


class SignatureIn(_In):
    signature: str = Field(description="base64 CMS SignedData over the document being signed")


class DepositIn(_In):
    bidder: CreditCode
    amount_fen: Fen
    reference: Name = Field(default="", max_length=200)


class GuaranteeIn(_In):
    signature: str = Field(description="base64 CMS SignedData by the guarantor over the 保函 JSON")


class BackupRequestIn(_In):
    bidders: list[CreditCode] = Field(min_length=1)
    reason: Text = Field(min_length=1, max_length=2000)


class BackupRequestOut(_Out):
    request_id: str
    pos: Positions | None = None


class BackupApproveIn(_In):
    signature: str = Field(description="base64 signed approval document")
    share: str = Field(description="the custodian's decrypted share (crypto.quorum JSON)")


class RecordOut(_Out):
    record: dict[str, Any]
    text: str
    sha256: str
    signatures: dict[str, str]


class EventsOut(_Out):
    events: list[dict[str, Any]]
