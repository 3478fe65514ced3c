"""The media worker process: aiortc peer connections, the host feed relay, and the recorders.

``BuiltinMedia`` (``server/media/builtin.py``) starts one or more of these with the ``spawn``
start method, so that decoding, relaying and encoding never run on the main server's event loop
(nor share its GIL). All the peers of one session live in the same worker, because the host feed
and a supervisor's view are relayed between the session's peers in memory (aiortc's
``MediaRelay``).

Protocol, over one duplex ``multiprocessing`` connection (pickled tuples):

main -> worker   ``(call_id, op, kwargs)`` with op in ``answer``, ``hangup``, ``set_host_feed``,
                 ``watch``, ``stats``, ``close``
worker -> main   ``("ready", pid)`` once, when it listens
                 ``("result", call_id, value)`` / ``("error", call_id, kind, message)``
                 ``("segment", Segment)`` whenever a recorder closes a segment
                 ``("peer_gone", session_id, peer_id, reason)`` when a link died on its own

Everything the worker sends goes through one queue and one sender thread, in order: a segment
closed during a hangup is sent before the hangup's result.

Routing (DESIGN.md section 6, live links). A room publishes audio and video (recorded) and
receives the host feed: the named host room's tracks (``set_host_feed``), or, until one is named,
the first room of the session that connected (and is still connected). The host room itself
receives nothing. A supervisor receives the room it watches (``watch``), or the host feed if it
watches none. A room that is received by anyone is encoded once (``EncodedFeed``) and its
packets are relayed to all its receivers; each outgoing track is a ``FeedTrack`` whose source
is switched without renegotiation (``server/media/feeds.py``). A room's decoded tracks go
through ``MediaRelay`` to its recorder and to its ``EncodedFeed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from server.media.feeds import EncodedFeed, FeedTrack
from server.media.recording import PeerRecorder, RecordingSettings, Segment, check_id

logger = logging.getLogger(__name__)

ROLES = ("room", "supervisor")
KINDS = ("audio", "video")
PREFERRED_CODECS = {"audio": "audio/opus", "video": "video/vp8"}


class UnknownPeer(LookupError):
    """The session or the peer is not known to the media backend."""


@dataclass
class Peer:
    session_id: str
    peer_id: str
    role: str
    pc: RTCPeerConnection
    order: int  # when it first linked up (the earliest room is the default host feed)
    incoming: dict[str, MediaStreamTrack] = field(default_factory=dict)
    outgoing: dict[str, FeedTrack] = field(default_factory=dict)
    encoded: dict[str, EncodedFeed] = field(default_factory=dict)  # rooms: feeds made of us
    recorder: PeerRecorder | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    watch: str | None = None  # supervisors: the room watched (None: the host feed)
    connected_at: float = field(default_factory=time.time)
    closing: bool = False


@dataclass
class Session:
    session_id: str
    peers: dict[str, Peer] = field(default_factory=dict)
    host: str | None = None  # named by set_host_feed
    # when each peer first linked up: a room that reconnects keeps its place (default host)
    first_linked: dict[str, int] = field(default_factory=dict)

    def rooms(self) -> list[Peer]:
        return sorted((p for p in self.peers.values() if p.role == "room"), key=lambda p: p.order)

    def host_room(self) -> Peer | None:
        if self.host is not None:
            peer = self.peers.get(self.host)
            return peer if peer is not None and peer.role == "room" else None
        rooms = self.rooms()
        return rooms[0] if rooms else None


class Worker:
    """One worker's state; its methods run on the worker's own event loop."""

    def __init__(
        self,
        outbox: queue.SimpleQueue[Any],
        work_dir: Path,
        segment_seconds: float,
        ice_servers: list[RTCIceServer],
        settings: RecordingSettings,
    ) -> None:
        self.outbox = outbox
        self.work_dir = work_dir
        self.segment_seconds = segment_seconds
        self.ice_servers = ice_servers
        self.settings = settings
        self.sessions: dict[str, Session] = {}
        self.relay = MediaRelay()
        self._order = itertools.count()
        self._closed = False
        # next segment index of every room recorded here, kept across its reconnects (a failed
        # last segment leaves no file for the next recorder to count from)
        self._next_index: dict[tuple[str, str], int] = {}
        # one answer or hangup per peer at a time: two offers of one room must not both record
        self._peer_locks: dict[tuple[str, str], asyncio.Lock] = {}

    # --- operations -------------------------------------------------------------------------

    async def answer(
        self,
        session_id: str,
        peer_id: str,
        role: str,
        offer: dict[str, str],
        watch: str | None = None,
        first_index: int = 0,
    ) -> dict[str, Any]:
        """Returns ``{"answer": {"sdp", "type"}, "first_index": n}`` (n: the index the peer's
        next segment will have; 0 for a room never recorded)."""
        check_id(session_id, "session id")
        check_id(peer_id, "peer id")
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        if not isinstance(offer, dict) or offer.get("type") != "offer" or not offer.get("sdp"):
            raise ValueError('offer must be {"sdp": ..., "type": "offer"}')
        if self._closed:
            raise RuntimeError("the media worker is closing")
        async with self._peer_locks.setdefault((session_id, peer_id), asyncio.Lock()):
            return await self._answer(session_id, peer_id, role, offer, watch, first_index)

    async def _answer(
        self,
        session_id: str,
        peer_id: str,
        role: str,
        offer: dict[str, str],
        watch: str | None,
        first_index: int,
    ) -> dict[str, Any]:
        session = self.sessions.setdefault(session_id, Session(session_id))
        if watch is not None:
            if role != "supervisor":
                raise ValueError("only a supervisor watches a room")
            self._room(session, watch)
        if peer_id in session.peers:  # a reconnect replaces the old link
            await self._drop(session.peers[peer_id], report=False)

        pc = RTCPeerConnection(RTCConfiguration(iceServers=list(self.ice_servers)))
        order = session.first_linked.setdefault(peer_id, next(self._order))
        peer = Peer(session_id, peer_id, role, pc, order=order, watch=watch)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if peer.role == "room" and track.kind in KINDS:
                peer.incoming[track.kind] = track

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed" and not peer.closing:
                logger.warning("%s/%s: media link failed", session_id, peer_id)
                await self._drop(peer, report=True, reason="link failed")

        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
            except Exception as exc:
                raise ValueError(f"the SDP offer cannot be used: {exc}") from exc
            for transceiver in pc.getTransceivers():
                kind = transceiver.kind
                if kind not in KINDS:
                    continue
                capabilities = RTCRtpSender.getCapabilities(kind).codecs
                preferred = [
                    c for c in capabilities if c.mimeType.lower() == PREFERRED_CODECS[kind]
                ]
                rtx = [c for c in capabilities if c.mimeType.lower().endswith("/rtx")]
                if preferred:
                    transceiver.setCodecPreferences(preferred + rtx)
                feed = FeedTrack(kind)
                peer.outgoing[kind] = feed
                transceiver.sender.replaceTrack(feed)
                # a supervisor only receives; a room sends and receives
                transceiver.direction = "sendonly" if role == "supervisor" else "sendrecv"
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)  # aiortc gathers all candidates here
        except Exception:
            await pc.close()
            raise
        if role == "room" and not peer.incoming:
            await pc.close()
            raise ValueError("a room must send audio or video")

        session.peers[peer_id] = peer
        if role == "room":
            peer.recorder = PeerRecorder(
                session_id,
                peer_id,
                self.work_dir,
                kinds=peer.incoming.keys(),
                segment_seconds=self.segment_seconds,
                emit=self._emit_segment,
                settings=self.settings,
                first_index=max(first_index, self._next_index.get((session_id, peer_id), 0)),
            )
            for kind, track in peer.incoming.items():
                proxy = self.relay.subscribe(track, buffered=True)
                peer.pumps.append(asyncio.ensure_future(self._pump(peer, kind, proxy)))
        self._route(session)
        local = pc.localDescription
        return {
            "answer": {"sdp": local.sdp, "type": local.type},
            "first_index": peer.recorder.next_index if peer.recorder is not None else 0,
        }

    async def hangup(self, session_id: str, peer_id: str) -> None:
        async with self._peer_locks.setdefault((session_id, peer_id), asyncio.Lock()):
            session = self.sessions.get(session_id)
            if session is None or peer_id not in session.peers:
                raise UnknownPeer(f"no peer {peer_id!r} in session {session_id!r}")
            await self._drop(session.peers[peer_id], report=False)

    async def set_host_feed(self, session_id: str, peer_id: str | None) -> None:
        if peer_id is not None:
            check_id(peer_id, "peer id")
        session = self.sessions.setdefault(session_id, Session(check_id(session_id, "session id")))
        if (
            peer_id is not None
            and peer_id in session.peers
            and session.peers[peer_id].role != "room"
        ):
            raise ValueError(f"{peer_id!r} is not a room: only a room can be the host feed")
        session.host = peer_id
        self._route(session)

    async def watch(
        self, session_id: str, supervisor_peer_id: str, room_peer_id: str | None
    ) -> None:
        session = self.sessions.get(session_id)
        supervisor = session.peers.get(supervisor_peer_id) if session else None
        if session is None or supervisor is None:
            raise UnknownPeer(f"no peer {supervisor_peer_id!r} in session {session_id!r}")
        if supervisor.role != "supervisor":
            raise ValueError(f"{supervisor_peer_id!r} is not a supervisor")
        if room_peer_id is not None:
            self._room(session, room_peer_id)
        supervisor.watch = room_peer_id
        self._route(session)

    async def stats(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for session in self.sessions.values():
            if not session.peers:
                continue
            host = session.host_room()
            peers: dict[str, dict[str, Any]] = {}
            for peer in session.peers.values():
                entry: dict[str, Any] = {
                    "role": peer.role,
                    "connection": peer.pc.connectionState,
                    "worker_pid": os.getpid(),
                    "host_feed": host is peer,
                    "watching": peer.watch,
                    "feed_from": next(
                        (t.source_peer for t in peer.outgoing.values() if t.source_peer), None
                    ),
                    "frames_sent": {k: t.frames_sent for k, t in peer.outgoing.items()},
                    "bytes_received": 0,
                    "bytes_sent": 0,
                    "packets_received": 0,
                    "packets_lost": 0,
                }
                with contextlib.suppress(Exception):
                    report = await peer.pc.getStats()
                    for stat in report.values():
                        if stat.type == "transport":
                            entry["bytes_received"] += stat.bytesReceived
                            entry["bytes_sent"] += stat.bytesSent
                        elif stat.type == "inbound-rtp":
                            entry["packets_received"] += stat.packetsReceived
                            entry["packets_lost"] += max(0, stat.packetsLost)
                if peer.recorder is not None:
                    entry.update(peer.recorder.stats.as_dict())
                    entry["next_segment_index"] = peer.recorder.next_index
                peers[peer.peer_id] = entry
            out[session.session_id] = peers
        return out

    async def close(self) -> None:
        self._closed = True
        peers = [p for s in self.sessions.values() for p in s.peers.values()]
        await asyncio.gather(*(self._drop(p, report=False) for p in peers))
        self.sessions.clear()

    # --- internals --------------------------------------------------------------------------

    def _room(self, session: Session, peer_id: str) -> Peer:
        peer = session.peers.get(peer_id)
        if peer is None or peer.role != "room":
            raise UnknownPeer(f"no room {peer_id!r} connected in session {session.session_id!r}")
        return peer

    def _route(self, session: Session) -> None:
        """Point every outgoing track at the right room (host feed, or the watched room), and
        stop encoding the rooms nobody receives any more."""
        host = session.host_room()
        for peer in session.peers.values():
            if peer.closing:
                continue
            if peer.role == "supervisor":
                target = session.peers.get(peer.watch) if peer.watch is not None else host
            else:
                target = host if host is not peer else None
            if target is not None and (target.closing or target.role != "room"):
                target = None
            for kind, feed in peer.outgoing.items():
                if target is None or kind not in target.incoming:
                    if feed.source_peer is not None or feed.has_source:
                        feed.set_source(None, None, None)
                    continue
                encoded = self._encoded(target, kind)
                if feed.encoded is encoded and feed.has_source:
                    continue
                feed.set_source(
                    self.relay.subscribe(encoded, buffered=True), target.peer_id, encoded
                )
        in_use = {
            id(feed.encoded)
            for peer in session.peers.values()
            for feed in peer.outgoing.values()
            if feed.encoded is not None
        }
        for room in session.peers.values():
            for kind, encoded in list(room.encoded.items()):
                if id(encoded) not in in_use:
                    encoded.stop()
                    del room.encoded[kind]

    def _encoded(self, room: Peer, kind: str) -> EncodedFeed:
        """The room's track of this kind, encoded once for all its receivers."""
        encoded = room.encoded.get(kind)
        if encoded is None or encoded.readyState != "live":
            source = self.relay.subscribe(room.incoming[kind], buffered=False)
            encoded = EncodedFeed(kind, source, self.settings)
            room.encoded[kind] = encoded
        return encoded

    async def _pump(self, peer: Peer, kind: str, proxy: MediaStreamTrack) -> None:
        """Hand every decoded frame of a room's track to its recorder."""
        recorder = peer.recorder
        assert recorder is not None
        while True:
            try:
                frame = await proxy.recv()
            except MediaStreamError:
                return
            recorder.submit(kind, frame, getattr(frame, "time", None))

    async def _drop(self, peer: Peer, report: bool, reason: str = "") -> None:
        """Close a peer's link, flush its recording, re-route the rest of the session."""
        if peer.closing:
            return
        peer.closing = True
        session = self.sessions.get(peer.session_id)
        if session is not None and session.peers.get(peer.peer_id) is peer:
            del session.peers[peer.peer_id]
            self._route(session)  # nobody is fed from this peer any more
        for feed in peer.outgoing.values():
            feed.stop()
        for encoded in peer.encoded.values():
            encoded.stop()
        peer.encoded.clear()
        await peer.pc.close()
        for task in peer.pumps:
            task.cancel()
        await asyncio.gather(*peer.pumps, return_exceptions=True)
        if peer.recorder is not None:
            # flushing encodes and writes the last partial segment: not on the loop
            await asyncio.get_running_loop().run_in_executor(None, peer.recorder.stop)
            self._next_index[(peer.session_id, peer.peer_id)] = peer.recorder.next_index
        if report:
            self.outbox.put(("peer_gone", peer.session_id, peer.peer_id, reason))

    def _emit_segment(self, segment: Segment) -> None:
        self.outbox.put(("segment", segment))  # thread-safe, keeps the order of the recorder


def _sender(conn: Connection, outbox: queue.SimpleQueue[Any]) -> None:
    while True:
        message = outbox.get()
        if message is None:
            return
        try:
            conn.send(message)
        except (OSError, ValueError):
            return  # the main process is gone


async def _serve(conn: Connection, config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sender = threading.Thread(target=_sender, args=(conn, outbox), name="media-sender", daemon=True)
    sender.start()
    worker = Worker(
        outbox,
        Path(config["work_dir"]),
        float(config["segment_seconds"]),
        [RTCIceServer(**server) for server in config.get("ice_servers", [])],
        config.get("settings") or RecordingSettings(),
    )
    done = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def call(call_id: int, op: str, kwargs: dict[str, Any]) -> None:
        try:
            if op not in ("answer", "hangup", "set_host_feed", "watch", "stats", "close"):
                raise ValueError(f"unknown operation {op!r}")
            value = await getattr(worker, op)(**kwargs)
        except Exception as exc:
            if not isinstance(exc, (ValueError, LookupError)):
                logger.exception("media worker: %s failed", op)
            outbox.put(("error", call_id, type(exc).__name__, str(exc)))
        else:
            outbox.put(("result", call_id, value))
        if op == "close":
            done.set()

    def on_readable() -> None:
        try:
            while conn.poll():
                call_id, op, kwargs = conn.recv()
                task = loop.create_task(call(call_id, op, kwargs))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (EOFError, OSError):
            # the main process went away: flush what we have and stop
            loop.remove_reader(conn.fileno())
            task = loop.create_task(call(-1, "close", {}))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def on_terminate() -> None:
        # multiprocessing terminates daemon workers at the main process's exit: flush first
        task = loop.create_task(call(-1, "close", {}))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_reader(conn.fileno(), on_readable)
    loop.add_signal_handler(signal.SIGTERM, on_terminate)
    outbox.put(("ready", os.getpid()))
    await done.wait()
    with contextlib.suppress(Exception):
        loop.remove_reader(conn.fileno())
    outbox.put(None)
    await loop.run_in_executor(None, sender.join, 10.0)


def run_worker(conn: Connection, config: dict[str, Any]) -> None:
    """Entry point of the worker process (``multiprocessing`` target)."""
    # Ctrl-C reaches the whole process group; the main process decides when the worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=config.get("log_level", logging.WARNING),
        format=f"%(asctime)s media-worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(_serve(conn, config))
    finally:
        conn.close()
