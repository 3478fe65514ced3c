"""电子保函: an electronic bid guarantee, signed by the guarantor's CA certificate."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import CreditCode, Fen


class Guarantee(BaseModel):
    """The guarantee document; the guarantor signs its canonical JSON (crypto.attest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["bidbridge-guarantee"] = "bidbridge-guarantee"
    guarantee_no: str = Field(min_length=1, max_length=64)
    guarantor_name: str = Field(min_length=1, max_length=200)
    guarantor_credit_code: CreditCode
    applicant_credit_code: CreditCode = Field(description="the bidder (投标人)")
    beneficiary_name: str = Field(min_length=1, max_length=200, description="the tenderer (招标人)")
    beneficiary_credit_code: CreditCode
    project_code: str
    lot_code: str
    amount_fen: Fen
    valid_from: date
    valid_until: date
