"""The lead site's server: wires the store, the clock, the identity, the hall and the scheduler."""

from __future__ import annotations

import asyncio
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
from server.realtime.coord import Coordination
from server.realtime.fanout import Fanout
from server.realtime.hall import NAMESPACE, Hall, freeze_heap
from server.scheduler import Scheduler
from server.service import MACHINES, SessionService
from server.store import BlobStore, Store, open_store

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_LIMIT = 2 * 1024**3
HUB_KEY: web.AppKey[Hub] = web.AppKey("hub")
FREEZER_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("gc-freezer")
FREEZE_SECONDS = 30.0
REAPER_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("presence-reaper")
REAP_SECONDS = 3.0


@dataclass
class Settings:
    data_dir: Path
    database_url: str | None = None
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    server_id: str = "bidbridge"
    scheduler: bool = True
    media: str = "builtin"
    """The media backend of evaluations: ``builtin`` (aiortc, started on first use), ``janus``
    (a Janus server at ``janus_url``, see server/media/janus.py) or ``none``."""
    janus_url: str | None = None
    janus_recordings: Path | None = None
    turn_secret: str | None = None
    turn_urls: list[str] = field(default_factory=list)
    redis_url: str | None = None
    """Several processes: Redis for the doorbell, presence and work in flight (None: one process)."""
    instance: str = field(default_factory=lambda: secrets.token_hex(6))
    """This process's name among several (random per start; only used in Redis keys)."""
    trusted_proxies: tuple[str, ...] = ()
    """Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For header names the
    client; from any other peer the header is ignored (the bid-rigging signals record addresses)."""


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
    fanout: Fanout
    coord: Coordination
    media: Any = None
    relay: Any = None  # server.media.relay.SubscriptionRelay: watchers' answers between processes


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
    fanout = Fanout(
        store,
        hall.publish,
        redis_url=settings.redis_url,
        instance=settings.instance,
        serving=lambda session_id: _serving(sio, session_id),
    )
    hall.fanout = fanout
    coord = Coordination(settings.redis_url, settings.instance)

    async def committed(session_id: str, records: list[Any]) -> None:
        await fanout.committed(session_id, records)
        from server.signals.facts import after_commit

        after_commit(hub, session_id, records)  # an evaluation's warnings, once they are due

    service = SessionService(store, clock, identity, committed)
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
        fanout=fanout,
        coord=coord,
    )
    hall.on_presence = lambda sid, p, joined: presence_changed(hub, sid, p, joined)
    service.on_due_changed = hub.scheduler.wake
    hub.scheduler.after_tick = lambda sid: generate_record_if_due_safe(hub, sid)
    hub.scheduler.hold = coord.held
    fanout.on_remote = lambda sid: hub.scheduler.wake()
    if settings.media == "builtin":
        from server.media.link import LazyMedia

        hub.media = LazyMedia(hub)
    elif settings.media == "janus":
        from server.media.janus import JanusMedia

        if not settings.janus_url:
            raise ValueError("BIDBRIDGE_MEDIA=janus needs BIDBRIDGE_JANUS_URL")
        hub.media = JanusMedia(hub, settings.janus_url, settings.janus_recordings)
    from server.media.relay import SubscriptionRelay, apply_answer

    hub.relay = SubscriptionRelay(
        settings.redis_url if settings.media == "janus" else None,
        settings.instance,
        lambda *args: apply_answer(hub.media, *args),
    )
    return hub


def _serving(sio: socketio.AsyncServer, session_id: str) -> bool:
    """Has this process a connection in any of ``session_id``'s rooms?"""
    prefix = f"{session_id}|"
    rooms = sio.manager.rooms.get(NAMESPACE, {})
    return any(members and name.startswith(prefix) for name, members in rooms.items() if name)


async def presence_changed(hub: Hub, session_id: str, p: Principal, joined: bool) -> None:
    """Hall presence of staff is recorded (rule 6 needs a supervisor signed in).

    Connections are counted over all processes (server.realtime.coord): the first one records
    the arrival, the last one to go the departure.
    """
    try:
        if joined:
            count = await hub.coord.joined(session_id, p.role, p.party_id)
        else:
            count = await hub.coord.left(session_id, p.role, p.party_id)
        if (joined and count == 1) or (not joined and count == 0):
            await _record_presence(hub, session_id, p.role, p.party_id, joined)
    except Exception:  # presence must never break a connection
        log.exception("presence update failed for %s", session_id)


async def _record_presence(hub: Hub, session_id: str, role: str, party: str, up: bool) -> None:
    row = await hub.store.load_session(session_id)
    if row is None:
        return
    machine = MACHINES[row.kind]
    if role == "room":
        if row.kind == "evaluation":
            link = ev.RoomLink(actor=ev.Actor(role="room", id=party), up=up)
            await hub.service.execute(session_id, link)
        return
    command = machine.join(role, party) if up else machine.leave(role, party)
    await hub.service.execute(session_id, command)


async def reap_presence(hub: Hub) -> None:
    """Record the departures a dead process left behind (several processes only)."""
    for session_id, role, party in await hub.coord.reap():
        try:
            await _record_presence(hub, session_id, role, party, False)
        except Exception:
            log.exception("could not record a departure on %s", session_id)


async def forget_presence(hub: Hub) -> None:
    """After a restart nobody is connected here: presence recorded before is cleared, unless
    another live process still holds a connection of that party."""
    for row in await hub.store.list_sessions():
        machine = MACHINES[row.kind]
        state = machine.state.model_validate(row.snapshot["state"])
        for account, role in state.present.items():
            if await hub.coord.total(row.id, role, account) > 0:
                continue
            try:
                await hub.service.execute(row.id, machine.leave(role, account))
            except Exception:
                log.exception("could not clear presence on %s", row.id)
        if row.kind == "evaluation":  # no room is linked right after a start
            for room_id, room in state.rooms.items():
                if room.get("up") and await hub.coord.total(row.id, "room", room_id) == 0:
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
    """Generate the record when it is due; a failure is logged (retried at the next start or answer).
    Then raise the warning signals the record now supports (after the opening table, again after
    the record); a failure there is logged too."""
    from server.api.hall import generate_record_if_due
    from server.signals.facts import raise_signals_safe

    try:
        await generate_record_if_due(hub, session_id)
    except Exception:
        log.exception("record generation failed on %s", session_id)
    await raise_signals_safe(hub, session_id)


def build_app(hub: Hub) -> web.Application:
    import server.api.evaluation  # registers the evaluation's routes
    import server.api.turn  # noqa: F401  (registers GET /api/media/turn)
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
        await hub.coord.start()
        await hub.fanout.start()
        await hub.relay.start()
        await forget_presence(hub)
        if hub.settings.scheduler:
            hub.scheduler.start()
        loop = asyncio.get_running_loop()
        app[FREEZER_KEY] = loop.create_task(_freeze_heap(), name="gc-freeze")
        if hub.settings.redis_url:
            app[REAPER_KEY] = loop.create_task(_reaper(hub), name="presence-reaper")

    async def on_cleanup(app: web.Application) -> None:
        app[FREEZER_KEY].cancel()
        if REAPER_KEY in app:
            app[REAPER_KEY].cancel()
        await hub.relay.close()
        if hub.media is not None:
            await hub.media.close()
        await hub.scheduler.stop()
        await hub.fanout.close()
        await hub.coord.close()
        await hub.store.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _reaper(hub: Hub) -> None:
    while True:
        await asyncio.sleep(REAP_SECONDS)
        await reap_presence(hub)


async def _freeze_heap() -> None:
    """Move long-lived objects (connections, sessions) out of the collector's way.

    With thousands of hall connections a full collection walks hundreds of thousands of objects
    and stalls fan-out for 100-300 ms; frozen objects are skipped (scripts/bench_hall.py).
    """
    while True:
        freeze_heap()
        await asyncio.sleep(FREEZE_SECONDS)


def _bind(route: Any) -> Any:
    from server.api.hall import dispatch

    async def handler(request: web.Request) -> web.StreamResponse:
        return await dispatch(request, route)

    return handler


async def drain(hub: Hub) -> None:
    """Let in-flight work (decryptions) finish before the process stops."""
    while hub.coord.any_held_here():
        await asyncio.sleep(0.05)
