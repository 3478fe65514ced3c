"""Bodies of the evaluation's REST API and the documents members sign (DESIGN.md section 6).

The documents are built here, not in the server, so that a room device (``room_client``) signs
exactly the bytes the server checks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.canonical import signed_document
from schemas.common import Name, Text
from schemas.scoring import MethodConfig, ReviewItem

SIGN_IN_PURPOSE = "bidbridge-expert-sign-in"
SHEET_PURPOSE = "bidbridge-evaluation-sheet"
REPORT_PURPOSE = "bidbridge-evaluation-report"


def sign_in_document(
    server_id: str, session_id: str, room_id: str, expert_id: str, nonce: str
) -> bytes:
    """What an expert signs at the room to sign in: bound to one challenge, room and session."""
    return signed_document(
        SIGN_IN_PURPOSE,
        server=server_id,
        session_id=session_id,
        room_id=room_id,
        expert_id=expert_id,
        nonce=nonce,
    )


def sheet_document(session_id: str, expert_id: str, stage: str, content: dict[str, Any]) -> bytes:
    """What an expert signs to submit a review or score sheet."""
    return signed_document(
        SHEET_PURPOSE, session_id=session_id, expert_id=expert_id, stage=stage, content=content
    )


def report_document(
    session_id: str, expert_id: str, report_sha256: str, agree: bool, reason: str
) -> bytes:
    """What a member signs on the report: agreement, or disagreement with the written reason."""
    return signed_document(
        REPORT_PURPOSE,
        session_id=session_id,
        expert_id=expert_id,
        report_sha256=report_sha256,
        agree=agree,
        reason=reason,
    )


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteIn(_In):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: Name = Field(min_length=1, max_length=200)
    city: Name = Field(min_length=1, max_length=64)


class RoomIn(_In):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    name: Name = Field(min_length=1, max_length=200)
    cert_pem: str = Field(min_length=1, max_length=20_000, description="the room device's cert")
    seats: int | None = Field(default=None, ge=1, le=100, description="expert seats (席位)")


class SitesOut(_Out):
    sites: list[dict[str, Any]]


class ImportOut(_Out):
    imported: int
    total: int


class EvaluationIn(_In):
    opening_session_id: str = Field(min_length=1, max_length=200)
    title: Name = Field(default="", max_length=200)
    convene_at: AwareDatetime
    grace_minutes: int = Field(default=30, ge=1, le=24 * 60)
    method: MethodConfig
    review_items: list[ReviewItem] = Field(default_factory=list, max_length=200)
    draw: dict[str, Any] = Field(
        description="a schemas.experts.DrawRequest without session_id (the server sets it)"
    )
    owner_reps: list[str] = Field(
        default_factory=list,
        max_length=10,
        description="业主代表 person ids (certificate serialNumber)",
    )
    rescore_threshold_points: int = Field(default=2000, ge=0, le=100_000)


class EntropyIn(_In):
    value: str = Field(pattern=r"^[0-9a-f]{64}$", description="32 random bytes, hex")


class ExpertReasonIn(_In):
    reason: Text = Field(min_length=1, max_length=2000)


class ExpertSignInIn(_In):
    expert_id: str = Field(min_length=1, max_length=64)
    nonce: str = Field(min_length=1, max_length=128)
    signature: str = Field(description="base64 CMS SignedData over sign_in_document(...)")


class ExpertSignInOut(_Out):
    token: str
    expert_id: str
    name: str
    expires_at: datetime
    expires_in: float | None = Field(
        None,
        description="real seconds the token lasts from now (RFC 6749 5.1), whatever the clocks say",
    )
    pos: dict[str, int] | None = None


class VoteIn(_In):
    candidate: str = Field(min_length=1, max_length=64)


class SheetIn(_In):
    stage: str = Field(min_length=1, max_length=32)
    content: dict[str, Any]
    signature: str = Field(description="base64 CMS SignedData over sheet_document(...)")


class SheetsOut(_Out):
    stage: str
    own: dict[str, Any] | None
    others: list[dict[str, Any]] = Field(
        description="the other members' sheets, once the caller's own is in (empty before)"
    )


class RescoreIn(_In):
    expert_id: str = Field(min_length=1, max_length=64)
    reason: Text = Field(min_length=1, max_length=2000)


class ReportSignIn(_In):
    agree: bool
    reason: Text = Field(default="", max_length=4000)
    signature: str


class RefuseIn(_In):
    reason: Text = Field(default="", max_length=4000)


class ReportOut(_Out):
    report: dict[str, Any]
    text: str
    sha256: str
    server_signature: str
    signatures: dict[str, Any]


class OfferIn(_In):
    sdp: str = Field(min_length=1, max_length=200_000)
    type: str = Field(pattern=r"^offer$")
    watch: str | None = Field(default=None, description="supervisors: the room to watch")


class AnswerOut(_Out):
    sdp: str
    type: str
    watch_by_subscription: bool = Field(
        default=False,
        description="the server's media backend (Janus) sends watched feeds over links of their "
        "own: a secondary room then receives the host feed through media/subscribe",
    )


class SubscribeIn(_In):
    watch: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="supervisors: the room whose feed to receive; rooms leave it out and receive "
        "the host feed (the lead room's)",
    )


class SubscriptionOut(_Out):
    subscription: str = Field(description="where the answer goes: media/subscriptions/{id}/answer")
    sdp: str
    type: str = Field(description="always offer: the media server offers the feed")


class SubscriptionAnswerIn(_In):
    sdp: str = Field(min_length=1, max_length=200_000)
    type: str = Field(pattern=r"^answer$")


# --- the expert desk: documents, forms and the signature relay --------------------------------------


class BidDocument(_Out):
    path: str = Field(description="the file's path inside the bid package (as in manifest.json)")
    size: int
    sha256: str
    content_type: str = Field(description="what the document route serves it as")


class BidDocuments(_Out):
    bidder: str
    name: str
    price_fen: int
    envelope_sha256: str
    package_sha256: str
    documents: list[BidDocument]


class BidsOut(_Out):
    bids: list[BidDocuments]


class FormsOut(_Out):
    """What the review forms are built from, as the evaluation method shapes them: which stages
    are scored and against which criteria (with their maxima), the pass/fail items of the
    others. A page builds its forms from these and never needs to know the method."""

    method: dict[str, Any]
    review_items: list[dict[str, Any]]
    stages: list[str]
    scored_stages: list[str] = Field(description="stages whose sheets give points per criterion")
    criteria: list[dict[str, Any]] = Field(description="the scored stages' criteria")
    items: dict[str, list[dict[str, Any]]] = Field(description="each pass/fail stage's items")


class SignRequestIn(_In):
    """A draft for the expert's room device to sign: a sheet of the current stage, or the
    expert's answer to the report (agree, or disagree with a written reason)."""

    kind: str = Field(pattern=r"^(sheet|report)$")
    stage: str = Field(default="", max_length=32)
    content: dict[str, Any] = Field(default_factory=dict)
    agree: bool = True
    reason: str = Field(default="", max_length=4000)


class ToSignOut(_Out):
    draft: dict[str, Any] | None = Field(
        description="the draft waiting for the signature at the room device, if any"
    )
