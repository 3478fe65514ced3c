"""How the opening hall reads in a terminal: times, amounts, the opening table, events, progress.

Output is Chinese first, then English; instants are shown in Beijing time (the centre's).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, Any

BEIJING = timezone(timedelta(hours=8), "北京时间")
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
STATUSES = tuple(STATUS_TEXT)  # an opening session's statuses, in their order
BID_TEXT = {
    "uploaded": "已上传 uploaded",
    "retracted": "已撤回 retracted",
    "decrypted": "已解密 decrypted",
    "failed": "解密失败 decryption failed",
    "revoked": "撤销 revoked (bidder's fault)",
    "withdrawn": "撤回 withdrawn (platform fault)",
}


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


# Events whose line is a template: ``{name}`` is the bidder (``本单位 us`` for one's own),
# ``{reason}`` the reason in brackets when one is given, any other field the payload's value.
_TEMPLATES = {
    "session_created": "已创建开标会 session created",
    "sign_in_opened": "签到开始 sign-in opened",
    "bid_retracted": "投标文件已撤回 bid withdrawn before the deadline",
    "bidder_signed_in": "{name} 已签到 signed in",
    "session_sealed": "投标截止，已封标 deadline reached; bids sealed",
    "session_failed": "流标：有效投标少于 {min_bids} 家 / failed: fewer than the minimum bids",
    "bids_counted": "投标 {bids} 家，签到 {signed_in} 家 / bids and sign-ins counted",
    "opening_started": "开标开始（{bids} 份投标）opening started ({bids} bids)",
    "bid_revoked": "{name} 投标被撤销（投标人原因未解密）revoked: not decrypted, bidder's fault",
    "bid_withdrawn": "{name} 投标撤回（平台原因未解密）withdrawn: not decrypted, platform fault",
    "decryption_closed": "解密结束 decryption window closed",
    "objection_raised": "异议 #{id}（{name}）objection: {text}",
    "objection_answered": "答复异议 #{id} reply: {text}",
    "table_confirmed": "{name} 已签名确认开标记录表 confirmed the table",
    "record_generated": "开标记录已生成 record generated (SHA-256 {record_sha256})",
    "record_signed": "开标记录已由 {role} 签名 / record signed by the {role}",
    "record_published": "开标记录已公布，开标结束 record published; the opening is closed",
    "session_suspended": "开标暂停 suspended{reason}",
    "session_resumed": "开标恢复 resumed{reason}",
    "incident_recorded": "记录平台故障 incident recorded{reason}",
    "party_joined": "{role} {account} 进入 joined",
    "party_left": "{role} {account} 离开 left",
    "backup_approved": "{custodian} 批准备用解密 approved backup request {request_id}",
    "backup_quorum_reached": "备用解密达到法定人数 backup quorum reached ({request_id})",
    "checkpoint": "日志检查点 log checkpoint",
}


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


def filled(template: str, fields: dict[str, Any]) -> str:
    """``template`` with its ``{field}``s from ``fields``; a missing one reads ``None``, as
    ``fields.get`` would."""
    return template.format_map(_Fields(fields))


def _worded(t: str, p: dict[str, Any], name: str, reason: str) -> str:
    """The line of an event that is more than a template, or the bare type of an unknown one."""
    if t == "session_published":
        deadline = (p.get("timetable") or {}).get("deadline")
        return f"已发布，投标截止 {show_time(deadline)} / published; bid deadline as shown"
    if t == "bid_uploaded":
        r = p.get("receipt") or {}
        again = "（替换原文件 replaces the earlier file）" if p.get("replaces") else ""
        return (
            f"投标文件已上传 bid uploaded{again}: 回执 receipt {r.get('receipt_id')}, "
            f"{r.get('size')} 字节 bytes, SHA-256 {r.get('envelope_sha256')}"
        )
    if t == "rehearsal_reported":
        ok = "通过 passed" if p.get("passed") else f"未通过 failed — {p.get('message')}"
        return f"解密演练 rehearsal: {ok}"
    if t in ("decryption_opened", "confirmation_opened"):
        what = "解密开始" if t == "decryption_opened" else "确认开始"
        window = "decryption" if t == "decryption_opened" else "confirmation"
        return f"{what}，截止 {show_time(p.get('closes_at'))} / {window} window opened"
    if t == "bid_decrypted":
        via = "（备用解密 backup）" if p.get("via") == "backup" else ""
        return f"{name} 解密成功 decrypted{via}"
    if t == "decryption_failed":
        a = p.get("attempt") or {}
        cause = "平台原因 platform" if a.get("cause") == "platform" else "投标人原因 bidder"
        return f"{name} 解密失败 decryption failed [{a.get('code')}, {cause}]: {a.get('message')}"
    if t == "table_published":
        return "\n".join(["开标记录表已公布 opening table published", *table_lines(p["table"])])
    if t == "confirmation_closed":
        deemed = p.get("deemed") or []
        return (
            f"确认结束，{len(deemed)} 家未签视为确认 / confirmation closed; silence deemed consent"
        )
    if t == "window_extended":
        window = {"deadline": "投标截止 deadline", "decryption": "解密 decryption"}.get(
            str(p.get("window")), "确认 confirmation"
        )
        return f"{window} 延长 extended by {p.get('minutes')} 分钟 minutes{reason}"
    if t == "platform_outage":
        window = "解密 decryption" if p.get("window") == "decryption" else "确认 confirmation"
        return (
            f"平台中断 platform outage {p.get('down_from')} – {p.get('down_until')}；"
            f"{window} 顺延 extended by {p.get('extended_seconds')} 秒 seconds"
        )
    if t == "security_recorded":
        sec = p.get("security") or {}
        return f"{name} 保证金 security: {sec.get('kind')} {sec.get('status')}"
    if t == "backup_requested":
        bidders = ", ".join(p.get("bidders") or [])
        return f"申请备用解密 backup decryption requested: {bidders}{reason}"
    return t


def describe(record: dict[str, Any], me: str | None = None) -> str:
    """One line (zh / en) for an event of the hall."""
    t = record.get("type", "")
    p: dict[str, Any] = record.get("payload") or {}
    who = p.get("bidder") or ""
    own = me is not None and who == me
    name = "本单位 us" if own else str(who)
    prefix = f"[{str(record.get('id') or '')[:8]}] {show_time(record.get('at'))} "
    reason = f"（原因 reason: {p.get('reason')}）" if p.get("reason") else ""
    template = _TEMPLATES.get(t)
    if template is None:
        return prefix + _worded(t, p, name, reason)
    return prefix + filled(template, {**p, "name": name, "reason": reason})


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
