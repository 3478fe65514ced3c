"""The evaluation's REST API for rooms, experts and staff (远程异地评标).

* :class:`EvalClient` is a :class:`~room_client.client.HallClient` with the evaluation's calls:
  centre (pool, sites, rooms), host (create, draw, start), supervisor (entropy, warnings) and a
  room device (sign experts in, record a missing key).
* :class:`ExpertClient` acts for one expert signed in at a room: it holds the expert's token and
  signs sheets and the report with the expert's own key, on the room device.
* :class:`ExpertDesk` is the room device's half of the expert desk (the browser page, which has
  no CA plugin): it makes the page's one-time link, follows the session, and signs with the
  expert's key what the page drafted (``sheet_to_sign`` / ``report_to_sign``), after the expert
  confirms at the room device.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from room_client.client import AgentError, HallClient, after_params
from room_client.credentials import Credentials, utc_now
from room_client.follower import HallFollower
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

    async def evaluation_events(
        self, session_id: str, after: Mapping[str, int] | None = None
    ) -> list[dict[str, Any]]:
        """The events this party may see after the cursor ``after`` (None: all of them)."""
        out = await self.call("GET", eval_path(session_id, "events"), params=after_params(after))
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

    async def ice_servers(self) -> list[Any]:
        """The server's TURN relay with time-limited credentials, as aiortc ICE servers; none
        when the server has no relay configured (``TURN_NOT_CONFIGURED``)."""
        from aiortc import RTCIceServer

        try:
            turn = await self.call("GET", "/api/media/turn")
        except AgentError as exc:
            if exc.code == "TURN_NOT_CONFIGURED":
                return []
            raise
        return [
            RTCIceServer(
                urls=list(turn["urls"]), username=turn["username"], credential=turn["credential"]
            )
        ]

    async def media_subscribe(self, session_id: str, watch: str | None = None) -> dict[str, Any]:
        """Through a media server (Janus): its offer of room ``watch``'s feed (a room leaves
        ``watch`` out: the host feed)."""
        body = EV.SubscribeIn(watch=watch).model_dump()
        return await self._epost(session_id, "media", "subscribe", body=body)

    async def media_subscription_answer(
        self, session_id: str, subscription: str, answer: dict[str, Any]
    ) -> dict[str, Any]:
        body = EV.SubscriptionAnswerIn(sdp=answer["sdp"], type=answer["type"]).model_dump()
        return await self._epost(
            session_id, "media", "subscriptions", subscription, "answer", body=body
        )

    # -- room device --

    async def sign_in_expert(
        self, session_id: str, expert_id: str, expert: Credentials
    ) -> ExpertClient:
        """Sign ``expert_id`` in at this room with the expert's own key; returns their client."""
        out = await self.expert_token(session_id, expert_id, expert)
        client = ExpertClient(self.base_url, expert, room=self, ssl_context=self.ssl_context)
        client.set_token(out.token, out.expires_at, out.expires_in)
        client.role, client.party_id, client.name = "expert", out.expert_id, out.name
        client.session_id = session_id
        # The room device keeps its signed-in experts' tokens alive while the room is active.
        client.keep_token_alive()
        return client

    async def expert_token(
        self, session_id: str, expert_id: str, expert: Credentials
    ) -> EV.ExpertSignInOut:
        """The sign-in itself: the expert's key signs the server's challenge for this room."""
        await self.ensure_login()
        challenge = S.ChallengeOut.model_validate(
            await self.call("POST", "/api/auth/challenge", auth=False)
        )
        doc = EV.sign_in_document(
            challenge.server, session_id, self.party_id or "", expert_id, challenge.nonce
        )
        signature = await asyncio.to_thread(expert.sign, doc, utc_now())
        body = EV.ExpertSignInIn(expert_id=expert_id, nonce=challenge.nonce, signature=signature)
        return EV.ExpertSignInOut.model_validate(
            await self._epost(session_id, "sign-in", body=body.model_dump())
        )

    async def no_key(self, session_id: str, expert_id: str) -> dict[str, Any]:
        return await self._epost(session_id, "members", expert_id, "no-key")


class ExpertClient(HallClient):
    """One expert at a room device: their token, and their key for signing."""

    def __init__(self, base_url: str, credentials: Credentials, *, room: EvalClient, **kw: Any):
        super().__init__(base_url, credentials, **kw)
        self.room = room
        self.session_id: str | None = None

    async def login(self) -> dict[str, Any]:
        """A lapsed token (the room device was off the network longer than a token lasts):
        with the expert's key still at the room device, sign in again there. The server
        answers a signed-in member at the same room with the same key with a new token and
        no new event. Without the key, the expert must sign in again in person."""
        if self.credentials is None or self.session_id is None or self.party_id is None:
            raise AgentError(
                "TOKEN_INVALID",
                "专家登录已过期，请在评标室重新签到",
                "the expert's session expired: sign in again at the room",
            )
        async with self._login_lock:
            out = await self.room.expert_token(self.session_id, self.party_id, self.credentials)
            self.set_token(out.token, out.expires_at, out.expires_in)
        self.keep_token_alive()
        return out.model_dump(mode="json")

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
        self,
        session_id: str,
        agree: bool = True,
        reason: str = "",
        report_sha256: str | None = None,
    ) -> dict[str, Any]:
        """Sign the report; with ``report_sha256``, only if it is still the report on record."""
        report = await self.report(session_id)
        if report_sha256 is not None and report["sha256"] != report_sha256:
            raise AgentError(
                "REPORT_CHANGED",
                "待签名的评标报告与服务器上的不一致",
                "the report to sign is not the one on record",
                report["sha256"],
            )
        doc = EV.report_document(session_id, self.party_id or "", report["sha256"], agree, reason)
        signature = await asyncio.to_thread(self._sign, doc)
        body = EV.ReportSignIn(agree=agree, reason=reason, signature=signature).model_dump()
        return await self.call("POST", eval_path(session_id, "report", "sign"), body)

    async def refuse_report(self, session_id: str, reason: str = "") -> dict[str, Any]:
        body = EV.RefuseIn(reason=reason).model_dump()
        return await self.call("POST", eval_path(session_id, "report", "refuse"), body)

    async def evaluation(self, session_id: str) -> dict[str, Any]:
        return await self.call("GET", eval_path(session_id))

    async def to_sign(self, session_id: str) -> dict[str, Any] | None:
        """The draft waiting for this expert's signature (from the expert desk), if any."""
        out = await self.call(
            "GET", eval_path(session_id, "members", self.party_id or "", "to-sign")
        )
        draft = out.get("draft")
        return dict(draft) if draft else None

    async def web_link(self, session_id: str) -> str:
        """A one-time link (one use, one minute) that opens the expert desk in a browser."""
        out = await self.call(
            "POST", "/api/auth/web-link", {"session_id": session_id, "page": "expert"}
        )
        return f"{self.base_url}{out['url']}"


Confirm = Callable[[dict[str, Any]], Awaitable[bool]]
Notice = Callable[[str], None]
DRAFT_EVENTS = ("sheet_to_sign", "report_to_sign")


def describe_draft(draft: dict[str, Any]) -> list[str]:
    """What the expert confirms at the room device before the key signs (Chinese, English)."""
    if draft["kind"] == "report":
        answer = "同意 agree" if draft["agree"] else f"不同意 disagree: {draft['reason']}"
        return [
            f"签署评标报告 sign the evaluation report {draft['report_sha256']}",
            f"  意见 answer: {answer}",
        ]
    content = draft["content"]
    lines = [
        f"评审表 sheet: 阶段 stage {draft['stage']}, 第 {draft.get('round', 1)} 轮 round, "
        f"SHA-256 {draft['sha256']}"
    ]
    for v in content.get("verdicts", []):
        verdict = "合格 pass" if v.get("passed") else f"不合格 fail: {v.get('reason', '')}"
        lines.append(f"  {v.get('bidder')} {v.get('item')}: {verdict}")
    for sc in content.get("scores", []):
        points = int(sc.get("points_x100", 0))
        lines.append(
            f"  {sc.get('bidder')} {sc.get('criterion')}: {points // 100}.{points % 100:02d}"
        )
    for adj in content.get("adjustments", []):
        lines.append(f"  {adj}")
    return lines


class ExpertDesk:
    """The room device signs what the expert drafted in the browser (评标室终端代为签名).

    The page cannot sign (no CA plugin in the browser); it hands its draft to the server, which
    shows it to this expert and this room only. The desk sees the draft in the event stream,
    asks the expert to confirm at the room device (``confirm``), signs with the expert's own key
    (file or token, never leaving the device) and submits through the ordinary routes; the page
    learns the outcome from the same events.
    """

    def __init__(
        self,
        expert: ExpertClient,
        session_id: str,
        *,
        confirm: Confirm,
        notice: Notice | None = None,
    ) -> None:
        self.expert = expert
        self.session_id = session_id
        self.confirm = confirm
        self.notice = notice or (lambda text: None)
        self.handled: set[int] = set()
        self.signed: list[dict[str, Any]] = []

    async def handle(self, draft: dict[str, Any]) -> dict[str, Any] | None:
        """Confirm, sign and submit one draft (once per request); None if not signed."""
        request = int(draft["request"])
        if request in self.handled:
            return None
        self.handled.add(request)
        if not await self.confirm(draft):
            self.notice(f"未签名 not signed: request {request}")
            return None
        sid = self.session_id
        try:
            if draft["kind"] == "sheet":
                out = await self.expert.submit_sheet(sid, draft["stage"], draft["content"])
            else:
                out = await self.expert.sign_report(
                    sid, draft["agree"], draft["reason"], report_sha256=draft["report_sha256"]
                )
        except AgentError as exc:
            self.notice(f"提交被拒绝 refused: {exc}")
            return None
        self.signed.append(draft)
        self.notice(f"已签名并提交 signed and submitted: request {request}")
        return out

    async def check(self) -> dict[str, Any] | None:
        """Sign the draft waiting now, if there is one (the latest: earlier ones were replaced)."""
        draft = await self.expert.to_sign(self.session_id)
        return await self.handle(draft) if draft else None

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Follow the session and sign each new draft until ``stop`` is set."""
        follower = HallFollower(self.expert, self.session_id)
        await follower.connect()
        try:
            await self.check()  # a draft made while the desk was away
            stop = stop or asyncio.Event()
            while not stop.is_set():
                getter = asyncio.ensure_future(follower.queue.get())
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for task in (getter, stopper):
                    if task not in done:
                        task.cancel()
                if getter not in done:
                    break
                record = getter.result()
                payload = record.get("payload", {})
                if (
                    record.get("type") in DRAFT_EVENTS
                    and payload.get("expert_id") == self.expert.party_id
                ):
                    await self.check()
        finally:
            await follower.close()


async def _once(data: bytes) -> Any:
    yield data
