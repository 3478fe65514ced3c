"""A watcher's answer reaches the process that holds its subscription.

Watching through Janus takes two requests: ``media/subscribe`` (Janus offers the feed, on the
Janus session of the process that asked) and ``.../answer``. Behind nginx the second request may
reach another server process, which has no handle on that Janus session. The subscription id
therefore names its process (``<instance>.<id>``), and a process that receives an answer for
another hands it over through Redis: it pushes the request onto the owner's list
(``bidbridge:media:<instance>``) and waits on a reply list of its own. The owner pops requests
one by one, applies them to its backend and pushes the outcome back.

Both lists expire: a request for a process that died is gone after ``REQUEST_TTL`` seconds, and
the asking process answers ``MEDIA_SUBSCRIPTION_GONE`` after ``WAIT_SECONDS`` (the watcher
subscribes again, on a live process). Without Redis (one process) every subscription is local.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from server.domain.errors import Refusal, refusal

log = logging.getLogger(__name__)

PREFIX = "bidbridge:media:"
_INSTANCE = re.compile(r"[A-Za-z0-9-]{1,64}")
WAIT_SECONDS = 8.0
REQUEST_TTL = 30

Apply = Callable[[str, str, str, dict[str, Any]], Awaitable[None]]
"""(session id, watcher's party id, local subscription id, SDP answer) -> None, or raises."""


SubscriptionGone = refusal(
    "SubscriptionGone",
    "MEDIA_SUBSCRIPTION_GONE",
    404,
    "订阅已失效（已过期或其服务进程已重启），请重新订阅",
    "no such subscription (it expired or its server process restarted): subscribe again",
)


def as_refusal(fields: dict[str, Any]) -> Refusal:
    """The owner's refusal, raised again by the process the watcher asked."""
    exc = Refusal(str(fields.get("detail") or ""), zh=fields.get("zh"), en=fields.get("en"))
    exc.code = str(fields.get("code") or SubscriptionGone.code)
    exc.status = int(fields.get("status") or 409)
    return exc


def refusal_fields(exc: BaseException) -> dict[str, Any]:
    """A refusal as plain fields (any of our errors has code, zh and en)."""
    code = getattr(exc, "code", None)
    if not isinstance(code, str) or not code:
        return {
            "code": "INVALID_INPUT",
            "zh": "应答无效",
            "en": "the answer was not taken",
            "status": 422,
            "detail": str(exc)[:300],
        }
    return {
        "code": code,
        "zh": str(getattr(exc, "zh", "")),
        "en": str(getattr(exc, "en", "")),
        "status": int(getattr(exc, "status", 409) or 409),
        "detail": str(getattr(exc, "detail", "") or "")[:300],
    }


def split(subscription: str) -> tuple[str, str]:
    """``<instance>.<local id>`` -> (instance, local id); ("", "") if it is not of that form."""
    instance, dot, local = subscription.partition(".")
    if not dot or not _INSTANCE.fullmatch(instance) or not local:
        return "", ""  # a made-up instance must not name another Redis key (e.g. a reply list)
    return instance, local


class SubscriptionRelay:
    def __init__(
        self, redis_url: str | None, instance: str, apply: Apply, *, wait: float = WAIT_SECONDS
    ) -> None:
        self.redis_url = redis_url
        self.instance = instance
        self.apply = apply
        self.wait = wait
        self._redis: Any = None
        self._task: asyncio.Task[None] | None = None

    def name(self, local: str) -> str:
        return f"{self.instance}.{local}"

    async def start(self) -> None:
        if not self.redis_url:
            return
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(
            self.redis_url, socket_connect_timeout=1, socket_timeout=self.wait + 5
        )
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="media-relay")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()
            self._redis = None

    async def answer(
        self, subscription: str, session_id: str, peer_id: str, answer: dict[str, Any]
    ) -> None:
        """The watcher's answer to ``subscription``: applied here if this process holds it,
        else handed to the one that does."""
        instance, local = split(subscription)
        if not instance:
            raise SubscriptionGone()
        if instance == self.instance:
            await self.apply(session_id, peer_id, local, answer)
        else:
            await self.forward(instance, session_id, peer_id, local, answer)

    async def forward(
        self, instance: str, session_id: str, peer_id: str, local: str, answer: dict[str, Any]
    ) -> None:
        """Hand the answer to ``instance`` and wait for its outcome (its refusal is raised here)."""
        if self._redis is None:
            raise SubscriptionGone()
        reply = f"{PREFIX}reply:{secrets.token_hex(8)}"
        request = {
            "reply": reply,
            "session": session_id,
            "peer": peer_id,
            "subscription": local,
            "answer": {"type": answer.get("type"), "sdp": answer.get("sdp")},
        }
        queue = PREFIX + instance
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.rpush(queue, json.dumps(request))
                pipe.expire(queue, REQUEST_TTL)
                await pipe.execute()
            got = await self._redis.blpop([reply], timeout=self.wait)
        except Exception as exc:
            log.warning("subscription answer not handed to %s (%s)", instance, exc)
            raise SubscriptionGone() from None
        if got is None:
            raise SubscriptionGone()
        outcome = json.loads(got[1])
        if not outcome.get("ok"):
            raise as_refusal(outcome)

    async def _serve(self) -> None:
        queue = PREFIX + self.instance
        while True:
            try:
                got = await self._redis.blpop([queue], timeout=5)
                if got is not None:
                    await self._handle(got[1])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away for a moment: the askers time out
                log.warning("media relay: %s; listening again", exc)
                await asyncio.sleep(0.5)

    async def _handle(self, raw: bytes) -> None:
        try:
            request = json.loads(raw)
            reply = str(request["reply"])
            if not reply.startswith(PREFIX + "reply:"):
                raise ValueError("reply key")
            args = (
                str(request["session"]),
                str(request["peer"]),
                str(request["subscription"]),
                dict(request["answer"]),
            )
        except (TypeError, ValueError, KeyError):
            log.warning("malformed media relay request ignored")
            return
        try:
            await self.apply(*args)
            outcome: dict[str, Any] = {"ok": True}
        except Exception as exc:  # the owner's refusal goes back to the watcher as it is
            outcome = {"ok": False, **refusal_fields(exc)}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(reply, json.dumps(outcome))
            pipe.expire(reply, REQUEST_TTL)
            await pipe.execute()


AnswerNotTaken = refusal(
    "AnswerNotTaken",
    "MEDIA_ANSWER_INVALID",
    422,
    "媒体服务器未接受该 SDP 应答，请重新订阅",
    "the media server did not take the SDP answer: subscribe again",
)


async def apply_answer(
    media: Any, session_id: str, peer_id: str, local: str, answer: dict[str, Any]
) -> None:
    """Start this process's subscription ``local`` with the watcher's answer."""
    if media is None or not getattr(media, "watch_by_subscription", False):
        raise SubscriptionGone()
    try:
        await media.start_subscription(session_id, peer_id, local, answer)
    except LookupError:
        raise SubscriptionGone() from None
    except Exception as exc:  # Janus refused or went away: the watcher starts over
        raise AnswerNotTaken(str(exc)[:300]) from None
