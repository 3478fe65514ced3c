"""``bidbridge verify-draw``: recompute an evaluation's expert draw from its archive, offline.

Reads only the archive (no server, no database): the event log (``events.jsonl``) and the draw
input it names (``blobs/<pool_blob>``). From the commitment published before the draw, the
server random revealed after it, the supervisor's and the host's entropy, the request and the
pool snapshot and sites, it computes the committee again (:func:`server.domain.draw.verify`,
each recorded replacement too) and lists every difference from what the log records. It does
not check the archive's signatures: ``bidbridge verify-archive`` does that, and more.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crypto.errors import BidBridgeError, FileUnreadable
from schemas.events import EventRecord
from server.audit.archive import (
    BLOBS,
    EVENTS,
    MAX_IN_MEMORY,
    ArchiveInvalid,
    draw_differences,
    read_draw_input,
)
from server.audit.chain import GENESIS, event_hash
from server.subcommand import Subparsers, add_command

MAX_SHOWN = 50
"""Differences printed as text (``--json`` has them all)."""


class NoDraw(BidBridgeError):
    code = "NO_DRAW"
    zh = "存档中没有专家抽取记录（不是评标存档，或尚未抽取）"
    en = "the archive records no expert draw (not an evaluation, or not drawn yet)"


@dataclass
class DrawCheck:
    """What :func:`check_draw` found; ``matches`` when ``differences`` is empty."""

    archive: str
    session_id: str
    matches: bool
    differences: list[str]
    draw_seq: int
    commitment: str | None
    server_random: str | None
    entropy: dict[str, str]
    input_sha256: str | None
    experts_in_pool: int | None
    sites: int | None
    result: dict[str, Any] | None
    """The result as the log last records it (after any replacements)."""
    replacements_checked: int = 0

    def summary(self) -> str:
        """One line: the committee, its rooms, the seed, fallbacks and replacements."""
        result = self.result or {}
        committee = [m for m in result.get("committee") or [] if isinstance(m, dict)]
        rooms = sorted({str(m.get("room_id")) for m in committee})
        seed = str(result.get("seed") or "")
        return (
            f"{len(committee)} 位专家 experts, 评标室 rooms {', '.join(rooms)}, "
            f"seed {seed[:16]}…, 上溯 fallbacks {len(result.get('fallbacks') or [])}, "
            f"替换 replacements {len(result.get('replacements') or [])}"
        )


def _read(zf: zipfile.ZipFile, name: str) -> bytes | None:
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    if info.file_size > MAX_IN_MEMORY:
        raise ArchiveInvalid(f"{name}: 成员过大 / the member is too large")
    with zf.open(info) as f:
        return f.read(MAX_IN_MEMORY + 1)


def _events(raw: bytes, differences: list[str]) -> list[EventRecord]:
    events: list[EventRecord] = []
    prev = GENESIS
    broken = False
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line:
            continue
        try:
            event = EventRecord.model_validate(json.loads(line))
        except ValueError as exc:
            raise ArchiveInvalid(
                f"{EVENTS} line {number}: 事件无法解析 / the event cannot be parsed [{exc}]"
            ) from None
        if not broken and (
            event.prev_hash != prev or event_hash(prev, event.model_dump()) != event.hash
        ):
            broken = True
            differences.append(
                f"{EVENTS} seq {event.seq} ({event.type}): 哈希链断裂，事件已被改动 / the hash "
                "chain is broken: the event was changed"
            )
        prev = event.hash
        events.append(event)
    return events


def check_draw(path: Path | str) -> DrawCheck:
    """Recompute the draw recorded in the archive at ``path``; raise only if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileUnreadable(f"{path}: 文件不存在 / no such file")
    differences: list[str] = []
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveInvalid(
            f"{path.name}: 不是可读的 ZIP 文件 / not a readable ZIP file [{exc}]"
        ) from None
    with zf:
        raw = _read(zf, EVENTS)
        if raw is None:
            raise ArchiveInvalid(f"{EVENTS}: 存档缺少此成员 / the archive lacks this member")
        events = _events(raw, differences)
        completed = next((e for e in events if e.type == "draw_completed"), None)
        if completed is None:
            raise NoDraw(str(path))
        p = completed.payload
        input_sha = p.get("pool_blob") if isinstance(p.get("pool_blob"), str) else None
        input_raw = _read(zf, f"{BLOBS}{input_sha}") if input_sha else None

    session_id = events[0].session_id
    committed = next((e for e in events if e.type == "draw_committed"), None)
    commitment = committed.payload.get("commitment") if committed else None
    entropy = {
        str(e.payload.get("role")): str(e.payload.get("value"))
        for e in events
        if e.type == "draw_entropy" and e.seq < completed.seq
    }
    if committed is None or committed.seq > completed.seq:
        commitment = None
    check = DrawCheck(
        archive=str(path),
        session_id=session_id,
        matches=False,
        differences=differences,
        draw_seq=completed.seq,
        commitment=commitment if isinstance(commitment, str) else None,
        server_random=p.get("server_random") if isinstance(p.get("server_random"), str) else None,
        entropy=entropy,
        input_sha256=input_sha,
        experts_in_pool=None,
        sites=None,
        result=p.get("result") if isinstance(p.get("result"), dict) else None,
    )
    name = f"{BLOBS}{input_sha}"
    if input_raw is None:
        differences.append(f"{name}: 存档缺少抽取输入文件 / the archive lacks the draw input")
    else:
        actual = hashlib.sha256(input_raw).hexdigest()
        if actual != input_sha:
            differences.append(
                f"{name}: 抽取输入文件的 SHA-256 ({actual}) 与 pool_blob 不符，文件已被改动 / "
                "the draw input's SHA-256 is not pool_blob: the file was changed"
            )
        try:
            pool, sites = read_draw_input(input_raw)
        except ValueError as exc:
            differences.append(
                f"{name}: 抽取输入文件格式错误 / the draw input is malformed [{exc}]"
            )
        else:
            check.experts_in_pool, check.sites = len(pool), len(sites)
            recorded = [(completed, p.get("result"))] + [
                (e, e.payload.get("result")) for e in events if e.type == "member_replaced"
            ]
            draw_differs = False
            for event, claimed in recorded:
                where = f"{EVENTS} seq {event.seq} ({event.type})"
                if isinstance(claimed, dict) and event is not completed:
                    check.result = claimed
                if draw_differs:  # each replacement is recomputed on top of the draw
                    differences.append(
                        f"{where}: 未单独复算：抽取本身已不符 / not recomputed on its own: the "
                        "draw itself differs"
                    )
                    continue
                found = draw_differences(
                    pool,
                    sites,
                    session_id=session_id,
                    commitment=check.commitment,
                    entropy=entropy,
                    server_random=p.get("server_random"),
                    request=p.get("request"),
                    claimed=claimed,
                )
                differences.extend(f"{where}: {d}" for d in found)
                draw_differs = event is completed and bool(found)
                if event is not completed:
                    check.replacements_checked += 1
    drawn = next((e for e in events if e.type == "committee_drawn"), None)
    first = p.get("result")
    result: dict[str, Any] = first if isinstance(first, dict) else {}
    if drawn is not None:
        for key, recorded_value in (
            ("seed", result.get("seed")),
            ("pool_sha256", result.get("pool_sha256")),
            ("server_random", p.get("server_random")),
        ):
            if drawn.payload.get(key) != recorded_value:
                differences.append(
                    f"{EVENTS} seq {drawn.seq} (committee_drawn): 公布的 {key} 与抽取记录不符 / "
                    f"the published {key} differs from the draw's"
                )
    check.matches = not differences
    return check


# --- output ----------------------------------------------------------------------------------


def _rooms(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sites = [result.get("lead") or {}, *(result.get("secondary_sites") or [])]
    return {str(s.get("site_id")): s for s in sites if isinstance(s, dict)}


def print_check(check: DrawCheck) -> None:
    if check.matches:
        print(f"抽取复算一致 / the draw recomputes exactly: {check.archive}")
    else:
        print(f"抽取复算不一致 / the draw does NOT recompute: {check.archive}")
    print(f"  会话 session: {check.session_id}; 抽取 draw: {EVENTS} seq {check.draw_seq}")
    print(f"  承诺 commitment (抽取前公布 / published before the draw): {check.commitment}")
    print(f"  服务器随机数 server random (抽取后揭示 / revealed after): {check.server_random}")
    for role, label in (("supervisor", "监督 supervisor"), ("host", "主持人 host")):
        print(f"  随机数 entropy, {label}: {check.entropy.get(role)}")
    print(
        f"  抽取输入 draw input: {BLOBS}{check.input_sha256}; "
        f"专家 experts: {check.experts_in_pool}; 场地 sites: {check.sites}"
    )
    result = check.result or {}
    print(f"  种子 seed: {result.get('seed')}")
    print(f"  专家库哈希 pool_sha256: {result.get('pool_sha256')}")
    rooms = _rooms(result)
    for s in rooms.values():
        role = "主场 lead" if s.get("role") == "lead" else "副场 secondary"
        print(f"  {role}: {s.get('site_id')} / {s.get('room_id')} (city {s.get('city')})")
    committee = result.get("committee") or []
    print(f"  评标委员会（记录）committee as recorded ({len(committee)} 位专家 experts):")
    for m in committee:
        if not isinstance(m, dict):
            continue
        asked = m.get("requested_category")
        category = m.get("category")
        cat = category if category == asked else f"{category} (requested {asked})"
        print(
            f"    {m.get('order')}. {m.get('expert_id')}  {cat}  "
            f"{m.get('site_id')} / {m.get('room_id')}"
        )
    fallbacks = result.get("fallbacks") or []
    if fallbacks:
        print("  上溯 fallbacks:")
        for f in fallbacks:
            print(
                f"    {f.get('requested_category')}: {f.get('from_category')} -> "
                f"{f.get('to_category')} (可用 available {f.get('available')}, "
                f"需要 needed {f.get('needed')})"
            )
    else:
        print("  上溯 fallbacks: 无 / none")
    replacements = result.get("replacements") or []
    for r in replacements:
        print(
            f"  替换 replacement: {r.get('declined_expert_id')} -> "
            f"{r.get('replacement_expert_id')} ({r.get('reason')})"
        )
    if not check.matches:
        print(f"  不符之处 differences ({len(check.differences)}):")
        for d in check.differences[:MAX_SHOWN]:
            print(f"    - {d}")
        if len(check.differences) > MAX_SHOWN:
            print(f"    ... 另有 {len(check.differences) - MAX_SHOWN} 处 / more (see --json)")
    else:
        print(
            "  本检查只复算抽取；签名与其余内容请用 bidbridge verify-archive 校验 / this checks "
            "the draw only; check signatures and the rest with bidbridge verify-archive"
        )


def cmd_verify_draw(args: argparse.Namespace) -> int:
    """只凭存档（无需服务器和数据库）复算专家抽取：核对服务器随机数与抽取前公布的承诺、监督人员和主持人的随机数、抽取请求和专家库快照，重新计算评标委员会（含各次替换），列出与记录不符之处。一致时退出码为 0，不一致为 1。 / Recompute the expert draw from
    the archive alone (no server, no database): the server random against the
    commitment published before the draw, the supervisor's and the host's entropy, the
    request and the pool snapshot give the committee again (each replacement too);
    every difference from the record is listed. Exit status 0 when it matches, 1 when
    it does not."""
    check = check_draw(args.archive)
    if args.json:
        print(json.dumps(asdict(check), ensure_ascii=False, indent=2, sort_keys=True))
    else:
        print_check(check)
    return 0 if check.matches else 1


HELP = "由评标存档离线复算专家抽取 / recompute an evaluation's expert draw from its archive"


def register(sub: Subparsers) -> None:
    """Add ``verify-draw`` to the ``bidbridge`` command's subcommands."""
    p = add_command(sub, "verify-draw", cmd_verify_draw, HELP)
    p.add_argument("archive", metavar="ARCHIVE", help="评标存档 ZIP 文件 / the archive ZIP file")
    p.add_argument(
        "--json",
        action="store_true",
        help="以 JSON 输出结果 / print the result as JSON",
    )
