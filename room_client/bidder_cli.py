"""``bidbridge bidder|host|supervisor ...``: the opening hall from a terminal.

Bidders upload, rehearse, sign in, follow the hall, decrypt, object and confirm; hosts run the
opening; supervisors watch and sign the record. Output is Chinese first, then English; errors
are ``crypto.errors.BidBridgeError`` so the entry point prints ``ERROR <code>: zh / en``.

Key files and tokens as in ``bidbridge seal``: ``--key FILE`` (PEM, DER or PKCS#12, password in
``$BIDBRIDGE_KEY_PASSWORD``) or ``--token-uri URI`` (PKCS#11, PIN in ``$BIDBRIDGE_PIN`` or in the
URI); the same for the encryption certificate's key with ``--decrypt-...``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from crypto.errors import BidBridgeError

if TYPE_CHECKING:  # the agent (aiohttp, socket.io) is imported only when a command runs
    from room_client.agent import Credentials, HallClient, HallFollower

SERVER_ENV = "BIDBRIDGE_SERVER"
SESSION_ENV = "BIDBRIDGE_SESSION"
BEIJING = timezone(timedelta(hours=8), "北京时间")
STATUSES = (
    "draft",
    "published",
    "sign_in",
    "sealed",
    "opening",
    "decrypting",
    "announcing",
    "confirming",
    "closed",
    "failed",
    "suspended",
)
STATUS_TEXT = {
    "draft": "草稿 draft",
    "published": "已发布 published",
    "sign_in": "签到中 sign-in open",
    "sealed": "已封标 sealed",
    "opening": "开标中 opening",
    "decrypting": "解密中 decrypting",
    "announcing": "唱标 announcing",
    "confirming": "确认中 confirming",
    "closed": "已结束 closed",
    "failed": "流标 failed",
    "suspended": "已暂停 suspended",
}
BID_TEXT = {
    "uploaded": "已上传 uploaded",
    "retracted": "已撤回 retracted",
    "decrypted": "已解密 decrypted",
    "failed": "解密失败 decryption failed",
    "revoked": "撤销 revoked (bidder's fault)",
    "withdrawn": "撤回 withdrawn (platform fault)",
}
TERMINAL = ("closed", "failed")
REFRESH_ON = frozenset(
    {
        "session_published",
        "sign_in_opened",
        "session_sealed",
        "session_failed",
        "opening_started",
        "decryption_opened",
        "decryption_closed",
        "bid_decrypted",
        "decryption_failed",
        "bid_revoked",
        "bid_withdrawn",
        "table_published",
        "confirmation_opened",
        "table_confirmed",
        "confirmation_closed",
        "record_generated",
        "record_signed",
        "record_published",
        "session_suspended",
        "session_resumed",
        "window_extended",
        "bid_uploaded",
        "bid_retracted",
    }
)


QUIET = frozenset({"checkpoint"})
"""Audit-log internals not shown when following the hall."""


class UsageError(BidBridgeError):
    code = "USAGE"
    zh = "命令参数不完整"
    en = "a required option is missing"


# --- formatting ------------------------------------------------------------------------------------


def show_time(value: str | datetime | None) -> str:
    """An instant in Beijing time (the centre's), e.g. ``2026-03-01 09:30:00 北京时间``."""
    if value is None:
        return "-"
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S 北京时间")


def show_span(span: timedelta) -> str:
    """A countdown: ``2天 03:04:05``; ``已过 passed`` once negative."""
    seconds = int(span.total_seconds())
    if seconds < 0:
        return "已到 reached"
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    clock = f"{h:02d}:{m:02d}:{s:02d}"
    return f"{days}天 days {clock}" if days else clock


def show_fen(fen: Any) -> str:
    if not isinstance(fen, int):
        return "-"
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan:,}.{cents:02d} 元"


def show_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def table_lines(table: dict[str, Any]) -> list[str]:
    """The opening table (开标记录表 / 唱标) as text lines."""
    rows = table.get("rows") or []
    lines = [f"开标记录表 opening table — {table.get('lot_id', '')} ({len(rows)} 份 bids)"]
    for i, r in enumerate(rows, 1):
        status = BID_TEXT.get(str(r.get("status")), str(r.get("status")))
        lines.append(f"  {i}. {r.get('bidder_name') or ''} ({r.get('bidder')}) — {status}")
        details = [f"投标报价 price: {show_fen(r.get('price_fen'))}"]
        if r.get("duration_days") is not None:
            details.append(f"工期 duration: {r['duration_days']} 天 days")
        if r.get("quality"):
            details.append(f"质量 quality: {r['quality']}")
        if r.get("project_manager"):
            details.append(f"项目经理 PM: {r['project_manager']}")
        lines.append("     " + "; ".join(details))
        fields = r.get("fields") or {}
        if fields:
            lines.append("     " + "; ".join(f"{k}: {v}" for k, v in fields.items()))
        sec = r.get("security")
        if sec:
            lines.append(
                f"     保证金 security: {sec.get('kind')} {sec.get('status')} "
                f"{show_fen(sec.get('amount_fen'))}"
            )
    return lines


def describe(record: dict[str, Any], me: str | None = None) -> str:
    """One line (zh / en) for an event of the hall."""
    t = record.get("type", "")
    p: dict[str, Any] = record.get("payload") or {}
    who = p.get("bidder") or ""
    own = me is not None and who == me
    name = "本单位 us" if own else str(who)
    at = show_time(record.get("at"))
    prefix = f"[{record.get('seq')}] {at} "

    def reason() -> str:
        return f"（原因 reason: {p.get('reason')}）" if p.get("reason") else ""

    text: str
    if t == "session_created":
        text = "已创建开标会 session created"
    elif t == "session_published":
        deadline = (p.get("timetable") or {}).get("deadline")
        text = f"已发布，投标截止 {show_time(deadline)} / published; bid deadline as shown"
    elif t == "sign_in_opened":
        text = "签到开始 sign-in opened"
    elif t == "bid_uploaded":
        r = p.get("receipt") or {}
        again = "（替换原文件 replaces the earlier file）" if p.get("replaces") else ""
        text = (
            f"投标文件已上传 bid uploaded{again}: 回执 receipt {r.get('receipt_id')}, "
            f"{r.get('size')} 字节 bytes, SHA-256 {r.get('envelope_sha256')}"
        )
    elif t == "bid_retracted":
        text = "投标文件已撤回 bid withdrawn before the deadline"
    elif t == "rehearsal_reported":
        ok = "通过 passed" if p.get("passed") else f"未通过 failed — {p.get('message')}"
        text = f"解密演练 rehearsal: {ok}"
    elif t == "bidder_signed_in":
        text = f"{name} 已签到 signed in"
    elif t == "session_sealed":
        text = "投标截止，已封标 deadline reached; bids sealed"
    elif t == "session_failed":
        text = f"流标：有效投标少于 {p.get('min_bids')} 家 / failed: fewer than the minimum bids"
    elif t == "bids_counted":
        text = f"投标 {p.get('bids')} 家，签到 {p.get('signed_in')} 家 / bids and sign-ins counted"
    elif t == "opening_started":
        text = f"开标开始（{p.get('bids')} 份投标）opening started ({p.get('bids')} bids)"
    elif t == "decryption_opened":
        text = f"解密开始，截止 {show_time(p.get('closes_at'))} / decryption window opened"
    elif t == "bid_decrypted":
        via = "（备用解密 backup）" if p.get("via") == "backup" else ""
        text = f"{name} 解密成功 decrypted{via}"
    elif t == "decryption_failed":
        a = p.get("attempt") or {}
        cause = "平台原因 platform" if a.get("cause") == "platform" else "投标人原因 bidder"
        text = f"{name} 解密失败 decryption failed [{a.get('code')}, {cause}]: {a.get('message')}"
    elif t == "bid_revoked":
        text = f"{name} 投标被撤销（投标人原因未解密）revoked: not decrypted, bidder's fault"
    elif t == "bid_withdrawn":
        text = f"{name} 投标撤回（平台原因未解密）withdrawn: not decrypted, platform fault"
    elif t == "decryption_closed":
        text = "解密结束 decryption window closed"
    elif t == "table_published":
        text = "\n".join(["开标记录表已公布 opening table published", *table_lines(p["table"])])
    elif t == "objection_raised":
        text = f"异议 #{p.get('id')}（{name}）objection: {p.get('text')}"
    elif t == "objection_answered":
        text = f"答复异议 #{p.get('id')} reply: {p.get('text')}"
    elif t == "confirmation_opened":
        text = f"确认开始，截止 {show_time(p.get('closes_at'))} / confirmation window opened"
    elif t == "table_confirmed":
        text = f"{name} 已签名确认开标记录表 confirmed the table"
    elif t == "confirmation_closed":
        deemed = p.get("deemed") or []
        text = (
            f"确认结束，{len(deemed)} 家未签视为确认 / confirmation closed; silence deemed consent"
        )
    elif t == "record_generated":
        text = f"开标记录已生成 record generated (SHA-256 {p.get('record_sha256')})"
    elif t == "record_signed":
        text = f"开标记录已由 {p.get('role')} 签名 / record signed by the {p.get('role')}"
    elif t == "record_published":
        text = "开标记录已公布，开标结束 record published; the opening is closed"
    elif t == "session_suspended":
        text = f"开标暂停 suspended{reason()}"
    elif t == "session_resumed":
        text = f"开标恢复 resumed{reason()}"
    elif t == "window_extended":
        window = {"deadline": "投标截止 deadline", "decryption": "解密 decryption"}.get(
            str(p.get("window")), "确认 confirmation"
        )
        text = f"{window} 延长 extended by {p.get('minutes')} 分钟 minutes{reason()}"
    elif t == "incident_recorded":
        text = f"记录平台故障 incident recorded{reason()}"
    elif t == "security_recorded":
        sec = p.get("security") or {}
        text = f"{name} 保证金 security: {sec.get('kind')} {sec.get('status')}"
    elif t == "party_joined":
        text = f"{p.get('role')} {p.get('account')} 进入 joined"
    elif t == "party_left":
        text = f"{p.get('role')} {p.get('account')} 离开 left"
    elif t == "backup_requested":
        text = f"申请备用解密 backup decryption requested: {', '.join(p.get('bidders') or [])}"
        text += reason()
    elif t == "backup_approved":
        text = f"{p.get('custodian')} 批准备用解密 approved backup request {p.get('request_id')}"
    elif t == "backup_quorum_reached":
        text = f"备用解密达到法定人数 backup quorum reached ({p.get('request_id')})"
    elif t == "checkpoint":
        text = "日志检查点 log checkpoint"
    else:
        text = t
    return prefix + text


def next_deadline(view: dict[str, Any]) -> tuple[str, str] | None:
    """(label, ISO instant) of the deadline the session is waiting for, if any."""
    status = view.get("status")
    tt = view.get("timetable") or {}
    if status == "published" and tt.get("sign_in_opens"):
        return "距签到开始 until sign-in opens", str(tt["sign_in_opens"])
    if status in ("published", "sign_in") and tt.get("deadline"):
        return "距投标截止 until the bid deadline", str(tt["deadline"])
    if status == "decrypting" and view.get("decrypt_closes_at"):
        return "距解密截止 until decryption closes", str(view["decrypt_closes_at"])
    if status == "confirming" and view.get("confirm_closes_at"):
        return "距确认截止 until confirmation closes", str(view["confirm_closes_at"])
    return None


class ProgressBar:
    """An upload progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, label: str = "上传 uploading", stream: IO[str] | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.last_draw = 0.0
        self.last_step = -1

    def __call__(self, sent: int, total: int) -> None:
        now = time.monotonic()
        done = sent >= total
        fraction = sent / total if total else 1.0
        rate = sent / max(now - self.started, 1e-6)
        if self.tty:
            if not done and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            width = 30
            filled = int(width * fraction)
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(
                f"\r{self.label} [{bar}] {fraction * 100:5.1f}% "
                f"{show_size(sent)}/{show_size(total)} {show_size(rate)}/s"
            )
            if done:
                self.stream.write("\n")
        else:
            step = int(fraction * 10)
            if step == self.last_step:
                return
            self.last_step = step
            self.stream.write(f"{self.label} {step * 10}% ({show_size(sent)}/{show_size(total)})\n")
        self.stream.flush()


# --- options, credentials, running -----------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("服务器 server")
    g.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get(SERVER_ENV),
        help=f"开标服务器地址 the opening server's URL (default ${SERVER_ENV})",
    )
    g.add_argument(
        "--session",
        metavar="ID",
        default=os.environ.get(SESSION_ENV),
        help=f"开标会（标段）编号 the session id (default ${SESSION_ENV})",
    )
    g.add_argument(
        "--ca-file",
        metavar="PEM",
        help="验证服务器 TLS 证书的根证书 CA certificates for the server's TLS certificate",
    )
    k = p.add_argument_group(
        "签名证书 signing key",
        "登录和签名用的 CA 证书及私钥 the key and certificate for login and signatures. "
        "Password: $BIDBRIDGE_KEY_PASSWORD; token PIN: $BIDBRIDGE_PIN.",
    )
    k.add_argument("--key", metavar="PEM_OR_P12", help="私钥文件 private key file (PEM/DER/P12)")
    k.add_argument("--token-uri", metavar="URI", help="CA 锁上的私钥 PKCS#11 URI (RFC 7512)")
    k.add_argument("--cert", metavar="PEM", help="签名证书 the signing certificate")
    k.add_argument(
        "--chain", action="append", default=[], metavar="PEM", help="中间证书 intermediates"
    )
    d = p.add_argument_group(
        "加密证书私钥 decryption key",
        "用于解密演练和在线解密 for the rehearsal and the online decryption",
    )
    d.add_argument("--decrypt-key", metavar="PEM_OR_P12", help="加密证书的私钥文件 key file")
    d.add_argument("--decrypt-token-uri", metavar="URI", help="CA 锁上的解密私钥 PKCS#11 URI")
    d.add_argument("--decrypt-cert", metavar="PEM", help="加密证书 the encryption certificate")
    return p


def _pin(args: argparse.Namespace) -> str | None:
    pin = os.environ.get("BIDBRIDGE_PIN")
    if pin:
        return pin
    uris = [u for u in (args.token_uri, getattr(args, "decrypt_token_uri", None)) if u]
    if not uris:
        return None
    from crypto.token import parse_uri

    if all(parse_uri(u).resolve_pin() is not None for u in uris):
        return None  # the URIs carry their PINs
    if sys.stdin.isatty():
        return getpass.getpass("CA 锁 PIN / token PIN: ")
    return None


def load_credentials(args: argparse.Namespace, *, decrypt: bool = False) -> Credentials:
    from room_client.agent import Credentials

    if bool(args.key) == bool(args.token_uri):
        raise UsageError("需要 --key 或 --token-uri 之一 / give one of --key FILE, --token-uri URI")
    if args.decrypt_key and args.decrypt_token_uri:
        raise UsageError("--decrypt-key 与 --decrypt-token-uri 只能选一 / give only one of them")
    if decrypt and not (args.decrypt_key or args.decrypt_token_uri):
        raise UsageError(
            "需要 --decrypt-key 或 --decrypt-token-uri / give the encryption certificate's key"
        )
    return Credentials.load(
        key=args.key,
        cert=args.cert,
        token_uri=args.token_uri,
        chain=args.chain,
        decrypt_key=args.decrypt_key,
        decrypt_cert=args.decrypt_cert,
        decrypt_token_uri=args.decrypt_token_uri,
        pin=_pin(args),
    )


def _sid(args: argparse.Namespace) -> str:
    if not args.session:
        raise UsageError(f"需要 --session / give --session ID (or set ${SESSION_ENV})")
    return str(args.session)


def _ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.ca_file:
        return None
    return ssl.create_default_context(cafile=args.ca_file)


Action = Callable[["HallClient", argparse.Namespace], Awaitable[int]]


def _runner(action: Action, *, decrypt: bool = False) -> Callable[[argparse.Namespace], int]:
    """A handler: load the keys, log in, run ``action``, close everything."""

    def handler(args: argparse.Namespace) -> int:
        from room_client.agent import HallClient

        if not args.server:
            raise UsageError(f"需要 --server / give --server URL (or set ${SERVER_ENV})")
        creds = load_credentials(args, decrypt=decrypt)

        async def main() -> int:
            async with HallClient(args.server, creds, ssl_context=_ssl(args)) as client:
                await client.login()
                return await action(client, args)

        try:
            return asyncio.run(main())
        finally:
            creds.close()

    return handler


def out(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


# --- bidder ----------------------------------------------------------------------------------------


async def do_sessions(client: HallClient, args: argparse.Namespace) -> int:
    sessions = await client.sessions()
    if not sessions:
        out("没有开标会 no sessions")
    for s in sessions:
        status = STATUS_TEXT.get(s.get("status", ""), s.get("status", ""))
        out(
            f"{s['session_id']}  {s.get('title', '')}  [{status}]  "
            f"投标截止 deadline {show_time(s.get('deadline'))}"
        )
    return 0


def _check_envelope(path: Path, creds: Credentials | None) -> None:
    """Refuse locally what the server would refuse after the whole upload (rule 3)."""
    from crypto.envelope import inspect_envelope, is_addressed_to
    from crypto.errors import NotARecipient

    info = inspect_envelope(path)
    cert = creds.decrypt_cert if creds is not None else None
    if cert is not None and not is_addressed_to(info, cert):
        raise NotARecipient(f"{path}")


def _print_receipt(data: dict[str, Any]) -> None:
    from room_client.agent import verify_receipt

    r = data["receipt"]
    doc = verify_receipt(r, data["signature"])
    out(
        "回执 receipt:",
        f"  回执号 receipt id: {r.get('receipt_id')}",
        f"  开标会 session: {r.get('session_id')}  标段 lot: {r.get('lot_id')}",
        f"  投标人 bidder: {r.get('bidder_name')} ({r.get('bidder')})",
        f"  SHA-256: {r.get('envelope_sha256')}",
        f"  大小 size: {r.get('size')} 字节 bytes",
        f"  接收时间 received at: {show_time(r.get('received_at'))}",
        f"  服务器签名有效 server signature valid: {doc.signer.subject.rfc4514_string()}",
    )


async def do_upload(client: HallClient, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not args.no_check:
        await asyncio.to_thread(_check_envelope, path, client.credentials)
    bar = ProgressBar()
    data = await client.upload(_sid(args), path, progress=bar)
    out("已上传 uploaded")
    _print_receipt(data)
    if args.save_receipt:
        Path(args.save_receipt).write_text(json.dumps(data, ensure_ascii=False, indent=2))
        out(f"回执已保存 receipt saved: {args.save_receipt}")
    return 0


async def do_withdraw(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.retract(_sid(args))
    out(f"投标文件已撤回 bid withdrawn (seq {res.get('seq')})")
    return 0


async def do_receipt(client: HallClient, args: argparse.Namespace) -> int:
    data = await client.receipt(_sid(args))
    _print_receipt(data)
    if args.out:
        Path(args.out).write_text(json.dumps(data, ensure_ascii=False, indent=2))
        out(f"回执已保存 receipt saved: {args.out}")
    return 0


async def do_rehearse(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.rehearse(_sid(args), args.workdir)
    if res["passed"]:
        s = res.get("summary") or {}
        out(
            "解密演练通过 rehearsal passed: 服务器保存的投标文件可以用您的 CA 锁解开 / the stored "
            "bid opens with your key",
            f"  投标报价（仅本机显示）price, shown only here: {show_fen(s.get('price_fen'))}",
        )
        return 0
    out(f"解密演练未通过 rehearsal FAILED [{res['code']}]: {res['zh']} / {res['en']}")
    out("  请在投标截止前重新封装并上传 / seal and upload again before the deadline")
    return 1


async def do_sign_in(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.sign_in(_sid(args))
    out(f"已签到 signed in (seq {res.get('seq')})")
    return 0


def _print_decrypt(res: dict[str, Any]) -> None:
    if res.get("ok"):
        out("解密成功 decrypted: 服务器已验证投标文件 / the server verified the bid")
    else:
        out(
            f"解密失败 decryption FAILED [{res.get('code')}]: {res.get('zh')} / {res.get('en')}",
            "  窗口内可再次执行 bidder decrypt / run `bidder decrypt` again within the window",
        )


async def do_decrypt(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.decrypt(_sid(args), args.envelope)
    _print_decrypt(res)
    return 0 if res.get("ok") else 1


async def do_object(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.object(_sid(args), args.text)
    out(f"异议已提交 objection raised (seq {res.get('seq')})")
    return 0


async def do_confirm(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.confirm(_sid(args))
    out(f"已签名确认开标记录表 table confirmed (SHA-256 {res.get('table_sha256')})")
    return 0


# --- following the hall ----------------------------------------------------------------------------


class Follow:
    """Follow a session in the terminal; optionally decrypt and confirm when the windows open."""

    def __init__(self, client: HallClient, args: argparse.Namespace) -> None:
        self.client = client
        self.sid = _sid(args)
        self.until: str | None = getattr(args, "until", None)
        self.auto_decrypt: bool = bool(getattr(args, "decrypt", False))
        self.auto_confirm: bool = bool(getattr(args, "confirm", False))
        self.envelope: str | None = getattr(args, "envelope", None)
        self.tick: float = float(getattr(args, "tick", 1.0))
        self.view: dict[str, Any] = {}
        self.tried_decrypt = False
        self.tried_confirm = False
        self.follower: HallFollower | None = None
        self.err = sys.stderr
        self.tty = self.err.isatty()
        self.last_countdown = 0.0
        self.counting = False

    def _clear(self) -> None:
        if self.counting and self.tty:
            self.err.write("\r\x1b[K")
            self.err.flush()
        self.counting = False

    def say(self, *lines: str) -> None:
        self._clear()
        out(*lines)

    async def notice(self, kind: str, data: Any) -> None:
        if kind == "disconnected":
            self.say("连接中断，正在重连 connection lost; reconnecting ...")
        elif kind == "connected" and isinstance(data, dict) and data.get("connections", 0) > 1:
            self.say(f"已重新连接 reconnected (从 from seq {data.get('resume_seq')})")
        elif kind == "refused" and isinstance(data, dict) and data.get("code"):
            self.say(f"连接被拒绝 refused [{data['code']}]: {data.get('zh')} / {data.get('en')}")
        elif kind == "clock" and isinstance(data, dict):
            ms = data["offset"].total_seconds() * 1000
            self.say(f"时钟偏差 clock offset to the server: {ms:+.0f} ms")

    async def refresh(self) -> None:
        self.view = (await self.client.session(self.sid))["view"]

    def header(self) -> None:
        v = self.view
        tt = v.get("timetable") or {}
        lines = [
            f"开标会 session {v.get('session_id')}: {v.get('title', '')}",
            f"  状态 status: {STATUS_TEXT.get(v.get('status', ''), v.get('status'))}",
            f"  投标截止 deadline: {show_time(tt.get('deadline'))}",
        ]
        own = v.get("own_bid")
        if self.client.role == "bidder":
            if own:
                lines.append(
                    f"  本单位投标 our bid: {BID_TEXT.get(own.get('status'), own.get('status'))}"
                    f", SHA-256 {own.get('envelope_sha256')}"
                )
            else:
                lines.append("  本单位投标 our bid: 无 none")
            lines.append(f"  已签到 signed in: {'是 yes' if v.get('signed_in') else '否 no'}")
        self.say(*lines)

    def countdown(self, force: bool = False) -> None:
        nd = next_deadline(self.view)
        if nd is None or self.follower is None:
            return
        now = time.monotonic()
        if not self.tty and not force and now - self.last_countdown < 60:
            return
        self.last_countdown = now
        label, instant = nd
        left = show_span(self.follower.countdown(instant))
        line = f"{label}: {left}（截止 at {show_time(instant)}）"
        if self.tty:
            self.err.write("\r\x1b[K" + line)
            self.counting = True
        else:
            self.err.write(line + "\n")
        self.err.flush()

    async def act(self) -> None:
        v = self.view
        own = v.get("own_bid") or {}
        if (
            self.auto_decrypt
            and not self.tried_decrypt
            and v.get("status") == "decrypting"
            and own.get("status") == "uploaded"
        ):
            self.tried_decrypt = True
            self.say("解密窗口已开，正在解密 the window is open; decrypting ...")
            try:
                _print_decrypt(await self.client.decrypt(self.sid, self.envelope))
            except BidBridgeError as exc:
                self.say(f"ERROR {exc.line()}")
            await self.refresh()
        if (
            self.auto_confirm
            and not self.tried_confirm
            and v.get("status") == "confirming"
            and own.get("status") == "decrypted"
            and own.get("confirmation") is None
        ):
            self.tried_confirm = True
            self.say("确认窗口已开，正在签名确认 the window is open; confirming ...")
            try:
                res = await self.client.confirm(self.sid)
                self.say(f"已签名确认 confirmed (SHA-256 {res.get('table_sha256')})")
            except BidBridgeError as exc:
                self.say(f"ERROR {exc.line()}")

    def finished(self) -> int | None:
        status = self.view.get("status")
        if self.until is not None and status == self.until:
            self.say(f"已到达状态 reached status {STATUS_TEXT.get(status, status)}")
            return 0
        if status in TERMINAL:
            self.say(f"开标会已结束 the session ended: {STATUS_TEXT.get(status, status)}")
            return 0 if self.until is None else 1
        return None

    async def run(self) -> int:
        from room_client.agent import HallFollower

        await self.refresh()
        self.header()
        done = self.finished()
        if done is not None:
            return done
        follower = HallFollower(self.client, self.sid, on_notice=self.notice)
        self.follower = follower
        try:
            await follower.connect()
            dirty = True
            while True:
                if follower.queue.empty() and dirty:
                    dirty = False
                    await self.refresh()
                    await self.act()
                    done = self.finished()
                    if done is not None:
                        return done
                    self.countdown(force=True)
                try:
                    record = await asyncio.wait_for(follower.queue.get(), self.tick)
                except TimeoutError:
                    self.countdown()
                    continue
                if record.get("type") not in QUIET:
                    self.say(describe(record, self.client.party_id))
                if record.get("type") in REFRESH_ON:
                    dirty = True
        finally:
            self._clear()
            await follower.close()


async def do_follow(client: HallClient, args: argparse.Namespace) -> int:
    return await Follow(client, args).run()


# --- host and supervisor ---------------------------------------------------------------------------


def _ok(zh: str, en: str) -> Action:
    """An action for a simple staff command named by its HallClient method."""

    async def action(client: HallClient, args: argparse.Namespace) -> int:
        res = await args.call(client, args)
        out(f"{zh} {en} (seq {res.get('seq')})")
        return 0

    return action


async def do_status(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.session(_sid(args))
    v = res["view"]
    tt = v.get("timetable") or {}
    out(
        f"开标会 session {v.get('session_id')}: {v.get('title', '')} (seq {res.get('seq')})",
        f"  状态 status: {STATUS_TEXT.get(v.get('status', ''), v.get('status'))}",
        f"  签到开始 sign-in opens: {show_time(tt.get('sign_in_opens'))}",
        f"  投标截止 deadline: {show_time(tt.get('deadline'))}",
        f"  解密截止 decryption closes: {show_time(v.get('decrypt_closes_at'))}",
        f"  确认截止 confirmation closes: {show_time(v.get('confirm_closes_at'))}",
        f"  监督在场 supervisors present: {v.get('supervisors_present', '-')}",
    )
    for b in v.get("bids") or []:
        out(
            f"  - {b.get('bidder_name')} ({b.get('bidder')}): "
            f"{BID_TEXT.get(b.get('status'), b.get('status'))}, 确认 confirmation "
            f"{b.get('confirmation') or '-'}"
        )
    for o in v.get("objections") or []:
        reply = o.get("reply") or "待答复 awaiting a reply"
        out(f"  异议 objection #{o.get('id')} ({o.get('bidder')}): {o.get('text')} -> {reply}")
    if v.get("table"):
        out(*table_lines(v["table"]))
    if v.get("record_sha256"):
        signed = ", ".join(v.get("record_signatures") or []) or "-"
        out(f"  开标记录 record SHA-256 {v['record_sha256']}; 已签 signed by: {signed}")
    return 0


async def do_sign_record(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.sign_record(_sid(args))
    out(f"已签名开标记录 record signed (SHA-256 {res.get('record_sha256')}, seq {res.get('seq')})")
    return 0


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
    p.add_argument(
        "--envelope", metavar="FILE", help="本地投标文件（免下载）the local sealed bid, if at hand"
    )
    p = _add(
        bsub,
        "decrypt",
        "在线解密：本机解开内容密钥并发送 decrypt: unwrap the content key locally and send it",
        do_decrypt,
        decrypt=True,
        common=common,
    )
    p.add_argument(
        "--envelope", metavar="FILE", help="本地投标文件（免下载）the local sealed bid, if at hand"
    )
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
    _add(
        hsub,
        "sign-record",
        "签名开标记录 sign the opening record",
        do_sign_record,
        common=common,
    )
    _add(hsub, "status", "查看开标会状态 show the session", do_status, common=common)
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
    _add(
        ssub,
        "sign-record",
        "签名开标记录 sign the opening record",
        do_sign_record,
        common=common,
    )
    _add(ssub, "status", "查看开标会状态 show the session", do_status, common=common)
    _staff_commands(ssub, common, ("suspend", "resume"))
