#!/usr/bin/env python3
"""Benchmark recording with Janus against the built-in backend: CPU seconds per recorded room
stream per minute for each, in one run on the same machine, and their ratio.

N rooms (``--rooms``, default 6) publish 640x480 VP8 at 15 fps and Opus audio from a sender
process (``scripts/bench_media.py``'s, so the rooms' own CPU is measured apart). Each room is
its own session, so neither backend relays a host feed: the figure is the cost of receiving and
recording a room's stream. The two phases run one after the other with the same senders:

* **built-in**: ``BuiltinMedia`` (aiortc; decodes and re-encodes into 5 s WebM segments) in
  worker processes; counted: the workers' CPU.
* **Janus**: ``janus`` from the Debian package, started on loopback with the project's
  configuration (deploy/janus/, as tests/test_janus.py does), driven by ``JanusMedia`` (records
  packet dumps, rotated every ``--rotate-seconds``, converted by ``janus-pp-rec`` and joined into
  WebM without transcoding); counted: the janus process and the janus-pp-rec runs.

Both phases also report this process's CPU ("main": signalling, and for Janus the joining of
the converted tracks into one WebM and hashing them), and the ratio is given with and without it.
CPU is read from ``/proc/<pid>/stat`` over ``--duration`` s after ``--warmup`` s; janus-pp-rec's
from ``getrusage(RUSAGE_CHILDREN)`` (this process's finished children) over the same window.
"other CPU" is everything else on the machine in the window (``/proc/stat``): a high value
means a neighbour disturbed the run.

    .venv/bin/python scripts/bench_janus.py                   # 6 rooms, 60 s per backend
    .venv/bin/python scripts/bench_janus.py --rooms 3 --duration 30 --warmup 5
    .venv/bin/python scripts/bench_janus.py --source synthetic   # rooms encode live video
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_media  # noqa: E402  (the sender process and CPU readers are shared)
from bench_media import (  # noqa: E402
    FPS,
    Senders,
    cpu_seconds,
    machine_busy_seconds,
    machine_line,
    work_and_source,
)


@dataclass
class Phase:
    name: str
    rooms: int
    wall: float = 0.0
    backend_cpu: float = 0.0  # workers (built-in) or janus + janus-pp-rec (Janus)
    main_cpu: float = 0.0
    sender_cpu: float = 0.0
    machine_cpu: float = 0.0
    segments: int = 0
    errors: list[str] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)  # backend CPU by process kind

    def per_stream_minute(self, seconds: float) -> float:
        return seconds / self.rooms / (self.wall / 60.0)

    @property
    def other_cpu(self) -> float:
        return max(0.0, self.machine_cpu - self.backend_cpu - self.main_cpu - self.sender_cpu)


def children_cpu() -> float:
    """CPU of this process's finished children: the janus-pp-rec runs (the senders and janus
    are still running, so they are not in it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class SegmentLog:
    """Stands in for the session service: keeps the ``RecordSegment`` commands JanusMedia
    issues (the event log's cost is not what is measured here)."""

    def __init__(self) -> None:
        self.commands: list[Any] = []

    async def execute(self, session_id: str, cmd: Any) -> list[Any]:
        self.commands.append(cmd)
        return []


async def measure(
    phase: Phase, senders: Senders, backend_cpu: Any, args: argparse.Namespace
) -> None:
    spec = [[f"janus-bench-{phase.name}-{i}", f"room-{i}"] for i in range(phase.rooms)]
    senders.send("rooms " + json.dumps(spec))
    await senders.expect("ready")
    await asyncio.sleep(args.warmup)
    me = os.getpid()
    t0, b0, m0 = time.monotonic(), backend_cpu(), cpu_seconds(me)
    s0, all0 = cpu_seconds(senders.pid), machine_busy_seconds()
    await asyncio.sleep(args.duration)
    phase.wall = time.monotonic() - t0
    phase.backend_cpu = backend_cpu() - b0
    phase.main_cpu = cpu_seconds(me) - m0
    phase.sender_cpu = cpu_seconds(senders.pid) - s0
    phase.machine_cpu = machine_busy_seconds() - all0
    senders.send("close")
    await senders.expect("closed")


async def builtin_phase(source: str, work: Path, args: argparse.Namespace) -> Phase:
    from server.media.builtin import BuiltinMedia

    segments: list[Any] = []

    async def on_segment(segment: Any) -> None:
        segments.append(segment)

    media = BuiltinMedia(work / "builtin", on_segment, segment_seconds=5.0)
    await media.start()
    senders = await Senders.start(source, media)
    phase = Phase("builtin", args.rooms)
    try:
        await measure(phase, senders, lambda: sum(cpu_seconds(p) for p in media.worker_pids), args)
    finally:
        await senders.stop()
        await media.close()
    phase.segments = len(segments)
    phase.errors = [f"{s.peer_id}#{s.index}: {s.error}" for s in segments if s.error]
    return phase


async def janus_phase(source: str, work: Path, args: argparse.Namespace) -> Phase:
    from server.media.janus import JanusMedia
    from server.store.blobs import BlobStore
    from tests.support.janus import LocalJanus

    janus = LocalJanus(work / "janus")
    await janus.start()
    log = SegmentLog()
    hub = SimpleNamespace(
        settings=SimpleNamespace(data_dir=work), blobs=BlobStore(work / "blobs"), service=log
    )
    media = JanusMedia(
        hub,  # type: ignore[arg-type]
        janus.url,
        work / "recordings",
        rotate_seconds=args.rotate_seconds,
    )

    class Answerer:  # the senders call answer(session, peer, "room", offer)
        async def answer(self, session: str, peer: str, role: str, offer: Any) -> Any:
            return await media.answer(session, peer, role, offer)

    senders = await Senders.start(source, Answerer())
    phase = Phase("janus", args.rooms)
    snaps: list[tuple[float, float]] = []  # (janus, janus-pp-rec) at the window's ends

    def janus_cpu() -> float:
        snaps.append((cpu_seconds(janus.pid), children_cpu()))
        return sum(snaps[-1])

    try:
        await measure(phase, senders, janus_cpu, args)
        phase.parts = {
            "janus": snaps[-1][0] - snaps[0][0],
            "janus-pp-rec": snaps[-1][1] - snaps[0][1],
        }
    finally:
        await senders.stop()
        await media.close()
        await janus.stop()
    phase.segments = len(log.commands)
    phase.errors = [f"{c.room_id}#{c.index}: {c.error}" for c in log.commands if c.error]
    phase.errors += media.failures
    return phase


def report(phases: list[Phase]) -> None:
    print(
        f"\n{'backend':<10}{'rooms':>6}{'s':>6}{'backend CPU':>13}{'main CPU':>10}"
        f"{'senders':>9}{'other':>8}{'segments':>10}{'errors':>8}"
    )
    for p in phases:
        print(
            f"{p.name:<10}{p.rooms:>6}{p.wall:>6.0f}{p.backend_cpu:>12.1f}s{p.main_cpu:>9.1f}s"
            f"{p.sender_cpu:>8.1f}s{p.other_cpu:>7.1f}s{p.segments:>10}{len(p.errors):>8}"
        )
        if p.parts:
            print("    of which " + ", ".join(f"{k} {v:.1f}s" for k, v in p.parts.items()))
        for e in p.errors[:5]:
            print(f"    {e}")
    builtin, janus = phases
    print("\nCPU seconds per recorded room stream per minute")
    rows = [
        ("backend only", builtin.backend_cpu, janus.backend_cpu),
        (
            "backend + main",
            builtin.backend_cpu + builtin.main_cpu,
            janus.backend_cpu + janus.main_cpu,
        ),
    ]
    for label, b, j in rows:
        bs, js = builtin.per_stream_minute(b), janus.per_stream_minute(j)
        ratio = bs / js if js > 0 else float("inf")
        print(f"  {label:<16} built-in {bs:7.2f}   Janus {js:7.3f}   ratio {ratio:6.1f}x")


async def bench(args: argparse.Namespace) -> int:
    if shutil.which("janus") is None or shutil.which("janus-pp-rec") is None:
        print("janus and janus-pp-rec are needed (Debian packages janus, janus-tools)")
        return 2
    work, source = work_and_source(args, "bench-janus-")
    print(
        f"bench_janus: {machine_line()}, {args.rooms} rooms send "
        f"{args.source} 640x480@{FPS} VP8 + Opus, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured per backend; built-in segments 5 s, Janus rotation "
        f"{args.rotate_seconds:g} s"
    )
    try:
        phases = [
            await builtin_phase(source, work, args),
            await janus_phase(source, work, args),
        ]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(phases)
    return 1 if any(p.errors for p in phases) else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="CPU per recorded room stream: Janus against the built-in media backend",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument("--rooms", type=int, default=6, help="rooms publishing at once (default 6)")
    p.add_argument("--duration", type=float, default=60.0, help="measured seconds per backend")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    p.add_argument("--rotate-seconds", type=float, default=10.0, help="Janus segment length")
    p.add_argument(
        "--source",
        default="clip",
        help="what rooms send: clip (pre-encoded, cheap senders; default), synthetic, file:...",
    )
    p.add_argument("--out", help="work folder (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--senders", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.senders:  # bench_media's sender process runs bench_media.py itself
        asyncio.run(bench_media.senders_main(args.source))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
