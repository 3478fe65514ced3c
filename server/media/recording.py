"""Recording a peer's live stream as short, complete WebM segments, each hashed as it is closed.

This runs inside the media worker process (``server/media/worker.py``); the main server only
sees the resulting ``Segment`` records.

Format (DESIGN.md section 8: open formats for long retention). One file per peer per segment,
holding both tracks: VP8 video (fitted into 640x480 keeping the camera's shape, 15 fps, about
600 kb/s) and Opus audio (48 kHz mono, 32 kb/s), in WebM. Every file starts with a fresh encoder,
so it starts with a key frame and plays on its own; a 5 s segment is about 400 KB.
Files are named ``<work_dir>/<session_id>/<peer_id>/<index:06d>.webm``; a file is written as
``.webm.part``, flushed to disk, and renamed only when it is complete, so a crash never leaves a
complete-looking file that was not hashed.

Timing. Each incoming track keeps its RTP timestamps (which are smooth and exact), anchored to
the instant its first frame arrived; the peer's media time 0 is the arrival of its first frame
of any kind. A track whose timestamps drift more than ``RESYNC_SECONDS`` from the arrival times
(a sender that restarted, a clock jump) is re-anchored to its arrival times. Segment ``k`` of a
peer's time grid covers ``[k * S, (k + 1) * S)`` of its media time (S = ``segment_seconds``);
the file's time 0 is that slot's start and ``started_at`` is the wall-clock instant of it.

Indices. A segment's ``index`` counts the files of this peer: 0, 1, 2, ... with no gaps, in the
order they are closed and reported. A slot with no frames at all (the peer's media stopped
for longer than a segment) produces no file; its absence shows as a gap between one segment's
``ended_at`` and the next one's ``started_at``, never as a gap in the indices. A segment that
could not be written (disk full, I/O error) is still reported, with ``error`` set, and its
index is used up, so the record shows exactly which stretch is missing and why.

Closing. Slot ``k`` is closed once every track has delivered a frame past its end, or, for a
track that went quiet, ``CLOSE_GRACE_SECONDS`` after the end of the slot. A frame that arrives
for a slot already closed is dropped and counted as late.
"""

from __future__ import annotations

import contextlib
import fractions
import hashlib
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".webm"
PART_SUFFIX = ".part"
RESYNC_SECONDS = 2.0
CLOSE_GRACE_SECONDS = 2.0  # a stalled event loop (a busy machine) is not a quiet track
# RTP timestamps are 32-bit: they wrap after 2**32 ticks of the clock of the kind.
RTP_WRAP_SECONDS = {"video": 2**32 / 90_000, "audio": 2**32 / 48_000}

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_id(value: str, what: str) -> str:
    """Session and peer ids become folder names: letters, digits, ``_ . -``; 1 to 128 long."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid id (letters, digits, '_', '.', '-'; "
            f"1 to 128 characters, not starting with '.', '_' or '-')"
        )
    return value


def segment_path(work_dir: Path, session_id: str, peer_id: str, index: int) -> Path:
    """Where segment ``index`` of a peer is stored (deterministic)."""
    check_id(session_id, "session id")
    check_id(peer_id, "peer id")
    return work_dir / session_id / peer_id / f"{index:06d}{SEGMENT_SUFFIX}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Segment:
    """One recorded piece of a peer's stream, reported once, in index order.

    ``path``, ``sha256`` and ``size`` describe the complete file. When the segment could not be
    written, ``error`` says why, ``path`` is where it was meant to be, ``sha256`` is ``""`` and
    ``size`` is 0 (no file is left there).
    """

    session_id: str
    peer_id: str
    index: int  # 0, 1, 2, ... gap-free per (session, peer)
    path: Path
    sha256: str  # hex SHA-256 of the file's bytes
    size: int  # bytes
    started_at: datetime  # UTC instant of the file's time 0 (the slot's start)
    ended_at: datetime  # UTC instant of the end of the last frame in the file
    tracks: tuple[str, ...]  # kinds in the file, in stream order: ("video", "audio")
    frames: Mapping[str, int] = field(default_factory=dict)  # frames written per kind
    error: str | None = None
    format: str = "webm"  # container; codecs VP8 (video) and Opus (audio)

    @property
    def duration(self) -> float:
        return (self.ended_at - self.started_at).total_seconds()

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_payload(self) -> dict[str, Any]:
        """A JSON-ready dict for the event log (UTC instants in ISO 8601)."""
        return {
            "session_id": self.session_id,
            "peer_id": self.peer_id,
            "index": self.index,
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
            "tracks": list(self.tracks),
            "frames": dict(self.frames),
            "format": self.format,
            "error": self.error,
        }


@dataclass(frozen=True)
class RecordingSettings:
    """Encoder settings of the recording (one encode per recorded stream: keep it cheap)."""

    width: int = 640
    height: int = 480
    fps: int = 15
    video_bitrate: int = 600_000
    audio_bitrate: int = 32_000
    audio_layout: str = "mono"
    # libvpx: real-time deadline; speed step -12 (libwebrtc's setting for weak devices) costs
    # about 3 % of a core at 640x480@15 where aiortc's -6 costs 4 % and 8 costs 8 %, for the same
    # PSNR within 0.3 dB on the synthetic room picture; no look-ahead (frames leave at once);
    # one thread per stream (streams run side by side instead); skip unchanged blocks.
    vp8_options: Mapping[str, str] = field(
        default_factory=lambda: {
            "deadline": "realtime",
            "cpu-used": "-12",
            "lag-in-frames": "0",
            "static-thresh": "100",
            "noise-sensitivity": "0",
            "undershoot-pct": "95",
            "overshoot-pct": "15",
        }
    )
    queue_seconds: float = 3.0  # frames waiting for the encoder; beyond that they are dropped
    fsync: bool = True

    def gop(self, segment_seconds: float) -> int:
        # One key frame per segment (it starts with one); at most 10 s apart for seeking.
        return max(1, min(math.ceil(self.fps * segment_seconds) + 1, 10 * self.fps))


def fit_size(width: int, height: int, settings: RecordingSettings) -> tuple[int, int]:
    """The recording size of a picture: within the configured box, same shape, never larger
    than it came, even dimensions (4:3 640x480 stays; 16:9 1280x720 becomes 640x360)."""
    scale = min(1.0, settings.width / width, settings.height / height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def copy_video_frame(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """A private copy in yuv420p at the recording size.

    The decoded frame is shared (MediaRelay hands the same object to the host-feed senders, which
    encode it in other threads); encoding rewrites a frame's pts, so the recorder encodes a copy.
    """
    if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
        scaled = frame.reformat(width=width, height=height, format="yuv420p")
        if scaled is not frame:
            return scaled
    copy = av.VideoFrame(width, height, "yuv420p")
    for src, dst in zip(frame.planes, copy.planes, strict=True):
        if src.line_size == dst.line_size:
            memoryview(dst)[:] = memoryview(src)[: dst.buffer_size]
        else:
            s, d, n = memoryview(src), memoryview(dst), min(src.width, dst.width)
            for row in range(min(src.height, dst.height)):
                d[row * dst.line_size : row * dst.line_size + n] = s[
                    row * src.line_size : row * src.line_size + n
                ]
    return copy


def copy_audio_frame(frame: av.AudioFrame) -> av.AudioFrame:
    copy = av.AudioFrame(format=frame.format.name, layout=frame.layout.name, samples=frame.samples)
    copy.sample_rate = frame.sample_rate
    for src, dst in zip(frame.planes, copy.planes, strict=True):
        n = min(src.buffer_size, dst.buffer_size)
        memoryview(dst)[:n] = memoryview(src)[:n]
    return copy


class _SegmentFile:
    """One open ``.webm.part`` file with its encoders."""

    def __init__(
        self,
        path: Path,
        index: int,
        slot: int,
        origin: float,
        started_at: datetime,
        kinds: tuple[str, ...],
        settings: RecordingSettings,
        segment_seconds: float,
    ) -> None:
        self.path = path
        self.part = path.with_name(path.name + PART_SUFFIX)
        self.index = index
        self.slot = slot
        self.origin = origin  # media time of the file's time 0
        self.started_at = started_at
        self.kinds = kinds
        self.settings = settings
        self.frames = dict.fromkeys(kinds, 0)
        self.end = origin  # media time of the end of the last frame written
        self.error: str | None = None
        self._next_pts: dict[str, int] = dict.fromkeys(kinds, 0)
        self._segment_seconds = segment_seconds
        self._container: Any = None
        self._streams: dict[str, Any] = {}
        self.video_size: tuple[int, int] | None = None
        # Audio that arrives before the segment's first picture waits (briefly) for it, so that
        # the picture size can follow the camera's shape.
        self._waiting: list[tuple[str, Any, float]] = []

    def _open(self, video_size: tuple[int, int]) -> None:
        s = self.settings
        self.part.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.part), mode="w", format="webm")
        self._container = container
        for kind in self.kinds:
            stream: Any
            if kind == "video":
                stream = container.add_stream("libvpx", rate=s.fps)
                stream.width, stream.height = video_size
                stream.pix_fmt = "yuv420p"
                stream.bit_rate = s.video_bitrate
                stream.codec_context.time_base = fractions.Fraction(1, 1000)
                stream.codec_context.gop_size = s.gop(self._segment_seconds)
                stream.codec_context.thread_count = 1
                stream.codec_context.options = dict(s.vp8_options)
                self.video_size = video_size
            else:
                stream = container.add_stream("libopus", rate=48_000)
                stream.layout = s.audio_layout
                stream.bit_rate = s.audio_bitrate
                stream.codec_context.options = {"application": "voip"}
            self._streams[kind] = stream

    def write(
        self, kind: str, frame: Any, media_time: float, video_size: tuple[int, int] | None = None
    ) -> bool:
        """Encode one frame at ``media_time``; False if this segment has failed.

        ``video_size``: the picture size to use if this write opens the file and no picture
        has come yet (the peer's latest one); a picture of another size is scaled to it.
        """
        if self.error is not None:
            return False
        try:
            if self._container is None:
                if kind == "video":
                    size = fit_size(frame.width, frame.height, self.settings)
                elif "video" in self.kinds and len(self._waiting) < 25:
                    self._waiting.append((kind, frame, media_time))
                    return True
                else:
                    size = video_size or (self.settings.width, self.settings.height)
                self._open(size)
                waiting, self._waiting = self._waiting, []
                for item in waiting:
                    self._encode(*item)
            self._encode(kind, frame, media_time)
            return True
        except Exception as exc:
            self._fail(exc)
            return False

    def _encode(self, kind: str, frame: Any, media_time: float) -> None:
        rel = media_time - self.origin
        copy: av.VideoFrame | av.AudioFrame
        if kind == "video":
            assert self.video_size is not None
            copy = copy_video_frame(frame, *self.video_size)
            pts = max(round(rel * 1000), self._next_pts[kind])
            copy.pts = pts
            copy.time_base = fractions.Fraction(1, 1000)
            self._next_pts[kind] = pts + 1
            end = media_time + 1 / self.settings.fps
        else:
            copy = copy_audio_frame(frame)
            rate = frame.sample_rate or 48_000
            # A few samples of overlap (jitter) are shifted, a real gap is kept.
            pts = max(round(rel * rate), self._next_pts[kind])
            copy.pts = pts
            copy.time_base = fractions.Fraction(1, rate)
            self._next_pts[kind] = pts + frame.samples
            end = media_time + frame.samples / rate
        for packet in self._streams[kind].encode(copy):
            self._container.mux(packet)
        self.frames[kind] += 1
        self.end = max(self.end, end)

    def close(self, session_id: str, peer_id: str, fsync: bool) -> Segment:
        """Flush the encoders, close, sync, rename and hash; or report why it failed."""
        if self.error is None and self._container is None:
            try:  # only audio came: it waited for a picture that never did
                self._open((self.settings.width, self.settings.height))
                waiting, self._waiting = self._waiting, []
                for item in waiting:
                    self._encode(*item)
            except Exception as exc:
                self._fail(exc)
        if self.error is None:
            try:
                for stream in self._streams.values():
                    for packet in stream.encode(None):
                        self._container.mux(packet)
                self._container.close()
                self._container = None
                if fsync:
                    with self.part.open("rb") as f:
                        os.fsync(f.fileno())
                os.replace(self.part, self.path)
                if fsync:
                    _fsync_dir(self.path.parent)
                digest = sha256_file(self.path)
                size = self.path.stat().st_size
            except Exception as exc:
                self._fail(exc)
        ended_at = self.started_at + timedelta(seconds=max(0.0, self.end - self.origin))
        if self.error is not None:
            return Segment(
                session_id=session_id,
                peer_id=peer_id,
                index=self.index,
                path=self.path,
                sha256="",
                size=0,
                started_at=self.started_at,
                ended_at=ended_at,
                tracks=self.kinds,
                frames=dict(self.frames),
                error=self.error,
            )
        return Segment(
            session_id=session_id,
            peer_id=peer_id,
            index=self.index,
            path=self.path,
            sha256=digest,
            size=size,
            started_at=self.started_at,
            ended_at=ended_at,
            tracks=self.kinds,
            frames=dict(self.frames),
        )

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = f"writing {self.part}: {type(exc).__name__}: {exc}"
            logger.error("segment %s failed: %s", self.path, self.error)
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        for leftover in (self.part, self.path):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _TrackClock:
    base_media: float  # media time of the anchor frame
    base_ts: float  # its (unwrapped) RTP time in seconds
    last_raw: float
    wraps: int = 0
    last_media: float = -math.inf


@dataclass
class RecorderStats:
    frames_received: dict[str, int] = field(default_factory=dict)
    frames_recorded: dict[str, int] = field(default_factory=dict)
    frames_dropped: int = 0  # the encoder queue was full
    frames_late: int = 0  # arrived for a segment already closed, or out of order
    frames_decimated: int = 0  # video above the recording frame rate
    resyncs: int = 0
    segments_written: int = 0
    segment_errors: int = 0
    bytes_written: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "frames_received": dict(self.frames_received),
            "frames_recorded": dict(self.frames_recorded),
            "frames_dropped": self.frames_dropped,
            "frames_late": self.frames_late,
            "frames_decimated": self.frames_decimated,
            "resyncs": self.resyncs,
            "segments_written": self.segments_written,
            "segment_errors": self.segment_errors,
            "bytes_written": self.bytes_written,
        }


_STOP = object()


class PeerRecorder:
    """Records one peer's incoming tracks in its own thread (encoding releases the GIL).

    ``submit`` is called from the event loop for every decoded frame and never blocks; ``emit``
    is called from the recorder's thread for every closed segment, in index order.
    """

    def __init__(
        self,
        session_id: str,
        peer_id: str,
        work_dir: Path,
        *,
        kinds: Iterable[str],
        segment_seconds: float,
        emit: Callable[[Segment], None],
        settings: RecordingSettings | None = None,
        first_index: int = 0,
    ) -> None:
        if segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        self.session_id = check_id(session_id, "session id")
        self.peer_id = check_id(peer_id, "peer id")
        self.work_dir = work_dir
        self.kinds = tuple(k for k in ("video", "audio") if k in set(kinds))
        if not self.kinds:
            raise ValueError("nothing to record")
        self.segment_seconds = segment_seconds
        self.settings = settings or RecordingSettings()
        self.stats = RecorderStats(
            frames_received=dict.fromkeys(self.kinds, 0),
            frames_recorded=dict.fromkeys(self.kinds, 0),
        )
        self._emit = emit
        self._next_index = max(first_index, self._first_free_index())
        per_second = self.settings.fps + 50  # video frames + 20 ms audio frames
        self._queue: queue.Queue[Any] = queue.Queue(
            maxsize=max(16, int(per_second * self.settings.queue_seconds))
        )
        self._anchor_mono: float | None = None
        self._anchor_wall: datetime | None = None
        self._clocks: dict[str, _TrackClock] = {}
        self._last_slot: dict[str, int] = {}
        self._last_arrival = 0.0  # media time (by arrival) of the latest frame handled
        self._open: list[_SegmentFile] = []  # ascending slots
        self._last_video_recorded = -math.inf
        self._closed_slot: int | None = None  # the latest slot closed
        self._video_size: tuple[int, int] | None = None  # of the latest picture, as recorded
        self._thread = threading.Thread(
            target=self._run, name=f"rec-{session_id}/{peer_id}", daemon=True
        )
        self._thread.start()

    @property
    def next_index(self) -> int:
        return self._next_index

    def _first_free_index(self) -> int:
        """Never overwrite: continue after the highest complete segment already on disk."""
        folder = segment_path(self.work_dir, self.session_id, self.peer_id, 0).parent
        highest = -1
        with contextlib.suppress(FileNotFoundError):
            for entry in folder.iterdir():
                stem, suffix = (
                    entry.name[: -len(SEGMENT_SUFFIX)],
                    entry.name[-len(SEGMENT_SUFFIX) :],
                )
                if suffix == SEGMENT_SUFFIX and stem.isdigit():
                    highest = max(highest, int(stem))
        return highest + 1

    # --- called from the event loop -----------------------------------------------------------

    def submit(self, kind: str, frame: Any, frame_time: float | None) -> None:
        """Queue a decoded frame; ``frame_time`` is its RTP time in seconds (``frame.time``)."""
        if kind not in self.kinds:
            return
        self.stats.frames_received[kind] += 1
        try:
            self._queue.put_nowait((kind, frame, frame_time, time.monotonic()))
        except queue.Full:
            self.stats.frames_dropped += 1

    def stop(self, timeout: float = 30.0) -> None:
        """Record what is queued, close and report the open segments, end the thread."""
        if not self._thread.is_alive():
            return
        while True:
            try:
                self._queue.put(_STOP, timeout=0.5)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    return
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error(
                "recorder %s/%s did not stop in %.0f s", self.session_id, self.peer_id, timeout
            )

    # --- the recorder thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.25)
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if item is not None:
                    self._handle(*item)
                self._close_due(idle=self._queue.empty())
        except Exception:
            logger.exception("recorder %s/%s crashed", self.session_id, self.peer_id)
        finally:
            while self._open:
                self._close(self._open.pop(0))

    def _media_time(self, kind: str, frame_time: float | None, arrival: float) -> float:
        assert self._anchor_mono is not None
        by_arrival = arrival - self._anchor_mono
        clock = self._clocks.get(kind)
        if frame_time is None:
            return by_arrival
        if clock is None:
            self._clocks[kind] = _TrackClock(
                base_media=by_arrival, base_ts=frame_time, last_raw=frame_time
            )
            return by_arrival
        wrap = RTP_WRAP_SECONDS[kind]
        if frame_time - clock.last_raw < -wrap / 2:
            clock.wraps += 1
        elif frame_time - clock.last_raw > wrap / 2:
            clock.wraps -= 1  # a reordered frame from before the wrap
        clock.last_raw = frame_time
        ts = frame_time + clock.wraps * wrap
        media = clock.base_media + (ts - clock.base_ts)
        if abs(media - by_arrival) > RESYNC_SECONDS:
            clock.base_media, clock.base_ts = by_arrival, ts
            self.stats.resyncs += 1
            media = by_arrival
        return media

    def _handle(self, kind: str, frame: Any, frame_time: float | None, arrival: float) -> None:
        if self._anchor_mono is None:
            self._anchor_mono = arrival
            self._anchor_wall = datetime.now(UTC) - timedelta(seconds=time.monotonic() - arrival)
        media = self._media_time(kind, frame_time, arrival)
        self._last_arrival = max(self._last_arrival, arrival - self._anchor_mono)
        clock = self._clocks.get(kind)
        if clock is not None:
            if media <= clock.last_media:
                self.stats.frames_late += 1
                return
            clock.last_media = media
        if kind == "video" and media - self._last_video_recorded < 0.8 / self.settings.fps:
            self.stats.frames_decimated += 1
            return
        slot = int(media // self.segment_seconds)
        self._last_slot[kind] = max(slot, self._last_slot.get(kind, slot))
        segment = self._segment_for(slot)
        if segment is None:
            self.stats.frames_late += 1
            return
        if kind == "video":
            self._video_size = fit_size(frame.width, frame.height, self.settings)
        if segment.write(kind, frame, media, self._video_size):
            self.stats.frames_recorded[kind] += 1
            if kind == "video":
                self._last_video_recorded = media
        self._close_due(idle=False)

    def _segment_for(self, slot: int) -> _SegmentFile | None:
        for segment in self._open:
            if segment.slot == slot:
                return segment
        if self._open and slot < self._open[-1].slot:
            return None  # its slot was skipped or closed: too late
        if not self._open and self._closed_slot is not None and slot <= self._closed_slot:
            return None
        assert self._anchor_wall is not None
        origin = slot * self.segment_seconds
        segment = _SegmentFile(
            path=segment_path(self.work_dir, self.session_id, self.peer_id, self._next_index),
            index=self._next_index,
            slot=slot,
            origin=origin,
            started_at=self._anchor_wall + timedelta(seconds=origin),
            kinds=self.kinds,
            settings=self.settings,
            segment_seconds=self.segment_seconds,
        )
        self._next_index += 1
        self._open.append(segment)
        return segment

    def _close_due(self, idle: bool) -> None:
        if not self._open or self._anchor_mono is None:
            return
        # While frames are queued, time is the arrival of the latest one handled, so a backlog
        # does not close slots whose frames are still waiting in the queue.
        now = time.monotonic() - self._anchor_mono if idle else self._last_arrival
        while self._open:
            segment = self._open[0]
            slot_end = (segment.slot + 1) * self.segment_seconds
            passed = all(self._last_slot.get(k, -1) > segment.slot for k in self.kinds)
            if passed or now > slot_end + CLOSE_GRACE_SECONDS:
                self._close(self._open.pop(0))
            else:
                break

    def _close(self, segment: _SegmentFile) -> None:
        self._closed_slot = segment.slot
        result = segment.close(self.session_id, self.peer_id, self.settings.fsync)
        if result.error is None:
            self.stats.segments_written += 1
            self.stats.bytes_written += result.size
        else:
            self.stats.segment_errors += 1
        try:
            self._emit(result)
        except Exception:
            logger.exception("could not report segment %s", result.path)
