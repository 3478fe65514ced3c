"""The Janus media backend (server/media/janus.py) against a real Janus started on loopback with the
project's own configuration (deploy/janus/): three rooms publish synthetic tracks through the
server's offer route, a supervisor and the secondary rooms watch through Janus, Janus records,
``janus-pp-rec`` converts, the hashes are in the event log and the exported archive verifies."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from playwright.async_api import expect

from room_client.media import RoomMedia, SubscriberMedia
from server.audit.archive import ArchiveInvalid, verify_archive
from server.audit.export import export_session
from server.media.janus import JanusMedia
from tests.support.archive import flip_in_members
from tests.support.evaluation import THREE_ROOMS, drawn
from tests.support.hall import ApiError, P, start_hall, stop_hall
from tests.support.janus import local_janus
from tests.support.pages import Browsing, card, shot
from tests.support.pki import Pki

RUN_SECONDS = 22.0
ROTATE_SECONDS = 5.0


async def test_janus_answers_with_its_own_errors_for_a_room_that_is_not_linked(
    pki: Pki, tmp_path: Path
) -> None:
    async with local_janus(tmp_path / "janus") as janus:
        hall = await start_hall(pki, tmp_path)
        media = JanusMedia(hall.hub, janus.url, tmp_path / "recordings")
        try:
            with pytest.raises(LookupError, match="SZ-01"):
                await media.subscribe("E-1", "S001", "SZ-01")
            with pytest.raises(ValueError, match="subscribe"):
                await media.answer("E-1", "S001", "supervisor", {"sdp": "v=0", "type": "offer"})
            assert media.watch_by_subscription
            with pytest.raises(LookupError):
                await media.start_subscription(
                    "E-1", "S001", "nope", {"sdp": "x", "type": "answer"}
                )
        finally:
            await media.close()
            await stop_hall(hall)


async def test_janus_api_is_on_loopback_only_and_has_no_admin_api(tmp_path: Path) -> None:
    async with local_janus(tmp_path / "janus") as janus:
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        ours = [line.split() for line in listening if line.split()[3] == "0A"]  # LISTEN
        ports = {}
        for cols in ours:
            addr, port = cols[1].split(":")
            ports.setdefault(int(port, 16), set()).add(addr)
        assert ports.get(janus.ws_port) == {"0100007F"}  # 127.0.0.1
        inode_ports = _listening_ports_of(janus.pid)
        assert inode_ports == {janus.ws_port}, inode_ports  # no HTTP, no admin API
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(janus.url, protocols=("janus-protocol",)) as ws,
        ):
            await ws.send_json({"janus": "info", "transaction": "t1"})
            info = await ws.receive_json(timeout=5)
        assert list(info["plugins"]) == ["janus.plugin.videoroom"]
        assert list(info["transports"]) == ["janus.transport.websockets"]


def _listening_ports_of(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if cols[3] == "0A" and cols[9] in inodes:
            ports.add(int(cols[1].split(":")[1], 16))
    return ports


async def test_three_rooms_through_janus_recorded_into_the_archive(
    pki: Pki, tmp_path: Path
) -> None:
    async with local_janus(tmp_path / "janus") as janus:
        hall = await start_hall(pki, tmp_path)
        hub = hall.hub
        media = JanusMedia(hub, janus.url, tmp_path / "recordings", rotate_seconds=ROTATE_SECONDS)
        builtin, hub.media = hub.media, media
        links: list[RoomMedia] = []
        watchers: dict[str, SubscriberMedia] = {}
        try:
            e, _sup = await drawn(hall, tmp_path, draw=THREE_ROOMS)
            view = await e.view(P(hall, "supervisor"))
            assert sorted(view["rooms"]) == ["NJ-01", "SZ-01", "WX-01"]
            lead = next(r for r, v in view["rooms"].items() if v["role"] == "lead")
            secondary = sorted(r for r in view["rooms"] if r != lead)
            sup = P(hall, "supervisor")

            async def refused(who: Any, *path: str, body: Any) -> ApiError:
                with pytest.raises(ApiError) as caught:
                    await e.post(who, *path, body=body)
                return caught.value

            # before any room is linked: nothing to receive yet, try again
            gone = await refused(e.rooms[secondary[0]], "media", "subscribe", body={})
            assert (gone.code, gone.status) == ("MEDIA_NOT_LINKED", 409)
            for room_id in sorted(view["rooms"]):
                link = RoomMedia("synthetic", label=room_id)
                room = e.rooms[room_id]

                async def signal(offer: dict[str, str], room: Any = room) -> dict[str, str]:
                    answer = dict(await e.post(room, "media", "offer", body=offer))
                    assert answer.pop("watch_by_subscription") is True  # Janus: subscribe
                    return answer

                await link.connect(signal)  # through the server's real offer route
                links.append(link)
            for link in links:
                await link.wait_connected()
            # the refusals a watcher can act on, each with its stable code
            offer = {"sdp": "v=0", "type": "offer", "watch": "SZ-01"}
            assert (await refused(sup, "media", "offer", body=offer)).code == "MEDIA_SUBSCRIBE"
            named = await refused(e.rooms[secondary[0]], "media", "subscribe", body={"watch": lead})
            assert named.code == "NOT_PERMITTED"  # a room is not told which room is the lead
            assert (await refused(e.rooms[lead], "media", "subscribe", body={})).code == (
                "NOT_PERMITTED"
            )
            assert (await refused(sup, "media", "subscribe", body={})).code == "INVALID_INPUT"
            bad = {"sdp": "v=0", "type": "answer"}
            here = hub.relay.instance
            for sub in (f"{here}.nope", "elsewhere.nope", "junk"):
                gone = await refused(sup, "media", "subscriptions", sub, "answer", body=bad)
                assert (gone.code, gone.status) == ("MEDIA_SUBSCRIPTION_GONE", 404), sub
            # through the server's subscribe and answer routes, as the room agent and the
            # supervisor page do: the supervisor watches SZ-01, the secondary rooms receive the
            # host (lead) feed
            wanted: dict[str, tuple[Any, dict[str, str]]] = {"S001": (sup, {"watch": "SZ-01"})} | {
                r: (e.rooms[r], {}) for r in secondary
            }

            async def watch(who: Any, body: dict[str, str]) -> SubscriberMedia:
                watcher = SubscriberMedia()

                async def subscribe() -> dict[str, str]:
                    return dict(await e.post(who, "media", "subscribe", body=body))

                async def answer(sub: str, sdp: dict[str, str]) -> Any:
                    assert sub.startswith(f"{here}.")  # names the process that holds it
                    return await e.post(who, "media", "subscriptions", sub, "answer", body=sdp)

                await watcher.connect(subscribe, answer)
                return watcher

            for party, (who, body) in wanted.items():
                watchers[party] = await watch(who, body)
            for watcher in watchers.values():
                await watcher.wait_connected()
            # subscribing again replaces the watcher's last link (one per watcher and room)
            before = len(media._subscriptions)
            again = await watch(sup, {"watch": "SZ-01"})
            assert len(media._subscriptions) == before
            await again.close()
            await watchers.pop("S001").close()
            watchers["S001"] = await watch(sup, {"watch": "SZ-01"})
            await asyncio.sleep(RUN_SECONDS)
            for party, watcher in watchers.items():
                assert watcher.frames_received["video"] > 0, party
                assert watcher.frames_received["audio"] > 0, party
                assert watcher.last_video_size == (640, 480), party
            for link in links:
                assert link.frames_sent["video"] > 0
                await link.close()
            for watcher in watchers.values():
                await watcher.close()
            await media.close()  # the last partial segments go into the record
            assert media.failures == []

            events = await e.events(P(hall, "supervisor"))
            segments = [x["payload"] for x in events if x["type"] == "media_segment"]
            by_room: dict[str, list[int]] = {}
            for s in segments:
                assert s["error"] is None, s
                assert s["backend"] == "janus", s
                by_room.setdefault(s["room_id"], []).append(s["index"])
            assert sorted(by_room) == ["NJ-01", "SZ-01", "WX-01"]
            for indexes in by_room.values():
                # 22 s in 5 s segments: four whole ones and the partial last one
                assert indexes == list(range(len(indexes))) and len(indexes) >= 4
            for s in segments:
                data = hub.blobs.path(s["sha256"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == s["sha256"] and len(data) == s["size"]
            # a whole segment plays: VP8 640x480 and Opus, as sent, for about the segment length
            middle = next(s for s in segments if s["index"] == 1)
            with av.open(str(hub.blobs.path(middle["sha256"]))) as container:
                assert container.format.name.startswith("matroska")
                kinds = {s.type: s.codec_context.name for s in container.streams}
                assert kinds == {"video": "vp8", "audio": "opus"}
                # A packet damaged on its way (RTP over UDP: a lost fragment of a VP8 frame) is
                # skipped as a player would; the segment must still play nearly all of its frames.
                frames, damaged, packets = [], 0, 0
                for packet in container.demux(video=0):
                    if packet.size == 0:
                        continue
                    packets += 1
                    try:
                        frames.extend(packet.decode())
                    except av.error.InvalidDataError:
                        damaged += 1
            assert frames and (frames[0].width, frames[0].height) == (640, 480)
            assert len(frames) >= 0.6 * 15 * ROTATE_SECONDS
            assert damaged <= 0.05 * packets, (damaged, packets)
            assert not list((tmp_path / "recordings").glob("*.mjr*"))  # converted, then removed

            archive = tmp_path / "evaluation.zip"
            await export_session(
                hub.store, hub.blobs, hub.trust, hub.identity, e.sid, archive, hall.clock.now()
            )
            report = await asyncio.to_thread(verify_archive, archive)
            # the whole log, checkpoints too (no viewer is shown those; the archive keeps them)
            assert report.events == len(await hub.store.events_after(e.sid, 0))
            assert report.segments_checked == len(segments)

            victim = segments[len(segments) // 2]
            bad = flip_in_members(archive, tmp_path / "tampered.zip", victim["sha256"])
            with pytest.raises(ArchiveInvalid) as caught:
                await asyncio.to_thread(verify_archive, bad)
            message = str(caught.value)
            assert victim["sha256"][:12] in message or victim["room_id"] in message
        finally:
            for link in links:
                await link.close()
            for watcher in watchers.values():
                await watcher.close()
            await media.close()
            hub.media = builtin
            await stop_hall(hall)


async def test_janus_killed_mid_segment_keeps_what_it_wrote(pki: Pki, tmp_path: Path) -> None:
    """Janus dies (SIGKILL) while recording: the segments already closed and the part of the
    open one that Janus wrote are still converted and recorded, in order, without errors."""
    async with local_janus(tmp_path / "janus") as janus:
        hall = await start_hall(pki, tmp_path)
        hub = hall.hub
        media = JanusMedia(hub, janus.url, tmp_path / "recordings", rotate_seconds=ROTATE_SECONDS)
        builtin, hub.media = hub.media, media
        link = RoomMedia("synthetic", label="NJ-01")
        try:
            e, _sup = await drawn(hall, tmp_path, draw=THREE_ROOMS)

            async def signal(offer: dict[str, str]) -> dict[str, str]:
                return dict(await e.post(e.rooms["NJ-01"], "media", "offer", body=offer))

            await link.connect(signal)
            await link.wait_connected()
            await asyncio.sleep(ROTATE_SECONDS * 1.6)  # inside the second segment
            assert janus.proc is not None
            janus.proc.kill()
            await asyncio.to_thread(janus.proc.wait)
            await media.close()
            events = await e.events(P(hall, "supervisor"))
            segments = [x["payload"] for x in events if x["type"] == "media_segment"]
            assert [(s["room_id"], s["index"], s["error"]) for s in segments] == [
                ("NJ-01", 0, None),
                ("NJ-01", 1, None),
            ]
            with av.open(str(hub.blobs.path(segments[1]["sha256"]))) as container:
                frames = list(container.decode(video=0))
            assert len(frames) >= 15  # the second segment's first seconds were kept
        finally:
            await link.close()
            await media.close()
            hub.media = builtin
            await stop_hall(hall)


async def test_supervisor_wall_watches_rooms_through_janus(
    pki: Pki, tmp_path: Path, browsing: Browsing
) -> None:
    """The supervisor wall in Chromium with Janus as the media backend: its own offer is refused
    with MEDIA_SUBSCRIBE, it switches to answering Janus's offer, the room's video plays; when
    the supervisor switches rooms, the old link ends in Janus too; when the watched room's link
    ends, the page shows the video link as failed."""
    async with local_janus(tmp_path / "janus") as janus:
        hall = await start_hall(pki, tmp_path)
        media = JanusMedia(hall.hub, janus.url, tmp_path / "recordings")
        builtin, hall.hub.media = hall.hub.media, media
        links: list[RoomMedia] = []
        try:
            e, _sup = await drawn(hall, tmp_path, draw=THREE_ROOMS)
            rooms = sorted((await e.view(P(hall, "supervisor")))["rooms"])
            assert len(rooms) == 3
            for room_id in rooms:
                link = RoomMedia("synthetic", label=room_id)

                async def signal(offer: dict[str, str], room: Any = e.rooms[room_id]) -> Any:
                    return dict(await e.post(room, "media", "offer", body=offer))

                await link.connect(signal)
                links.append(link)
            for link in links:
                await link.wait_connected()
            wall = await browsing.open(hall, e.sid, "supervisor", "supervisor")
            ecard = card(wall, e.sid)
            for watched in (rooms[-1], rooms[0]):
                await ecard.get_by_test_id(f"watch-{watched}").click()
                tile = ecard.get_by_test_id("video-tile")
                await expect(tile).to_have_attribute("data-state", "playing", timeout=20000)
                assert await ecard.get_by_test_id("video").evaluate("(v) => v.videoWidth") == 640
                await expect(ecard.get_by_test_id("video-state")).to_have_text(
                    f"正在播放 {watched}"
                )
            await shot(wall, "12-supervisor-wall-video-janus")
            # the first room's link was closed by the page: Janus hangs up, the server forgets it
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                watching = [s.watch for s in media._subscriptions.values()]
                if watching == [rooms[0]]:
                    break
                await asyncio.sleep(0.5)
            assert watching == [rooms[0]]
            # the watched room's own link ends: the server ends the subscription, and the page
            # says the video link failed once the browser notices (its ICE checks go unanswered)
            await links[0].close()
            await expect(ecard.get_by_test_id("video-tile")).to_have_attribute(
                "data-state", "failed", timeout=45000
            )
            assert [s.watch for s in media._subscriptions.values()] == []
            assert browsing.errors == []
        finally:
            for link in links:
                await link.close()
            await media.close()
            hall.hub.media = builtin
            await stop_hall(hall)


async def test_room_agent_receives_the_host_feed_through_janus(pki: Pki, tmp_path: Path) -> None:
    """``bidbridge room run`` at a secondary room, with Janus: its publication's answer says to
    subscribe, it subscribes (retrying until the lead room is linked) and receives the host
    feed. When the lead room's link drops, the server ends the subscriptions to it (Janus would
    keep them up without media); the agent sees its link close, subscribes again and receives
    the lead room's next link."""
    from tests.support.cli import bidbridge, write_party

    async with local_janus(tmp_path / "janus") as janus:
        hall = await start_hall(pki, tmp_path)
        media = JanusMedia(hall.hub, janus.url, tmp_path / "recordings")
        builtin, hall.hub.media = hall.hub.media, media
        lead_link = RoomMedia("synthetic", label="lead")
        try:
            e, _sup = await drawn(hall, tmp_path, draw=THREE_ROOMS)
            view = await e.view(P(hall, "supervisor"))
            lead = next(r for r, v in view["rooms"].items() if v["role"] == "lead")
            secondary = sorted(r for r in view["rooms"] if r != lead)[0]
            key, cert = write_party(tmp_path / "room", "room", e.rooms[secondary])
            argv = [
                "room", "run", "--server", hall.url, "--session", e.sid, "--key", key,
                "--cert", cert, "--source", "synthetic", "--label", secondary, "--seconds", "40",
            ]  # fmt: skip
            run = asyncio.create_task(bidbridge(*argv))
            await asyncio.sleep(4)  # the agent is up before the lead room links: it waits

            async def signal(offer: dict[str, str]) -> Any:
                return dict(await e.post(e.rooms[lead], "media", "offer", body=offer))

            await lead_link.connect(signal)
            await lead_link.wait_connected()

            def watching_lead() -> list[str]:
                return [s.owner for s in media._subscriptions.values() if s.watch == lead]

            deadline = time.monotonic() + 20
            while not watching_lead() and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            assert watching_lead() == [secondary]
            await asyncio.sleep(6)  # the host feed flows for a while
            await lead_link.close()  # the lead room's link drops ...
            deadline = time.monotonic() + 15
            while watching_lead() and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            assert watching_lead() == []  # ... and so does every subscription to it
            await asyncio.sleep(3)
            lead_link = RoomMedia("synthetic", label="lead")  # ... then it links again
            await lead_link.connect(signal)
            await lead_link.wait_connected()
            r = await run
            assert r.code == 0, r
            marker = "receiving the host feed through the media server"
            assert r.out.count(marker) == 2, r.out  # once per link of the lead room
            after = r.out.rsplit(marker, 1)[1]
            counts = re.findall(r"host feed frames: \{'audio': (\d+), 'video': (\d+)\}", after)
            assert counts and int(counts[-1][1]) > 0 and int(counts[-1][0]) > 0, r.out
        finally:
            await lead_link.close()
            await media.close()
            hall.hub.media = builtin
            await stop_hall(hall)
