"""The evaluation's review and scoring rules as specifications of ``server.domain.scoring``.

Pure: no server, no database, no clock. Every worked example writes its inputs and the expected
outputs as literal numbers, computed by hand in the comments. Units: money in fen, points in
hundredths of a point (``_x100``: 8.5 points = 850).
"""

from __future__ import annotations

import random
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.canonical import canonical_json
from schemas.scoring import (
    METHOD_CONFIG,
    AdjustmentKind,
    ComprehensiveConfig,
    Criterion,
    DeviationThreshold,
    LowestPriceConfig,
    PriceAdjustment,
    Ranking,
    ReviewItem,
    ReviewOutcome,
    ReviewSheet,
    ReviewVerdict,
    ScoreEntry,
    ScoreSheet,
)
from server.domain import scoring as SC
from server.domain.errors import Refusal
from tests.support.rules import code

A, B, C, D, E = (code(i) for i in range(1, 6))
NAMES = {A: "A", B: "B", C: "C", D: "D", E: "E"}


def review_sheet(expert: str, stage: str, marks: dict[str, dict[str, bool | str]]) -> ReviewSheet:
    """``marks[bidder][item]`` is True for a pass, or the reason text for a fail."""
    return ReviewSheet(
        expert=expert,
        stage=stage,
        verdicts=[
            ReviewVerdict(bidder=b, item=i, passed=m is True, reason="" if m is True else str(m))
            for b, row in marks.items()
            for i, m in row.items()
        ],
    )


def score_sheet(expert: str, points: dict[str, dict[str, int]]) -> ScoreSheet:
    return ScoreSheet(
        expert=expert,
        scores=[
            ScoreEntry(bidder=b, criterion=c, points_x100=p)
            for b, row in points.items()
            for c, p in row.items()
        ],
    )


def refused(exc: pytest.ExceptionInfo[Refusal], code_: str) -> None:
    assert exc.value.code == code_
    assert exc.value.zh and exc.value.en
    assert isinstance(exc.value, SC.ScoringRefusal)


# --- the worked example of 综合评估法 -------------------------------------------------------------

# Five bids, in fen: A 1,000,000.00 yuan, B 980,000.00, C 950,000.00, D 1,020,000.00,
# E 900,000.00.
PRICES = {A: 100_000_000, B: 98_000_000, C: 95_000_000, D: 102_000_000, E: 90_000_000}

CRITERIA = [
    Criterion(id="T1", group="technical", text="施工方案与技术措施", max_points_x100=3000),
    Criterion(id="T2", group="technical", text="质量管理体系与措施", max_points_x100=2000),
    Criterion(id="C1", group="commercial", text="企业业绩与信誉", max_points_x100=2000),
]

# Three experts' detailed-review scores, (T1, T2, C1) in hundredths:
#          e1                  e2                  e3                  totals            mean
#   A  25   16   15  =56   24   17   16  =57   26   15   14  =55   (56+57+55)/3     = 56.00
#   B  22   15   16  =53   23   14   15  =52   21.5 15   16  =52.5 (157.5)/3        = 52.50
#   C  20   14   15  =49   21   13   15  =49   19   14.5 15  =48.5 (146.5)/3=48.833 -> 48.83
#   D  27   18   17  =62   28   18   18  =64   27   19   17  =63   189/3            = 63.00
#   E  18   12   14  =44   17   12   13  =42   18.5 11   14  =43.5 (129.5)/3=43.167 -> 43.17
# Technical (T1+T2) means: A 41.00; B (37+37+36.5)/3 = 36.83; C (34+34+33.5)/3 = 33.83;
#   D (45+46+46)/3 = 45.67; E (30+29+29.5)/3 = 29.50.
SCORES: dict[str, dict[str, tuple[int, int, int]]] = {
    "e1": {
        A: (2500, 1600, 1500),
        B: (2200, 1500, 1600),
        C: (2000, 1400, 1500),
        D: (2700, 1800, 1700),
        E: (1800, 1200, 1400),
    },
    "e2": {
        A: (2400, 1700, 1600),
        B: (2300, 1400, 1500),
        C: (2100, 1300, 1500),
        D: (2800, 1800, 1800),
        E: (1700, 1200, 1300),
    },
    "e3": {
        A: (2600, 1500, 1400),
        B: (2150, 1500, 1600),
        C: (1900, 1450, 1500),
        D: (2700, 1900, 1700),
        E: (1850, 1100, 1400),
    },
}


def worked_sheets(bidders: list[str] | None = None) -> list[ScoreSheet]:
    keep = bidders if bidders is not None else list(PRICES)
    return [
        score_sheet(
            expert,
            {
                b: dict(zip(("T1", "T2", "C1"), pts, strict=True))
                for b, pts in rows.items()
                if b in keep
            },
        )
        for expert, rows in SCORES.items()
    ]


def comprehensive(**overrides: Any) -> ComprehensiveConfig:
    base: dict[str, Any] = {
        "criteria": CRITERIA,
        "price_points_x100": 3000,  # 30 points
        "base_price": "lowest",
        "deduct_above_x100": 100,  # 1 point per 1 % above the base
        "deduct_below_x100": 50,  # 0.5 point per 1 % below the base
    }
    return ComprehensiveConfig(**(base | overrides))


def table(ranking: Ranking) -> list[tuple[str, int | None, int | None, int | None, int | None]]:
    return [
        (
            NAMES.get(e.bidder, e.bidder),
            e.price_score_x100,
            e.review_score_x100,
            e.technical_score_x100,
            e.total_x100,
        )
        for e in ranking.entries
    ]


def test_price_scores_with_the_lowest_valid_price_as_base() -> None:
    # Base = lowest valid price = E 900,000.00 yuan. Deviation d = (P - base) / base × 100 %:
    #   A 100/90 - 1 = 11.111 % -> 30 - 11.111 = 18.889 -> 18.89
    #   B  98/90 - 1 =  8.889 % -> 30 -  8.889 = 21.111 -> 21.11
    #   C  95/90 - 1 =  5.556 % -> 30 -  5.556 = 24.444 -> 24.44
    #   D 102/90 - 1 = 13.333 % -> 30 - 13.333 = 16.667 -> 16.67
    #   E 0 %                   -> 30.00
    result = SC.price_scores(comprehensive(), PRICES)
    assert result.base_price_exact == "90000000/1"
    assert result.base_price_fen == 90_000_000
    assert {NAMES[s.bidder]: s.score_x100 for s in result.scores} == {
        "A": 1889,
        "B": 2111,
        "C": 2444,
        "D": 1667,
        "E": 3000,
    }
    assert {NAMES[s.bidder]: s.deviation_x100 for s in result.scores} == {
        "A": 1111,
        "B": 889,
        "C": 556,
        "D": 1333,
        "E": 0,
    }


def test_price_scores_with_the_average_times_a_coefficient_as_base() -> None:
    # Average = (100 + 98 + 95 + 102 + 90) / 5 = 97 (ten-thousand yuan); × 0.95 = 92.15,
    # base = 921,500.00 yuan. Above: 1 point per 1 %; below: 0.5 point per 1 %.
    #   A  7.85/92.15 =  8.5187 % -> 30 - 8.5187       = 21.4813 -> 21.48
    #   B  5.85/92.15 =  6.3483 % -> 30 - 6.3483       = 23.6517 -> 23.65
    #   C  2.85/92.15 =  3.0928 % -> 30 - 3.0928       = 26.9072 -> 26.91
    #   D  9.85/92.15 = 10.6891 % -> 30 - 10.6891      = 19.3109 -> 19.31
    #   E -2.15/92.15 = -2.3332 % -> 30 - 2.3332 × 0.5 = 28.8334 -> 28.83
    result = SC.price_scores(comprehensive(base_price="average", coefficient="0.95"), PRICES)
    assert result.base_price_exact == "92150000/1"
    assert result.coefficient == "0.95"
    assert {NAMES[s.bidder]: s.score_x100 for s in result.scores} == {
        "A": 2148,
        "B": 2365,
        "C": 2691,
        "D": 1931,
        "E": 2883,
    }
    assert {NAMES[s.bidder]: (s.deviation_x100, s.deduction_x100) for s in result.scores} == {
        "A": (852, 852),
        "B": (635, 635),
        "C": (309, 309),
        "D": (1069, 1069),
        "E": (-233, 117),
    }


def test_comprehensive_worked_example_with_the_lowest_price_base() -> None:
    # total = review mean + price score (both as published, 2 decimals):
    #   A 56.00 + 18.89 = 74.89   B 52.50 + 21.11 = 73.61   C 48.83 + 24.44 = 73.27
    #   D 63.00 + 16.67 = 79.67   E 43.17 + 30.00 = 73.17
    # Ranking D, A, B, C, E; recommended D, A, B.
    ranking = SC.rank(comprehensive(), PRICES, score_sheets=worked_sheets())
    assert table(ranking) == [
        ("D", 1667, 6300, 4567, 7967),
        ("A", 1889, 5600, 4100, 7489),
        ("B", 2111, 5250, 3683, 7361),
        ("C", 2444, 4883, 3383, 7327),
        ("E", 3000, 4317, 2950, 7317),
    ]
    assert ranking.recommended == [D, A, B]
    assert [e.position for e in ranking.entries] == [1, 2, 3, 4, 5]
    assert ranking.entries[0].expert_totals_x100 == {"e1": 6200, "e2": 6400, "e3": 6300}
    assert ranking.entries[0].trimmed_x100 == []
    assert ranking.unresolved_ties == [] and not ranking.committee_must_decide
    assert ranking.excluded == []
    assert all(e.tie_break is None for e in ranking.entries)


def test_comprehensive_worked_example_with_the_average_base() -> None:
    #   A 56.00 + 21.48 = 77.48   B 52.50 + 23.65 = 76.15   C 48.83 + 26.91 = 75.74
    #   D 63.00 + 19.31 = 82.31   E 43.17 + 28.83 = 72.00
    config = comprehensive(base_price="average", coefficient="0.95")
    ranking = SC.rank(config, PRICES, score_sheets=worked_sheets())
    assert table(ranking) == [
        ("D", 1931, 6300, 4567, 8231),
        ("A", 2148, 5600, 4100, 7748),
        ("B", 2365, 5250, 3683, 7615),
        ("C", 2691, 4883, 3383, 7574),
        ("E", 2883, 4317, 2950, 7200),
    ]
    assert ranking.recommended == [D, A, B]
    assert ranking.price is not None and ranking.price.base_price_fen == 92_150_000


def test_recommended_count_follows_the_config() -> None:
    ranking = SC.rank(comprehensive(recommended=2), PRICES, score_sheets=worked_sheets())
    assert ranking.recommended == [D, A]
    assert [e.recommended for e in ranking.entries] == [True, True, False, False, False]


def test_price_score_never_goes_below_zero() -> None:
    # Base 1,000,000.00; the other bid is 2,000,000.00: 100 % above -> 30 - 100 < 0 -> 0.
    result = SC.price_scores(comprehensive(), {A: 100_000_000, B: 200_000_000})
    assert [(s.score_x100, s.deviation_x100, s.deduction_x100) for s in result.scores] == [
        (3000, 0, 0),
        (0, 10000, 10000),
    ]


def test_price_score_is_rounded_half_up_once_at_the_end() -> None:
    # Average of 98,970.00 and 101,030.00 yuan is 100,000.00; coefficient 1 -> base 100,000.00.
    # A is 1.03 % below: 30 - 1.03 × 0.5 = 29.485 -> 29.49 (half-up; half-even would give 29.48).
    # B is 1.03 % above: 30 - 1.03 × 1   = 28.97.
    config = comprehensive(base_price="average", coefficient="1")
    result = SC.price_scores(config, {A: 9_897_000, B: 10_103_000})
    assert [(s.deviation_x100, s.score_x100) for s in result.scores] == [(-103, 2949), (103, 2897)]


def test_trimming_leaves_out_one_highest_and_one_lowest_expert_total() -> None:
    # Five experts score one criterion (max 100) for A: 60, 62, 65, 70, 50.
    # Trimmed (5 or more experts): (60 + 62 + 65) / 3 = 62.333 -> 62.33; left out 70 and 50.
    # Untrimmed (the rule needs 7): 307 / 5 = 61.40.
    criteria = [Criterion(id="T1", group="technical", text="技术方案", max_points_x100=10000)]
    sheets = [
        score_sheet(f"e{i}", {A: {"T1": p}})
        for i, p in enumerate((6000, 6200, 6500, 7000, 5000), 1)
    ]
    trimmed = SC.rank(
        comprehensive(criteria=criteria, trim_when_at_least=5), {A: 100}, score_sheets=sheets
    )
    assert trimmed.entries[0].review_score_x100 == 6233
    assert trimmed.entries[0].technical_score_x100 == 6233
    assert trimmed.entries[0].trimmed_x100 == [7000, 5000]
    plain = SC.rank(
        comprehensive(criteria=criteria, trim_when_at_least=7), {A: 100}, score_sheets=sheets
    )
    assert plain.entries[0].review_score_x100 == 6140
    assert plain.entries[0].trimmed_x100 == []


# --- ties ---------------------------------------------------------------------------------------

TIE_CRITERIA = [
    Criterion(id="T", group="technical", text="技术", max_points_x100=6000),
    Criterion(id="M", group="commercial", text="商务", max_points_x100=4000),
]


def same_scores(points: dict[str, dict[str, int]]) -> list[ScoreSheet]:
    return [score_sheet(e, points) for e in ("e1", "e2", "e3")]


def test_equal_totals_are_broken_by_the_lower_price() -> None:
    # P = code(8) bids 1,000,000.00 (the base: 30 points) and scores T 30 + M 20 = 50 -> 80.
    # Q = code(2) bids 1,100,000.00 (10 % above: 20 points), scores T 35 + M 25 = 60 -> 80.
    # Equal totals; P's price is lower, so P is first although Q's credit code sorts first.
    p, q = code(8), code(2)
    ranking = SC.rank(
        comprehensive(criteria=TIE_CRITERIA),
        {p: 100_000_000, q: 110_000_000},
        score_sheets=same_scores({p: {"T": 3000, "M": 2000}, q: {"T": 3500, "M": 2500}}),
    )
    assert [(e.bidder, e.total_x100, e.tie_break) for e in ranking.entries] == [
        (p, 8000, None),
        (q, 8000, "lower_price"),
    ]
    assert ranking.unresolved_ties == [] and not ranking.committee_must_decide


def test_equal_totals_and_prices_are_broken_by_the_higher_technical_score() -> None:
    # Same price (both 30 points). X = code(9): T 40 + M 10 = 50; Y = code(2): T 35 + M 15 = 50.
    # Totals 80 and 80, prices equal; X's technical score 40 > 35, so X is first.
    x, y = code(9), code(2)
    ranking = SC.rank(
        comprehensive(criteria=TIE_CRITERIA),
        {x: 100_000_000, y: 100_000_000},
        score_sheets=same_scores({x: {"T": 4000, "M": 1000}, y: {"T": 3500, "M": 1500}}),
    )
    assert [(e.bidder, e.technical_score_x100, e.tie_break) for e in ranking.entries] == [
        (x, 4000, None),
        (y, 3500, "higher_technical_score"),
    ]
    assert not any(e.tie_unresolved for e in ranking.entries)


def test_a_tie_no_rule_breaks_is_flagged_for_the_committee_in_credit_code_order() -> None:
    # W = code(1) leads with 90; U = code(7) and V = code(3) are equal on total, price and
    # technical score. They are listed V, U (credit code order only) and flagged.
    w, u, v = code(1), code(7), code(3)
    ranking = SC.rank(
        comprehensive(criteria=TIE_CRITERIA),
        {w: 100_000_000, u: 100_000_000, v: 100_000_000},
        score_sheets=same_scores(
            {w: {"T": 4000, "M": 2000}, u: {"T": 3000, "M": 2000}, v: {"T": 3000, "M": 2000}}
        ),
    )
    assert [(e.bidder, e.tie_break, e.tie_unresolved) for e in ranking.entries] == [
        (w, None, False),
        (v, None, True),  # tie_break says how an entry was placed after the one above it
        (u, "unresolved", True),
    ]
    assert ranking.unresolved_ties == [[v, u]]
    assert ranking.committee_must_decide
    assert ranking.recommended == [w, v, u]
    # With one candidate to recommend, the tie at positions 2 and 3 decides nothing.
    one = SC.rank(
        comprehensive(criteria=TIE_CRITERIA, recommended=1),
        {w: 100_000_000, u: 100_000_000, v: 100_000_000},
        score_sheets=same_scores(
            {w: {"T": 4000, "M": 2000}, u: {"T": 3000, "M": 2000}, v: {"T": 3000, "M": 2000}}
        ),
    )
    assert one.unresolved_ties == [[v, u]] and not one.committee_must_decide


# --- pass/fail review ---------------------------------------------------------------------------

QUALIFICATION = [
    ReviewItem(id="Q1", stage="qualification", text="营业执照有效"),
    ReviewItem(id="Q2", stage="qualification", text="施工总承包二级及以上资质"),
]


def test_review_outcome_is_by_majority_and_records_the_dissent() -> None:
    # Five experts. A: Q2 passed 4 to 1, e5 dissents with a reason -> A passes.
    # B: Q2 failed 3 to 2 (e3, e4, e5 with reasons); e1 and e2 dissent -> B fails.
    ok: dict[str, bool | str] = {"Q1": True, "Q2": True}
    sheets = [
        review_sheet("e1", "qualification", {A: ok, B: ok}),
        review_sheet("e2", "qualification", {A: ok, B: ok}),
        review_sheet("e3", "qualification", {A: ok, B: {"Q1": True, "Q2": "资质证书已过期"}}),
        review_sheet("e4", "qualification", {A: ok, B: {"Q1": True, "Q2": "资质等级为三级"}}),
        review_sheet(
            "e5",
            "qualification",
            {A: {"Q1": True, "Q2": "资质证书扫描件不清晰"}, B: {"Q1": True, "Q2": "资质不符"}},
        ),
    ]
    outcome = SC.review_outcome(list(reversed(sheets)), [B, A], QUALIFICATION)
    assert outcome.stage == "qualification"
    assert outcome.experts == ["e1", "e2", "e3", "e4", "e5"]
    a, b = outcome.for_bidder(A), outcome.for_bidder(B)
    assert a is not None and b is not None
    assert a.passed and not b.passed
    a_q2 = a.items[1]
    assert (a_q2.item, a_q2.passed, a_q2.pass_votes, a_q2.fail_votes) == ("Q2", True, 4, 1)
    assert [(v.expert, v.reason) for v in a_q2.dissent] == [("e5", "资质证书扫描件不清晰")]
    assert a_q2.reasons == []
    b_q2 = b.items[1]
    assert (b_q2.passed, b_q2.pass_votes, b_q2.fail_votes) == (False, 2, 3)
    assert [(v.expert, v.reason) for v in b_q2.reasons] == [
        ("e3", "资质证书已过期"),
        ("e4", "资质等级为三级"),
        ("e5", "资质不符"),
    ]
    assert [v.expert for v in b_q2.dissent] == ["e1", "e2"]
    assert b.items[0].passed and b.items[0].dissent == []


def test_even_votes_are_refused_not_guessed() -> None:
    sheets = [
        review_sheet("e1", "qualification", {A: {"Q1": True}}),
        review_sheet("e2", "qualification", {A: {"Q1": True}}),
        review_sheet("e3", "qualification", {A: {"Q1": "无营业执照"}}),
        review_sheet("e4", "qualification", {A: {"Q1": "营业执照已吊销"}}),
    ]
    with pytest.raises(SC.ReviewTie) as exc:
        SC.review_outcome(sheets, [A], QUALIFICATION[:1])
    refused(exc, "REVIEW_TIE")


def test_a_failed_bid_is_excluded_with_the_reason_and_the_base_price_ignores_it() -> None:
    # E (the lowest price, 900,000.00) fails Q2 by 2 to 1 and is excluded. The base becomes
    # C's 950,000.00, the lowest *valid* price:
    #   A 100/95 - 1 = 5.263 % -> 24.737 -> 24.74; total 56.00 + 24.74 = 80.74
    #   B  98/95 - 1 = 3.158 % -> 26.842 -> 26.84; total 52.50 + 26.84 = 79.34
    #   C  0 %                 -> 30.00;            total 48.83 + 30.00 = 78.83
    #   D 102/95 - 1 = 7.368 % -> 22.632 -> 22.63; total 63.00 + 22.63 = 85.63
    ok: dict[str, bool | str] = {"Q1": True, "Q2": True}
    marks: dict[str, dict[str, bool | str]] = {A: ok, B: ok, C: ok, D: ok}
    sheets = [
        review_sheet("e1", "qualification", marks | {E: {"Q1": True, "Q2": "无相应资质"}}),
        review_sheet("e2", "qualification", marks | {E: {"Q1": True, "Q2": "资质证书已过期"}}),
        review_sheet("e3", "qualification", marks | {E: ok}),
    ]
    outcome = SC.review_outcome(sheets, list(PRICES), QUALIFICATION)
    ranking = SC.rank(
        comprehensive(), PRICES, reviews=[outcome], score_sheets=worked_sheets([A, B, C, D])
    )
    assert table(ranking) == [
        ("D", 2263, 6300, 4567, 8563),
        ("A", 2474, 5600, 4100, 8074),
        ("B", 2684, 5250, 3683, 7934),
        ("C", 3000, 4883, 3383, 7883),
    ]
    assert ranking.price is not None and ranking.price.base_price_fen == 95_000_000
    [excluded] = ranking.excluded
    assert (excluded.bidder, excluded.stage, excluded.price_fen) == (E, "qualification", 90_000_000)
    [failed] = excluded.failed_items
    assert (failed.item, failed.text) == ("Q2", "施工总承包二级及以上资质")
    assert [(v.expert, v.reason) for v in failed.reasons] == [
        ("e1", "无相应资质"),
        ("e2", "资质证书已过期"),
    ]
    # Scoring the excluded bid is refused: the detailed review covers the valid bids only.
    with pytest.raises(SC.SheetEntryUnknown):
        SC.rank(comprehensive(), PRICES, reviews=[outcome], score_sheets=worked_sheets())


def test_a_bid_missing_from_a_review_stage_is_refused() -> None:
    sheets = [review_sheet(e, "qualification", {A: {"Q1": True}}) for e in ("e1", "e2", "e3")]
    outcome = SC.review_outcome(sheets, [A], QUALIFICATION[:1])
    with pytest.raises(SC.BidNotReviewed) as exc:
        SC.rank(
            comprehensive(),
            {A: 100, B: 100},
            reviews=[outcome],
            score_sheets=worked_sheets([A, B]),
        )
    refused(exc, "BID_NOT_REVIEWED")


# --- refused sheets -----------------------------------------------------------------------------


def test_a_score_above_the_maximum_is_refused() -> None:
    sheet = score_sheet("e1", {A: {"T1": 3001, "T2": 1000, "C1": 1000}})
    with pytest.raises(SC.ScoreOutOfRange) as exc:
        SC.check_score_sheet(sheet, [A], CRITERIA)
    refused(exc, "SCORE_OUT_OF_RANGE")
    assert "T1" in exc.value.detail


def test_a_negative_score_is_refused() -> None:
    sheet = score_sheet("e1", {A: {"T1": -1, "T2": 1000, "C1": 1000}})
    with pytest.raises(SC.ScoreOutOfRange):
        SC.check_score_sheet(sheet, [A], CRITERIA)


def test_the_maximum_itself_and_zero_are_accepted() -> None:
    SC.check_score_sheet(score_sheet("e1", {A: {"T1": 3000, "T2": 0, "C1": 2000}}), [A], CRITERIA)


def test_an_incomplete_score_sheet_is_refused() -> None:
    sheet = score_sheet("e1", {A: {"T1": 2000, "T2": 1000, "C1": 1000}, B: {"T1": 2000}})
    with pytest.raises(SC.SheetIncomplete) as exc:
        SC.check_score_sheet(sheet, [A, B], CRITERIA)
    refused(exc, "SHEET_INCOMPLETE")
    assert f"{B}/C1" in exc.value.detail and f"{B}/T2" in exc.value.detail


def test_a_score_sheet_missing_a_whole_bid_is_refused() -> None:
    sheet = score_sheet("e1", {A: {"T1": 2000, "T2": 1000, "C1": 1000}})
    with pytest.raises(SC.SheetIncomplete):
        SC.check_score_sheet(sheet, [A, B], CRITERIA)


def test_an_incomplete_review_sheet_is_refused() -> None:
    sheet = review_sheet("e1", "qualification", {A: {"Q1": True}})
    with pytest.raises(SC.SheetIncomplete) as exc:
        SC.check_review_sheet(sheet, [A], QUALIFICATION)
    refused(exc, "SHEET_INCOMPLETE")


def test_a_duplicate_entry_is_refused() -> None:
    sheet = ScoreSheet(
        expert="e1",
        scores=[
            ScoreEntry(bidder=A, criterion="T1", points_x100=1000),
            ScoreEntry(bidder=A, criterion="T1", points_x100=2000),
        ],
    )
    with pytest.raises(SC.SheetEntryDuplicate) as exc:
        SC.check_score_sheet(sheet, [A], CRITERIA[:1])
    refused(exc, "SHEET_ENTRY_DUPLICATE")


def test_an_entry_for_a_bid_or_item_not_under_review_is_refused() -> None:
    with pytest.raises(SC.SheetEntryUnknown):
        SC.check_review_sheet(
            review_sheet("e1", "qualification", {B: {"Q1": True}}), [A], QUALIFICATION[:1]
        )
    with pytest.raises(SC.SheetEntryUnknown):
        SC.check_review_sheet(
            review_sheet("e1", "qualification", {A: {"Q9": True}}), [A], QUALIFICATION[:1]
        )


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_fail_without_a_reason_is_refused(reason: str) -> None:
    sheet = ReviewSheet(
        expert="e1",
        stage="qualification",
        verdicts=[ReviewVerdict(bidder=A, item="Q1", passed=False, reason=reason)],
    )
    with pytest.raises(SC.ReasonRequiredForFail) as exc:
        SC.check_review_sheet(sheet, [A], QUALIFICATION[:1])
    refused(exc, "REASON_REQUIRED_FOR_FAIL")


def test_a_sheet_of_another_stage_is_refused() -> None:
    sheet = review_sheet("e1", "preliminary", {A: {"Q1": True}})
    with pytest.raises(SC.SheetStageMismatch):
        SC.check_review_sheet(sheet, [A], QUALIFICATION[:1])


def test_two_sheets_from_one_expert_are_refused() -> None:
    sheet = review_sheet("e1", "qualification", {A: {"Q1": True}})
    with pytest.raises(SC.ExpertSheetDuplicate):
        SC.review_outcome([sheet, sheet, sheet], [A], QUALIFICATION[:1])
    with pytest.raises(SC.ExpertSheetDuplicate):
        SC.rank(comprehensive(), {A: 100}, score_sheets=worked_sheets([A]) * 2)


def test_a_fractional_or_float_score_is_not_a_score() -> None:
    with pytest.raises(ValidationError):
        ScoreEntry(bidder=A, criterion="T1", points_x100=8.5)
    with pytest.raises(ValidationError):
        ScoreEntry.model_validate_json(f'{{"bidder":"{A}","criterion":"T1","points_x100":850.0}}')


# --- deviations ---------------------------------------------------------------------------------


def test_deviation_detection_example() -> None:
    # T1 (max 30) for A: e1 25, e2 24, e3 18; C1 (max 20): 15, 15, 15. Totals 40, 39, 33.
    #   e3 on T1: others' mean (25 + 24) / 2 = 24.5, difference -6.5
    #   e1 on T1: others' mean (24 + 18) / 2 = 21.0, difference  4.0
    #   e2 on T1: others' mean (25 + 18) / 2 = 21.5, difference  2.5
    #   e3 total: others' mean (40 + 39) / 2 = 39.5, difference -6.5
    # Threshold 5 points: e3 deviates on T1 and on the total; nobody else.
    criteria = [
        Criterion(id="T1", group="technical", text="技术方案", max_points_x100=3000),
        Criterion(id="C1", group="commercial", text="商务", max_points_x100=2000),
    ]
    sheets = [
        score_sheet("e1", {A: {"T1": 2500, "C1": 1500}}),
        score_sheet("e2", {A: {"T1": 2400, "C1": 1500}}),
        score_sheet("e3", {A: {"T1": 1800, "C1": 1500}}),
    ]
    found = SC.deviations(sheets, criteria, DeviationThreshold(points_x100=500))
    assert [
        (d.expert, d.criterion, d.score_x100, d.others_mean_x100, d.difference_x100, d.limit_x100)
        for d in found
    ] == [("e3", "T1", 1800, 2450, -650, 500), ("e3", None, 3300, 3950, -650, 500)]
    # 20 % of the maximum: T1 limit 6 points (6.5 > 6: deviates); total limit 20 % of 50 = 10.
    found = SC.deviations(sheets, criteria, DeviationThreshold(percent_of_max=20))
    assert [(d.expert, d.criterion, d.limit_x100) for d in found] == [("e3", "T1", 600)]
    # Exactly at the limit is not a deviation: "more than" the threshold.
    assert SC.deviations(sheets, criteria, DeviationThreshold(points_x100=650)) == []


def test_a_threshold_needs_exactly_one_kind() -> None:
    with pytest.raises(ValidationError):
        DeviationThreshold()
    with pytest.raises(ValidationError):
        DeviationThreshold(points_x100=100, percent_of_max=10)


# --- the worked example of 经评审的最低投标价法 -----------------------------------------------------

DETAILED = [
    ReviewItem(id="L1", stage="detailed", text="工期满足招标文件要求"),
    ReviewItem(id="L2", stage="detailed", text="技术标准和要求实质性响应"),
]
LOWEST = LowestPriceConfig(
    items=DETAILED,
    adjustment_kinds=[
        AdjustmentKind(id="missing_item", text="漏项：按其他有效投标中该项最高报价补齐"),
        AdjustmentKind(id="payment_terms", text="付款条件偏差"),
        AdjustmentKind(id="delivery", text="工期偏差"),
    ],
)
# Bids, in fen: A 5,000,000.00 · B 4,900,000.00 · C 4,850,000.00 · D 4,950,000.00 ·
# E 4,700,000.00 (fails L1 unanimously: excluded).
LOW_PRICES = {A: 500_000_000, B: 490_000_000, C: 485_000_000, D: 495_000_000, E: 470_000_000}
ADJUSTMENTS = [
    PriceAdjustment(bidder=C, kind="missing_item", amount_fen=10_000_000, reason="漏报钢结构防腐"),
    PriceAdjustment(bidder=C, kind="delivery", amount_fen=5_000_000, reason="工期超出30天"),
    PriceAdjustment(bidder=B, kind="payment_terms", amount_fen=5_000_000, reason="要求预付款40%"),
    PriceAdjustment(bidder=E, kind="payment_terms", amount_fen=1_000_000, reason="要求预付款35%"),
]


def detailed_outcome() -> ReviewOutcome:
    ok: dict[str, bool | str] = {"L1": True, "L2": True}
    marks: dict[str, dict[str, bool | str]] = {A: ok, B: ok, C: ok, D: ok}
    return SC.review_outcome(
        [
            review_sheet(
                e, "detailed", marks | {E: {"L1": "工期 540 天，超过招标要求的 365 天", "L2": True}}
            )
            for e in ("e1", "e2", "e3")
        ],
        list(LOW_PRICES),
        DETAILED,
    )


def test_lowest_evaluated_price_worked_example() -> None:
    # Evaluated price = bid price + the committee's adjustments:
    #   A 5,000,000.00                                   = 5,000,000.00
    #   B 4,900,000.00 + 50,000.00 (payment terms)       = 4,950,000.00
    #   C 4,850,000.00 + 100,000.00 + 50,000.00          = 5,000,000.00
    #   D 4,950,000.00                                   = 4,950,000.00
    #   E excluded (its adjustment is not applied)
    # Ascending: B and D tie at 4,950,000.00 -> lower bid price first: B (4.90 M), D (4.95 M);
    # C and A tie at 5,000,000.00 -> C (4.85 M) before A (5.00 M). Recommended B, D, C.
    ranking = SC.rank(LOWEST, LOW_PRICES, reviews=[detailed_outcome()], adjustments=ADJUSTMENTS)
    assert [
        (NAMES[e.bidder], e.price_fen, e.evaluated_price_fen, e.tie_break) for e in ranking.entries
    ] == [
        ("B", 490_000_000, 495_000_000, None),
        ("D", 495_000_000, 495_000_000, "lower_price"),
        ("C", 485_000_000, 500_000_000, None),
        ("A", 500_000_000, 500_000_000, "lower_price"),
    ]
    assert ranking.recommended == [B, D, C]
    assert ranking.unresolved_ties == [] and not ranking.committee_must_decide
    c = ranking.entries[2]
    assert c.adjustments is not None
    assert [(a.kind, a.amount_fen) for a in c.adjustments] == [
        ("delivery", 5_000_000),
        ("missing_item", 10_000_000),
    ]
    assert c.total_x100 is None and c.price_score_x100 is None
    [excluded] = ranking.excluded
    assert (excluded.bidder, excluded.stage) == (E, "detailed")
    assert excluded.failed_items[0].reasons[0].reason == "工期 540 天，超过招标要求的 365 天"


def test_lowest_price_equal_on_evaluated_and_bid_price_is_unresolved() -> None:
    ranking = SC.rank(
        LOWEST.model_copy(update={"items": []}), {code(6): 100, code(4): 100, code(5): 200}
    )
    assert [(e.bidder, e.tie_break) for e in ranking.entries] == [
        (code(4), None),
        (code(6), "unresolved"),
        (code(5), None),
    ]
    assert ranking.unresolved_ties == [[code(4), code(6)]] and ranking.committee_must_decide


def test_an_adjustment_of_an_undeclared_kind_is_refused() -> None:
    bad = PriceAdjustment(bidder=A, kind="discount", amount_fen=-100, reason="让利")
    with pytest.raises(SC.AdjustmentInvalid) as exc:
        SC.rank(LOWEST, LOW_PRICES, reviews=[detailed_outcome()], adjustments=[bad])
    refused(exc, "ADJUSTMENT_INVALID")


def test_an_adjustment_without_a_reason_is_refused() -> None:
    bad = PriceAdjustment(bidder=A, kind="delivery", amount_fen=100)
    with pytest.raises(SC.AdjustmentReasonRequired):
        SC.rank(LOWEST, LOW_PRICES, reviews=[detailed_outcome()], adjustments=[bad])


def test_lowest_price_needs_the_detailed_pass_fail_review_of_its_items() -> None:
    with pytest.raises(SC.MethodInputMismatch):
        SC.rank(LOWEST, LOW_PRICES, adjustments=ADJUSTMENTS)


def test_each_method_refuses_the_other_methods_inputs() -> None:
    with pytest.raises(SC.MethodInputMismatch):
        SC.rank(comprehensive(), PRICES, score_sheets=worked_sheets(), adjustments=ADJUSTMENTS)
    with pytest.raises(SC.MethodInputMismatch):
        SC.rank(
            LOWEST,
            LOW_PRICES,
            reviews=[detailed_outcome()],
            score_sheets=worked_sheets([A, B, C, D]),
        )


# --- methods are pluggable ----------------------------------------------------------------------


class _CheapestFirstConfig(BaseModel):
    method: Literal["test_cheapest_first"] = "test_cheapest_first"
    recommended: int = 1


def test_a_third_method_plugs_in_without_touching_the_others() -> None:
    def cheapest_first(config: Any, inputs: SC.RankInputs) -> SC.MethodResult:
        return SC.MethodResult(
            scored=[SC.Scored(bidder=b, keys=(("price", p),)) for b, p in inputs.valid.items()]
        )

    SC.register_method("test_cheapest_first")(cheapest_first)
    try:
        assert "test_cheapest_first" in SC.registered_methods()
        ranking = SC.rank(_CheapestFirstConfig(), {A: 300, B: 100, C: 200})
        assert ranking.recommended == [B]
        assert [e.bidder for e in ranking.entries] == [B, C, A]
        with pytest.raises(ValueError):
            SC.register_method("test_cheapest_first")(cheapest_first)
    finally:
        SC._METHODS.pop("test_cheapest_first")
    assert set(SC.registered_methods()) == {"comprehensive", "lowest_price"}


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(SC.MethodUnknown):
        SC.rank(_CheapestFirstConfig(), {A: 1})


# --- configs and documents ----------------------------------------------------------------------


def test_configs_parse_by_their_method_name() -> None:
    data = comprehensive(base_price="average", coefficient="0.95").model_dump(mode="json")
    assert isinstance(METHOD_CONFIG.validate_python(data), ComprehensiveConfig)
    assert isinstance(METHOD_CONFIG.validate_json(LOWEST.model_dump_json()), LowestPriceConfig)
    with pytest.raises(ValidationError):
        METHOD_CONFIG.validate_python(data | {"unknown": 1})


@pytest.mark.parametrize(
    "overrides",
    [
        {"base_price": "average"},  # an average base needs its coefficient
        {"base_price": "lowest", "coefficient": "0.95"},
        {"base_price": "average", "coefficient": 0.95},  # never a float
        {"base_price": "average", "coefficient": "95%"},
        {"base_price": "average", "coefficient": "0"},
        {"criteria": CRITERIA + CRITERIA[:1]},  # duplicate criterion id
        {"tie_break_group": "quality"},  # no criterion in the tie-break group
    ],
)
def test_invalid_comprehensive_configs_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        comprehensive(**overrides)


def test_ranking_document_is_canonical_json_with_no_floats() -> None:
    outcome = detailed_outcome()
    ranking = SC.rank(LOWEST, LOW_PRICES, reviews=[outcome], adjustments=ADJUSTMENTS)
    doc = SC.ranking_document(LOWEST, ranking, [outcome])
    assert doc["format"] == "bidbridge-ranking" and doc["method"] == "lowest_price"

    def no_floats(value: Any) -> None:
        assert not isinstance(value, float)
        if isinstance(value, dict):
            for v in value.values():
                no_floats(v)
        elif isinstance(value, list):
            for v in value:
                no_floats(v)

    no_floats(doc)
    assert canonical_json(doc) == canonical_json(SC.ranking_document(LOWEST, ranking, [outcome]))
    assert Ranking.model_validate(doc["ranking"]) == ranking

    ranking2 = SC.rank(comprehensive(), PRICES, score_sheets=worked_sheets())
    doc2 = SC.ranking_document(comprehensive(), ranking2)
    no_floats(doc2)
    canonical_json(doc2)


# --- properties ---------------------------------------------------------------------------------


@st.composite
def evaluations(draw: st.DrawFn) -> dict[str, Any]:
    n_bids = draw(st.integers(1, 6))
    bidders = [
        code(i)
        for i in draw(st.lists(st.integers(1, 50), min_size=n_bids, max_size=n_bids, unique=True))
    ]
    prices = {b: draw(st.integers(1, 10**10)) for b in bidders}
    experts = [f"x{i}" for i in range(draw(st.sampled_from([1, 3, 5])))]
    criteria = [
        Criterion(id=cid, group=group, text=cid, max_points_x100=draw(st.integers(1, 5000)))
        for cid, group in (("T1", "technical"), ("T2", "technical"), ("M1", "commercial"))
    ]
    mode = draw(st.sampled_from(["lowest", "average"]))
    config = ComprehensiveConfig(
        criteria=criteria,
        price_points_x100=draw(st.integers(0, 5000)),
        base_price=mode,
        coefficient=draw(st.sampled_from(["1", "0.95", "0.9", "1.05"]))
        if mode == "average"
        else None,
        deduct_above_x100=draw(st.integers(0, 300)),
        deduct_below_x100=draw(st.integers(0, 300)),
        trim_when_at_least=draw(st.sampled_from([None, 3, 5])),
        recommended=draw(st.integers(1, 4)),
    )
    verdicts = {
        (e, b): draw(st.sampled_from([True, True, False])) for e in experts for b in bidders
    }
    review_sheets = [
        review_sheet(
            e, "qualification", {b: {"Q1": True if verdicts[(e, b)] else "不合格"} for b in bidders}
        )
        for e in experts
    ]
    outcome = SC.review_outcome(review_sheets, bidders, QUALIFICATION[:1])
    valid = [b.bidder for b in outcome.bids if b.passed]
    score_sheets = [
        score_sheet(
            e,
            {b: {c.id: draw(st.integers(0, c.max_points_x100)) for c in criteria} for b in valid},
        )
        for e in experts
    ]
    return {
        "config": config,
        "prices": prices,
        "review_sheets": review_sheets,
        "outcome": outcome,
        "valid": valid,
        "score_sheets": score_sheets,
    }


def _shuffled_sheets(sheets: list[Any], rng: random.Random, field: str) -> list[Any]:
    out = []
    for sheet in sheets:
        entries = list(getattr(sheet, field))
        rng.shuffle(entries)
        out.append(sheet.model_copy(update={field: entries}))
    rng.shuffle(out)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=evaluations(), seed=st.integers(0, 2**32 - 1))
def test_ranking_is_a_permutation_of_valid_bids_within_bounds_and_order_invariant(
    case: dict[str, Any], seed: int
) -> None:
    config: ComprehensiveConfig = case["config"]
    prices: dict[str, int] = case["prices"]
    ranking = SC.rank(config, prices, reviews=[case["outcome"]], score_sheets=case["score_sheets"])

    ranked = [e.bidder for e in ranking.entries]
    assert sorted(ranked) == sorted(case["valid"])
    assert sorted(ranked + [x.bidder for x in ranking.excluded]) == sorted(prices)
    assert [e.position for e in ranking.entries] == list(range(1, len(ranked) + 1))
    assert ranking.recommended == ranked[: config.recommended]
    for e in ranking.entries:
        assert e.price_score_x100 is not None and e.review_score_x100 is not None
        assert 0 <= e.price_score_x100 <= config.price_points_x100
        assert 0 <= e.review_score_x100 <= config.review_max_x100
        assert e.total_x100 == e.review_score_x100 + e.price_score_x100
    totals = [e.total_x100 for e in ranking.entries]
    assert totals == sorted(totals, reverse=True)
    assert all(
        e.tie_unresolved == any(e.bidder in g for g in ranking.unresolved_ties)
        for e in ranking.entries
    )

    # The order of sheets, of entries within sheets and of bids changes nothing.
    rng = random.Random(seed)
    review_sheets = _shuffled_sheets(case["review_sheets"], rng, "verdicts")
    bidders = list(prices)
    rng.shuffle(bidders)
    outcome = SC.review_outcome(review_sheets, bidders, QUALIFICATION[:1])
    assert outcome == case["outcome"]
    again = SC.rank(
        config,
        {b: prices[b] for b in bidders},
        reviews=[outcome],
        score_sheets=_shuffled_sheets(case["score_sheets"], rng, "scores"),
    )
    assert again == ranking
    assert canonical_json(SC.ranking_document(config, again)) == canonical_json(
        SC.ranking_document(config, ranking)
    )


@settings(max_examples=100, deadline=None)
@given(
    prices=st.dictionaries(
        st.integers(1, 30).map(code), st.integers(0, 10**9), min_size=1, max_size=6
    ),
    amounts=st.lists(st.tuples(st.integers(0, 5), st.integers(-(10**6), 10**6)), max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_lowest_price_ranking_is_ascending_and_order_invariant(
    prices: dict[str, int], amounts: list[tuple[int, int]], seed: int
) -> None:
    config = LowestPriceConfig(adjustment_kinds=[AdjustmentKind(id="k", text="调整")])
    bidders = sorted(prices)
    adjustments = [
        PriceAdjustment(bidder=bidders[i % len(bidders)], kind="k", amount_fen=a, reason="理由")
        for i, a in amounts
    ]
    evaluated = {
        b: prices[b] + sum(a.amount_fen for a in adjustments if a.bidder == b) for b in bidders
    }
    if min(evaluated.values()) < 0:
        with pytest.raises(SC.AdjustmentInvalid):
            SC.rank(config, prices, adjustments=adjustments)
        return
    ranking = SC.rank(config, prices, adjustments=adjustments)
    assert sorted(e.bidder for e in ranking.entries) == bidders
    assert [e.evaluated_price_fen for e in ranking.entries] == sorted(evaluated.values())
    keys = [(e.evaluated_price_fen, e.price_fen) for e in ranking.entries]
    assert keys == sorted(keys)

    rng = random.Random(seed)
    shuffled = list(adjustments)
    rng.shuffle(shuffled)
    order = list(prices)
    rng.shuffle(order)
    assert SC.rank(config, {b: prices[b] for b in order}, adjustments=shuffled) == ranking
