"""Unfair-evaluation signals (评标不公预警): an expert far from the committee, an expert who
favours one bidder across projects, experts whose sheets are identical. Facts in, warnings out;
pure like :mod:`server.domain.signals`, which re-exports every name here."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from decimal import Decimal
from itertools import combinations

from schemas.signals import (
    EvaluationFacts,
    Evidence,
    Signal,
)
from server.domain.signals_base import build_signal as _signal
from server.domain.signals_base import event_evidence as _event

OUTLIER_MIN_EXPERTS = 3
OUTLIER_MIN_CRITERIA = 2
OUTLIER_DEVIATION = Decimal("0.2")
"""An expert's score for one bidder at least 20 % of the criterion's maximum away from the rest
of the committee's median, in the same direction on every criterion, after removing the expert's
general leniency or harshness."""
SCORE_OUTLIER = 0.55
SCORE_OUTLIER_STRONG = 0.7
OUTLIER_STRONG = Decimal("0.3")

FAVOUR_MIN_PROJECTS = 3
FAVOUR_EACH = Decimal("0.05")
FAVOUR_MEAN = Decimal("0.1")
"""An expert who, in at least 3 evaluations, every time scored one bidder above the rest of the
committee (at least 5 % of the maximum, 10 % on average, after the expert's general leniency):
by chance each time is about an even bet, three times one in eight, and the margin rules out
rounding noise."""

IDENTICAL_MIN_CELLS = 4
IDENTICAL_NEAR = Decimal("0.95")
IDENTICAL_NEAR_MIN_CELLS = 20
SCORE_IDENTICAL = 0.85
SCORE_IDENTICAL_NEAR = 0.6
"""Two experts' sheets equal to the criterion for every bid: copied. Sheets that give every bid
the same score on every criterion (all full marks) are excluded: agreement there is no sign."""


# --- unfair evaluation ---------------------------------------------------------------------------


def _criteria(facts: EvaluationFacts) -> list[tuple[str, Decimal]]:
    detailed = [(c.id, c.max) for c in facts.criteria if c.stage == "detailed"]
    return detailed or [(c.id, c.max) for c in facts.criteria]


def _deviations(facts: EvaluationFacts) -> dict[str, dict[str, dict[str, Decimal]]]:
    """dev[expert][bidder][criterion]: the expert's score minus the median of the other experts'
    scores, as a share of the criterion's maximum, minus the expert's mean such share over the
    other bidders (their general leniency). Only complete cells count."""
    criteria = _criteria(facts)
    experts = sorted(facts.sheets)
    if len(experts) < OUTLIER_MIN_EXPERTS:
        return {}
    bidders = sorted({b for s in facts.sheets.values() for b in s.scores})
    raw: dict[str, dict[str, dict[str, Decimal]]] = {}
    for e in experts:
        raw[e] = {}
        for b in bidders:
            row = facts.sheets[e].scores.get(b)
            if row is None:
                continue
            cells: dict[str, Decimal] = {}
            for cid, cmax in criteria:
                if cid not in row:
                    continue
                others = [
                    facts.sheets[o].scores[b][cid]
                    for o in experts
                    if o != e and cid in facts.sheets[o].scores.get(b, {})
                ]
                if len(others) < OUTLIER_MIN_EXPERTS - 1:
                    continue
                cells[cid] = (row[cid] - statistics.median(others)) / cmax
            if cells:
                raw[e][b] = cells
    out: dict[str, dict[str, dict[str, Decimal]]] = {}
    for e, rows in raw.items():
        out[e] = {}
        for b, cells in rows.items():
            rest = [v for ob, oc in rows.items() if ob != b for v in oc.values()]
            lean = sum(rest, Decimal(0)) / len(rest) if rest else Decimal(0)
            out[e][b] = {c: v - lean for c, v in cells.items()}
    return out


def _expert_total(facts: EvaluationFacts, expert: str, bidder: str) -> Decimal:
    return sum(facts.sheets[expert].scores.get(bidder, {}).values(), Decimal(0))


def _expert_rank(facts: EvaluationFacts, expert: str, bidder: str) -> int:
    mine = _expert_total(facts, expert, bidder)
    return 1 + sum(
        1
        for b in facts.sheets[expert].scores
        if b != bidder and _expert_total(facts, expert, b) > mine
    )


def _bidder_name(facts: EvaluationFacts, bidder: str) -> str:
    return facts.bidder_names.get(bidder, bidder)


def _sheet_ev(facts: EvaluationFacts, expert: str, note: str) -> Evidence:
    return _event(facts.session_id, facts.sheets[expert].seq, note)


def _pct(value: Decimal) -> str:
    return f"{float(value):.0%}"


def _outliers(
    facts: EvaluationFacts, dev: Mapping[str, Mapping[str, Mapping[str, Decimal]]]
) -> list[Signal]:
    out: list[Signal] = []
    n_criteria = len(_criteria(facts))
    for e in sorted(dev):
        for b in sorted(dev[e]):
            cells = dev[e][b]
            if len(cells) < max(OUTLIER_MIN_CRITERIA, n_criteria):
                continue
            values = list(cells.values())
            if all(v >= OUTLIER_DEVIATION for v in values):
                direction_zh, direction_en = "高于", "above"
            elif all(v <= -OUTLIER_DEVIATION for v in values):
                direction_zh, direction_en = "低于", "below"
            else:
                continue
            mean = sum((abs(v) for v in values), Decimal(0)) / len(values)
            least = min(abs(v) for v in values)
            name = _bidder_name(facts, b)
            zh = (
                f"专家 {e} 对投标人 {name} 的评分在全部 {len(values)} 项评分因素上均{direction_zh}其他专家的中位数"
                f"（扣除该专家的整体宽严后，平均偏离满分的 {_pct(mean)}，最少 {_pct(least)}）"
            )
            en = (
                f"expert {e} scored bidder {name} {direction_en} the median of the other experts on all "
                f"{len(values)} criteria (after the expert's general leniency, by {_pct(mean)} of the "
                f"maximum on average, at least {_pct(least)})"
            )
            score = SCORE_OUTLIER_STRONG if mean >= OUTLIER_STRONG else SCORE_OUTLIER
            ev = [_sheet_ev(facts, e, f"score sheet of {e}: {b} deviates on every criterion")]
            ev += [
                _sheet_ev(facts, o, f"score sheet of {o} (committee reference)")
                for o in sorted(facts.sheets)
                if o != e
            ]
            out.append(_signal("expert_outlier", score, [e], zh, en, ev, related=[b]))
    return out


def _favour(
    dev: Mapping[str, Mapping[str, Mapping[str, Decimal]]], e: str, b: str
) -> Decimal | None:
    cells = dev.get(e, {}).get(b)
    if not cells:
        return None
    return sum(cells.values(), Decimal(0)) / len(cells)


def _favours(
    facts: EvaluationFacts,
    history: Sequence[EvaluationFacts],
    dev: Mapping[str, Mapping[str, Mapping[str, Decimal]]],
) -> list[Signal]:
    pairs = [(e, b) for e in sorted(dev) for b in sorted(dev[e])]
    if not pairs:
        return []
    experts = {e for e, _ in pairs}
    bidders = {b for _, b in pairs}
    past: list[tuple[EvaluationFacts, dict[str, dict[str, dict[str, Decimal]]]]] = []
    seen = {facts.session_id}
    for h in history:
        if h.session_id in seen:
            continue
        seen.add(h.session_id)
        if experts.isdisjoint(h.sheets):
            continue
        if not any(bidders.intersection(s.scores) for s in h.sheets.values()):
            continue
        past.append((h, _deviations(h)))
    out: list[Signal] = []
    for e, b in pairs:
        now = _favour(dev, e, b)
        if now is None or now < FAVOUR_EACH:
            continue
        record: list[tuple[EvaluationFacts, Decimal]] = [(facts, now)]
        for h, hdev in past:
            f = _favour(hdev, e, b)
            if f is not None:
                record.append((h, f))
        k = len(record)
        if k < FAVOUR_MIN_PROJECTS or any(f < FAVOUR_EACH for _, f in record):
            continue
        mean = sum((f for _, f in record), Decimal(0)) / k
        if mean < FAVOUR_MEAN:
            continue
        firsts = sum(1 for h, _ in record if _expert_rank(h, e, b) == 1)
        won = sum(1 for h, _ in record if h.winner == b)
        name = _bidder_name(facts, b)
        projects = sorted({h.project_id for h, _ in record})
        zh = (
            f"专家 {e} 在参与评审投标人 {name} 的全部 {k} 次评标中（项目 {'、'.join(projects)}），"
            f"每次都比其他专家给 {name} 打分更高（扣除整体宽严后平均高出满分的 {_pct(mean)}），"
            f"其中 {firsts} 次将其排在第一，{name} 中标 {won} 次"
        )
        en = (
            f"in all {k} evaluations where expert {e} scored bidder {name} (projects "
            f"{', '.join(projects)}), the expert scored {name} above the rest of the committee every "
            f"time (by {_pct(mean)} of the maximum on average, after the expert's general leniency), "
            f"ranked it first {firsts} times, and {name} won {won} times"
        )
        score = min(0.95, 1 - 0.5 ** (k - 1))
        ev = [
            _sheet_ev(h, e, f"{h.project_id}: sheet of {e}, {b} favoured by {_pct(f)}")
            for h, f in record
        ]
        out.append(_signal("expert_favour", score, [e], zh, en, ev, related=[b]))
    return out


def _identical(facts: EvaluationFacts) -> list[Signal]:
    criteria = [c for c, _ in _criteria(facts)]
    out: list[Signal] = []
    for e1, e2 in combinations(sorted(facts.sheets), 2):
        s1, s2 = facts.sheets[e1].scores, facts.sheets[e2].scores
        cells = [
            (b, c) for b in sorted(set(s1) & set(s2)) for c in criteria if c in s1[b] and c in s2[b]
        ]
        if len(cells) < IDENTICAL_MIN_CELLS:
            continue
        if all(len({s1[b][c] for b, cc in cells if cc == c}) < 2 for c in criteria):
            continue  # the sheet tells no bid from another (all full marks): agreement is no sign
        same = sum(1 for b, c in cells if s1[b][c] == s2[b][c])
        share = Decimal(same) / len(cells)
        if same == len(cells):
            score = SCORE_IDENTICAL
        elif share >= IDENTICAL_NEAR and len(cells) >= IDENTICAL_NEAR_MIN_CELLS:
            score = SCORE_IDENTICAL_NEAR
        else:
            continue
        bidders = sorted({b for b, _ in cells})
        zh = (
            f"专家 {e1} 与 {e2} 的评分表在 {len(bidders)} 个投标人、{len(criteria)} 项评分因素共 "
            f"{len(cells)} 个分值中有 {same} 个完全相同"
        )
        en = (
            f"the score sheets of experts {e1} and {e2} agree exactly on {same} of {len(cells)} "
            f"scores ({len(bidders)} bidders x {len(criteria)} criteria)"
        )
        ev = [
            _sheet_ev(facts, e1, f"score sheet of {e1}"),
            _sheet_ev(facts, e2, f"score sheet of {e2}"),
        ]
        out.append(_signal("expert_identical", score, [e1, e2], zh, en, ev, related=bidders))
    return out


def unfair_evaluation(
    facts: EvaluationFacts, history: Sequence[EvaluationFacts] = ()
) -> list[Signal]:
    """评标不公: an expert far from the committee on one bidder on every criterion; an expert who
    favours one bidder in every evaluation they share (``history``: earlier evaluations' facts);
    experts whose sheets are identical to the criterion."""
    dev = _deviations(facts)
    return _outliers(facts, dev) + _favours(facts, history, dev) + _identical(facts)


def evaluation_signals(
    facts: EvaluationFacts, history: Sequence[EvaluationFacts] = ()
) -> list[Signal]:
    """Every unfair-evaluation signal of one evaluation, strongest first."""
    return sorted(unfair_evaluation(facts, history), key=lambda s: (-s.score, s.kind, s.id))
