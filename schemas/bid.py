"""The bid summary (投标摘要) every sealed package carries as ``summary.json``, and its manifest."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import CreditCode, Fen, Name

EnvelopeKind = Literal["single", "technical", "commercial"]
"""单一信封, 技术标 (technical envelope) or 商务标 (commercial envelope) of a two-envelope bid."""


class BidSummary(BaseModel):
    """投标摘要: what the opening table reads from a decrypted bid (招标投标法实施条例, art. 30)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    project_code: str = Field(min_length=1, max_length=64)
    lot_code: str = Field(min_length=1, max_length=64, description="标段编号")
    bidder_credit_code: CreditCode
    bidder_name: Name = Field(min_length=1, max_length=200)
    envelope: EnvelopeKind = "single"
    price_fen: Fen | None = Field(default=None, description="投标报价, integer fen")
    duration_days: int | None = Field(default=None, ge=1, le=36500, description="工期 (days)")
    quality: Name | None = Field(default=None, max_length=200, description="质量标准")
    project_manager: Name | None = Field(default=None, max_length=100, description="项目经理")
    extra_fields: dict[Annotated[Name, Field(max_length=64)], Name | int] = Field(
        default_factory=dict, description="the lot's declared opening-table fields"
    )

    @model_validator(mode="after")
    def _price_where_priced(self) -> BidSummary:
        if self.envelope in ("single", "commercial") and self.price_fen is None:
            raise ValueError(
                "单一信封或商务标必须填写报价 price_fen / a single or commercial envelope needs price_fen"
            )
        if self.envelope == "technical" and self.price_fen is not None:
            raise ValueError("技术标不得含报价 / a technical envelope must not carry a price")
        return self


class ManifestEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1)
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Manifest(BaseModel):
    """manifest.json: every file of the package (except itself) with its SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    files: list[ManifestEntry]
    sealing_machine: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="the salted per-lot fingerprint of the machine that sealed the bid "
        "(crypto.fingerprint; no personal data); absent in packages sealed without it",
    )
