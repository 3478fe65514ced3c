"""The evaluation's review and scoring documents: method configs, expert sheets, the ranking.

Units, everywhere in this module:

* money is integer fen (分), never a float;
* points are integer **hundredths of a point** (fields ending ``_x100``): 8.5 points = ``850``;
* percentages that are published (deviations) are hundredths of a percent, also ``_x100``;
* exact ratios given by the tender documents (the base price coefficient) are decimal strings.

The rules that turn sheets into a ranking live in ``server.domain.scoring``; these are only the
shapes, so that the API, the store and the report all read and write the same documents.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from schemas.common import CreditCode, Fen

Stage = Literal["qualification", "preliminary", "detailed"]
"""资格审查 qualification · 初步评审 preliminary · 详细评审 detailed review."""

STAGE_ORDER: tuple[Stage, ...] = ("qualification", "preliminary", "detailed")

Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
"""An id written in the tender documents: a review item, a criterion, an adjustment kind."""

Points = Annotated[int, Field(strict=True)]
"""Points in integer hundredths (8.5 points = 850). Range checks are the domain's, so that an
out-of-range score is a typed refusal (SCORE_OUT_OF_RANGE) rather than a parse error."""

PositivePoints = Annotated[int, Field(strict=True, ge=1, le=100_000)]
NonNegativePoints = Annotated[int, Field(strict=True, ge=0, le=100_000)]

_DECIMAL = re.compile(r"[0-9]{1,3}(\.[0-9]{1,6})?")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what} 编号重复 / duplicate {what} id: {i}")
        seen.add(i)


# --- what the tender documents say --------------------------------------------------------------


class ReviewItem(_Model):
    """A pass/fail item (审查因素): qualification 资格审查, preliminary 初步评审, or the pass/fail
    factors of a lowest-evaluated-price detailed review."""

    id: Key
    stage: Stage
    text: str = Field(min_length=1, max_length=500)


class Criterion(_Model):
    """A scored factor of the detailed review (详细评审评分因素) with its maximum."""

    id: Key
    group: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="e.g. technical 技术, commercial 商务",
    )
    text: str = Field(min_length=1, max_length=500)
    max_points_x100: PositivePoints


class ComprehensiveConfig(_Model):
    """综合评估法: detailed-review criteria plus a price score by formula.

    Price score: the base price (评标基准价) is the lowest valid price (``lowest``) or the average
    of the valid prices times ``coefficient`` (``average``). A price ``d`` percent above the base
    loses ``deduct_above_x100`` hundredths of a point per 1 % (linearly, fractions of a percent
    count pro rata); below the base, ``deduct_below_x100`` per 1 %. The score never goes below 0.
    """

    method: Literal["comprehensive"] = "comprehensive"
    criteria: list[Criterion] = Field(min_length=1, max_length=200)
    price_points_x100: NonNegativePoints = Field(description="价格分满分, e.g. 3000 = 30 points")
    base_price: Literal["lowest", "average"]
    coefficient: str | None = Field(
        default=None,
        description='下浮系数 for base_price "average", an exact decimal string such as "0.95"',
    )
    deduct_above_x100: NonNegativePoints = Field(description="points deducted per 1 % above")
    deduct_below_x100: NonNegativePoints = Field(description="points deducted per 1 % below")
    trim_when_at_least: int | None = Field(
        default=None,
        ge=3,
        le=99,
        description="去掉一个最高分和一个最低分 when at least this many experts scored",
    )
    tie_break_group: str = Field(
        default="technical",
        description='the criteria group whose score breaks ties after price ("技术标得分高的优先")',
    )
    recommended: int = Field(default=3, ge=1, le=10, description="中标候选人 count")

    @field_validator("criteria")
    @classmethod
    def _unique_criteria(cls, criteria: list[Criterion]) -> list[Criterion]:
        _unique([c.id for c in criteria], "criterion")
        return criteria

    @field_validator("coefficient")
    @classmethod
    def _exact_coefficient(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _DECIMAL.fullmatch(value):
            raise ValueError(
                f'系数须为十进制小数字符串 / coefficient must be like "0.95": {value!r}'
            )
        if not Decimal(0) < Decimal(value) <= Decimal(2):
            raise ValueError(f"系数须在 (0, 2] 内 / coefficient must be in (0, 2]: {value}")
        return value

    @model_validator(mode="after")
    def _coefficient_with_average(self) -> ComprehensiveConfig:
        if self.base_price == "average" and self.coefficient is None:
            raise ValueError(
                "平均值基准价须给出系数 / base_price average needs a coefficient (e.g. '1' or '0.95')"
            )
        if self.base_price == "lowest" and self.coefficient is not None:
            raise ValueError("最低价基准价不使用系数 / base_price lowest takes no coefficient")
        if all(c.group != self.tie_break_group for c in self.criteria):
            raise ValueError(
                f"没有属于 {self.tie_break_group} 组的评分因素 / no criterion is in the "
                f"tie_break_group {self.tie_break_group!r}"
            )
        return self

    @property
    def review_max_x100(self) -> int:
        return sum(c.max_points_x100 for c in self.criteria)


class AdjustmentKind(_Model):
    """A price-adjustment method the tender documents allow (评标价格调整方法, 七部委12号令 art. 31)."""

    id: Key
    text: str = Field(min_length=1, max_length=500)


class LowestPriceConfig(_Model):
    """经评审的最低投标价法: pass/fail detailed review, then the evaluated price ascending."""

    method: Literal["lowest_price"] = "lowest_price"
    items: list[ReviewItem] = Field(default_factory=list, max_length=200)
    adjustment_kinds: list[AdjustmentKind] = Field(default_factory=list, max_length=50)
    recommended: int = Field(default=3, ge=1, le=10, description="中标候选人 count")

    @field_validator("items")
    @classmethod
    def _detailed_items(cls, items: list[ReviewItem]) -> list[ReviewItem]:
        _unique([i.id for i in items], "item")
        if any(i.stage != "detailed" for i in items):
            raise ValueError("评审因素须属详细评审 / the method's items belong to stage detailed")
        return items

    @field_validator("adjustment_kinds")
    @classmethod
    def _unique_kinds(cls, kinds: list[AdjustmentKind]) -> list[AdjustmentKind]:
        _unique([k.id for k in kinds], "adjustment kind")
        return kinds


MethodConfig = Annotated[ComprehensiveConfig | LowestPriceConfig, Field(discriminator="method")]
"""One evaluation method's configuration, told apart by ``method``."""

METHOD_CONFIG: TypeAdapter[ComprehensiveConfig | LowestPriceConfig] = TypeAdapter(MethodConfig)
"""Parse a :data:`MethodConfig` from a dict or JSON: ``METHOD_CONFIG.validate_python(data)``."""


# --- what the experts and the committee write ---------------------------------------------------


class ReviewVerdict(_Model):
    """One expert's pass/fail on one item for one bid. A fail needs a reason (checked by the
    domain, REASON_REQUIRED_FOR_FAIL); a pass may carry a note."""

    bidder: CreditCode
    item: Key
    passed: bool = Field(strict=True)
    reason: str = Field(default="", max_length=2000)


class ReviewSheet(_Model):
    """One expert's review sheet for one stage: a verdict per bid per item."""

    expert: str = Field(min_length=1, max_length=64)
    stage: Stage
    verdicts: list[ReviewVerdict] = Field(max_length=100_000)


class ScoreEntry(_Model):
    bidder: CreditCode
    criterion: Key
    points_x100: Points
    note: str = Field(default="", max_length=2000)


class ScoreSheet(_Model):
    """One expert's detailed-review score sheet: points per bid per criterion."""

    expert: str = Field(min_length=1, max_length=64)
    stage: Literal["detailed"] = "detailed"
    scores: list[ScoreEntry] = Field(max_length=100_000)


class PriceAdjustment(_Model):
    """评审价格调整: an amount the committee adds to (or takes from) one bid's price for
    evaluation only, of a kind the tender documents allow, with the reason."""

    bidder: CreditCode
    kind: Key
    amount_fen: int = Field(strict=True, ge=-(10**15), le=10**15)
    reason: str = Field(default="", max_length=2000)


class DeviationThreshold(_Model):
    """When a score counts as deviating (for the chair's call to re-score, 复核).

    Exactly one of: ``points_x100`` (absolute), or ``percent_of_max`` (of the criterion's maximum,
    or of the sum of the maxima for a bid's total). A score deviates when it differs from the mean
    of the *other* experts' scores for the same bid and criterion by strictly more than that.
    """

    points_x100: NonNegativePoints | None = None
    percent_of_max: int | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _exactly_one(self) -> DeviationThreshold:
        if (self.points_x100 is None) == (self.percent_of_max is None):
            raise ValueError(
                "须且只须给出 points_x100 或 percent_of_max 之一 / give exactly one of "
                "points_x100 and percent_of_max"
            )
        return self


# --- what the rules conclude --------------------------------------------------------------------


class Vote(_Model):
    expert: str
    passed: bool
    reason: str = ""


class ItemConclusion(_Model):
    """The committee's conclusion on one item for one bid, by majority (少数服从多数)."""

    item: str
    text: str
    passed: bool
    pass_votes: int
    fail_votes: int
    reasons: list[Vote] = Field(description="the majority's fail reasons when the item failed")
    dissent: list[Vote] = Field(description="experts who voted against the majority")


class BidReview(_Model):
    bidder: str
    passed: bool
    items: list[ItemConclusion]


class ReviewOutcome(_Model):
    """One stage's conclusion for every bid reviewed in it."""

    stage: Stage
    experts: list[str]
    items: list[str]
    bids: list[BidReview]

    def for_bidder(self, bidder: str) -> BidReview | None:
        for b in self.bids:
            if b.bidder == bidder:
                return b
        return None


class PriceScore(_Model):
    bidder: str
    price_fen: int
    deviation_x100: int = Field(description="(price - base) / base, hundredths of a percent")
    deduction_x100: int
    score_x100: int


class PriceScores(_Model):
    """价格分: the base price and every valid bid's price score.

    ``base_price_exact`` is the base as an exact fraction "numerator/denominator" (fen); the
    scores are computed from it. ``base_price_fen`` is that value rounded for display only.
    """

    base_price: Literal["lowest", "average"]
    coefficient: str | None
    base_price_exact: str
    base_price_fen: int
    scores: list[PriceScore]


class Deviation(_Model):
    """One expert's score that differs from the mean of the others by more than the threshold.

    ``criterion`` None means the bid's total. Values other than ``score_x100`` are rounded half
    away from zero for display; the comparison was made on exact values.
    """

    expert: str
    bidder: str
    criterion: str | None
    score_x100: int
    others_mean_x100: int
    difference_x100: int
    limit_x100: int


class FailedItem(_Model):
    stage: Stage
    item: str
    text: str
    reasons: list[Vote]


class ExcludedBid(_Model):
    """A bid that failed qualification, preliminary or pass/fail detailed review (否决投标)."""

    bidder: str
    price_fen: int
    stage: Stage = Field(description="the first stage it failed")
    failed_items: list[FailedItem]


TieBreak = str
"""Which rule placed a bid after the one above it when their primary scores were equal:
``lower_price`` (投标报价低的优先), ``higher_technical_score`` (技术得分高的优先), or
``unresolved`` (still equal: the committee decides; the listed order is by credit code only)."""


class RankedBid(_Model):
    """One valid bid's place in the ranking. Fields a method does not use are None."""

    position: int = Field(ge=1)
    bidder: str
    price_fen: Fen
    recommended: bool
    tie_break: TieBreak | None = None
    tie_unresolved: bool = False
    # 综合评估法
    review_score_x100: int | None = Field(default=None, description="详细评审得分 (average)")
    technical_score_x100: int | None = Field(default=None, description="tie_break_group score")
    price_score_x100: int | None = None
    total_x100: int | None = None
    expert_totals_x100: dict[str, int] | None = None
    trimmed_x100: list[int] | None = Field(
        default=None, description="the highest and lowest expert totals left out of the average"
    )
    # 经评审的最低投标价法
    adjustments: list[PriceAdjustment] | None = None
    evaluated_price_fen: int | None = None


class Ranking(_Model):
    """排序 and 推荐中标候选人 as the rules give them; the committee signs it in the report."""

    method: str
    entries: list[RankedBid]
    excluded: list[ExcludedBid]
    recommended: list[str]
    unresolved_ties: list[list[str]] = Field(
        description="groups of bidders still equal after every tie-break rule"
    )
    committee_must_decide: bool = Field(
        description="an unresolved tie touches the recommended positions"
    )
    price: PriceScores | None = None
