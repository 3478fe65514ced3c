"""The server's record work: generate the signed opening record once it is due (rule 12)."""

from __future__ import annotations

import logging

from crypto.attest import b64encode
from schemas.canonical import canonical_json
from server.core import Hub
from server.domain import opening as op
from server.signals.facts import raise_signals_safe

log = logging.getLogger(__name__)


async def generate_record_if_due(hub: Hub, session_id: str) -> None:
    loaded = await hub.service.load(session_id)
    if loaded is None or not op.record_due(loaded.state):
        return  # not yet: confirmations open, or an objection unanswered (see ``reply``)
    record = op.build_record(loaded.state, loaded.version, loaded.head_hash)
    raw = canonical_json(record)
    now = hub.clock.now()
    blob = await hub.blobs.put_bytes(raw)
    signature = b64encode(hub.identity.sign(raw, now))
    await hub.service.execute(
        session_id,
        op.GenerateRecord(actor=op.SERVER, record_sha256=blob.sha256, signature=signature),
    )


async def generate_record_if_due_safe(hub: Hub, session_id: str) -> None:
    """Generate the record when it is due; a failure is logged (retried at the next start or answer).
    Then raise the warning signals the record now supports (after the opening table, again after
    the record); a failure there is logged too."""
    try:
        await generate_record_if_due(hub, session_id)
    except Exception:
        log.exception("record generation failed on %s", session_id)
    await raise_signals_safe(hub, session_id)
