"""Eval rule 13 end to end: a three-room evaluation (lead plus two secondary rooms) linked over real
WebRTC through the server's API for more than 20 seconds; every room's recording is in the record,
plays, and the exported archive verifies; a changed byte in a segment is found and named."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import av
import pytest

from room_client.media import RoomMedia, SupervisorMedia
from server.audit.archive import ArchiveInvalid, verify_archive
from server.audit.export import export_session
from tests.support.archive import flip_in_members
from tests.support.evaluation import THREE_ROOMS, drawn
from tests.support.hall import P, start_hall, stop_hall
from tests.support.pki import Pki

RUN_SECONDS = 22.0


async def test_eval_rule_13_three_rooms_recorded_into_the_archive(pki: Pki, tmp_path: Path) -> None:
    hall = await start_hall(pki, tmp_path)
    links: list[RoomMedia | SupervisorMedia] = []
    try:
        e, _sup = await drawn(hall, tmp_path, draw=THREE_ROOMS)
        rooms = sorted({m["room_id"] for m in (await e.committee()).values()})
        view = await e.view(P(hall, "supervisor"))
        assert sorted(view["rooms"]) == ["NJ-01", "SZ-01", "WX-01"]
        for room_id in sorted(view["rooms"]):
            link = RoomMedia("synthetic", label=room_id)
            room = e.rooms[room_id]

            async def signal(offer: dict[str, str], room=room) -> dict[str, str]:
                return dict(await e.post(room, "media", "offer", body=offer))

            await link.connect(signal)
            links.append(link)
        supervisor = SupervisorMedia()

        async def watch(offer: dict[str, str]) -> dict[str, str]:
            body = {**offer, "watch": "SZ-01"}
            return dict(await e.post(P(hall, "supervisor"), "media", "offer", body=body))

        await supervisor.connect(watch)
        links.append(supervisor)
        for link in links:
            await link.wait_connected()
        await asyncio.sleep(RUN_SECONDS)
        received = {
            r: links[i].frames_received["video"] for i, r in enumerate(sorted(view["rooms"]))
        }
        assert supervisor.frames_received["video"] > 0
        for link in links:
            await link.close()
        await hall.hub.media.close()  # flushes the last partial segments into the record
        assert set(rooms) <= {"NJ-01", "SZ-01", "WX-01"}  # the committee sits in drawn rooms
        # the secondary rooms got the lead room's feed
        assert received["SZ-01"] > 0 and received["WX-01"] > 0

        events = await e.events(P(hall, "supervisor"))
        segments = [x["payload"] for x in events if x["type"] == "media_segment"]
        by_room: dict[str, list[int]] = {}
        for s in segments:
            assert s["error"] is None, s
            by_room.setdefault(s["room_id"], []).append(s["index"])
        assert sorted(by_room) == ["NJ-01", "SZ-01", "WX-01"]
        for indexes in by_room.values():
            assert indexes == list(range(len(indexes))) and len(indexes) >= 4
        for s in segments:
            path = hall.hub.blobs.path(s["sha256"])
            data = path.read_bytes()
            assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["size"]
        first = hall.hub.blobs.path(segments[0]["sha256"])
        with av.open(str(first)) as container:
            frames = [f for f in container.decode(video=0)]
        assert frames and (frames[0].width, frames[0].height) == (640, 480)

        archive = tmp_path / "evaluation.zip"
        hub = hall.hub
        await export_session(
            hub.store, hub.blobs, hub.trust, hub.identity, e.sid, archive, hall.clock.now()
        )
        report = await asyncio.to_thread(verify_archive, archive)
        # the whole log, checkpoints too (no viewer is shown those; the archive keeps them)
        assert report.events == len(await hall.hub.store.events_after(e.sid, 0))

        # one changed byte in one segment is found, and the segment is named
        victim = segments[len(segments) // 2]
        bad = flip_in_members(archive, tmp_path / "tampered.zip", victim["sha256"])
        with pytest.raises(ArchiveInvalid) as caught:
            await asyncio.to_thread(verify_archive, bad)
        assert victim["sha256"][:12] in str(caught.value) or victim["room_id"] in str(caught.value)
    finally:
        for link in links:
            await link.close()
        await stop_hall(hall)
