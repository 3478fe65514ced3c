"""``bidbridge signals --archive FILE``: recompute a session's warning signals from its archive,
offline, and compare them with the ``signal`` events the archive records.

The facts are rebuilt from the archive alone (``events.jsonl``; for an opening also the sealed
bids under ``envelopes/`` opened with ``keys.json``) by the same code the server uses
(``server.signals.facts``), so an untouched archive gives exactly the recorded warnings, and a
changed fact (an address, a price, a sheet) shows up as a warning missing or extra. Integrity of
the archive itself is ``bidbridge verify-archive``'s job.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from crypto.errors import BidBridgeError
from schemas.events import EventRecord
from schemas.signals import EvaluationFacts, Signal
from server.audit.archive import ENVELOPES, EVENTS, KEYS
from server.domain import signals as S
from server.signals.facts import (
    compute,
    evaluation_facts,
    history_of,
    open_packages,
    recorded,
    session_kind,
)
from server.subcommand import Subparsers, add_command

MAX_EVENTS_BYTES = 1 << 30


class SignalsArchiveUnreadable(BidBridgeError):
    code = "SIGNALS_ARCHIVE_UNREADABLE"
    zh = "无法读取存档（不是导出的会话存档，或已损坏）"
    en = "the archive cannot be read (not an exported session archive, or damaged)"
    status = 400


def read_events(zf: zipfile.ZipFile) -> list[EventRecord]:
    try:
        info = zf.getinfo(EVENTS)
        if info.file_size > MAX_EVENTS_BYTES:
            raise SignalsArchiveUnreadable(f"{EVENTS} is larger than {MAX_EVENTS_BYTES} bytes")
        lines = zf.read(EVENTS).decode("utf-8").splitlines()
        return [EventRecord.model_validate_json(line) for line in lines if line.strip()]
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise SignalsArchiveUnreadable(f"{EVENTS}: {str(exc)[:300]}") from None


def _session_id(events: list[EventRecord]) -> str:
    if not events:
        raise SignalsArchiveUnreadable(f"{EVENTS} holds no events")
    return events[0].session_id


def recompute(path: Path, history: list[Path] | None = None) -> tuple[list[Signal], list[Any]]:
    """The signals recomputed from the archive at ``path`` and the ones it records.
    ``history``: archives of earlier evaluations (for the favour signal of an evaluation)."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise SignalsArchiveUnreadable(f"{path}: {exc}") from None
    with zf, tempfile.TemporaryDirectory(prefix="bidbridge-signals-") as tmp:
        events = read_events(zf)
        session_id = _session_id(events)
        if session_kind(events) == "evaluation":
            earlier: list[EvaluationFacts] = []
            for other in history or []:
                with zipfile.ZipFile(other) as hz:
                    h_events = read_events(hz)
                facts = evaluation_facts(_session_id(h_events), h_events)
                if facts is not None:
                    earlier.append(facts)
            mine = evaluation_facts(session_id, events)
            past = history_of(mine, earlier) if mine is not None else []
            return compute(session_id, events, {}, past), recorded(events)
        try:
            keys = json.loads(zf.read(KEYS)) if KEYS in zf.namelist() else {}
        except ValueError as exc:
            raise SignalsArchiveUnreadable(f"{KEYS}: {exc}") from None
        names = set(zf.namelist())
        work = Path(tmp)
        (work / "env").mkdir()
        (work / "pkg").mkdir()

        def envelope_of(sha: str) -> Path | None:
            name = f"{ENVELOPES}{sha}.p7m"
            if name not in names:
                return None
            target = work / "env" / f"{sha}.p7m"
            with zf.open(name) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            return target

        packages = open_packages(events, envelope_of, keys, work / "pkg")
        return compute(session_id, events, packages), recorded(events)


def _print_signal(s: Signal) -> None:
    print(f"- [{s.kind}] score {s.score:.2f}  id {s.id}")
    print(f"  对象 subjects: {', '.join(s.subjects)}")
    print(f"  {s.explanation_zh}")
    print(f"  {s.explanation_en}")
    for e in s.evidence:
        where = f"seq {e.seq}" if e.seq is not None else e.ref
        print(f"    证据 evidence: {e.session_id} {where} {e.ref} {e.note}".rstrip())


def cmd_signals(args: argparse.Namespace) -> int:
    """从导出的会话存档离线复算预警信号（同源、同一人编制、同一账户保证金、报价规律、CA 证书轨迹、评标不公），打印分值、中英文说明和证据，并与存档中记录的 signal
    事件逐个比对；一致时退出码为 0。 / Recompute the warning signals (same origin, same
    hands, same money, price patterns, certificate trail, unfair evaluation) from an
    exported session archive offline, print their scores, explanations and evidence,
    and compare them with the signal events the archive records; exit code 0 when they
    match, 1 when they do not."""
    found, kept = recompute(Path(args.archive), [Path(p) for p in args.history])
    found_ids = [s.id for s in found]
    kept_ids = [str(p.get("id")) for p in kept]
    missing = sorted(set(found_ids) - set(kept_ids))  # recomputed, not in the record
    extra = sorted(set(kept_ids) - set(found_ids))  # in the record, not recomputed
    match = not missing and not extra
    rings = S.combined(found)
    if args.json:
        out = {
            "match": match,
            "signals": [s.model_dump(mode="json") for s in found],
            "rings": [r.model_dump(mode="json") for r in rings],
            "recorded_ids": kept_ids,
            "missing_from_record": missing,
            "not_recomputed": extra,
        }
        print(json.dumps(out, ensure_ascii=False, indent=1))
        return 0 if match else 1
    print(f"复算预警 / recomputed signals: {len(found)}; 存档记录 / recorded: {len(kept)}")
    for s in found:
        _print_signal(s)
    for r in rings:
        print(f"* {r.explanation_zh}")
        print(f"  {r.explanation_en}")
    if match:
        print(
            "一致：复算结果与存档中的预警事件相同 / match: the recomputed signals are the recorded ones"
        )
        return 0
    for i in missing:
        print(f"复算有而存档无 / recomputed but not recorded: {i}")
    for i in extra:
        print(f"存档有而复算无 / recorded but not recomputed: {i}")
    print("不一致 / MISMATCH: the record's warnings differ from what its facts give")
    return 1


HELP = "从存档离线复算围标串标/评标不公预警 / recompute the warning signals from an archive"


def register(sub: Subparsers) -> None:
    """Add ``signals`` to the ``bidbridge`` command's subcommands."""
    p = add_command(sub, "signals", cmd_signals, HELP)
    p.add_argument("--archive", required=True, metavar="FILE", help="存档 ZIP / the archive ZIP")
    p.add_argument(
        "--history",
        action="append",
        default=[],
        metavar="FILE",
        help="earlier evaluations' archives sharing an expert (for the favour signal; repeat)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
