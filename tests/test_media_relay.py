"""A watcher's answer reaches the server process holding its subscription (server/media/relay.py),
over a real ``redis-server`` of the test's own; and the built-in backend refuses subscriptions
with a code the watcher can act on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from server.domain.errors import Refusal
from server.media.relay import (
    PREFIX,
    AnswerNotTaken,
    SubscriptionGone,
    SubscriptionRelay,
    apply_answer,
    split,
)
from tests.support.servers import RedisServer

ANSWER = {"sdp": "v=0\r\n", "type": "answer"}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("relay-redis"))
    server.start()
    yield server
    server.stop()


class Owner:
    """What the owning process's backend does with an answer: here, keep it or refuse it."""

    def __init__(self) -> None:
        self.taken: list[tuple[str, str, str, dict[str, Any]]] = []
        self.refuse: Exception | None = None

    async def __call__(self, session: str, peer: str, local: str, answer: dict[str, Any]) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.taken.append((session, peer, local, answer))


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[SubscriptionRelay, Owner]]:
    owner = Owner()
    asking = SubscriptionRelay(redis_server.url, "p1", Owner(), wait=2.0)
    holding = SubscriptionRelay(redis_server.url, "p2", owner, wait=2.0)
    await asking.start()
    await holding.start()
    try:
        yield asking, owner
    finally:
        await asking.close()
        await holding.close()


def test_subscription_ids_name_their_process() -> None:
    relay = SubscriptionRelay(None, "a1b2c3", Owner())
    assert relay.name("xyz") == "a1b2c3.xyz"
    assert split(relay.name("x.y")) == ("a1b2c3", "x.y")
    for junk in ("", "nodot", ".x", "x.", "reply:abc.x", "a b.x", "a_b.x", "x" * 65 + ".y"):
        assert split(junk) == ("", "")


async def test_an_answer_taken_by_another_process_reaches_the_holder(
    pair: tuple[SubscriptionRelay, Owner],
) -> None:
    asking, owner = pair
    await asking.forward("p2", "E-1", "S001", "local-1", {**ANSWER, "extra": "dropped"})
    assert owner.taken == [("E-1", "S001", "local-1", ANSWER)]
    await asking.forward("p2", "E-1", "S001", "local-2", ANSWER)  # and the next one
    assert [t[2] for t in owner.taken] == ["local-1", "local-2"]


async def test_the_holders_refusal_comes_back_with_its_code(
    pair: tuple[SubscriptionRelay, Owner],
) -> None:
    asking, owner = pair
    owner.refuse = AnswerNotTaken("Janus said no")
    with pytest.raises(Refusal) as caught:
        await asking.forward("p2", "E-1", "S001", "local-1", ANSWER)
    exc = caught.value
    assert (exc.code, exc.status, exc.detail) == ("MEDIA_ANSWER_INVALID", 422, "Janus said no")
    assert exc.zh == AnswerNotTaken.zh and exc.en == AnswerNotTaken.en
    owner.refuse = RuntimeError("not one of ours")
    with pytest.raises(Refusal) as caught:
        await asking.forward("p2", "E-1", "S001", "local-1", ANSWER)
    assert (caught.value.code, caught.value.status) == ("INVALID_INPUT", 422)
    assert owner.taken == []


async def test_a_dead_process_costs_the_wait_then_a_clear_refusal(
    pair: tuple[SubscriptionRelay, Owner], redis_server: RedisServer
) -> None:
    asking, _owner = pair
    started = time.monotonic()
    with pytest.raises(SubscriptionGone):
        await asking.forward("p-dead", "E-1", "S001", "local-1", ANSWER)
    assert 1.5 <= time.monotonic() - started < 5
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        ttl = await r.ttl(PREFIX + "p-dead")  # the unread request goes away by itself
        assert 0 < ttl <= 30
        await r.delete(PREFIX + "p-dead")
    finally:
        await r.aclose()


async def test_a_malformed_request_is_ignored_and_the_holder_keeps_serving(
    pair: tuple[SubscriptionRelay, Owner], redis_server: RedisServer
) -> None:
    asking, owner = pair
    r = aioredis.Redis.from_url(redis_server.url)
    try:
        for junk in (b"not json", json.dumps({"reply": "elsewhere:key"}), json.dumps([1, 2])):
            await r.rpush(PREFIX + "p2", junk)
        assert await r.exists("elsewhere:key") == 0
    finally:
        await r.aclose()
    await asking.forward("p2", "E-2", "S001", "local-9", ANSWER)
    assert owner.taken == [("E-2", "S001", "local-9", ANSWER)]


async def test_without_redis_only_local_subscriptions_exist() -> None:
    alone = SubscriptionRelay(None, "p1", Owner())
    await alone.start()
    with pytest.raises(SubscriptionGone):
        await alone.forward("p2", "E-1", "S001", "local-1", ANSWER)
    await alone.close()


async def test_applying_an_answer_maps_the_backends_failures() -> None:
    class Backend:
        watch_by_subscription = True

        def __init__(self, fail: Exception | None) -> None:
            self.fail = fail

        async def start_subscription(self, *args: Any) -> None:
            if self.fail is not None:
                raise self.fail

    await apply_answer(Backend(None), "E-1", "S001", "x", ANSWER)
    with pytest.raises(SubscriptionGone):
        await apply_answer(Backend(LookupError("no such")), "E-1", "S001", "x", ANSWER)
    with pytest.raises(AnswerNotTaken):
        await apply_answer(Backend(ValueError("bad sdp")), "E-1", "S001", "x", ANSWER)
    with pytest.raises(SubscriptionGone):  # a backend that sends feeds on the offer link
        await apply_answer(object(), "E-1", "S001", "x", ANSWER)
    with pytest.raises(SubscriptionGone):
        await apply_answer(None, "E-1", "S001", "x", ANSWER)


async def test_builtin_backend_refuses_subscriptions_and_says_so_in_its_answer(
    pki: Any, tmp_path: Path
) -> None:
    """With the embedded default (aiortc) watched feeds travel on the offer link: the subscribe
    route refuses with MEDIA_WATCH_BY_OFFER, and a room's answer says no subscription is needed."""
    from room_client.media import RoomMedia
    from tests.support.evaluation import drawn
    from tests.support.hall import ApiError, P, start_hall, stop_hall

    hall = await start_hall(pki, tmp_path)
    link = RoomMedia("synthetic", label="room")
    try:
        e, _ = await drawn(hall, tmp_path)
        room_id = sorted(e.rooms)[0]
        answers: list[dict[str, Any]] = []

        async def signal(offer: dict[str, str]) -> dict[str, str]:
            answers.append(dict(await e.post(e.rooms[room_id], "media", "offer", body=offer)))
            return answers[-1]

        await link.connect(signal)
        assert answers[0]["watch_by_subscription"] is False
        for who, body in ((P(hall, "supervisor"), {"watch": room_id}), (e.rooms[room_id], {})):
            with pytest.raises(ApiError) as caught:
                await e.post(who, "media", "subscribe", body=body)
            assert (caught.value.code, caught.value.status) == ("MEDIA_WATCH_BY_OFFER", 409)
            assert caught.value.body["zh"] and caught.value.body["en"]
    finally:
        await link.close()
        await asyncio.sleep(0)
        await stop_hall(hall)


async def test_an_answer_is_applied_here_or_handed_on_by_its_subscription_id(
    pair: tuple[SubscriptionRelay, Owner],
) -> None:
    asking, owner = pair
    here = asking.apply
    assert isinstance(here, Owner)
    await asking.answer("p1.local-1", "E-1", "S001", ANSWER)  # held by this process
    assert here.taken == [("E-1", "S001", "local-1", ANSWER)] and owner.taken == []
    await asking.answer("p2.local-2", "E-1", "S001", ANSWER)  # held by the other
    assert owner.taken == [("E-1", "S001", "local-2", ANSWER)]
    for junk in ("junk", "reply:x.y", ".x"):
        with pytest.raises(SubscriptionGone):
            await asking.answer(junk, "E-1", "S001", ANSWER)
