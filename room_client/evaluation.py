"""The evaluation's REST API for rooms, experts and staff (远程异地评标).

* :class:`EvalClient` is a :class:`~room_client.agent.HallClient` with the evaluation's calls:
  centre (pool, sites, rooms), host (create, draw, start), supervisor (entropy, warnings) and a
  room device (sign experts in, record a missing key).
* :class:`ExpertClient` acts for one expert signed in at a room: it holds the expert's token and
  signs sheets and the report with the expert's own key, on the room device.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from room_client.agent import AgentError, Credentials, HallClient, utc_now
from schemas import api as S
from schemas import evaluation as EV


def eval_path(session_id: str, *rest: str) -> str:
    tail = "".join("/" + quote(str(r), safe="") for r in rest)
    return f"/api/evaluations/{quote(session_id, safe='')}{tail}"


class EvalClient(HallClient):
    """A staff member's or a room device's client for evaluations."""

    async def _epost(self, session_id: str, *rest: str, body: Any = None) -> dict[str, Any]:
        return await self.call("POST", eval_path(session_id, *rest), body)

    # -- centre --

    async def import_experts(self, path: str | Path) -> dict[str, Any]:
        p = Path(path)
        fmt = "json" if p.suffix.lower() == ".json" else "csv"
        data = p.read_bytes()
        async with self._response(
            "POST", "/api/experts/import", params={"format": fmt}, body=lambda: _once(data)
        ) as resp:
            out: dict[str, Any] = await resp.json()
        return out

    async def add_site(self, site_id: str, name: str, city: str) -> dict[str, Any]:
        body = EV.SiteIn(id=site_id, name=name, city=city).model_dump()
        return await self.call("POST", "/api/sites", body)

    async def add_room(
        self, site_id: str, room_id: str, name: str, cert_pem: str, seats: int | None = None
    ) -> dict[str, Any]:
        body = EV.RoomIn(id=room_id, name=name, cert_pem=cert_pem, seats=seats).model_dump()
        return await self.call("POST", f"/api/sites/{quote(site_id, safe='')}/rooms", body)

    async def sites(self) -> list[dict[str, Any]]:
        return list((await self.call("GET", "/api/sites"))["sites"])

    # -- host and supervisor --

    async def create_evaluation(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.call("POST", "/api/evaluations", body)

    async def evaluation(self, session_id: str) -> dict[str, Any]:
        return await self.call("GET", eval_path(session_id))

    async def evaluation_events(self, session_id: str, after: int = 0) -> list[dict[str, Any]]:
        out = await self.call("GET", eval_path(session_id, "events"), params={"after": str(after)})
        return list(out["events"])

    async def begin_draw(self, session_id: str) -> dict[str, Any]:
        return await self._epost(session_id, "draw", "begin")

    async def add_entropy(self, session_id: str, value: str | None = None) -> dict[str, Any]:
        """Add this party's random value (32 bytes from the OS unless given)."""
        body = EV.EntropyIn(value=value or secrets.token_hex(32)).model_dump()
        return await self._epost(session_id, "draw", "entropy", body=body)

    async def draw(self, session_id: str) -> dict[str, Any]:
        return await self._epost(session_id, "draw")

    async def decline(self, session_id: str, expert_id: str, reason: str) -> dict[str, Any]:
        body = EV.ExpertReasonIn(reason=reason).model_dump()
        return await self._epost(session_id, "members", expert_id, "decline", body=body)

    async def start_evaluation(self, session_id: str) -> dict[str, Any]:
        return await self._epost(session_id, "start")

    async def warn(self, session_id: str, text: str) -> dict[str, Any]:
        return await self._epost(session_id, "warnings", body=S.TextIn(text=text).model_dump())

    async def suspend_evaluation(self, session_id: str, reason: str) -> dict[str, Any]:
        return await self._epost(session_id, "suspend", body=S.ReasonIn(reason=reason).model_dump())

    async def resume_evaluation(self, session_id: str, reason: str) -> dict[str, Any]:
        return await self._epost(session_id, "resume", body=S.ReasonIn(reason=reason).model_dump())

    async def report(self, session_id: str) -> dict[str, Any]:
        return await self.call("GET", eval_path(session_id, "report"))

    async def media_offer(
        self, session_id: str, offer: dict[str, Any], watch: str | None = None
    ) -> dict[str, Any]:
        body = EV.OfferIn(sdp=offer["sdp"], type=offer["type"], watch=watch).model_dump()
        return await self._epost(session_id, "media", "offer", body=body)

    # -- room device --

    async def sign_in_expert(
        self, session_id: str, expert_id: str, expert: Credentials
    ) -> ExpertClient:
        """Sign ``expert_id`` in at this room with the expert's own key; returns their client."""
        await self.ensure_login()
        challenge = S.ChallengeOut.model_validate(
            await self.call("POST", "/api/auth/challenge", auth=False)
        )
        server_id = challenge.server
        doc = EV.sign_in_document(
            server_id, session_id, self.party_id or "", expert_id, challenge.nonce
        )
        signature = await asyncio.to_thread(expert.sign, doc, utc_now())
        body = EV.ExpertSignInIn(expert_id=expert_id, nonce=challenge.nonce, signature=signature)
        out = EV.ExpertSignInOut.model_validate(
            await self._epost(session_id, "sign-in", body=body.model_dump())
        )
        client = ExpertClient(self.base_url, expert, room=self, ssl_context=self.ssl_context)
        client.token, client.token_expires_at = out.token, out.expires_at
        client.role, client.party_id, client.name = "expert", out.expert_id, out.name
        return client

    async def no_key(self, session_id: str, expert_id: str) -> dict[str, Any]:
        return await self._epost(session_id, "members", expert_id, "no-key")


class ExpertClient(HallClient):
    """One expert at a room device: their token, and their key for signing."""

    def __init__(self, base_url: str, credentials: Credentials, *, room: EvalClient, **kw: Any):
        super().__init__(base_url, credentials, **kw)
        self.room = room

    async def login(self) -> dict[str, Any]:
        raise AgentError(
            "TOKEN_INVALID",
            "专家登录已过期，请在评标室重新签到",
            "the expert's session expired: sign in again at the room",
        )

    def _sign(self, document: bytes) -> str:
        assert self.credentials is not None
        return self.credentials.sign(document, utc_now())

    async def vote(self, session_id: str, candidate: str) -> dict[str, Any]:
        body = EV.VoteIn(candidate=candidate).model_dump()
        return await self.call("POST", eval_path(session_id, "vote"), body)

    async def submit_sheet(
        self, session_id: str, stage: str, content: dict[str, Any]
    ) -> dict[str, Any]:
        doc = EV.sheet_document(session_id, self.party_id or "", stage, content)
        signature = await asyncio.to_thread(self._sign, doc)
        body = EV.SheetIn(stage=stage, content=content, signature=signature).model_dump()
        return await self.call("POST", eval_path(session_id, "sheets"), body)

    async def sheets(self, session_id: str, stage: str) -> dict[str, Any]:
        return await self.call("GET", eval_path(session_id, "sheets", stage))

    async def rescore(self, session_id: str, expert_id: str, reason: str) -> dict[str, Any]:
        body = EV.RescoreIn(expert_id=expert_id, reason=reason).model_dump()
        return await self.call("POST", eval_path(session_id, "rescore"), body)

    async def close_stage(self, session_id: str) -> dict[str, Any]:
        return await self.call("POST", eval_path(session_id, "close-stage"))

    async def summarize(self, session_id: str) -> dict[str, Any]:
        return await self.call("POST", eval_path(session_id, "summarize"))

    async def report(self, session_id: str) -> dict[str, Any]:
        return await self.call("GET", eval_path(session_id, "report"))

    async def sign_report(
        self, session_id: str, agree: bool = True, reason: str = ""
    ) -> dict[str, Any]:
        report = await self.report(session_id)
        doc = EV.report_document(session_id, self.party_id or "", report["sha256"], agree, reason)
        signature = await asyncio.to_thread(self._sign, doc)
        body = EV.ReportSignIn(agree=agree, reason=reason, signature=signature).model_dump()
        return await self.call("POST", eval_path(session_id, "report", "sign"), body)

    async def refuse_report(self, session_id: str, reason: str = "") -> dict[str, Any]:
        body = EV.RefuseIn(reason=reason).model_dump()
        return await self.call("POST", eval_path(session_id, "report", "refuse"), body)

    async def evaluation(self, session_id: str) -> dict[str, Any]:
        return await self.call("GET", eval_path(session_id))


async def _once(data: bytes) -> Any:
    yield data
