"""The lead site's server: wires the store, the clock, the identity, the hall and the scheduler."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

from crypto.trust import TrustStore
from server.auth import Principal, Tokens
from server.clock import Clock, SystemClock
from server.domain import evaluation as ev
from server.identity import ServerIdentity
from server.realtime.hall import Hall
from server.scheduler import Scheduler
from server.service import MACHINES, SessionService
from server.store import BlobStore, Store, open_store

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 2 * 1024**3
HUB_KEY: web.AppKey[Hub] = web.AppKey("hub")
FREEZER_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("gc-freezer")
FREEZE_SECONDS = 30.0


@dataclass
class Settings:
    data_dir: Path
    database_url: str | None = None
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    server_id: str = "bidbridge"
    scheduler: bool = True
    media: str = "builtin"
    """The media backend of evaluations: ``builtin`` (aiortc, started on first use) or ``none``."""


@dataclass
class Hub:
    """Everything a request handler needs, in one place."""

    settings: Settings
    store: Store
    blobs: BlobStore
    trust: TrustStore
    identity: ServerIdentity
    tokens: Tokens
    clock: Clock
    sio: socketio.AsyncServer
    hall: Hall
    service: SessionService
    scheduler: Scheduler
    presence: dict[tuple[str, str], int] = field(default_factory=dict)
    decrypting: dict[str, set[str]] = field(default_factory=dict)
    media: Any = None


def token_secret(data_dir: Path) -> bytes:
    """The HMAC key of the bearer tokens, created once per data folder (shared by processes)."""
    path = data_dir / "token.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        tmp.chmod(0o600)
        try:
            tmp.rename(path)  # first writer wins; a second process reads the winner's secret
        except OSError:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()


async def build_hub(
    settings: Settings, *, trust: TrustStore, identity: ServerIdentity, clock: Clock | None = None
) -> Hub:
    clock = clock or SystemClock()
    store = await open_store(settings.database_url, settings.data_dir)
    blobs = BlobStore(settings.data_dir / "blobs")
    tokens = Tokens(token_secret(settings.data_dir))
    sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=[], logger=False)
    hall = Hall(store, tokens, clock)
    sio.register_namespace(hall)
    service = SessionService(store, clock, identity, hall.publish)
    hub = Hub(
        settings=settings,
        store=store,
        blobs=blobs,
        trust=trust,
        identity=identity,
        tokens=tokens,
        clock=clock,
        sio=sio,
        hall=hall,
        service=service,
        scheduler=Scheduler(store, service, clock),
    )
    hall.on_presence = lambda sid, p, joined: presence_changed(hub, sid, p, joined)
    service.on_due_changed = hub.scheduler.wake
    hub.scheduler.after_tick = lambda sid: generate_record_if_due_safe(hub, sid)
    hub.scheduler.hold = lambda sid: bool(hub.decrypting.get(sid))
    if settings.media == "builtin":
        from server.media.link import LazyMedia

        hub.media = LazyMedia(hub)
    return hub


async def presence_changed(hub: Hub, session_id: str, p: Principal, joined: bool) -> None:
    """Hall presence of staff is recorded (rule 6 needs a supervisor signed in)."""
    key = (session_id, p.party_id)
    count = hub.presence.get(key, 0) + (1 if joined else -1)
    hub.presence[key] = max(0, count)
    try:
        row = await hub.store.load_session(session_id)
        if row is None:
            return
        machine = MACHINES[row.kind]
        if p.role == "room":
            if row.kind == "evaluation" and (
                (joined and count == 1) or (not joined and count <= 0)
            ):
                if count <= 0:
                    hub.presence.pop(key, None)
                up = ev.RoomLink(actor=ev.Actor(role="room", id=p.party_id), up=joined)
                await hub.service.execute(session_id, up)
            return
        if joined and count == 1:
            await hub.service.execute(session_id, machine.join(p.role, p.party_id))
        elif not joined and count <= 0:
            hub.presence.pop(key, None)
            await hub.service.execute(session_id, machine.leave(p.role, p.party_id))
    except Exception:  # presence must never break a connection
        log.exception("presence update failed for %s", session_id)


async def forget_presence(hub: Hub) -> None:
    """After a restart nobody is connected: presence recorded before it is cleared."""
    for row in await hub.store.list_sessions():
        machine = MACHINES[row.kind]
        state = machine.state.model_validate(row.snapshot["state"])
        for account, role in state.present.items():
            try:
                await hub.service.execute(row.id, machine.leave(role, account))
            except Exception:
                log.exception("could not clear presence on %s", row.id)
        if row.kind == "evaluation":  # no room is linked right after a start
            for room_id, room in state.rooms.items():
                if room.get("up"):
                    down = ev.RoomLink(actor=ev.Actor(role="room", id=room_id), up=False)
                    try:
                        await hub.service.execute(row.id, down)
                    except Exception:
                        log.exception("could not clear room link on %s", row.id)
        if (
            row.kind == "opening" and state.record_pending
        ):  # a crash came between confirmation close and the record
            await generate_record_if_due_safe(hub, row.id)


async def generate_record_if_due_safe(hub: Hub, session_id: str) -> None:
    """Generate the record when it is due; a failure is logged (retried at the next start or answer)."""
    from server.api.hall import generate_record_if_due

    try:
        await generate_record_if_due(hub, session_id)
    except Exception:
        log.exception("record generation failed on %s", session_id)


def build_app(hub: Hub) -> web.Application:
    import server.api.evaluation  # noqa: F401  (registers the evaluation's routes)
    from server.api.hall import routes
    from server.api.routing import errors_middleware
    from server.api.web import add_static

    app = web.Application(middlewares=[errors_middleware], client_max_size=1024**2)
    app[HUB_KEY] = hub
    hub.sio.attach(app)
    for r in routes.routes:
        app.router.add_route(r.method, r.path, _bind(r))
    add_static(app)

    async def on_startup(app: web.Application) -> None:
        await forget_presence(hub)
        if hub.settings.scheduler:
            hub.scheduler.start()
        app[FREEZER_KEY] = asyncio.get_running_loop().create_task(_freeze_heap(), name="gc-freeze")

    async def on_cleanup(app: web.Application) -> None:
        app[FREEZER_KEY].cancel()
        if hub.media is not None:
            await hub.media.close()
        await hub.scheduler.stop()
        await hub.store.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _freeze_heap() -> None:
    """Move long-lived objects (connections, sessions) out of the collector's way.

    With thousands of hall connections a full collection walks hundreds of thousands of objects
    and stalls fan-out for 100-300 ms; frozen objects are skipped (scripts/bench_hall.py).
    """
    while True:
        gc.collect(1)  # young garbage only: a full pass is the stall this avoids
        gc.freeze()
        await asyncio.sleep(FREEZE_SECONDS)


def _bind(route: Any) -> Any:
    from server.api.hall import dispatch

    async def handler(request: web.Request) -> web.StreamResponse:
        return await dispatch(request, route)

    return handler


async def drain(hub: Hub) -> None:
    """Let in-flight work (decryptions) finish before the process stops."""
    while any(hub.decrypting.values()):
        await asyncio.sleep(0.05)
