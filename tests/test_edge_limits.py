"""Inputs at the edge of what the server accepts get a 4xx with a stable code and zh + en, never
a 500 or a traceback, and change nothing: deeply nested JSON (on the anonymous login route too),
positions past any log (``?after=``, the socket's ``last`` and ``replay``), and
session times without a time zone. (Issue: trust and secrecy, "no 500s".)"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from schemas.events import MAX_SEQ
from server.auth import Principal
from server.identity import cert_pem
from tests.support.hall import ConnectionRefused, Hall, Listener, P
from tests.support.pki import CODE_A


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def raw_post(hall: Hall, path: str, text: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with hall.http.post(hall.url + path, data=text.encode(), headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.parametrize("depth", [33, 5_000, 200_000])
async def test_deeply_nested_json_on_the_anonymous_login_route_is_a_400(
    hall: Hall, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    before = await hall.snapshot()
    with caplog.at_level(logging.ERROR):
        status, body = await raw_post(hall, "/api/auth/login", nested(depth))
    assert status == 400 and body["code"] == "BAD_REQUEST", body
    assert body["zh"] and body["en"] and "nested deeper than 32" in body["detail"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert await hall.snapshot() == before


async def test_deeply_nested_json_inside_a_valid_body_is_a_400(hall: Hall) -> None:
    sid = await hall.create_session()
    host = P(hall, "host")
    await hall.login(host)
    deep: Any = "理由"
    for _ in range(40):
        deep = {"x": deep}
    await hall.refused(
        400, "BAD_REQUEST", "POST", f"/api/sessions/{sid}/suspend", host, {"reason": deep}
    )


async def test_json_nested_to_the_limit_is_parsed_and_judged_by_its_model(hall: Hall) -> None:
    # 32 levels are fine as JSON; the model then says what is wrong with it
    status, body = await raw_post(hall, "/api/auth/login", nested(32))
    assert status == 422 and body["code"] == "INVALID_INPUT", body


@pytest.mark.parametrize("after", [str(MAX_SEQ + 1), str(2**63), str(2**64), "9" * 40])
async def test_events_after_a_sequence_past_any_log_is_refused_not_a_500(
    hall: Hall, after: str
) -> None:
    sid = await hall.create_session()
    err = await hall.refused(
        422,
        "INVALID_INPUT",
        "GET",
        f"/api/sessions/{sid}/events?after=all:{after}",
        P(hall, "host"),
    )
    assert str(MAX_SEQ) in err.body["detail"]


async def test_events_after_the_largest_sequence_is_empty(hall: Hall) -> None:
    sid = await hall.create_session()
    out = await hall.request(
        "GET",
        f"/api/sessions/{sid}/events?after=all:{MAX_SEQ}&after=staff:{MAX_SEQ}",
        P(hall, "host"),
    )
    assert out["events"] == []


@pytest.mark.parametrize("last_seq", [MAX_SEQ + 1, 2**63, 2**70])
async def test_socket_last_past_any_log_is_refused_with_its_code(hall: Hall, last_seq: int) -> None:
    sid = await hall.create_session()
    a = P(hall, "a")
    await hall.login(a)
    listener = Listener()
    hall.listeners.append(listener)
    with pytest.raises(ConnectionRefused) as err:
        await listener.connect_with(
            hall.url, {"token": a.token, "session_id": sid, "last": {"all": last_seq}}
        )
    assert err.value.code == "INVALID_INPUT"
    assert err.value.data["zh"] and err.value.data["en"]


@pytest.mark.parametrize(
    "after",
    [
        "3",
        1.5,
        None,
        True,
        3,
        [1],
        {"all": "3"},
        {"all": 1.5},
        {"all": None},
        {"all": True},
        {"all": -1},
        {"all": MAX_SEQ + 1},
        {"all": 2**64},
        {"": 1},
        {f"s{i}": 0 for i in range(17)},
    ],
)
async def test_socket_replay_with_a_bad_after_is_answered_invalid_and_replays_nothing(
    hall: Hall, after: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sid = await hall.create_session()
    listener = await hall.listen(sid, P(hall, "host"))
    seen = len(listener.events)
    with caplog.at_level(logging.ERROR):
        answer = await listener.client.call(
            "replay", {"after": after}, namespace="/hall", timeout=5
        )
    assert answer["code"] == "INVALID_INPUT" and answer["zh"] and answer["en"]
    assert len(listener.events) == seen
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # the connection still works: a good replay is served
    assert await listener.client.call("replay", {"after": {}}, namespace="/hall", timeout=5) is None


@pytest.mark.parametrize("field", ["sign_in_opens", "deadline"])
async def test_session_times_without_a_time_zone_are_refused(hall: Hall, field: str) -> None:
    host = P(hall, "host")
    naive = (hall.t0.replace(tzinfo=None)).isoformat()
    body = {
        "lot_id": "JS-2026-0101/01",
        "title": "无时区",
        "sign_in_opens": (hall.t0).isoformat(),
        "deadline": (hall.t0).isoformat(),
        field: naive,
    }
    err = await hall.refused(422, "INVALID_INPUT", "POST", "/api/sessions", host, body)
    assert field in err.body["detail"]


@pytest.mark.parametrize("hidden", ["\u202e", "\u2066", "\u200b", "\ufeff", "\x1b", "\u2028"])
async def test_a_reason_with_hidden_or_direction_changing_characters_is_refused(
    hall: Hall, hidden: str
) -> None:
    sid = await hall.create_session()
    err = await hall.refused(
        422,
        "INVALID_INPUT",
        "POST",
        f"/api/sessions/{sid}/suspend",
        P(hall, "host"),
        {"reason": f"网络故障{hidden}恢复后继续"},
    )
    assert f"U+{ord(hidden):04X}" in err.body["detail"]


async def test_a_reason_may_have_line_breaks(hall: Hall) -> None:
    sid = await hall.create_session()
    out = await hall.request(
        "POST", f"/api/sessions/{sid}/suspend", P(hall, "host"), {"reason": "网络故障\n\t稍后恢复"}
    )
    assert out["pos"]["all"] >= 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/companies", {"name": "甲建设\u200d工程有限公司"}),
        ("/api/accounts", {"role": "host", "name": "主持人\u202e王"}),
        ("/api/projects", {"code": "P-1", "name": "道路\u2067改造", "tenderer_name": "城投"}),
        ("/api/sites", {"id": "XM", "name": "厦门分中心", "city": "厦门\u200b"}),
    ],
)
async def test_a_name_with_hidden_characters_is_refused_at_registration(
    hall: Hall, path: str, body: dict[str, Any]
) -> None:
    a = P(hall, "a")
    assert a.enc_cert is not None
    complete = {  # everything else in order, so that the name is what is wrong
        "/api/companies": {
            "credit_code": a.code,
            "signing_cert_pem": cert_pem(a.cert),
            "encryption_cert_pem": cert_pem(a.enc_cert),
        },
        "/api/accounts": {"cert_pem": cert_pem(P(hall, "host").cert)},
        "/api/projects": {"tenderer_credit_code": CODE_A},
        "/api/sites": {},
    }[path]
    err = await hall.refused(
        422, "INVALID_INPUT", "POST", path, P(hall, "centre"), {**complete, **body}
    )
    assert "invisible" in err.body["detail"]


@pytest.mark.parametrize("role", ["room", "expert"])
async def test_a_room_device_or_expert_token_cannot_join_an_opening_hall(
    hall: Hall, role: str
) -> None:
    sid = await hall.create_session()
    token, _ = hall.hub.tokens.issue(
        Principal(role, f"{role}-1", f"{role}-1", "0" * 64), hall.clock.now()
    )
    listener = Listener()
    hall.listeners.append(listener)
    with pytest.raises(ConnectionRefused) as err:
        await listener.connect_with(hall.url, {"token": token, "session_id": sid})
    assert err.value.code == "NOT_PERMITTED"
    assert err.value.data["zh"] and err.value.data["en"]
