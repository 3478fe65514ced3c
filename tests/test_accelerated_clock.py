"""Protocol lifetimes are real seconds, also on the demo's accelerated clock: a login challenge
lasts a minute of the signer's time, not half a second of it (at x120 a 60-second challenge
expired while a loaded machine was signing; ``bidbridge demo`` failed CHALLENGE_INVALID)."""

from __future__ import annotations

from datetime import timedelta

from crypto.attest import b64encode, sign_document
from schemas.time import parse_iso
from server.auth import CHALLENGE_SECONDS
from tests.support.hall import Hall, P

RATE = 120.0


async def test_a_login_challenge_lasts_a_real_minute_on_an_accelerated_clock(hall: Hall) -> None:
    hall.clock.rate = RATE  # type: ignore[misc]  # the demo's clock runs 120 times real time
    a = P(hall, "a")
    ch = await hall.request("POST", "/api/auth/challenge")
    issued = hall.clock.now()
    assert parse_iso(ch["expires_at"]) - issued == timedelta(seconds=CHALLENGE_SECONDS * RATE)
    # 30 real seconds of signing are an hour of this clock: the challenge still holds.
    hall.clock.set(issued + timedelta(seconds=30 * RATE))
    sig = sign_document(ch["document"].encode(), a.key, a.cert, at=hall.clock.now(), chain=a.chain)
    out = await hall.request("POST", "/api/auth/login", json_body={"signature": b64encode(sig)})
    assert out["party_id"] == a.code
    # ...and it ends after its real minute.
    late = await hall.request("POST", "/api/auth/challenge")
    hall.clock.set(hall.clock.now() + timedelta(seconds=CHALLENGE_SECONDS * RATE + 1))
    sig = sign_document(
        late["document"].encode(), a.key, a.cert, at=hall.clock.now(), chain=a.chain
    )
    await hall.refused(
        401, "CHALLENGE_INVALID", "POST", "/api/auth/login", json_body={"signature": b64encode(sig)}
    )
