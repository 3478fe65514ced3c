"""The documents of an opening: the opening table (唱标, rule 10) and the opening record (rule 12)."""

from __future__ import annotations

from typing import Any

from server.domain.opening_model import OpeningState


def build_table(state: OpeningState) -> dict[str, Any]:
    """唱标: the opening table (rule 10): one row per bid, in order of receipt."""
    rows = []
    fields = state.timetable.table_fields
    for bid in sorted(state.live_bids(), key=lambda b: (b.received_at, b.bidder)):
        s = bid.summary or {}
        extra = s.get("extra_fields") or {}
        rows.append(
            {
                "bidder": bid.bidder,
                # Rule 10: the name the company is registered under (from the receipt), never
                # the name a bid's own summary claims (one bidder could show another's).
                "bidder_name": bid.bidder_name,
                "status": bid.status,
                "price_fen": s.get("price_fen"),
                "duration_days": s.get("duration_days"),
                "quality": s.get("quality"),
                "project_manager": s.get("project_manager"),
                "fields": {f: extra.get(f) for f in fields},
                "security": bid.security.model_dump() if bid.security else None,
                "envelope_sha256": bid.envelope_sha256,
            }
        )
    return {"session_id": state.session_id, "lot_id": state.lot_id, "rows": rows}


def build_record(state: OpeningState, head_seq: int, head_hash: str) -> dict[str, Any]:
    """开标记录 (rule 12): what happened at the opening, as a document the parties sign."""
    return {
        "format": "bidbridge-opening-record",
        "version": 1,
        "session_id": state.session_id,
        "lot_id": state.lot_id,
        "title": state.title,
        "timetable": state.timetable.model_dump(mode="json"),
        "table": state.table,
        "table_sha256": state.table_sha256,
        "bids": [
            {
                "bidder": b.bidder,
                "status": b.status,
                "envelope_sha256": b.envelope_sha256,
                "received_at": b.received_at,
                "via": b.via,
                "confirmation": b.confirmation,
                "attempts": [a.model_dump() for a in b.attempts],
            }
            for b in sorted(state.live_bids(), key=lambda b: b.bidder)
        ],
        "objections": [o.model_dump() for o in state.objections],
        "incidents": [i.model_dump() for i in state.incidents],
        "log_head": {"seq": head_seq, "hash": head_hash},
    }


def record_text(record: dict[str, Any]) -> str:
    """The opening record as a readable document (Chinese first, English after)."""
    lines = [
        "开标记录 / Opening record",
        f"项目标段 / Lot: {record['lot_id']}  {record.get('title', '')}",
        f"会话 / Session: {record['session_id']}",
        f"投标截止 / Deadline: {record['timetable']['deadline']}",
        "",
        "开标一览表 / Opening table:",
    ]
    table = record.get("table") or {"rows": []}
    for i, row in enumerate(table["rows"], 1):
        price = row.get("price_fen")
        price_text = f"{price // 100}.{price % 100:02d} 元" if isinstance(price, int) else "-"
        lines.append(
            f"  {i}. {row.get('bidder_name') or row['bidder']} ({row['bidder']})  "
            f"状态/status: {row['status']}  报价/price: {price_text}  "
            f"工期/duration: {row.get('duration_days') or '-'}  质量/quality: {row.get('quality') or '-'}  "
            f"项目经理/PM: {row.get('project_manager') or '-'}"
        )
    lines.append("")
    lines.append("异议及答复 / Objections and replies:")
    if not record["objections"]:
        lines.append("  无 / none")
    for o in record["objections"]:
        lines.append(f"  #{o['id']} {o['bidder']}: {o['text']}")
        lines.append(f"     答复 / reply: {o.get('reply') or '-'}")
    lines.append("")
    lines.append("确认 / Confirmations:")
    for b in record["bids"]:
        lines.append(f"  {b['bidder']}: {b['status']}, {b.get('confirmation') or '-'}")
    if record["incidents"]:
        lines.append("")
        lines.append("平台故障记录 / Platform incidents:")
        for inc in record["incidents"]:
            lines.append(f"  {inc['at']} {inc['reason']} ({', '.join(inc['bidders'])})")
    lines.append("")
    head = record["log_head"]
    lines.append(f"事件日志 / Event log head: seq {head['seq']} hash {head['hash']}")
    return "\n".join(lines) + "\n"
