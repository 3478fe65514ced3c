"""The built-in media backend (server/media) with evaluation rooms (room_client/media) over
real aiortc on loopback: live links, host feed, supervision, recording in WebM segments.

One session runs once for the module (about 25 s): the lead room and two secondary rooms send
synthetic 640x480 video and a tone; a supervisor watches a secondary room, then switches to the
other one. Then one room hangs up and ``close()`` ends the rest. The tests below check what
that run left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import pytest

from room_client.media import RoomMedia, SupervisorMedia, SyntheticVideoTrack
from server.media.builtin import BuiltinMedia, Segment, UnknownPeer
from server.media.recording import PeerRecorder, RecordingSettings

SESSION = "eval-2024-0042"
LEAD, ROOM_B, ROOM_C = "room-lead", "room-b", "room-c"
ROOMS = (LEAD, ROOM_B, ROOM_C)
SUPERVISOR = "sup-1"
SEGMENT_SECONDS = 5.0
RUN_SECONDS = 22.5  # not a multiple of the segment length: the last segments are partial


def tint(label: str) -> int:
    """The chroma (U) value the synthetic source paints a room's picture with."""
    return SyntheticVideoTrack(label)._u[0]


def whose_picture(u: int) -> str:
    """The room whose tint is nearest to a received picture's (the codec moves it a little)."""
    return min(ROOMS, key=lambda room: abs(tint(room) - u))


@dataclass
class Run:
    work_dir: Path
    segments: list[Segment] = field(default_factory=list)
    reported_at: dict[tuple[str, int], float] = field(default_factory=dict)
    connected_at: dict[str, float] = field(default_factory=dict)
    stopped_at: dict[str, float] = field(default_factory=dict)
    stopped_wall: dict[str, datetime] = field(default_factory=dict)
    host_feed_frames: dict[str, dict[str, int]] = field(default_factory=dict)
    host_feed_tint: dict[str, int] = field(default_factory=dict)
    supervisor_frames_before_switch: int = 0
    supervisor_frames_after_switch: int = 0
    supervisor_tint_before: int = -1
    supervisor_tint_after: int = -1
    stats_before_switch: dict[str, Any] = field(default_factory=dict)
    stats_after_switch: dict[str, Any] = field(default_factory=dict)
    hangup_returned_at: float = 0.0
    close_returned_at: float = 0.0
    worker_pids: list[int] = field(default_factory=list)
    watch_unknown_room: str = ""

    def of(self, peer: str) -> list[Segment]:
        return sorted((s for s in self.segments if s.peer_id == peer), key=lambda s: s.index)


def u_of(frame: av.VideoFrame) -> int:
    """The median chroma (U) of a few points of a picture."""
    plane = bytes(frame.planes[1])
    width = frame.planes[1].line_size
    points = [plane[y * width + x] for y in (100, 150, 200) for x in (40, 160, 280)]
    return sorted(points)[len(points) // 2]


async def run_session(work_dir: Path) -> Run:
    run = Run(work_dir)

    async def on_segment(segment: Segment) -> None:
        run.segments.append(segment)
        run.reported_at[(segment.peer_id, segment.index)] = time.monotonic()

    last_u: dict[str, int] = {}

    def sampler(name: str) -> Any:
        def on_frame(kind: str, frame: Any) -> None:
            if kind == "video":
                last_u[name] = u_of(frame)

        return on_frame

    media = BuiltinMedia(work_dir, on_segment, segment_seconds=SEGMENT_SECONDS, workers=2)
    await media.start()
    run.worker_pids = media.worker_pids
    rooms = {name: RoomMedia("synthetic", label=name, on_frame=sampler(name)) for name in ROOMS}
    supervisor = SupervisorMedia(on_frame=sampler(SUPERVISOR))
    try:
        for name in ROOMS:  # the lead room connects first: it is the host feed by default

            async def send_offer(offer: dict[str, str], name: str = name) -> dict[str, str]:
                return await media.answer(SESSION, name, "room", offer)

            await rooms[name].connect(send_offer)
            run.connected_at[name] = time.monotonic()

        async def supervisor_signal(offer: dict[str, str]) -> dict[str, str]:
            return await media.answer(SESSION, SUPERVISOR, "supervisor", offer, watch=ROOM_C)

        await supervisor.connect(supervisor_signal)
        await asyncio.gather(*(r.wait_connected() for r in [*rooms.values(), supervisor]))

        await asyncio.sleep(RUN_SECONDS / 2)
        run.stats_before_switch = (await media.stats())[SESSION]
        run.supervisor_frames_before_switch = supervisor.frames_received["video"]
        run.supervisor_tint_before = last_u.get(SUPERVISOR, -1)
        try:
            await media.watch(SESSION, SUPERVISOR, "room-nowhere")
        except UnknownPeer as exc:
            run.watch_unknown_room = str(exc)
        await media.watch(SESSION, SUPERVISOR, ROOM_B)
        await asyncio.sleep(RUN_SECONDS / 2)
        run.stats_after_switch = (await media.stats())[SESSION]
        run.supervisor_frames_after_switch = (
            supervisor.frames_received["video"] - run.supervisor_frames_before_switch
        )
        run.supervisor_tint_after = last_u.get(SUPERVISOR, -1)
        for name, room in rooms.items():
            run.host_feed_frames[name] = dict(room.frames_received)
            run.host_feed_tint[name] = last_u.get(name, -1)

        # room B leaves: hangup returns once its last segment was reported
        run.stopped_at[ROOM_B] = time.monotonic()
        run.stopped_wall[ROOM_B] = datetime.now(UTC)
        await media.hangup(SESSION, ROOM_B)
        run.hangup_returned_at = time.monotonic()
        # the others are still live when the backend closes: close() flushes them
        run.stopped_at[LEAD] = run.stopped_at[ROOM_C] = time.monotonic()
        run.stopped_wall[LEAD] = run.stopped_wall[ROOM_C] = datetime.now(UTC)
        await media.close()
        run.close_returned_at = time.monotonic()
    finally:
        await asyncio.gather(*(r.close() for r in rooms.values()), supervisor.close())
        await media.close()
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return asyncio.run(run_session(tmp_path_factory.mktemp("media")))


def test_every_room_is_recorded_in_gap_free_segments(run: Run) -> None:
    assert {s.peer_id for s in run.segments} == set(ROOMS)  # a supervisor is not recorded
    for room in ROOMS:
        segments = run.of(room)
        assert [s.index for s in segments] == list(range(len(segments)))
        assert len(segments) >= 4
        assert all(s.error is None for s in segments), [s.error for s in segments]
        assert len({(s.index, s.sha256) for s in segments}) == len(segments)  # each once


def test_segment_files_are_named_by_session_peer_and_index(run: Run) -> None:
    for segment in run.segments:
        assert (
            segment.path == run.work_dir / SESSION / segment.peer_id / f"{segment.index:06d}.webm"
        )
        assert segment.session_id == SESSION
        assert segment.format == "webm"
    assert not list(run.work_dir.rglob("*.part"))


def test_reported_hash_and_size_are_those_of_the_file(run: Run) -> None:
    for segment in run.segments:
        data = segment.path.read_bytes()
        assert segment.size == len(data) > 0
        assert segment.sha256 == hashlib.sha256(data).hexdigest()


def test_each_segment_plays_on_its_own(run: Run) -> None:
    for segment in run.segments:
        assert segment.tracks == ("video", "audio")
        with av.open(str(segment.path)) as container:
            assert container.format.name.startswith("matroska")
            assert container.streams.video[0].codec_context.name == "vp8"
            assert container.streams.audio[0].codec_context.name == "opus"
            video = list(container.decode(video=0))
        with av.open(str(segment.path)) as container:
            audio = list(container.decode(audio=0))
        assert video and audio, segment.path
        assert video[0].key_frame  # starts on a key frame: no earlier segment needed
        assert {(f.width, f.height) for f in video} == {(640, 480)}
        assert len(video) == segment.frames["video"]
        assert sum(f.samples for f in audio) >= 0.9 * segment.frames["audio"] * 960


def test_recorded_time_covers_the_run(run: Run) -> None:
    for room in ROOMS:
        segments = run.of(room)
        recorded = sum(s.duration for s in segments)
        ran = run.stopped_at[room] - run.connected_at[room]
        assert recorded >= 0.8 * ran, (room, recorded, ran)
        for s in segments:
            assert s.started_at.tzinfo == UTC
            assert 0 < s.duration <= SEGMENT_SECONDS + 0.1
        for before, after in itertools.pairwise(segments):
            # the grid of segments: each starts where the one before it was meant to end
            step = (after.started_at - before.started_at).total_seconds()
            assert step == pytest.approx(SEGMENT_SECONDS, abs=1e-3)
        for s in segments[:-1]:
            assert s.frames["video"] >= 0.8 * 15 * SEGMENT_SECONDS
            assert s.ended_at - s.started_at >= timedelta(seconds=0.9 * SEGMENT_SECONDS)


def test_secondary_rooms_receive_the_lead_rooms_feed(run: Run) -> None:
    seconds = RUN_SECONDS
    for room in (ROOM_B, ROOM_C):
        assert run.host_feed_frames[room]["video"] >= 0.6 * 15 * seconds
        assert run.host_feed_frames[room]["audio"] >= 0.6 * 50 * seconds
        assert whose_picture(run.host_feed_tint[room]) == LEAD
    assert run.host_feed_frames[LEAD]["video"] == 0  # the host room is not sent its own feed
    stats = run.stats_before_switch
    assert stats[LEAD]["host_feed"] is True
    assert stats[ROOM_B]["feed_from"] == stats[ROOM_C]["feed_from"] == LEAD


def test_a_supervisor_watches_any_room_and_can_switch(run: Run) -> None:
    assert run.supervisor_frames_before_switch >= 0.5 * 15 * RUN_SECONDS / 2
    assert whose_picture(run.supervisor_tint_before) == ROOM_C
    assert run.stats_before_switch[SUPERVISOR]["feed_from"] == ROOM_C
    assert run.supervisor_frames_after_switch >= 0.5 * 15 * RUN_SECONDS / 2
    assert whose_picture(run.supervisor_tint_after) == ROOM_B
    assert run.stats_after_switch[SUPERVISOR]["feed_from"] == ROOM_B
    assert "room-nowhere" in run.watch_unknown_room


def test_stats_count_frames_and_segments_per_peer(run: Run) -> None:
    stats = run.stats_after_switch
    for room in ROOMS:
        entry = stats[room]
        assert entry["role"] == "room"
        assert entry["connection"] == "connected"
        assert entry["worker_pid"] in run.worker_pids
        assert entry["frames_received"]["video"] >= 0.8 * 15 * RUN_SECONDS
        assert entry["frames_dropped"] == entry["frames_late"] == 0
        assert entry["segments_written"] >= 4
        assert entry["bytes_written"] > 0 and entry["bytes_received"] > 0
    assert stats[SUPERVISOR]["role"] == "supervisor"
    assert stats[SUPERVISOR]["frames_sent"]["video"] > 0


def test_hangup_returns_after_the_last_segment_was_reported(run: Run) -> None:
    last = run.of(ROOM_B)[-1]
    assert run.reported_at[(ROOM_B, last.index)] <= run.hangup_returned_at
    # the partial segment cut at the hangup: it runs up to the moment the room left
    assert 0 < last.duration <= SEGMENT_SECONDS + 0.1
    assert abs((last.ended_at - run.stopped_wall[ROOM_B]).total_seconds()) < 1.5


def test_close_flushes_the_last_partial_segment(run: Run) -> None:
    for room in (LEAD, ROOM_C):
        last = run.of(room)[-1]
        assert run.reported_at[(room, last.index)] <= run.close_returned_at
        assert last.frames["video"] > 0
        assert 0 < last.duration <= SEGMENT_SECONDS + 0.1
        # it ends when the backend closed, not at the segment boundary before
        assert abs((last.ended_at - run.stopped_wall[room]).total_seconds()) < 1.5


def test_a_segment_that_cannot_be_written_is_reported_with_its_error(tmp_path: Path) -> None:
    """A write failure uses up its index and says why; recording goes on with the next one."""
    reported: list[Segment] = []
    folder = tmp_path / "s" / "p"
    (folder / "000000.webm.part").mkdir(parents=True)  # the file cannot be created
    recorder = PeerRecorder(
        "s",
        "p",
        tmp_path,
        kinds=["video"],
        segment_seconds=0.5,
        emit=reported.append,
        settings=RecordingSettings(fsync=False),
    )
    source = SyntheticVideoTrack("p")
    start = time.monotonic()
    for i in range(22):  # 1.5 s of video, fed in real time
        frame = source.draw(i)
        time.sleep(max(0.0, start + i / 15 - time.monotonic()))
        recorder.submit("video", frame, i / 15)
    recorder.stop()
    assert [s.index for s in reported] == [0, 1, 2]
    assert reported[0].error and "000000.webm.part" in reported[0].error
    assert reported[0].sha256 == "" and reported[0].size == 0
    assert all(s.error is None and s.path.is_file() for s in reported[1:])
    assert recorder.stats.segment_errors == 1


def test_ids_that_are_not_safe_folder_names_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async def on_segment(segment: Segment) -> None:
            pass

        media = BuiltinMedia(tmp_path, on_segment, workers=1)
        await media.start()
        try:
            for bad in ("../etc", ".hidden", "a/b", ""):
                with pytest.raises(ValueError):
                    await media.answer(SESSION, bad, "room", {"sdp": "v=0", "type": "offer"})
            with pytest.raises(ValueError):
                await media.answer(SESSION, "r1", "room", {"sdp": "", "type": "offer"})
            with pytest.raises(ValueError):
                await media.answer(SESSION, "r1", "room", {"sdp": "v=0\r\nm=x", "type": "offer"})
            with pytest.raises(UnknownPeer):
                await media.hangup(SESSION, "nobody")
        finally:
            await media.close()

    asyncio.run(scenario())


def test_a_wide_camera_is_recorded_in_its_own_shape(tmp_path: Path) -> None:
    """16:9 pictures are scaled into the 640x480 box as 640x360, not stretched; audio that
    comes before the first picture is kept."""
    reported: list[Segment] = []
    recorder = PeerRecorder(
        "s",
        "wide",
        tmp_path,
        kinds=["video", "audio"],
        segment_seconds=10.0,
        emit=reported.append,
        settings=RecordingSettings(fsync=False),
    )
    video = SyntheticVideoTrack("wide", width=1280, height=720)
    silence = av.AudioFrame(format="s16", layout="stereo", samples=960)
    silence.sample_rate = 48_000
    for plane in silence.planes:
        plane.update(bytes(plane.buffer_size))
    for i in range(5):  # 100 ms of sound before any picture
        recorder.submit("audio", silence, i * 0.02)
    for i in range(15):
        time.sleep(1 / 15)
        recorder.submit("video", video.draw(i), 0.1 + i / 15)
        for j in range(3):
            recorder.submit("audio", silence, 0.1 + (i * 3 + j) * 0.02)
    recorder.stop()
    [segment] = reported
    assert segment.error is None
    assert segment.frames == {"video": 15, "audio": 50}
    with av.open(str(segment.path)) as container:
        sizes = {(f.width, f.height) for f in container.decode(video=0)}
    assert sizes == {(640, 360)}


async def _link_room(media: BuiltinMedia, session: str, peer: str) -> RoomMedia:
    room = RoomMedia("synthetic", label=peer)

    async def send_offer(offer: dict[str, str]) -> dict[str, str]:
        return await media.answer(session, peer, "room", offer)

    await room.connect(send_offer)
    await room.wait_connected()
    return room


async def _wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def _reporting(folder: Path, reported: list[Segment], **options: Any) -> BuiltinMedia:
    """Built-in media in ``folder`` that appends each segment it reports to ``reported``."""

    async def on_segment(segment: Segment) -> None:
        reported.append(segment)

    return BuiltinMedia(folder, on_segment, **options)


def test_a_room_that_reconnects_goes_on_with_the_next_segment_index(tmp_path: Path) -> None:
    async def scenario() -> list[Segment]:
        reported: list[Segment] = []
        async with _reporting(tmp_path, reported, segment_seconds=1.0, workers=1) as media:
            room = await _link_room(media, "s-reconnect", "r1")
            await _wait_for(lambda: len(reported) >= 1)
            await room.close()  # the room's link drops; it comes back with a new one
            room = await _link_room(media, "s-reconnect", "r1")
            await _wait_for(lambda: len(reported) >= 3)
            await room.close()
        return reported

    reported = asyncio.run(scenario())
    assert [s.index for s in reported] == list(range(len(reported)))
    assert all(s.error is None and s.path.is_file() for s in reported)


def test_a_worker_that_dies_is_reported_and_replaced(tmp_path: Path) -> None:
    """Its rooms get an error segment (the recording stopped there); the next session gets a
    new worker."""

    async def scenario() -> tuple[list[Segment], str]:
        reported: list[Segment] = []
        async with _reporting(tmp_path, reported, segment_seconds=1.0, workers=1) as media:
            room = await _link_room(media, "s-crash", "r1")
            await _wait_for(lambda: len(reported) >= 1)
            [pid] = media.worker_pids
            os.kill(pid, signal.SIGKILL)
            await _wait_for(lambda: any(s.error for s in reported))
            gone = ""
            try:
                await media.hangup("s-crash", "r1")
            except UnknownPeer as exc:
                gone = str(exc)
            await room.close()
            other = await _link_room(media, "s-after", "r1")
            assert media.worker_pids and media.worker_pids != [pid]
            await _wait_for(lambda: any(s.session_id == "s-after" for s in reported))
            await other.close()
        return reported, gone

    reported, gone = asyncio.run(scenario())
    crashed = [s for s in reported if s.session_id == "s-crash"]
    assert [s.index for s in crashed] == list(range(len(crashed)))
    assert crashed[-1].error and "exited" in crashed[-1].error
    assert all(s.error is None for s in crashed[:-1])
    assert "r1" in gone


def test_rooms_of_a_session_that_link_up_at_once_share_a_worker(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async def on_segment(segment: Segment) -> None:
            pass

        async with BuiltinMedia(tmp_path, on_segment, workers=2) as media:
            await _link_room(media, "s-first", "r0")  # the first worker is busy now
            rooms = await asyncio.gather(
                *(_link_room(media, "s-both", peer) for peer in ("r1", "r2", "r3"))
            )
            stats = await media.stats()
            for peer in ("r1", "r2", "r3"):
                await media.hangup("s-both", peer)
            for room in rooms:
                await room.close()
        return stats["s-first"], stats["s-both"]

    first, both = asyncio.run(scenario())
    assert len({entry["worker_pid"] for entry in both.values()}) == 1
    assert {entry["worker_pid"] for entry in both.values()} != {first["r0"]["worker_pid"]}
