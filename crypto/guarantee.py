"""Checks an electronic guarantee (电子保函) against the lot it is meant to secure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime

from pydantic import ValidationError

from crypto.attest import b64decode, read_document
from crypto.ca import credit_code_of
from crypto.errors import BidBridgeError
from crypto.trust import TrustStore
from schemas.guarantee import Guarantee


class GuaranteeInvalid(BidBridgeError):
    code = "GUARANTEE_INVALID"
    zh = "电子保函无效"
    en = "the electronic guarantee is not valid"
    status = 422


@dataclass(frozen=True)
class Expectation:
    bidder: str
    beneficiary_credit_code: str
    project_code: str
    lot_code: str
    min_amount_fen: int
    cover_until: date


async def verify_guarantee(
    signature_b64: str, expect: Expectation, trust: TrustStore, now: datetime
) -> Guarantee:
    """Signature, guarantor's certificate now, and every field against the lot; else raise."""
    doc = read_document(b64decode(signature_b64, "guarantee"))
    try:
        g = Guarantee.model_validate(json.loads(doc.content))
    except (ValueError, ValidationError) as exc:
        raise GuaranteeInvalid(f"document: {str(exc)[:200]}") from None
    await trust.avalidate(doc.signer, "bid_signature", now, extra_intermediates=doc.certificates)
    signer_code = credit_code_of(doc.signer)
    problems = []
    if signer_code != g.guarantor_credit_code:
        problems.append(f"签署人 {signer_code} 不是担保人 / signer is not the guarantor")
    if g.applicant_credit_code != expect.bidder:
        problems.append("申请人不是本投标人 / the applicant is not this bidder")
    if g.beneficiary_credit_code != expect.beneficiary_credit_code:
        problems.append("受益人不是招标人 / the beneficiary is not the tenderer")
    if (g.project_code, g.lot_code) != (expect.project_code, expect.lot_code):
        problems.append("项目或标段不符 / project or lot does not match")
    if g.amount_fen < expect.min_amount_fen:
        problems.append(
            f"金额 {g.amount_fen} 分低于要求 {expect.min_amount_fen} 分 / amount below the required"
        )
    if not g.valid_from <= now.date() or g.valid_until < expect.cover_until:
        problems.append(
            f"有效期 {g.valid_from}..{g.valid_until} 未覆盖投标有效期至 {expect.cover_until} / "
            "validity does not cover the bid validity period"
        )
    if problems:
        raise GuaranteeInvalid("; ".join(problems))
    return g
