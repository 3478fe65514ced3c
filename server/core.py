"""The running server's core: its settings and the hub of everything a handler needs.

Nothing here knows the routes, the media backends or the server's own work; ``server/app.py``
assembles those around it (dependencies point one way: api, work, media -> core).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

from crypto.trust import TrustStore
from server.auth import Tokens
from server.clock import Clock
from server.identity import ServerIdentity
from server.realtime.coord import Coordination
from server.realtime.fanout import Fanout
from server.realtime.hall import Hall
from server.scheduler import Scheduler
from server.service import SessionService
from server.store import BlobStore, Store

DEFAULT_UPLOAD_LIMIT = 2 * 1024**3
HUB_KEY: web.AppKey[Hub] = web.AppKey("hub")


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
    trust_dir: Path | None = None
    """The trust folder (CA certificates and CRLs), reloaded when it changes and at least every
    ``trust_reload_seconds`` (None: the store given at start stays as it is)."""
    trust_reload_seconds: float = 60.0
    trust_poll_seconds: float = 2.0
    """How often the folder's file names, sizes and times are compared (a cheap stat)."""
    fetch_crls: bool = False
    """Fetch CRLs over HTTP from the certificates' CRL distribution points (cached in the data
    folder, verified against their CA before use)."""


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
    live_trust: Any = None  # server.work.trust_reload.LiveTrust: reloads ``trust``, revocation


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
