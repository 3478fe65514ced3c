"""The scheduler fires due transitions, and never overtakes a key sent in time (rule 7)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from crypto.attest import b64encode
from crypto.bid import unwrap
from tests.support.hall import start_hall, stop_hall
from tests.support.pki import Pki


async def test_window_close_waits_for_a_decryption_in_flight(pki: Pki, tmp_path: Path) -> None:
    hall = await start_hall(pki, tmp_path)
    try:
        P = hall.parties
        sid = await hall.create_session(min_bids=1)
        await hall.at(hall.t0 + timedelta(minutes=10))
        await hall.upload(sid, P["a"], hall.seal(tmp_path, P["a"], name="a"))
        await hall.at(hall.t0 + timedelta(hours=1))
        await hall.listen(sid, P["supervisor"])
        await hall.request("POST", f"/api/sessions/{sid}/start", P["host"])
        await hall.request("POST", f"/api/sessions/{sid}/decryption", P["host"])
        closes = hall.t0 + timedelta(hours=1, minutes=30)
        # A key arrived a second before the close and is still being decrypted at the close.
        busy = hall.hub.coord.busy(sid, P["a"].code or "")
        await busy.__aenter__()
        await hall.at(closes)
        assert (await hall.view(sid, P["host"]))["status"] == "decrypting"
        assert P["a"].enc_key and P["a"].enc_cert
        await busy.__aexit__(None, None, None)
        hall.clock.set(closes - timedelta(seconds=1))
        cek = unwrap(tmp_path / "a.p7m", P["a"].enc_key, P["a"].enc_cert)
        out = await hall.request(
            "POST", f"/api/sessions/{sid}/key", P["a"], {"cek": b64encode(cek)}
        )
        assert out["ok"]
        await hall.at(closes + timedelta(seconds=1))
        view = await hall.view(sid, P["host"])
        assert view["status"] == "announcing"
        assert [r["status"] for r in view["table"]["rows"]] == ["decrypted"]
    finally:
        await stop_hall(hall)
