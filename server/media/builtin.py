"""The built-in media backend: aiortc in worker processes, recording in WebM segments.

The lead site terminates each room's and each supervisor's media link here (DESIGN.md sections
6 and 9). The main server process only carries signalling (an SDP offer in, an SDP answer out)
and receives a ``Segment`` for every recorded file; peer connections, decoding, the host-feed
relay and the recording encoders all run in worker processes (``server/media/worker.py``,
started with ``spawn``), each with its own event loop.

Sessions are spread over the workers: a new session goes to a worker that has none (started
then, up to ``workers``), else to the one with the fewest peers. All the peers of a session
share a worker, because the host feed and the supervisors' views are relayed between them in
memory. A worker that dies is replaced for the next session that needs
one; the rooms it held get one error ``Segment`` each (the recording stopped there) and must
reconnect.

Wiring, for the signalling routes::

    media = BuiltinMedia(work_dir, on_segment=log_segment)
    await media.start()
    answer = await media.answer(session_id, peer_id, "room", offer)     # {"sdp", "type"}
    await media.set_host_feed(session_id, lead_room_id)
    answer = await media.answer(session_id, sup_id, "supervisor", offer, watch=room_id)
    await media.watch(session_id, sup_id, other_room_id)
    await media.hangup(session_id, peer_id)   # returns once its last segment was reported
    await media.close()                       # the same for everybody

``on_segment`` is awaited once per segment, in index order per peer, never twice, from one task
of the main loop; it must not itself await a ``BuiltinMedia`` method that waits for segments
(``hangup``, ``close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

from server.media.recording import (
    RecordingSettings,
    Segment,
    check_id,
    segment_path,
)
from server.media.worker import UnknownPeer, run_worker

__all__ = [
    "BuiltinMedia",
    "MediaError",
    "MediaWorkerGone",
    "RecordingSettings",
    "Segment",
    "UnknownPeer",
]

logger = logging.getLogger(__name__)

Role = Literal["room", "supervisor"]
CALL_TIMEOUT = 60.0
START_TIMEOUT = 60.0


class MediaError(Exception):
    """The media backend could not do what was asked."""


class MediaWorkerGone(MediaError):
    """The worker process holding the session exited."""


_ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError,
    "UnknownPeer": UnknownPeer,
    "KeyError": UnknownPeer,
    "LookupError": UnknownPeer,
}


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: Connection
    pid: int = 0
    alive: bool = True
    calls: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    ready: asyncio.Future[int] | None = None
    peers: set[tuple[str, str]] = field(default_factory=set)  # rooms being recorded
    members: set[tuple[str, str]] = field(default_factory=set)  # every linked peer (load)
    sessions: set[str] = field(default_factory=set)


class BuiltinMedia:
    """Room and supervisor media links terminated with aiortc, recorded in WebM segments."""

    def __init__(
        self,
        work_dir: Path,
        on_segment: Callable[[Segment], Awaitable[None]],
        segment_seconds: float = 5.0,
        *,
        workers: int | None = None,
        ice_servers: list[Mapping[str, Any]] | None = None,
        settings: RecordingSettings | None = None,
        log_level: int = logging.WARNING,
    ) -> None:
        """``workers``: at most this many worker processes (default: one per CPU, at most 4);
        the first starts with ``start()``, the others when a new session finds every running
        worker busy. ``ice_servers``:
        ``[{"urls": "turn:...", "username": ..., "credential": ...}]``; none by default (the
        lead site must then be reachable directly, which it is on a LAN or with a public IP)."""
        if segment_seconds <= 0:
            raise ValueError("segment_seconds must be positive")
        self.work_dir = Path(work_dir)
        self.segment_seconds = segment_seconds
        self.worker_count = workers if workers is not None else max(1, min(4, os.cpu_count() or 1))
        if self.worker_count < 1:
            raise ValueError("at least one worker")
        self._on_segment = on_segment
        self._config: dict[str, Any] = {
            "work_dir": str(self.work_dir),
            "segment_seconds": segment_seconds,
            "ice_servers": [dict(s) for s in ice_servers or []],
            "settings": settings or RecordingSettings(),
            "log_level": log_level,
        }
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker | None] = [None] * self.worker_count
        self._session_worker: dict[str, _Worker] = {}
        self._call_ids = itertools.count(1)
        self._next_index: dict[tuple[str, str], int] = {}  # next segment index expected per peer
        self._deliveries: asyncio.Queue[Segment | None] | None = None
        self._delivery_task: asyncio.Task[None] | None = None
        self._queued = 0
        self._delivered = 0
        self._delivered_changed: asyncio.Condition | None = None
        self._assigning: asyncio.Lock | None = None  # places one session at a time
        self._started = False
        self._closed = False

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._deliveries = asyncio.Queue()
        self._delivered_changed = asyncio.Condition()
        self._assigning = asyncio.Lock()
        self._delivery_task = asyncio.create_task(self._deliver(), name="media-segments")
        await self._spawn(0)

    async def close(self) -> None:
        """Hang up every link, report every last partial segment, stop the workers."""
        if not self._started or self._closed:
            return
        self._closed = True
        workers = [w for w in self._workers if w is not None and w.alive]
        results = await asyncio.gather(
            *(self._call(w, "close", {}, timeout=CALL_TIMEOUT) for w in workers),
            return_exceptions=True,
        )
        for worker, result in zip(workers, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("media worker %s did not close cleanly: %s", worker.pid, result)
            else:
                worker.peers.clear()  # every room was hung up and its last segment reported
        loop = asyncio.get_running_loop()
        for worker in workers:
            await loop.run_in_executor(None, worker.process.join, 10.0)
            if worker.process.is_alive():
                worker.process.terminate()
                await loop.run_in_executor(None, worker.process.join, 5.0)
            self._lost(worker, f"media worker {worker.pid} did not stop cleanly; recording stopped")
            self._gone(worker, "stopped")
        await self._wait_delivered(self._queued)
        assert self._deliveries is not None and self._delivery_task is not None
        self._deliveries.put_nowait(None)
        await self._delivery_task

    async def __aenter__(self) -> BuiltinMedia:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for CPU accounting)."""
        return [w.pid for w in self._workers if w is not None and w.alive and w.pid]

    # --- the API used by the signalling routes ----------------------------------------------

    async def answer(
        self,
        session_id: str,
        peer_id: str,
        role: Role,
        offer: Mapping[str, str],
        *,
        watch: str | None = None,
        first_index: int | None = None,
    ) -> dict[str, str]:
        """Answer a peer's SDP offer ``{"sdp", "type": "offer"}``; returns the SDP answer.

        A ``room`` must send audio and/or video (recorded) and receives the host feed. A
        ``supervisor`` only receives: the room named by ``watch``, or the host feed. Calling
        again with the same ids replaces the old link (a reconnect); recording goes on with the
        next segment index. ``first_index``: the index the room's next segment must have when
        this process does not know it (after a restart: the number of segments already in the
        session's record); never lower than the index this object already expects.
        """
        check_id(session_id, "session id")
        check_id(peer_id, "peer id")
        if role not in ("room", "supervisor"):
            raise ValueError(f"role must be 'room' or 'supervisor', not {role!r}")
        worker = await self._worker_for(session_id)
        key = (session_id, peer_id)
        result: dict[str, Any] = await self._call(
            worker,
            "answer",
            {
                "session_id": session_id,
                "peer_id": peer_id,
                "role": role,
                "offer": {"sdp": str(offer.get("sdp", "")), "type": str(offer.get("type", ""))},
                "watch": watch,
                "first_index": max(first_index or 0, self._next_index.get(key, 0)),
            },
        )
        worker.members.add(key)
        if role == "room":
            worker.peers.add(key)
            first = int(result["first_index"])
            known = max(first_index or 0, self._next_index.get(key, 0))
            if first > known:
                logger.warning(
                    "%s/%s: segments from #%d on are already on disk; recording from #%d",
                    session_id,
                    peer_id,
                    known,
                    first,
                )
            self._next_index[key] = max(first, known)
        return dict(result["answer"])

    async def hangup(self, session_id: str, peer_id: str) -> None:
        """Close a peer's link; returns after its last segment was passed to ``on_segment``."""
        worker = self._session_worker.get(session_id)
        if worker is None or not worker.alive:
            raise UnknownPeer(f"no peer {peer_id!r} in session {session_id!r}")
        await self._call(worker, "hangup", {"session_id": session_id, "peer_id": peer_id})
        worker.peers.discard((session_id, peer_id))
        worker.members.discard((session_id, peer_id))
        await self._wait_delivered(self._queued)

    async def set_host_feed(self, session_id: str, peer_id: str | None) -> None:
        """Name the room whose audio and video go to every other room (the lead room, 主场).
        ``None`` goes back to the default: the first room that connected."""
        check_id(session_id, "session id")
        worker = await self._worker_for(session_id)
        await self._call(worker, "set_host_feed", {"session_id": session_id, "peer_id": peer_id})

    async def watch(
        self, session_id: str, supervisor_peer_id: str, room_peer_id: str | None
    ) -> None:
        """Switch what a supervisor receives to ``room_peer_id`` (``None``: the host feed)."""
        worker = self._session_worker.get(session_id)
        if worker is None or not worker.alive:
            raise UnknownPeer(f"no peer {supervisor_peer_id!r} in session {session_id!r}")
        await self._call(
            worker,
            "watch",
            {
                "session_id": session_id,
                "supervisor_peer_id": supervisor_peer_id,
                "room_peer_id": room_peer_id,
            },
        )

    async def stats(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{session_id: {peer_id: {...}}}``: role, connection state, frames received /
        recorded / dropped / late, frames sent (host feed or watched room), segments written,
        segment errors, bytes written and received, the worker's pid."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        workers = [w for w in self._workers if w is not None and w.alive]
        for result in await asyncio.gather(*(self._call(w, "stats", {}) for w in workers)):
            for session_id, peers in result.items():
                out.setdefault(session_id, {}).update(peers)
        return out

    def segment_path(self, session_id: str, peer_id: str, index: int) -> Path:
        """Where segment ``index`` of a peer is (or will be) stored."""
        return segment_path(self.work_dir, session_id, peer_id, index)

    # --- workers ------------------------------------------------------------------------------

    async def _spawn(self, slot: int) -> _Worker:
        loop = asyncio.get_running_loop()
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=run_worker,
            args=(child, self._config),
            name=f"bidbridge-media-{slot}",
            daemon=True,
        )
        await loop.run_in_executor(None, process.start)
        child.close()  # the worker holds the only other end: its exit is our EOF
        worker = _Worker(index=slot, process=process, conn=parent)
        worker.ready = loop.create_future()
        self._workers[slot] = worker
        loop.add_reader(parent.fileno(), self._on_readable, worker)
        try:
            worker.pid = await asyncio.wait_for(worker.ready, START_TIMEOUT)
        except BaseException:
            self._gone(worker, "did not start")
            process.terminate()
            raise
        return worker

    async def _worker_for(self, session_id: str) -> _Worker:
        if not self._started or self._closed:
            raise MediaError("the media backend is not running")
        assert self._assigning is not None
        async with self._assigning:  # two first offers of a session must land on one worker
            return await self._place(session_id)

    async def _place(self, session_id: str) -> _Worker:
        worker = self._session_worker.get(session_id)
        if worker is not None and worker.alive:
            return worker
        live = [w for w in self._workers if w is not None and w.alive]
        idle = [w for w in live if not w.members and not w.sessions]
        if idle:
            worker = idle[0]
        elif len(live) < self.worker_count:
            slot = next(i for i, w in enumerate(self._workers) if w is None or not w.alive)
            worker = await self._spawn(slot)
        else:
            worker = min(live, key=lambda w: (len(w.members), len(w.sessions), w.index))
        worker.sessions.add(session_id)
        self._session_worker[session_id] = worker
        return worker

    async def _call(
        self, worker: _Worker, op: str, kwargs: dict[str, Any], timeout: float = CALL_TIMEOUT
    ) -> Any:
        if not worker.alive:
            raise MediaWorkerGone(f"media worker {worker.pid} has exited")
        call_id = next(self._call_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        worker.calls[call_id] = future
        try:
            worker.conn.send((call_id, op, kwargs))
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as exc:
            raise MediaError(f"media worker {worker.pid}: {op} timed out") from exc
        except (OSError, ValueError) as exc:
            if isinstance(exc, ValueError) and worker.alive:
                raise
            raise MediaWorkerGone(f"media worker {worker.pid} has exited") from exc
        finally:
            worker.calls.pop(call_id, None)

    def _on_readable(self, worker: _Worker) -> None:
        try:
            while worker.conn.poll():
                self._on_message(worker, worker.conn.recv())
        except (EOFError, OSError):
            code = worker.process.exitcode
            # its end of the pipe closes when it exits (it may not be reaped yet: no code)
            self._gone(worker, f"exited (code {code})" if code is not None else "exited")

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        tag = message[0]
        if tag == "segment":
            self._accept(message[1])
        elif tag == "result":
            future = worker.calls.get(message[1])
            if future is not None and not future.done():
                future.set_result(message[2])
        elif tag == "error":
            future = worker.calls.get(message[1])
            if future is not None and not future.done():
                error_type = _ERRORS.get(message[2], MediaError)
                future.set_exception(error_type(message[3]))
        elif tag == "peer_gone":
            _, session_id, peer_id, reason = message
            worker.peers.discard((session_id, peer_id))
            worker.members.discard((session_id, peer_id))
            logger.warning("media link %s/%s closed: %s", session_id, peer_id, reason)
        elif tag == "ready":
            if worker.ready is not None and not worker.ready.done():
                worker.ready.set_result(int(message[1]))
        else:
            logger.error("media worker %s sent %r", worker.pid, tag)

    def _gone(self, worker: _Worker, reason: str) -> None:
        """A worker's pipe closed: fail its calls, record the loss of its rooms' recordings."""
        if not worker.alive:
            return
        worker.alive = False
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
        with contextlib.suppress(Exception):
            worker.conn.close()
        error = MediaWorkerGone(f"media worker {worker.pid} {reason}")
        if worker.ready is not None and not worker.ready.done():
            worker.ready.set_exception(error)
        for future in worker.calls.values():
            if not future.done():
                future.set_exception(error)
        if not self._closed:
            logger.error("media worker %s %s", worker.pid, reason)
            self._lost(worker, f"media worker {worker.pid} {reason}; the recording stopped")
        for session_id in worker.sessions:
            if self._session_worker.get(session_id) is worker:
                del self._session_worker[session_id]
        worker.sessions.clear()

    def _lost(self, worker: _Worker, reason: str) -> None:
        """Rooms still recorded by a worker that is gone: one error segment each."""
        now = datetime.now(UTC)
        for session_id, peer_id in sorted(worker.peers):
            index = self._next_index.get((session_id, peer_id), 0)
            self._accept(
                Segment(
                    session_id=session_id,
                    peer_id=peer_id,
                    index=index,
                    path=segment_path(self.work_dir, session_id, peer_id, index),
                    sha256="",
                    size=0,
                    started_at=now,
                    ended_at=now,
                    tracks=(),
                    frames={},
                    error=reason,
                )
            )
        worker.peers.clear()

    # --- delivering segments ------------------------------------------------------------------

    def _accept(self, segment: Segment) -> None:
        """Check the index sequence and queue the segment for ``on_segment``."""
        key = (segment.session_id, segment.peer_id)
        expected = self._next_index.get(key, segment.index)
        if segment.index < expected:
            logger.error("segment %s/%s #%d reported twice: dropped", *key, segment.index)
            return
        for missing in range(expected, segment.index):
            logger.error("segment %s/%s #%d was never reported", *key, missing)
            self._queue(
                Segment(
                    session_id=segment.session_id,
                    peer_id=segment.peer_id,
                    index=missing,
                    path=segment_path(self.work_dir, *key, missing),
                    sha256="",
                    size=0,
                    started_at=segment.started_at,
                    ended_at=segment.started_at,
                    tracks=(),
                    frames={},
                    error="not reported by the media worker",
                )
            )
        self._next_index[key] = segment.index + 1
        self._queue(segment)

    def _queue(self, segment: Segment) -> None:
        assert self._deliveries is not None
        self._queued += 1
        self._deliveries.put_nowait(segment)

    async def _deliver(self) -> None:
        assert self._deliveries is not None and self._delivered_changed is not None
        while True:
            segment = await self._deliveries.get()
            if segment is None:
                return
            try:
                await self._on_segment(segment)
            except Exception:
                logger.exception(
                    "on_segment failed for %s/%s #%d",
                    segment.session_id,
                    segment.peer_id,
                    segment.index,
                )
            self._delivered += 1
            async with self._delivered_changed:
                self._delivered_changed.notify_all()

    async def _wait_delivered(self, count: int) -> None:
        assert self._delivered_changed is not None
        async with self._delivered_changed:
            await self._delivered_changed.wait_for(lambda: self._delivered >= count)
