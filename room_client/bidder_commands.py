"""What ``bidbridge bidder|host|supervisor ...`` commands do: the hall's calls, printed.

Bidders upload, rehearse, sign in, follow the hall, decrypt, object and confirm; hosts run the
opening; supervisors watch and sign the record (the parser is ``room_client.bidder_cli``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crypto.errors import BidBridgeError
from room_client.cli_common import Action, _sid, out
from room_client.hall_text import (
    BID_TEXT,
    STATUS_TEXT,
    ProgressBar,
    describe,
    filled,
    next_deadline,
    show_fen,
    show_span,
    show_time,
    table_lines,
)

if TYPE_CHECKING:  # the agent (aiohttp, socket.io) is imported only when a command runs
    from room_client.client import HallClient
    from room_client.credentials import Credentials
    from room_client.follower import HallFollower

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
        "platform_outage",
        "bid_uploaded",
        "bid_retracted",
    }
)


QUIET = frozenset({"checkpoint"})
"""Audit-log internals not shown when following the hall."""


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
    from room_client.client import verify_receipt

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


def _save_receipt(data: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=2))
    out(f"回执已保存 receipt saved: {path}")


async def do_upload(client: HallClient, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not args.no_check:
        await asyncio.to_thread(_check_envelope, path, client.credentials)
    bar = ProgressBar()
    data = await client.upload(_sid(args), path, progress=bar)
    out("已上传 uploaded")
    _print_receipt(data)
    if args.save_receipt:
        _save_receipt(data, args.save_receipt)
    return 0


def _done(reply: dict[str, Any], template: str) -> int:
    """Print ``template`` filled from the server's ``reply``: the command succeeded."""
    out(filled(template, reply))
    return 0


async def do_withdraw(client: HallClient, args: argparse.Namespace) -> int:
    return _done(await client.retract(_sid(args)), "投标文件已撤回 bid withdrawn")


async def do_receipt(client: HallClient, args: argparse.Namespace) -> int:
    data = await client.receipt(_sid(args))
    _print_receipt(data)
    if args.out:
        _save_receipt(data, args.out)
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
    return _done(await client.sign_in(_sid(args)), "已签到 signed in")


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
    reply = await client.object(_sid(args), args.text)
    return _done(reply, "异议已提交 objection raised")


async def do_confirm(client: HallClient, args: argparse.Namespace) -> int:
    reply = await client.confirm(_sid(args))
    return _done(reply, "已签名确认开标记录表 table confirmed (SHA-256 {table_sha256})")


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
            self.say(
                f"已重新连接 reconnected（已收到 {data.get('events')} 条事件 events so far; "
                "补发断线期间的事件 missed ones are replayed）"
            )
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
        from room_client.follower import HallFollower

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
        await args.call(client, args)
        out(f"{zh} {en}")
        return 0

    return action


async def do_status(client: HallClient, args: argparse.Namespace) -> int:
    res = await client.session(_sid(args))
    v = res["view"]
    tt = v.get("timetable") or {}
    out(
        f"开标会 session {v.get('session_id')}: {v.get('title', '')}",
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
    reply = await client.sign_record(_sid(args))
    return _done(reply, "已签名开标记录 record signed (SHA-256 {record_sha256})")
