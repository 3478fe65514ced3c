"""BidBridge: server/media."""

from __future__ import annotations

import hashlib
import re


def media_id_for(session_id: str) -> str:
    """A backend's id for a session: readable, file-name safe, and unique by a digest (backends'
    file and room names allow fewer characters than session ids)."""
    digest = hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", session_id)[:100].lstrip("._-")
    return f"{safe}-{digest}"
