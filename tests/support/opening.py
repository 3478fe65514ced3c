"""An opening driven through the API: bids uploaded, decrypted in the window, table announced."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from crypto.attest import b64encode
from crypto.bid import unwrap
from schemas.time import parse_iso
from tests.support.hall import Hall, P

HOUR = timedelta(hours=1)

SIGN_IN = timedelta(minutes=10)


async def with_bids(
    hall: Hall, tmp: Path, bidders: str = "abc", **session: Any
) -> tuple[str, dict[str, Path]]:
    """A published session in sign-in with a bid from each of ``bidders``."""
    sid = await hall.create_session(**session)
    await hall.at(hall.t0 + SIGN_IN)
    envs: dict[str, Path] = {}
    for k in bidders:
        envs[k] = hall.seal(tmp, P(hall, k), name=k)
        await hall.upload(sid, P(hall, k), envs[k])
    return sid, envs


async def supervise(hall: Hall, sid: str) -> Any:
    """A supervisor in the hall (socket), once the server has recorded the presence."""
    return await hall.listen(sid, P(hall, "supervisor"))


async def decrypting(
    hall: Hall, tmp: Path, bidders: str = "abc"
) -> tuple[str, dict[str, Path], Any]:
    """Past the deadline, opened with a supervisor present, decryption window open."""
    sid, envs = await with_bids(hall, tmp, bidders)
    await hall.at(hall.t0 + HOUR)
    sup = await supervise(hall, sid)
    await hall.request("POST", f"/api/sessions/{sid}/start", P(hall, "host"))
    await hall.request("POST", f"/api/sessions/{sid}/decryption", P(hall, "host"))
    return sid, envs, sup


def cek(hall: Hall, key: str, env: Path) -> str:
    p = P(hall, key)
    assert p.enc_key is not None
    return b64encode(unwrap(env, p.enc_key, p.enc_cert))


async def send_key(hall: Hall, sid: str, key: str, value: str) -> dict[str, Any]:
    return dict(
        await hall.request("POST", f"/api/sessions/{sid}/key", P(hall, key), {"cek": value})
    )


async def announcing(hall: Hall, tmp: Path) -> tuple[str, Any]:
    """All three bids decrypted, window closed, table published."""
    sid, envs, sup = await decrypting(hall, tmp)
    for k in "abc":
        assert (await send_key(hall, sid, k, cek(hall, k, envs[k])))["ok"]
    closes = parse_iso((await hall.view(sid, P(hall, "host")))["decrypt_closes_at"])
    await hall.at(closes)
    return sid, sup
