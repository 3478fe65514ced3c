"""评标报告: the evaluation report as a document the committee signs, and as readable text."""

from __future__ import annotations

from typing import Any

from server.domain.evaluation_model import EvaluationState


def build_report(state: EvaluationState, head_seq: int, head_hash: str) -> dict[str, Any]:
    """评标报告: the ranking, the recommended candidates and the committee, as a document."""
    return {
        "format": "bidbridge-evaluation-report",
        "version": 1,
        "session_id": state.session_id,
        "lot_id": state.lot_id,
        "opening_session_id": state.opening_session_id,
        "title": state.title,
        "method": state.config.method.model_dump(mode="json"),
        "committee": [
            {
                "id": m.id,
                "name": m.name,
                "kind": m.kind,
                "room_id": m.room_id,
                "late": m.late,
                "chair": m.id == state.chair,
            }
            for m in sorted(state.committee(), key=lambda m: m.id)
        ],
        "draw": {
            "seed": state.draw.seed if state.draw else None,
            "pool_sha256": state.draw.pool_sha256 if state.draw else None,
        },
        "stages": state.outcomes,
        "rescores": state.rescores,
        "ranking": state.ranking,
        "ranking_sha256": state.ranking_sha256,
        "log_head": {"seq": head_seq, "hash": head_hash},
    }


def report_text(report: dict[str, Any], signatures: dict[str, Any] | None = None) -> str:
    """The report as a readable document (Chinese first, English after)."""
    lines = [
        "评标报告 / Evaluation report",
        f"项目标段 / Lot: {report['lot_id']}  {report.get('title', '')}",
        f"会话 / Session: {report['session_id']}  开标 / Opening: {report['opening_session_id']}",
        f"评标办法 / Method: {report['method'].get('method', '')}",
        "",
        "评标委员会 / Committee:",
    ]
    for m in report["committee"]:
        chair = " 主任/chair" if m["chair"] else ""
        late = " 迟到/late" if m["late"] else ""
        lines.append(
            f"  {m['name'] or m['id']} ({m['id']}) {m['kind']} @{m['room_id']}{chair}{late}"
        )
    lines += ["", "排名 / Ranking:"]
    ranking = (report.get("ranking") or {}).get("ranking") or {}
    for row in ranking.get("entries", []):
        lines.append("  " + _ranking_line(row))
    excluded = ranking.get("excluded", [])
    if excluded:
        lines += ["", "否决投标 / Rejected bids:"]
        for row in excluded:
            items = ", ".join(str(i.get("item", i)) for i in row.get("failed_items", []))
            lines.append(f"  {row.get('bidder')}: {row.get('stage', '')} {items}")
    lines += ["", "推荐中标候选人 / Recommended candidates:"]
    for i, b in enumerate(ranking.get("recommended", []), 1):
        lines.append(f"  {i}. {b}")
    if ranking.get("committee_must_decide"):
        lines.append("  并列未决，须由评标委员会决定 / unresolved tie: the committee must decide")
    if signatures:
        lines += ["", "签字 / Signatures:"]
        for mid, sig in sorted(signatures.items()):
            if sig.get("deemed"):
                what = "拒签未说明理由，视为同意 / refused without reason: deemed to agree"
            elif sig.get("agree"):
                what = "同意 / agrees"
            else:
                what = f"不同意 / disagrees: {sig.get('reason', '')}"
            lines.append(f"  {mid}: {what}")
    head = report["log_head"]
    lines += ["", f"事件日志 / Event log head: seq {head['seq']} hash {head['hash']}"]
    return "\n".join(lines) + "\n"


def _ranking_line(row: dict[str, Any]) -> str:
    parts = [f"{row.get('position', '?')}. {row.get('bidder', '')}"]
    for key, label in (("price_fen", "报价/price"), ("evaluated_price_fen", "评审价/evaluated")):
        v = row.get(key)
        if isinstance(v, int):
            parts.append(f"{label} {v // 100}.{v % 100:02d} 元")
    for key, label in (
        ("review_score_x100", "评审分/review"),
        ("price_score_x100", "价格分/price score"),
        ("total_x100", "总分/total"),
    ):
        v = row.get(key)
        if isinstance(v, int):
            parts.append(f"{label} {v // 100}.{abs(v) % 100:02d}")
    if row.get("tie_break"):
        parts.append(f"({row['tie_break']})")
    return "  ".join(parts)
