"""The server's side of the media link: the built-in backend, started on first use, whose
recorded segments become blobs and ``media_segment`` events (DESIGN.md sections 6 and 8)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from schemas.time import iso
from server.core import Hub
from server.domain import evaluation as ev
from server.media import media_id_for

if TYPE_CHECKING:
    from server.media.builtin import BuiltinMedia, Segment

log = logging.getLogger(__name__)


class LazyMedia:
    """The built-in aiortc backend (a worker process), started when the first room links up."""

    watch_by_subscription = False
    """Watched feeds travel on the watcher's own offer/answer link (``answer``)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._backend: BuiltinMedia | None = None
        self._lock = asyncio.Lock()
        self.segments_recorded = 0
        self.failures: list[str] = []
        self._sessions: dict[str, str] = {}  # media id -> session id
        self._linked: set[tuple[str, str]] = set()  # (media id, peer) answered by this process

    def media_id(self, session_id: str) -> str:
        """The backend's id for a session (its file names allow fewer characters than ours)."""
        mid = media_id_for(session_id)
        self._sessions[mid] = session_id
        return mid

    async def backend(self) -> BuiltinMedia:
        async with self._lock:
            if self._backend is None:
                from server.media.builtin import BuiltinMedia

                work = self.hub.settings.data_dir / "media"
                work.mkdir(parents=True, exist_ok=True)
                backend = BuiltinMedia(work, self._on_segment)
                await backend.start()
                self._backend = backend
            return self._backend

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
        """Answer a room's or a supervisor's offer; the lead room's feed is the host feed."""
        backend = await self.backend()
        mid = self.media_id(session_id)
        if role == "supervisor":
            return await backend.answer(mid, peer_id, "supervisor", offer, watch=watch)
        # After a restart the backend starts counting at 0: go on after what the log holds.
        first = None if (mid, peer_id) in self._linked else recorded
        answer = await backend.answer(mid, peer_id, "room", offer, first_index=first)
        self._linked.add((mid, peer_id))
        if host_feed:
            await backend.set_host_feed(mid, peer_id)
        return answer

    async def _on_segment(self, seg: Segment) -> None:
        """Keep the segment as a blob and put its hash in the session's log as it is written."""
        hub = self.hub
        error = getattr(seg, "error", None)
        sha, size = seg.sha256, seg.size
        if not error:
            blob = await hub.blobs.put_file(seg.path)
            if blob.sha256 != seg.sha256:
                error = f"hash changed between worker and store: {seg.sha256} != {blob.sha256}"
            sha, size = blob.sha256, blob.size
            seg.path.unlink(missing_ok=True)
        cmd = ev.RecordSegment(
            actor=ev.SERVER,
            room_id=seg.peer_id,
            index=seg.index,
            sha256=sha or "0" * 64,
            size=size or 0,
            started_at=iso(seg.started_at),
            ended_at=iso(seg.ended_at),
            error=error,
            backend="builtin",
        )
        session_id = self._sessions.get(seg.session_id, seg.session_id)
        try:
            await hub.service.execute(session_id, cmd)
            self.segments_recorded += 1
        except Exception as exc:
            log.exception("could not record segment %s/%s", seg.peer_id, seg.index)
            self.failures.append(f"{seg.peer_id}#{seg.index}: {exc}")

    async def close(self) -> None:
        if self._backend is not None:
            await self._backend.close()
            self._backend = None
