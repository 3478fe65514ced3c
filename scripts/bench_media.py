#!/usr/bin/env python3
"""Benchmark the built-in media backend: CPU per recorded room, and how many rooms one machine
records without losing a segment.

The server side is ``BuiltinMedia`` (``server/media/builtin.py``) in this process, with its
worker process(es). The evaluation rooms (``room_client.media.RoomMedia``) run in a separate
sender process started from this script (``--senders``, internal), so their CPU is measured
apart; signalling (SDP offer/answer) goes over the sender's stdin/stdout.

Each room sends 640x480 VP8 at 15 fps and Opus audio. By default the rooms send a pre-encoded
clip (``clip:``: synthetic picture and tone, encoded once at start-up, packets sent as they are)
so that the senders cost little CPU on the same machine; ``--source synthetic`` makes each room
encode its own live picture (as a real room does). Rooms are grouped in sessions of
``--rooms-per-session`` (default 3: the lead room and two secondary rooms), so the server also
relays the host feed to the secondary rooms (one VP8 encode per receiving room).

For each step of the ramp (1, 2, 4, 6, 8, ... rooms), the rooms connect, run ``--warmup`` s,
then CPU is measured over ``--duration`` s from ``/proc/<pid>/stat`` (all threads):

* worker CPU: the media worker process(es), as a share of one core; per room = / rooms;
* sender CPU: the sender process (rooms), reported apart, not counted above;
* main CPU: this process (signalling, segment notifications);
* other CPU: everything else on the machine (``/proc/stat``): a busy neighbour shows here, and
  the step's figures are then not to be trusted.

Then every room hangs up (its last partial segment is flushed) and its segments are checked.
A room **lost a segment** if any of these happened:

* a gap in its segment indices, or a segment reported with an error;
* a segment other than its first and last (which are partial by nature) holds fewer than
  ``--min-fill`` (80 %) of its nominal video frames (fps x segment seconds);
* the recorder dropped frames (its queue was full) or received them too late to record.

The ramp stops at the first step that loses a segment (or ``--max-rooms``); the figure is the
largest step with no loss. Run with ``--workers 1,2`` to compare one worker process with two.

    .venv/bin/python scripts/bench_media.py                      # ramp with 1 and 2 workers
    .venv/bin/python scripts/bench_media.py --quick              # a short smoke run
    .venv/bin/python scripts/bench_media.py --workers 2 --steps 1,4,8,12 --duration 20
    .venv/bin/python scripts/bench_media.py --source synthetic   # rooms encode live video
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import _repo  # noqa: F401  (puts the repository on sys.path)

CLK_TCK = os.sysconf("SC_CLK_TCK")
FPS = 15
SEGMENT_SECONDS = 5.0


LOSS_DEFINITION = """\
  A room lost a segment if: its segment indices have a gap or a segment reports an error; a
  segment other than its first and last holds fewer than {fill:.0f}% of fps x segment seconds
  video frames; or its recorder dropped frames (queue full) or got them too late to record.
  The most rooms recorded = the largest ramp step in which no room lost a segment."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # after the command name: state is field 3, utime 14 and stime 15 (1-based in proc(5))
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine spent so far (/proc/stat, every core)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def make_clip(path: Path, seconds: int = 10) -> None:
    """A VP8/Opus WebM of the synthetic room picture and tone, as a camera encoder makes it."""
    import fractions

    import av

    from room_client.media import AUDIO_SAMPLES, SyntheticAudioTrack, SyntheticVideoTrack

    video = SyntheticVideoTrack("bench room")
    audio = SyntheticAudioTrack("bench room")
    with av.open(str(path), mode="w", format="webm") as container:
        vs = container.add_stream("libvpx", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 640, 480, "yuv420p"
        vs.bit_rate = 500_000
        vs.codec_context.time_base = fractions.Fraction(1, 1000)
        vs.codec_context.gop_size = 2 * FPS  # a key frame every 2 s, as after a loss
        vs.codec_context.options = {"deadline": "good", "cpu-used": "4", "lag-in-frames": "0"}
        aus = container.add_stream("libopus", rate=48_000)
        aus.layout = "mono"
        aus.bit_rate = 32_000
        for i in range(seconds * FPS):
            frame = video.draw(i)
            frame.pts = i * 1000 // FPS
            frame.time_base = fractions.Fraction(1, 1000)
            for packet in vs.encode(frame):
                container.mux(packet)
        tone = audio._tone
        for i in range(seconds * 48_000 // AUDIO_SAMPLES):
            sound = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
            sound.planes[0].update(tone if i % 50 < 40 else bytes(len(tone)))
            sound.sample_rate = 48_000
            sound.pts = i * AUDIO_SAMPLES
            sound.time_base = fractions.Fraction(1, 48_000)
            for packet in aus.encode(sound):
                container.mux(packet)
        for stream in (vs, aus):
            for packet in stream.encode(None):
                container.mux(packet)


# --- the sender process -------------------------------------------------------------------------


async def senders_main(source: str) -> None:
    """Rooms on command: ``rooms <json>``, ``report``, ``close``, ``exit`` on stdin."""
    from room_client.media import RoomMedia

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    answers: dict[int, asyncio.Future[dict[str, str]]] = {}
    counter = 0
    rooms: list[tuple[str, str, RoomMedia]] = []

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def connect(session: str, peer: str) -> RoomMedia:
        nonlocal counter
        room = RoomMedia(source, label=f"{session} {peer}")

        async def signal(offer: dict[str, str]) -> dict[str, str]:
            nonlocal counter
            counter += 1
            call = counter
            answers[call] = loop.create_future()
            out(
                "offer "
                + json.dumps({"id": call, "session": session, "peer": peer, "offer": offer})
            )
            try:
                return await answers[call]
            finally:
                del answers[call]

        await room.connect(signal)
        return room

    pending: set[asyncio.Task[None]] = set()

    async def start_rooms(spec: list[list[str]]) -> None:
        try:
            made = await asyncio.gather(*(connect(s, p) for s, p in spec))
            for (s, p), room in zip(spec, made, strict=True):
                rooms.append((s, p, room))
            await asyncio.gather(*(room.wait_connected(30) for _, _, room in rooms))
            out("ready")
        except Exception as exc:
            out(f"error {type(exc).__name__}: {exc}")

    while True:
        raw = await reader.readline()
        if not raw:
            break
        command, _, arg = raw.decode().strip().partition(" ")
        if command == "answer":
            message = json.loads(arg)
            future = answers.get(message["id"])
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(RuntimeError(message["error"]))
                else:
                    future.set_result(message["answer"])
        elif command == "rooms":
            task = asyncio.create_task(start_rooms(json.loads(arg)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        elif command == "report":
            report = {
                f"{s}/{p}": {"sent": room.frames_sent, "received": dict(room.frames_received)}
                for s, p, room in rooms
            }
            out("report " + json.dumps(report))
        elif command == "close":
            await asyncio.gather(*(room.close() for _, _, room in rooms))
            rooms.clear()
            out("closed")
        elif command == "exit":
            break
    for _, _, room in rooms:
        await room.close()


# --- the driver ---------------------------------------------------------------------------------


class Senders:
    """The sender child process; answers its offers with ``BuiltinMedia.answer``."""

    def __init__(self, proc: asyncio.subprocess.Process, media: Any) -> None:
        self.proc = proc
        self.media = media
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, source: str, media: Any) -> Senders:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).resolve()),
            "--senders",
            "--source",
            source,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,
        )
        return cls(proc, media)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            line = raw.decode().strip()
            if line.startswith("offer "):
                task = asyncio.create_task(self._answer(json.loads(line[6:])))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                await self._lines.put(line)
        await self._lines.put("eof")

    async def _answer(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"id": message["id"]}
        try:
            reply["answer"] = await self.media.answer(
                message["session"], message["peer"], "room", message["offer"]
            )
        except Exception as exc:
            reply["error"] = f"{type(exc).__name__}: {exc}"
        self.send("answer " + json.dumps(reply))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def expect(self, prefix: str, timeout: float = 120) -> str:
        while True:
            line = await asyncio.wait_for(self._lines.get(), timeout)
            if line.startswith("error") or line == "eof":
                raise RuntimeError(f"sender process: {line}")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.send("exit")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 20)
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


@dataclass
class Step:
    rooms: int
    sessions: int
    wall: float = 0.0
    worker_cpu: float = 0.0  # seconds
    sender_cpu: float = 0.0
    main_cpu: float = 0.0
    machine_cpu: float = 0.0  # every process on the machine
    segments: int = 0
    errors: list[str] = field(default_factory=list)
    min_fill: float = 1.0  # lowest video fill of a full segment
    drops: int = 0
    late: int = 0
    packets_lost: int = 0
    host_feed_rooms: int = 0  # secondary rooms that received host-feed video
    secondary_rooms: int = 0

    @property
    def lost(self) -> bool:
        return bool(self.errors)

    def share(self, seconds: float) -> float:
        return 100.0 * seconds / self.wall if self.wall else 0.0


def plan_rooms(step: int, count: int, per_session: int) -> list[list[str]]:
    spec = []
    for i in range(count):
        spec.append([f"bench{step}-s{i // per_session}", f"room-{i % per_session}"])
    return spec


async def run_step(
    media: Any,
    senders: Senders,
    segments: list[Any],
    step_no: int,
    count: int,
    args: argparse.Namespace,
) -> Step:
    spec = plan_rooms(step_no, count, args.rooms_per_session)
    sessions = sorted({s for s, _ in spec})
    step = Step(rooms=count, sessions=len(sessions))
    first_segment = len(segments)
    senders.send("rooms " + json.dumps(spec))
    await senders.expect("ready", timeout=60 + 5 * count)
    await asyncio.sleep(args.warmup)

    pids = media.worker_pids
    before = (time.monotonic(), sum(cpu_seconds(p) for p in pids), cpu_seconds(senders.pid))
    main_before = cpu_seconds(os.getpid())
    machine_before = machine_busy_seconds()
    await asyncio.sleep(args.duration)
    step.wall = time.monotonic() - before[0]
    step.worker_cpu = sum(cpu_seconds(p) for p in pids) - before[1]
    step.sender_cpu = cpu_seconds(senders.pid) - before[2]
    step.main_cpu = cpu_seconds(os.getpid()) - main_before
    step.machine_cpu = machine_busy_seconds() - machine_before

    stats = await media.stats()
    senders.send("report")
    report = json.loads(await senders.expect("report"))
    for session, peer in spec:
        await media.hangup(session, peer)
    senders.send("close")
    await senders.expect("closed")

    nominal = FPS * args.segment_seconds
    mine = [s for s in segments[first_segment:] if s.session_id in sessions]
    step.segments = len(mine)
    for session, peer in spec:
        entry = stats.get(session, {}).get(peer, {})
        step.drops += int(entry.get("frames_dropped", 0))
        step.late += int(entry.get("frames_late", 0))
        step.packets_lost += int(entry.get("packets_lost", 0))
        if entry.get("frames_dropped") or entry.get("frames_late"):
            step.errors.append(
                f"{session}/{peer}: {entry.get('frames_dropped')} frames dropped, "
                f"{entry.get('frames_late')} late"
            )
        if peer != "room-0":
            step.secondary_rooms += 1
            if report.get(f"{session}/{peer}", {}).get("received", {}).get("video", 0) > 0:
                step.host_feed_rooms += 1
        own = sorted(
            (s for s in mine if s.peer_id == peer and s.session_id == session),
            key=lambda s: s.index,
        )
        if [s.index for s in own] != list(range(len(own))):
            step.errors.append(f"{session}/{peer}: indices {[s.index for s in own]}")
        for s in own:
            if s.error:
                step.errors.append(f"{session}/{peer} #{s.index}: {s.error}")
        for s in own[1:-1]:
            fill = s.frames.get("video", 0) / nominal
            step.min_fill = min(step.min_fill, fill)
            if fill < args.min_fill:
                step.errors.append(
                    f"{session}/{peer} #{s.index}: {s.frames.get('video', 0)} video frames "
                    f"of {nominal:.0f}"
                )
        if len(own) < 3:
            step.errors.append(f"{session}/{peer}: only {len(own)} segments")
    return step


def _collector(segments: list[Any]) -> Any:
    async def on_segment(segment: Any) -> None:
        segments.append(segment)

    return on_segment


def print_header(workers: int) -> None:
    print(f"\n  workers={workers}")
    print(
        "  rooms  sessions  worker CPU  per room  sender CPU  main CPU  other CPU  segments  "
        "min fill  drops  late  pkts lost  host feed  verdict"
    )


def print_step(step: Step) -> None:
    per_room = step.share(step.worker_cpu) / step.rooms
    other = max(0.0, step.machine_cpu - step.worker_cpu - step.sender_cpu - step.main_cpu)
    feed = f"{step.host_feed_rooms}/{step.secondary_rooms}" if step.secondary_rooms else "-"
    print(
        f"  {step.rooms:>5}  {step.sessions:>8}  {step.share(step.worker_cpu):>9.1f}%  "
        f"{per_room:>7.1f}%  {step.share(step.sender_cpu):>9.1f}%  "
        f"{step.share(step.main_cpu):>7.1f}%  {step.share(other):>8.1f}%  {step.segments:>8}  {100 * step.min_fill:>7.0f}%  "
        f"{step.drops:>5}  {step.late:>4}  {step.packets_lost:>9}  {feed:>9}  "
        f"{'LOST' if step.lost else 'ok'}",
        flush=True,
    )
    for error in step.errors[:5]:
        print(f"         - {error}")
    if len(step.errors) > 5:
        print(f"         - ... {len(step.errors) - 5} more")


def work_and_source(args: argparse.Namespace, prefix: str) -> tuple[Path, str]:
    """The output folder (``--out`` or a new temporary one) and what the senders send: for
    ``--source clip`` a WebM made there, named ``clip:<path>``."""
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    source = str(args.source)
    if source == "clip":
        clip = work / "clip.webm"
        make_clip(clip)
        source = f"clip:{clip}"
    return work, source


def machine_line() -> str:
    """Python's version and the CPUs, for the first line of a report."""
    cpu = platform.processor() or platform.machine()
    return f"{platform.python_version()}, {os.cpu_count()} CPUs ({cpu})"


async def bench(args: argparse.Namespace) -> int:
    from server.media.builtin import BuiltinMedia, RecordingSettings

    out_dir, source = work_and_source(args, "bench-media-")
    print(
        f"bench_media: {machine_line()}, rooms send {args.source} "
        f"640x480@{FPS} VP8 + Opus, segments of {args.segment_seconds:g} s, "
        f"sessions of {args.rooms_per_session} rooms, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured per step"
    )
    print(
        "  CPU figures are % of one core over the measured window (/proc/<pid>/stat); "
        "'other CPU' is\n  everything else on the machine (/proc/stat): if it is high, "
        "another load disturbed the step."
    )
    print(LOSS_DEFINITION.format(fill=100 * args.min_fill))
    summary: list[tuple[int, int, float | None, float | None]] = []
    for workers in args.workers:
        segments: list[Any] = []
        on_segment = _collector(segments)

        work = out_dir / f"workers-{workers}"
        shutil.rmtree(work, ignore_errors=True)
        settings = RecordingSettings()
        if args.cpu_used is not None:
            settings = replace(
                settings, vp8_options={**settings.vp8_options, "cpu-used": str(args.cpu_used)}
            )
        media = BuiltinMedia(
            work,
            on_segment,
            segment_seconds=args.segment_seconds,
            workers=workers,
            settings=settings,
        )
        await media.start()
        senders = await Senders.start(source, media)
        print_header(workers)
        best = 0
        per_room: float | None = None
        alone: float | None = None
        try:
            for n, count in enumerate(args.steps):
                if count > args.max_rooms:
                    break
                step = await run_step(media, senders, segments, n, count, args)
                print_step(step)
                if step.lost:
                    break
                best = count
                per_room = step.share(step.worker_cpu) / step.rooms
                if count == 1:
                    alone = per_room
        finally:
            await senders.stop()
            await media.close()
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
        summary.append((workers, best, per_room, alone))

    print("\nSummary")
    for workers, best, per_room, alone in summary:
        if alone is not None:
            print(
                f"  workers={workers}: CPU per recorded room stream (640x480@{FPS} VP8 + Opus), "
                f"one room alone: {alone:.1f}% of a core"
            )
        cpu = f"{per_room:.1f}% of a core per room at that load" if per_room is not None else "-"
        print(f"  workers={workers}: most rooms recorded without losing a segment: {best} ({cpu})")
    if not args.keep and not args.out:
        shutil.rmtree(out_dir, ignore_errors=True)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workers", default="1,2", help="worker process counts to try (1,2)")
    parser.add_argument(
        "--steps", default="1,2,4,6,8,10,12,14,16", help="rooms per ramp step (1,2,4,6,8,...)"
    )
    parser.add_argument("--max-rooms", type=int, default=64, help="stop the ramp above this")
    parser.add_argument("--rooms-per-session", type=int, default=3, help="rooms per session (3)")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds before measuring")
    parser.add_argument("--segment-seconds", type=float, default=SEGMENT_SECONDS)
    parser.add_argument(
        "--min-fill",
        type=float,
        default=0.8,
        help="a full segment with fewer video frames than this share of fps x seconds is lost",
    )
    parser.add_argument(
        "--source",
        default="clip",
        help="what rooms send: clip (pre-encoded, cheap), synthetic (live encode), or a "
        "room_client source spec",
    )
    parser.add_argument(
        "--cpu-used", type=int, help="libvpx speed step of the recording encoder (default: -12)"
    )
    parser.add_argument("--out", help="folder for the clip and recordings (default: temporary)")
    parser.add_argument("--keep", action="store_true", help="keep the recordings")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 2 rooms, 6 s")
    parser.add_argument("--senders", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.workers = [int(w) for w in str(args.workers).split(",") if w]
    args.steps = [int(s) for s in str(args.steps).split(",") if s]
    if args.quick:
        args.steps, args.duration, args.warmup = [1, 3], 11.0, 2.0
        args.workers = args.workers[:1]
    if args.rooms_per_session < 1 or any(s < 1 for s in args.steps):
        parser.error("rooms must be positive")
    if args.duration < 3 * args.segment_seconds and not args.quick:
        print("note: fewer than 3 segments per room per step; the fill check needs 3")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.senders:
        asyncio.run(senders_main(args.source))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
