"""An expert signed in at a room stays signed in while the room is active: the room device keeps
the expert's token alive, and a token that lapsed anyway (the device was offline longer than a
token lasts) is renewed at the room with the expert's own key, with no second sign-in event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from room_client.agent import Credentials
from room_client.evaluation import EvalClient, ExpertClient
from server.auth import TokenInvalid
from tests.support.cli import write_party
from tests.support.evaluation import Eval, drawn
from tests.support.hall import Hall, P


@contextlib.asynccontextmanager
async def expert_at_room(
    hall: Hall, folder: Path, *, keep_token: bool = True
) -> AsyncIterator[tuple[Eval, ExpertClient, list[str]]]:
    """A drawn evaluation (``drawn``) whose first member signed in at their room through the real
    room device client; also the list of sign-ins the room device made for them (one per call
    of the sign-in route). Without ``keep_token`` the device stops keeping the expert's token
    alive at once (as if it had been offline). Both clients are closed on leaving."""
    e, _sup = await drawn(hall, folder)
    mid, member = sorted((await e.committee()).items())[0]
    room_key, room_cert = write_party(folder, "room", e.rooms[member["room_id"]])
    expert_key, expert_cert = write_party(folder, "expert", e.expert(mid))
    room = EvalClient(e.hall.url, Credentials.load(key=room_key, cert=room_cert))
    sign_ins: list[str] = []
    real = room.expert_token

    async def counted(session_id: str, expert_id: str, creds: Credentials) -> Any:
        sign_ins.append(expert_id)
        return await real(session_id, expert_id, creds)

    room.expert_token = counted  # type: ignore[method-assign]
    client = await room.sign_in_expert(
        e.sid, mid, Credentials.load(key=expert_key, cert=expert_cert)
    )
    try:
        if not keep_token:
            await client.stop_keeping_token()
        yield e, client, sign_ins
    finally:
        await close(client)


async def signed_in_events(e: Eval, expert_id: str) -> int:
    events = await e.events(P(e.hall, "supervisor"))
    return sum(
        1
        for ev in events
        if ev["type"] == "member_signed_in" and ev["payload"]["expert_id"] == expert_id
    )


async def close(client: ExpertClient) -> None:
    await client.close()
    await client.room.close()


async def test_room_device_keeps_a_signed_in_experts_token_alive(
    hall: Hall, tmp_path: Path
) -> None:
    hall.hub.tokens.ttl = timedelta(seconds=3)  # 3 s of the (manual) clock = 3 real seconds
    async with expert_at_room(hall, tmp_path) as (e, client, sign_ins):
        first = client.token
        assert first is not None and client.token_left() is not None
        hall.clock.advance(2)  # the keeper renews a third into the token's life (1 real second)
        for _ in range(600):
            if client.token != first:
                break
            await asyncio.sleep(0.05)
        assert client.token != first, "the room device did not renew the expert's token"
        hall.clock.advance(2)  # the first token has run out; the renewed one has not
        with pytest.raises(TokenInvalid):
            hall.hub.tokens.check(first, hall.clock.now())
        assert client.token is not None
        hall.hub.tokens.check(client.token, hall.clock.now())
        view = await client.evaluation(e.sid)
        assert view["session_id"] == e.sid
        assert sign_ins == [client.party_id]  # kept alive, never signed in again
        assert await signed_in_events(e, client.party_id or "") == 1


async def test_an_experts_lapsed_token_is_renewed_at_the_room_with_the_experts_key(
    hall: Hall, tmp_path: Path
) -> None:
    async with expert_at_room(hall, tmp_path, keep_token=False) as (e, client, sign_ins):
        lapsed = client.token
        hall.clock.advance(31 * 60)  # longer than a token lasts (30 minutes)
        assert lapsed is not None
        with pytest.raises(TokenInvalid):
            hall.hub.tokens.check(lapsed, hall.clock.now())
        view = await client.evaluation(e.sid)
        assert view["session_id"] == e.sid
        assert client.token != lapsed
        # the same key at the same room: a new token, the record unchanged (one sign-in event)
        assert sign_ins == [client.party_id, client.party_id]
        assert await signed_in_events(e, client.party_id or "") == 1


async def test_an_expert_without_a_key_at_the_room_is_told_to_sign_in_again(
    hall: Hall, tmp_path: Path
) -> None:
    async with expert_at_room(hall, tmp_path, keep_token=False) as (e, client, _):
        client.credentials = None  # the expert left with their CA key
        hall.clock.advance(31 * 60)
        from room_client.agent import AgentError

        with pytest.raises(AgentError) as info:
            await client.evaluation(e.sid)
        assert info.value.code == "TOKEN_INVALID"
        assert "重新签到" in info.value.zh
