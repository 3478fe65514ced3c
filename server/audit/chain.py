"""The per-session hash chain (DESIGN.md sections 4 and 8): one function computes every link."""

from __future__ import annotations

import hashlib
from typing import Any

from schemas.canonical import canonical_json

GENESIS = "0" * 64
"""``prev_hash`` of a session's first event."""

LINKED_FIELDS = ("session_id", "seq", "at", "type", "actor", "audience", "payload")
"""The fields of an event that its hash covers (everything but the hashes themselves)."""


def event_hash(prev_hash: str, event: dict[str, Any]) -> str:
    """``SHA-256(prev_hash || canonical JSON of the event's other fields)``, hex."""
    body = {k: event[k] for k in LINKED_FIELDS}
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_json(body)).hexdigest()
