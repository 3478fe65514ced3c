"""What the pure rule specifications share (no server, no database): event helpers and the
evaluation method of the example lot."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from schemas.common import uscc_check_char
from schemas.events import EventRecord, NewEvent
from schemas.time import iso

METHOD: dict[str, Any] = {
    "method": "comprehensive",
    "criteria": [
        {"id": "T1", "group": "technical", "text": "施工方案", "max_points_x100": 4000},
        {"id": "C1", "group": "commercial", "text": "企业业绩", "max_points_x100": 3000},
    ],
    "price_points_x100": 3000,
    "base_price": "lowest",
    "deduct_above_x100": 100,
    "deduct_below_x100": 50,
}
REVIEW_ITEMS = [
    {"id": "Q1", "stage": "qualification", "text": "营业执照与资质证书有效"},
    {"id": "P1", "stage": "preliminary", "text": "投标函签字盖章齐全"},
]


def code(n: int) -> str:
    """A valid credit code; code(1) < code(2) < ... so bidders A..E sort in letter order."""
    first17 = f"91350100MA{n:07d}"
    return first17 + uscc_check_char(first17)


def types(events: Iterable[NewEvent]) -> list[str]:
    return [e.type for e in events]


def as_record(event: NewEvent, seq: int, at: datetime) -> EventRecord:
    """``event`` as if the store had recorded it at ``seq`` (hashes left as zeros)."""
    return EventRecord(
        session_id="s-1",
        seq=seq,
        at=iso(at),
        type=event.type,
        actor=event.actor,
        audience=event.audience,
        payload=event.payload,
        prev_hash="0" * 64,
        hash="0" * 64,
    )
