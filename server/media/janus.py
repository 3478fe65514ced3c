"""The Janus media backend: rooms publish into a Janus VideoRoom, Janus records them, and the
recordings become blobs and ``media_segment`` events (DESIGN.md sections 6, 8 and 9).

Janus (Debian package ``janus``, VideoRoom plugin) forwards packets without decoding them, so it
costs a fraction of the built-in aiortc backend per room (``scripts/bench_janus.py``). The server
is Janus's only API client: it speaks Janus's JSON API over one WebSocket per server process and
relays SDP between the parties and Janus; the parties reach Janus only over ICE/DTLS-SRTP.

Signalling
    *Publishing.* A room device sends its offer to the offer route exactly as with the built-in
    backend; the server joins it to the session's VideoRoom as a publisher (``joinandconfigure``
    with the offer) and returns Janus's answer. The room's receive transceivers stay silent on
    that connection (Janus answers ``recvonly``).

    *Watching.* Janus 1.1 makes every subscription's offer itself ("only publishers send
    offers"), so a watcher takes two steps: ``subscribe`` returns Janus's offer with a
    subscription id, and ``start_subscription`` hands the party's answer back. Supervisors watch
    a room this way, and secondary rooms receive the host feed (the lead room's feed) this way.
    ``answer`` with ``role="supervisor"`` is refused with a ``ValueError`` that says so.

Recording (全程留痕)
    The session's VideoRoom is created with ``rec_dir`` (a folder Janus and the server share).
    Each publisher records with ``record: true`` and a file name of its own, and every
    ``rotate_seconds`` (10 s by default) the server switches the publisher to the next name
    (Janus 1.1 ignores a new name while recording, so this is ``record: false`` then
    ``record: true`` with the new name: the packets of the few milliseconds between the two
    requests are not recorded). Janus writes each dump as ``<name>-audio-0.mjr`` and
    ``<name>-video-1.mjr`` (``.mjr.tmp`` until it closes them). Each closed pair is turned by
    ``janus-pp-rec`` into a VP8 WebM and an Opus track *without transcoding*, the two are joined
    into one WebM/Matroska file (packets copied, not decoded), and the file is stored as a blob
    whose SHA-256 and size go into the session's log as a ``RecordSegment`` command, the same
    command the built-in backend issues. The dumps are deleted once their segment is recorded.

    The audit trail therefore looks like the built-in backend's, with longer segments: per room,
    ``media_segment`` events with indices 0, 1, 2, ... (continuing after what the log holds when a
    room links up again), each naming one WebM file of about ``rotate_seconds`` and the wall-clock
    instants at which the server asked Janus to start and to end it. Because a dump is converted
    only once Janus has closed it, a segment's event enters the log ``rotate_seconds`` plus the
    conversion time (well under a second) after its first packet. The first and the last
    segment of a link are partial; a last slot in which nothing was recorded (the room hung up
    just after a rotation) is not a segment, and the next link takes its index. A segment's
    video plays from its first key frame (janus-pp-rec skips what comes before it). A dump that
    cannot be converted is recorded as a segment with its ``error``, never skipped, so a gap in
    the recording is visible in the log.

Several server processes
    Rooms, publishers and subscriptions live in Janus, named by the session (``media_id``) and
    the party (a publisher's ``display`` is its room id), so any process can find a room's feed.
    A publisher's recording is rotated and converted by the process that answered its offer; a
    subscription's two steps must reach the same process (the nginx configuration keeps a client
    on one server by address), otherwise the second step is refused and the party starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp

from schemas.time import iso
from server.core import Hub
from server.domain import evaluation as ev
from server.media import media_id_for

log = logging.getLogger(__name__)

ROTATE_SECONDS = 10.0
"""How long one recording segment lasts before the publisher is switched to the next file."""

REQUEST_TIMEOUT = 20.0
KEEPALIVE_SECONDS = 25.0  # Janus drops a session after 60 s without a message (janus.jcfg)
CLOSE_WAIT_SECONDS = 10.0  # how long a closed dump may take to appear as .mjr
PUBLISHERS_PER_ROOM = 32


class JanusError(Exception):
    """Janus refused a request (its own error code and reason)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code
        self.reason = reason


# VideoRoom error codes this module acts on (janus_videoroom.c).
ROOM_EXISTS = 427
NO_SUCH_ROOM = 426
NO_SUCH_FEED = 428


class JanusSession:
    """One WebSocket to Janus's API and one Janus session on it; plugin handles are attached to
    it. Replies and events are matched to requests by ``transaction``; what comes unasked
    (``webrtcup``, ``hangup``, a publisher leaving) goes to ``on_event``."""

    def __init__(self, url: str, on_event: Callable[[dict[str, Any]], None]) -> None:
        self.url = url
        self.on_event = on_event
        self.session_id: int | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self.closed = asyncio.Event()

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()
        try:
            self._ws = await self._http.ws_connect(
                self.url, protocols=("janus-protocol",), heartbeat=None, max_msg_size=0
            )
        except BaseException:
            await self._http.close()
            raise
        self._tasks.append(asyncio.ensure_future(self._read()))
        reply = await self.call({"janus": "create"})
        self.session_id = int(reply["data"]["id"])
        self._tasks.append(asyncio.ensure_future(self._keepalive()))

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                body = msg.json()
                queue = self._pending.get(str(body.get("transaction", "")))
                if queue is not None:
                    queue.put_nowait(body)
                elif body.get("janus") not in ("ack", "keepalive"):
                    try:
                        self.on_event(body)
                    except Exception:
                        log.exception("Janus event handler failed on %s", body.get("janus"))
        finally:
            self.closed.set()
            for queue in self._pending.values():
                queue.put_nowait({"janus": "error", "error": {"code": 0, "reason": "closed"}})

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_SECONDS)
            with contextlib.suppress(Exception):
                await self.call({"janus": "keepalive"})

    async def call(self, body: dict[str, Any], *, event: bool = False) -> dict[str, Any]:
        """Send one API message; return the reply (or, with ``event``, the plugin's event that
        follows Janus's ``ack``). Raise ``JanusError`` when Janus or the plugin refuses."""
        if self._ws is None or self.closed.is_set():
            raise ConnectionError("not connected to Janus / 未连接到 Janus 媒体服务器")
        transaction = f"{self._prefix}-{next(self._ids)}"
        message = {**body, "transaction": transaction}
        if self.session_id is not None and body.get("janus") != "create":
            message["session_id"] = self.session_id
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending[transaction] = queue
        try:
            await self._ws.send_json(message)
            async with asyncio.timeout(REQUEST_TIMEOUT):
                while True:
                    reply = await queue.get()
                    kind = reply.get("janus")
                    if kind == "error":
                        err = reply.get("error", {})
                        raise JanusError(int(err.get("code", 0)), str(err.get("reason", "")))
                    if kind == "ack" and event:
                        continue  # the plugin's event follows
                    _plugin_error(reply)
                    return reply
        finally:
            del self._pending[transaction]

    async def attach(self) -> int:
        reply = await self.call({"janus": "attach", "plugin": "janus.plugin.videoroom"})
        return int(reply["data"]["id"])

    async def detach(self, handle: int) -> None:
        with contextlib.suppress(JanusError, ConnectionError, TimeoutError):
            await self.call({"janus": "detach", "handle_id": handle})

    async def request(self, handle: int, body: dict[str, Any]) -> dict[str, Any]:
        """A synchronous VideoRoom request (``create``, ``listparticipants``, ...)."""
        reply = await self.call({"janus": "message", "handle_id": handle, "body": body})
        return dict(reply.get("plugindata", {}).get("data", {}))

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """An asynchronous VideoRoom request (``join``, ``configure``, ``start``): the plugin's
        event and the SDP it carries, if any."""
        message: dict[str, Any] = {"janus": "message", "handle_id": handle, "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        reply = await self.call(message, event=True)
        return dict(reply.get("plugindata", {}).get("data", {})), reply.get("jsep")

    async def negotiate(
        self,
        handle: int,
        body: dict[str, Any],
        videoroom: str,
        sdp_type: str,
        failure: str,
        offer_sdp: str | None = None,
    ) -> dict[str, Any]:
        """A request on a new ``handle`` whose event must be ``videoroom`` and carry an SDP of
        ``sdp_type`` (returned); otherwise (or if it raises) the handle is detached and the error
        raised (``failure``: what Janus did not do)."""
        offer = None if offer_sdp is None else {"type": "offer", "sdp": offer_sdp}
        try:
            data, jsep = await self.message(handle, body, offer)
        except BaseException:
            await self.detach(handle)
            raise
        if data.get("videoroom") != videoroom or not jsep or jsep.get("type") != sdp_type:
            await self.detach(handle)
            raise ValueError(f"Janus {failure}: {data}"[:300])
        return jsep

    async def close(self) -> None:
        if self._ws is not None and not self.closed.is_set() and self.session_id is not None:
            with contextlib.suppress(Exception):
                await self.call({"janus": "destroy"})
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()


def _plugin_error(reply: dict[str, Any]) -> None:
    data = reply.get("plugindata", {}).get("data", {})
    if isinstance(data, dict) and "error_code" in data:
        raise JanusError(int(data["error_code"]), str(data.get("error", "")))


@dataclass
class SegmentFile:
    """One closed recording segment of one publisher, ready to be converted."""

    room_id: str
    index: int
    base: Path  # <rec_dir>/<name>; Janus adds -audio-N.mjr / -video-N.mjr
    started_at: datetime
    ended_at: datetime
    last: bool = False  # the link's last segment (it may be empty)


@dataclass
class Publisher:
    """A room's feed in the session's VideoRoom, and its recording."""

    session_id: str
    media_id: str
    room_id: str
    handle: int
    feed: str
    index: int
    base: Path
    started_at: datetime
    closed: bool = False
    # held while the recording is switched to the next file or closed, so that a rotation and
    # the end of the link never interleave
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queue: asyncio.Queue[SegmentFile | None] = field(default_factory=asyncio.Queue)
    converting: asyncio.Task[None] | None = None
    rotating: asyncio.Task[None] | None = None


@dataclass
class Subscription:
    owner: str  # the party that asked for it
    media_id: str
    handle: int
    watch: str  # the room whose feed it carries


class JanusMedia:
    """The Janus backend, with the interface of ``LazyMedia`` (``answer``, ``media_id``,
    ``close``) plus the two steps of a subscription (``subscribe``, ``start_subscription``)."""

    watch_by_subscription = True
    """Watching takes Janus's offer (``subscribe``), not the watcher's."""

    def __init__(
        self,
        hub: Hub,
        url: str,
        rec_dir: Path | None = None,
        *,
        rotate_seconds: float = ROTATE_SECONDS,
        pp_rec: str = "janus-pp-rec",
    ) -> None:
        self.hub = hub
        self.url = url
        self.rec_dir = rec_dir or hub.settings.data_dir / "recordings"
        self.rotate_seconds = rotate_seconds
        self.pp_rec = pp_rec
        self.segments_recorded = 0
        self.failures: list[str] = []
        self._janus: JanusSession | None = None
        self._lock = asyncio.Lock()
        self._rooms: set[str] = set()
        self._sessions: dict[str, str] = {}  # media id -> session id
        self._publishers: dict[tuple[str, str], Publisher] = {}  # (media id, room id)
        self._by_handle: dict[int, Publisher] = {}
        self._next_index: dict[tuple[str, str], int] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._subscription_handles: dict[int, str] = {}  # Janus handle -> subscription id
        self._converting: set[asyncio.Task[None]] = set()
        self._last_converting: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._watch: asyncio.Task[None] | None = None

    def media_id(self, session_id: str) -> str:
        """Janus's room name for a session (file names allow fewer characters than ours)."""
        mid = media_id_for(session_id)
        self._sessions[mid] = session_id
        return mid

    # --- the connection to Janus ------------------------------------------------------------------

    async def janus(self) -> JanusSession:
        async with self._lock:
            if self._janus is None or self._janus.closed.is_set():
                if self.pp_rec and shutil.which(self.pp_rec) is None:
                    raise RuntimeError(f"{self.pp_rec} not found (Debian package janus-tools)")
                self.rec_dir.mkdir(parents=True, exist_ok=True)
                session = JanusSession(self.url, self._on_event)
                await session.open()
                self._janus = session
                self._rooms.clear()
                if self._watch is not None:
                    self._watch.cancel()
                self._watch = asyncio.ensure_future(self._when_lost(session))
            return self._janus

    async def _when_lost(self, session: JanusSession) -> None:
        """Janus went away (restart, network): every link of this process is over; what Janus
        wrote of their recordings is converted and recorded."""
        await session.closed.wait()
        for pub in list(self._publishers.values()):
            await self._end(pub, leave=False)

    async def _room(self, janus: JanusSession, mid: str) -> None:
        """Create the session's VideoRoom unless it exists (another process may have made it)."""
        if mid in self._rooms:
            return
        handle = await janus.attach()
        try:
            exists = await janus.request(handle, {"request": "exists", "room": mid})
            if not exists.get("exists"):
                body = {
                    "request": "create",
                    "room": mid,
                    "description": mid[:60],
                    "publishers": PUBLISHERS_PER_ROOM,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "record": False,
                    "rec_dir": str(self.rec_dir),
                    "notify_joining": False,
                }
                try:
                    await janus.request(handle, body)
                except JanusError as exc:
                    if exc.code != ROOM_EXISTS:
                        raise
        finally:
            await janus.detach(handle)
        self._rooms.add(mid)

    async def _participants(self, janus: JanusSession, mid: str) -> list[dict[str, Any]]:
        handle = await janus.attach()
        try:
            data = await janus.request(handle, {"request": "listparticipants", "room": mid})
        finally:
            await janus.detach(handle)
        return list(data.get("participants", []))

    # --- publishing and recording -------------------------------------------------------------------

    async def answer(
        self,
        session_id: str,
        peer_id: str,
        role: str,
        offer: dict[str, Any],
        watch: str | None = None,
        host_feed: bool = False,
        recorded: int = 0,
    ) -> dict[str, Any]:
        """Publish a room's offer into the session's VideoRoom and start recording it."""
        if role != "room":
            raise ValueError(
                "this server's media backend (Janus) sends the offer to watchers: subscribe "
                "first / 本服务器的音视频后端（Janus）由服务器发起观看连接，请先订阅"
            )
        if offer.get("type") != "offer" or not offer.get("sdp"):
            raise ValueError("an SDP offer is needed / 需要 SDP offer")
        janus = await self.janus()
        mid = self.media_id(session_id)
        await self._room(janus, mid)
        key = (mid, peer_id)
        old = self._publishers.get(key)
        if old is not None:
            await self._end(old, leave=True)
        previous = self._last_converting.get(key)
        if previous is not None:  # the last link's segments first, so the indices stay in order
            await asyncio.gather(previous, return_exceptions=True)
        await self._kick_display(janus, mid, peer_id)  # a link left behind by another process
        index = max(recorded, self._next_index.get(key, 0))
        feed = f"{peer_id}-{secrets.token_hex(6)}"
        base = self._base(mid, peer_id, index)
        handle = await janus.attach()
        started = datetime.now(UTC)
        body = {
            "request": "joinandconfigure",
            "ptype": "publisher",
            "room": mid,
            "id": feed,
            "display": peer_id,
            "audio": True,
            "video": True,
            "record": True,
            "filename": base.name,
        }
        jsep = await janus.negotiate(
            handle, body, "joined", "answer", "did not answer the offer", offer["sdp"]
        )
        pub = Publisher(session_id, mid, peer_id, handle, feed, index, base, started)
        self._publishers[key] = pub
        self._by_handle[handle] = pub
        self._next_index[key] = index + 1
        pub.converting = self._task(self._convert_loop(pub))
        self._last_converting[key] = pub.converting
        pub.rotating = asyncio.ensure_future(self._rotate_loop(pub))
        return {"sdp": jsep["sdp"], "type": "answer"}

    def _task(self, coro: Any) -> asyncio.Task[None]:
        """A task that ``close`` waits for (conversions, ends of links)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._converting.add(task)
        task.add_done_callback(self._converting.discard)
        return task

    def _base(self, mid: str, peer_id: str, index: int) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", peer_id)[:60]
        return self.rec_dir / f"{mid}-{safe}-{index:06d}-{secrets.token_hex(3)}"

    async def _kick_display(self, janus: JanusSession, mid: str, peer_id: str) -> None:
        for p in await self._participants(janus, mid):
            if p.get("display") == peer_id:
                handle = await janus.attach()
                try:
                    await janus.request(handle, {"request": "kick", "room": mid, "id": p["id"]})
                except JanusError as exc:
                    if exc.code != NO_SUCH_FEED:
                        raise
                finally:
                    await janus.detach(handle)

    async def _rotate_loop(self, pub: Publisher) -> None:
        """Every ``rotate_seconds``, switch the publisher's recording to the next file."""
        while True:
            await asyncio.sleep(self.rotate_seconds)
            async with pub.lock:
                janus = self._janus
                if pub.closed or janus is None:
                    return
                key = (pub.media_id, pub.room_id)
                index = pub.index + 1
                base = self._base(pub.media_id, pub.room_id, index)
                # Janus 1.1 ignores a new file name while recording: stop, then start the next
                # file (the packets of the few milliseconds in between are not recorded).
                stop = {"request": "configure", "record": False}
                start = {"request": "configure", "record": True, "filename": base.name}
                try:
                    await janus.message(pub.handle, stop)
                    ended = datetime.now(UTC)
                    await janus.message(pub.handle, start)
                except (JanusError, ConnectionError, TimeoutError) as exc:
                    log.warning("could not rotate the recording of %s: %s", pub.room_id, exc)
                    continue
                pub.queue.put_nowait(
                    SegmentFile(pub.room_id, pub.index, pub.base, pub.started_at, ended)
                )
                pub.index, pub.base, pub.started_at = index, base, datetime.now(UTC)
                self._next_index[key] = index + 1

    async def _end(self, pub: Publisher, *, leave: bool) -> None:
        """The link is over (the room hung up or left, or this process closes it): close the
        recording, queue its last segment and wait until it is in the log."""
        async with pub.lock:
            if not pub.closed:
                pub.closed = True
                janus = self._janus
                if leave and janus is not None and not janus.closed.is_set():
                    for body in ({"request": "configure", "record": False}, {"request": "leave"}):
                        with contextlib.suppress(JanusError, ConnectionError, TimeoutError):
                            await janus.message(pub.handle, body)
                ended = datetime.now(UTC)
                pub.queue.put_nowait(
                    SegmentFile(pub.room_id, pub.index, pub.base, pub.started_at, ended, last=True)
                )
                pub.queue.put_nowait(None)
                self._by_handle.pop(pub.handle, None)
                if self._publishers.get((pub.media_id, pub.room_id)) is pub:
                    del self._publishers[(pub.media_id, pub.room_id)]
                if janus is not None:
                    await janus.detach(pub.handle)
                # Janus keeps a watcher's link up, without media, when the feed it carries
                # goes away; ending it here lets the watcher see the link close and subscribe
                # again to the room's next link.
                for sub_id, sub in list(self._subscriptions.items()):
                    if (sub.media_id, sub.watch) == (pub.media_id, pub.room_id):
                        await self.unsubscribe(sub_id)
        if pub.rotating is not None:
            pub.rotating.cancel()
            await asyncio.gather(pub.rotating, return_exceptions=True)
        if pub.converting is not None:
            await asyncio.gather(pub.converting, return_exceptions=True)

    def _on_event(self, body: dict[str, Any]) -> None:
        sender = int(body.get("sender", 0) or 0)
        kind = body.get("janus")
        watching = self._subscription_handles.get(sender)
        if watching is not None and kind in ("hangup", "detached"):  # the watcher went away
            self._task(self.unsubscribe(watching))
            return
        pub = self._by_handle.get(sender)
        if pub is None:
            return
        data = body.get("plugindata", {}).get("data", {})
        gone = kind in ("hangup", "detached") or (
            kind == "event"
            and isinstance(data, dict)
            and (data.get("leaving") == "ok" or data.get("unpublished") == "ok" or "kicked" in data)
        )
        if gone:
            self._task(self._end(pub, leave=False))

    async def _convert_loop(self, pub: Publisher) -> None:
        """Convert the publisher's closed segments in order, one after the other."""
        while True:
            seg = await pub.queue.get()
            if seg is None:
                return
            try:
                await self._record(pub.session_id, seg)
            except Exception as exc:  # never lose the loop: the next segments still count
                log.exception("segment %s#%s", seg.room_id, seg.index)
                self.failures.append(f"{seg.room_id}#{seg.index}: {exc}")

    async def _record(self, session_id: str, seg: SegmentFile) -> None:
        dumps = await self._closed_dumps(seg.base)
        error: str | None = None
        sha, size = "0" * 64, 0
        last = seg.last
        if not dumps:
            if last:  # hung up right after a rotation: nothing was recorded in this slot
                self._unused(session_id, seg)
                return
            error = "Janus wrote no recording for this segment"
        else:
            try:
                path = await self._convert(seg.base, dumps)
            except Exception as exc:
                if last and not _has_media(dumps):
                    _remove(dumps)
                    self._unused(session_id, seg)
                    return
                error = f"conversion failed: {exc}"[:500]
            else:
                blob = await self.hub.blobs.put_file(path)
                sha, size = blob.sha256, blob.size
                path.unlink(missing_ok=True)
                _remove(dumps)
        cmd = ev.RecordSegment(
            actor=ev.SERVER,
            room_id=seg.room_id,
            index=seg.index,
            sha256=sha,
            size=size,
            started_at=iso(seg.started_at),
            ended_at=iso(seg.ended_at),
            error=error,
            backend="janus",
        )
        await self.hub.service.execute(session_id, cmd)
        self.segments_recorded += 1

    def _unused(self, session_id: str, seg: SegmentFile) -> None:
        """A link's empty last slot is not a segment: the next link takes its index."""
        key = (self.media_id(session_id), seg.room_id)
        if self._next_index.get(key) == seg.index + 1:
            self._next_index[key] = seg.index

    async def _closed_dumps(self, base: Path) -> list[Path]:
        """The segment's dumps once Janus has closed them all (no ``.mjr.tmp`` left). A dump
        still open after ``CLOSE_WAIT_SECONDS`` (Janus died while writing it) is taken as it
        is: a .mjr has no trailer, so what was written converts."""
        deadline = asyncio.get_running_loop().time() + CLOSE_WAIT_SECONDS
        while True:
            open_ = sorted(base.parent.glob(f"{base.name}-*.mjr.tmp"))
            done = sorted(base.parent.glob(f"{base.name}-*.mjr"))
            if not open_:
                return done
            if asyncio.get_running_loop().time() > deadline:
                log.warning("recording %s was never closed by Janus", base.name)
                return done + open_
            await asyncio.sleep(0.1)

    async def _convert(self, base: Path, dumps: list[Path]) -> Path:
        """janus-pp-rec per dump (no transcoding), then one WebM with both tracks."""
        with tempfile.TemporaryDirectory(dir=base.parent, prefix=".convert-") as tmp:
            parts: list[Path] = []
            for dump in dumps:
                kind = "video" if "-video-" in dump.name else "audio"
                out = Path(tmp) / (dump.stem + (".webm" if kind == "video" else ".opus"))
                await self._pp_rec(dump, out)
                if out.exists() and out.stat().st_size > 0:
                    parts.append(out)
            if not parts:
                raise RuntimeError("janus-pp-rec produced no file")
            target = base.with_suffix(".webm")
            await asyncio.to_thread(_mux, parts, target)
            return target

    async def _pp_rec(self, dump: Path, out: Path) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.pp_rec,
            "--disable-colors",
            "-d",
            "2",
            str(dump),
            str(out),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            text = output.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise RuntimeError(f"janus-pp-rec {dump.name}: exit {proc.returncode}: {text}")

    # --- watching -----------------------------------------------------------------------------------

    async def subscribe(self, session_id: str, peer_id: str, watch: str) -> dict[str, Any]:
        """Janus's offer of room ``watch``'s feed for ``peer_id`` (a supervisor, or a secondary
        room receiving the host feed); the answer goes to ``start_subscription``."""
        janus = await self.janus()
        mid = self.media_id(session_id)
        await self._room(janus, mid)
        feeds = [
            p["id"]
            for p in await self._participants(janus, mid)
            if p.get("display") == watch and p.get("publisher")
        ]
        if not feeds:
            raise LookupError(f"room {watch} is not linked / 评标室 {watch} 尚未连线")
        handle = await janus.attach()
        body = {
            "request": "join",
            "ptype": "subscriber",
            "room": mid,
            "streams": [{"feed": feeds[-1]}],
        }
        jsep = await janus.negotiate(handle, body, "attached", "offer", "did not offer the feed")
        # one link per watcher and room: a watcher that subscribes again replaces its last one
        for old_id, old in list(self._subscriptions.items()):
            if (old.owner, old.media_id, old.watch) == (peer_id, mid, watch):
                await self.unsubscribe(old_id)
        sub_id = secrets.token_urlsafe(12)
        self._subscriptions[sub_id] = Subscription(peer_id, mid, handle, watch)
        self._subscription_handles[handle] = sub_id
        return {"sdp": jsep["sdp"], "type": "offer", "subscription": sub_id}

    async def start_subscription(
        self, session_id: str, peer_id: str, subscription: str, answer: dict[str, Any]
    ) -> None:
        """Hand the watcher's answer to Janus; the feed starts flowing."""
        sub = self._subscriptions.get(subscription)
        if sub is None or sub.owner != peer_id or sub.media_id != self.media_id(session_id):
            raise LookupError("no such subscription on this server / 本服务器无此订阅，请重新订阅")
        if answer.get("type") != "answer" or not answer.get("sdp"):
            raise ValueError("an SDP answer is needed / 需要 SDP answer")
        janus = await self.janus()
        jsep = {"type": "answer", "sdp": answer["sdp"]}
        data, _ = await janus.message(sub.handle, {"request": "start"}, jsep)
        if data.get("started") != "ok":
            raise ValueError(f"Janus did not start the feed: {data}"[:300])

    async def unsubscribe(self, subscription: str) -> None:
        sub = self._subscriptions.pop(subscription, None)
        if sub is None:
            return
        self._subscription_handles.pop(sub.handle, None)
        if self._janus is not None:
            await self._janus.detach(sub.handle)

    # --- shutting down ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close every recording of this process and put the last segments in the log."""
        for pub in list(self._publishers.values()):
            await self._end(pub, leave=True)
        # links that ended by themselves may still be converting their last segments
        while self._converting:
            await asyncio.gather(*list(self._converting), return_exceptions=True)
        for sub_id in list(self._subscriptions):
            await self.unsubscribe(sub_id)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self._janus is not None:
            await self._janus.close()
            self._janus = None


def _has_media(dumps: list[Path]) -> bool:
    # A .mjr holds a header of a few hundred bytes before its first packet.
    return any(d.stat().st_size > 1024 for d in dumps if d.exists())


def _remove(dumps: list[Path]) -> None:
    for d in dumps:
        d.unlink(missing_ok=True)


def _mux(parts: list[Path], target: Path) -> None:
    """Join janus-pp-rec's outputs into one WebM, copying packets (no decoding)."""
    import av

    inputs = [av.open(str(p)) for p in parts]
    try:
        tmp = target.with_suffix(".part")
        with av.open(str(tmp), "w", format="webm") as out:
            packets: list[tuple[Fraction, int, Any, Any]] = []
            for n, src in enumerate(inputs):
                stream = src.streams[0]
                ostream = out.add_stream_from_template(stream)
                for packet in src.demux(stream):
                    if packet.dts is None or packet.size == 0:
                        continue
                    base = packet.time_base or stream.time_base
                    if base is None:
                        raise ValueError(f"{parts[n].name}: no time base")
                    at = Fraction(packet.dts) * base
                    packets.append((at, n, packet, ostream))
            packets.sort(key=lambda item: (item[0], item[1]))
            for _, _, packet, ostream in packets:
                packet.stream = ostream
                out.mux(packet)
        tmp.rename(target)
    finally:
        for src in inputs:
            src.close()
