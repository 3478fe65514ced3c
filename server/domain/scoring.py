"""The evaluation's review and scoring rules (评审与评分规则): expert sheets in, a ranking out.

Theory of operation (like ``opening.py``): everything that decides how sheets become a ranking
lives in this file, and nothing here does I/O or reads a clock. The evaluation state machine
collects the experts' sheets; these functions check them and conclude.

1. **Sheets are checked whole.** :func:`check_review_sheet` / :func:`check_score_sheet`: every
   bid and every item or criterion exactly once, each score within 0..maximum, a reason for every
   fail. A bad sheet is a typed :class:`ScoringRefusal`, never a silently partial result.
2. **Pass/fail review is by majority** (少数服从多数). :func:`review_outcome` concludes each item
   for each bid by the experts' votes; a bid passes a stage only if it passes every item. The
   experts on the losing side and their reasons are kept, because a member who disagrees writes
   the reason into the report (招标投标法实施条例 art. 53). With the odd committee the law asks
   for (招标投标法 art. 37, DESIGN section 6) votes cannot be even; if they are (a member missing),
   the rules refuse to guess (REVIEW_TIE).
3. **Arithmetic is exact.** Points are integer hundredths, money integer fen; every ratio is a
   :class:`fractions.Fraction`. A published number is rounded once, half away from zero
   (四舍五入, the same as half-up for the non-negative scores), to hundredths, at the end of its
   own computation; the total is the sum of the published parts, so the report adds up.
4. **Ranking** (:func:`rank`): bids that failed any review stage are excluded with the items and
   reasons (否决投标). The method (a registry entry, see :func:`register_method`) scores the valid
   bids and gives each a sort key; ties on the primary score are broken by the lower bid price,
   then (comprehensive) the higher technical score (评标委员会和评标方法暂行规定 / 标准招标文件:
   "投标报价低的优先；投标报价也相等的，技术得分高的优先"). Bids still equal are *not* ordered
   by invention: they are listed by credit code and flagged for the committee to decide.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol

from schemas.scoring import (
    STAGE_ORDER,
    BidReview,
    ComprehensiveConfig,
    Criterion,
    Deviation,
    DeviationThreshold,
    ExcludedBid,
    FailedItem,
    ItemConclusion,
    LowestPriceConfig,
    MethodConfig,
    PriceAdjustment,
    PriceScore,
    PriceScores,
    RankedBid,
    Ranking,
    ReviewItem,
    ReviewOutcome,
    ReviewSheet,
    ScoreSheet,
    Stage,
    Vote,
)
from server.domain.errors import Refusal

# --- refusals -----------------------------------------------------------------------------------


class ScoringRefusal(Refusal):
    """Any refusal of the review and scoring rules (catch this for all of them)."""

    code = "SCORING_REFUSED"
    status = 422
    zh = "评审数据不符合评标规则"
    en = "the evaluation input does not satisfy the rules"


class SheetIncomplete(ScoringRefusal):
    code = "SHEET_INCOMPLETE"
    status = 422
    zh = "评审表不完整：每个投标人的每个评审因素都须填写"
    en = "the sheet is incomplete: every bid needs an entry for every item or criterion"


class SheetEntryDuplicate(ScoringRefusal):
    code = "SHEET_ENTRY_DUPLICATE"
    status = 422
    zh = "评审表中同一投标人的同一评审因素填写了多次"
    en = "the sheet has more than one entry for the same bid and item or criterion"


class SheetEntryUnknown(ScoringRefusal):
    code = "SHEET_ENTRY_UNKNOWN"
    status = 422
    zh = "评审表含有不在本次评审范围内的投标人或评审因素"
    en = "the sheet names a bid, item or criterion that is not under review"


class SheetStageMismatch(ScoringRefusal):
    code = "SHEET_STAGE_MISMATCH"
    status = 422
    zh = "评审表的评审阶段与评审因素不一致"
    en = "the sheet's stage does not match the items under review"


class ScoreOutOfRange(ScoringRefusal):
    code = "SCORE_OUT_OF_RANGE"
    status = 422
    zh = "分值超出该评分因素的分值范围（0 至满分）"
    en = "a score is outside the criterion's range (0 to its maximum)"


class ReasonRequiredForFail(ScoringRefusal):
    code = "REASON_REQUIRED_FOR_FAIL"
    status = 422
    zh = "判定不合格必须写明理由"
    en = "a fail needs a written reason"


class ExpertSheetDuplicate(ScoringRefusal):
    code = "EXPERT_SHEET_DUPLICATE"
    status = 409
    zh = "同一评标专家在同一评审阶段提交了多份评审表"
    en = "an expert handed in more than one sheet for the same stage"


class NoSheets(ScoringRefusal):
    code = "NO_SHEETS"
    status = 409
    zh = "尚无评标专家提交评审表"
    en = "no expert has handed in a sheet"


class ReviewTie(ScoringRefusal):
    code = "REVIEW_TIE"
    status = 409
    zh = "表决票数相同，无法按少数服从多数形成结论，请评标委员会处理"
    en = "the votes are even, so there is no majority: the committee must resolve it"


class BidNotReviewed(ScoringRefusal):
    code = "BID_NOT_REVIEWED"
    status = 409
    zh = "有投标人未经全部评审阶段"
    en = "a bid has not been through every review stage"


class BidUnknown(ScoringRefusal):
    code = "BID_UNKNOWN"
    status = 422
    zh = "评审结论或价格调整涉及不在本标段的投标人"
    en = "a review or a price adjustment names a bid that is not in this lot"


class MethodUnknown(ScoringRefusal):
    code = "METHOD_UNKNOWN"
    status = 422
    zh = "未知的评标办法"
    en = "unknown evaluation method"


class MethodInputMismatch(ScoringRefusal):
    code = "METHOD_INPUT_MISMATCH"
    status = 422
    zh = "提交的评审数据与评标办法不符"
    en = "the inputs do not fit the evaluation method"


class AdjustmentInvalid(ScoringRefusal):
    code = "ADJUSTMENT_INVALID"
    status = 422
    zh = "价格调整不符合招标文件规定的评标价格调整方法"
    en = "a price adjustment is not of a kind the tender documents allow"


class AdjustmentReasonRequired(ScoringRefusal):
    code = "ADJUSTMENT_REASON_REQUIRED"
    status = 422
    zh = "评审价格调整必须写明理由"
    en = "a price adjustment needs a written reason"


class BasePriceZero(ScoringRefusal):
    code = "BASE_PRICE_ZERO"
    status = 422
    zh = "评标基准价为零，无法计算价格分"
    en = "the base price is zero, so no price score can be computed"


# --- arithmetic ---------------------------------------------------------------------------------


def round_half_up(value: Fraction) -> int:
    """四舍五入 to an integer: halves go away from zero (2.5 -> 3, -2.5 -> -3).

    Values here are already in hundredths, so this rounds to 2 decimals of a point or percent.
    """
    if value < 0:
        return -round_half_up(-value)
    return math.floor(value + Fraction(1, 2))


def _fraction_text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def _trimmed_mean(
    values: Sequence[int], trim_when_at_least: int | None
) -> tuple[Fraction, list[int]]:
    """The mean of ``values``; with enough of them, one highest and one lowest are left out.

    Returns the exact mean and the left-out values ``[highest, lowest]`` (empty if none).
    """
    ordered = sorted(values)
    if trim_when_at_least is not None and len(ordered) >= trim_when_at_least:
        return Fraction(sum(ordered[1:-1]), len(ordered) - 2), [ordered[-1], ordered[0]]
    return Fraction(sum(ordered), len(ordered)), []


def _few(pairs: Sequence[tuple[str, str]], limit: int = 5) -> str:
    shown = ", ".join(f"{b}/{i}" for b, i in pairs[:limit])
    more = len(pairs) - limit
    return shown + (f" and {more} more" if more > 0 else "")


# --- sheets -------------------------------------------------------------------------------------


def _single_stage(items: Iterable[ReviewItem], stage: Stage) -> None:
    stages = {i.stage for i in items}
    if stages - {stage}:
        raise SheetStageMismatch(f"sheet stage {stage}, items of {sorted(stages)}")


class _Grid:
    """A sheet's cells, one per bid and item (or criterion), each to be filled exactly once."""

    def __init__(self, who: str, bidders: set[str], keys: Collection[str], what: str) -> None:
        self.who = who
        self.bidders = bidders
        self.keys = keys
        self.what = what
        self.seen: set[tuple[str, str]] = set()

    def enter(self, bidder: str, key: str) -> None:
        """One cell: a bid under review, a known item, not filled before."""
        if bidder not in self.bidders:
            raise SheetEntryUnknown(f"{self.who}: bid {bidder}")
        if key not in self.keys:
            raise SheetEntryUnknown(f"{self.who}: {self.what} {key}")
        if (bidder, key) in self.seen:
            raise SheetEntryDuplicate(f"{self.who}: {bidder}/{key}")
        self.seen.add((bidder, key))

    def check_complete(self) -> None:
        missing = sorted((b, k) for b in self.bidders for k in self.keys if (b, k) not in self.seen)
        if missing:
            raise SheetIncomplete(f"{self.who}: missing {_few(missing)}")


def check_review_sheet(
    sheet: ReviewSheet, bids: Collection[str], items: Sequence[ReviewItem]
) -> None:
    """Refuse a review sheet unless it has one verdict per bid per item and a reason per fail.

    ``bids`` are the bids under review at this stage; ``items`` this stage's items.
    """
    _single_stage(items, sheet.stage)
    item_ids = {i.id for i in items}
    grid = _Grid(f"expert {sheet.expert}", set(bids), item_ids, "item")
    for v in sheet.verdicts:
        grid.enter(v.bidder, v.item)
        if not v.passed and not v.reason.strip():
            raise ReasonRequiredForFail(f"{grid.who}: {v.bidder}/{v.item}")
    grid.check_complete()


def check_score_sheet(
    sheet: ScoreSheet, bids: Collection[str], criteria: Sequence[Criterion]
) -> None:
    """Refuse a score sheet unless it scores every bid on every criterion once, within 0..max."""
    maxima = {c.id: c.max_points_x100 for c in criteria}
    grid = _Grid(f"expert {sheet.expert}", set(bids), maxima, "criterion")
    for s in sheet.scores:
        grid.enter(s.bidder, s.criterion)
        top = maxima[s.criterion]
        if not 0 <= s.points_x100 <= top:
            raise ScoreOutOfRange(
                f"{grid.who}: {s.bidder}/{s.criterion} = {s.points_x100} (0..{top} hundredths)"
            )
    grid.check_complete()


def _one_per_expert(experts: Iterable[str], stage: str) -> None:
    seen: set[str] = set()
    for e in experts:
        if e in seen:
            raise ExpertSheetDuplicate(f"expert {e}, stage {stage}")
        seen.add(e)


def _check_score_sheets(
    sheets: Sequence[ScoreSheet], bids: Collection[str], criteria: Sequence[Criterion]
) -> None:
    _one_per_expert((s.expert for s in sheets), "detailed")
    for sheet in sheets:
        check_score_sheet(sheet, bids, criteria)


# --- pass/fail review ---------------------------------------------------------------------------


def review_outcome(
    sheets: Sequence[ReviewSheet], bids: Collection[str], items: Sequence[ReviewItem]
) -> ReviewOutcome:
    """The committee's conclusion for one stage: per bid per item by majority (少数服从多数).

    Every sheet must be of the items' stage and complete (:func:`check_review_sheet`); one sheet
    per expert. A bid passes the stage when it passes every item. For each item the experts on
    the losing side are kept as ``dissent`` (with their reasons), and for a failed item the
    majority's reasons as ``reasons``. Even votes are refused (REVIEW_TIE), not guessed.
    """
    if not sheets:
        raise NoSheets()
    stages = sorted({s.stage for s in sheets})
    if len(stages) > 1:
        raise SheetStageMismatch(f"sheets of stages {stages}")
    stage = sheets[0].stage
    _one_per_expert((s.expert for s in sheets), stage)
    for sheet in sheets:
        check_review_sheet(sheet, bids, items)

    ordered = sorted(sheets, key=lambda s: s.expert)
    verdict = {(s.expert, v.bidder, v.item): v for s in ordered for v in s.verdicts}
    reviews: list[BidReview] = []
    for bidder in sorted(set(bids)):
        conclusions: list[ItemConclusion] = []
        for item in items:
            cast = [verdict[(s.expert, bidder, item.id)] for s in ordered]
            votes = [
                Vote(expert=s.expert, passed=v.passed, reason=v.reason.strip())
                for s, v in zip(ordered, cast, strict=True)
            ]
            yes = sum(1 for v in votes if v.passed)
            no = len(votes) - yes
            if yes == no:
                raise ReviewTie(f"{bidder}/{item.id}: {yes} pass, {no} fail")
            passed = yes > no
            conclusions.append(
                ItemConclusion(
                    item=item.id,
                    text=item.text,
                    passed=passed,
                    pass_votes=yes,
                    fail_votes=no,
                    reasons=[] if passed else [v for v in votes if not v.passed],
                    dissent=[v for v in votes if v.passed != passed],
                )
            )
        reviews.append(
            BidReview(bidder=bidder, passed=all(c.passed for c in conclusions), items=conclusions)
        )
    return ReviewOutcome(
        stage=stage,
        experts=[s.expert for s in ordered],
        items=[i.id for i in items],
        bids=reviews,
    )


# --- price score --------------------------------------------------------------------------------


def base_price(config: ComprehensiveConfig, valid_bids: Mapping[str, int]) -> Fraction:
    """评标基准价, exact, in fen: the lowest valid price, or the average × coefficient."""
    prices = list(valid_bids.values())
    if config.base_price == "lowest":
        return Fraction(min(prices))
    assert config.coefficient is not None  # the config's validator guarantees it
    return Fraction(sum(prices), len(prices)) * Fraction(config.coefficient)


def price_scores(config: ComprehensiveConfig, valid_bids: Mapping[str, int]) -> PriceScores:
    """价格分 for every valid bid (bidder -> price in fen).

    With ``B`` the exact base price (:func:`base_price`) and ``P`` a bid's price::

        deviation % d = (P - B) / B × 100
        deduction     = d × deduct_above        if d > 0
                      = (-d) × deduct_below     if d < 0       (linear: 0.5 % counts half)
        score         = max(0, price_points - deduction)

    all in exact fractions; only the published ``score_x100`` (and the displayed deviation and
    deduction) are rounded half-up to hundredths, once, at the end.
    """
    if not valid_bids:
        return PriceScores(
            base_price=config.base_price,
            coefficient=config.coefficient,
            base_price_exact="0/1",
            base_price_fen=0,
            scores=[],
        )
    base = base_price(config, valid_bids)
    if base == 0:
        raise BasePriceZero()
    scores: list[PriceScore] = []
    for bidder in sorted(valid_bids):
        price = valid_bids[bidder]
        deviation = (price - base) * 100 / base
        if deviation > 0:
            deduction = deviation * config.deduct_above_x100
        else:
            deduction = -deviation * config.deduct_below_x100
        score = max(Fraction(0), config.price_points_x100 - deduction)
        scores.append(
            PriceScore(
                bidder=bidder,
                price_fen=price,
                deviation_x100=round_half_up(deviation * 100),
                deduction_x100=round_half_up(deduction),
                score_x100=round_half_up(score),
            )
        )
    return PriceScores(
        base_price=config.base_price,
        coefficient=config.coefficient,
        base_price_exact=_fraction_text(base),
        base_price_fen=round_half_up(base),
        scores=scores,
    )


# --- deviations (the chair's call to re-score, 复核) ---------------------------------------------


def deviations(
    sheets: Sequence[ScoreSheet], criteria: Sequence[Criterion], threshold: DeviationThreshold
) -> list[Deviation]:
    """Scores that stand out: per expert, bid and criterion, and per bid total.

    For expert ``e``, bid ``b`` and criterion ``c`` (or the total of ``b``), let ``m`` be the mean
    of the *other* experts' scores for the same ``b`` and ``c``. The score deviates when
    ``|score - m| > limit`` (strictly), where ``limit`` is ``threshold.points_x100``, or
    ``threshold.percent_of_max`` percent of ``c``'s maximum (of the sum of maxima for a total).
    Computed exactly. With fewer than two sheets nothing can deviate. Every sheet must score the
    same bids (the union of the bids on all sheets) completely.
    """
    bids = sorted({s.bidder for sheet in sheets for s in sheet.scores})
    _check_score_sheets(sheets, bids, criteria)
    if len(sheets) < 2:
        return []
    points = {(sh.expert, s.bidder, s.criterion): s.points_x100 for sh in sheets for s in sh.scores}
    experts = sorted(sh.expert for sh in sheets)

    def limit(maximum: int) -> Fraction:
        if threshold.points_x100 is not None:
            return Fraction(threshold.points_x100)
        assert threshold.percent_of_max is not None
        return Fraction(threshold.percent_of_max * maximum, 100)

    found: list[Deviation] = []
    for bidder in bids:
        lines: list[tuple[str | None, int, dict[str, int]]] = [
            (c.id, c.max_points_x100, {e: points[(e, bidder, c.id)] for e in experts})
            for c in criteria
        ]
        totals = {e: sum(points[(e, bidder, c.id)] for c in criteria) for e in experts}
        lines.append((None, sum(c.max_points_x100 for c in criteria), totals))
        for criterion, maximum, by_expert in lines:
            bound = limit(maximum)
            grand = sum(by_expert.values())
            for e in experts:
                mine = by_expert[e]
                others = Fraction(grand - mine, len(experts) - 1)
                diff = mine - others
                if abs(diff) > bound:
                    found.append(
                        Deviation(
                            expert=e,
                            bidder=bidder,
                            criterion=criterion,
                            score_x100=mine,
                            others_mean_x100=round_half_up(others),
                            difference_x100=round_half_up(diff),
                            limit_x100=round_half_up(bound),
                        )
                    )
    return found


# --- methods ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankInputs:
    """What a method sees: all bids (bidder -> price, fen), the valid ones, and the sheets."""

    bids: Mapping[str, int]
    valid: Mapping[str, int]
    reviews: Sequence[ReviewOutcome]
    score_sheets: Sequence[ScoreSheet]
    adjustments: Sequence[PriceAdjustment]


@dataclass(frozen=True)
class Scored:
    """One valid bid as a method scored it.

    ``keys`` is the sort key as named steps, smaller first: the primary score, then the
    tie-break rules in order (e.g. ``("total", -total), ("lower_price", price), ...``).
    ``fields`` are the method's :class:`RankedBid` fields.
    """

    bidder: str
    keys: tuple[tuple[str, int], ...]
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodResult:
    scored: list[Scored]
    price: PriceScores | None = None


class ScoringMethod(Protocol):
    def __call__(self, config: MethodConfig, inputs: RankInputs) -> MethodResult: ...


_METHODS: dict[str, ScoringMethod] = {}


def register_method(name: str) -> Callable[[ScoringMethod], ScoringMethod]:
    """Register an evaluation method under ``name`` (its config's ``method`` value).

    A third method is a new config model in ``schemas.scoring`` (added to ``MethodConfig``) and a
    function registered here; the other methods are not touched.
    """

    def add(method: ScoringMethod) -> ScoringMethod:
        if name in _METHODS:
            raise ValueError(f"method {name} is already registered")
        _METHODS[name] = method
        return method

    return add


def registered_methods() -> tuple[str, ...]:
    return tuple(sorted(_METHODS))


@register_method("comprehensive")
def _comprehensive(config: MethodConfig, inputs: RankInputs) -> MethodResult:
    """综合评估法: average of the experts' detailed-review totals + price score, highest first.

    Review score: each expert's total for the bid (sum over criteria); their mean, after leaving
    out one highest and one lowest total when ``trim_when_at_least`` experts or more scored. The
    technical score (the tie-break after price) is the same mean over each expert's subtotal of
    the ``tie_break_group`` criteria, trimmed on its own values (so which of two equal extremes
    is dropped never matters). Total = published review score + published price score.
    """
    if not isinstance(config, ComprehensiveConfig):
        raise MethodInputMismatch(f"config {config.method} for comprehensive")
    if inputs.adjustments:
        raise MethodInputMismatch(
            "综合评估法不使用评审价格调整 / comprehensive scoring takes no price adjustments"
        )
    sheets = inputs.score_sheets
    if inputs.valid and not sheets:
        raise NoSheets("detailed review")
    _check_score_sheets(sheets, inputs.valid, config.criteria)
    price = price_scores(config, inputs.valid)
    price_by = {p.bidder: p.score_x100 for p in price.scores}
    points = {(sh.expert, s.bidder, s.criterion): s.points_x100 for sh in sheets for s in sh.scores}
    experts = sorted(sh.expert for sh in sheets)
    technical = [c.id for c in config.criteria if c.group == config.tie_break_group]

    scored: list[Scored] = []
    for bidder in sorted(inputs.valid):
        totals = {e: sum(points[(e, bidder, c.id)] for c in config.criteria) for e in experts}
        subtotals = [sum(points[(e, bidder, c)] for c in technical) for e in experts]
        review, trimmed = _trimmed_mean(list(totals.values()), config.trim_when_at_least)
        tech, _ = _trimmed_mean(subtotals, config.trim_when_at_least)
        review_x100 = round_half_up(review)
        tech_x100 = round_half_up(tech)
        price_x100 = price_by[bidder]
        total = review_x100 + price_x100
        scored.append(
            Scored(
                bidder=bidder,
                keys=(
                    ("total", -total),
                    ("lower_price", inputs.valid[bidder]),
                    ("higher_technical_score", -tech_x100),
                ),
                fields={
                    "review_score_x100": review_x100,
                    "technical_score_x100": tech_x100,
                    "price_score_x100": price_x100,
                    "total_x100": total,
                    "expert_totals_x100": totals,
                    "trimmed_x100": trimmed,
                },
            )
        )
    return MethodResult(scored=scored, price=price)


@register_method("lowest_price")
def _lowest_price(config: MethodConfig, inputs: RankInputs) -> MethodResult:
    """经评审的最低投标价法: evaluated price = bid price + the committee's adjustments, lowest first.

    Adjustments must be of a kind the tender documents declare (七部委12号令 art. 31) and carry
    a reason; several for one bid add up. Adjustments of excluded bids are not applied.
    """
    if not isinstance(config, LowestPriceConfig):
        raise MethodInputMismatch(f"config {config.method} for lowest_price")
    if inputs.score_sheets:
        raise MethodInputMismatch(
            "经评审的最低投标价法不打分 / lowest evaluated price takes no score sheets"
        )
    if config.items:
        wanted = [i.id for i in config.items]
        detailed = [r for r in inputs.reviews if r.stage == "detailed"]
        if not detailed or sorted(detailed[0].items) != sorted(wanted):
            raise MethodInputMismatch(
                f"详细评审须按招标文件的评审因素 / a detailed review of items {wanted} is required"
            )
    kinds = {k.id for k in config.adjustment_kinds}
    by_bidder: dict[str, list[PriceAdjustment]] = {}
    for a in inputs.adjustments:
        if a.bidder not in inputs.bids:
            raise BidUnknown(f"adjustment for {a.bidder}")
        if a.kind not in kinds:
            raise AdjustmentInvalid(f"kind {a.kind} not in {sorted(kinds)}")
        if not a.reason.strip():
            raise AdjustmentReasonRequired(f"{a.bidder}/{a.kind}")
        by_bidder.setdefault(a.bidder, []).append(a)

    scored: list[Scored] = []
    for bidder in sorted(inputs.valid):
        price = inputs.valid[bidder]
        mine = sorted(by_bidder.get(bidder, []), key=lambda a: (a.kind, a.amount_fen, a.reason))
        evaluated = price + sum(a.amount_fen for a in mine)
        if evaluated < 0:
            raise AdjustmentInvalid(f"evaluated price of {bidder} would be {evaluated} fen")
        scored.append(
            Scored(
                bidder=bidder,
                keys=(("evaluated_price", evaluated), ("lower_price", price)),
                fields={"adjustments": mine, "evaluated_price_fen": evaluated},
            )
        )
    return MethodResult(scored=scored)


# --- what a method asks of the review stages ----------------------------------------------------


class MethodStages:
    """How an evaluation method shapes the review stages. The evaluation machine asks this; it
    never looks at the method's type.

    The default (a method that registers nothing): every stage is pass/fail on the tender's
    review items of that stage, and nothing is scored.
    """

    scored: frozenset[str] = frozenset()
    """The stages whose sheets are score sheets (points per criterion) rather than pass/fail."""

    def items(
        self, config: MethodConfig, review_items: Sequence[ReviewItem], stage: str
    ) -> list[ReviewItem]:
        """The pass/fail items of ``stage``."""
        return [i for i in review_items if i.stage == stage]

    def criteria(self, config: MethodConfig) -> list[Criterion]:
        """The scored criteria (of the scored stages)."""
        return []


class _ComprehensiveStages(MethodStages):
    """综合评估法: the detailed stage is scored against the method's criteria."""

    scored = frozenset({"detailed"})

    def criteria(self, config: MethodConfig) -> list[Criterion]:
        if not isinstance(config, ComprehensiveConfig):
            raise MethodInputMismatch(f"config {config.method} for comprehensive")
        return list(config.criteria)


class _LowestPriceStages(MethodStages):
    """经评审的最低投标价法: the detailed stage is pass/fail on the method's own items."""

    def items(
        self, config: MethodConfig, review_items: Sequence[ReviewItem], stage: str
    ) -> list[ReviewItem]:
        if stage != "detailed":
            return super().items(config, review_items, stage)
        if not isinstance(config, LowestPriceConfig):
            raise MethodInputMismatch(f"config {config.method} for lowest_price")
        return list(config.items)


_STAGES: dict[str, MethodStages] = {
    "comprehensive": _ComprehensiveStages(),
    "lowest_price": _LowestPriceStages(),
}


def register_stages(name: str, stages: MethodStages) -> None:
    """Say how the method ``name`` shapes the review stages (next to :func:`register_method`)."""
    if name in _STAGES:
        raise ValueError(f"stages of method {name} are already registered")
    _STAGES[name] = stages


def method_stages(config: MethodConfig) -> MethodStages:
    """The stage rules of ``config``'s method (the default when it registered none)."""
    return _STAGES.get(config.method, _DEFAULT_STAGES)


_DEFAULT_STAGES = MethodStages()


# --- ranking ------------------------------------------------------------------------------------


def _check_prices(bids: Mapping[str, int]) -> None:
    for bidder, price in bids.items():
        if isinstance(price, bool) or not isinstance(price, int) or price < 0:
            raise MethodInputMismatch(f"price of {bidder} must be integer fen >= 0: {price!r}")


def _validity(
    bids: Mapping[str, int], reviews: Sequence[ReviewOutcome]
) -> tuple[dict[str, int], list[ExcludedBid]]:
    """Split the bids into valid ones and those excluded by a failed review stage."""
    stages = [r.stage for r in reviews]
    if len(set(stages)) != len(stages):
        raise MethodInputMismatch(f"more than one outcome for a stage: {sorted(stages)}")
    ordered = sorted(reviews, key=lambda r: STAGE_ORDER.index(r.stage))
    by_stage = {r.stage: {b.bidder: b for b in r.bids} for r in ordered}
    for r in ordered:
        for b in r.bids:
            if b.bidder not in bids:
                raise BidUnknown(f"{r.stage} review of {b.bidder}")
    valid: dict[str, int] = {}
    excluded: list[ExcludedBid] = []
    for bidder in sorted(bids):
        failed: list[FailedItem] = []
        missing: list[str] = []
        first: Stage | None = None
        for r in ordered:
            review = by_stage[r.stage].get(bidder)
            if review is None:
                missing.append(r.stage)
                continue
            if not review.passed:
                first = first or r.stage
                failed += [
                    FailedItem(stage=r.stage, item=c.item, text=c.text, reasons=c.reasons)
                    for c in review.items
                    if not c.passed
                ]
        if first is not None:
            excluded.append(
                ExcludedBid(bidder=bidder, price_fen=bids[bidder], stage=first, failed_items=failed)
            )
        elif missing:
            raise BidNotReviewed(f"{bidder}: {', '.join(missing)}")
        else:
            valid[bidder] = bids[bidder]
    return valid, excluded


def rank(
    config: MethodConfig,
    bids: Mapping[str, int],
    reviews: Sequence[ReviewOutcome] = (),
    score_sheets: Sequence[ScoreSheet] = (),
    adjustments: Sequence[PriceAdjustment] = (),
) -> Ranking:
    """排序: rank the bids of one lot by ``config``'s method.

    ``bids`` maps every bid that entered the evaluation (bidder credit code -> price in fen).
    ``reviews`` are the pass/fail stage outcomes (:func:`review_outcome`); a bid that failed any
    of them is excluded with the failed items and reasons, and a bid missing from a stage it has
    not failed before is refused (BID_NOT_REVIEWED). ``score_sheets`` are the detailed-review
    sheets (comprehensive scoring), ``adjustments`` the committee's price adjustments (lowest
    evaluated price).

    Order: by the method's primary score, then its tie-break rules. Bids equal on every rule are
    listed by credit code, flagged ``tie_unresolved`` and grouped in ``unresolved_ties``; when
    such a group reaches into the recommended positions, ``committee_must_decide`` is set.
    The first ``config.recommended`` valid bids are the recommended candidates (中标候选人).
    """
    method = _METHODS.get(config.method)
    if method is None:
        raise MethodUnknown(config.method)
    _check_prices(bids)
    valid, excluded = _validity(bids, reviews)
    result = method(
        config,
        RankInputs(
            bids=dict(bids),
            valid=valid,
            reviews=list(reviews),
            score_sheets=list(score_sheets),
            adjustments=list(adjustments),
        ),
    )
    ordered = sorted(result.scored, key=lambda s: (tuple(v for _, v in s.keys), s.bidder))

    tie_breaks: list[str | None] = []
    groups: list[list[str]] = []
    for i, s in enumerate(ordered):
        prev = ordered[i - 1] if i else None
        if prev is None or prev.keys[0][1] != s.keys[0][1]:
            tie_breaks.append(None)
            continue
        rule = next(
            (name for (name, a), (_, b) in zip(prev.keys[1:], s.keys[1:], strict=True) if a != b),
            "unresolved",
        )
        tie_breaks.append(rule)
        if rule == "unresolved":
            if groups and groups[-1][-1] == prev.bidder:
                groups[-1].append(s.bidder)
            else:
                groups.append([prev.bidder, s.bidder])

    unresolved = {b for g in groups for b in g}
    n = config.recommended
    entries = [
        RankedBid(
            position=i + 1,
            bidder=s.bidder,
            price_fen=bids[s.bidder],
            recommended=i < n,
            tie_break=tie_breaks[i],
            tie_unresolved=s.bidder in unresolved,
            **s.fields,
        )
        for i, s in enumerate(ordered)
    ]
    first_position = {e.bidder: e.position for e in entries}
    return Ranking(
        method=config.method,
        entries=entries,
        excluded=excluded,
        recommended=[e.bidder for e in entries if e.recommended],
        unresolved_ties=groups,
        committee_must_decide=any(first_position[g[0]] <= n for g in groups),
        price=result.price,
    )


def ranking_document(
    config: MethodConfig, ranking: Ranking, reviews: Sequence[ReviewOutcome] = ()
) -> dict[str, Any]:
    """The ranking as a plain dict for canonical JSON (to be signed and put in the report).

    Only strings, integers, booleans, lists, dicts and None: points in hundredths, money in fen.
    """
    ordered = sorted(reviews, key=lambda r: STAGE_ORDER.index(r.stage))
    return {
        "format": "bidbridge-ranking",
        "version": 1,
        "method": config.method,
        "config": config.model_dump(mode="json"),
        "reviews": [r.model_dump(mode="json") for r in ordered],
        "ranking": ranking.model_dump(mode="json"),
    }
