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
import shutil
import signal
import socket
import subprocess
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from room_client.media import RoomMedia
from server.audit.archive import ArchiveInvalid, verify_archive
from server.audit.export import export_session
from server.media.janus import JanusMedia
from tests.conftest import Pki
from tests.evaluation import drawn
from tests.hall import start_hall, stop_hall
from tests.test_hall_api import P

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_JANUS = ROOT / "deploy" / "janus"
RUN_SECONDS = 22.0
ROTATE_SECONDS = 5.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def janus_or_skip() -> str:
    """The janus binary; a visible skip where it is missing, a failure under CI (the set-up
    installs it)."""
    path = shutil.which("janus")
    if path is None or shutil.which("janus-pp-rec") is None:
        if os.environ.get("CI") == "1":
            pytest.fail("janus / janus-pp-rec missing under CI: scripts/setup.sh installs them")
        pytest.skip("janus or janus-pp-rec not installed (Debian packages janus, janus-tools)")
    return path


def local_config(dst: Path, ws_port: int, rtp_first: int, rtp_count: int = 200) -> Path:
    """A copy of deploy/janus/ for one loopback instance: its own WebSocket port on 127.0.0.1
    and its own media port range; everything else as deployed."""
    dst.mkdir(parents=True, exist_ok=True)
    for src in DEPLOY_JANUS.glob("*.jcfg"):
        text = src.read_text()
        if src.name == "janus.transport.websockets.jcfg":
            text = re.sub(r"ws_port = \d+", f"ws_port = {ws_port}", text)
            text = re.sub(r'ws_ip = "[^"]*"', 'ws_ip = "127.0.0.1"', text)
        if src.name == "janus.jcfg":
            last = rtp_first + rtp_count - 1
            text = re.sub(
                r'rtp_port_range = "[^"]*"', f'rtp_port_range = "{rtp_first}-{last}"', text
            )
            text = re.sub(r'configs_folder = "[^"]*"', f'configs_folder = "{dst}"', text)
        (dst / src.name).write_text(text)
    return dst


class LocalJanus:
    """``janus`` run from the Debian package with a generated copy of the project's config."""

    def __init__(self, work: Path, binary: str = "janus") -> None:
        self.work = work
        self.binary = binary
        self.ws_port = free_port()
        # a UDP range unlikely to collide with a neighbour's; Janus picks free ports inside it
        self.rtp_first = 30000 + (os.getpid() % 300) * 100
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work / "janus.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        folder = local_config(self.work / "config", self.ws_port, self.rtp_first, 100)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--configs-folder={folder}", "--disable-colors"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"janus exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.ws_port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"janus did not listen: {self.log_path.read_text()[-2000:]}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.asynccontextmanager
async def local_janus(work: Path) -> AsyncIterator[LocalJanus]:
    janus = LocalJanus(work, janus_or_skip())
    await janus.start()
    try:
        yield janus
    finally:
        await janus.stop()


class Watcher:
    """A party that watches one feed through Janus: it answers Janus's offer (as a supervisor's
    browser or a secondary room would) and counts the frames that arrive."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames: dict[str, int] = {"audio": 0, "video": 0}
        self.size: tuple[int, int] | None = None
        self._tasks: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames[track.kind] += 1
            if isinstance(frame, av.VideoFrame):
                self.size = (frame.width, frame.height)

    async def answer(self, offer: dict[str, Any]) -> dict[str, str]:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return {"sdp": self.pc.localDescription.sdp, "type": "answer"}

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


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
        watchers: dict[str, Watcher] = {}
        try:
            e, _sup = await drawn(
                hall,
                tmp_path,
                draw={
                    "lead_site_id": "NJ",
                    "secondary_sites": 2,
                    "categories": [{"category": "A08.01", "count": 5, "spares": 2}],
                    "min_outside_lead": 2,
                },
            )
            view = await e.view(P(hall, "supervisor"))
            assert sorted(view["rooms"]) == ["NJ-01", "SZ-01", "WX-01"]
            lead = next(r for r, v in view["rooms"].items() if v["role"] == "lead")
            for room_id in sorted(view["rooms"]):
                link = RoomMedia("synthetic", label=room_id)
                room = e.rooms[room_id]

                async def signal(offer: dict[str, str], room: Any = room) -> dict[str, str]:
                    return dict(await e.post(room, "media", "offer", body=offer))

                await link.connect(signal)  # through the server's real offer route
                links.append(link)
            for link in links:
                await link.wait_connected()
            # the supervisor watches SZ-01; the secondary rooms receive the host (lead) feed
            wanted = {"S001": "SZ-01"} | {r: lead for r in view["rooms"] if r != lead}
            for party, watch in wanted.items():
                watcher = Watcher()
                offer = await media.subscribe(e.sid, party, watch)
                assert offer["type"] == "offer"
                answer = await watcher.answer(offer)
                await media.start_subscription(e.sid, party, offer["subscription"], answer)
                watchers[party] = watcher
            await asyncio.sleep(RUN_SECONDS)
            for party, watcher in watchers.items():
                assert watcher.frames["video"] > 0, party
                assert watcher.frames["audio"] > 0, party
                assert watcher.size == (640, 480), party
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
                frames = list(container.decode(video=0))
            assert frames and (frames[0].width, frames[0].height) == (640, 480)
            assert len(frames) >= 0.6 * 15 * ROTATE_SECONDS
            assert not list((tmp_path / "recordings").glob("*.mjr*"))  # converted, then removed

            archive = tmp_path / "evaluation.zip"
            await export_session(
                hub.store, hub.blobs, hub.trust, hub.identity, e.sid, archive, hall.clock.now()
            )
            report = await asyncio.to_thread(verify_archive, archive)
            assert report.events == len(events)
            assert report.segments_checked == len(segments)

            victim = segments[len(segments) // 2]
            bad = tmp_path / "tampered.zip"
            with zipfile.ZipFile(archive) as src, zipfile.ZipFile(bad, "w") as dst:
                for info in src.infolist():
                    data = src.read(info.filename)
                    if victim["sha256"] in info.filename:
                        buf = bytearray(data)
                        buf[len(buf) // 2] ^= 0x01
                        data = bytes(buf)
                    dst.writestr(info, data)
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
            e, _sup = await drawn(
                hall,
                tmp_path,
                draw={
                    "lead_site_id": "NJ",
                    "secondary_sites": 2,
                    "categories": [{"category": "A08.01", "count": 5, "spares": 2}],
                    "min_outside_lead": 2,
                },
            )

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
