"""The one command path (DESIGN.md section 3): nothing is published before it is committed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from schemas.events import EventRecord
from tests.support.hall import start_hall, stop_hall
from tests.support.pki import Pki


async def test_every_published_event_is_already_committed(
    pki: Pki, tmp_path: Path, store_url: str
) -> None:
    hall = await start_hall(pki, tmp_path, database_url=store_url)
    service = hall.hub.service
    publish = service.publish
    published: list[int] = []

    async def observed(session_id: str, records: list[EventRecord]) -> None:
        # What a second connection reads from the database at the instant of publishing.
        stored = await hall.hub.store.events_after(session_id, records[0].seq - 1)
        assert stored[: len(records)] == records
        published.extend(r.seq for r in records)
        await publish(session_id, records)

    service.publish = observed
    try:
        P = hall.parties
        sid = await hall.create_session()
        await hall.at(hall.t0 + timedelta(minutes=10))  # a transition with its checkpoint
        await hall.upload(sid, P["a"], hall.seal(tmp_path, P["a"], name="a"))
        await hall.request("DELETE", f"/api/sessions/{sid}/bid", P["a"])
        stored = [r.seq for r in await hall.hub.store.events_after(sid, 0)]
        assert published == stored
    finally:
        service.publish = publish
        await stop_hall(hall)
