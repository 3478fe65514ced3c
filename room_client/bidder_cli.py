"""``bidbridge bidder|host|supervisor ...``: the opening hall from a terminal (the parser).

Bidders upload, rehearse, sign in, follow the hall, decrypt, object and confirm; hosts run the
opening; supervisors watch and sign the record. Output is Chinese first, then English; errors
are ``crypto.errors.BidBridgeError`` so the entry point prints ``ERROR <code>: zh / en``.
The commands are in ``room_client.bidder_commands``, the shared options (``--server``, ``--key``,
``--token-uri`` ...) in ``room_client.cli_common``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from room_client.bidder_commands import (
    _ok,
    do_confirm,
    do_decrypt,
    do_follow,
    do_object,
    do_receipt,
    do_rehearse,
    do_sessions,
    do_sign_in,
    do_sign_record,
    do_status,
    do_upload,
    do_withdraw,
)
from room_client.cli_common import Action, UsageError, _common, _runner, _sid
from room_client.hall_text import (
    STATUSES,
    ProgressBar,
    describe,
    next_deadline,
    show_span,
    show_time,
)

if TYPE_CHECKING:  # the agent (aiohttp, socket.io) is imported only when a command runs
    from room_client.client import HallClient

__all__ = [
    "ProgressBar",
    "UsageError",
    "describe",
    "next_deadline",
    "register",
    "show_span",
    "show_time",
]

# --- parsers ---------------------------------------------------------------------------------------


def _add(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    action: Action,
    *,
    decrypt: bool = False,
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
    p.set_defaults(handler=_runner(action, decrypt=decrypt))
    return p


def _client_call(method: str, *fields: str) -> Callable[[HallClient, argparse.Namespace], Any]:
    def call(client: HallClient, args: argparse.Namespace) -> Any:
        return getattr(client, method)(_sid(args), *(getattr(args, f) for f in fields))

    return call


def _staff_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    names: tuple[str, ...],
) -> None:
    specs: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
        "publish": ("publish", "发布开标会", "published", ()),
        "start": ("start", "开标开始", "opening started", ()),
        "decrypt": ("open_decryption", "解密窗口已开启", "decryption window opened", ()),
        "confirmation": ("open_confirmation", "确认窗口已开启", "confirmation opened", ()),
        "suspend": ("suspend", "已暂停", "suspended", ("reason",)),
        "resume": ("resume", "已恢复", "resumed", ("reason",)),
        "extend": ("extend", "已延长", "extended", ("minutes", "reason")),
        "reply": ("reply", "已答复异议", "objection answered", ("objection_id", "text")),
    }
    helps = {
        "publish": "发布开标会 publish the session",
        "start": "开始开标（须截止后且有监督在场）start the opening (after the deadline, "
        "with a supervisor present)",
        "decrypt": "开启解密窗口 open the decryption window",
        "confirmation": "开启确认窗口（异议须已答复）open the confirmation window",
        "suspend": "暂停开标（须填原因）suspend, with a reason",
        "resume": "恢复开标（须填原因）resume, with a reason",
        "extend": "延长当前窗口（须填原因）extend the current window, with a reason",
        "reply": "答复异议 answer an objection",
    }
    for name in names:
        method, zh, en, fields = specs[name]
        p = _add(sub, name, helps[name], _ok(zh, en), common=common)
        if name == "extend":
            p.add_argument("--minutes", type=int, required=True, help="延长分钟数 minutes")
        if "reason" in fields:
            p.add_argument("--reason", required=True, help="原因（记入开标记录）the reason")
        if name == "reply":
            p.add_argument("objection_id", type=int, metavar="ID", help="异议编号 objection id")
            p.add_argument("text", metavar="TEXT", help="答复内容 the reply")
        p.set_defaults(call=_client_call(method, *fields))


def _follow_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--until",
        choices=STATUSES,
        metavar="STATUS",
        help=f"到达该状态时退出 exit when the session reaches STATUS ({', '.join(STATUSES)})",
    )
    p.add_argument(
        "--tick", type=float, default=1.0, help="倒计时刷新秒数 countdown refresh (seconds)"
    )


def _record_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    """``sign-record`` and ``status``, for the host and the supervisor alike."""
    _add(sub, "sign-record", "签名开标记录 sign the opening record", do_sign_record, common=common)
    _add(sub, "status", "查看开标会状态 show the session", do_status, common=common)


def _envelope_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--envelope", metavar="FILE", help="本地投标文件（免下载）the local sealed bid, if at hand"
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bidder``, ``host`` and ``supervisor`` to the ``bidbridge`` command."""
    common = _common()

    # bidder
    bp = sub.add_parser(
        "bidder",
        help="投标人：上传、签到、解密、确认 bidder: upload, sign in, decrypt, confirm",
        description="投标人在本单位参加不见面开标 a bidder's side of the no-show opening.",
    )
    bsub = bp.add_subparsers(dest="bidder_command", metavar="COMMAND", required=True)
    _add(bsub, "sessions", "列出开标会 list the sessions", do_sessions, common=common)
    p = _add(
        bsub,
        "upload",
        "上传（或替换）加密投标文件，打印回执 upload or replace the sealed bid; prints the receipt",
        do_upload,
        common=common,
    )
    p.add_argument("file", metavar="FILE", help="加密后的投标文件 the sealed bid (.p7m)")
    p.add_argument(
        "--no-check",
        action="store_true",
        help="不在本地检查信封 skip the local envelope check before uploading",
    )
    p.add_argument("--save-receipt", metavar="JSON", help="保存回执 save the receipt here")
    _add(
        bsub,
        "withdraw",
        "截止前撤回投标文件 withdraw the bid before the deadline",
        do_withdraw,
        common=common,
    )
    p = _add(
        bsub, "receipt", "查看并验证回执 show and verify the receipt", do_receipt, common=common
    )
    p.add_argument("--out", metavar="JSON", help="保存回执 save the receipt and its signature")
    p = _add(
        bsub,
        "rehearse",
        "解密演练：下载已上传的文件并在本机用 CA 锁试解密 rehearsal: download the stored bid and "
        "open it locally with your key (nothing secret is sent)",
        do_rehearse,
        decrypt=True,
        common=common,
    )
    p.add_argument("--workdir", metavar="DIR", help="临时目录 where to work (default: system temp)")
    _add(bsub, "sign-in", "签到 sign in to the hall", do_sign_in, common=common)
    p = _add(
        bsub,
        "follow",
        "在终端跟随开标大厅：倒计时、状态、解密、唱标、异议 follow the hall: countdown, status, "
        "decryption, the table, objections",
        do_follow,
        common=common,
    )
    _follow_options(p)
    p.add_argument(
        "--decrypt",
        action="store_true",
        help="解密窗口开启时自动解密 decrypt when the window opens",
    )
    p.add_argument(
        "--confirm",
        action="store_true",
        help="确认窗口开启时自动签名确认 confirm the table when confirmation opens",
    )
    _envelope_option(p)
    p = _add(
        bsub,
        "decrypt",
        "在线解密：本机解开内容密钥并发送 decrypt: unwrap the content key locally and send it",
        do_decrypt,
        decrypt=True,
        common=common,
    )
    _envelope_option(p)
    p = _add(bsub, "object", "提出异议 raise an objection", do_object, common=common)
    p.add_argument("text", metavar="TEXT", help="异议内容 the objection")
    _add(
        bsub,
        "confirm",
        "签名确认开标记录表 sign the opening table to confirm it",
        do_confirm,
        common=common,
    )

    # host
    hp = sub.add_parser(
        "host",
        help="主持人：开标、解密、确认、答复异议 host: run the opening",
        description="主持人操作开标 the host runs the opening.",
    )
    hsub = hp.add_subparsers(dest="host_command", metavar="COMMAND", required=True)
    _staff_commands(
        hsub,
        common,
        ("publish", "start", "decrypt", "confirmation", "suspend", "resume", "extend", "reply"),
    )
    _record_commands(hsub, common)
    p = _add(hsub, "follow", "跟随开标大厅 follow the hall", do_follow, common=common)
    _follow_options(p)

    # supervisor
    sp = sub.add_parser(
        "supervisor",
        help="监督：在线监督、签名开标记录 supervisor: watch and sign the record",
        description="监督人员在线监督开标 the supervisor watches the opening live.",
    )
    ssub = sp.add_subparsers(dest="supervisor_command", metavar="COMMAND", required=True)
    p = _add(
        ssub,
        "join",
        "进入开标大厅并保持在线（开标须监督在场）join the hall and stay (the opening needs a "
        "supervisor present)",
        do_follow,
        common=common,
    )
    _follow_options(p)
    _record_commands(ssub, common)
    _staff_commands(ssub, common, ("suspend", "resume"))
