"""TURN relay credentials for the media links: GET /api/media/turn hands a signed-in room device,
supervisor, expert or host a time-limited username and password for coturn.

The scheme is the "TURN REST API" one that coturn implements with ``use-auth-secret`` and
``static-auth-secret`` (deploy/coturn/turnserver.conf): the server and coturn share a secret, and

    username   = "<expiry as Unix time>:<party id>"
    credential = base64(HMAC-SHA1(secret, username))

coturn recomputes the credential from the username and refuses it once the expiry has passed, so
the server keeps no state and any server process can hand credentials out. The lifetime covers a
working day of evaluation (the allocation is refreshed with the same credentials while the link
lasts); a party asks again for each new link.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel

from server.api.hall import Ctx, routes
from server.domain.errors import refusal

TURN_TTL = timedelta(hours=12)
"""How long handed-out credentials work (a day of evaluation; ``Settings.turn_ttl`` overrides)."""

MEDIA_ROLES = ("room", "supervisor", "expert", "host")

TurnNotConfigured = refusal(
    "TurnNotConfigured",
    "TURN_NOT_CONFIGURED",
    404,
    "本服务器未配置 TURN 中继",
    "no TURN relay is configured on this server",
)


class TurnOut(BaseModel):
    """ICE server entry for a WebRTC peer connection (``RTCIceServer``)."""

    urls: list[str]
    username: str
    credential: str
    ttl: int
    """Seconds the credential stays valid from now."""


def turn_credentials(
    secret: str, party_id: str, now: datetime, ttl: timedelta, urls: Sequence[str]
) -> TurnOut:
    """coturn's time-limited credentials for ``party_id``, valid ``ttl`` from ``now``."""
    expiry = int((now + ttl).timestamp())
    username = f"{expiry}:{party_id}"
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return TurnOut(
        urls=list(urls),
        username=username,
        credential=base64.b64encode(mac).decode("ascii"),
        ttl=int(ttl.total_seconds()),
    )


@routes.route(
    "GET",
    "/api/media/turn",
    "TURN relay credentials for WebRTC (time-limited, coturn's use-auth-secret scheme)",
    response=TurnOut,
    roles=MEDIA_ROLES,
    tag="room",
)
async def media_turn(ctx: Ctx) -> TurnOut:
    settings = ctx.hub.settings
    secret: str | None = getattr(settings, "turn_secret", None)
    urls: Sequence[str] = getattr(settings, "turn_urls", None) or ()
    if not secret or not urls:
        raise TurnNotConfigured()
    ttl = getattr(settings, "turn_ttl", None) or TURN_TTL
    return turn_credentials(secret, ctx.who.party_id, ctx.hub.clock.now(), ttl, urls)
