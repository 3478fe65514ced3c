"""The per-session hash chain (DESIGN.md sections 4 and 8): one function computes every link."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from schemas.canonical import canonical_json
from schemas.events import EventRecord, NewEvent
from schemas.time import iso

GENESIS = "0" * 64
"""``prev_hash`` of a session's first event."""

LINKED_FIELDS = ("session_id", "seq", "at", "type", "actor", "audience", "payload")
"""The fields of an event that its hash covers (everything but the hashes themselves)."""


def event_hash(prev_hash: str, event: dict[str, Any]) -> str:
    """``SHA-256(prev_hash || canonical JSON of the event's other fields)``, hex."""
    body = {k: event[k] for k in LINKED_FIELDS}
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(body)).hexdigest()


def link_events(
    session_id: str, first_seq: int, prev_hash: str, at: datetime, events: Sequence[NewEvent]
) -> list[EventRecord]:
    """Give new events their seq, time and hashes, linked after ``prev_hash``."""
    at_text = iso(at)
    records = []
    for offset, new in enumerate(events):
        body = {
            "session_id": session_id,
            "seq": first_seq + offset,
            "at": at_text,
            **new.model_dump(mode="json"),
        }
        digest = event_hash(prev_hash, body)
        records.append(EventRecord(**body, prev_hash=prev_hash, hash=digest))
        prev_hash = digest
    return records
