"""The committee's sheets read with the method's rules (:mod:`server.domain.scoring`): which
items and criteria a stage has, whether a sheet is acceptable, a stage's outcome, the ranking."""

from __future__ import annotations

from typing import Any

from schemas.scoring import (
    DeviationThreshold,
    PriceAdjustment,
    ReviewItem,
    ReviewOutcome,
    ReviewSheet,
    ScoreSheet,
)
from server.domain import scoring as SC
from server.domain.evaluation_model import EvaluationState, SheetInvalid


def bids_in_stage(state: EvaluationState, stage: str) -> list[str]:
    """The bids still in the running at ``stage``: those that passed every earlier stage."""
    bids = sorted(state.bids)
    for earlier in state.stages():
        if earlier == stage:
            break
        passed = set(state.outcomes.get(earlier, {}).get("passed", []))
        bids = [b for b in bids if b in passed]
    return bids


def items(state: EvaluationState, stage: str) -> list[ReviewItem]:
    """The pass/fail items of ``stage``, as the evaluation method has them."""
    config = state.config
    return SC.method_stages(config.method).items(config.method, config.review_items, stage)


def scored(state: EvaluationState, stage: str) -> bool:
    """Whether the method scores ``stage`` (points per criterion) rather than pass/fail."""
    return stage in SC.method_stages(state.config.method).scored


def parse_sheet(
    state: EvaluationState, stage: str, expert: str, content: dict[str, Any]
) -> ReviewSheet | ScoreSheet:
    try:
        sheet: ReviewSheet | ScoreSheet = (
            ScoreSheet.model_validate(content)
            if scored(state, stage)
            else ReviewSheet.model_validate(content)
        )
    except ValueError as exc:
        raise SheetInvalid(str(exc)[:500]) from None
    if sheet.expert != expert or sheet.stage != stage:
        raise SheetInvalid("expert or stage differs from the submitter's / 专家或阶段与提交者不符")
    return sheet


def check_sheet(state: EvaluationState, stage: str, bids: list[str], sheet: Any) -> None:
    if isinstance(sheet, ScoreSheet):
        method = state.config.method
        SC.check_score_sheet(sheet, bids, SC.method_stages(method).criteria(method))
    else:
        SC.check_review_sheet(sheet, bids, items(state, stage))


def score_sheets(state: EvaluationState, stage: str = "detailed") -> list[ScoreSheet]:
    return [
        ScoreSheet.model_validate(s.content) for _, s in sorted(state.sheets.get(stage, {}).items())
    ]


def review_sheets(state: EvaluationState, stage: str) -> list[ReviewSheet]:
    return [
        ReviewSheet.model_validate(s.content)
        for _, s in sorted(state.sheets.get(stage, {}).items())
    ]


def stage_outcome(state: EvaluationState, stage: str, bids: list[str]) -> dict[str, Any]:
    if scored(state, stage):
        return {"kind": "scores", "passed": bids, "sheets": len(state.sheets.get(stage, {}))}
    outcome = SC.review_outcome(review_sheets(state, stage), bids, items(state, stage))
    passed = [b.bidder for b in outcome.bids if b.passed]
    return {"kind": "review", "passed": passed, "outcome": outcome.model_dump(mode="json")}


def deviations(state: EvaluationState, stage: str) -> list[dict[str, Any]]:
    method = state.config.method
    if not scored(state, stage):
        return []
    threshold = DeviationThreshold(points_x100=state.config.rescore_threshold_points)
    criteria = SC.method_stages(method).criteria(method)
    found = SC.deviations(score_sheets(state, stage), criteria, threshold)
    return [d.model_dump(mode="json") for d in found]


def ranking(state: EvaluationState, adjustments: list[PriceAdjustment]) -> dict[str, Any]:
    method = state.config.method
    reviews = [
        ReviewOutcome.model_validate(state.outcomes[stage]["outcome"])
        for stage in state.stages()
        if state.outcomes.get(stage, {}).get("kind") == "review"
    ]
    prices = {b: e.price_fen for b, e in state.bids.items()}
    stages = sorted(SC.method_stages(method).scored)
    sheets = [sheet for stage in stages for sheet in score_sheets(state, stage)]
    ranked = SC.rank(method, prices, reviews, sheets, adjustments)
    return SC.ranking_document(method, ranked, reviews)
