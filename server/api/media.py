"""Live links of the evaluation rooms (WebRTC offers and subscriptions) and TURN credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from schemas import api as S
from schemas import evaluation as EV
from server.api.routing import Ctx, Invalid, Route, get, post
from server.api.shared import load_evaluation
from server.core import Hub
from server.domain import errors as E
from server.domain import evaluation as ev
from server.domain.errors import refusal

MediaSubscribe = E.refusal(
    "MediaSubscribe",
    "MEDIA_SUBSCRIBE",
    409,
    "本服务器的音视频由媒体服务器发起观看连接：请改用 media/subscribe",
    "this server's media server offers watched feeds itself: use media/subscribe",
)


MediaWatchByOffer = E.refusal(
    "MediaWatchByOffer",
    "MEDIA_WATCH_BY_OFFER",
    409,
    "本服务器在 media/offer 的连接上发送观看画面，无需订阅",
    "this server sends watched feeds on the media/offer link: no subscription is needed",
)


MediaNotLinked = E.refusal(
    "MediaNotLinked",
    "MEDIA_NOT_LINKED",
    409,
    "该评标室尚未连线，请稍后重试",
    "that room is not linked yet: try again shortly",
)


MediaUnavailable = E.refusal(
    "MediaUnavailable",
    "MEDIA_UNAVAILABLE",
    503,
    "媒体服务器暂不可用，请稍后重试",
    "the media server is not available at the moment: try again shortly",
)


async def _answer(
    hub: Hub,
    ctx: Ctx,
    peer: str,
    role: str,
    offer: dict[str, Any],
    body: EV.OfferIn,
    state: ev.EvaluationState,
    lead: bool,
) -> dict[str, Any]:
    answer: dict[str, Any] = await hub.media.answer(
        ctx.session_id,
        peer,
        role,
        offer,
        watch=body.watch,
        host_feed=lead,
        recorded=int(state.rooms.get(peer, {}).get("segments", 0)),
    )
    return answer


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


async def media_offer(ctx: Ctx, body: EV.OfferIn) -> EV.AnswerOut:
    """WebRTC: a room publishes its feed and receives the host's; a supervisor watches a room"""
    hub = ctx.hub
    loaded = await load_evaluation(ctx)
    state: ev.EvaluationState = loaded.state
    if hub.media is None:
        raise E.NotAllowedInState("no media backend on this server / 本服务器未启用音视频")
    role = ctx.who.role
    if role == "room" and ctx.who.party_id not in state.rooms:
        raise E.NotPermitted("this room is not drawn for this evaluation / 本评标室未被抽中")
    if role == "supervisor" and (body.watch is None or body.watch not in state.rooms):
        raise Invalid("watch: a room of this evaluation / watch 须为本评标的评标室")
    watch_by_subscription = bool(getattr(hub.media, "watch_by_subscription", False))
    if role == "supervisor" and watch_by_subscription:
        raise MediaSubscribe()
    offer = {"sdp": body.sdp, "type": body.type}
    peer = ctx.who.party_id
    lead = role == "room" and state.rooms.get(peer, {}).get("role") == "lead"
    try:
        answer = await _answer(hub, ctx, peer, role, offer, body, state, lead)
    except (ValueError, LookupError) as exc:
        raise Invalid(f"offer: {exc}"[:500]) from None
    return EV.AnswerOut(
        sdp=answer["sdp"], type=answer["type"], watch_by_subscription=watch_by_subscription
    )


async def media_subscribe(ctx: Ctx, body: EV.SubscribeIn) -> EV.SubscriptionOut:
    """WebRTC through a media server (Janus): receive a room's feed; the server offers it. A secondary room receives the lead room's (the host feed); a supervisor any room's"""
    hub = ctx.hub
    state: ev.EvaluationState = (await load_evaluation(ctx)).state
    if hub.media is None:
        raise E.NotAllowedInState("no media backend on this server / 本服务器未启用音视频")
    if not getattr(hub.media, "watch_by_subscription", False):
        raise MediaWatchByOffer()
    peer = ctx.who.party_id
    watch = body.watch
    if ctx.who.role == "room":
        # a room receives the host feed only, and is not told which room is the lead (views)
        lead = next((r for r, v in state.rooms.items() if v.get("role") == "lead"), None)
        if peer not in state.rooms:
            raise E.NotPermitted("this room is not drawn for this evaluation / 本评标室未被抽中")
        if watch is not None or lead is None or lead == peer:
            raise E.NotPermitted(
                "a secondary room receives only the host feed; leave watch out / "
                "副场评标室只能接收主场画面，请勿指定 watch"
            )
        watch = lead
    elif watch is None or watch not in state.rooms:
        raise Invalid("watch: a room of this evaluation / watch 须为本评标的评标室")
    try:
        offer = await hub.media.subscribe(ctx.session_id, peer, watch)
    except LookupError:
        raise MediaNotLinked() from None
    except Exception as exc:  # Janus away or refusing: nothing was set up
        raise MediaUnavailable(str(exc)[:300]) from None
    return EV.SubscriptionOut(
        subscription=hub.relay.name(offer["subscription"]), sdp=offer["sdp"], type="offer"
    )


async def media_subscription_answer(ctx: Ctx, body: EV.SubscriptionAnswerIn) -> S.OkOut:
    """WebRTC through a media server: the watcher's answer to the offer of media/subscribe (any server process takes it and hands it to the one holding the subscription)"""
    hub = ctx.hub
    await load_evaluation(ctx)  # the session exists and the caller is admitted
    answer = {"sdp": body.sdp, "type": body.type}
    subscription = ctx.request.match_info["subscription"]
    await hub.relay.answer(subscription, ctx.session_id, ctx.who.party_id, answer)
    return S.OkOut()


async def media_turn(ctx: Ctx) -> TurnOut:
    """TURN relay credentials for WebRTC (time-limited, coturn's use-auth-secret scheme)"""
    settings = ctx.hub.settings
    secret: str | None = getattr(settings, "turn_secret", None)
    urls: Sequence[str] = getattr(settings, "turn_urls", None) or ()
    if not secret or not urls:
        raise TurnNotConfigured()
    ttl = getattr(settings, "turn_ttl", None) or TURN_TTL
    return turn_credentials(secret, ctx.who.party_id, ctx.hub.clock.now(), ttl, urls)


# fmt: off
ROUTES: list[Route] = [
    post("/api/evaluations/{session_id}/media/offer", media_offer, ("room", "supervisor"), body=EV.OfferIn, response=EV.AnswerOut, tag="room"),
    post("/api/evaluations/{session_id}/media/subscribe", media_subscribe, ("room", "supervisor"), body=EV.SubscribeIn, response=EV.SubscriptionOut, tag="room"),
    post("/api/evaluations/{session_id}/media/subscriptions/{subscription}/answer", media_subscription_answer, ("room", "supervisor"), body=EV.SubscriptionAnswerIn, response=S.OkOut, tag="room"),
    get("/api/media/turn", media_turn, MEDIA_ROLES, response=TurnOut, tag="room"),
]
# fmt: on
