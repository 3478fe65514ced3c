"""Instants on the wire: ISO-8601 UTC with microseconds and a ``Z``; shown in Asia/Shanghai."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(at: datetime) -> str:
    """The one text form of an instant in events, receipts and records."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: instants must carry a time zone")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    """Inverse of :func:`iso` (also accepts any ISO-8601 form with an offset)."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if at.tzinfo is None:
        raise ValueError(f"instant without a time zone: {text!r}")
    return at.astimezone(UTC)
