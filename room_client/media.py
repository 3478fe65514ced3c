"""The evaluation room's (and a supervisor's) live media link to the lead site, over aiortc.

``RoomMedia`` is what the room device (评标室终端) runs: it publishes the room's camera and
microphone to the lead site and receives the session's host feed (the lead room's picture and
sound) on the same peer connection (``sendrecv`` transceivers). ``SupervisorMedia`` is receive-only:
a supervisor (监管) watches whichever room the lead site routes to it.

Sources, chosen by a string so that the CLI and the tests can name them:

``synthetic``
    Generated 640x480 video at 15 fps (moving diagonal stripes, a bouncing box, the room's label
    and a frame counter with the media time drawn in) and a 48 kHz sine tone that beeps once a
    second. Paced in real time, timestamps from the media clock.
``file:PATH``
    A media file, decoded and re-encoded by aiortc, looped forever. aiortc's own
    ``MediaPlayer(loop=True)`` restarts the timestamps at every loop (and then stops pacing), so
    the file is read here with PyAV and re-timed so that time never goes backwards.
``clip:PATH``
    A WebM/Matroska file that already holds VP8 video and/or Opus audio: its packets are sent
    as they are, looped and re-timed, with no decoding or encoding (a cheap sender for load tests).
``v4l2:/dev/video0``, ``alsa:default``, ``avfoundation:0``, ``dshow:...``
    A capture device through aiortc's ``MediaPlayer`` (video devices are asked for 640x480 at
    15 fps). The FFmpeg inside the PyAV wheel reads v4l2 and ALSA on Linux (not PulseAudio
    directly: ``alsa:default`` goes through PulseAudio or PipeWire where they are set up).

Several sources may be joined with ``+`` (``v4l2:/dev/video0+alsa:default``): the first source
that has video gives the video, the first that has audio gives the audio.

Signalling is not this module's business: ``connect`` takes an async callable that carries the
offer (``{"sdp", "type"}``) to the lead site and returns its answer. ICE gathering completes
before the offer is sent (no trickle). This module never imports ``server`` (DESIGN.md section 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import struct
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

logger = logging.getLogger(__name__)

VIDEO_WIDTH = 640
VIDEO_HEIGHT = 480
VIDEO_FPS = 15
VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48_000
AUDIO_SAMPLES = 960  # 20 ms, what Opus over RTP uses
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)

# A late track (a busy machine) catches up by sending frames back to back; once it is this far
# behind it skips ahead instead, so that its media clock stays the wall clock.
MAX_LAG_SECONDS = 0.5

Signal = Callable[[dict[str, str]], Awaitable[dict[str, str]]]
FrameCallback = Callable[[str, Any], None]  # (kind, decoded frame)

DEVICE_FORMATS = ("v4l2", "alsa", "pulse", "avfoundation", "dshow", "x11grab", "jack", "oss")


# --- a 5x7 bitmap font, enough for labels and counters ------------------------------------------

_FONT: dict[str, tuple[int, ...]] = {
    "0": (0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E),
    "1": (0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "2": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F),
    "3": (0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E),
    "4": (0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02),
    "5": (0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E),
    "6": (0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E),
    "7": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08),
    "8": (0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E),
    "9": (0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C),
    "A": (0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "B": (0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E),
    "C": (0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E),
    "D": (0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C),
    "E": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F),
    "F": (0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10),
    "G": (0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F),
    "H": (0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11),
    "I": (0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E),
    "J": (0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C),
    "K": (0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11),
    "L": (0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F),
    "M": (0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11),
    "N": (0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11),
    "O": (0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "P": (0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10),
    "Q": (0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D),
    "R": (0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11),
    "S": (0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E),
    "T": (0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04),
    "U": (0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E),
    "V": (0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04),
    "W": (0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A),
    "X": (0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11),
    "Y": (0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04),
    "Z": (0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F),
    " ": (0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00),
    "-": (0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00),
    ":": (0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00),
    ".": (0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C),
    "#": (0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A),
    "_": (0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F),
    "/": (0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00),
    "?": (0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04),
}
_GLYPH_ROWS = 7
_GLYPH_COLS = 5


class _TextRenderer:
    """Renders upper-case text into rows of 8-bit luma, each font pixel a ``scale`` square."""

    def __init__(self, scale: int, ink: int = 235, paper: int = 16) -> None:
        self.scale = scale
        self.cell = (_GLYPH_COLS + 1) * scale
        # (char, glyph row) -> the bytes of one pixel row of that glyph, spacing column included
        self._rows: dict[tuple[str, int], bytes] = {}
        for char, rows in _FONT.items():
            for r, bits in enumerate(rows):
                pixels = bytearray()
                for c in range(_GLYPH_COLS):
                    on = bits & (1 << (_GLYPH_COLS - 1 - c))
                    pixels += bytes([ink if on else paper]) * scale
                pixels += bytes([paper]) * scale
                self._rows[(char, r)] = bytes(pixels)

    def render(self, text: str) -> list[bytes]:
        """One ``bytes`` per pixel row (7 x scale rows), ``len(text) * cell`` pixels wide."""
        chars = [c if c in _FONT else "?" for c in text.upper()]
        out: list[bytes] = []
        for r in range(_GLYPH_ROWS):
            row = b"".join(self._rows[(c, r)] for c in chars)
            out.extend([row] * self.scale)
        return out


def _paste(plane: bytearray, stride: int, x: int, y: int, rows: Sequence[bytes]) -> None:
    for i, row in enumerate(rows):
        start = (y + i) * stride + x
        plane[start : start + len(row)] = row


class _PacedTrack(MediaStreamTrack):
    """A generated track paced by the wall clock: frame ``n`` is due ``n * seconds / frames``
    seconds after the first; a track more than ``MAX_LAG_SECONDS`` behind skips the frames it
    missed (counted in ``frames_skipped``) instead of sending them in a burst."""

    def __init__(self) -> None:
        super().__init__()
        self.frames_sent = 0
        self.frames_skipped = 0
        self._index = 0
        self._start: float | None = None

    async def _next_index(self, frames: int, seconds: int = 1) -> int:
        """Wait until the next frame is due (``frames`` every ``seconds``); return its index."""
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            self._index += 1
            due = self._start + self._index * seconds / frames
            if now - due > MAX_LAG_SECONDS:
                skip = int((now - due) * frames / seconds)
                self._index += skip
                self.frames_skipped += skip
            else:
                await asyncio.sleep(max(0.0, due - now))
        return self._index


class SyntheticVideoTrack(_PacedTrack):
    """640x480 video at 15 fps drawn without numpy: moving stripes, a bouncing box, a label and
    a frame counter. Paced by the wall clock; pts in the 90 kHz RTP clock."""

    kind = "video"

    def __init__(
        self,
        label: str = "room",
        width: int = VIDEO_WIDTH,
        height: int = VIDEO_HEIGHT,
        fps: int = VIDEO_FPS,
    ) -> None:
        super().__init__()
        if width % 2 or height % 2 or width < 160 or height < 120:
            raise ValueError("width and height must be even and at least 160x120")
        self.width = width
        self.height = height
        self.fps = fps
        self.label = label
        # A triangle wave 16..235, long enough to cut any row out of it at any phase.
        period = 256
        wave = bytes(
            16 + abs((i % period) - period // 2) * 219 // (period // 2) for i in range(period)
        )
        self._period = period
        self._wave = wave * (width // period + 2)
        self._box = 96 if height >= 240 else 32
        self._box_row = bytes([235]) * self._box
        self._big = _TextRenderer(scale=4 if width >= 640 else 2)
        self._small = _TextRenderer(scale=2 if width >= 640 else 1)
        self._label_rows = self._big.render(label[: max(1, (width - 16) // self._big.cell)])
        # Chroma: a tint per label, so that rooms are told apart at a glance.
        tint = zlib.crc32(label.encode())
        self._u = bytes([96 + tint % 64]) * ((width // 2) * (height // 2))
        self._v = bytes([96 + (tint >> 8) % 64]) * ((width // 2) * (height // 2))

    async def recv(self) -> Frame:
        index = await self._next_index(self.fps)
        frame = self.draw(index)
        frame.pts = index * VIDEO_CLOCK_RATE // self.fps
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame

    def draw(self, index: int) -> av.VideoFrame:
        """The picture of frame ``index`` (its timestamps are left for the caller)."""
        w, h = self.width, self.height
        frame = av.VideoFrame(w, h, "yuv420p")
        y_plane, u_plane, v_plane = frame.planes
        stride = y_plane.line_size
        pad = b"\x10" * (stride - w)
        shift = (index * 4) % self._period
        wave = self._wave
        luma = bytearray(
            b"".join(
                wave[(shift + y) % self._period : (shift + y) % self._period + w] + pad
                for y in range(h)
            )
        )
        # a box bouncing around the picture
        box = self._box
        span_x, span_y = w - box, h - box - 80
        bx = abs((index * 7) % (2 * span_x) - span_x)
        by = 80 + abs((index * 5) % (2 * span_y) - span_y)
        _paste(luma, stride, bx, by, [self._box_row] * box)
        # the label and the counter, on dark bands
        _paste(luma, stride, 8, 8, self._label_rows)
        seconds = index / self.fps
        counter = f"#{index:06d} {int(seconds // 3600):02d}:{int(seconds // 60) % 60:02d}:{seconds % 60:04.1f}"
        _paste(luma, stride, 8, 8 + len(self._label_rows) + 8, self._small.render(counter))
        y_plane.update(bytes(luma))
        for plane, data in ((u_plane, self._u), (v_plane, self._v)):
            if plane.line_size == w // 2:
                plane.update(data)
            else:  # pragma: no cover - padded chroma rows (not seen with FFmpeg 6/7)
                row = data[: w // 2] + b"\x80" * (plane.line_size - w // 2)
                plane.update(row * (h // 2))
        return frame


class SyntheticAudioTrack(_PacedTrack):
    """A 48 kHz mono sine tone in 20 ms frames that beeps (800 ms on, 200 ms off) once a second.

    The tone is a multiple of 50 Hz, so one 20 ms frame holds whole periods and is computed once.
    """

    kind = "audio"

    def __init__(self, label: str = "room", frequency: int | None = None) -> None:
        super().__init__()
        if frequency is None:
            frequency = 400 + 50 * (zlib.crc32(label.encode()) % 13)  # 400..1000 Hz
        if frequency % 50:
            raise ValueError("the tone must be a multiple of 50 Hz")
        self.frequency = frequency
        amplitude = 0.25 * 32767
        self._tone = struct.pack(
            f"<{AUDIO_SAMPLES}h",
            *(
                round(amplitude * math.sin(2 * math.pi * frequency * n / AUDIO_RATE))
                for n in range(AUDIO_SAMPLES)
            ),
        )
        self._silence = bytes(2 * AUDIO_SAMPLES)

    async def recv(self) -> Frame:
        index = await self._next_index(AUDIO_RATE, AUDIO_SAMPLES)
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        per_second = AUDIO_RATE // AUDIO_SAMPLES
        frame.planes[0].update(self._tone if index % per_second < 40 else self._silence)
        frame.pts = index * AUDIO_SAMPLES
        frame.sample_rate = AUDIO_RATE
        frame.time_base = AUDIO_TIME_BASE
        self.frames_sent += 1
        return frame


# --- a media file, looped and re-timed ----------------------------------------------------------


class FileTrack(MediaStreamTrack):
    """One stream (audio or video) of a media file, looped forever and paced in real time.

    A reader thread demuxes (and, unless ``decode`` is false, decodes) the file; each item's
    timestamp is shifted by the length of the loops before it, so time never goes backwards.
    With ``decode=False`` the track yields PyAV packets, which aiortc sends without re-encoding
    (VP8 and Opus only).
    """

    READ_AHEAD = 32  # items queued ahead of the sender

    def __init__(self, path: str | Path, kind: str, *, decode: bool = True) -> None:
        super().__init__()
        if kind not in ("audio", "video"):
            raise ValueError(f"unknown track kind {kind!r}")
        self.kind = kind
        self.path = Path(path)
        self.decode = decode
        self.frames_sent = 0
        self._queue: asyncio.Queue[Frame | Packet[Any] | BaseException] = asyncio.Queue()
        self._slots = threading.Semaphore(self.READ_AHEAD)
        self._quit = threading.Event()
        self._thread: threading.Thread | None = None
        self._start: float | None = None
        with av.open(str(self.path)) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            if not streams:
                raise ValueError(f"{self.path} has no {kind} stream")
            if not decode and streams[0].codec_context.name not in ("vp8", "opus"):
                raise ValueError(
                    f"clip: sends packets as they are, so the {kind} must be VP8 or Opus"
                )

    async def recv(self) -> Frame | Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._thread is None:
            loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._read, args=(loop,), name=f"file-{self.kind}", daemon=True
            )
            self._thread.start()
        item = await self._queue.get()
        self._slots.release()
        if isinstance(item, BaseException):
            self.stop()
            raise MediaStreamError(str(item))
        assert item.pts is not None and item.time_base is not None
        at = float(item.pts * item.time_base)
        now = time.monotonic()
        if self._start is None:
            self._start = now - at
        elif now - (self._start + at) > MAX_LAG_SECONDS:
            self._start = now - at  # fell behind: resume from here, not in a burst
        else:
            await asyncio.sleep(max(0.0, self._start + at - now))
        self.frames_sent += 1
        return item

    def stop(self) -> None:
        super().stop()
        self._quit.set()
        with contextlib.suppress(ValueError):
            self._slots.release()  # unblock a reader waiting for room

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            for item in self._items():
                while not self._slots.acquire(timeout=0.2):
                    if self._quit.is_set():
                        return
                if self._quit.is_set():
                    return
                loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except Exception as exc:
            logger.warning("FileTrack(%s) stopped: %s", self.path, exc)
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(self._queue.put_nowait, exc)

    def _items(self) -> Iterator[Frame | Packet[Any]]:
        offset = 0.0  # seconds added to this loop's timestamps
        while not self._quit.is_set():
            end = offset
            first: float | None = None
            produced = 0
            with av.open(str(self.path)) as container:
                stream: Any = (
                    container.streams.video[0]
                    if self.kind == "video"
                    else container.streams.audio[0]
                )
                items = (
                    self._decoded(container, stream)
                    if self.decode
                    else self._packets(container, stream)
                )
                for item, at, duration in items:
                    if self._quit.is_set():
                        return
                    if first is None:
                        first = at
                    t = offset + (at - first)
                    if isinstance(item, Packet) and item.time_base is not None:
                        tb = fractions.Fraction(
                            item.time_base.numerator, item.time_base.denominator
                        )
                    else:
                        tb = VIDEO_TIME_BASE if self.kind == "video" else AUDIO_TIME_BASE
                    item.pts = round(t / tb)
                    item.time_base = tb
                    if isinstance(item, Packet):
                        item.dts = item.pts
                    end = max(end, t + duration)
                    produced += 1
                    yield item
            if produced == 0:
                raise ValueError(f"{self.path}: no {self.kind} to play")
            offset = end

    def _decoded(
        self, container: Any, stream: Any
    ) -> Iterator[tuple[Frame | Packet[Any], float, float]]:
        if self.kind == "video":
            rate = float(stream.average_rate or VIDEO_FPS)
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    continue
                yield frame, float(frame.pts * frame.time_base), 1 / rate
        else:
            resampler = av.AudioResampler(
                format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=AUDIO_SAMPLES
            )
            samples = 0
            # audio is re-timed by counting samples: one file's frames are contiguous
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    at = samples / AUDIO_RATE
                    out.pts = samples
                    out.time_base = AUDIO_TIME_BASE
                    samples += out.samples
                    yield out, at, out.samples / AUDIO_RATE

    def _packets(
        self, container: Any, stream: Any
    ) -> Iterator[tuple[Frame | Packet[Any], float, float]]:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None or packet.time_base is None:
                continue
            duration = float(packet.duration * packet.time_base) if packet.duration else 0.0
            if not duration:
                duration = 1 / VIDEO_FPS if self.kind == "video" else AUDIO_SAMPLES / AUDIO_RATE
            yield packet, float(packet.pts * packet.time_base), duration


# --- opening a source ---------------------------------------------------------------------------


@dataclass
class MediaSource:
    """The tracks a room publishes, and how to release them."""

    video: MediaStreamTrack | None = None
    audio: MediaStreamTrack | None = None
    players: list[MediaPlayer] = field(default_factory=list)

    def stop(self) -> None:
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()


def open_source(spec: str, label: str = "room") -> MediaSource:
    """Open the tracks named by ``spec`` (see the module docstring)."""
    source = MediaSource()
    for part in spec.split("+"):
        part = part.strip()
        kind, _, arg = part.partition(":")
        video: MediaStreamTrack | None = None
        audio: MediaStreamTrack | None = None
        if kind == "synthetic":
            video, audio = SyntheticVideoTrack(label), SyntheticAudioTrack(label)
        elif kind in ("file", "clip"):
            if not arg:
                raise ValueError(f"{kind}: needs a path ({kind}:PATH)")
            with av.open(arg) as container:
                has_video = bool(container.streams.video)
                has_audio = bool(container.streams.audio)
            decode = kind == "file"
            video = FileTrack(arg, "video", decode=decode) if has_video else None
            audio = FileTrack(arg, "audio", decode=decode) if has_audio else None
        elif kind in DEVICE_FORMATS:
            if not arg:
                raise ValueError(f"{kind}: needs a device ({kind}:DEVICE)")
            options: dict[str, str] = {}
            if kind in ("v4l2", "avfoundation", "dshow", "x11grab"):
                options = {
                    "video_size": f"{VIDEO_WIDTH}x{VIDEO_HEIGHT}",
                    "framerate": str(VIDEO_FPS),
                }
            player = MediaPlayer(arg, format=kind, options=options)
            source.players.append(player)
            video, audio = player.video, player.audio
        else:
            raise ValueError(
                f"unknown media source {part!r}: use synthetic, file:PATH, clip:PATH or a device "
                f"such as v4l2:/dev/video0 or alsa:default"
            )
        if source.video is None and video is not None:
            source.video = video
        elif video is not None:
            video.stop()
        if source.audio is None and audio is not None:
            source.audio = audio
        elif audio is not None:
            audio.stop()
    if source.video is None and source.audio is None:
        raise ValueError(f"media source {spec!r} has neither audio nor video")
    return source


# --- the peer connection ------------------------------------------------------------------------


def _prefer(transceiver: RTCRtpTransceiver, mime_types: Sequence[str]) -> None:
    """Offer only these codecs (and their retransmission), so the CPU cost is known."""
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind)
    wanted = [c for c in capabilities.codecs if c.mimeType.lower() in mime_types]
    wanted += [c for c in capabilities.codecs if c.mimeType.lower().endswith("/rtx")]
    transceiver.setCodecPreferences(wanted)


class _PeerMedia:
    """What a room and a supervisor share: one peer connection, frames counted as they arrive."""

    def __init__(
        self,
        *,
        ice_servers: Sequence[RTCIceServer] = (),
        on_frame: FrameCallback | None = None,
    ) -> None:
        # An explicit empty list: aiortc's default would ask a public STUN server.
        self._configuration = RTCConfiguration(iceServers=list(ice_servers))
        self._on_frame = on_frame
        self.pc: RTCPeerConnection | None = None
        self.frames_received: dict[str, int] = {"audio": 0, "video": 0}
        self.last_video_size: tuple[int, int] | None = None
        self._consumers: list[asyncio.Task[None]] = []
        self._connected = asyncio.Event()
        self._failed = asyncio.Event()
        self._frame_arrived = asyncio.Event()

    def _new_pc(self) -> RTCPeerConnection:
        if self.pc is not None:
            raise RuntimeError("already connected; close() first")
        pc = RTCPeerConnection(self._configuration)
        self.pc = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._consumers.append(asyncio.ensure_future(self._consume(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self._connected.set()
            elif pc.connectionState in ("failed", "closed"):
                self._failed.set()

        return pc

    async def _negotiate(self, pc: RTCPeerConnection, signal: Signal) -> None:
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)  # aiortc returns once ICE gathering is complete
        local = pc.localDescription
        answer = await signal({"sdp": local.sdp, "type": local.type})
        if answer.get("type") != "answer" or not answer.get("sdp"):
            raise ValueError("the lead site did not return an SDP answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))

    async def _consume(self, track: MediaStreamTrack) -> None:
        kind = track.kind
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames_received[kind] = self.frames_received.get(kind, 0) + 1
            if isinstance(frame, av.VideoFrame):
                self.last_video_size = (frame.width, frame.height)
            self._frame_arrived.set()
            if self._on_frame is not None:
                self._on_frame(kind, frame)

    async def wait_connected(self, timeout: float = 20.0) -> None:
        """Wait until ICE and DTLS are up; raise ``ConnectionError`` if the link failed."""
        _, pending = await asyncio.wait(
            [
                asyncio.ensure_future(self._connected.wait()),
                asyncio.ensure_future(self._failed.wait()),
            ],
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in pending:
            task.cancel()
        if not self._connected.is_set():
            state = self.pc.connectionState if self.pc else "closed"
            raise ConnectionError(f"media link not connected (state {state})")

    async def wait_for_frames(
        self, kind: str = "video", count: int = 1, timeout: float = 20.0
    ) -> int:
        """Wait until ``count`` frames of ``kind`` have arrived; return the count (raise
        ``TimeoutError`` if they do not come)."""
        deadline = time.monotonic() + timeout
        while self.frames_received.get(kind, 0) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.frames_received.get(kind, 0)} of {count} {kind} frames")
            self._frame_arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._frame_arrived.wait(), timeout=min(remaining, 1.0))
        return self.frames_received[kind]

    @property
    def connection_state(self) -> str:
        return self.pc.connectionState if self.pc is not None else "new"

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        self._consumers.clear()


class RoomMedia(_PeerMedia):
    """An evaluation room's link: publishes its camera and microphone, receives the host feed."""

    def __init__(
        self,
        source: str = "synthetic",
        *,
        label: str = "room",
        ice_servers: Sequence[RTCIceServer] = (),
        on_frame: FrameCallback | None = None,
    ) -> None:
        super().__init__(ice_servers=ice_servers, on_frame=on_frame)
        self.source_spec = source
        self.label = label
        self.source: MediaSource | None = None

    async def connect(self, signal: Signal) -> None:
        """Open the source, offer audio and video both ways, and apply the lead site's answer."""
        self.source = open_source(self.source_spec, self.label)
        pc = self._new_pc()
        try:
            for kind, mime in (("audio", "audio/opus"), ("video", "video/vp8")):
                track = getattr(self.source, kind)
                if track is not None:
                    transceiver = pc.addTransceiver(track, direction="sendrecv")
                else:  # still receive the host feed's track of this kind
                    transceiver = pc.addTransceiver(kind, direction="recvonly")
                _prefer(transceiver, [mime])
            await self._negotiate(pc, signal)
        except BaseException:
            await self.close()
            raise

    @property
    def frames_sent(self) -> dict[str, int]:
        sent: dict[str, int] = {}
        if self.source is not None:
            for kind in ("audio", "video"):
                track = getattr(self.source, kind)
                sent[kind] = int(getattr(track, "frames_sent", 0)) if track is not None else 0
        return sent

    async def close(self) -> None:
        await super().close()
        if self.source is not None:
            self.source.stop()


class SupervisorMedia(_PeerMedia):
    """A supervisor's receive-only link: the lead site sends the feed of the room being watched."""

    async def connect(self, signal: Signal) -> None:
        pc = self._new_pc()
        try:
            for kind, mime in (("audio", "audio/opus"), ("video", "video/vp8")):
                _prefer(pc.addTransceiver(kind, direction="recvonly"), [mime])
            await self._negotiate(pc, signal)
        except BaseException:
            await self.close()
            raise


Subscribe = Callable[[], Awaitable[dict[str, str]]]
"""Ask the server for a feed: returns ``{"subscription", "sdp", "type": "offer"}``."""
AnswerSubscription = Callable[[str, dict[str, str]], Awaitable[Any]]
"""Hand the answer back: (subscription id, ``{"sdp", "type": "answer"}``)."""


class SubscriberMedia(_PeerMedia):
    """A receive-only link through a media server (Janus) that makes the offer itself: a
    secondary room receiving the host feed, or a supervisor watching a room."""

    subscription: str | None = None

    async def connect(self, subscribe: Subscribe, answer: AnswerSubscription) -> None:
        offer = await subscribe()
        if offer.get("type") != "offer" or not offer.get("sdp") or not offer.get("subscription"):
            raise ValueError("the server did not offer the feed / 服务器未提供画面")
        pc = self._new_pc()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())  # ICE gathered on return
            local = pc.localDescription
            self.subscription = str(offer["subscription"])
            await answer(self.subscription, {"sdp": local.sdp, "type": local.type})
        except BaseException:
            await self.close()
            raise
