"""Bid-rigging and unfair-evaluation signals (围标串标 / 评标不公预警): the facts in, the warnings out.

The facts are what the event log already holds, collected by the server for one lot's opening
(:class:`LotFacts`) or one evaluation (:class:`EvaluationFacts`); every observation carries the
``seq`` of the event that records it, so that each warning can point at its evidence. The rules
that turn facts into :class:`Signal` warnings live in ``server.domain.signals``.

Units: prices are exact :class:`~decimal.Decimal` amounts in yuan (元) as read from the opening
table (or any one unit, the same for every bid of the lot); scores are exact decimals in points.
Signals are shown to supervisors only.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.common import CreditCode

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Seq = Annotated[int, Field(ge=0)]
Text = Annotated[str, Field(max_length=500)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- facts of one lot's opening ------------------------------------------------------------------


class Observation(_Model):
    """One recorded contact of a bidder with the platform: an upload, a rehearsal (解密演练), a
    decryption, a login. ``addr`` is the client's network address as the server saw it;
    ``machine`` the salted machine fingerprint the agent sent (see
    ``crypto.fingerprint``); ``cert_serial`` the serial (hex) of the CA
    certificate used."""

    at: datetime
    addr: Text | None = None
    machine: Text | None = None
    cert_serial: Text | None = None
    seq: Seq | None = None


class DocumentFact(_Model):
    """A document inside a bid package, with the metadata ``server.signals.docmeta`` could read."""

    path: str = Field(min_length=1, max_length=1000)
    sha256: Sha256Hex
    size: int = Field(ge=0)
    author: Text | None = None
    creator: Text | None = Field(
        default=None, description="the producing application (OOXML Application, PDF Creator)"
    )
    last_modified_by: Text | None = None
    package_sha256: Sha256Hex | None = Field(
        default=None, description="the blob the document was read from (the evidence)"
    )
    seq: Seq | None = Field(default=None, description="the event that recorded the package")


class BidFacts(_Model):
    """What the record holds about one bid of the lot."""

    bidder_id: CreditCode
    bidder_name: str = Field(min_length=1, max_length=200)
    price: Decimal | None = Field(default=None, description="the price read at the opening (元)")
    price_seq: Seq | None = Field(
        default=None, description="the event that records the price (decryption / opening table)"
    )
    uploads: list[Observation] = Field(default_factory=list)
    rehearsals: list[Observation] = Field(default_factory=list)
    decryptions: list[Observation] = Field(default_factory=list)
    logins: list[Observation] = Field(default_factory=list)
    sealing_machine: Text | None = Field(
        default=None, description="fingerprint of the sealing machine, from the signed package"
    )
    sealing_seq: Seq | None = Field(default=None, description="the upload event of that package")
    documents: list[DocumentFact] = Field(default_factory=list)
    boq_errors: list[Text] = Field(
        default_factory=list, description="signatures from server.signals.docmeta.boq_errors"
    )
    boq_seq: Seq | None = None
    deposit_account: Text | None = Field(
        default=None,
        description="a salted hash of the account the deposit (保证金) was paid from, never the "
        "account number itself",
    )
    deposit_seq: Seq | None = None

    @field_validator("price")
    @classmethod
    def _finite_price(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and (not value.is_finite() or value < 0):
            raise ValueError(f"报价须为非负有限数 / price must be finite and >= 0: {value}")
        return value


class LotFacts(_Model):
    """The facts of one lot's opening (one opening session)."""

    session_id: str = Field(min_length=1, max_length=100)
    project_id: str = Field(min_length=1, max_length=100)
    lot_id: str = Field(min_length=1, max_length=100)
    ceiling_price: Decimal | None = Field(default=None, description="最高投标限价 (元)")
    bids: list[BidFacts] = Field(default_factory=list)
    tender_hashes: list[Sha256Hex] = Field(
        default_factory=list,
        description="SHA-256 of the tender's own files (forms every bidder includes): never a sign",
    )
    platform_addresses: list[Text] = Field(
        default_factory=list,
        description="the platform's own proxy / NAT addresses, as clients may appear behind a "
        "misconfigured forwarder: never a sign",
    )

    @model_validator(mode="after")
    def _one_bid_per_bidder(self) -> LotFacts:
        seen: set[str] = set()
        for bid in self.bids:
            if bid.bidder_id in seen:
                raise ValueError(f"投标人重复 / duplicate bidder: {bid.bidder_id}")
            seen.add(bid.bidder_id)
        if self.ceiling_price is not None and (
            not self.ceiling_price.is_finite() or self.ceiling_price <= 0
        ):
            raise ValueError("最高投标限价须为正数 / the ceiling price must be positive")
        return self


# --- facts of one evaluation ---------------------------------------------------------------------


class CriterionFact(_Model):
    id: str = Field(min_length=1, max_length=64)
    stage: str = Field(min_length=1, max_length=32)
    max: Decimal = Field(gt=0)


class SheetFact(_Model):
    """One expert's signed score sheet: ``scores[bidder_id][criterion_id]``."""

    seq: Seq | None = None
    scores: dict[str, dict[str, Decimal]]


class EvaluationFacts(_Model):
    """The facts of one evaluation: the committee, the criteria, the sheets and the outcome."""

    session_id: str = Field(min_length=1, max_length=100)
    project_id: str = Field(min_length=1, max_length=100)
    experts: list[str] = Field(min_length=1)
    criteria: list[CriterionFact] = Field(min_length=1)
    sheets: dict[str, SheetFact] = Field(description="expert id -> sheet")
    ranking: list[str] = Field(default_factory=list, description="bidder ids, best first")
    winner: str | None = None
    bidder_names: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sheets_of_members(self) -> EvaluationFacts:
        outsiders = set(self.sheets) - set(self.experts)
        if outsiders:
            raise ValueError(f"评分表不属于评标委员会 / sheets of non-members: {sorted(outsiders)}")
        return self


# --- the output ----------------------------------------------------------------------------------

SignalKind = Literal[
    "same_origin_address",
    "same_origin_machine",
    "same_hands_file",
    "same_hands_author",
    "same_hands_boq",
    "same_money_deposit",
    "price_progression",
    "price_band",
    "price_ceiling_cluster",
    "price_accompanying",
    "certificate_trail",
    "expert_outlier",
    "expert_favour",
    "expert_identical",
]

Family = Literal[
    "same_origin",
    "same_hands",
    "same_money",
    "price_patterns",
    "certificate_trail",
    "unfair_evaluation",
]

FAMILY: dict[str, Family] = {
    "same_origin_address": "same_origin",
    "same_origin_machine": "same_origin",
    "same_hands_file": "same_hands",
    "same_hands_author": "same_hands",
    "same_hands_boq": "same_hands",
    "same_money_deposit": "same_money",
    "price_progression": "price_patterns",
    "price_band": "price_patterns",
    "price_ceiling_cluster": "price_patterns",
    "price_accompanying": "price_patterns",
    "certificate_trail": "certificate_trail",
    "expert_outlier": "unfair_evaluation",
    "expert_favour": "unfair_evaluation",
    "expert_identical": "unfair_evaluation",
}


class Evidence(_Model):
    """Where in the record a supervisor finds the fact: an event (``event:17``) or a file inside a
    stored blob (``blob:<sha256>#path``)."""

    session_id: str
    seq: int | None = None
    ref: str = Field(min_length=1, max_length=1200)
    note: str = Field(default="", max_length=500)


class Signal(_Model):
    """One warning, shown to supervisors only, that explains itself.

    ``id`` is SHA-256 over the canonical JSON of kind, the sorted subjects and the evidence, so
    recomputing the signals from the same record gives the same ids (and a warning event is not
    written twice). ``subjects`` are the bidders (credit codes) of a lot signal or the experts of
    an evaluation signal; ``related`` are the bidders an expert signal concerns.
    """

    id: Sha256Hex
    kind: SignalKind
    family: Family
    score: float = Field(ge=0, le=1)
    subjects: list[str] = Field(min_length=1)
    related: list[str] = Field(default_factory=list)
    explanation_zh: str = Field(min_length=1)
    explanation_en: str = Field(min_length=1)
    evidence: list[Evidence] = Field(default_factory=list)


class PairScore(_Model):
    a: str
    b: str
    score: float = Field(ge=0, le=1)
    signal_ids: list[str]


class RingSuspicion(_Model):
    """A suspected ring (疑似围标串标团伙): bidders connected by strong combined evidence."""

    session_id: str
    bidders: list[str] = Field(min_length=2)
    score: float = Field(ge=0, le=1)
    pairs: list[PairScore]
    signal_ids: list[str]
    explanation_zh: str
    explanation_en: str
