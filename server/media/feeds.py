"""Outgoing feeds of the media worker: one encode per relayed room, packets relayed to every peer.

aiortc encodes once per sender: a host feed sent to seven rooms would be encoded seven times
(about a tenth of a core each at 640x480). Instead, ``EncodedFeed`` encodes a room's decoded
track once (VP8 or Opus) and ``MediaRelay`` hands the same packets to every ``FeedTrack``; the
RTP senders then only packetize them (aiortc sends ``av.Packet`` items as they are).

What is given up: per-receiver bitrate adaptation (every receiver gets the same 600 kb/s), and
answers to a receiver's picture-loss request (aiortc keeps those internal). Instead a key frame
comes every ``KEYFRAME_SECONDS`` and whenever a peer starts receiving a feed, and lost packets are
still retransmitted on NACK by aiortc.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import time
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.packet import Packet

from server.media.recording import (
    RecordingSettings,
    copy_audio_frame,
    copy_video_frame,
    fit_size,
)

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
AUDIO_RATE = 48_000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
KEYFRAME_SECONDS = 3.0


class _Switchable(MediaStreamTrack):
    """A track that reads from another one and can be stopped while waiting on it.

    (Stopping a ``MediaRelay`` proxy does not wake a ``recv`` waiting on it, so the wait runs as
    a task that ``stop`` or a source switch cancels.)
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._pending: asyncio.Future[Any] | None = None

    async def _read(self, source: MediaStreamTrack) -> tuple[bool, Any]:
        """(True, item), or (False, None) if the read was cancelled by a switch or the source
        ended; raises ``CancelledError`` only if the caller itself was cancelled."""
        pending = asyncio.ensure_future(source.recv())
        self._pending = pending
        try:
            await asyncio.wait([pending])
        except asyncio.CancelledError:
            pending.cancel()
            raise
        finally:
            self._pending = None
        if pending.cancelled() or pending.exception() is not None:
            return False, None
        return True, pending.result()

    def _interrupt(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


class EncodedFeed(_Switchable):
    """A room's decoded track, encoded once for all its receivers; yields ``av.Packet``.

    Timestamps are the feed's own (wall clock for video, a sample count for audio), so they
    never jump when the room behind it reconnects.
    """

    def __init__(self, kind: str, source: MediaStreamTrack, settings: RecordingSettings) -> None:
        super().__init__(kind)
        self.settings = settings
        self.frames_encoded = 0
        self._source = source
        self._codec: Any = None
        self._keyframe = True
        self._packets: collections.deque[Packet[Any]] = collections.deque()
        self._t0: float | None = None
        self._last_pts = -1
        self._samples = 0

    def request_keyframe(self) -> None:
        self._keyframe = True

    async def recv(self) -> Packet[Any]:
        loop = asyncio.get_running_loop()
        while not self._packets:
            if self.readyState != "live":
                raise MediaStreamError
            ok, frame = await self._read(self._source)
            if not ok:
                self.stop()
                raise MediaStreamError
            packets = await loop.run_in_executor(None, self._encode, frame)
            self._packets.extend(packets)
        return self._packets.popleft()

    def stop(self) -> None:
        self._source.stop()
        self._interrupt()
        super().stop()

    def _encode(self, frame: Any) -> list[Packet[Any]]:
        # The decoded frame is shared with the recorder and other readers, and encoding rewrites
        # its timestamps: encode a copy.
        if self.kind == "video":
            return self._encode_video(frame)
        return self._encode_audio(frame)

    def _encode_video(self, frame: av.VideoFrame) -> list[Packet[Any]]:
        s = self.settings
        size = fit_size(frame.width, frame.height, s)
        if self._codec is not None and (self._codec.width, self._codec.height) != size:
            self._codec = None  # the camera changed its picture: start a new stream
        if self._codec is None:
            codec = av.CodecContext.create("libvpx", "w")
            codec.width, codec.height = size
            codec.pix_fmt = "yuv420p"
            codec.bit_rate = s.video_bitrate
            codec.time_base = VIDEO_TIME_BASE
            codec.framerate = fractions.Fraction(s.fps, 1)
            codec.gop_size = round(KEYFRAME_SECONDS * s.fps)
            codec.thread_count = 1
            codec.options = dict(s.vp8_options)
            self._codec = codec
        copy = copy_video_frame(frame, *size)
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        pts = max(round((now - self._t0) * 90_000), self._last_pts + 1)
        self._last_pts = pts
        copy.pts = pts
        copy.time_base = VIDEO_TIME_BASE
        if self._keyframe:
            copy.pict_type = av.video.frame.PictureType.I
            self._keyframe = False
        packets = list(self._codec.encode(copy))
        for packet in packets:
            packet.time_base = VIDEO_TIME_BASE
        self.frames_encoded += 1
        return packets

    def _encode_audio(self, frame: av.AudioFrame) -> list[Packet[Any]]:
        if self._codec is None:
            codec = av.CodecContext.create("libopus", "w")
            codec.sample_rate = AUDIO_RATE
            codec.layout = "stereo"
            codec.format = "s16"
            codec.bit_rate = 64_000
            codec.time_base = AUDIO_TIME_BASE
            codec.options = {"application": "voip"}
            self._codec = codec
        copy = copy_audio_frame(frame)
        copy.pts = self._samples
        copy.time_base = fractions.Fraction(1, frame.sample_rate or AUDIO_RATE)
        self._samples += frame.samples
        packets = list(self._codec.encode(copy))
        for packet in packets:
            packet.time_base = AUDIO_TIME_BASE
        self.frames_encoded += 1
        return packets


class FeedTrack(_Switchable):
    """What a peer receives: the packets of whichever ``EncodedFeed`` it is switched to.

    aiortc's sender stops for good when its track raises ``MediaStreamError``; this track
    instead waits (sending nothing) while it has no source or its source ended. After a switch
    it starts on a key frame.
    """

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.source_peer: str | None = None
        self.encoded: EncodedFeed | None = None
        self.frames_sent = 0
        self._source: MediaStreamTrack | None = None
        self._need_keyframe = False
        self._asked_at = -1e9
        self._changed = asyncio.Event()

    @property
    def has_source(self) -> bool:
        return self._source is not None

    def set_source(
        self, track: MediaStreamTrack | None, peer_id: str | None, encoded: EncodedFeed | None
    ) -> None:
        old = self._source
        self._source = track
        self.source_peer = peer_id
        self.encoded = encoded
        if old is not None and old is not track:
            old.stop()
        # a receiver joining mid-stream starts at a key frame, asked for at its first read
        self._need_keyframe = encoded is not None and self.kind == "video"
        self._asked_at = -1e9
        self._interrupt()  # a recv() waiting on the old source moves to the new one
        self._changed.set()

    async def recv(self) -> Any:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source = self._source
            if source is None or source.readyState != "live":
                if source is not None and self._source is source:
                    self.set_source(None, None, None)  # it ended: wait for a new one
                self._changed.clear()
                await self._changed.wait()
                continue
            if self._need_keyframe and self.encoded is not None:
                now = time.monotonic()
                if now - self._asked_at > 1.0:
                    self.encoded.request_keyframe()
                    self._asked_at = now
            ok, item = await self._read(source)
            if not ok:
                continue
            if self._need_keyframe:
                if not getattr(item, "is_keyframe", True):
                    continue  # a decoder cannot start here
                self._need_keyframe = False
            self.frames_sent += 1
            return item

    def stop(self) -> None:
        if self._source is not None:
            self._source.stop()
            self._source = None
        self._interrupt()
        super().stop()
        self._changed.set()
