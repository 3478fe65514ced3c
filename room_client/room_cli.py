"""``bidbridge room``: the evaluation room's agent (评标室终端).

* ``room run`` logs in with the room's device certificate, keeps the live link to the lead site
  (socket.io for events, WebRTC for audio and video), publishes the room's camera and microphone
  (``--source synthetic``, ``file:PATH`` or a device such as ``v4l2:/dev/video0``), receives the
  host feed and prints the session's events as they come.
* ``room sign-in`` signs an expert in at this room with the expert's own CA key (file or
  PKCS#11 token) and saves the expert's session for the commands below.
* ``room expert ...`` acts for a signed-in expert: vote for the chair, submit a signed sheet,
  close a stage or summarize (the chair), sign or refuse the report.
* ``room desk`` serves the expert desk (the browser page): it signs the expert in (again), prints
  the page's one-time link for the room's screen, and signs with the expert's key what the page
  hands over (a sheet, the answer to the report) once the expert confirms here (or ``--yes``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from room_client.cli_common import UsageError, _common, _sid, _ssl, load_credentials, out


def _room_client(args: argparse.Namespace) -> Any:
    from room_client.evaluation import EvalClient

    if not args.server:
        raise UsageError("需要 --server / give --server URL")
    return EvalClient(args.server, load_credentials(args), ssl_context=_ssl(args))


async def _run(args: argparse.Namespace) -> int:
    from room_client.follower import HallFollower
    from room_client.media import RoomMedia

    sid = _sid(args)
    client = _room_client(args)
    media: RoomMedia | None = None
    feeds: list[Any] = []  # the host feed's own link (with a media server)
    host: asyncio.Future[None] | None = None
    try:
        login = await client.login()
        out(f"评标室 room {login['party_id']} 已登录 / logged in")
        ice = await client.ice_servers()
        if ice:
            out(f"经 TURN 中继连线 / TURN relay offered: {', '.join(ice[0].urls)}")
        media = RoomMedia(args.source, label=args.label or "room", ice_servers=ice)

        def show(event: dict[str, Any]) -> None:
            out(
                f"  [{str(event.get('id') or '')[:8]}] {event['type']} "
                f"{json.dumps(event['payload'], ensure_ascii=False)[:160]}"
            )

        follower = HallFollower(client, sid, on_event=show)
        await follower.connect()
        answers: list[dict[str, Any]] = []

        async def offer(sdp: dict[str, str]) -> dict[str, str]:
            answers.append(await client.media_offer(sid, sdp))
            return answers[-1]

        await media.connect(offer)
        await media.wait_connected()
        out("音视频已连接 / audio and video linked to the lead site")
        if answers[-1].get("watch_by_subscription"):
            # a media server (Janus): the host feed comes over a link of its own
            host = asyncio.ensure_future(_host_feed(client, sid, feeds, ice))
        deadline = asyncio.get_running_loop().time() + args.seconds if args.seconds else None
        while deadline is None or asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(5)
            received = feeds[0].frames_received if feeds else media.frames_received
            out(f"  主场画面 host feed frames: {received}, sent: {media.frames_sent}")
        await follower.close()
        return 0
    finally:
        if host is not None:
            host.cancel()
            await asyncio.gather(host, return_exceptions=True)
        for feed in feeds:
            await feed.close()
        if media is not None:
            await media.close()
        await client.close()


async def _host_feed(client: Any, sid: str, feeds: list[Any], ice: list[Any]) -> None:
    """Receive the lead room's feed through the media server; subscribe again whenever the lead
    room is not linked yet or the link drops."""
    from room_client.client import AgentError
    from room_client.media import SubscriberMedia

    view = await client.evaluation(sid)
    if (view.get("room") or {}).get("role") == "lead":
        return  # this room's own feed is the host feed
    while True:
        feed = SubscriberMedia(ice_servers=ice)
        try:
            await feed.connect(
                lambda: client.media_subscribe(sid),
                lambda sub, answer: client.media_subscription_answer(sid, sub, answer),
            )
            await feed.wait_connected()
        except (AgentError, ConnectionError, ValueError) as exc:
            await feed.close()
            out(f"  主场画面暂不可用 host feed not available yet: {exc}")
            await asyncio.sleep(3)
            continue
        feeds[:] = [feed]
        out("主场画面已接收 / receiving the host feed through the media server")
        while feed.connection_state not in ("failed", "closed"):
            await asyncio.sleep(2)
        await feed.close()


async def _sign_in(args: argparse.Namespace) -> int:
    from room_client.credentials import Credentials

    sid = _sid(args)
    expert = Credentials.load(
        key=args.expert_key, cert=args.expert_cert, token_uri=args.expert_token_uri, chain=[]
    )
    client = _room_client(args)
    try:
        expert_client = await client.sign_in_expert(sid, args.expert_id, expert)
        saved = {
            "server": args.server,
            "session": sid,
            "expert_id": expert_client.party_id,
            "name": expert_client.name,
            "token": expert_client.token,
            "expires_at": expert_client.token_expires_at.isoformat()
            if isinstance(expert_client.token_expires_at, datetime)
            else None,
        }
        Path(args.save).write_text(json.dumps(saved, ensure_ascii=False, indent=2))
        Path(args.save).chmod(0o600)
        out(
            f"专家 {expert_client.name} ({expert_client.party_id}) 已签到 / signed in; "
            f"session saved to {args.save}"
        )
        await expert_client.close()
        return 0
    finally:
        expert.close()
        await client.close()


async def _expert(args: argparse.Namespace) -> int:
    from room_client.credentials import Credentials
    from room_client.evaluation import EvalClient, ExpertClient

    saved = json.loads(Path(args.expert_session).read_text())
    creds = None
    if args.action in ("sheet", "sign-report"):
        creds = Credentials.load(
            key=args.expert_key, cert=args.expert_cert, token_uri=args.expert_token_uri, chain=[]
        )
    room = EvalClient(saved["server"], None)
    client = ExpertClient(saved["server"], creds, room=room)  # type: ignore[arg-type]
    client.token, client.party_id, client.role = saved["token"], saved["expert_id"], "expert"
    sid = saved["session"]
    try:
        if args.action == "view":
            res = await client.evaluation(sid)
        elif args.action == "vote":
            res = await client.vote(sid, args.candidate)
        elif args.action == "sheet":
            content = json.loads(Path(args.file).read_text(encoding="utf-8"))
            res = await client.submit_sheet(sid, args.stage, content)
        elif args.action == "close-stage":
            res = await client.close_stage(sid)
        elif args.action == "summarize":
            res = await client.summarize(sid)
        elif args.action == "sign-report":
            res = await client.sign_report(sid, agree=not args.disagree, reason=args.reason)
        else:
            res = await client.refuse_report(sid, args.reason)
        out(json.dumps(res, ensure_ascii=False, indent=2))
        return 0
    finally:
        if creds is not None:
            creds.close()
        await client.close()
        await room.close()


async def _confirm_at_terminal(draft: dict[str, Any]) -> bool:
    from room_client.evaluation import describe_draft

    out("", "专家评标网页提交了待签名内容 / the expert desk asks for a signature:")
    out(*describe_draft(draft))
    try:
        answer = await asyncio.to_thread(
            input, "用专家证书签名并提交？Sign with the expert's key and submit? [y/N] "
        )
    except EOFError:  # no terminal to confirm at: nothing is signed
        out("没有终端输入，未签名 / no terminal input: not signed (use --yes for unattended use)")
        return False
    return answer.strip().lower() in ("y", "yes", "是")


async def _desk(args: argparse.Namespace) -> int:
    from room_client.credentials import Credentials
    from room_client.evaluation import ExpertDesk, describe_draft

    sid = _sid(args)
    expert = Credentials.load(
        key=args.expert_key, cert=args.expert_cert, token_uri=args.expert_token_uri, chain=[]
    )
    client = _room_client(args)
    expert_client = None
    try:
        expert_client = await client.sign_in_expert(sid, args.expert_id, expert)
        out(f"专家 {expert_client.name} ({expert_client.party_id}) 已签到 / signed in")
        link = await expert_client.web_link(sid)
        out(
            "在评标室屏幕上打开专家评标网页（一次有效，60 秒内）/ open the expert desk on the "
            "room's screen (one use, within 60 s):",
            f"  {link}",
        )
        if args.link_only:
            return 0

        async def yes(draft: dict[str, Any]) -> bool:
            out("", "自动签名 signing unattended (--yes):", *describe_draft(draft))
            return True

        desk = ExpertDesk(
            expert_client, sid, confirm=yes if args.yes else _confirm_at_terminal, notice=out
        )
        stop = asyncio.Event()
        if args.seconds:
            asyncio.get_running_loop().call_later(args.seconds, stop.set)
        out("等待专家评标网页提交 / waiting for the expert desk's drafts (Ctrl-C to stop)")
        await desk.run(stop)
        return 0
    finally:
        if expert_client is not None:
            await expert_client.close()
        expert.close()
        await client.close()


def _handler(coro: Any) -> Any:
    def handler(args: argparse.Namespace) -> int:
        with contextlib.suppress(KeyboardInterrupt):
            return int(asyncio.run(coro(args)))
        return 0

    return handler


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = _common()
    rp = sub.add_parser(
        "room",
        help="评标室终端：音视频、专家签到、评审 the evaluation room's agent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub = rp.add_subparsers(dest="room_command", metavar="COMMAND", required=True)
    p = rsub.add_parser(
        "run",
        parents=[common],
        help="连接主场：事件与音视频 link to the lead site: events, audio and video",
    )
    p.add_argument(
        "--source",
        default="synthetic",
        help="摄像头/麦克风 camera and microphone: synthetic, file:PATH, v4l2:/dev/video0 ...",
    )
    p.add_argument("--label", help="画面标签 label drawn on the synthetic picture")
    p.add_argument("--seconds", type=float, default=0, help="运行秒数 run this long (0: forever)")
    p.set_defaults(handler=_handler(_run))

    p = rsub.add_parser(
        "sign-in",
        parents=[common],
        help="专家用本人 CA 证书签到 sign an expert in with the expert's own CA key",
    )
    _expert_key_args(p)
    p.add_argument("--expert-id", required=True, help="专家编号 the expert's id")
    p.add_argument("--save", required=True, metavar="JSON", help="保存专家会话 save the session")
    p.set_defaults(handler=_handler(_sign_in))

    p = rsub.add_parser(
        "desk",
        parents=[common],
        help="专家评标网页：一次性链接，并在本终端为网页签名 the expert desk: its link, and signing "
        "what it drafts",
        description="签到专家、打印专家评标网页的一次性链接，并在专家于本终端确认后，用专家本人的 "
        "CA 证书签名网页提交的评审表或评标报告意见。Signs the expert in, prints the expert "
        "desk's one-time link, and signs with the expert's own key (file or PKCS#11 token) the "
        "sheets and report answers the page drafts, after the expert confirms at this terminal "
        "(or unattended with --yes). Run it again for a new link.",
    )
    _expert_key_args(p)
    p.add_argument("--expert-id", required=True, help="专家编号 the expert's id")
    p.add_argument(
        "--yes", action="store_true", help="不逐项确认，自动签名 sign without asking (unattended)"
    )
    p.add_argument(
        "--link-only", action="store_true", help="只打印链接 print the page's link and exit"
    )
    p.add_argument("--seconds", type=float, default=0, help="运行秒数 run this long (0: forever)")
    p.set_defaults(handler=_handler(_desk))

    ep = rsub.add_parser("expert", help="专家操作 act for a signed-in expert")
    esub = ep.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("view", "查看评标 show the evaluation"),
        ("vote", "推选主任 vote for the chair"),
        ("sheet", "提交并签名评审表 submit a signed sheet"),
        ("close-stage", "主任：结束本阶段 chair: close the stage"),
        ("summarize", "主任：汇总排名 chair: compute the ranking"),
        ("sign-report", "签署评标报告 sign the report"),
        ("refuse-report", "拒签评标报告 refuse to sign"),
    ):
        p = esub.add_parser(name, help=text, description=text)
        p.add_argument("--expert-session", required=True, metavar="JSON", help="from room sign-in")
        if name in ("sheet", "sign-report"):
            _expert_key_args(p)
        if name == "vote":
            p.add_argument("candidate", help="候选专家编号 the candidate's id")
        if name == "sheet":
            p.add_argument("--stage", required=True)
            p.add_argument("file", help="评审表 JSON the sheet")
        if name in ("sign-report", "refuse-report"):
            p.add_argument("--reason", default="", help="理由 the reason (required to disagree)")
        if name == "sign-report":
            p.add_argument(
                "--disagree", action="store_true", help="不同意 disagree (with --reason)"
            )
        p.set_defaults(handler=_handler(_expert))


def _expert_key_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("专家证书 the expert's key")
    g.add_argument("--expert-cert", metavar="PEM", help="专家签名证书 the expert's certificate")
    g.add_argument("--expert-key", metavar="PEM_OR_P12", help="专家私钥文件 key file")
    g.add_argument("--expert-token-uri", metavar="URI", help="专家 CA 锁 PKCS#11 URI")
