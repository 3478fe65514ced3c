"""The lead site's server, assembled: the core, the server's own work, the media backend and the
routes (``server/api/routes.py``), wired together in one place."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

import socketio
from aiohttp import web

from crypto.trust import TrustStore
from server.api.pages import add_static
from server.api.routes import ROUTES
from server.api.routing import ROUTES_KEY, Route, dispatch, errors_middleware
from server.api.shared import OutsideRemit, body_of_lot, remit_of
from server.auth import Principal, Tokens
from server.clock import Clock, SystemClock
from server.core import DEFAULT_UPLOAD_LIMIT, HUB_KEY, Hub, Settings, token_secret
from server.domain.remit import supervises
from server.edge import HANDLER_ARGS, GuardedServer
from server.identity import ServerIdentity
from server.media.janus import JanusMedia
from server.media.link import LazyMedia
from server.media.relay import SubscriptionRelay, apply_answer
from server.realtime.coord import Coordination
from server.realtime.fanout import Fanout
from server.realtime.hall import NAMESPACE, Hall, freeze_heap
from server.scheduler import Scheduler
from server.service import SessionService
from server.signals.facts import after_commit
from server.store import BlobStore, open_store
from server.work.blob_collect import blob_collector
from server.work.outage import heartbeat, recover_from_outage, stopped_cleanly
from server.work.presence import forget_presence, presence_changed, reap_presence
from server.work.record import generate_record_if_due_safe
from server.work.trust_reload import LiveTrust

__all__ = ["DEFAULT_UPLOAD_LIMIT", "Hub", "Settings", "build_app", "build_hub", "drain"]

log = logging.getLogger(__name__)

FREEZER_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("gc-freezer")
FREEZE_SECONDS = 30.0
REAPER_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("presence-reaper")
COLLECTOR_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("blob-collector")
REAP_SECONDS = 3.0
HEARTBEAT_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("heartbeat")


async def build_hub(
    settings: Settings, *, trust: TrustStore, identity: ServerIdentity, clock: Clock | None = None
) -> Hub:
    """The core, with the server's own work hooked in: after a commit (fan-out, then the
    warning signals that are due), after a scheduler tick (the record), on presence changes."""
    clock = clock or SystemClock()
    store = await open_store(settings.database_url, settings.data_dir)
    blobs = BlobStore(settings.data_dir / "blobs")
    tokens = Tokens(token_secret(settings.data_dir))
    # malformed engine.io/socket.io packets are refused before the libraries see them
    sio = GuardedServer(async_mode="aiohttp", cors_allowed_origins=[], logger=False)
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
    hub.live_trust = LiveTrust(hub, settings.trust_dir, fetch=settings.fetch_crls)
    hub.live_trust.install()  # every token checked against the CRLs, as they are reloaded
    hall.on_presence = lambda sid, p, joined: presence_changed(hub, sid, p, joined)
    hall.in_remit = lambda p, lot_id: in_remit_of(hub, p, lot_id)
    service.on_due_changed = hub.scheduler.wake
    hub.scheduler.after_tick = lambda sid: generate_record_if_due_safe(hub, sid)
    hub.scheduler.hold = coord.held
    fanout.on_remote = lambda sid: hub.scheduler.wake()
    if settings.media == "builtin":
        hub.media = LazyMedia(hub)
    elif settings.media == "janus":
        if not settings.janus_url:
            raise ValueError("BIDBRIDGE_MEDIA=janus needs BIDBRIDGE_JANUS_URL")
        hub.media = JanusMedia(hub, settings.janus_url, settings.janus_recordings)
    hub.relay = SubscriptionRelay(
        settings.redis_url if settings.media == "janus" else None,
        settings.instance,
        lambda *args: apply_answer(hub.media, *args),
    )
    return hub


async def in_remit_of(hub: Hub, p: Principal, lot_id: str | None) -> bool:
    """A supervisor follows the live stream only of its remit's sessions; other roles pass."""
    if p.role != "supervisor":
        return True
    try:
        remit = await remit_of(hub, p.party_id)
    except OutsideRemit:  # no such account any more
        return False
    return supervises(remit, await body_of_lot(hub, lot_id))


def _serving(sio: socketio.AsyncServer, session_id: str) -> bool:
    """Has this process a connection in any of ``session_id``'s rooms?"""
    prefix = f"{session_id}|"
    rooms = sio.manager.rooms.get(NAMESPACE, {})
    return any(members and name.startswith(prefix) for name, members in rooms.items() if name)


def build_app(hub: Hub, routes: list[Route] = ROUTES) -> web.Application:
    """The aiohttp application: the route list, the pages, socket.io, start-up and clean-up."""
    app = web.Application(
        middlewares=[errors_middleware], client_max_size=1024**2, handler_args=HANDLER_ARGS
    )
    app[HUB_KEY] = hub
    app[ROUTES_KEY] = routes
    hub.sio.attach(app)
    for r in routes:
        app.router.add_route(r.method, r.path, _bind(r))
    add_static(app)

    async def on_startup(app: web.Application) -> None:
        await hub.coord.start()
        await hub.fanout.start()
        await hub.relay.start()
        await forget_presence(hub)
        await recover_from_outage(hub)  # before the scheduler fires what the outage overran
        await hub.live_trust.reload(force=True)
        hub.live_trust.start()
        if hub.settings.scheduler:
            hub.scheduler.start()
        loop = asyncio.get_running_loop()
        app[FREEZER_KEY] = loop.create_task(_freeze_heap(), name="gc-freeze")
        app[HEARTBEAT_KEY] = loop.create_task(heartbeat(hub), name="heartbeat")
        app[COLLECTOR_KEY] = loop.create_task(blob_collector(hub), name="blob-collector")
        if hub.settings.redis_url:
            app[REAPER_KEY] = loop.create_task(_reaper(hub), name="presence-reaper")

    async def on_cleanup(app: web.Application) -> None:
        app[FREEZER_KEY].cancel()
        app[HEARTBEAT_KEY].cancel()
        app[COLLECTOR_KEY].cancel()
        if REAPER_KEY in app:
            app[REAPER_KEY].cancel()
        await hub.live_trust.stop()
        await hub.relay.close()
        if hub.media is not None:
            await hub.media.close()
        await hub.scheduler.stop()
        await hub.fanout.close()
        await hub.coord.close()
        await stopped_cleanly(hub)
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
        if gc.isenabled():  # off while a pool import runs: a collection now is the stall
            freeze_heap()
        await asyncio.sleep(FREEZE_SECONDS)


def _bind(route: Route) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await dispatch(request, route)

    return handler


async def drain(hub: Hub) -> None:
    """Let in-flight work (decryptions) finish before the process stops."""
    while hub.coord.any_held_here():
        await asyncio.sleep(0.05)
