"""A local Janus gateway for tests: the Debian package run with a copy of deploy/janus/."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

DEPLOY_JANUS = ROOT / "deploy" / "janus"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def terminate(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM a child this test started; SIGKILL it if it has not gone in 10 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(proc.wait, 10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def janus_or_skip() -> str:
    """The janus binary; a visible skip where it is missing, a failure under CI (the set-up
    installs it)."""
    path = shutil.which("janus")
    if path is None or shutil.which("janus-pp-rec") is None:
        if os.environ.get("CI") == "1":
            pytest.fail("janus / janus-pp-rec missing under CI: scripts/setup.sh installs them")
        pytest.skip("janus or janus-pp-rec not installed (Debian packages janus, janus-tools)")
    return path


def local_config(dst: Path, ws_port: int, rtp_first: int, rtp_count: int = 200) -> Path:
    """A copy of deploy/janus/ for one loopback instance: its own WebSocket port on 127.0.0.1
    and its own media port range; everything else as deployed."""
    dst.mkdir(parents=True, exist_ok=True)
    for src in DEPLOY_JANUS.glob("*.jcfg"):
        text = src.read_text()
        if src.name == "janus.transport.websockets.jcfg":
            text = re.sub(r"ws_port = \d+", f"ws_port = {ws_port}", text)
            text = re.sub(r'ws_ip = "[^"]*"', 'ws_ip = "127.0.0.1"', text)
        if src.name == "janus.jcfg":
            last = rtp_first + rtp_count - 1
            text = re.sub(
                r'rtp_port_range = "[^"]*"', f'rtp_port_range = "{rtp_first}-{last}"', text
            )
            text = re.sub(r'configs_folder = "[^"]*"', f'configs_folder = "{dst}"', text)
        (dst / src.name).write_text(text)
    return dst


class LocalJanus:
    """``janus`` run from the Debian package with a generated copy of the project's config."""

    def __init__(self, work: Path, binary: str = "janus") -> None:
        self.work = work
        self.binary = binary
        self.ws_port = free_port()
        # a UDP range unlikely to collide with a neighbour's; Janus picks free ports inside it
        self.rtp_first = 30000 + (os.getpid() % 300) * 100
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = work / "janus.log"

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        folder = local_config(self.work / "config", self.ws_port, self.rtp_first, 100)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--configs-folder={folder}", "--disable-colors"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"janus exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.ws_port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"janus did not listen: {self.log_path.read_text()[-2000:]}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            await terminate(self.proc)


@contextlib.asynccontextmanager
async def local_janus(work: Path) -> AsyncIterator[LocalJanus]:
    janus = LocalJanus(work, janus_or_skip())
    await janus.start()
    try:
        yield janus
    finally:
        await janus.stop()
