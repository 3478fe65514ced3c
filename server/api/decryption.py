"""Online decryption (rules 7-8): the window, a bidder's key, platform incidents."""

from __future__ import annotations

from crypto import errors as CE
from crypto.attest import b64decode
from schemas import api as S
from server.api.bindings import bound_caller
from server.api.origin import request_origin
from server.api.routing import Ctx, Route, command, load_session, pos_of, post
from server.domain import errors as E
from server.domain import opening as op
from server.realtime.coord import Busy
from server.work.decryption import decrypt_bid


def _decrypt_out(result: op.DecryptionResult, pos: dict[str, int] | None) -> S.DecryptOut:
    if result.ok:
        return S.DecryptOut(
            ok=True, code="OK", zh="解密成功", en="decrypted", summary=result.summary, pos=pos
        )
    zh, _, en = result.message.partition(" / ")
    return S.DecryptOut(ok=False, code=result.code, zh=zh, en=en or zh, pos=pos)


async def submit_key(ctx: Ctx, body: S.KeyIn) -> S.DecryptOut:
    """Send the unwrapped content key; the server decrypts and verifies (rule 7)"""
    hub = ctx.hub
    code = ctx.who.party_id
    submitted = hub.clock.now()
    loaded = await load_session(ctx)
    op.decide(loaded.state, op.SubmitKey(actor=ctx.actor), submitted)  # refuses outside the window
    await bound_caller(ctx)
    cek = b64decode(body.cek, "cek")
    origin = await request_origin(ctx)
    if len(cek) not in (16, 24, 32):
        raise CE.KeyUnwrapFailed("内容密钥长度无效 / the content key has an invalid length")
    try:
        async with hub.coord.busy(ctx.session_id, code):
            result = await decrypt_bid(
                hub, ctx.session_id, loaded.state, code, cek, submitted, via="bidder"
            )
            result = result.model_copy(update={"origin": origin})
            records = await hub.service.execute(ctx.session_id, result)
    except Busy:
        raise E.AlreadyDone("a decryption of this bid is in progress / 正在解密") from None
    finally:
        hub.scheduler.wake()
    return _decrypt_out(result, pos_of(ctx, records))


# fmt: off
ROUTES: list[Route] = [
    command("/api/sessions/{session_id}/decryption", op.OpenDecryption, ("host",), "Open the decryption window (rule 7)", tag="host"),
    command("/api/sessions/{session_id}/incidents", op.RecordIncident, ("host", "centre"), "Record a platform fault affecting named bids (rule 8)", body=S.IncidentIn, tag="host"),
    post("/api/sessions/{session_id}/key", submit_key, ("bidder",), body=S.KeyIn, response=S.DecryptOut),
]
# fmt: on
